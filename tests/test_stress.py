"""Stress as a derivative of the potential's energy: the model's stress and forces heads against central
finite differences of its own energy on a triclinic cell whose neighbours are reached through several
images (float64), the ASE calculator's forces and stress equal to those heads and to ASE's finite
differences, training on emt-alloy's stress beating the train-mean stress, the cell carried from the
structures through the cache into the batches, the potential's statistics ignoring absent values, and the
refusals: a stress target of the wrong shape, stress without periodic cells, a vector node head on an
invariant trunk. (The stress loss's double backward on both kernel paths: tests/test_double_backward.py.)"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

import hydradgl
from hydradgl.api import TrainedModel, structure_from_atoms
from hydradgl.configio import load_config
from hydradgl.data.batch import Batch
from hydradgl.data.graphs import neighbour_edges
from hydradgl.data.graphset import view_of
from hydradgl.data.loader import collate
from hydradgl.data.packing import pack
from hydradgl.data.pipeline import prepare_data
from hydradgl.data.store_build import build_store
from hydradgl.errors import ConfigError, DataError
from hydradgl.model.assembler import build_model
from hydradgl.model.derivatives import VOIGT_COLUMNS, VOIGT_ROWS
from hydradgl.ops import MessageGraph
from hydradgl.train.run import train_run
from tests.test_potential import emt_config

STRESS_DATA = {"per_composition": 4, "forces": True, "stress": True}
STRESS_POTENTIAL = {"name": "energy", "kind": "potential",
                    "options": {"forces": "forces", "force_weight": 1.0, "stress": "stress", "stress_weight": 10.0}}
H = 1e-5  # finite-difference step (strain, Angstrom)


def stress_config(tmp_path=None, **overrides):
    """emt-alloy with forces and stress, a SchNet potential fitted to both (smooth activation)."""
    return emt_config(tmp_path, **{"dataset.options": STRESS_DATA, "heads": [STRESS_POTENTIAL],
                                   "model.activation": "silu", **overrides})


@pytest.fixture(scope="module")
def stress_prepared(registry):
    return prepare_data(stress_config(), registry)


@pytest.fixture(scope="module")
def stress_run(tmp_path_factory, stress_prepared):
    cfg = stress_config(tmp_path_factory.mktemp("stress"), **{"training.epochs": 10, "training.patience": None})
    return train_run(cfg, data=stress_prepared, quiet=True, plots_enabled=False)


@pytest.fixture(scope="module")
def model64(stress_run) -> TrainedModel:
    return hydradgl.load(stress_run.run_dir).to(torch.float64)


def triclinic_cell() -> Atoms:
    """Three Cu/Au atoms in a skewed cell whose lattice vectors (about 3.2 A) are shorter than the 4 A
    cutoff: every atom sees its own images and its neighbours through several images."""
    cell = np.array([[3.1, 0.2, -0.1], [0.6, 2.9, 0.3], [-0.4, 0.5, 3.3]])
    return Atoms("CuAuCu", scaled_positions=[[0, 0, 0], [0.5, 0.4, 0.55], [0.2, 0.7, 0.3]], cell=cell, pbc=True)


def float64_batch(model: TrainedModel, atoms: Atoms) -> Batch:
    """The atoms' graph as training builds it (the run's graph settings), with float64 edge vectors from a
    fresh neighbour search (the cache stores float32 ones) and the cell."""
    assert model.info.graph is not None
    src, dst, vec = neighbour_edges(structure_from_atoms(atoms, "triclinic"), model.info.graph)
    graph = MessageGraph.from_edges(torch.from_numpy(src), torch.from_numpy(dst), len(atoms))
    species = torch.tensor([model.elements.index(int(z)) for z in atoms.numbers])
    v = torch.from_numpy(vec)
    return Batch(graph, species, torch.zeros((len(atoms), 0), dtype=torch.float64), v.norm(dim=1), v,
                 cell=torch.from_numpy(atoms.cell.array)[None])


def predicted(model: TrainedModel, atoms: Atoms) -> dict[str, np.ndarray]:
    """Every head of the model, physical units, for one structure."""
    return {h: v[0].detach().numpy() for h, v in model.outputs(float64_batch(model, atoms)).items()}


def energy_of(model: TrainedModel, atoms: Atoms) -> float:
    return float(predicted(model, atoms)["energy"].sum())


def strained(atoms: Atoms, eps: np.ndarray) -> Atoms:
    """The atoms under the homogeneous strain ``eps``: cell and positions deformed together."""
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return out


def numerical_stress(energy, atoms: Atoms) -> np.ndarray:
    """(6,) ``(1/V) dE/d(strain)`` by central differences of a symmetric strain, Voigt order."""
    out = []
    for a, b in zip(VOIGT_ROWS, VOIGT_COLUMNS):
        eps = np.zeros((3, 3))
        eps[a, b] = eps[b, a] = H
        change = energy(strained(atoms, eps)) - energy(strained(atoms, -eps))
        out.append(change / (2 * H * atoms.get_volume() * (1 if a == b else 2)))
    return np.array(out)


def numerical_forces(energy, atoms: Atoms) -> np.ndarray:
    out = np.zeros((len(atoms), 3))
    for k in range(len(atoms)):
        for c in range(3):
            moved = [atoms.copy(), atoms.copy()]
            moved[0].positions[k, c] += H
            moved[1].positions[k, c] -= H
            out[k, c] = -(energy(moved[0]) - energy(moved[1])) / (2 * H)
    return out


def test_training_on_the_stress_beats_the_train_mean_stress(stress_run, stress_prepared):
    stress = stress_run.test["stress"]
    assert (stress["unit"], stress["level"], stress["display_unit"]) == ("eV/A^3", "graph", "GPa")
    train = stress_prepared.train.with_normalizer(None).graph_targets["stress"].astype(np.float64)
    true = stress_prepared.test.with_normalizer(None).graph_targets["stress"].astype(np.float64)
    mean_stress = float(np.sqrt(np.mean((true - train.mean(axis=0)) ** 2)))
    assert mean_stress < float(np.sqrt(np.mean(true ** 2)))  # the stronger of the two baselines
    assert stress["rmse_phys"] < 0.8 * mean_stress
    assert "train_stress_loss" in stress_run.history[-1]  # a term of the loss like any other head's


def test_model_stress_and_forces_are_finite_differences_of_its_energy(model64):
    atoms = triclinic_cell()
    graph = float64_batch(model64, atoms).graph
    pairs = Counter(zip(graph.src.tolist(), graph.dst.tolist()))
    assert max(pairs.values()) > 2 and any(s == d for s, d in pairs)  # several images; an atom's own image
    heads = predicted(model64, atoms)
    assert heads["stress"].shape == (1, 6) and heads["forces"].shape == (3, 3)
    energy = lambda a: energy_of(model64, a)  # noqa: E731
    stress = numerical_stress(energy, atoms)
    assert np.abs(stress).max() > 1e-4
    np.testing.assert_allclose(heads["stress"][0], stress, rtol=1e-6, atol=1e-9 * np.abs(stress).max())
    forces = numerical_forces(energy, atoms)
    np.testing.assert_allclose(heads["forces"], forces, rtol=1e-6, atol=1e-8 * np.abs(forces).max())


def test_the_calculator_gives_the_models_stress_and_forces_and_ases_finite_differences(model64):
    from hydradgl.ase import HydraCalculator

    calc = HydraCalculator(model64, skin=0.0)
    assert calc.mapping == {"energy": "energy"}  # the derived forces and stress heads are left to it
    atoms = triclinic_cell()
    atoms.calc = calc
    heads = predicted(model64, atoms)
    stress, forces = atoms.get_stress(), atoms.get_forces()
    assert atoms.get_potential_energy() == pytest.approx(float(heads["energy"].sum()), rel=1e-12)
    np.testing.assert_allclose(stress, heads["stress"][0], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(forces, heads["forces"], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(stress, calculate_numerical_stress(atoms, eps=H), rtol=1e-6,
                               atol=1e-9 * np.abs(stress).max())
    np.testing.assert_allclose(forces, calculate_numerical_forces(atoms, eps=H), rtol=1e-6,
                               atol=1e-8 * np.abs(forces).max())
    # predict: float32 edge vectors of the training graphs, the same stress per structure
    rows = model64.predict([atoms]).structures
    np.testing.assert_allclose(rows[[f"stress[{i}]" for i in range(6)]].to_numpy()[0], stress, rtol=1e-5,
                               atol=1e-6 * np.abs(stress).max())


def test_the_cell_travels_from_the_structures_through_the_cache_to_the_batch(tmp_path):
    graph = load_config(None, {"graph.periodic": True, "graph.radius": 4.0}).graph
    slab = triclinic_cell()
    slab.pbc = (True, True, False)  # periodic along two axes only: no stress
    structures = [structure_from_atoms(a, f"#{i}") for i, a in enumerate([triclinic_cell(), slab])]
    graphs = pack(structures, {}, {}, graph)
    np.testing.assert_array_equal(graphs.cell[0], triclinic_cell().cell.array.astype(np.float32))
    np.testing.assert_array_equal(graphs.cell[1], 0.0)
    stored = build_store(tmp_path / "s", iter([graphs]), {}, {}, [])
    np.testing.assert_array_equal(np.asarray(stored.graphs.cell), graphs.cell)
    stored.graphs.species_lookup = np.arange(119)
    batch = collate(stored.graphs, np.array([1, 0]))
    assert batch.cell is not None and batch.to("cpu").cell is not None
    np.testing.assert_array_equal(batch.cell.numpy(), graphs.cell[[1, 0]])
    np.testing.assert_array_equal(view_of(stored.graphs).subset(np.array([0])).cell, graphs.cell[:1])
    no_pbc = pack(structures, {}, {}, graph.model_copy(update={"periodic": False}))
    np.testing.assert_array_equal(no_pbc.cell, 0.0)


def test_the_potential_statistics_skip_absent_energies_and_forces():
    from hydradgl_plugins.heads.potential import PotentialHead

    head = PotentialHead(4, [4], "silu", 2)
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 9, (12, 2)).astype(float)
    energy = counts @ np.array([-1.5, -3.0]) + 0.01 * rng.standard_normal(12)
    energy[[2, 7]] = np.nan  # frames without an energy
    forces = rng.standard_normal((40, 3))
    forces[[0, 5, 6]] = np.nan  # atoms of frames without forces
    head.fit_statistics(counts, energy, forces)
    present = np.isfinite(energy)
    expected = np.linalg.lstsq(counts[present], energy[present], rcond=None)[0]
    np.testing.assert_allclose(head.e0.numpy(), expected, rtol=1e-5)
    assert float(head.scale) == pytest.approx(np.sqrt(np.mean(forces[np.isfinite(forces)] ** 2)), rel=1e-6)
    assert np.isfinite(float(head.shift))


def test_emt_alloy_regenerates_with_the_stress_option():
    from hydradgl_plugins.datasets.emt_alloy import EMTAlloyOptions, generation_key

    assert generation_key(EMTAlloyOptions(stress=True)) != generation_key(EMTAlloyOptions())


def test_a_stress_target_must_be_a_six_component_graph_target(stress_prepared, registry):
    def with_stress(target: str):
        return stress_config(heads=[{**STRESS_POTENTIAL, "options": {"stress": target}}])

    for target, found in (("energy", "is a graph-level target with 1 component"),
                          ("forces", "is a node-level target with 3 component"),
                          ("virial", "is not in the dataset")):
        with pytest.raises(ConfigError, match=rf"heads\[0\]\.options\.stress: '{target}' {found}.*it must name a "
                                              r"6-component graph target .*\(here: stress\)"):
            build_model(with_stress(target), stress_prepared.info, registry)


def test_stress_without_periodic_cells_is_refused(stress_prepared, model64, registry):
    with pytest.raises(ConfigError, match=r"heads\[0\]\.options\.stress: the stress needs periodic cells, but "
                                          r"graph\.periodic is false"):
        build_model(stress_config(**{"graph.periodic": False}), stress_prepared.info, registry)
    slab = triclinic_cell()
    slab.pbc = (True, True, False)
    with pytest.raises(DataError, match=r"the stress needs a cell periodic along all three axes, but structure\(s\) "
                                        r"#1 \(their index"):
        model64.predict([triclinic_cell(), slab])
    model = model64.members[0].model
    batch = dataclasses.replace(float64_batch(model64, triclinic_cell()), cell=None)
    with pytest.raises(DataError, match=r"needs each structure's cell, but this batch carries none"):
        model(batch)
    assert set(model(batch, heads=["energy", "forces"])) == {"energy", "forces"}  # no stress asked: no cell needed


def test_a_vector_node_head_on_an_invariant_trunk_is_refused(stress_prepared, registry):
    cfg = stress_config(heads=[{"name": "forces"}])  # forces regressed directly by a node head
    with pytest.raises(ConfigError, match=r"heads\[0\] \('forces'\): target 'forces' is a 3-component vector per "
                                          r"atom, but 'node-head' predicts it from invariant features.*would not "
                                          r"rotate with it.*kind: vector-head\) on an equivariant trunk \(not "
                                          r"'schnet'\).*kind: potential with options\.forces: forces"):
        build_model(cfg, stress_prepared.info, registry)
    with pytest.raises(ConfigError, match=r"vector-head.*equivariant"):  # the vector head itself needs vectors
        build_model(stress_config(heads=[{"name": "forces", "kind": "vector-head"}]), stress_prepared.info, registry)
    # on an equivariant trunk the vector head predicts one 3-vector per atom
    model = build_model(stress_config(heads=[{"name": "forces", "kind": "vector-head"}], **{"model.conv": "painn"}),
                        stress_prepared.info, registry)
    assert model(collate(stress_prepared.train, np.arange(2)))["forces"].shape[1] == 3
