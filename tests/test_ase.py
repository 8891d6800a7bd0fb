"""The ASE calculator: energies and node properties, forces and stress against finite differences,
periodic images, a short relaxation, NVE energy conservation, a perfect crystal's symmetric forces,
ensembles' spreads, the compiled model, and the clear errors and warnings when a model cannot give forces,
gives forces of an energy that is not smooth, or cannot be compiled."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.md.velocitydistribution import Stationary
from ase.md.verlet import VelocityVerlet
from ase.optimize import FIRE

import hydradgl
from hydradgl.ase import ForcesUnavailable, HydraCalculator, SmoothnessWarning
from hydradgl.errors import ConfigError, HydraError
from hydradgl.train.run import train_run
from tests.conftest import small_config

# Most tests here take forces of models that are not smooth (cgcnn, pna); the warning has its own tests.
pytestmark = pytest.mark.filterwarnings("ignore::hydradgl.ase.SmoothnessWarning")


@pytest.fixture(scope="module")
def cgcnn_run(tmp_path_factory):
    """A small periodic CGCNN model: its energy is differentiable in the distances (Gaussian edge features)
    but jumps when a neighbour crosses the cutoff (see test_md_conserves_energy_only_with_a_smooth_model)."""
    cfg = small_config(tmp_path_factory.mktemp("ase"), **{"model.conv": "cgcnn", "graph.periodic": True,
                                                         "graph.radius": 5.0, "training.epochs": 1})
    return train_run(cfg, quiet=True, plots_enabled=False).run_dir


@pytest.fixture(scope="module")
def pna_run(tmp_path_factory, small_prepared):
    """The paper's PNA model (no edge features): distances only through the cutoff."""
    cfg = small_config(tmp_path_factory.mktemp("pna"), **{"model.conv_options": {"use_edge_features": False}})
    return train_run(cfg, data=small_prepared, quiet=True, plots_enabled=False).run_dir


def periodic_run(root, conv: str = "pna", activation: str = "relu", **conv_options):
    """A small periodic model of ``conv`` with ``conv_options`` (pna: edge features on, the default)."""
    cfg = small_config(root, **{"model.conv": conv, "graph.periodic": True, "graph.radius": 5.0,
                                "training.epochs": 1, "model.conv_options": conv_options,
                                "model.activation": activation})
    return train_run(cfg, quiet=True, plots_enabled=False).run_dir


def fept_cell(seed: int = 0, rattle: float = 0.05) -> Atoms:
    from hydradgl_plugins.datasets.fept import lattice

    positions, cell = lattice(2.76, 3.74)  # the training lattice (FePt defaults), rattled
    rng = np.random.default_rng(seed)
    numbers = np.where(rng.random(len(positions)) < 0.5, 26, 78)
    atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)
    atoms.rattle(rattle, seed=seed)
    return atoms


def test_forces_and_stress_match_finite_differences(cgcnn_run):
    calc = HydraCalculator(cgcnn_run, properties={"energy": "H", "charges": "C", "magmoms": "M"},
                           dtype=torch.float64)
    atoms = fept_cell()
    atoms.calc = calc
    forces = atoms.get_forces()
    assert forces.shape == (32, 3) and np.abs(forces).max() > 1e-4
    some = [0, 7, 18, 31]  # a few atoms keep the test fast; every atom goes through the same code
    numeric = calculate_numerical_forces(atoms, eps=1e-4, iatoms=some)
    np.testing.assert_allclose(forces[some], numeric, atol=1e-6 * max(1.0, np.abs(numeric).max()))
    stress = atoms.get_stress()
    np.testing.assert_allclose(stress, calculate_numerical_stress(atoms, eps=1e-5), atol=1e-7, rtol=1e-4)
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-8)  # translation invariance: no net force


def test_periodic_images_and_translation(cgcnn_run):
    """Energy is unchanged by a rigid translation and by wrapping atoms back into the cell."""
    calc = HydraCalculator(cgcnn_run, properties={"energy": "H"}, dtype=torch.float64)
    atoms = fept_cell(seed=1)
    energy = calc.get_potential_energy(atoms)
    moved = atoms.copy()
    moved.translate([1.3, -0.7, 2.9])
    assert calc.get_potential_energy(moved) == pytest.approx(energy, rel=1e-10, abs=1e-10)
    moved.wrap()
    assert calc.get_potential_energy(moved) == pytest.approx(energy, rel=1e-10, abs=1e-10)
    np.testing.assert_allclose(calc.get_forces(moved), calc.get_forces(atoms), atol=1e-9)


