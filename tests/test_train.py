"""Training: learning, reproducibility, resume, failure handling, saved runs, experiment."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hydradgl.data.normalize import Normalizer
from hydradgl.data.pipeline import prepare_data
from hydradgl.errors import TrainingError
from hydradgl.train import checkpoint as ckpt
from hydradgl.train.run import train_run
from hydradgl.train.saved import evaluate_run, load_run
from tests.conftest import small_config

LEARN = {"dataset.options": {"max_per_composition": 12}, "training.batch_size": 32, "model.hidden": 20,
         "model.layers": 3, "training.epochs": 25, "training.patience": None}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = small_config(tmp_path_factory.mktemp("trained"), **LEARN)
    data = prepare_data(cfg)
    return cfg, data, train_run(cfg, data=data, quiet=True)


def test_training_beats_predict_the_mean(trained):
    cfg, data, result = trained
    assert result.history[-1]["train_loss"] < 0.2 * result.history[0]["train_loss"]
    for head in ("H", "C", "M"):
        values = data.test.graph_targets.get(head, data.test.node_targets.get(head))
        train_values = data.train.graph_targets.get(head, data.train.node_targets.get(head))
        baseline = math.sqrt(float(np.mean((values - train_values.mean()) ** 2)))
        assert result.test[head]["rmse"] < 0.5 * baseline, (head, result.test[head]["rmse"], baseline)


def test_run_directory_contents(trained):
    cfg, _, result = trained
    run = result.run_dir
    for name in ("config.yaml", "last.pt", "best.pt", "metrics.csv", "test_metrics.json", "run.log",
                 "plots/parity_H.png", "plots/errors_M.png", "plots/loss_curves.png"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert set(metrics["heads"]) == {"H", "C", "M"} and metrics["heads"]["M"]["unit"] == "mu_B"
    assert len((run / "metrics.csv").read_text().splitlines()) == cfg.training.epochs + 1
    assert not list(run.glob("*.tmp"))


def test_same_seed_same_result(tmp_path, small_prepared):
    runs = [train_run(small_config(tmp_path / str(i)), data=small_prepared, quiet=True, plots_enabled=False)
            for i in range(2)]
    assert runs[0].history[-1]["val_loss"] == runs[1].history[-1]["val_loss"]
    assert runs[0].test == runs[1].test
    other = train_run(small_config(tmp_path / "2", **{"training.seed": 1}), data=small_prepared, quiet=True,
                      plots_enabled=False)
    assert other.history[-1]["val_loss"] != runs[0].history[-1]["val_loss"]


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_resume_equals_uninterrupted(tmp_path, small_prepared, ema_decay):
    extra = {"training.epochs": 4, "training.lr_schedule": "plateau", "training.plateau_patience": 1,
             "training.ema_decay": ema_decay}
    full = train_run(small_config(tmp_path / "full", **extra), data=small_prepared, quiet=True, plots_enabled=False)
    half_cfg = small_config(tmp_path / "half", **{**extra, "training.epochs": 2})
    train_run(half_cfg, data=small_prepared, quiet=True, plots_enabled=False)
    resumed_cfg = half_cfg.model_copy(update={"training": half_cfg.training.model_copy(update={"epochs": 4})})
    resumed = train_run(resumed_cfg, resume=half_cfg.output_dir, data=small_prepared, quiet=True, plots_enabled=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(full.history, resumed.history):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)
    last_full = torch.load(tmp_path / "full" / "run" / "last.pt", weights_only=True)
    last_resumed = torch.load(tmp_path / "half" / "run" / "last.pt", weights_only=True)
    for weights in ("model", "trained_model") if ema_decay else ("model",):
        for key in last_full[weights]:
            torch.testing.assert_close(last_full[weights][key], last_resumed[weights][key], atol=1e-6, rtol=1e-5)


def test_cosine_schedule_decays_to_the_final_factor(tmp_path, small_prepared):
    """Each epoch's row records the rate for the next epoch: lr * (f + (1 - f) (1 + cos(pi k / epochs)) / 2)."""
    extra = {"training.epochs": 4, "training.lr": 2e-3, "training.lr_schedule": "cosine",
             "training.cosine_final_factor": 0.1, "training.patience": None}
    run = train_run(small_config(tmp_path, **extra), data=small_prepared, quiet=True, plots_enabled=False)
    expected = [2e-3 * (0.1 + 0.9 * (1 + np.cos(np.pi * k / 4)) / 2) for k in (1, 2, 3, 4)]
    assert [r["lr"] for r in run.history] == pytest.approx(expected, rel=1e-9)
    assert run.history[-1]["lr"] == pytest.approx(2e-4)


