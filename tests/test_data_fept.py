"""The generated FePt data: lattice, sampling, and the toy model's physics."""

from __future__ import annotations

import math

import numpy as np

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


def test_full_size_matches_paper_scale():
    total = sum(min(1000, math.comb(32, n)) for n in range(33))
    assert 28_000 <= total <= 28_100  # the paper has 28,033


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
