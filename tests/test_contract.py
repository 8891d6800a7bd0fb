"""The saved model owns its data contract: evaluate and predict read any data by the run's own species
table, graph settings, targets and normalization; the run directory keeps its split."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from ase import Atoms
from ase.io import write as write_xyz

from hydradgl.data.normalize import Normalizer
from hydradgl.data.pipeline import load_dataset, prepare_data
from hydradgl.errors import DataError
from hydradgl.train.run import train_run
from hydradgl.api import load
from hydradgl.train.saved import evaluate_saved, load_run
from hydradgl_plugins.datasets.fept import lattice
from hydradgl_plugins.datasets.lsms import write_lsms
from tests.conftest import SMALL_FEPT, small_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = small_config(tmp_path_factory.mktemp("contract"), **{"training.epochs": 2})
    result = train_run(cfg, quiet=True, plots_enabled=False)
    return cfg, result


def lsms_folder(folder, numbers_list, seed=0):
    """LSMS files on the FePt lattice with the given occupations (no pure-element reference needed for C, M)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pos, _ = lattice(2.76, 3.74)
    for i, numbers in enumerate(numbers_list):
        numbers = np.asarray(numbers)
        write_lsms(folder / f"s{i:03d}.lsms", -1000.0 - i, numbers, pos, numbers + rng.normal(0, 0.05, 32),
                   rng.normal(1.0, 0.3, 32))
    return folder


def other_config(folder, **overrides):
    return small_config(**{"dataset.name": "lsms", "dataset.options": {"path": str(folder), "derived": ["C", "M"]},
                           "dataset.cache_dir": str(folder.parent / "cache"), "split.method": "random",
                           "split.fractions": [0.0, 0.0, 1.0], **overrides})


def test_other_data_gets_the_models_species_graph_and_normalization(run, tmp_path):
    cfg, result = run
    saved = load_run(result.run_dir)
    folder = lsms_folder(tmp_path / "pt", [[78] * 32] * 4)  # Pt only: its own table would make Pt index 0
    other = other_config(folder, **{"graph.radius": 3.0})  # a radius the model was not trained with
    data = prepare_data(other, contract=saved.info)
    assert saved.info.species == [26, 78]
    assert (data.test.species == 1).all()  # Pt is the model's Pt, not its Fe
    own = load_dataset(other, graph=cfg.graph)  # the model's 7 A graphs, not the config's 3 A ones
    assert data.test.num_edges.sum() == own.graphs.num_edges.sum() > load_dataset(other).graphs.num_edges.sum()
    norm = Normalizer.from_info(saved.info)  # the model's statistics, not refitted on this data
    order = np.argsort(data.test.ids)
    expected = norm.normalize_array("M", own.graphs.node_targets["M"])
    got = np.concatenate([data.test.subset([i]).node_targets["M"] for i in order])
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert "H" not in data.test.graph_targets


def test_target_in_other_units_is_refused(run, tmp_path):
    _, result = run
    saved = load_run(result.run_dir)
    folder = lsms_folder(tmp_path / "ev", [[26, 78] * 16] * 2)
    other = other_config(folder)
    other.dataset.options = {**other.dataset.options, "moment_unit": "muB"}
    with pytest.raises(DataError, match=r"target 'M' is node-level, dim 1, unit 'muB', but the model's is .*'mu_B'"):
        evaluate_saved(saved, other)


def test_element_the_model_never_saw_is_named_with_its_file(run, tmp_path):
    _, result = run
    saved = load_run(result.run_dir)
    folder = lsms_folder(tmp_path / "cu", [[26] * 31 + [29]])
    with pytest.raises(DataError, match=r"s000.lsms: element Cu \(Z=29\) is not among the elements the model "
                                        r"was trained on \(Fe, Pt\)"):
        evaluate_saved(saved, other_config(folder))


def test_evaluate_other_data_without_a_target_evaluates_the_heads_it_has(run, tmp_path):
    _, result = run
    saved = load_run(result.run_dir)
    rng = np.random.default_rng(1)
    folder = lsms_folder(tmp_path / "mix", [np.where(rng.random(32) < 0.5, 26, 78) for _ in range(6)])
    evaluation = evaluate_saved(saved, other_config(folder), per_structure=True)
    assert set(evaluation.metrics) == {"C", "M"} and "no target 'H'" in evaluation.skipped["H"]
    assert evaluation.metrics["M"]["unit"] == "mu_B" and evaluation.metrics["M"]["level"] == "node"
    rows = evaluation.structures
    assert len(rows) == 6 and {"C_rmse", "M_rmse"} <= set(rows[0])
    # per-structure RMSEs agree with the aggregate (equal atom counts: mean of squares over structures)
    m_rmse = np.sqrt(np.mean([r["M_rmse"] ** 2 for r in rows]))
    assert m_rmse == pytest.approx(evaluation.metrics["M"]["rmse_phys"], rel=1e-4)


