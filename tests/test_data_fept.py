"""The generated FePt data: lattice, sampling, and the toy model's physics."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from hydradgl_plugins.datasets.fept import (FE, PT, lattice, sample_occupations, shell_matrices, toy_model)


def test_bct_supercell_geometry():
    pos, cell = lattice(2.76, 3.74)
    assert pos.shape == (32, 3)
    np.testing.assert_allclose(np.diag(cell), [5.52, 5.52, 14.96])
    first, second = shell_matrices(pos, cell)
    assert (first.sum(1) == 8).all() and (second.sum(1) == 4).all()  # BCT: 8 body-diagonal, 4 in-plane
    assert (first == first.T).all() and (second == second.T).all()


def test_sampling_unique_and_capped():
    occ = sample_occupations(10, seed=0)
    per_comp = np.bincount([int(o.sum()) for o in occ], minlength=33)
    expected = [min(10, math.comb(32, n)) for n in range(33)]
    assert per_comp.tolist() == expected
    assert len({o.tobytes() for o in occ}) == len(occ)
    assert [o.tobytes() for o in sample_occupations(10, 0)] == [o.tobytes() for o in occ]  # deterministic


def test_full_size_sampling_matches_paper_scale():
    occ = sample_occupations(1000, seed=0)
    assert len(occ) == 28_058  # the paper has 28,033 (its sampling is not published)
    assert len({o.tobytes() for o in occ}) == len(occ)


def test_toy_model_charge_conserved_and_moments_physical():
    pos, cell = lattice(2.76, 3.74)
    first, second = shell_matrices(pos, cell)
    rng = np.random.default_rng(0)
    fe = rng.random(32) < 0.5
    energy, electrons, moments = toy_model(fe, first, second, rng, 0.0)
    numbers = np.where(fe, FE, PT)
    assert abs((electrons - numbers).sum()) < 1e-9  # charge moves Fe -> Pt pair by pair
    assert ((electrons - numbers)[fe] <= 0).all() and ((electrons - numbers)[~fe] >= 0).all()
    n_pt = first @ (~fe)
    np.testing.assert_allclose(moments[fe], 2.20 + 0.12 * n_pt[fe])
    assert (moments[~fe] < 0.35).all()


def test_generated_files_give_documented_mixing_enthalpy(tmp_path):
    """H read back through the LSMS reader equals docs/data.md's closed form J1 N1 + J2 N2 - K (...)."""
    from hydradgl.plugins import DatasetContext
    from hydradgl_plugins.datasets.fept import J1, J2, K_MAG, M_FE0, FePtOptions, load_fept

    options = FePtOptions(max_per_composition=2, seed=4)
    raw = load_fept(options, DatasetContext(cache_dir=tmp_path))
    assert len(raw.structures) == 1 + 2 * 31 + 1 and "generated now" in raw.log[0]
    pos, cell = lattice(2.76, 3.74)
    first, second = shell_matrices(pos, cell)
    for s in raw.structures[::7]:
        fe = s.numbers == FE
        pt = ~fe
        m = s.targets["M"][:, 0]
        expected = (J1 * (fe @ first @ pt) + J2 * (fe @ second @ pt)
                    - K_MAG * (np.sum(m[fe] ** 2) - fe.sum() * M_FE0 ** 2))
        assert s.targets["H"][0] == pytest.approx(expected, abs=1e-6)
        assert abs(s.targets["C"].sum()) < 1e-6
        np.testing.assert_allclose(s.positions, pos, atol=1e-6)
    again = load_fept(options, DatasetContext(cache_dir=tmp_path))
    assert "generated now" not in again.log[0] and again.fingerprint == raw.fingerprint


def test_generation_race_keeps_the_first_folder(tmp_path, monkeypatch):
    """Two processes (DDP ranks) generating at once: the other finishes between our writing and our
    rename, so our rename fails; we discard our copy and keep theirs instead of failing."""
    from hydradgl_plugins.datasets import fept
    from hydradgl_plugins.datasets.fept import FePtOptions, generate

    options = FePtOptions(max_per_composition=1)
    folder = tmp_path / "raw" / "fept-x"
    real_replace = os.replace

    def other_rank_wins(src, dst):
        Path(dst).mkdir()
        (Path(dst) / "theirs.lsms").write_text("x")
        real_replace(src, dst)  # fails: the destination is a non-empty folder now

    monkeypatch.setattr(fept.os, "replace", other_rank_wins)
    generate(options, folder)
    assert [p.name for p in folder.iterdir()] == ["theirs.lsms"]
    assert [p.name for p in folder.parent.iterdir()] == ["fept-x"]  # no temp folder left behind

    def disk_error(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fept.os, "replace", disk_error)
    with pytest.raises(OSError, match="No space"):  # no other rank finished: a real error is not hidden
        generate(options, tmp_path / "raw" / "fept-y")
    assert sorted(p.name for p in folder.parent.iterdir()) == ["fept-x"]
