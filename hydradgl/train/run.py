"""One training run end to end: checks, data, model, trainer, and the run directory's outputs.

Run directory: ``config.yaml``, ``last.pt``/``best.pt``, ``metrics.csv`` (one row per epoch),
``test_metrics.json`` (RMSE/MAE per head, normalized and physical), ``plots/*.png``, ``run.log``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from hydradgl.config import RunConfig
from hydradgl.atomic import atomic_write_text
from hydradgl.configio import head_kind, save_config, validate_plugin_options
from hydradgl.data.pipeline import PreparedData, prepare_data
from hydradgl.data.splitfile import SPLIT_FILE, save_split
from hydradgl.errors import TrainingError
from hydradgl.model.assembler import build_model
from hydradgl.plugins import Registry, get_registry
from hydradgl.train import plots
from hydradgl.train.checkpoint import check_plugins, load_checkpoint, plugin_provenance
from hydradgl.train.runtime import Runtime, setup_runtime, teardown_runtime
from hydradgl.train.seeding import seed_everything
from hydradgl.train.trainer import Trainer, evaluate

MIN_FREE_BYTES = 50 * 2**20


def check_output_dir(path: Path) -> None:
    """Fail before training when the run directory cannot be written or its disk is (nearly) full."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise TrainingError(f"{path}: output directory is not writable ({exc.strerror or exc})") from None
    free = shutil.disk_usage(path).free
    if free < MIN_FREE_BYTES:
        raise TrainingError(f"{path}: only {free / 2**20:.0f} MiB free on its disk; need at least "
                            f"{MIN_FREE_BYTES / 2**20:.0f} MiB for checkpoints and outputs")


@dataclass
class RunResult:
    run_dir: Path
    test: dict[str, dict[str, float]]
    history: list[dict[str, float]]
    seconds: float
    model: Any = None  # the trained HydraModel (best weights when a validation split exists)


def write_metrics_csv(path: Path, history: list[dict[str, float]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buffer.getvalue())


def epoch_line(row: dict[str, float], heads: list[str], epochs: int) -> str:
    per = lambda split: " ".join(f"{h} {row[f'{split}_{h}_loss']:.3e}" for h in heads)  # noqa: E731
    return (f"epoch {int(row['epoch']):>3}/{epochs}  train {row['train_loss']:.3e} ({per('train')})  "
            f"val {row['val_loss']:.3e} ({per('val')})  lr {row['lr']:.1e}  {row['seconds']:.1f} s  "
            f"({row['graphs_per_s']:.0f} train graphs/s)")


def metrics_table(test: dict[str, dict[str, float]], units: dict[str, str]) -> Table:
    table = Table(title="test metrics")
    for col in ("head", "RMSE (norm.)", "MAE (norm.)", "RMSE", "MAE", "unit"):
        table.add_column(col, justify="left" if col in ("head", "unit") else "right")
    for head, m in test.items():
        table.add_row(head, f"{m['rmse']:.3e}", f"{m['mae']:.3e}", f"{m['rmse_phys']:.4g}", f"{m['mae_phys']:.4g}",
                      units.get(head, ""))
    return table


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
              plots_enabled: bool = True) -> RunResult:
    """Train (or resume) one run; every rank calls this under torchrun, rank 0 writes and prints."""
    registry = registry or get_registry()
    console = console or Console(stderr=True)
    runtime = setup_runtime(cfg.training)
    try:
        return _train(cfg, registry, resume, console, quiet, data, runtime, plots_enabled)
    finally:
        teardown_runtime(runtime)