def test_evaluate_own_data_per_structure_rows_match_the_metrics(run):
    _, result = run
    evaluation = evaluate_saved(load_run(result.run_dir), per_structure=True)
    rows = evaluation.structures
    errors = np.array([r["H_pred"] - r["H_true"] for r in rows])
    assert np.sqrt(np.mean(errors ** 2)) == pytest.approx(evaluation.metrics["H"]["rmse_phys"], rel=1e-4)
    split = list(csv.DictReader((result.run_dir / "split.csv").open()))
    test_ids = sorted(int(r["id"]) for r in split if r["split"] == "test")
    assert sorted(r["id"] for r in rows) == test_ids


def test_split_is_saved_and_disjoint(run):
    cfg, result = run
    rows = list(csv.DictReader((result.run_dir / "split.csv").open()))
    ids = [int(r["id"]) for r in rows]
    assert sorted(ids) == list(range(len(load_dataset(cfg).graphs)))  # every structure once
    summary = json.loads((result.run_dir / "test_metrics.json").read_text())
    assert sum(r["split"] == "test" for r in rows) == summary["test_graphs"]
    assert all(r["source"].endswith(".lsms") for r in rows)


def test_last_checkpoint_can_be_chosen(run):
    _, result = run
    best, last = load_run(result.run_dir), load_run(result.run_dir, checkpoint="last")
    assert best.checkpoint.name == "best.pt" and last.checkpoint.name == "last.pt"
    import torch

    assert torch.load(last.checkpoint, weights_only=True)["epoch"] == len(result.history)


def test_predict_extxyz_with_an_lsms_trained_model(run, tmp_path):
    """.xyz files are claimed by the extxyz plugin's reader; their own lattice is used."""
    _, result = run
    pos, cell = lattice(2.76, 3.74)
    atoms = Atoms(numbers=[26, 78] * 16, positions=pos, cell=cell, pbc=True)
    write_xyz(tmp_path / "new.xyz", [atoms, atoms], format="extxyz")
    lsms = lsms_folder(tmp_path / "lsms", [[26, 78] * 16])
    result = load(result.run_dir).predict([tmp_path / "new.xyz", lsms / "s000.lsms"])
    structures, atom_rows = result.structures.to_dict("records"), result.atoms.to_dict("records")
    assert [r["source"] for r in structures] == [f"{tmp_path / 'new.xyz'}#0", f"{tmp_path / 'new.xyz'}#1",
                                                 str(lsms / "s000.lsms")]
    assert len(atom_rows) == 3 * 32 and {"C", "M", "Z"} <= set(atom_rows[0])
    # same structure through either reader (both periodic on the same lattice): same prediction
    assert structures[0]["H"] == pytest.approx(structures[2]["H"], abs=1e-5)


def test_predict_with_an_extxyz_trained_model(tmp_path):
    rng = np.random.default_rng(0)
    frames = []
    for i in range(12):
        a = Atoms("FePt", positions=[[0, 0, 0], [1.6 + 0.1 * rng.random(), 0, 0]], cell=np.eye(3) * 5, pbc=True)
        a.info["energy"] = -1.0 - 0.1 * i
        frames.append(a)
    write_xyz(tmp_path / "train.xyz", frames, format="extxyz")
    cfg = small_config(tmp_path, **{"dataset.name": "extxyz", "dataset.options": {"path": str(tmp_path / "train.xyz")},
                                    "heads": [{"name": "E", "target": "energy", "layers": [8]}],
                                    "split.method": "random", "graph.radius": 3.0, "training.epochs": 1})
    result = train_run(cfg, quiet=True, plots_enabled=False)
    out = load(result.run_dir).predict([tmp_path / "train.xyz"])
    structures, atoms = out.structures.to_dict("records"), out.atoms.to_dict("records")
    assert len(structures) == 12 and np.isfinite([r["E"] for r in structures]).all()
    assert len(atoms) == 24 and set(atoms[0]) == {"structure", "source", "atom", "Z"}  # no node heads


