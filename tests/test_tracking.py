"""Tracking: TensorBoard event files of a run, logger plugins get the same stream, a broken one is survivable."""

from __future__ import annotations

import csv
import importlib.metadata as md
import sys
import types
from pathlib import Path

import pytest
from conftest import small_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from hydradgl import hookimpl
from hydradgl.errors import ConfigError, PluginError
from hydradgl.plugins import LoggerSpec, RunLogger, load_registry
from hydradgl.train import tracking
from hydradgl.train.run import train_run

RECORDED: list[tuple] = []


class Recorder(RunLogger):
    def log_scalars(self, scalars, step):
        RECORDED.append(("scalars", step, dict(scalars)))

    def log_image(self, tag, path):
        RECORDED.append(("image", tag, path.name))

    def close(self):
        RECORDED.append(("close",))


class Broken(RunLogger):
    def log_scalars(self, scalars, step):
        raise RuntimeError("tracking server unreachable")


def failing_factory(options, context):
    raise OSError("no credentials")


@hookimpl
def register_loggers(register):
    register(LoggerSpec(name="recorder", description="records calls", factory=lambda o, c: Recorder()))
    register(LoggerSpec(name="broken", description="raises on every call", factory=lambda o, c: Broken()))
    register(LoggerSpec(name="no-start", description="factory raises", factory=failing_factory))


@pytest.fixture(scope="module")
def logger_registry():
    """The installed plugins plus a test distribution that provides three loggers."""
    module = types.ModuleType("hd_test_loggers")
    module.register_loggers = register_loggers
    sys.modules["hd_test_loggers"] = module

    class Dist:
        metadata, version = {"Name": "hd-test-loggers"}, "1.0"

    extra = md.EntryPoint("loggers", "hd_test_loggers", "hydradgl")._for(Dist())
    return load_registry([*md.entry_points(group="hydradgl"), extra])