def perfect_crystal(ordered: bool) -> Atoms:
    """The training lattice unrattled: BCT Fe, or ordered FePt (corners Fe, body centres Pt). Every atom is
    a centre of inversion, so symmetry makes every force zero."""
    atoms = fept_cell(rattle=0.0)
    atoms.numbers[:] = 26
    if ordered:
        atoms.numbers[1::2] = 78
    return atoms


@pytest.mark.parametrize("ordered", [False, True], ids=["Fe", "FePt-ordered"])
def test_smooth_model_keeps_a_perfect_crystals_symmetry(tmp_path, ordered):
    """SchNet (sums of enveloped filters) with a smooth activation: no force on any atom of a perfect
    crystal, the tetragonal cell's stress has xx = yy and no shear, and no SmoothnessWarning; off the
    symmetric positions forces are there."""
    atoms = perfect_crystal(ordered)
    atoms.calc = HydraCalculator(periodic_run(tmp_path, "schnet", "silu"), properties={"energy": "H"}, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmoothnessWarning)
        forces, stress = atoms.get_forces(), atoms.get_stress()
    np.testing.assert_allclose(forces, 0.0, atol=1e-10)
    assert abs(stress[0] - stress[1]) < 1e-10 * abs(stress).max() and np.abs(stress[3:]).max() < 1e-10
    atoms.rattle(0.05, seed=1)
    assert np.abs(atoms.get_forces()).max() > 1e-3


def test_default_pna_warns_once_that_its_energy_is_not_smooth(tmp_path):
    """The default PNA: messages that do not vanish at the cutoff, min/max aggregators, relu. The calculator
    says so once, on the first forces call; the perfect crystal's forces do lose their symmetry."""
    atoms = perfect_crystal(ordered=False)
    atoms.calc = HydraCalculator(periodic_run(tmp_path), properties={"energy": "H"}, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmoothnessWarning)
        atoms.get_potential_energy()  # energy alone: nothing to warn about
    with pytest.warns(SmoothnessWarning, match=r"its conv \(pna\) does not declare smooth_at_cutoff.*; and a layer "
                                               r"or head reduces by a max or min.*; and model\.activation is relu, which "
                                               r"has a kink.*hydradgl list-plugins shows each "
                                               r"conv's traits.*smooth model\.activation"):
        forces = atoms.get_forces()
    assert np.abs(forces).max() > 1e-4
    atoms.positions[0, 0] += 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmoothnessWarning)
        atoms.get_forces()


def nve_drift(run, skin: float = 0.5) -> tuple[float, int]:
    """200 velocity-Verlet steps of 0.5 fs from 600 K on a rattled cell: the total energy's largest
    departure from its start over the potential energy's range, and the neighbour searches made."""
    atoms = fept_cell(seed=4, rattle=0.02)
    calc = atoms.calc = HydraCalculator(run, properties={"energy": "H"}, dtype=torch.float64, skin=skin)
    thermal = np.sqrt(atoms.get_masses()[:, None] * units.kB * 600)  # Maxwell-Boltzmann momenta at 600 K
    atoms.set_momenta(np.random.default_rng(0).standard_normal((len(atoms), 3)) * thermal)
    Stationary(atoms)
    potential, total = [], []
    md = VelocityVerlet(atoms, timestep=0.5 * units.fs, logfile=None)
    md.attach(lambda: (potential.append(atoms.get_potential_energy()), total.append(atoms.get_total_energy())))
    md.run(200)
    return np.abs(np.array(total) - total[0]).max() / np.ptp(potential), calc.neighbour_searches


@pytest.mark.parametrize("conv, options, smooth", [
    ("egnn", {}, True), ("cgcnn", {"envelope": True}, True), ("cgcnn", {}, False),
    ("pna", {"envelope": True, "aggregators": ["mean", "std", "sum"]}, True)])
