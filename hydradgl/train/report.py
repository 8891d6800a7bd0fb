"""How a training run reports: one :class:`Reporter` interface, fed the run's events in order.

A run calls ``message`` and ``warning`` for its log lines, ``status`` around a long step, ``start`` once
training begins, ``batch`` and ``epoch`` as it goes, ``finish`` with the test metrics, and ``close``
at the end, also when it stops with an exception. The run composes its reporters (:class:`Reporters`):
``metrics.csv`` (:class:`CsvReporter`), the PNG plots (:class:`hydradgl.train.plots.PlotsReporter`), TensorBoard and
logger plugins (:class:`hydradgl.train.tracking.Tracker`), and the caller's reporter for the terminal
(:class:`LineReporter` by default; the CLI's is a rich console with a progress bar).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from hydradgl.atomic import atomic_write_csv
from hydradgl.train.display_units import displayed_errors


@dataclass
class RunStart:
    """What a reporter learns when training begins (``history``: the rows of epochs done before a resume)."""

    run_dir: Path
    heads: list[str]
    epochs: int
    epochs_done: int
    batches: int
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class RunEnd:
    """What a reporter learns at the end: test metrics per head (with units; empty without a test split),
    the epochs done, the history, and the test values per head (true, predicted) in physical units when
    they were collected."""

    run_dir: Path
    test: dict[str, dict[str, Any]]
    epochs: int
    history: list[dict[str, float]]
    values: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


class Reporter:
    """Receives a training run's events; every method does nothing unless a subclass overrides it."""

    def message(self, text: str) -> None:
        """A log line (what is being done, what was decided)."""

    def warning(self, text: str) -> None:
        """A warning, shown even where messages are not."""

    def status(self, text: str) -> contextlib.AbstractContextManager[None]:
        """A context around a step of unknown length (e.g. a spinner)."""
        return contextlib.nullcontext()

    def start(self, run: RunStart) -> None:
        """Training begins (or resumes)."""

    def batch(self, done: int, total: int) -> None:
        """``done`` of ``total`` training batches of the current epoch are finished."""

    def epoch(self, row: dict[str, float]) -> None:
        """An epoch is done and checkpointed; ``row`` is its metrics.csv row."""

    def finish(self, end: RunEnd) -> None:
        """Training and the test evaluation are done."""

    def close(self) -> None:
        """The run is over (after ``finish``, or after an exception); release what was opened."""


class Reporters(Reporter):
    """Several reporters as one, called in order; ``close`` reaches every one even if one raises."""

    def __init__(self, reporters: Iterable[Reporter]):
        self.reporters = list(reporters)

    def message(self, text: str) -> None:
        for r in self.reporters:
            r.message(text)

    def warning(self, text: str) -> None:
        for r in self.reporters:
            r.warning(text)

    @contextlib.contextmanager
    def status(self, text: str) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for r in self.reporters:
                stack.enter_context(r.status(text))
            yield

    def start(self, run: RunStart) -> None:
        for r in self.reporters:
            r.start(run)

    def batch(self, done: int, total: int) -> None:
        for r in self.reporters:
            r.batch(done, total)

    def epoch(self, row: dict[str, float]) -> None:
        for r in self.reporters:
            r.epoch(row)

    def finish(self, end: RunEnd) -> None:
        for r in self.reporters:
            r.finish(end)

    def close(self) -> None:
        with contextlib.ExitStack() as stack:
            for r in reversed(self.reporters):
                stack.callback(r.close)


class Quiet(Reporter):
    """Passes on only the warnings (``--quiet``)."""

    def __init__(self, inner: Reporter):
        self.inner = inner

    def warning(self, text: str) -> None:
        self.inner.warning(text)

    def close(self) -> None:
        self.inner.close()


class OnEpoch(Reporter):
    """Calls ``callback(row)`` after every epoch (e.g. a hyper-parameter search's pruning, whose exception
    then stops the run after that epoch's checkpoint)."""

    def __init__(self, callback: Callable[[dict[str, float]], None]):
        self.callback = callback

    def epoch(self, row: dict[str, float]) -> None:
        self.callback(row)


def epoch_line(row: dict[str, float], heads: list[str], epochs: int) -> str:
    """One epoch's losses, learning rate and speed on one line."""
    per = lambda split: " ".join(f"{h} {row[f'{split}_{h}_loss']:.3e}" for h in heads)  # noqa: E731
    return (f"epoch {int(row['epoch']):>3}/{epochs}  train {row['train_loss']:.3e} ({per('train')})  "
            f"val {row['val_loss']:.3e} ({per('val')})  lr {row['lr']:.1e}  {row['seconds']:.1f} s  "
            f"({row['graphs_per_s']:.0f} train graphs/s)")


class LineReporter(Reporter):
    """Plain text lines on a stream (stderr by default): messages, warnings, epochs, test metrics."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream
        self.heads: list[str] = []
        self.epochs = 0

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr, flush=True)

    def message(self, text: str) -> None:
        self._print(text)

    def warning(self, text: str) -> None:
        self._print(text if text.startswith("warning") else f"warning: {text}")

    def start(self, run: RunStart) -> None:
        self.heads, self.epochs = run.heads, run.epochs

    def epoch(self, row: dict[str, float]) -> None:
        self._print(epoch_line(row, self.heads, self.epochs))

    def finish(self, end: RunEnd) -> None:
        for head, m in end.test.items():
            rmse, mae, unit = displayed_errors(m)
            self._print(f"test {head}: RMSE {rmse:.4g} {unit}, MAE {mae:.4g} {unit} "
                        f"(normalized: RMSE {m['rmse']:.3e}, MAE {m['mae']:.3e})")


class CsvReporter(Reporter):
    """``metrics.csv``: every epoch's row, rewritten atomically after each epoch."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict[str, float]] = []

    def start(self, run: RunStart) -> None:
        self.rows = list(run.history)

    def epoch(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        atomic_write_csv(self.path, self.rows)
