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
    import io

    from hydradgl.train.report import LineReporter

    cfg = small_config(tmp_path, **{"training.epochs": 2})
    _train(cfg, small_prepared)
    with pytest.raises(Exception, match=r"2 epochs are done already; to train longer give --epochs above 2"):
        _train(cfg, small_prepared, resume=cfg.output_dir)
    printed = io.StringIO()
    longer = cfg.model_copy(update={"training": cfg.training.model_copy(update={"epochs": 3})})
    from hydradgl.train.run import train_run

    train_run(longer, resume=cfg.output_dir, data=small_prepared, reporter=LineReporter(printed), plots_enabled=False)
    assert "training.epochs: 2 -> 3; " in printed.getvalue()
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
    from hydradgl.data.packing import pack
    from hydradgl.data.records import TargetInfo
    from hydradgl.data.store_build import build_store

    chunk = pack([_two_atoms()], {"E": TargetInfo(level="graph")}, {}, small_config().graph)
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        build_store(tmp_path / "c", [chunk], {"E": TargetInfo(level="graph")}, {}, [])
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "c" / "src.npy").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o777 & ~umask


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
    sums = ErrorSums([h for h in model.head_descriptions if h.name == "H"], Normalizer.from_info(small_prepared.info),
                     torch.device("cpu"))
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


# -- geometry and graph settings ------------------------------------------------------------------

def _structure(positions, cell=None, pbc=(False, False, False)):
    from hydradgl.data.records import Structure

    positions = np.asarray(positions, dtype=float)
    return Structure(numbers=np.full(len(positions), 26), positions=positions, cell=cell, pbc=pbc, source="s.xyz#0")


def test_cluster_neighbours_match_brute_force_and_ase():
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    from hydradgl.config import GraphConfig
    from hydradgl.data.graphs import neighbour_edges

    rng = np.random.default_rng(1)
    pos = rng.uniform(-6, 6, (120, 3))
    src, dst, vec = neighbour_edges(_structure(pos), GraphConfig(radius=3.5))
    d = np.linalg.norm(pos[None, :, :] - pos[:, None, :], axis=-1)
    expected = {(int(a), int(b)) for a, b in zip(*np.nonzero((d < 3.5) & (d > 0)))}
    assert {(int(s), int(t)) for s, t in zip(src, dst)} == expected
    np.testing.assert_allclose(vec, pos[dst] - pos[src])
    i, j = neighbor_list("ij", Atoms(numbers=[26] * 120, positions=pos + 50, cell=np.eye(3) * 200), 3.5)
    assert sorted(zip(j.tolist(), i.tolist())) == sorted(zip(src.tolist(), dst.tolist()))
    kept = neighbour_edges(_structure(pos), GraphConfig(radius=3.5, max_neighbours=2))[1]
    assert np.bincount(kept).max() <= 2


def test_large_cluster_does_not_go_quadratic():
    from hydradgl.data.graphs import estimated_edges

    rng = np.random.default_rng(0)
    pos = rng.uniform(0, (10_000 / 0.085) ** (1 / 3), (10_000, 3))
    assert estimated_edges(_structure(pos), (False,) * 3, 7.0) < 2e6  # what the k-d tree search is sized by


@pytest.mark.parametrize("positions, cell, periodic, message", [
    ([[0, 0, 0], [np.nan, 0, 0]], None, False, r"s.xyz#0: atom 1 has a NaN or infinite position"),
    ([[0, 0, 0], [np.inf, 0, 0]], None, False, r"atom 1 has a NaN or infinite position"),
    ([[0, 0, 0], [1, 0, 0]], np.zeros((3, 3)), True, r"s.xyz#0: the cell .* has zero volume"),
    ([[0, 0, 0], [1, 0, 0]], np.array([[3, 0, 0], [6, 0, 0], [0, 0, 3.0]]), True, "has zero volume"),
    ([[0, 0, 0], [1, 0, 0]], np.ones((2, 3)), True, r"the cell must be 3 finite lattice vectors"),
    ([[0, 0, 0], [1, 0, 0]], np.full((3, 3), np.nan), True, r"the cell must be 3 finite lattice vectors"),
])
def test_bad_geometry_is_named(positions, cell, periodic, message):
    from hydradgl.config import GraphConfig
    from hydradgl.data.graphs import neighbour_edges

    with pytest.raises(DataError, match=message):
        neighbour_edges(_structure(positions, cell, (True,) * 3), GraphConfig(periodic=periodic))


