"""The potential head: forces -dE/dr in the loss (from the edge vectors) equal to the calculator's
and to finite differences, reference energies fitted by least squares
and saved with the model, training on forces beating zero forces, a calculator without ``properties=``,
energy errors per atom and forces in meV/A in the test table and ``evaluate``, predict's forces, and the
refusals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from ase import Atoms
from ase.calculators.fd import calculate_numerical_forces

import hydradgl
from hydradgl.configio import load_config
from hydradgl.data.pipeline import prepare_data
from hydradgl.errors import ConfigError
from hydradgl.model.assembler import build_model
from hydradgl.train.run import train_run

EMT = {"dataset.name": "emt-alloy", "dataset.options": {"per_composition": 4, "forces": True},
       "graph.radius": 4.0, "graph.periodic": True, "model.conv": "schnet", "model.hidden": 16,
       "model.layers": 2, "model.norm": "none", "model.activation": "silu", "training.batch_size": 8,
       "training.lr": 5e-3, "training.device": "cpu", "training.threads": 2}
POTENTIAL = {"name": "energy", "kind": "potential", "options": {"forces": "forces", "force_weight": 10.0}}


def emt_config(tmp_path=None, **overrides):
    base = {**EMT, "heads": [POTENTIAL], "training.epochs": 2}
    if tmp_path is not None:
        base["output_dir"] = str(tmp_path / "run")
    return load_config(None, {**base, **overrides})


@pytest.fixture(scope="module")
def emt_prepared(registry):
    return prepare_data(emt_config(), registry)


@pytest.fixture(scope="module")
def potential_run(tmp_path_factory, emt_prepared):
    cfg = emt_config(tmp_path_factory.mktemp("potential"), **{"training.epochs": 30, "training.patience": None})
    return train_run(cfg, data=emt_prepared, quiet=True, plots_enabled=False)


def emt_cell(seed: int = 0) -> Atoms:
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 2, 2))
    rng = np.random.default_rng(seed)
    atoms.numbers = np.where(rng.random(len(atoms)) < 0.5, 29, 79)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.01 * rng.standard_normal((3, 3))), scale_atoms=True)
    atoms.rattle(0.05, seed=seed)
    return atoms


def test_the_forces_head_is_reported_and_beats_zero_forces(potential_run, emt_prepared):
    assert set(potential_run.test) == {"energy", "forces"}
    assert potential_run.test["forces"]["unit"] == "eV/A" and potential_run.test["forces"]["level"] == "node"
    true = emt_prepared.test.with_normalizer(None).node_targets["forces"]
    zero_forces = float(np.sqrt(np.mean(true.astype(np.float64) ** 2)))
    assert potential_run.test["forces"]["rmse_phys"] < 0.85 * zero_forces


def test_model_forces_equal_the_calculators_and_finite_differences(potential_run):
    model = hydradgl.load(potential_run.run_dir)
    from hydradgl.ase import HydraCalculator

    calc = HydraCalculator(model, dtype=torch.float64, skin=0.0)
    assert calc.mapping == {"energy": "energy"}  # no properties= needed; the derived head is left out
    atoms = emt_cell()
    atoms.calc = calc
    forces = atoms.get_forces()
    numerical = calculate_numerical_forces(atoms, eps=1e-5)  # small steps: ReLU kinks are not crossed
    np.testing.assert_allclose(forces, numerical, atol=1e-7 * max(1.0, np.abs(forces).max()))
    # The model's own forces head (edge-vector derivatives, float32) gives the same forces.
    predicted = model.predict([atoms]).atoms[["forces[0]", "forces[1]", "forces[2]"]].to_numpy()
    np.testing.assert_allclose(predicted, forces, atol=2e-3 * np.abs(forces).max())


def test_test_table_and_evaluate_give_energy_per_atom_in_mev_and_forces_in_mev_per_a(potential_run, emt_prepared):
    from click.testing import CliRunner
    from rich.console import Console

    from hydradgl.cli import main
    from hydradgl.cli.reporting import metrics_table

    test = emt_prepared.test
    predicted, _ = hydradgl.load(potential_run.run_dir).predict_arrays(test)["energy"]
    true = test.with_normalizer(None).graph_targets["energy"][:, 0].astype(np.float64)
    per_atom = (predicted[:, 0] - true) / test.num_nodes  # each structure's error over its own atom count
    energy = potential_run.test["energy"]
    assert energy["rmse_per_atom"] == pytest.approx(np.sqrt(np.mean(per_atom ** 2)), rel=1e-4)
    assert energy["mae_per_atom"] == pytest.approx(np.mean(np.abs(per_atom)), rel=1e-4)
    assert (energy["display_unit"], potential_run.test["forces"]["display_unit"]) == ("meV/atom", "meV/A")
    console = Console(width=200, record=True)
    console.print(metrics_table(potential_run.test))
    row = next(line for line in console.export_text().splitlines() if line.startswith("│ energy"))
    assert [c.strip() for c in row.split("│")[4:7]] == [f"{1e3 * energy['rmse_per_atom']:.4g}",
                                                       f"{1e3 * energy['mae_per_atom']:.4g}", "meV/atom"]

    result = CliRunner().invoke(main, ["evaluate", str(potential_run.run_dir), "--json"])
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.stdout)
    for head in ("energy", "forces"):
        for key in ("rmse_phys", "rmse_display", "mae_display"):
            assert evaluated[head][key] == pytest.approx(potential_run.test[head][key], rel=1e-5)
    assert evaluated["forces"]["rmse_display"] == pytest.approx(1e3 * evaluated["forces"]["rmse_phys"])
    saved = json.loads((potential_run.run_dir / "test_metrics.json").read_text())["heads"]
    assert saved["energy"]["unit"] == "eV" and saved["energy"]["unit_per_atom"] == "eV/atom"
    assert saved["energy"]["rmse_display"] == pytest.approx(1e3 * saved["energy"]["rmse_per_atom"])


def test_predict_gives_the_calculators_forces_per_atom_and_an_ensemble_their_spread(potential_run, tmp_path):
    from ase.io import write
    from click.testing import CliRunner

    from hydradgl.ase import HydraCalculator
    from hydradgl.cli import main

    columns = ["forces[0]", "forces[1]", "forces[2]"]
    frames = [emt_cell(1), emt_cell(2)[:20]]
    model = hydradgl.load(potential_run.run_dir).to(torch.float64)
    atoms_rows = model.predict(frames).atoms
    for s, atoms in enumerate(frames):
        atoms.calc = HydraCalculator(model, skin=0.0)
        np.testing.assert_allclose(atoms_rows[atoms_rows.structure == s][columns].to_numpy(), atoms.get_forces(),
                                   rtol=1e-6, atol=1e-6)  # float32 rounding of forces of a few eV/A
    pair = hydradgl.load([potential_run.run_dir, potential_run.run_dir]).predict(frames)
    assert {f"{c}_std" for c in columns} <= set(pair.atoms) and "energy_std" in pair.structures
    np.testing.assert_allclose(pair.atoms[[f"{c}_std" for c in columns]].to_numpy(), 0.0, atol=1e-6)

    path = tmp_path / "frames.xyz"
    write(path, [a.copy() for a in frames], format="extxyz")
    result = CliRunner().invoke(main, ["predict", str(potential_run.run_dir), str(path), "-o",
                                       str(tmp_path / "out.csv")])
    assert result.exit_code == 0, result.output
    written = pd.read_csv(tmp_path / "out.atoms.csv")
    expected = hydradgl.load(potential_run.run_dir).predict([path]).atoms
    assert len(written) == 52
    np.testing.assert_allclose(written[columns].to_numpy(), expected[columns].to_numpy(), rtol=1e-6, atol=1e-9)


def test_reference_energies_are_the_least_squares_fit_and_travel_with_the_model(potential_run, emt_prepared):
    train = emt_prepared.train.with_normalizer(None)
    species = train.species
    owner = np.repeat(np.arange(len(train)), train.num_nodes)
    counts = np.zeros((len(train), len(emt_prepared.info.species)))
    for g, s in zip(owner, species):
        counts[g, s] += 1
    energy = train.graph_targets["energy"][:, 0].astype(np.float64)
    expected = np.linalg.lstsq(counts, energy, rcond=None)[0]
    head = hydradgl.load(potential_run.run_dir).members[0].model.heads["energy"]
    np.testing.assert_allclose(head.e0.double().numpy(), expected, rtol=1e-5)
    forces = train.node_targets["forces"].astype(np.float64)
    assert float(head.scale) == pytest.approx(np.sqrt(np.mean(forces ** 2)), rel=1e-5)


def test_given_reference_energies_are_used_as_given(emt_prepared, registry):
    cfg = emt_config(heads=[{**POTENTIAL, "options": {"e0": {"Cu": -1.0, "Au": -2.0}}}])
    model = build_model(cfg, emt_prepared.info, registry)
    model.fit_energy_statistics(emt_prepared.train, emt_prepared.info.species)
    by_z = dict(zip(emt_prepared.info.species, model.heads["energy"].e0.tolist()))
    assert by_z == {29: -1.0, 79: -2.0}
    with pytest.raises(ConfigError, match=r"no reference energy for Au"):
        build_model(emt_config(heads=[{**POTENTIAL, "options": {"e0": {"Cu": -1.0}}}]), emt_prepared.info, registry)


def test_a_potential_on_a_batch_norm_trunk_is_refused(emt_prepared, registry):
    """Batch statistics would couple the structures of a training batch through the forces; layer norm
    (per atom) and none are fine."""
    with pytest.raises(ConfigError, match=r"model\.norm: the 'schnet' trunk has batch norm.*set model\.norm: layer or none"):
        build_model(emt_config(**{"model.norm": "batch"}), emt_prepared.info, registry)
    for norm in ("layer", "none"):
        build_model(emt_config(**{"model.norm": norm}), emt_prepared.info, registry)


def test_a_potential_head_plugin_without_a_scale_is_refused(emt_prepared):
    """The loss divides a potential's terms by its module's ``scale`` buffer (HeadSpec): a third-party
    energy head without one is refused when the model is built, naming the plugin."""
    from importlib.metadata import entry_points

    from hydradgl import hookimpl
    from hydradgl.errors import PluginError
    from hydradgl.plugins import HeadSpec, load_registry
    from hydradgl_plugins.heads.potential import PotentialHeadOptions, make_potential_head
    from tests.test_registry import entry_point, plugin_module

    def scaleless(*args):
        head = make_potential_head(*args)
        del head.scale
        return head

    @hookimpl
    def register_heads(register):
        register(HeadSpec(name="scaleless", description="a potential without its scale", options=PotentialHeadOptions,
                          factory=scaleless, level="graph", kernels=("dgl", "torch"), energy=True))

    module = plugin_module("hd_test_scaleless", {"register_heads": register_heads})
    reg = load_registry([*entry_points(group="hydradgl"), entry_point("scaleless", module, "pkg-scaleless")])
    with pytest.raises(PluginError, match=r"head plugin 'scaleless': a potential head's module needs a `scale`"):
        build_model(emt_config(heads=[{**POTENTIAL, "kind": "scaleless"}]), emt_prepared.info, reg)


def test_a_potential_of_a_conv_blind_to_distances_is_refused(emt_prepared, registry):
    with pytest.raises(ConfigError, match=r"does not depend on interatomic distances"):
        build_model(emt_config(**{"model.conv": "sage"}), emt_prepared.info, registry)


def test_the_forces_option_must_name_a_vector_node_target(emt_prepared, registry):
    with pytest.raises(ConfigError, match=r"heads\[0\]\.options\.forces: 'atom_energy' is a node-level target with "
                                          r"1 component.*here: forces"):
        build_model(emt_config(heads=[{**POTENTIAL, "options": {"forces": "atom_energy"}}]), emt_prepared.info,
                    registry)
    with pytest.raises(ConfigError, match=r"'forces' is not in the dataset"):
        build_model(emt_config(**{"dataset.options": {"per_composition": 4}}),
                    prepare_data(emt_config(**{"dataset.options": {"per_composition": 4}}), registry).info,
                    registry)


def test_a_head_named_like_the_forces_is_refused(emt_prepared, registry):
    cfg = emt_config(heads=[POTENTIAL, {"name": "forces", "target": "atom_energy"}])
    with pytest.raises(ConfigError, match=r"'energy''s forces are reported as 'forces', which another head"):
        build_model(cfg, emt_prepared.info, registry)


def test_force_loss_gradients_agree_on_both_kernel_paths(emt_prepared, registry):
    """One force-loss gradient per kernel path, compared with the other path's (float64)."""
    from hydradgl.data.loader import BatchLoader
    from hydradgl.model.loss import MultiTaskLoss

    torch.manual_seed(0)
    model = build_model(emt_config(), emt_prepared.info, registry).double()
    model.fit_energy_statistics(emt_prepared.train, emt_prepared.info.species)
    batch = next(iter(BatchLoader(emt_prepared.train, 8, shuffle=False)))
    batch = type(batch)(**{**batch.__dict__, "edge_vec": batch.edge_vec.double(), "edge_dist": batch.edge_dist.double(),
                           "node_inputs": batch.node_inputs.double(),
                           "graph_targets": {k: v.double() for k, v in batch.graph_targets.items()},
                           "node_targets": {k: v.double() for k, v in batch.node_targets.items()}})
    grads = {}
    for path in ("dgl", "torch"):
        model.kernels = path
        model.zero_grad()
        total, _ = MultiTaskLoss(model.head_descriptions, model.loss_units)(model(batch), batch)
        total.backward()
        grads[path] = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    assert grads["dgl"] and len(grads["dgl"]) == len(grads["torch"])
    for a, b in zip(grads["dgl"], grads["torch"]):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_the_loss_measures_energy_per_atom_and_force_components_in_the_potentials_scale(emt_prepared, registry):
    """The potential's loss terms, recomputed in physical units: the energy error per atom and each force
    component's error over the head's scale ``s`` (the RMS training force component), squared and
    averaged; the same terms in the validation metrics, and a force term that does not change when the
    errors rotate (one scale for every component, not its min-max span)."""
    from hydradgl.data.loader import BatchLoader
    from hydradgl.data.normalize import Normalizer
    from hydradgl.model.loss import MultiTaskLoss
    from hydradgl.train.metrics import ErrorSums
    from hydradgl.train.runtime import Runtime

    torch.manual_seed(0)
    model = build_model(emt_config(), emt_prepared.info, registry).double()
    model.fit_energy_statistics(emt_prepared.train, emt_prepared.info.species)
    scale = float(model.heads["energy"].scale)
    forces_true = emt_prepared.train.with_normalizer(None).node_targets["forces"].astype(np.float64)
    assert scale == pytest.approx(float(np.sqrt(np.mean(forces_true ** 2))), rel=1e-6)
    batch = next(iter(BatchLoader(emt_prepared.train, 8, shuffle=False)))
    preds = {k: v.detach().double() for k, v in model(batch).items()}
    normalizer = Normalizer.from_info(emt_prepared.info)
    phys = {k: normalizer.denormalize(k, v).numpy() for k, v in preds.items()}
    true = {"energy": normalizer.denormalize("energy", batch.graph_targets["energy"].double()).numpy(),
            "forces": normalizer.denormalize("forces", batch.node_targets["forces"].double()).numpy()}
    atoms = batch.graph.batch_num_nodes.numpy()[:, None]
    expected = {"energy": np.mean(((phys["energy"] - true["energy"]) / atoms / scale) ** 2),
                "forces": np.mean(((phys["forces"] - true["forces"]) / scale) ** 2)}
    batch64 = type(batch)(**{**batch.__dict__, "graph_targets": {k: v.double() for k, v in batch.graph_targets.items()},
                             "node_targets": {k: v.double() for k, v in batch.node_targets.items()}})
    total, parts = MultiTaskLoss(model.head_descriptions, model.loss_units)(preds, batch64)
    for name in ("energy", "forces"):
        assert float(parts[name]) == pytest.approx(expected[name], rel=1e-9)
    assert float(total) == pytest.approx(expected["energy"] + 10.0 * expected["forces"], rel=1e-9)
    sums = ErrorSums(model.head_descriptions, normalizer, torch.device("cpu"), model.loss_units())
    sums.add(preds, batch64)
    reduced = sums.reduce(Runtime(0, 1, 0, torch.device("cpu")))
    for name in ("energy", "forces"):
        assert reduced[name]["loss"] == pytest.approx(expected[name], rel=1e-9)
    # Rotate the force errors: the force term stays (a per-component span would change it).
    rotation = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))[0]
    error = torch.as_tensor(phys["forces"] - true["forces"])
    rotated = torch.as_tensor(true["forces"]) + error @ rotation.T
    preds["forces"] = normalizer.normalize("forces", rotated)
    _, turned = MultiTaskLoss(model.head_descriptions, model.loss_units)(preds, batch64)
    assert float(turned["forces"]) == pytest.approx(expected["forces"], rel=1e-9)