def test_md_conserves_energy_only_with_a_smooth_model(tmp_path, conv, options, smooth):
    """NVE MD conserves the total energy to under 1% of the potential energy's swings, across neighbour
    searches (skin 0.1 A) and cutoff crossings, with EGNN (here without edge features, on the squared
    distance alone), CGCNN with its envelope and PNA with its envelope. The paper's CGCNN, whose messages do not vanish at the
    cutoff, drifts by more than a third of the swings, which is what its SmoothnessWarning says."""
    run = periodic_run(tmp_path, conv, **options)
    assert hydradgl.load(run).smooth_at_cutoff is smooth
    drift, searches = nve_drift(run, skin=0.1)
    assert searches > 1
    assert drift < 0.01 if smooth else drift > 0.3


def test_neighbour_list_reused_within_the_skin_gives_the_same_results(cgcnn_run):
    """Along a trajectory the list searched with a skin is reused until an atom has moved half of it, or
    the cell changes, and every step matches a calculator that searches on every call."""
    reuse = HydraCalculator(cgcnn_run, properties={"energy": "H"}, dtype=torch.float64, skin=0.4)
    fresh = HydraCalculator(cgcnn_run, properties={"energy": "H"}, dtype=torch.float64, skin=0.0)
    atoms = fept_cell(seed=8)
    rng = np.random.default_rng(0)
    wanted = ["energy", "forces", "stress"]
    for step in range(12):
        searches = reuse.neighbour_searches
        if step == 9:
            atoms.set_cell(atoms.cell.array * 1.01, scale_atoms=True)
        else:
            atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
        reuse.calculate(atoms, wanted)
        assert step != 9 or reuse.neighbour_searches == searches + 1  # a new cell: searched again
        fresh.calculate(atoms, wanted)
        assert reuse.results["energy"] == pytest.approx(fresh.results["energy"], rel=1e-12)
        for key in ("forces", "stress"):
            np.testing.assert_allclose(reuse.results[key], fresh.results[key], rtol=1e-10, atol=1e-12)
    assert fresh.neighbour_searches == 12 and 2 < reuse.neighbour_searches < 12


