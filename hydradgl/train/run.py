"""One training run end to end: checks, data, model, trainer, and the run directory's outputs.

Run directory: ``config.yaml``, ``last.pt``/``best.pt``, ``metrics.csv`` (one row per epoch),
``split.csv`` (every structure's split, dataset index and source), ``test_metrics.json`` (RMSE/MAE per
head, normalized and physical), ``plots/*.png``, ``run.log``, and ``tensorboard/`` event files (see
:mod:`hydradgl.train.tracking`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydradgl.atomic import atomic_write_csv, atomic_write_text
from hydradgl.config import RunConfig
from hydradgl.configio import resolve_plugin_options, save_config, validate_plugin_options
from hydradgl.data.pipeline import PreparedData, prepare_data
from hydradgl.data.records import DatasetInfo
from hydradgl.data.splitfile import SPLIT_FILE, save_split
from hydradgl.data.splits import check_split_sizes
from hydradgl.errors import TrainingError
from hydradgl.model.assembler import build_model
from hydradgl.plugins import Registry, get_registry
from hydradgl.train.checkpoint import check_plugins, load_checkpoint, plugin_provenance
from hydradgl.train.metrics import with_units
from hydradgl.train.plots import PlotsReporter
from hydradgl.train.report import CsvReporter, LineReporter, OnEpoch, Quiet, Reporter, Reporters, RunEnd, RunStart
from hydradgl.train.rundir import check_output_dir, claim_run_dir, run_dir_lock
from hydradgl.train.runtime import Runtime, broadcast_flag, resolve_kernels, setup_runtime, teardown_runtime
from hydradgl.train.seeding import seed_everything
from hydradgl.train.tracking import check_tracking, open_tracker
from hydradgl.train.trainer import Trainer, evaluate, training_minutes


@dataclass
class RunResult:
    run_dir: Path
    test: dict[str, dict[str, float]]
    history: list[dict[str, float]]
    seconds: float
    model: Any = None  # the trained HydraModel (best weights when a validation split exists)


def split_rows(data: PreparedData) -> list[dict]:
    """One row per structure: its split, index in the whole dataset, and source (``split.csv``)."""
    return [{"split": name, "id": int(i), "source": source}
            for name, part in (("train", data.train), ("val", data.val), ("test", data.test))
            for i, source in zip(part.ids, part.sources)]


def run_log_warning(reporter: Reporter, run_dir: Path):
    """A warning function for the run: to the reporter and at the end of the run's run.log."""
    def warn(message: str) -> None:
        reporter.warning(message)
        with open(run_dir / "run.log", "a") as log:
            log.write(message + "\n")
    return warn


def train_run(cfg: RunConfig, registry: Registry | None = None, resume: Path | None = None,
              reporter: Reporter | None = None, quiet: bool = False, data: PreparedData | None = None,
              plots_enabled: bool = True, overwrite: bool = False,
              on_epoch: Callable[[dict[str, float]], None] | None = None) -> RunResult:
    """Train (or resume) one run; every rank calls this under torchrun, rank 0 writes and reports.

    Rank 0 holds the run directory's lock throughout; a folder that already holds a run is refused
    unless ``overwrite`` (its files are then removed first) or ``resume``. ``reporter`` receives the
    run's messages, epochs and test metrics (default: plain lines on stderr); ``quiet`` passes it only
    the warnings. ``on_epoch(row)``, when given, is called after every epoch with its metrics.csv row
    (e.g. to report to a hyper-parameter search, whose exception then stops the run after that epoch's
    checkpoint).
    """
    registry = registry or get_registry()
    runtime = setup_runtime(cfg.training)
    reporter = reporter or LineReporter()
    if quiet:
        reporter = Quiet(reporter)
    if not runtime.is_main:
        reporter = Reporter()
    try:
        with contextlib.ExitStack() as stack:
            say = reporter.message
            state = _check_resume(cfg, Path(resume), say) if resume else None
            cfg = _with_saved_averaging(_with_saved_conv_options(cfg, state), state, say) if state else cfg
            validate_plugin_options(cfg, registry)
            check_tracking(cfg, registry)
            refusal = None
            if runtime.is_main:
                run_dir = Path(cfg.output_dir)
                try:
                    check_output_dir(run_dir)
                    stack.enter_context(run_dir_lock(run_dir))
                    claim_run_dir(run_dir, overwrite, resume is not None, log=say)
                except TrainingError as exc:
                    refusal = exc
            if broadcast_flag(refusal is not None, runtime):  # every rank stops, none waits for rank 0
                raise refusal or TrainingError(f"{cfg.output_dir}: rank 0 refused the run directory (see its message)")
            return _train(cfg, registry, resume, state, reporter, data, runtime, plots_enabled, on_epoch)
    finally:
        teardown_runtime(runtime)


