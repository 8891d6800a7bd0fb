"""CLI: data prepare / data info."""

from __future__ import annotations

import re
import time
from collections import Counter

import click
from rich.table import Table

from hydradgl.cli.common import config_from_options, console, data_config_options, out
from hydradgl.data.records import TargetInfo


@click.group()
def data() -> None:
    """Prepare and inspect datasets."""


@data.command("prepare")
@data_config_options
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes building graphs in parallel (the cache is written by one).")
def prepare(run_options: dict, workers: int) -> None:
    """Read the dataset, build its graphs and fill the processed cache (run once before a distributed job)."""
    from hydradgl.data.pipeline import load_dataset

    cfg = config_from_options(run_options)
    start = time.perf_counter()
    loaded = load_dataset(cfg, log=console.print, workers=workers)
    console.print(f"{len(loaded.graphs)} graphs ready in {time.perf_counter() - start:.1f} s")


@data.command("info")
@data_config_options
def info(run_options: dict) -> None:
    """Counts, compositions, targets (unit, range, how each is read or derived) and mean degree of a dataset.

    The dataset's notes (e.g. reference energies used for a derived target) go to stderr."""
    from hydradgl.data.pipeline import load_dataset

    cfg = config_from_options(run_options)
    loaded = load_dataset(cfg, log=console.print)
    g = loaded.graphs
    degree = g.num_edges.sum() / max(g.num_nodes.sum(), 1)
    out.print(f"dataset {cfg.dataset.name}: {len(g)} graphs, {int(g.num_nodes.sum())} atoms, "
              f"{int(g.num_edges.sum())} edges, mean degree {degree:.2f} (cutoff {cfg.graph.radius} A)")
    targets = Table(title="targets")
    for col in ("name", "level", "dim", "min", "max", "unit", "readout", "description"):
        targets.add_column(col)
    stats = loaded.store.manifest["statistics"]
    for name, t in loaded.targets.items():
        low, high = stats["target_min"].get(name), stats["target_max"].get(name)
        lo, hi = (f"{min(low):.4g}", f"{max(high):.4g}") if low else ("—", "—")
        targets.add_row(name, t.level, str(t.dim), lo, hi, t.unit, _readout(t), t.description)
    out.print(targets)
    if any(t.level == "graph" for t in loaded.targets.values()):
        out.print("readout: the graph-head pooling (head option `readout`) that fits each graph target: "
                  "sum for extensive targets (growing with the atom count, e.g. total energy), mean for "
                  "intensive ones (per-atom values, e.g. mixing energy per atom); ? = the dataset does not say.")
    counts = Counter(g.compositions)
    comps = Table(title=f"{len(counts)} compositions")
    comps.add_column("composition")
    comps.add_column("graphs", justify="right")
    for label, n in sorted(counts.items(), key=lambda item: _natural(item[0])):
        comps.add_row(label, str(n))
    out.print(comps)


def _readout(target: TargetInfo) -> str:
    """``sum (extensive)``, ``mean (intensive)``, ``?`` (a graph target of unknown extensivity) or ``—`` (node)."""
    if target.level != "graph":
        return "—"
    if target.readout is None:
        return "?"
    return f"{target.readout} ({'extensive' if target.extensive else 'intensive'})"


def _natural(label: str) -> list:
    """Sort key reading the counts in ``Fe2Pt30`` as numbers (Fe2 before Fe10)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", label)]