def metrics_rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_tensorboard_holds_scalars_per_epoch_and_head_and_parity_images(tmp_path, small_prepared):
    cfg = small_config(tmp_path, **{"heads": ["H", "M"], "tracking.tensorboard": "on"})
    train_run(cfg, data=small_prepared, quiet=True)
    events = EventAccumulator(str(cfg.output_dir / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = set(events.Tags()["scalars"])
    expected = {"total/train_loss", "total/val_loss", "optim/lr", "speed/graphs_per_s", "speed/epoch_seconds",
                *(f"{h}/{m}" for h in "HM" for m in ("train_loss", "val_loss", "val_rmse", "test_rmse", "test_mae"))}
    assert expected <= tags
    rows = metrics_rows(cfg.output_dir)
    for tag, column in (("total/val_loss", "val_loss"), ("M/train_loss", "train_M_loss"), ("H/val_rmse", "val_H_rmse")):
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == [1, 2]
        assert [e.value for e in logged] == pytest.approx([float(r[column]) for r in rows], rel=1e-6)
    assert {"parity/H", "parity/M", "loss/curves"} <= set(events.Tags()["images"])


def test_tensorboard_off_writes_no_events(tmp_path, small_prepared):
    cfg = small_config(tmp_path, **{"tracking.tensorboard": "off"})
    train_run(cfg, data=small_prepared, quiet=True, plots_enabled=False)
    assert not (cfg.output_dir / "tensorboard").exists()


def test_tensorboard_on_without_the_package_is_a_config_error(tmp_path, small_prepared, monkeypatch):
    monkeypatch.setattr(tracking, "tensorboard_available", lambda: False)
    cfg = small_config(tmp_path, **{"tracking.tensorboard": "on"})
    with pytest.raises(ConfigError, match="tracking.tensorboard is 'on' but the tensorboard package"):
        train_run(cfg, data=small_prepared, quiet=True)
    assert not (cfg.output_dir / "last.pt").exists()


def test_logger_plugins_get_the_stream_and_broken_ones_are_reported_once(tmp_path, small_prepared, logger_registry):
    RECORDED.clear()
    cfg = small_config(tmp_path, **{"tracking.tensorboard": "off", "tracking.loggers": ["broken", "recorder", "no-start"]})
    result = train_run(cfg, logger_registry, data=small_prepared, quiet=True)
    assert len(result.history) == 2 and result.test  # training went on to the end
    log = (cfg.output_dir / "run.log").read_text()
    assert log.count("logger 'broken' failed in log_scalars (RuntimeError: tracking server unreachable)") == 1
    assert log.count("logger 'no-start' could not start (OSError: no credentials)") == 1
    scalars = [r for r in RECORDED if r[0] == "scalars"]
    assert [s[1] for s in scalars] == [1, 2, 2]  # two epochs, then the test metrics at the last epoch
    rows = metrics_rows(cfg.output_dir)
    assert scalars[1][2]["total/val_loss"] == pytest.approx(float(rows[1]["val_loss"]))
    assert scalars[2][2]["H/test_rmse"] == pytest.approx(result.test["H"]["rmse"])
    assert ("image", "parity/H", "parity_H.png") in RECORDED and RECORDED[-1] == ("close",)


def test_unknown_logger_is_refused_before_training(tmp_path, small_prepared, logger_registry):
    cfg = small_config(tmp_path, **{"tracking.loggers": [{"name": "mlfow"}]})
    with pytest.raises(PluginError, match="unknown logger plugin 'mlfow'"):
        train_run(cfg, logger_registry, data=small_prepared, quiet=True)


def test_epoch_scalars_group_by_head_names_with_underscores():
    row = {"epoch": 3, "train_loss": 1.0, "val_loss": 2.0, "train_E_mix_loss": 3.0, "val_E_mix_rmse": 4.0,
           "lr": 1e-3, "graphs_per_s": 50.0, "seconds": 2.0, "train_seconds": 1.5}
    assert tracking.epoch_scalars(row) == {
        "total/train_loss": 1.0, "total/val_loss": 2.0, "E_mix/train_loss": 3.0, "E_mix/val_rmse": 4.0,
        "optim/lr": 1e-3, "speed/graphs_per_s": 50.0, "speed/epoch_seconds": 2.0}


def test_mlflow_worked_example_in_the_docs_receives_the_stream(tmp_path, small_prepared, monkeypatch):
    """docs/plugins.md's MLflow logger, run against a stand-in ``mlflow`` module that records the calls."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    start = text.index("# hydradgl_mlflow.py")
    source = text[start:text.index("```", start)]
    calls: list[tuple] = []
    fake = types.ModuleType("mlflow")
    for name in ("set_tracking_uri", "set_experiment", "start_run", "log_params", "log_metrics", "log_artifact",
                 "end_run"):
        setattr(fake, name, lambda *a, _name=name, **k: calls.append((_name, a, k)))
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    module = types.ModuleType("hydradgl_mlflow")
    exec(compile(source, "docs/plugins.md", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "hydradgl_mlflow", module)

    class Dist:
        metadata, version = {"Name": "hydradgl-mlflow"}, "0.1"

    entry = md.EntryPoint("mlflow", "hydradgl_mlflow", "hydradgl")._for(Dist())
    registry = load_registry([*md.entry_points(group="hydradgl"), entry])
    cfg = small_config(tmp_path, **{"tracking.tensorboard": "off",
                                    "tracking.loggers": [{"name": "mlflow", "options": {"experiment": "fept"}}]})
    train_run(cfg, registry, data=small_prepared, quiet=True)
    names = [c[0] for c in calls]
    assert names[:3] == ["set_experiment", "start_run", "log_params"] and names[-1] == "end_run"
    assert calls[0][1] == ("fept",) and calls[2][1][0]["model.hidden"] == "16"
    metrics = [c for c in calls if c[0] == "log_metrics"]
    assert [c[2]["step"] for c in metrics] == [1, 2, 2] and "total/val_loss" in metrics[0][1][0]
    assert any(c[0] == "log_artifact" and c[1][0].endswith("parity_H.png") for c in calls)
    assert "failed" not in (cfg.output_dir / "run.log").read_text()