def _train(cfg: RunConfig, registry: Registry, resume: Path | None, console: Console, quiet: bool,
           data: PreparedData | None, runtime: Runtime, plots_enabled: bool) -> RunResult:
    say = (lambda msg: console.print(msg, highlight=False)) if runtime.is_main and not quiet else (lambda msg: None)
    run_dir = Path(cfg.output_dir)
    state = load_checkpoint(Path(resume) / "last.pt") if resume else None
    validate_plugin_options(cfg, registry)
    if runtime.is_main:
        check_output_dir(run_dir)
    seed_everything(cfg.training.seed)
    started = time.perf_counter()
    if data is None:
        with _status(console, quiet or not runtime.is_main, "preparing data"):
            saved_split = Path(resume) / SPLIT_FILE if resume else None
            data = prepare_data(cfg, registry, log=say,
                                split=saved_split if saved_split is not None and saved_split.exists() else None)
    if state is not None and state["info"] != data.info.model_dump():
        raise TrainingError(f"{resume}: the dataset or its split changed since this run started "
                            "(normalization statistics differ); start a new run instead")
    model = build_model(cfg, data.info, registry)
    used = {"dataset": ("dataset", cfg.dataset.name), "conv": ("conv", cfg.model.conv),
            **{f"head:{h.name}": ("head", head_kind(h, model.head_levels[h.name])) for h in cfg.heads}}
    trainer = Trainer(cfg, data, model, runtime, run_dir, extra_state={"plugins": plugin_provenance(registry, used)})
    if state is not None:
        check_plugins(state.get("plugins", {}), registry, Path(resume) / "last.pt")
        trainer.load_state_dict(state)
        say(f"resumed {resume} after epoch {trainer.epoch}")
    heads = [h.name for h in cfg.heads]
    if runtime.is_main:
        save_config(cfg, run_dir / "config.yaml")
        save_split(run_dir / SPLIT_FILE, (data.train.rows, data.val.rows, data.test.rows), len(data.train.base))
        atomic_write_text(run_dir / "run.log", "\n".join(data.log) + "\n")
    say(f"training {cfg.model.conv} x{cfg.model.layers} (width {cfg.model.hidden}), heads {','.join(heads)}, "
        f"{sum(p.numel() for p in model.parameters())} parameters, {len(data.train)} train graphs, "
        f"{runtime.world_size} process(es) on {runtime.device}")

    bar = _progress(console, quiet) if runtime.is_main else None
    epoch_task = bar.add_task("epochs", total=cfg.training.epochs, completed=trainer.epoch) if bar else None
    batch_task = bar.add_task("batches", total=len(trainer.loader)) if bar else None

    def on_epoch(row: dict[str, float]) -> None:
        if runtime.is_main:
            write_metrics_csv(run_dir / "metrics.csv", trainer.history)
        say(epoch_line(row, heads, cfg.training.epochs))
        if bar is not None:
            bar.update(epoch_task, completed=trainer.epoch)

    try:
        with bar if bar is not None else contextlib.nullcontext():
            trainer.fit(on_epoch, progress=(lambda i, n: bar.update(batch_task, completed=i)) if bar else None)
    except KeyboardInterrupt:
        raise TrainingError(f"interrupted after epoch {trainer.epoch}; {run_dir / 'last.pt'} holds the last "
                            f"completed epoch: continue with `hydradgl train --resume {run_dir}`") from None
    if trainer.early.should_stop:
        say(f"early stopping after epoch {trainer.epoch}: best validation loss {trainer.early.best:.4e} "
            f"at epoch {trainer.early.best_epoch}")
    return _finish(cfg, trainer, runtime, run_dir, started, plots_enabled, console, quiet)


def _finish(cfg: RunConfig, trainer: Trainer, runtime: Runtime, run_dir: Path, started: float,
            plots_enabled: bool, console: Console, quiet: bool) -> RunResult:
    """Best weights, test metrics on the whole test set (rank 0), plots."""
    best = run_dir / "best.pt"
    if best.exists():
        trainer.model.load_state_dict(load_checkpoint(best)["model"])
    local = Runtime(0, 1, runtime.local_rank, runtime.device)
    test: dict[str, dict[str, float]] = {}
    if runtime.is_main and len(trainer.data.test):
        test, values = evaluate(trainer.model, cfg, trainer.data.test, trainer.normalizer, local, collect=plots_enabled)
        units = {h.name: trainer.data.info.targets[h.target_name].unit for h in cfg.heads}
        for h in cfg.heads:
            test[h.name].update(unit=units[h.name], level=trainer.model.head_levels[h.name])
        summary = {"heads": test, "best_epoch": trainer.early.best_epoch, "epochs": trainer.epoch,
                   "test_graphs": len(trainer.data.test), "seconds": time.perf_counter() - started}
        atomic_write_text(run_dir / "test_metrics.json", json.dumps(summary, indent=2) + "\n")
        if plots_enabled:
            plots.parity_and_histograms(values, units, run_dir / "plots")
            plots.loss_curves(trainer.history, run_dir / "plots")
        if not quiet:
            console.print(metrics_table(test, units))
    return RunResult(run_dir, test, trainer.history, time.perf_counter() - started, trainer.model)
