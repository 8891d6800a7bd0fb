"""Hostile but realistic input (issue 14): every case ends in one clear line, no silent wrong result,
nothing already written lost. Grouped by topic; the CLI is invoked in-process where it is the subject."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hydradgl.cli import main
from hydradgl.configio import load_config, read_file, set_dotted
from hydradgl.errors import ConfigError, DataError

from tests.conftest import small_config


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def one_clean_line(result) -> str:
    """The error of a failed CLI call: exit 1, no traceback, starts with 'error:'."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.exception is not None
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.output.startswith("error:"), result.output
    return result.output


# -- configuration values that used to be bent without an error ----------------------------------

def test_duplicate_yaml_section_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("training:\n  epochs: 3\nmodel:\n  hidden: 4\ntraining:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"cfg.yaml:5: key 'training' appears twice"):
        read_file(path)
    nested = tmp_path / "nested.yaml"
    nested.write_text("training:\n  epochs: 3\n  epochs: 4\n")
    with pytest.raises(ConfigError, match=r"nested.yaml:3: key 'epochs' appears twice"):
        read_file(nested)


def test_duplicate_json_key_is_an_error(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text('{"training": {"epochs": 3}, "training": {"lr": 0.1}}')
    with pytest.raises(ConfigError, match="'training' appears twice"):
        read_file(path)


@pytest.mark.parametrize("key, value, expected", [
    ("training.epochs", True, "training.epochs: Input should be a valid integer"),
    ("training.epochs", 5.0, "training.epochs: Input should be a valid integer"),
    ("training.lr", True, "training.lr: .*got a boolean"),
    ("graph.periodic", 1, "graph.periodic: Input should be a valid boolean"),
    ("graph.radius", float("inf"), "graph.radius: .*finite"),
    ("graph.radius", float("nan"), "graph.radius: "),
    ("heads", [{"name": "H", "layers": [0]}], r"heads\[0\].layers\[0\]: .*greater than or equal to 1"),
    ("heads", [{"name": "H", "layers": [50, -5]}], r"heads\[0\].layers\[1\]: .*greater than or equal to 1"),
])
def test_values_are_not_bent(key, value, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(None, {key: value})


def test_yaml_scientific_notation_still_reads_as_a_number():
    # PyYAML reads 1e-3 as a string; the float keys must keep accepting it.
    assert load_config(None, {"training.lr": "1e-3"}).training.lr == pytest.approx(1e-3)


def test_set_value_that_is_not_yaml_is_a_string():
    ok = cli("config", "show", "--dataset", "extxyz", "--set", "dataset.options.path=data",
             "--set", "dataset.options.pattern=*.xyz")
    assert ok.exit_code == 0 and "pattern: '*.xyz'" in ok.output
    bad = one_clean_line(cli("config", "show", "--set", "model.hidden=[1,2"))
    assert "model.hidden: Input should be a valid integer (got '[1,2')" in bad
    assert "valid integer" in one_clean_line(cli("config", "show", "--set", "training.epochs=yes"))


def test_set_reaches_into_lists_by_index_and_head_name():
    cfg = load_config(None, {"heads.0.layers": [10], "heads.M.alpha": 0.5})
    assert [h.name for h in cfg.heads] == ["H", "C", "M"]
    assert cfg.heads[0].layers == [10] and cfg.heads[2].alpha == 0.5 and cfg.heads[1].layers == [50, 25]
    picked = cli("config", "show", "--heads", "M,H", "--set", "heads.H.layers=[7]", "--set", "heads.0.alpha=2")
    assert picked.exit_code == 0, picked.output
    heads = __import__("yaml").safe_load(picked.output)["heads"]
    assert [(h["name"], h["layers"], h["alpha"]) for h in heads] == [("M", [50, 25], 2.0), ("H", [7], 1.0)]


@pytest.mark.parametrize("key, message", [
    ("heads.3.layers", "index 3 is out of range"),
    ("heads.X.layers", r"no entry named 'X' \(entries: H, C, M"),
    ("training.epochs.x", "'epochs' is not a section"),
    ("training..epochs", "empty key part"),
])
def test_set_into_lists_errors(key, message):
    data: dict = {"training": {"epochs": 3}}
    with pytest.raises(ConfigError, match=message):
        set_dotted(data, key, 1)


def test_set_and_flag_for_the_same_key_conflict():
    out = one_clean_line(cli("config", "show", "--epochs", "3", "--set", "training.epochs=4"))
    assert "--set training.epochs and --epochs both set training.epochs" in out


@pytest.mark.parametrize("content", [
    "training:\n  epochs: 3\n".encode("utf-16"),  # UTF-16 with BOM
    bytes(range(256)) * 4,  # random bytes
    b"PK\x03\x04\x00\x00\x08\x00\x00\x00!\x00\x80\x81\x82archive/data.pkl",  # a torch checkpoint's zip
])
def test_config_file_that_is_not_text_is_one_line(tmp_path, content):
    path = tmp_path / "cfg.yaml"
    path.write_bytes(content)
    out = one_clean_line(cli("config", "show", "-c", str(path)))
    assert str(path) in out and len(out.strip().splitlines()) == 1


# -- the run directory: one training at a time, never two runs mixed ------------------------------

def _train(cfg, data, **kwargs):
    from hydradgl.train.run import train_run

    return train_run(cfg, data=data, quiet=True, plots_enabled=False, **kwargs)


def test_second_training_into_a_finished_run_is_refused_and_overwrite_replaces_it(tmp_path, small_prepared):
    from hydradgl.train.checkpoint import load_checkpoint

    cfg = small_config(tmp_path, **{"training.epochs": 1})
    _train(cfg, small_prepared)
    before = (cfg.output_dir / "last.pt").read_bytes()
    with pytest.raises(Exception, match=r"run: already holds a run \(config.yaml, last.pt, best.pt, metrics.csv"
                                        r".*--overwrite.*--resume"):
        _train(cfg, small_prepared)
    assert (cfg.output_dir / "last.pt").read_bytes() == before  # nothing of the old run touched
    other = small_config(tmp_path, **{"training.epochs": 1, "model.hidden": 8})
    _train(other, small_prepared, overwrite=True)
    assert load_checkpoint(cfg.output_dir / "best.pt")["config"]["model"]["hidden"] == 8
    assert "hidden: 8" in (cfg.output_dir / "config.yaml").read_text()


def test_overwrite_killed_before_epoch_one_leaves_no_old_checkpoints(tmp_path, small_prepared, monkeypatch):
    from hydradgl.train.trainer import Trainer

    cfg = small_config(tmp_path, **{"training.epochs": 1})
    _train(cfg, small_prepared)

    def killed(self, progress=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_epoch", killed)
    with pytest.raises(Exception, match="interrupted after epoch 0"):
        _train(small_config(tmp_path, **{"model.hidden": 8}), small_prepared, overwrite=True)
    assert not (cfg.output_dir / "best.pt").exists() and not (cfg.output_dir / "last.pt").exists()
    out = one_clean_line(cli("train", "--resume", str(cfg.output_dir)))
    assert "last.pt: no checkpoint there" in out  # not a state_dict size-mismatch traceback


def test_a_locked_run_dir_is_refused_naming_the_holder(tmp_path, small_prepared):
    from hydradgl.train.rundir import run_dir_lock

    cfg = small_config(tmp_path, **{"training.epochs": 1})
    cfg.output_dir.mkdir(parents=True)
    with run_dir_lock(cfg.output_dir):
        with pytest.raises(Exception, match=rf"in use by another training \(pid {os.getpid()} on "):
            _train(cfg, small_prepared)
    assert not (cfg.output_dir / "config.yaml").exists()
    _train(cfg, small_prepared)  # the lock went with its holder


def test_resume_checks_every_checkpoint_before_training(tmp_path, small_prepared):
    from hydradgl.train.checkpoint import load_checkpoint

    cfg = small_config(tmp_path, **{"training.epochs": 1})
    _train(cfg, small_prepared)
    best = cfg.output_dir / "best.pt"
    best.write_bytes(best.read_bytes()[:1000])  # truncated
    resumed = cfg.model_copy(update={"training": cfg.training.model_copy(update={"epochs": 3})})
    with pytest.raises(Exception, match="best.pt: not a readable hydradgl checkpoint"):
        _train(resumed, small_prepared, resume=cfg.output_dir)
    assert load_checkpoint(cfg.output_dir / "last.pt")["epoch"] == 1  # refused before any training


def test_resume_epochs_must_go_beyond_the_done_ones_and_a_change_is_logged(tmp_path, small_prepared):
    from rich.console import Console

    cfg = small_config(tmp_path, **{"training.epochs": 2})
    _train(cfg, small_prepared)
    with pytest.raises(Exception, match=r"2 epochs are done already; to train longer give --epochs above 2"):
        _train(cfg, small_prepared, resume=cfg.output_dir)
    console = Console(record=True, width=200)
    longer = cfg.model_copy(update={"training": cfg.training.model_copy(update={"epochs": 3})})
    from hydradgl.train.run import train_run

    train_run(longer, resume=cfg.output_dir, data=small_prepared, console=console, plots_enabled=False)
    assert "training.epochs: 2 -> 3 (--epochs)" in console.export_text()
    assert "epochs: 3" in (cfg.output_dir / "config.yaml").read_text()
    assert "--overwrite" in one_clean_line(cli("train", "--resume", str(cfg.output_dir), "--overwrite"))


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


def test_stale_temporaries_are_removed_but_never_a_live_writers(tmp_path, small_prepared):
    cfg = small_config(tmp_path, **{"training.epochs": 1})
    cfg.output_dir.mkdir(parents=True)
    old = time.time() - 3600
    dead_old = cfg.output_dir / f"last.pt.{_dead_pid()}.abc123.tmp"
    dead_fresh = cfg.output_dir / f"best.pt.{_dead_pid()}.def456.tmp"
    live_old = cfg.output_dir / f"last.pt.{os.getppid()}.ghi789.tmp"
    for path in (dead_old, dead_fresh, live_old):
        path.write_bytes(b"partial")
    for path in (dead_old, live_old):
        os.utime(path, (old, old))
    _train(cfg, small_prepared)
    assert not dead_old.exists() and dead_fresh.exists() and live_old.exists()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_honour_the_umask(tmp_path, umask, mode):
    from hydradgl.atomic import atomic_write_text
    from hydradgl.data import cache

    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        cache.save(tmp_path / "c.npz", {"x": np.zeros(2)}, {})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "c.npz").stat().st_mode) == mode


def test_disk_full_while_checkpointing_is_one_line_and_keeps_the_last_good_checkpoint(
        tmp_path, small_prepared, monkeypatch):
    import errno

    import torch

    from hydradgl.errors import TrainingError
    from hydradgl.train.checkpoint import load_checkpoint

    cfg = small_config(tmp_path, **{"training.epochs": 3})
    real_save, calls = torch.save, []

    def full_disk(obj, handle):
        calls.append(obj["epoch"])
        if obj["epoch"] == 2:
            handle.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, handle)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(TrainingError, match=r"best.pt: cannot write checkpoint \(No space left on device\); "
                                            r"the previous best.pt is kept"):
        _train(cfg, small_prepared)
    assert load_checkpoint(cfg.output_dir / "last.pt")["epoch"] == 1
    assert not list(cfg.output_dir.glob("*.tmp"))


# -- splits: no perfect score on nothing ----------------------------------------------------------

def _extxyz(path: Path, n: int, energy=lambda i: -1.0 - i, positions=None) -> Path:
    from ase import Atoms
    from ase.io import write

    frames = []
    for i in range(n):
        a = Atoms("FePt", positions=positions(i) if positions else [[0, 0, 0], [1.5 + 0.1 * i, 0, 0]])
        a.info["energy"] = energy(i)
        frames.append(a)
    write(path, frames, format="extxyz")
    return path


def _extxyz_config(path: Path, tmp_path: Path, **extra):
    return small_config(tmp_path, **{"dataset.name": "extxyz", "dataset.options": {"path": str(path)},
                                     "dataset.cache_dir": str(tmp_path / "cache"), "heads": [{"name": "energy"}],
                                     "split.method": "random", "training.epochs": 1, **extra})


def test_three_structures_refused_naming_split_fractions_and_counts(tmp_path):
    from hydradgl.train.run import train_run

    cfg = _extxyz_config(_extxyz(tmp_path / "x.xyz", 3), tmp_path)
    with pytest.raises(DataError, match=r"split.fractions \[0.7, 0.15, 0.15\] gives 2 train, 0 val, 1 test "
                                        r"structures: training needs validation structures"):
        train_run(cfg, quiet=True)
    assert not (cfg.output_dir / "config.yaml").exists()
    cfg = _extxyz_config(tmp_path / "x.xyz", tmp_path, **{"split.fractions": [0.6, 0.4, 0.0]})
    result = train_run(cfg, quiet=True, plots_enabled=False)  # test fraction 0: allowed, warned, no test metrics
    assert result.test == {} and not (cfg.output_dir / "test_metrics.json").exists()
    assert "no test split (split.fractions[2] = 0)" in (cfg.output_dir / "run.log").read_text()
    four = _extxyz_config(_extxyz(tmp_path / "y.xyz", 4), tmp_path, output_dir=str(tmp_path / "r2"))
    with pytest.raises(DataError, match=r"gives 3 train, 1 val, 0 test structures: the test split is empty"):
        train_run(four, quiet=True)


def test_metrics_over_no_structures_are_refused_not_zero(small_prepared):
    from hydradgl.data.normalize import Normalizer
    from hydradgl.model.assembler import build_model
    from hydradgl.train.metrics import ErrorSums
    from hydradgl.train.runtime import Runtime
    from hydradgl.train.trainer import evaluate

    import torch

    cfg = small_config()
    model = build_model(cfg, small_prepared.info)
    empty = small_prepared.test.subset(np.array([], dtype=np.int64))
    with pytest.raises(DataError, match="no structures to compute metrics on"):
        evaluate(model, cfg, empty, Normalizer.from_info(small_prepared.info), Runtime(0, 1, 0, torch.device("cpu")))
    sums = ErrorSums({"H": ("H", "graph", "mse")}, Normalizer.from_info(small_prepared.info), torch.device("cpu"))
    assert all(np.isnan(v) for v in sums.reduce(Runtime(0, 1, 0, torch.device("cpu")))["H"].values())


def test_experiment_on_too_small_a_set_and_zero_seeds(tmp_path, monkeypatch):
    from hydradgl.train.experiment import run_experiment

    cfg = _extxyz_config(_extxyz(tmp_path / "x.xyz", 3), tmp_path)
    with pytest.raises(DataError, match="training needs validation structures"):
        run_experiment(cfg, [["energy"]], seeds=1, quiet=True)
    with pytest.raises(ConfigError, match="at least 1 run"):
        run_experiment(cfg, [["energy"]], seeds=0, quiet=True)
    result = cli("experiment", "--seeds", "0")
    assert result.exit_code == 2 and "Traceback" not in result.output and "--seeds" in result.output


def test_experiment_keeps_the_config_files_output_dir(tmp_path, monkeypatch):
    import hydradgl.train.experiment as experiment

    seen = []
    monkeypatch.setattr(experiment, "run_experiment", lambda cfg, *a, **k: seen.append(cfg.output_dir))
    path = tmp_path / "cfg.yaml"
    path.write_text(f"output_dir: {tmp_path / 'mine'}\n")
    assert cli("experiment", "-c", str(path)).exit_code == 0
    assert cli("experiment").exit_code == 0
    assert cli("experiment", "-c", str(path), "-o", str(tmp_path / "flag")).exit_code == 0
    assert seen == [tmp_path / "mine", Path("runs/experiment"), tmp_path / "flag"]
