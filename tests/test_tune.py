"""hydradgl tune: a small search finishes, resumes from its SQLite study, prunes, and its best config trains."""

from __future__ import annotations

import csv
import json

import optuna
import pytest
from click.testing import CliRunner
from conftest import small_config

from hydradgl.cli import main
from hydradgl.configio import load_config
from hydradgl.errors import ConfigError, TrainingError
from hydradgl.train.run import train_run
from hydradgl.train.trainer import Trainer
from hydradgl.tune import study as tune_study
from hydradgl.tune.space import apply_values, check_space
from hydradgl.tune.study import run_tune

SPACE = {"model.hidden": {"type": "int", "low": 8, "high": 16},
         "training.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
         "heads.M.layers": {"type": "categorical", "choices": [[50, 25], [16]]}}


def tune_config(tmp_path, **overrides):
    return small_config(tmp_path, **{"heads": ["H", "M"], "tune.space": SPACE, "tune.trials": 4,
                                     "tracking.tensorboard": "off", **overrides})


def metrics_rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_search_is_interrupted_resumed_and_its_best_config_trains(tmp_path, monkeypatch):
    out = tmp_path / "search"
    original = Trainer.train_epoch
    calls = []

    def interrupt_third_trial(self, progress=None):  # trials 0 and 1 train 2 epochs each (never pruned)
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return original(self, progress)

    monkeypatch.setattr(Trainer, "train_epoch", interrupt_third_trial)
    with pytest.raises(TrainingError, match=f"hydradgl tune --resume {out}"):
        run_tune(tune_config(tmp_path), out, quiet=True)
    monkeypatch.setattr(Trainer, "train_epoch", original)
    first = optuna.load_study(study_name="hydradgl", storage=f"sqlite:///{out / 'study.db'}").trials
    assert [t.state.name for t in first] == ["COMPLETE", "COMPLETE", "FAIL"]
    # Trial 0 is the config as given (the yardstick).
    assert first[0].params == {"model.hidden": 16, "training.lr": 1e-3, "heads.M.layers": "[50, 25]"}
    assert first[0].user_attrs["baseline"]

    resumed = run_tune(load_config(out / "tune.yaml"), out, resume=True, quiet=True)
    trials = resumed.study.trials
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 4 and [t.params for t in trials[:2]] == [t.params for t in first[:2]]
    for t in (t for t in trials if t.state.name == "COMPLETE"):
        # The objective is the validation loss of the kept (best) epoch, as metrics.csv records it.
        rows = metrics_rows(tmp_path / "search" / "trials" / f"trial-{t.number:04d}")
        assert t.value == pytest.approx(min(float(r["val_loss"]) for r in rows), rel=1e-6)

    best = min((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    best_cfg = load_config(out / "best.yaml")
    assert best_cfg.model.hidden == best.params["model.hidden"]
    assert best_cfg.training.lr == pytest.approx(best.params["training.lr"])
    assert best_cfg.heads[1].name == "M" and json.dumps(best_cfg.heads[1].layers) == best.params["heads.M.layers"]
    with open(out / "trials.csv") as f:
        assert [int(r["trial"]) for r in csv.DictReader(f)] == [t.number for t in trials]
    assert (out / "plots" / "optimization_history.png").stat().st_size > 0
    best_cfg.output_dir = tmp_path / "best-run"
    result = train_run(best_cfg, quiet=True, plots_enabled=False)
    assert len(result.history) == 2 and all(m["rmse"] > 0 for m in result.test.values())


def test_pruned_trials_are_marked_pruned_and_stop_early(tmp_path, monkeypatch):
    # A pruner that stops every trial whose first validation value is above 0 (all of them).
    monkeypatch.setattr(tune_study, "make_pruner", lambda optuna_, cfg: optuna.pruners.ThresholdPruner(upper=0.0))
    out = tmp_path / "search"
    result = run_tune(tune_config(tmp_path, **{"tune.trials": 2}), out, quiet=True)
    trials = result.study.trials
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    assert all(t.last_step == 1 for t in trials)
    for t in trials:  # stopped after epoch 1 of 2, its reported value is that epoch's validation loss
        rows = metrics_rows(out / "trials" / f"trial-{t.number:04d}")
        assert len(rows) == 1 and t.intermediate_values[1] == pytest.approx(float(rows[0]["val_loss"]))
    assert result.best_config is None and not (out / "best.yaml").exists()


def test_head_rmse_objective_and_head_keys(tmp_path):
    weights = {**SPACE, "heads.0.alpha": {"type": "float", "low": 0.1, "high": 2}}
    check_space(tune_config(tmp_path, **{"tune.objective": "val_rmse:M", "tune.space": weights}))
    with pytest.raises(ConfigError, match="tune.space.heads.0.alpha: the objective val_loss is weighted"):
        check_space(tune_config(tmp_path, **{"tune.space": weights}))
    cfg = tune_config(tmp_path)
    by_index = apply_values(cfg, {"heads.1.alpha": 0.25, "heads[0].layers": [8]}, tmp_path / "x")
    assert by_index.heads[1].alpha == 0.25 and by_index.heads[0].layers == [8]
    assert tune_study.objective_value({"val_loss": 1.0, "val_M_rmse": 0.5}, "val_rmse:M") == 0.5


@pytest.mark.parametrize("overrides, message", [
    ({"tune.space": {}}, "tune.space is empty"),
    ({"tune.space": {"model.hiden": {"type": "int", "low": 4, "high": 8}}}, "tune.space.model.hiden: no such config key"),
    ({"tune.space": {"model.layers": {"type": "int", "low": 0, "high": 3}}}, "model.layers"),
    ({"tune.space": {"heads.Q.alpha": {"type": "float", "low": 0, "high": 1}}}, "no head 'Q'"),
    ({"tune.objective": "val_rmse:C"}, "tune.objective: no head 'C'"),
])
def test_bad_search_space_is_refused_before_any_trial(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        run_tune(tune_config(tmp_path, **overrides), tmp_path / "search", quiet=True)
    assert not (tmp_path / "search" / "study.db").exists()


def test_range_errors_name_the_problem():
    with pytest.raises(ConfigError, match=r"tune.space.training.lr: .*log-scaled range needs low > 0"):
        load_config(None, {"tune.space": {"training.lr": {"type": "float", "low": 0, "high": 1, "log": True}}})
    with pytest.raises(ConfigError, match="non-empty `choices`"):
        load_config(None, {"tune.space": {"model.conv": {"type": "categorical"}}})


def test_cli_refuses_a_second_study_in_the_same_directory_and_bad_resume(tmp_path):
    out = tmp_path / "search"
    out.mkdir()
    (out / "study.db").write_bytes(b"")
    config = tmp_path / "tune.yaml"
    config.write_text("tune:\n  space:\n    training.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n")
    refused = CliRunner().invoke(main, ["tune", "-c", str(config), "-o", str(out)])
    assert refused.exit_code == 1 and f"hydradgl tune --resume {out}" in refused.output
    missing = CliRunner().invoke(main, ["tune", "--resume", str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and "not a tune directory" in missing.output