def test_cosine_schedule_follows_the_time_budget_when_it_ends_first():
    """With training.max_minutes the cosine runs over whichever ends first, the epochs or the minutes: at
    half the budget (epoch 1 of 100) the rate is the cosine's midpoint, at the budget its final value."""
    from hydradgl.config import TrainingConfig
    from hydradgl.train.trainer import make_scheduler

    training = TrainingConfig(epochs=100, lr=1e-2, lr_schedule="cosine", cosine_final_factor=0.1, max_minutes=4)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=training.lr)
    clock = {"minutes": 0.0}
    scheduler = make_scheduler(training, optimizer, lambda: clock["minutes"])
    rates = []
    for minutes in (2.0, 4.0, 5.0):
        clock["minutes"] = minutes
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([1e-2 * (0.1 + 0.9 * 0.5), 1e-3, 1e-3], rel=1e-12)
    untimed = TrainingConfig(epochs=100, lr=1e-2, lr_schedule="cosine", cosine_final_factor=0.1)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=untimed.lr)
    scheduler = make_scheduler(untimed, optimizer, lambda: 1e6)  # no budget: the clock is not read
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * (0.1 + 0.9 * (1 + np.cos(np.pi / 100)) / 2))


def test_nan_loss_stops_with_epoch_and_batch_and_keeps_checkpoint(tmp_path, small_prepared, monkeypatch):
    from hydradgl.model import loss as loss_module

    calls = {"n": 0}
    original = loss_module.MultiTaskLoss.__call__

    def poisoned(self, preds, batch):
        calls["n"] += 1
        total, parts = original(self, preds, batch)
        return (total * float("nan"), parts) if calls["n"] == batches_per_epoch + 3 else (total, parts)

    cfg = small_config(tmp_path, **{"training.epochs": 3})
    batches_per_epoch = math.ceil(len(small_prepared.train) / cfg.training.batch_size)
    monkeypatch.setattr(loss_module.MultiTaskLoss, "__call__", poisoned)
    with pytest.raises(TrainingError, match=r"non-finite loss \(nan\) at epoch 2, batch 3.*last.pt"):
        train_run(cfg, data=small_prepared, quiet=True)
    state = ckpt.load_checkpoint(cfg.output_dir / "last.pt")
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint(path, {"epoch": 1})

    def crash(obj, handle):
        handle.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(TrainingError, match=r"last.pt: cannot write checkpoint \(disk full\); the previous last.pt is"):
        ckpt.save_checkpoint(path, {"epoch": 2})
    assert ckpt.load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_corrupt_checkpoint_is_reported(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="not a readable hydradgl checkpoint"):
        ckpt.load_checkpoint(tmp_path / "last.pt")


