"""The terminal side of training: a rich console reporter (log lines, spinner, progress bars) and tables."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from hydradgl.train.display_units import displayed_errors
from hydradgl.train.report import Reporter, RunEnd, RunStart, epoch_line


class ConsoleReporter(Reporter):
    """A training run on a rich console: messages, yellow warnings, epoch lines and the test table; on a
    terminal also a spinner while data are prepared and progress bars of epochs and batches."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.bar: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.heads: list[str] = []
        self.epochs = 0

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def warning(self, text: str) -> None:
        self.console.print(escape(text), style="yellow", highlight=False)

    def status(self, text: str) -> AbstractContextManager[Any]:
        return self.console.status(text) if self.console.is_terminal else contextlib.nullcontext()

    def start(self, run: RunStart) -> None:
        self.heads, self.epochs = run.heads, run.epochs
        if self.console.is_terminal:
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=self.console, transient=True)
            self.tasks = {"epochs": self.bar.add_task("epochs", total=run.epochs, completed=run.epochs_done),
                          "batches": self.bar.add_task("batches", total=run.batches)}
            self.bar.start()

    def batch(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.update(self.tasks["batches"], completed=done)

    def epoch(self, row: dict[str, float]) -> None:
        self.console.print(epoch_line(row, self.heads, self.epochs), highlight=False)
        if self.bar is not None:
            self.bar.update(self.tasks["epochs"], completed=int(row["epoch"]))

    def finish(self, end: RunEnd) -> None:
        self.close()
        if end.test:
            self.console.print(metrics_table(end.test))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def metrics_table(test: dict[str, dict]) -> Table:
    """Test metrics per head (each with its ``unit``, as :func:`~hydradgl.train.metrics.with_units` gives):
    RMSE and MAE normalized, then in the unit they are shown in (a potential's energy per atom in meV/atom,
    forces in meV/A: :func:`~hydradgl.train.display_units.displayed_errors`)."""
    table = Table(title="test metrics")
    for col in ("head", "RMSE (norm.)", "MAE (norm.)", "RMSE", "MAE", "unit"):
        table.add_column(col, justify="left" if col in ("head", "unit") else "right")
    for head, m in test.items():
        rmse, mae, unit = displayed_errors(m)
        table.add_row(head, f"{m['rmse']:.3e}", f"{m['mae']:.3e}", f"{rmse:.4g}", f"{mae:.4g}", unit)
    return table


def uncertainty_table(metrics: dict[str, dict[str, float | str]]) -> Table:
    """An ensemble's uncertainty metrics per head (:func:`hydradgl.train.uncertainty.uncertainty_metrics`)."""
    table = Table(title="ensemble uncertainty (test; calibration fitted on validation)")
    for col in ("head", "RMSE of mean", "mean std", "within 1 std", "within 2 std", "area", "calib. s",
                "within 1 s*std", "within 2 s*std", "area (s)", "unit"):
        table.add_column(col, justify="left" if col in ("head", "unit") else "right")
    for head, m in metrics.items():
        table.add_row(head, f"{m['rmse']:.4g}", f"{m['mean_std']:.4g}", f"{m['within_1std']:.3f}",
                      f"{m['within_2std']:.3f}", f"{m['miscalibration_area']:.3f}", f"{m['calibration']:.3g}",
                      f"{m['within_1std_calibrated']:.3f}", f"{m['within_2std_calibrated']:.3f}",
                      f"{m['miscalibration_area_calibrated']:.3f}", str(m["unit"]))
    return table
