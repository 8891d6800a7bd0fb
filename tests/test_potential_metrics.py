"""What a potential's user reads: energy errors per atom, only present (finite) targets counted, errors
in meV/atom, meV/A and GPa (test table, JSON, TensorBoard tags), parity plots of vector heads in one panel.
(The metrics of a trained potential, and its predicted forces: tests/test_potential.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rich.console import Console

from hydradgl.cli.reporting import metrics_table
from hydradgl.data.batch import Batch
from hydradgl.data.normalize import Normalizer
from hydradgl.model.heads import HeadDescription
from hydradgl.ops import MessageGraph
from hydradgl.train.display_units import displayed_errors
from hydradgl.train.metrics import ErrorSums, with_units
from hydradgl.train.plots import parity_and_histograms, parity_figure
from hydradgl.train.runtime import Runtime
from hydradgl.train.tracking import test_scalars as tensorboard_test_scalars

ENERGY = HeadDescription(name="energy", target="energy", level="graph", kind="potential", loss="mse", weight=1.0,
                         unit="eV", energy=True)
FORCES = HeadDescription(name="forces", target="forces", level="node", kind="forces", loss="mse", weight=10.0,
                         dim=3, unit="eV/A", forces_of="energy")
NORMALIZER = Normalizer({"energy": [-40.0], "forces": [-2.0, -1.0, -3.0]},
                        {"energy": [-10.0], "forces": [2.0, 1.0, 3.0]})
SPAN = {"energy": 30.0, "forces": np.array([4.0, 2.0, 6.0])}


def synthetic_batch(rng: np.random.Generator, counts: list[int], missing_energy: int | None = None,
                    missing_forces: tuple[int, ...] = ()) -> tuple[Batch, dict[str, torch.Tensor]]:
    """A batch of edgeless graphs with ``counts`` atoms, normalized targets and predictions; NaN targets
    for the graph ``missing_energy`` and the atoms ``missing_forces`` (frames without them)."""
    n = sum(counts)
    graph = MessageGraph.from_edges(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), n,
                                    torch.tensor(counts), torch.zeros(len(counts), dtype=torch.long))
    energy, forces = rng.random((len(counts), 1)), rng.random((n, 3))
    if missing_energy is not None:
        energy[missing_energy] = np.nan
    forces[list(missing_forces)] = np.nan
    batch = Batch(graph=graph, species=torch.zeros(n, dtype=torch.long), node_inputs=torch.zeros(n, 0),
                  edge_dist=torch.zeros(0), edge_vec=torch.zeros(0, 3),
                  graph_targets={"energy": torch.tensor(energy, dtype=torch.float32)},
                  node_targets={"forces": torch.tensor(forces, dtype=torch.float32)})
    preds = {"energy": torch.tensor(rng.random((len(counts), 1)), dtype=torch.float32),
             "forces": torch.tensor(rng.random((n, 3)), dtype=torch.float32)}
    return batch, preds


def test_error_sums_score_energy_per_atom_and_skip_absent_targets():
    rng = np.random.default_rng(3)
    batches = [synthetic_batch(rng, [2, 7, 3], missing_energy=1, missing_forces=(0, 5)),
               synthetic_batch(rng, [1, 12], missing_forces=(12,))]
    sums = ErrorSums([ENERGY, FORCES], NORMALIZER, torch.device("cpu"))
    for batch, preds in batches:
        sums.add(preds, batch)
    metrics = sums.reduce(Runtime(0, 1, 0, torch.device("cpu")))

    def gather(get):
        return np.concatenate([get(b, p) for b, p in batches]).astype(np.float64)

    atoms = gather(lambda b, p: b.graph.batch_num_nodes.numpy())
    true_e = gather(lambda b, p: b.graph_targets["energy"].numpy()[:, 0])
    pred_e = gather(lambda b, p: p["energy"].numpy()[:, 0])
    keep = np.isfinite(true_e)
    diff = (pred_e - true_e)[keep]
    assert keep.sum() == 4
    e = metrics["energy"]
    assert e["rmse"] == pytest.approx(np.sqrt(np.mean(diff ** 2)), rel=1e-9)
    assert e["loss"] == pytest.approx(np.mean(diff ** 2), rel=1e-9)
    assert e["mae_phys"] == pytest.approx(np.mean(np.abs(diff)) * SPAN["energy"], rel=1e-9)
    per_atom = diff * SPAN["energy"] / atoms[keep]
    assert e["rmse_per_atom"] == pytest.approx(np.sqrt(np.mean(per_atom ** 2)), rel=1e-9)
    assert e["mae_per_atom"] == pytest.approx(np.mean(np.abs(per_atom)), rel=1e-9)
    # a structure's error per atom is not the per-structure error over the mean atom count
    assert e["rmse_per_atom"] != pytest.approx(e["rmse_phys"] / atoms[keep].mean(), rel=1e-2)

    true_f = gather(lambda b, p: b.node_targets["forces"].numpy())
    pred_f = gather(lambda b, p: p["forces"].numpy())
    present = np.isfinite(true_f).all(axis=1)
    assert present.sum() == len(true_f) - 3
    phys = (pred_f - true_f)[present] * SPAN["forces"]  # every atom x component, each component's span
    f = metrics["forces"]
    assert f["rmse_phys"] == pytest.approx(np.sqrt(np.mean(phys ** 2)), rel=1e-9)
    assert f["mae_phys"] == pytest.approx(np.mean(np.abs(phys)), rel=1e-9)
    assert "rmse_per_atom" not in f


def test_a_head_with_every_target_absent_scores_nan_not_zero():
    rng = np.random.default_rng(0)
    batch, preds = synthetic_batch(rng, [2, 3], missing_forces=tuple(range(5)))
    sums = ErrorSums([FORCES], NORMALIZER, torch.device("cpu"))
    sums.add(preds, batch)
    assert np.isnan(sums.reduce(Runtime(0, 1, 0, torch.device("cpu")))["forces"]["rmse_phys"])


def test_errors_are_shown_in_mev_per_atom_mev_per_a_and_gpa_other_units_as_they_are():
    raw = {"energy": {"rmse": 0.1, "mae": 0.05, "rmse_phys": 0.64, "mae_phys": 0.32, "rmse_per_atom": 0.02,
                      "mae_per_atom": 0.01},
           "forces": {"rmse": 0.1, "mae": 0.05, "rmse_phys": 0.05, "mae_phys": 0.04},
           "stress": {"rmse": 0.1, "mae": 0.05, "rmse_phys": 0.001, "mae_phys": 0.0005},
           "H": {"rmse": 0.1, "mae": 0.05, "rmse_phys": 0.0344, "mae_phys": 0.026}}
    heads = [ENERGY, FORCES,
             HeadDescription(name="stress", target="stress", level="graph", kind="stress", loss="mse", weight=1.0,
                             dim=6, unit="eV/A^3"),
             HeadDescription(name="H", target="H", level="graph", kind="mlp", loss="mse", weight=1.0, unit="Ry")]
    shown = with_units(raw, heads)
    assert (shown["energy"]["rmse_display"], shown["energy"]["display_unit"]) == (pytest.approx(20.0), "meV/atom")
    assert shown["energy"]["unit_per_atom"] == "eV/atom" and shown["energy"]["rmse_phys"] == 0.64  # kept as it was
    assert (shown["forces"]["mae_display"], shown["forces"]["display_unit"]) == (pytest.approx(40.0), "meV/A")
    assert (shown["stress"]["rmse_display"], shown["stress"]["display_unit"]) == (pytest.approx(0.16021766208),
                                                                                   "GPa")
    assert (shown["H"]["rmse_display"], shown["H"]["display_unit"]) == (0.0344, "Ry")
    # a test_metrics.json written before the per-atom fields: per structure, in meV
    assert displayed_errors({"unit": "eV", "rmse_phys": 0.5, "mae_phys": 0.25}) == (500.0, 250.0, "meV")

    console = Console(width=200, record=True)
    console.print(metrics_table(shown))
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in console.export_text().splitlines()
            if line.startswith("│")]
    cells = {row[0]: row[1:] for row in rows}
    assert cells["energy"][2:] == ["20", "10", "meV/atom"] and cells["forces"][2:] == ["50", "40", "meV/A"]
    assert cells["stress"][2:] == ["0.1602", "0.08011", "GPa"]
    assert cells["H"] == ["1.000e-01", "5.000e-02", "0.0344", "0.026", "Ry"]  # as before display units

    tags = tensorboard_test_scalars(shown)
    assert tags["energy/test_rmse_meV_per_atom"] == pytest.approx(20.0)
    assert tags["forces/test_mae_meV_per_A"] == pytest.approx(40.0)
    assert tags["stress/test_rmse_GPa"] == pytest.approx(0.16021766208)
    assert tags["H/test_rmse_phys"] == 0.0344 and not any(t.startswith("H/test_rmse_") and t != "H/test_rmse_phys"
                                                          for t in tags)


def test_the_parity_plot_of_a_vector_head_shows_every_present_component_in_one_panel(tmp_path):
    rng = np.random.default_rng(1)
    true, pred = rng.standard_normal((40, 3)), rng.standard_normal((40, 3))
    true[[3, 7]] = np.nan  # two atoms of frames without forces
    fig = parity_figure("forces", 1e3 * true, 1e3 * pred, "meV/A")
    (ax,) = fig.axes
    points = [c.get_offsets() for c in ax.collections]
    assert [len(p) for p in points] == [38, 38, 38]
    np.testing.assert_allclose(points[2], 1e3 * np.column_stack([true[:, 2], pred[:, 2]])[np.isfinite(true[:, 2])])
    assert "meV/A" in ax.get_xlabel() and "forces[2]" in [t.get_text() for t in ax.get_legend().get_texts()]

    energy_true = rng.standard_normal((10, 1))
    parity_and_histograms({"forces": (true, pred), "energy": (energy_true, energy_true + 0.01)},
                          {"forces": "eV/A", "energy": "eV"}, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"parity_forces.png", "errors_forces.png", "parity_energy.png",
                                                    "errors_energy.png"}
    (ax,) = parity_figure("energy", energy_true, energy_true).axes
    assert len(ax.collections) == 1 and ax.collections[0].get_array().size > 0  # one density of a scalar head