def test_absurd_radius_is_refused_before_allocating():
    from hydradgl.config import GraphConfig
    from hydradgl.data.graphs import neighbour_edges

    periodic = _structure([[0, 0, 0], [1.4, 1.4, 1.4]], np.eye(3) * 2.8, (True,) * 3)
    with pytest.raises(DataError, match=r"graph.radius 500.0 A would give about .* edges .*graph.max_neighbours"):
        neighbour_edges(periodic, GraphConfig(radius=500.0, periodic=True))
    cluster = _structure(np.random.default_rng(0).uniform(0, 30, (6000, 3)))
    with pytest.raises(DataError, match="lower graph.radius"):
        neighbour_edges(cluster, GraphConfig(radius=100.0))


def test_nan_coordinate_in_extxyz_is_refused_by_prepare_and_predict(tmp_path, small_prepared):
    from hydradgl.data.pipeline import load_dataset
    from hydradgl.data.prediction import graphs_for_prediction

    path = _extxyz(tmp_path / "nan.xyz", 4)
    lines = path.read_text().splitlines()  # 4 lines per frame: count, comment, Fe, Pt
    lines[7] = lines[7].split()[0] + " nan 0.0 0.0"  # frame 1, atom 1
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"nan.xyz#1: atom 1 has a NaN or infinite position"):
        load_dataset(_extxyz_config(path, tmp_path))
    with pytest.raises(DataError, match=r"nan.xyz#1: atom 1 has a NaN"):
        graphs_for_prediction([path], small_prepared.info, small_config().dataset)


def test_lsms_cell_must_be_three_by_three():
    from hydradgl.configio import validate_plugin_options
    from hydradgl.plugins import get_registry

    cfg = load_config(None, {"dataset.name": "lsms", "dataset.options": {"path": "x", "cell": [[1, 0, 0], [0, 1, 0]]}})
    with pytest.raises(ConfigError, match=r"dataset.options.cell: List should have at least 3 items"):
        validate_plugin_options(cfg, get_registry())


# -- reader input --------------------------------------------------------------------------------

def test_extxyz_non_numeric_target_is_named(tmp_path):
    from hydradgl.data.pipeline import load_dataset

    path = _extxyz(tmp_path / "bad.xyz", 3, energy=lambda i: "abc" if i == 2 else -1.0)
    with pytest.raises(DataError, match=r"bad.xyz#2: 'energy' \(target 'energy'\) is 'abc', expected numbers"):
        load_dataset(_extxyz_config(path, tmp_path))


def test_extxyz_vector_targets_of_different_lengths_are_named(tmp_path):
    from ase import Atoms
    from ase.io import write

    from hydradgl.data.pipeline import load_dataset

    frames = []
    for i, width in enumerate([3, 3, 2]):
        a = Atoms("FePt", positions=[[0, 0, 0], [1.5, 0, 0]])
        a.info["dipole"] = np.arange(width, dtype=float) + i
        frames.append(a)
    write(tmp_path / "v.xyz", frames, format="extxyz")
    cfg = _extxyz_config(tmp_path / "v.xyz", tmp_path,
                         **{"dataset.options": {"path": str(tmp_path / "v.xyz"),
                                                "targets": {"dipole": {"key": "dipole", "level": "graph"}}}})
    with pytest.raises(DataError, match=r"v.xyz#2: target 'dipole' has 2 components, but .*v.xyz#0 has 3"):
        load_dataset(cfg)