def test_results_match_predict_in_ev_and_node_properties(cgcnn_run):
    model = hydradgl.load(cgcnn_run)
    calc = HydraCalculator(model, properties={"energy": "H", "charges": "C", "magmoms": "M", "moment": "M"})
    atoms = fept_cell(seed=2)
    expected = model.predict(atoms)
    assert calc.get_potential_energy(atoms) == pytest.approx(expected.structures["H"][0] * 13.605693, rel=1e-5)
    np.testing.assert_allclose(calc.get_charges(atoms), expected.atoms["C"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(calc.get_magnetic_moments(atoms), expected.atoms["M"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(calc.results["moment"], expected.atoms["M"], rtol=1e-5, atol=1e-6)


def test_short_relaxation_lowers_the_energy(cgcnn_run):
    atoms = fept_cell(seed=3, rattle=0.1)
    atoms.calc = HydraCalculator(cgcnn_run, properties={"energy": "H"}, dtype=torch.float64)
    start = atoms.get_potential_energy()
    energies = []
    # small steps: a one-epoch model's energy surface is rough, and BFGS's first Hessian guess overshoots it
    relax = FIRE(atoms, logfile=None, maxstep=0.002)
    relax.attach(lambda: energies.append(atoms.get_potential_energy()))
    relax.run(fmax=1e-4, steps=5)
    assert len(energies) == 6 and all(b < a for a, b in zip([start, *energies[1:]], energies[1:]))


def test_ensemble_values_and_spreads_are_the_members_mean_and_std(cgcnn_run, tmp_path):
    """An ensemble's energy, forces and stress are its members' means, and energy_std, forces_std and
    stress_std their standard deviations: checked against each member on its own."""
    cfg = small_config(tmp_path, **{"model.conv": "cgcnn", "graph.periodic": True, "graph.radius": 5.0,
                                    "training.epochs": 1, "training.seed": 11})
    other = train_run(cfg, quiet=True, plots_enabled=False).run_dir
    atoms = fept_cell(seed=7)
    wanted = ["energy", "forces", "stress"]
    alone = []
    for run in (cgcnn_run, other):
        calc = HydraCalculator(run, properties={"energy": "H"}, dtype=torch.float64)
        calc.calculate(atoms, wanted)
        alone.append(calc.results)
    ensemble = HydraCalculator(hydradgl.load([cgcnn_run, other]), properties={"energy": "H"}, dtype=torch.float64)
    assert {"energy_std", "forces_std", "stress_std"} <= set(ensemble.implemented_properties)
    ensemble.calculate(atoms, wanted)
    for key in wanted:
        values = np.array([results[key] for results in alone])
        np.testing.assert_allclose(ensemble.results[key], values.mean(axis=0), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ensemble.results[f"{key}_std"], values.std(axis=0, ddof=1), rtol=1e-7, atol=1e-12)
    assert ensemble.results["forces_std"].shape == (32, 3) and ensemble.results["forces_std"].max() > 1e-6


def test_forces_from_a_distance_blind_model_are_a_clear_error(pna_run):
    calc = HydraCalculator(pna_run, properties={"energy": "H"})
    atoms = fept_cell()
    atoms.calc = calc
    assert np.isfinite(atoms.get_potential_energy())
    with pytest.raises(ForcesUnavailable, match=r"conv layer 'pna', with the options used, reads neither edge features nor the geometry.*piecewise constant"):
        atoms.get_forces()


def test_bad_property_mapping_is_named(pna_run):
    with pytest.raises(ConfigError, match=r"properties\['energy'\]: head 'M' is node-level"):
        HydraCalculator(pna_run, properties={"energy": "M"})
    with pytest.raises(ConfigError, match=r"properties\['charges'\]: no head 'Q'.*heads: H, C, M"):
        HydraCalculator(pna_run, properties={"charges": "Q"})


def test_compiled_model_matches_eager_and_serves_other_cell_sizes(tmp_path):
    """compile=True computes the eager model's values and derivatives, and its one compiled graph serves
    cells with other atom and edge counts (in MD the edges change every few steps): no recompilation."""
    from torch._dynamo.utils import counters

    cfg = small_config(tmp_path, **{"graph.periodic": True, "graph.radius": 5.0, "training.epochs": 1})
    model = hydradgl.load(train_run(cfg, quiet=True, plots_enabled=False).run_dir)  # PNA with edge features
    mapping = {"energy": "H", "charges": "C"}
    eager = HydraCalculator(model, properties=mapping)
    compiled = HydraCalculator(hydradgl.load(model.run_dirs[0]), properties=mapping, compile=True)
    cells = [fept_cell(seed=4), fept_cell(seed=5, rattle=0.3), fept_cell(seed=6).repeat((1, 1, 2))]
    wanted = ["energy", "forces", "stress"]
    compiled.calculate(cells[0], wanted)
    graphs_after_first = counters["stats"]["unique_graphs"]
    assert graphs_after_first > 0  # the counter this test reads does count compilations
    for atoms in cells:
        compiled.calculate(atoms, wanted)
        eager.calculate(atoms, wanted)
        assert compiled.results["energy"] == pytest.approx(eager.results["energy"], rel=1e-5)
        for key in ("forces", "stress", "charges"):
            scale = np.abs(eager.results[key]).max()
            np.testing.assert_allclose(compiled.results[key], eager.results[key], atol=1e-4 * scale)
    edge_counts = {int(model.graphs([a]).num_edges[0]) for a in cells}
    assert len({len(a) for a in cells}) == 2 and len(edge_counts) == 3
    assert counters["stats"]["unique_graphs"] == graphs_after_first
    assert model.members[0].model.kernels == "dgl" and compiled.model.members[0].model.kernels == "torch"


def test_a_failed_compilation_says_how_to_do_without(cgcnn_run, monkeypatch):
    calc = HydraCalculator(cgcnn_run, properties={"energy": "H"}, compile=True)

    def broken(*tensors):
        raise torch._inductor.exc.InductorError(RuntimeError("C++ compile error: g++ not found"), None)
    monkeypatch.setattr(calc, "_outputs", broken)
    with pytest.raises(HydraError, match=r"compile=True\): torch.compile failed .*g\+\+ not found.*compile=False"):
        calc.get_potential_energy(fept_cell())