def test_unwritable_output_reported_before_training(tmp_path, small_prepared):
    (tmp_path / "a-file").write_text("x")
    cfg = small_config(**{"output_dir": str(tmp_path / "a-file" / "run")})
    with pytest.raises(TrainingError, match="a-file/run: output directory is not writable"):
        train_run(cfg, data=small_prepared, quiet=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_cuda_build_is_explained(tmp_path, small_prepared):
    cfg = small_config(tmp_path, **{"training.device": "cuda"})
    with pytest.raises(TrainingError, match="docs/install.md"):
        train_run(cfg, data=small_prepared, quiet=True)


def test_predict_matches_evaluate_in_physical_units(trained):
    cfg, data, result = trained
    run = load_run(result.run_dir)
    metrics = evaluate_run(run)
    for head in ("H", "C", "M"):
        assert metrics[head]["rmse"] == pytest.approx(result.test[head]["rmse"], rel=1e-6)
    from pathlib import Path

    from hydradgl_plugins.datasets.lsms import read_lsms

    import hydradgl

    predicted = hydradgl.load(result.run_dir).predict([Path(s) for s in data.test.sources])
    structures, atoms = predicted.structures, predicted.atoms
    truth_m = np.concatenate([read_lsms(Path(s))[1][:, 6] for s in data.test.sources])
    truth_c = np.concatenate([(lambda t: t[:, 5] - t[:, 0])(read_lsms(Path(s))[1]) for s in data.test.sources])
    pred_m, pred_c = atoms["M"].to_numpy(), atoms["C"].to_numpy()
    assert math.sqrt(np.mean((pred_m - truth_m) ** 2)) == pytest.approx(metrics["M"]["rmse_phys"], rel=1e-3)
    assert math.sqrt(np.mean((pred_c - truth_c) ** 2)) == pytest.approx(metrics["C"]["rmse_phys"], rel=1e-3)
    norm = Normalizer.from_info(run.info)
    truth_h = data.test.graph_targets["H"][:, 0] * norm.span["H"][0] + norm.lo["H"][0]
    pred_h = structures["H"].to_numpy()
    assert math.sqrt(np.mean((pred_h - truth_h) ** 2)) == pytest.approx(metrics["H"]["rmse_phys"], rel=1e-3)
    assert len(atoms) == int(data.test.num_nodes.sum()) and {"structure", "atom", "Z", "C", "M"} <= set(atoms.columns)


def test_run_saves_its_split_and_evaluate_reuses_it(trained, tmp_path):
    import shutil

    from hydradgl.data.splitfile import load_split, save_split
    from hydradgl.train.runtime import Runtime
    from hydradgl.train.trainer import evaluate

    cfg, data, result = trained
    n = len(data.test.base)
    saved = load_split(result.run_dir / "split.npz", n)
    assert [p.tolist() for p in saved] == [data.train.rows.tolist(), data.val.rows.tolist(), data.test.rows.tolist()]
    copy = tmp_path / "run"
    shutil.copytree(result.run_dir, copy)
    save_split(copy / "split.npz", (saved[0], saved[2], saved[1]), n)  # validation and test swapped
    run = load_run(copy)
    expected, _ = evaluate(run.model, run.cfg, data.val, Normalizer.from_info(run.info), Runtime(0, 1, 0, run.device))
    assert evaluate_run(run)["H"]["rmse"] == pytest.approx(expected["H"]["rmse"], rel=1e-6)


def test_missing_plugin_in_saved_run_is_named(trained):
    from hydradgl.errors import PluginError
    from hydradgl.plugins import Registry

    _, _, result = trained
    with pytest.raises(PluginError, match="needs the dataset plugin 'fept'.*distribution 'hydradgl'"):
        load_run(result.run_dir, registry=Registry())


def test_cli_predict_writes_both_csvs(trained, tmp_path):
    from click.testing import CliRunner

    from hydradgl.cli import main

    _, data, result = trained
    out = tmp_path / "pred.csv"
    res = CliRunner().invoke(main, ["predict", str(result.run_dir), data.test.sources[0], data.test.sources[1], "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert len(out.read_text().splitlines()) == 3
    assert len((tmp_path / "pred.atoms.csv").read_text().splitlines()) == 1 + 64
    evaluated = CliRunner().invoke(main, ["evaluate", str(result.run_dir), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads(evaluated.output)
    saved = json.loads((result.run_dir / "test_metrics.json").read_text())["heads"]
    for head in ("H", "C", "M"):
        assert metrics[head]["rmse_phys"] == pytest.approx(saved[head]["rmse_phys"], rel=1e-6)
        assert (metrics[head]["unit"], metrics[head]["level"]) == (saved[head]["unit"], saved[head]["level"])


def test_experiment_writes_table(tmp_path, small_prepared):
    from hydradgl.train.experiment import parse_head_sets, run_experiment

    assert parse_head_sets("HCM,H") == [["H", "C", "M"], ["H"]]
    assert parse_head_sets("energy+forces") == [["energy", "forces"]]
    cfg = small_config(tmp_path, **{"training.epochs": 1})
    root = run_experiment(cfg, [["H", "M"], ["M"]], seeds=2, quiet=True)
    table = (root / "table.md").read_text()
    assert "MTL, HM" in table and "STL, M" in table and "±" in table
    rows = (root / "table.csv").read_text().splitlines()
    assert rows[0].startswith("method,H,M") and len(rows) == 3


def test_ctrl_c_leaves_a_resumable_run(tmp_path, small_prepared, monkeypatch):
    from click.testing import CliRunner

    from hydradgl.cli import main
    from hydradgl.train.trainer import Trainer

    cfg = small_config(tmp_path, **{"training.epochs": 3})
    original = Trainer.train_epoch

    def interrupt_second_epoch(self, progress=None):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return original(self, progress)

    monkeypatch.setattr(Trainer, "train_epoch", interrupt_second_epoch)
    with pytest.raises(TrainingError, match=r"interrupted after epoch 1.*hydradgl train --resume"):
        train_run(cfg, data=small_prepared, quiet=True)
    assert ckpt.load_checkpoint(cfg.output_dir / "last.pt")["epoch"] == 1
    monkeypatch.setattr(Trainer, "train_epoch", original)
    result = CliRunner().invoke(main, ["--quiet", "train", "--resume", str(cfg.output_dir), "--no-plots"])
    assert result.exit_code == 0, result.output
    assert ckpt.load_checkpoint(cfg.output_dir / "last.pt")["epoch"] == 3
    refused = CliRunner().invoke(main, ["train", "--resume", str(cfg.output_dir), "--conv", "sage"])
    assert refused.exit_code == 1 and "can only change training.epochs" in refused.output


def test_torch_kernels_train_like_dgl_and_are_reported(tmp_path, small_prepared):
    import io

    from hydradgl.train.report import LineReporter

    runs = {}
    for path in ("dgl", "torch"):
        cfg = small_config(tmp_path / path, **{"training.kernels": path, "training.epochs": 1})
        buffer = io.StringIO()
        runs[path] = train_run(cfg, data=small_prepared, reporter=LineReporter(buffer), plots_enabled=False)
        assert f"on cpu, {path} kernels" in buffer.getvalue()
        assert f"kernels: {path} on cpu (training.kernels: {path}" in (cfg.output_dir / "run.log").read_text()
    for key in ("train_loss", "val_loss"):
        assert runs["torch"].history[0][key] == pytest.approx(runs["dgl"].history[0][key], rel=1e-4)


@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd"])
def test_optimizer_is_fused_where_torch_has_a_kernel_and_falls_back_otherwise(kind, monkeypatch):
    from hydradgl.config import TrainingConfig
    from hydradgl.train import trainer

    params = torch.nn.Linear(3, 2).parameters
    fused = trainer.make_optimizer(TrainingConfig(optimizer=kind), params())
    assert fused.defaults["fused"] is True  # torch >= 2.4 has fused CPU kernels for all three

    real = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[kind]

    def without_fused_kernel(*args, fused=None, **kwargs):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real(*args, **kwargs)
    monkeypatch.setattr(torch.optim, {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}[kind], without_fused_kernel)
    plain = trainer.make_optimizer(TrainingConfig(optimizer=kind, lr=0.5), params())
    assert not plain.defaults.get("fused") and plain.defaults["lr"] == 0.5


def test_allocator_settings_apply_once_on_glibc():
    import platform

    from hydradgl import allocator

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the settings are glibc's")
    assert allocator.keep_freed_memory() is True
    assert allocator.keep_freed_memory() is True  # idempotent


def test_time_budget_stops_after_the_epoch_that_reaches_it_and_resumes_with_a_larger_one(
        tmp_path, small_prepared, monkeypatch):
    import io

    from click.testing import CliRunner

    from hydradgl.cli import main
    from hydradgl.train.report import LineReporter
    from hydradgl.train.trainer import Trainer

    original = Trainer.train_epoch

    def slow_epoch(self, progress=None):  # every epoch "takes" 30 s of the clock the budget reads
        clock[0] += 30.0
        return original(self, progress)

    clock = [0.0]
    monkeypatch.setattr(Trainer, "train_epoch", slow_epoch)
    monkeypatch.setattr("hydradgl.train.trainer.time.perf_counter", lambda: clock[0])
    cfg = small_config(tmp_path, **{"training.epochs": 10, "training.max_minutes": 1.2})
    printed = io.StringIO()
    result = train_run(cfg, data=small_prepared, reporter=LineReporter(printed), plots_enabled=False)
    assert [row["epoch"] for row in result.history] == [1, 2, 3]  # 1.0 min after epoch 2, 1.5 after epoch 3
    assert "training.max_minutes (1.2) reached after epoch 3 (1.50 minutes of training)" in printed.getvalue()
    assert (cfg.output_dir / "best.pt").is_file() and result.test  # the test split is still evaluated
    assert ckpt.load_checkpoint(cfg.output_dir / "last.pt")["epoch"] == 3
    refused = CliRunner().invoke(main, ["train", "--resume", str(cfg.output_dir), "--no-plots"])
    assert refused.exit_code == 1 and "spends its training.max_minutes (1.2)" in refused.output
    assert "--max-minutes above 1.50" in refused.output
    resumed = CliRunner().invoke(main, ["--quiet", "train", "--resume", str(cfg.output_dir), "--no-plots",
                                        "--max-minutes", "2.4"])
    assert resumed.exit_code == 0, resumed.output
    assert ckpt.load_checkpoint(cfg.output_dir / "last.pt")["epoch"] == 5  # 2.5 min after epoch 5