def test_dangling_symlink_in_a_data_folder_is_named(tmp_path):
    from hydradgl.data.files import list_files

    (tmp_path / "a.xyz").write_text("x")
    (tmp_path / "b.xyz").symlink_to(tmp_path / "gone.xyz")
    with pytest.raises(DataError, match=r"b.xyz: symbolic link to a missing file"):
        list_files(tmp_path, "*.xyz")


def test_fept_folder_missing_a_file_is_regenerated_not_shrunk(tmp_path):
    from hydradgl.plugins import DatasetContext
    from hydradgl_plugins.datasets.fept import FePtOptions, load_fept

    options = FePtOptions(max_per_composition=2)
    context = DatasetContext(cache_dir=tmp_path)
    first = load_fept(options, context)
    folder = next((tmp_path / "raw").glob("fept-*"))
    victim = sorted(folder.glob("*.lsms"))[5]
    victim.unlink()
    again = load_fept(options, context)
    assert len(again.structures) == len(first.structures) and victim.exists()
    assert any("lacks 1 generated file(s)" in note and victim.name in note for note in again.log)


def test_partial_fept_generation_of_a_killed_process_is_removed(tmp_path):
    from hydradgl.plugins import DatasetContext
    from hydradgl_plugins.datasets.fept import FePtOptions, load_fept

    raw = tmp_path / "raw"
    partial = raw / f"fept-0123456789abcdef.{_dead_pid()}.x1y2z3.tmp"
    partial.mkdir(parents=True)
    (partial / "fept_00fe_000000.lsms").write_text("half")
    old = time.time() - 3600
    os.utime(partial, (old, old))
    load_fept(FePtOptions(max_per_composition=1), DatasetContext(cache_dir=tmp_path))
    assert not partial.exists()
    assert stat.S_IMODE(next(raw.glob("fept-*")).stat().st_mode) == 0o777 & ~_current_umask()


def _two_atoms():
    from hydradgl.data.records import Structure

    return Structure(numbers=np.array([26, 78]), positions=np.array([[0.0, 0, 0], [2.0, 0, 0]]),
                     targets={"E": np.array([1.0])}, source="two")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- one clear line for what used to be a traceback ----------------------------------------------

def test_cache_that_is_a_file_is_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "cache-file"
    blocker.write_text("x")
    monkeypatch.setenv("HYDRADGL_CACHE", str(blocker))
    out = one_clean_line(cli("data", "prepare", "--set", "dataset.options.max_per_composition=1"))
    assert "cache-file" in out and "cannot write the cache" in out and "HYDRADGL_CACHE" in out


def test_predict_into_a_file_instead_of_a_folder_is_one_line(tmp_path, small_prepared):
    cfg = small_config(tmp_path, **{"training.epochs": 1})
    _train(cfg, small_prepared)
    (tmp_path / "blocker").write_text("x")
    out = one_clean_line(cli("predict", str(cfg.output_dir), small_prepared.test.sources[0],
                             "-o", str(tmp_path / "blocker" / "p.csv")))
    assert "blocker" in out and len(out.strip().splitlines()) == 1


def test_oserror_and_decode_errors_become_one_line():
    from hydradgl.cli.common import error_line

    assert error_line(PermissionError(13, "Permission denied", "/ro/out.csv")) == "/ro/out.csv: Permission denied"
    assert error_line(OSError(28, "No space left on device")) == "a file operation: No space left on device"
    assert "not UTF-8" in error_line(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"))


def test_resume_with_a_config_from_another_run_is_one_line(tmp_path, small_prepared):
    cfg = small_config(tmp_path, **{"training.epochs": 1})
    _train(cfg, small_prepared)
    config = cfg.output_dir / "config.yaml"
    config.write_text(config.read_text().replace("hidden: 16", "hidden: 8").replace("epochs: 1", "epochs: 2"))
    out = one_clean_line(cli("--quiet", "train", "--resume", str(cfg.output_dir)))
    assert "last.pt does not fit" in out and "config.yaml" in out and len(out.strip().splitlines()) == 1