def _check_resume(cfg: RunConfig, resume: Path, say) -> dict[str, Any]:
    """The run's last.pt, after checking that every checkpoint there is readable (before any training),
    and that the epochs asked for go beyond the ones done; a change of training.epochs is logged."""
    state = load_checkpoint(resume / "last.pt")
    if (resume / "best.pt").exists():
        load_checkpoint(resume / "best.pt")
    before = state["config"]["training"]["epochs"]
    if cfg.training.epochs <= state["epoch"]:
        raise TrainingError(f"{resume}: {state['epoch']} epochs are done already; to train longer give "
                            f"--epochs above {state['epoch']} (configured: {before})")
    if cfg.training.epochs != before:
        say(f"training.epochs: {before} -> {cfg.training.epochs}; {resume / 'config.yaml'} records it")
    spent, budget = training_minutes(state["history"]), cfg.training.max_minutes
    if budget is not None and spent >= budget:
        raise TrainingError(f"{resume}: {spent:.2f} minutes of training are done, which spends its "
                            f"training.max_minutes ({budget:g}); to train longer give --max-minutes above {spent:.2f}")
    return state


def _with_saved_conv_options(cfg: RunConfig, state: dict[str, Any]) -> RunConfig:
    """Conv options the checkpoint holds but ``cfg`` leaves unset take the checkpoint's value: a run saved
    before options were written out complete (checkpoint format 2) resumes with the model it trained."""
    saved = state["config"]["model"]
    if saved["conv"] != cfg.model.conv:
        return cfg
    options = {**saved["conv_options"], **cfg.model.conv_options}
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"conv_options": options})})


def _with_saved_averaging(cfg: RunConfig, state: dict[str, Any], say) -> RunConfig:
    """A run whose checkpoint holds no weight average was saved before ``training.ema_decay`` existed
    (its config.yaml lacks the key, which now defaults to on): it resumes as it trained, without one."""
    if cfg.training.ema_decay is None or "ema" in state:
        return cfg
    say("the checkpoint holds no weight average (saved before training.ema_decay existed): resuming without one")
    return cfg.model_copy(update={"training": cfg.training.model_copy(update={"ema_decay": None})})