def test_cli_evaluate_last_checkpoint_with_per_structure_errors(run, tmp_path):
    from click.testing import CliRunner

    from hydradgl.cli import main

    _, result = run
    rows_path = tmp_path / "errors.csv"
    res = CliRunner().invoke(main, ["evaluate", str(result.run_dir), "--checkpoint", "last", "--json",
                                    "--per-structure", str(rows_path)])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)
    expected = evaluate_saved(load_run(result.run_dir, checkpoint="last")).metrics
    assert metrics.keys() == expected.keys()
    for head in expected:
        assert metrics[head]["rmse_phys"] == pytest.approx(expected[head]["rmse_phys"], rel=1e-6)
        assert metrics[head]["unit"] == expected[head]["unit"]
    rows = list(csv.DictReader(rows_path.open()))
    assert len(rows) == json.loads((result.run_dir / "test_metrics.json").read_text())["test_graphs"]


def test_saved_run_records_complete_plugin_options(run):
    """Defaults are written out (a later change of a plugin default cannot change the saved model)."""
    import yaml
    import torch

    from hydradgl_plugins.convs.pna import PNAOptions
    from hydradgl_plugins.datasets.fept import FePtOptions
    from hydradgl_plugins.heads.graph import GraphHeadOptions

    _, result = run
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    state = torch.load(result.run_dir / "best.pt", weights_only=True)
    for cfg in (saved, state["config"]):
        assert cfg["model"]["conv_options"] == PNAOptions().model_dump(mode="json")
        assert [h["kind"] for h in cfg["heads"]] == ["graph-head", "node-head", "node-head"]
        assert cfg["heads"][0]["options"] == GraphHeadOptions().model_dump(mode="json")
        assert cfg["dataset"]["options"] == {**FePtOptions().model_dump(mode="json"), **SMALL_FEPT["dataset.options"]}


def _as_format2(run_dir, tmp_path, conv_options):
    """A copy of ``run_dir`` whose checkpoints look written by format 2: plugin options as given."""
    import shutil
    import torch

    old = tmp_path / "format2"
    shutil.copytree(run_dir, old)
    for name in ("best.pt", "last.pt"):
        state = torch.load(old / name, weights_only=True)
        state["format"], state["config"]["model"]["conv_options"] = 2, conv_options
        torch.save(state, old / name)
    return old


def test_format2_edge_free_pna_loads_as_it_was_trained(tmp_path, small_prepared):
    """Runs of the paper's PNA saved before edge features became the default (conv_options {} then
    meant no edge features) load with their own architecture and predict as before."""
    cfg = small_config(tmp_path, **{"model.conv_options": {"use_edge_features": False}, "training.epochs": 1})
    run_dir = train_run(cfg, data=small_prepared, quiet=True, plots_enabled=False).run_dir
    atoms = Atoms(numbers=[26, 78] * 16, positions=lattice(3.86, 3.72)[0], cell=lattice(3.86, 3.72)[1], pbc=False)
    before = load(run_dir).predict(atoms).structures["H"].to_numpy()
    old = load(_as_format2(run_dir, tmp_path, {}))
    assert old.members[0].cfg.model.conv_options["use_edge_features"] is False
    np.testing.assert_allclose(old.predict(atoms).structures["H"].to_numpy(), before, rtol=1e-6)


def test_format2_edge_free_pna_run_resumes_as_it_was_trained(tmp_path, small_prepared):
    """Its config.yaml says conv_options: {} (edge features on, today): the checkpoint's options win."""
    import yaml

    cfg = small_config(tmp_path, **{"model.conv_options": {"use_edge_features": False}, "training.epochs": 1})
    run_dir = train_run(cfg, data=small_prepared, quiet=True, plots_enabled=False).run_dir
    old = _as_format2(run_dir, tmp_path, {})
    saved = yaml.safe_load((old / "config.yaml").read_text())
    saved["model"]["conv_options"] = {}
    (old / "config.yaml").write_text(yaml.safe_dump(saved))
    again = small_config(tmp_path, **{"training.epochs": 2, "output_dir": str(old)})
    resumed = train_run(again, resume=old, data=small_prepared, quiet=True, plots_enabled=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert load(old).members[0].cfg.model.conv_options["use_edge_features"] is False


def test_weights_that_do_not_fit_the_config_are_a_clear_error(run, tmp_path):
    from hydradgl.errors import TrainingError

    _, result = run
    broken = _as_format2(result.run_dir, tmp_path, {"use_edge_features": True, "aggregators": ["mean", "max"]})
    with pytest.raises(TrainingError, match=r"format2/best.pt: its weights do not fit the model its config builds"):
        load(broken)
