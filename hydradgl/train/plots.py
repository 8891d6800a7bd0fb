"""PNG plots of a run: parity and error histogram per head (test set), loss curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from hydradgl.atomic import atomic_open  # noqa: E402
from hydradgl.train.display_units import display_unit  # noqa: E402
from hydradgl.train.report import Reporter, RunEnd  # noqa: E402
from hydradgl.train.uncertainty import coverage_curve  # noqa: E402


def save_figure(fig, path: Path) -> None:
    """Write ``fig`` as a PNG atomically, then close it."""
    try:
        with atomic_open(path) as handle:
            fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def present_components(true: np.ndarray, pred: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per component of a head's (rows, components) values, (true, predicted) where the target is
    present (finite: a frame without forces or stress stores NaN)."""
    true, pred = true.reshape(len(true), -1), pred.reshape(len(pred), -1)
    parts = []
    for c in range(true.shape[1]):
        keep = np.isfinite(true[:, c])
        parts.append((true[keep, c], pred[keep, c]))
    return parts


def parity_figure(head: str, true: np.ndarray, pred: np.ndarray, unit: str = "") -> Figure:
    """The parity plot of one head, values (rows, components) in ``unit``: a density of points for one
    component; for several (forces, stress) every component in one panel, one colour each (``head[i]``,
    as predict names the columns). The title gives the RMSE over every present value."""
    parts = present_components(true, pred)
    label = f" [{unit}]" if unit else ""
    fig, ax = plt.subplots(figsize=(4.2, 4))
    if len(parts) == 1:
        ax.hexbin(*parts[0], gridsize=50, mincnt=1, bins="log", cmap="viridis")
    else:
        for c, (t, p) in enumerate(parts):
            ax.scatter(t, p, s=3, alpha=0.4, label=f"{head}[{c}]", rasterized=True)
        ax.legend(fontsize=7, markerscale=3)
    everything = np.concatenate([np.concatenate(part) for part in parts])
    lo, hi = float(everything.min()), float(everything.max())
    ax.plot([lo, hi], [lo, hi], "r--", lw=1)
    errors = np.concatenate([p - t for t, p in parts])
    rmse = float(np.sqrt(np.mean(errors ** 2)))
    ax.set(xlabel=f"true {head}{label}", ylabel=f"predicted {head}{label}",
           title=f"{head}: test RMSE {rmse:.3g}{label}")
    return fig


def parity_and_histograms(results: dict[str, tuple[np.ndarray, np.ndarray]], units: dict[str, str],
                          folder: Path) -> None:
    """``results[head] = (true, predicted)`` in physical units (rows, components; NaN where a target is
    absent), ``units[head]`` their unit: ``parity_<head>.png`` and ``errors_<head>.png`` per head, in the
    unit errors are shown in (:mod:`~hydradgl.train.display_units`). A head without present values
    has no plots."""
    folder.mkdir(parents=True, exist_ok=True)
    for head, (true, pred) in results.items():
        unit, factor = display_unit(units.get(head, ""))
        true, pred = factor * np.asarray(true, dtype=np.float64), factor * np.asarray(pred, dtype=np.float64)
        errors = np.concatenate([p - t for t, p in present_components(true, pred)])
        if not errors.size:
            continue
        save_figure(parity_figure(head, true, pred, unit), folder / f"parity_{head}.png")
        label = f" [{unit}]" if unit else ""
        fig, ax = plt.subplots(figsize=(4.2, 3.2))
        ax.hist(errors, bins=60, color="steelblue")
        ax.set(xlabel=f"error {head}{label}", ylabel="count", title=f"{head}: test errors")
        save_figure(fig, folder / f"errors_{head}.png")


def loss_curves(history: list[dict[str, float]], folder: Path) -> None:
    if not history:
        return
    folder.mkdir(parents=True, exist_ok=True)
    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key in [k for k in history[0] if k.endswith("_loss")]:
        ax.plot(epochs, [row[key] for row in history], label=key.replace("_loss", ""),
                ls="-" if key.startswith("train") else "--")
    ax.set(xlabel="epoch", ylabel="loss (normalized)", yscale="log", title="loss curves")
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, folder / "loss_curves.png")


def uncertainty_plots(results: dict[str, tuple[tuple[np.ndarray, np.ndarray, np.ndarray], float]],
                      units: dict[str, str], folder: Path) -> None:
    """Per head, from ``results[head] = ((true, mean, std), s)`` on the test set: |error| against the
    predicted std, and a calibration curve (observed vs nominal coverage of Gaussian intervals) before
    and after scaling std by the validation-fitted factor ``s``."""

    folder.mkdir(parents=True, exist_ok=True)
    levels = np.linspace(0.01, 0.99, 50)
    for head, ((true, mean, std), s) in results.items():
        unit = f" [{units[head]}]" if units.get(head) else ""
        err = np.abs(mean - true)
        fig, ax = plt.subplots(figsize=(4.2, 4))
        ax.scatter(std, err, s=3, alpha=0.3, color="steelblue", rasterized=True)
        top = float(max(std.max(), 1e-12))
        xs = np.array([0.0, top])
        ax.plot(xs, xs, "k--", lw=1, label="|error| = std")
        ax.plot(xs, s * xs, "r-", lw=1, label=f"|error| = {s:.2g} std (calibrated)")
        ax.set(xlabel=f"predicted std {head}{unit}", ylabel=f"|error| {head}{unit}",
               title=f"{head}: test errors vs ensemble spread")
        ax.legend(fontsize=7)
        save_figure(fig, folder / f"uncertainty_{head}.png")
        fig, ax = plt.subplots(figsize=(4.2, 4))
        ax.plot(levels, coverage_curve(mean - true, std, levels), label="raw std")
        ax.plot(levels, coverage_curve(mean - true, s * std, levels), label=f"calibrated (s = {s:.2g})")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
        ax.set(xlabel="nominal coverage of the Gaussian interval", ylabel="observed fraction of test errors",
               title=f"{head}: calibration", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=7)
        save_figure(fig, folder / f"calibration_{head}.png")


class PlotsReporter(Reporter):
    """PNG plots in ``folder`` at the end: parity and error histogram per head (test set), loss curves."""

    def __init__(self, folder: Path):
        self.folder = folder

    def finish(self, end: RunEnd) -> None:
        if end.test:  # a run without a test split has no test values to plot
            parity_and_histograms(end.values, {h: m["unit"] for h, m in end.test.items()}, self.folder)
            loss_curves(end.history, self.folder)