def _train(cfg: RunConfig, registry: Registry, resume: Path | None, state: dict[str, Any] | None,
           reporter: Reporter, data: PreparedData | None, runtime: Runtime, plots_enabled: bool,
           callback: Callable[[dict[str, float]], None] | None) -> RunResult:
    run_dir = Path(cfg.output_dir)
    say = reporter.message
    seed_everything(cfg.training.seed)
    started = time.perf_counter()
    if data is None:
        with reporter.status("preparing data"):
            saved_split = Path(resume) / SPLIT_FILE if resume else None
            data = prepare_data(cfg, registry, log=say,
                                split=saved_split if saved_split is not None and saved_split.exists() else None)
    warnings = check_split_sizes(cfg.split.fractions, (len(data.train), len(data.val), len(data.test)))
    for note in warnings:
        reporter.warning(f"warning: {note}")
    if state is not None and DatasetInfo.model_validate(state["info"]) != data.info:
        raise TrainingError(f"{resume}: the dataset or its split changed since this run started "
                            "(normalization statistics differ); start a new run instead")
    model = build_model(cfg, data.info, registry)
    if state is None:
        model.fit_energy_statistics(data.train, data.info.species)
    cfg = resolve_plugin_options(cfg, registry, {name: t.level for name, t in data.info.targets.items()})
    model.kernels = resolve_kernels(cfg.training.kernels, runtime.device, model.plugin_kernels)
    used = {"dataset": ("dataset", cfg.dataset.name), "conv": ("conv", cfg.model.conv),
            **{f"head:{h.name}": ("head", h.kind) for h in model.head_descriptions if h.derivative_of is None}}
    trainer = Trainer(cfg, data, model, runtime, run_dir, extra_state={"plugins": plugin_provenance(registry, used)})
    if state is not None:
        assert resume is not None  # the state was read from there
        check_plugins(state.get("plugins", {}), registry, Path(resume) / "last.pt")
        try:
            trainer.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError) as exc:  # e.g. a state_dict size mismatch
            raise TrainingError(f"{Path(resume) / 'last.pt'} does not fit {Path(resume) / 'config.yaml'} "
                                f"({str(exc).splitlines()[0]}); the two come from different runs") from None
        say(f"resumed {resume} after epoch {trainer.epoch}")
    heads = [h.name for h in model.head_descriptions]
    if runtime.is_main:
        save_config(cfg, run_dir / "config.yaml")
        save_split(run_dir / SPLIT_FILE, (data.train.rows, data.val.rows, data.test.rows), len(data.train.base))
        kernel_line = (f"kernels: {model.kernels} on {runtime.device} (training.kernels: {cfg.training.kernels}; "
                       f"{runtime.world_size} process(es))")
        atomic_write_text(run_dir / "run.log", "\n".join([*data.log, *warnings, kernel_line]) + "\n")
        atomic_write_csv(run_dir / "split.csv", split_rows(data))
    plot_dir = run_dir / "plots" if plots_enabled else None
    tracker = open_tracker(cfg, registry, run_dir, runtime.is_main, warn=run_log_warning(reporter, run_dir),
                           plot_dir=plot_dir)
    say(f"training {cfg.model.conv} x{cfg.model.layers} (width {cfg.model.hidden}), heads {','.join(heads)}, "
        f"{sum(p.numel() for p in model.parameters())} parameters, {len(data.train)} train graphs, "
        f"{runtime.world_size} process(es) on {runtime.device}, {model.kernels} kernels")
    outputs: list[Reporter] = [CsvReporter(run_dir / "metrics.csv")] if runtime.is_main else []
    outputs += [PlotsReporter(plot_dir)] if plot_dir is not None and runtime.is_main else []
    outputs += [tracker, reporter] + ([OnEpoch(callback)] if callback is not None else [])
    reporters = Reporters(outputs)
    try:
        reporters.start(RunStart(run_dir, heads, cfg.training.epochs, trainer.epoch, len(trainer.loader),
                                 list(trainer.history)))
        try:
            trainer.fit(reporters.epoch, progress=reporters.batch)
        except KeyboardInterrupt:
            raise TrainingError(f"interrupted after epoch {trainer.epoch}; {run_dir / 'last.pt'} holds the last "
                                f"completed epoch: continue with `hydradgl train --resume {run_dir}`") from None
        if trainer.early.should_stop:
            say(f"early stopping after epoch {trainer.epoch}: best validation loss {trainer.early.best:.4e} "
                f"at epoch {trainer.early.best_epoch}")
        if trainer.out_of_time:
            say(f"training.max_minutes ({cfg.training.max_minutes:g}) reached after epoch {trainer.epoch} "
                f"({training_minutes(trainer.history):.2f} minutes of training); best validation loss "
                f"{trainer.early.best:.4e} at epoch {trainer.early.best_epoch}")
        return _finish(cfg, trainer, runtime, run_dir, started, plots_enabled, reporters)
    finally:
        reporters.close()


def _finish(cfg: RunConfig, trainer: Trainer, runtime: Runtime, run_dir: Path, started: float,
            plots_enabled: bool, reporters: Reporter) -> RunResult:
    """Best weights, test metrics on the whole test set (rank 0), then the reporters' finish."""
    best = run_dir / "best.pt"
    model = trainer.evaluated
    if best.exists():
        model.load_state_dict(load_checkpoint(best)["model"])
    local = Runtime(0, 1, runtime.local_rank, runtime.device)
    test: dict[str, dict[str, float]] = {}
    values: dict = {}
    if runtime.is_main and len(trainer.data.test):
        test, values = evaluate(model, cfg, trainer.data.test, trainer.normalizer, local, collect=plots_enabled)
        test = with_units(test, model.head_descriptions)
        summary = {"heads": test, "best_epoch": trainer.early.best_epoch, "epochs": trainer.epoch,
                   "test_graphs": len(trainer.data.test), "seconds": time.perf_counter() - started}
        atomic_write_text(run_dir / "test_metrics.json", json.dumps(summary, indent=2) + "\n")
    reporters.finish(RunEnd(run_dir, test, trainer.epoch, trainer.history, values))
    return RunResult(run_dir, test, trainer.history, time.perf_counter() - started, model)
