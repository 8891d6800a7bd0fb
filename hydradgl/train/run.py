"""One training run end to end: checks, data, model, trainer, and the run directory's outputs.

Run directory: ``config.yaml``, ``last.pt``/``best.pt``, ``metrics.csv`` (one row per epoch),
``split.csv`` (every structure's split, dataset index and source), ``test_metrics.json`` (RMSE/MAE per
head, normalized and physical), ``plots/*.png``, ``run.log``, and ``tensorboard/`` event files (see :mod:`hydradgl.train.tracking`).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from hydradgl.config import RunConfig
from hydradgl.atomic import atomic_write_csv, atomic_write_text
from hydradgl.configio import resolve_plugin_options, save_config, validate_plugin_options
from hydradgl.data.pipeline import PreparedData, prepare_data
from hydradgl.data.splitfile import SPLIT_FILE, save_split
from hydradgl.data.splits import check_split_sizes
from hydradgl.data.records import DatasetInfo
from hydradgl.errors import TrainingError
from hydradgl.model.assembler import build_model
from hydradgl.plugins import Registry, get_registry
from hydradgl.train import plots
from hydradgl.train.checkpoint import check_plugins, load_checkpoint, plugin_provenance
from hydradgl.train.metrics import with_units
from hydradgl.train.rundir import check_output_dir, claim_run_dir, run_dir_lock
from hydradgl.train.runtime import Runtime, broadcast_flag, resolve_kernels, setup_runtime, teardown_runtime
from hydradgl.train.seeding import seed_everything
from hydradgl.train.tracking import Tracker, check_tracking, open_tracker
from hydradgl.train.trainer import Trainer, evaluate

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


def epoch_line(row: dict[str, float], heads: list[str], epochs: int) -> str:
    per = lambda split: " ".join(f"{h} {row[f'{split}_{h}_loss']:.3e}" for h in heads)  # noqa: E731
    return (f"epoch {int(row['epoch']):>3}/{epochs}  train {row['train_loss']:.3e} ({per('train')})  "
            f"val {row['val_loss']:.3e} ({per('val')})  lr {row['lr']:.1e}  {row['seconds']:.1f} s  "
            f"({row['graphs_per_s']:.0f} train graphs/s)")


def metrics_table(test: dict[str, dict]) -> Table:
    """Test metrics per head (each with its ``unit``, as :func:`~hydradgl.train.metrics.with_units` gives)."""
    table = Table(title="test metrics")
    for col in ("head", "RMSE (norm.)", "MAE (norm.)", "RMSE", "MAE", "unit"):
        table.add_column(col, justify="left" if col in ("head", "unit") else "right")
    for head, m in test.items():
        table.add_row(head, f"{m['rmse']:.3e}", f"{m['mae']:.3e}", f"{m['rmse_phys']:.4g}", f"{m['mae_phys']:.4g}",
                      m["unit"])
    return table


def log_warning(console: Console, run_dir: Path, message: str) -> None:
    """A warning on the console and at the end of the run's run.log."""
    console.print(escape(message), style="yellow", highlight=False)
    with open(run_dir / "run.log", "a") as log:
        log.write(message + "\n")


def _status(console: Console, quiet: bool, message: str):
    """A spinner for a long step without a known length (only on a terminal)."""
    return contextlib.nullcontext() if quiet or not console.is_terminal else console.status(message)


def _progress(console: Console, quiet: bool) -> Progress | None:
    if quiet or not console.is_terminal:
        return None
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, transient=True)


