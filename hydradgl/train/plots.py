"""PNG plots of a run: parity and error histogram per head (test set), loss curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hydradgl.atomic import atomic_open  # noqa: E402


def save_figure(fig, path: Path) -> None:
    """Write ``fig`` as a PNG atomically, then close it."""
    try:
        with atomic_open(path) as handle:
            fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def parity_and_histograms(results: dict[str, tuple[np.ndarray, np.ndarray]], units: dict[str, str], folder: Path) -> None:
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
        ax.set(xlabel=f"true {head}{unit}", ylabel=f"predicted {head}{unit}", title=f"{head}: test RMSE {rmse:.3g}{unit}")
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
