"""Experiment tracking: a run's per-epoch metrics go to TensorBoard and to logger plugins (rank 0 only).

The :class:`Tracker`, one of the run's reporters, turns each ``metrics.csv`` row into tagged scalars
(``total/val_loss``, ``H/val_rmse``, ``optim/lr``, ``speed/graphs_per_s``), adds the test metrics and plots
at the end, and hands the same stream to every :class:`~hydradgl.plugins.RunLogger`. A logger that raises is
reported once and dropped: tracking never stops a training run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydradgl.config import RunConfig
from hydradgl.configio import parse_options
from hydradgl.errors import ConfigError
from hydradgl.plugins import LoggerContext, Registry, RunLogger
from hydradgl.train.display_units import displayed_errors
from hydradgl.train.report import Reporter, RunEnd

TENSORBOARD_DIR = "tensorboard"
SPEED_KEYS = {"lr": "optim/lr", "graphs_per_s": "speed/graphs_per_s", "seconds": "speed/epoch_seconds"}


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def epoch_scalars(row: dict[str, float]) -> dict[str, float]:
    """A metrics.csv row as tags grouped per head: ``train_H_loss`` -> ``H/train_loss``, ``val_loss`` ->
    ``total/val_loss``, ``lr`` -> ``optim/lr``."""
    scalars = {}
    for key, value in row.items():
        if key in SPEED_KEYS:
            scalars[SPEED_KEYS[key]] = value
        elif key in ("train_loss", "val_loss"):
            scalars[f"total/{key}"] = value
        elif key.startswith(("train_", "val_")) and key.endswith(("_loss", "_rmse")) and key.count("_") >= 2:
            split, rest = key.split("_", 1)
            head, metric = rest.rsplit("_", 1)
            scalars[f"{head}/{split}_{metric}"] = value
    return scalars


def test_scalars(test: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Test metrics per head: ``H/test_rmse``, ``H/test_mae`` (normalized) and their physical-unit twins;
    where errors are shown in another unit (:func:`~hydradgl.train.display_units.displayed_errors`), those
    too, the unit in the tag: ``energy/test_rmse_meV_per_atom``, ``forces/test_mae_meV_per_A``."""
    names = {"rmse": "test_rmse", "mae": "test_mae", "rmse_phys": "test_rmse_phys", "mae_phys": "test_mae_phys"}
    scalars = {f"{head}/{tag}": float(m[key]) for head, m in test.items() for key, tag in names.items() if key in m}
    for head, m in test.items():
        rmse, mae, unit = displayed_errors(m)
        if unit != m["unit"]:
            slug = unit.replace("/", "_per_").replace("^", "").replace(" ", "_")
            scalars.update({f"{head}/test_rmse_{slug}": float(rmse), f"{head}/test_mae_{slug}": float(mae)})
    return scalars


class TensorBoardLogger(RunLogger):
    """Event files under ``<run_dir>/tensorboard`` (view with ``tensorboard --logdir <run_dir>``)."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()  # a run stopped by an error or a pruned trial keeps every epoch it finished

    def log_image(self, tag: str, path: Path) -> None:
        import matplotlib.image

        pixels = matplotlib.image.imread(str(path))[..., :3]  # RGBA floats in [0, 1] -> RGB
        self.writer.add_image(tag, pixels, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


class Tracker(Reporter):
    """Fans the metric stream out to the loggers; a logger's first exception is reported and it is dropped.
    At the end it adds the test metrics and every PNG in ``plot_dir`` (parity ``parity/H``, ...)."""

    def __init__(self, loggers: dict[str, RunLogger], warn: Callable[[str], None], plot_dir: Path | None = None):
        self.loggers, self.warn, self.plot_dir = dict(loggers), warn, plot_dir

    def _call(self, method: str, *args: Any) -> None:
        for name, logger in list(self.loggers.items()):
            try:
                getattr(logger, method)(*args)
            except Exception as exc:  # noqa: BLE001  (a tracker's failure must not end the training run)
                self.warn(f"warning: logger {name!r} failed in {method} ({type(exc).__name__}: {exc}); "
                          "it is switched off for the rest of this run")
                del self.loggers[name]

    def epoch(self, row: dict[str, float]) -> None:
        self._call("log_scalars", epoch_scalars(row), int(row["epoch"]))

    def finish(self, end: RunEnd) -> None:
        if end.test:
            self._call("log_scalars", test_scalars(end.test), end.epochs)
        if self.plot_dir is not None and self.plot_dir.is_dir():
            for png in sorted(self.plot_dir.glob("*.png")):
                stem = png.stem
                tag = stem.replace("_", "/", 1) if "_" in stem else stem
                self._call("log_image", tag, png)

    def close(self) -> None:
        self._call("close")
        self.loggers.clear()


def check_tracking(cfg: RunConfig, registry: Registry) -> None:
    """Fail before training when tracking is misconfigured: tensorboard required but absent, an unknown
    logger plugin, or options the plugin rejects."""
    if cfg.tracking.tensorboard == "on" and not tensorboard_available():
        raise ConfigError("tracking.tensorboard is 'on' but the tensorboard package is not installed: "
                          "pip install tensorboard (or set tracking.tensorboard: auto)")
    for i, entry in enumerate(cfg.tracking.loggers):
        spec = registry.logger(entry.name)
        parse_options(spec.options, entry.options, f"tracking.loggers[{i}].options", plugin=spec.name)


def open_tracker(cfg: RunConfig, registry: Registry, run_dir: Path, enabled: bool,
                 warn: Callable[[str], None], plot_dir: Path | None = None) -> Tracker:
    """The run's tracker (empty unless ``enabled``, i.e. on rank 0): TensorBoard per ``tracking.tensorboard``
    plus the configured logger plugins (:func:`check_tracking` has vetted them), sent the PNGs of
    ``plot_dir`` at the end. A plugin whose factory raises is reported and skipped."""
    tracker = Tracker({}, warn, plot_dir)
    if not enabled:
        return tracker
    mode = cfg.tracking.tensorboard
    if mode == "on" or (mode == "auto" and tensorboard_available()):
        tracker.loggers["tensorboard"] = TensorBoardLogger(run_dir / TENSORBOARD_DIR)
    context = LoggerContext(run_dir=run_dir, config=cfg.model_dump(mode="json"))
    for i, entry in enumerate(cfg.tracking.loggers):
        spec = registry.logger(entry.name)
        options = parse_options(spec.options, entry.options, f"tracking.loggers[{i}].options", plugin=spec.name)
        try:
            tracker.loggers[entry.name] = spec.factory(options, context)
        except Exception as exc:  # noqa: BLE001
            warn(f"warning: logger {entry.name!r} could not start ({type(exc).__name__}: {exc}); "
                 "training goes on without it")
    return tracker
