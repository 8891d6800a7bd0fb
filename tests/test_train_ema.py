"""training.ema_decay: the moving average of the weights is what is validated, checkpointed, tested and saved."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import hydradgl
from hydradgl.configio import load_config
from hydradgl.errors import ConfigError
from hydradgl.train.checkpoint import load_checkpoint
from hydradgl.train.ema import WeightAverage
from hydradgl.train.report import LineReporter
from hydradgl.train.run import train_run
from tests.conftest import small_config


def test_average_follows_the_recurrence_with_its_warm_up():
    live = nn.Linear(3, 2)
    average = WeightAverage(live, decay=0.5)
    expected = [p.detach().clone() for p in live.parameters()]
    rng = np.random.default_rng(0)
    for n in range(6):
        with torch.no_grad():
            for p in live.parameters():
                p.copy_(torch.from_numpy(rng.normal(size=tuple(p.shape))).float())
        decay = min(0.5, (1 + n) / (10 + n))  # 0.1, 0.18, 0.25, 0.31, 0.36, 0.4 ... capped at 0.5
        expected = [decay * e + (1 - decay) * p.detach() for e, p in zip(expected, live.parameters())]
        average.update(live)
    for mine, want in zip(average.model.parameters(), expected):
        torch.testing.assert_close(mine, want)
        assert not mine.requires_grad
    assert average.updates == 6


def test_checkpoints_hold_the_average_and_the_trained_weights(tmp_path, small_prepared):
    cfg = small_config(tmp_path, **{"training.ema_decay": 0.8, "training.epochs": 2})
    result = train_run(cfg, data=small_prepared, quiet=True, plots_enabled=False)
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    averaged, trained = last["model"], last["trained_model"]
    steps = 2 * -(-len(small_prepared.train) // cfg.training.batch_size)
    assert last["ema"]["updates"] == steps
    weight = next(k for k in averaged if k.endswith("weight") and averaged[k].dim() == 2)
    assert not torch.equal(averaged[weight], trained[weight])  # the average lags the trained weights
    best = load_checkpoint(tmp_path / "run" / "best.pt")["model"]
    for key, value in result.model.state_dict().items():  # the model tested is the best average
        torch.testing.assert_close(value, best[key])
    # and the test metrics are those of the saved model, as hydradgl.load sees it
    true, predicted, _ = hydradgl.load(tmp_path / "run").true_mean_std(small_prepared.test, small_prepared.info)["H"]
    assert float(np.sqrt(np.mean((predicted - true) ** 2))) == pytest.approx(result.test["H"]["rmse_phys"], rel=1e-4)


def test_a_run_saved_before_weight_averaging_resumes_without_it(tmp_path, small_prepared):
    """Its config.yaml has no ema_decay (which now defaults to 0.99) and its checkpoints no average."""
    cfg = small_config(tmp_path, **{"training.ema_decay": None, "training.epochs": 1})
    run_dir = train_run(cfg, data=small_prepared, quiet=True, plots_enabled=False).run_dir
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    del saved["training"]["ema_decay"]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    again = load_config(run_dir / "config.yaml", {"training.epochs": 2})
    assert again.training.ema_decay == 0.99
    printed = io.StringIO()
    resumed = train_run(again, resume=run_dir, data=small_prepared, plots_enabled=False,
                        reporter=LineReporter(printed))
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert "the checkpoint holds no weight average" in printed.getvalue()
    assert "ema" not in load_checkpoint(run_dir / "last.pt")
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["training"]["ema_decay"] is None


@pytest.mark.parametrize("value", [0, 1, 1.5])
def test_decay_outside_zero_one_names_the_key(value):
    with pytest.raises(ConfigError, match="training.ema_decay"):
        load_config(None, {"training.ema_decay": value})
