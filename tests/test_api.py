"""The Python API: hydradgl.load(...).predict(...) on Atoms and files, ensembles, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

import hydradgl
from hydradgl.errors import DataError, TrainingError
from hydradgl.train.run import train_run
from tests.conftest import small_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_prepared):
    """Two small runs (seeds 0 and 1) on the same data."""
    root = tmp_path_factory.mktemp("api")
    out = []
    for seed in (0, 1):
        cfg = small_config(root / f"s{seed}", **{"training.seed": seed})
        out.append(train_run(cfg, data=small_prepared, quiet=True, plots_enabled=False).run_dir)
    return out


def atoms_of(source: str) -> Atoms:
    from hydradgl_plugins.datasets.lsms import read_lsms

    table = read_lsms(Path(source))[1]
    return Atoms(numbers=table[:, 0].astype(int), positions=table[:, 2:5])


def test_model_describes_itself(runs):
    model = hydradgl.load(runs[0])
    assert model.heads == ["H", "C", "M"] and not model.is_ensemble
    assert model.units == {"H": "Ry", "C": "e", "M": "mu_B"}
    assert model.levels == {"H": "graph", "C": "node", "M": "node"}
    assert model.cutoff == 7.0 and model.elements == [26, 78]
    assert "heads H (graph, Ry)" in repr(model)


def test_atoms_and_files_give_the_same_predictions(runs, small_prepared):
    model = hydradgl.load(runs[0])
    sources = small_prepared.test.sources[:6]
    from_files = model.predict(sources)
    from_atoms = model.predict([atoms_of(s) for s in sources])
    assert list(from_files.structures.columns) == ["structure", "source", "n_atoms", "H"]
    assert list(from_files.atoms.columns) == ["structure", "source", "atom", "Z", "C", "M"]
    for a, b in ((from_files.structures, from_atoms.structures), (from_files.atoms, from_atoms.atoms)):
        for col in ("H", "C", "M"):
            if col in a:
                np.testing.assert_allclose(a[col], b[col], rtol=1e-5, atol=1e-6)
    assert from_atoms.structures["source"].tolist() == [f"atoms #{i}" for i in range(6)]
    assert from_files.atoms["atom"].tolist()[:33] == [*range(32), 0]


def test_permuting_atoms_permutes_node_values_only(runs, small_prepared):
    model = hydradgl.load(runs[0])
    atoms = atoms_of(small_prepared.test.sources[0])
    perm = np.random.default_rng(0).permutation(len(atoms))
    a, b = model.predict(atoms), model.predict(atoms[perm])
    assert b.structures["H"][0] == pytest.approx(a.structures["H"][0], rel=1e-4)  # float32 sums in another order
    np.testing.assert_allclose(b.atoms["M"], a.atoms["M"].to_numpy()[perm], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(b.atoms["Z"], atoms.numbers[perm])


def test_batching_does_not_change_predictions(runs, small_prepared):
    model = hydradgl.load(runs[0])
    atoms = [atoms_of(s) for s in small_prepared.test.sources[:7]]
    whole = model.predict(atoms)
    edges = int(model.graphs(atoms[:1]).num_edges[0])
    for kwargs in ({"batch_size": 1}, {"batch_size": 3}, {"max_edges": 2 * edges}):
        part = model.predict(atoms, **kwargs)
        # float32 sums over a batch's edges: the order differs with the batch, so values near 0 differ by ~1e-7
        np.testing.assert_allclose(part.structures["H"], whole.structures["H"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(part.atoms["C"], whole.atoms["C"], rtol=1e-5, atol=1e-6)


def test_outputs_of_chosen_heads_equal_those_of_all_heads(runs, small_prepared):
    model = hydradgl.load(runs)
    (_, batch), = model.batches(model.graphs([atoms_of(s) for s in small_prepared.test.sources[:3]]), 8)
    with torch.no_grad():
        every, only_h = model.outputs(batch), model.outputs(batch, {"H"})
    assert set(every) == {"H", "C", "M"} and set(only_h) == {"H"}
    assert only_h["H"].shape == (2, 3, 1)  # (members, structures, dim)
    torch.testing.assert_close(only_h["H"], every["H"])


def test_ensemble_mean_and_std_match_members(runs, small_prepared):
    atoms = [atoms_of(s) for s in small_prepared.test.sources[:4]]
    single = [hydradgl.load(r).predict(atoms) for r in runs]
    both = hydradgl.load(runs).predict(atoms)
    assert list(both.structures.columns) == ["structure", "source", "n_atoms", "H", "H_std"]
    h = np.stack([p.structures["H"].to_numpy() for p in single])
    np.testing.assert_allclose(both.structures["H"], h.mean(0), rtol=1e-5)
    np.testing.assert_allclose(both.structures["H_std"], np.abs(h[0] - h[1]) / np.sqrt(2), rtol=1e-4, atol=1e-7)
    m = np.stack([p.atoms["M"].to_numpy() for p in single])
    np.testing.assert_allclose(both.atoms["M_std"], m.std(0, ddof=1), rtol=1e-4, atol=1e-7)


def test_folder_of_runs_loads_as_ensemble(runs, tmp_path):
    for i, r in enumerate(runs):
        shutil.copytree(r, tmp_path / "exp" / "HCM" / f"seed-{i}")
    model = hydradgl.load(tmp_path / "exp" / "HCM")
    assert model.is_ensemble and len(model.members) == 2
    with pytest.raises(TrainingError, match=r"holds several ensembles \(HCM\).*exp/HCM"):
        hydradgl.load(tmp_path / "exp")


def test_unknown_element_names_structure_and_element(runs, small_prepared):
    model = hydradgl.load(runs[0])
    good = atoms_of(small_prepared.test.sources[0])
    bad = good.copy()
    bad.numbers[5] = 29
    with pytest.raises(DataError, match=r"atoms #1: element Cu \(Z=29\) is not among .*\(Fe, Pt\)"):
        model.predict([good, bad])


def test_structure_too_large_for_a_batch_is_named(runs, small_prepared):
    model = hydradgl.load(runs[0])
    atoms = atoms_of(small_prepared.test.sources[0])
    with pytest.raises(DataError, match=r"atoms #0: 32 atoms with \d+ edges .* limit of 100 edges"):
        model.predict(atoms, max_edges=100)


def test_not_a_run_and_incompatible_version_are_named(runs, tmp_path):
    with pytest.raises(TrainingError, match="not a hydradgl run directory"):
        hydradgl.load(tmp_path)
    with pytest.raises(TrainingError, match="no such run"):
        hydradgl.load(tmp_path / "missing")
    old = tmp_path / "old"
    shutil.copytree(runs[0], old)
    for name in ("best.pt", "last.pt"):
        state = torch.load(old / name, weights_only=True)
        state["format"] = 1
        torch.save(state, old / name)
    with pytest.raises(TrainingError, match=r"old/best.pt: checkpoint format 1 was written by another hydradgl"):
        hydradgl.load(old)


def test_members_trained_differently_are_refused(runs):
    from hydradgl.api import TrainedModel
    from hydradgl.train.saved import load_run

    members = [load_run(r) for r in runs]
    members[1].cfg = members[1].cfg.model_copy(update={"graph": members[1].cfg.graph.model_copy(update={"radius": 5.0})})
    with pytest.raises(TrainingError, match=r"s1/run: its graph settings differ from those of .*s0/run"):
        TrainedModel(members, list(runs))


def test_mixed_inputs_and_wrong_types_are_refused(runs, small_prepared):
    model = hydradgl.load(runs[0])
    source = small_prepared.test.sources[0]
    with pytest.raises(DataError, match="either file paths or in-memory"):
        model.predict([source, atoms_of(source)])
    with pytest.raises(DataError, match="input #0: expected an ase.Atoms"):
        model.predict([42])