def train_run(cfg: RunConfig, registry: Registry | None = None, resume: Path | None = None,
              console: Console | None = None, quiet: bool = False, data: PreparedData | None = None,
              plots_enabled: bool = True, overwrite: bool = False,
              on_epoch: Callable[[dict[str, float]], None] | None = None) -> RunResult:
    """Train (or resume) one run; every rank calls this under torchrun, rank 0 writes and prints.

    Rank 0 holds the run directory's lock throughout; a folder that already holds a run is refused
    unless ``overwrite`` (its files are then removed first) or ``resume``. ``on_epoch(row)``, when
    given, is called after every epoch with its metrics.csv row (e.g. to report to a hyper-parameter
    search, whose exception then stops the run after that epoch's checkpoint).
    """
    registry = registry or get_registry()
    console = console or Console(stderr=True)
    runtime = setup_runtime(cfg.training)
    try:
        with contextlib.ExitStack() as stack:
            loud = runtime.is_main and not quiet
            say = (lambda msg: console.print(msg, highlight=False)) if loud else (lambda msg: None)
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
            return _train(cfg, registry, resume, state, console, quiet, data, runtime, plots_enabled, say, on_epoch)
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
           console: Console, quiet: bool, data: PreparedData | None, runtime: Runtime, plots_enabled: bool,
           say, callback: Callable[[dict[str, float]], None] | None) -> RunResult:
    run_dir = Path(cfg.output_dir)
    seed_everything(cfg.training.seed)
    started = time.perf_counter()
    if data is None:
        with _status(console, quiet or not runtime.is_main, "preparing data"):
            saved_split = Path(resume) / SPLIT_FILE if resume else None
            data = prepare_data(cfg, registry, log=say,
                                split=saved_split if saved_split is not None and saved_split.exists() else None)
    warnings = check_split_sizes(cfg.split.fractions, (len(data.train), len(data.val), len(data.test)))
    for note in warnings if runtime.is_main else ():
        console.print(f"[bold yellow]warning:[/] {note}", highlight=False)  # shown even with --quiet
    if state is not None and DatasetInfo.model_validate(state["info"]) != data.info:
        raise TrainingError(f"{resume}: the dataset or its split changed since this run started "
                            "(normalization statistics differ); start a new run instead")
    model = build_model(cfg, data.info, registry)
    cfg = resolve_plugin_options(cfg, registry, {name: t.level for name, t in data.info.targets.items()})
    model.kernels = resolve_kernels(cfg.training.kernels, runtime.device, model.plugin_kernels)
    used = {"dataset": ("dataset", cfg.dataset.name), "conv": ("conv", cfg.model.conv),
            **{f"head:{h.name}": ("head", h.kind) for h in model.head_descriptions}}
    trainer = Trainer(cfg, data, model, runtime, run_dir, extra_state={"plugins": plugin_provenance(registry, used)})
    if state is not None:
        check_plugins(state.get("plugins", {}), registry, Path(resume) / "last.pt")
        try:
            trainer.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError) as exc:  # e.g. a state_dict size mismatch
            raise TrainingError(f"{Path(resume) / 'last.pt'} does not fit {Path(resume) / 'config.yaml'} "
                                f"({str(exc).splitlines()[0]}); the two come from different runs") from None
        say(f"resumed {resume} after epoch {trainer.epoch}")
    heads = [h.name for h in cfg.heads]
    if runtime.is_main:
        save_config(cfg, run_dir / "config.yaml")
        save_split(run_dir / SPLIT_FILE, (data.train.rows, data.val.rows, data.test.rows), len(data.train.base))
        kernel_line = (f"kernels: {model.kernels} on {runtime.device} (training.kernels: {cfg.training.kernels}; "
                       f"{runtime.world_size} process(es))")
        atomic_write_text(run_dir / "run.log", "\n".join([*data.log, *warnings, kernel_line]) + "\n")
        atomic_write_csv(run_dir / "split.csv", split_rows(data))
    tracker = open_tracker(cfg, registry, run_dir, runtime.is_main, warn=lambda msg: log_warning(console, run_dir, msg))
    say(f"training {cfg.model.conv} x{cfg.model.layers} (width {cfg.model.hidden}), heads {','.join(heads)}, "
        f"{sum(p.numel() for p in model.parameters())} parameters, {len(data.train)} train graphs, "
        f"{runtime.world_size} process(es) on {runtime.device}, {model.kernels} kernels")

    bar = _progress(console, quiet) if runtime.is_main else None
    epoch_task = bar.add_task("epochs", total=cfg.training.epochs, completed=trainer.epoch) if bar else None
    batch_task = bar.add_task("batches", total=len(trainer.loader)) if bar else None

    def on_epoch(row: dict[str, float]) -> None:
        if runtime.is_main:
            atomic_write_csv(run_dir / "metrics.csv", trainer.history)
        say(epoch_line(row, heads, cfg.training.epochs))
        tracker.epoch(row)
        if bar is not None:
            bar.update(epoch_task, completed=trainer.epoch)
        if callback is not None:
            callback(row)

    try:
        with tracker.closed_on_error(), bar if bar is not None else contextlib.nullcontext():
            trainer.fit(on_epoch, progress=(lambda i, n: bar.update(batch_task, completed=i)) if bar else None)
    except KeyboardInterrupt:
        raise TrainingError(f"interrupted after epoch {trainer.epoch}; {run_dir / 'last.pt'} holds the last "
                            f"completed epoch: continue with `hydradgl train --resume {run_dir}`") from None
    if trainer.early.should_stop:
        say(f"early stopping after epoch {trainer.epoch}: best validation loss {trainer.early.best:.4e} "
            f"at epoch {trainer.early.best_epoch}")
    return _finish(cfg, trainer, runtime, run_dir, started, plots_enabled, console, quiet, tracker)


def _finish(cfg: RunConfig, trainer: Trainer, runtime: Runtime, run_dir: Path, started: float,
            plots_enabled: bool, console: Console, quiet: bool, tracker: Tracker) -> RunResult:
    """Best weights, test metrics on the whole test set (rank 0), plots."""
    best = run_dir / "best.pt"
    model = trainer.evaluated
    if best.exists():
        model.load_state_dict(load_checkpoint(best)["model"])
    local = Runtime(0, 1, runtime.local_rank, runtime.device)
    test: dict[str, dict[str, float]] = {}
    if runtime.is_main and len(trainer.data.test):
        test, values = evaluate(model, cfg, trainer.data.test, trainer.normalizer, local, collect=plots_enabled)
        test = with_units(test, model.head_descriptions)
        units = {name: m["unit"] for name, m in test.items()}
        summary = {"heads": test, "best_epoch": trainer.early.best_epoch, "epochs": trainer.epoch,
                   "test_graphs": len(trainer.data.test), "seconds": time.perf_counter() - started}
        atomic_write_text(run_dir / "test_metrics.json", json.dumps(summary, indent=2) + "\n")
        if plots_enabled:
            plots.parity_and_histograms(values, units, run_dir / "plots")
            plots.loss_curves(trainer.history, run_dir / "plots")
        if not quiet:
            console.print(metrics_table(test))
    tracker.finish(test, trainer.epoch, run_dir / "plots" if plots_enabled else None)
    return RunResult(run_dir, test, trainer.history, time.perf_counter() - started, model)
