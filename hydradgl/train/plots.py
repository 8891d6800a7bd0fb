"""PNG plots of a run: parity and error histogram per head (test set), loss curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hydradgl.atomic import atomic_open  # noqa: E402
from hydradgl.train.report import Reporter, RunEnd  # noqa: E402
from hydradgl.train.uncertainty import coverage_curve  # noqa: E402


def save_figure(fig, path: Path) -> None:
    """Write ``fig`` as a PNG atomically, then close it."""
    try:
        with atomic_open(path) as handle:
            fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def parity_and_histograms(results: dict[str, tuple[np.ndarray, np.ndarray]], units: dict[str, str],
                          folder: Path) -> None:
    """``results[head] = (true, predicted)`` in physical units."""
    folder.mkdir(parents=True, exist_ok=True)
    for head, (true, pred) in results.items():
        unit = f" [{units[head]}]" if units.get(head) else ""
        true, pred = true.ravel(), pred.ravel()
        fig, ax = plt.subplots(figsize=(4.2, 4))
        ax.hexbin(true, pred, gridsize=50, mincnt=1, bins="log", cmap="viridis")
        lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], "r--", lw=1)
        rmse = float(np.sqrt(np.mean((pred - true) ** 2)))
        ax.set(xlabel=f"true {head}{unit}", ylabel=f"predicted {head}{unit}",
               title=f"{head}: test RMSE {rmse:.3g}{unit}")
        save_figure(fig, folder / f"parity_{head}.png")
        fig, ax = plt.subplots(figsize=(4.2, 3.2))
        ax.hist(pred - true, bins=60, color="steelblue")
        ax.set(xlabel=f"error {head}{unit}", ylabel="count", title=f"{head}: test errors")
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
