"""Overhead of tracking (TensorBoard event files) on training: the same run with tracking off and on.

Prints, for the paper model (6 PNA layers of width 20, heads H, C, M) on a FePt subset:
- the wall-clock time of whole runs (data prepared once, plots off), tracking off vs on, alternating
  ``--repeats`` times, medians and the relative overhead;
- the cost of the tracker's per-epoch call alone, against the median epoch time.

Target: < 2% overhead on training throughput.
Usage: python benchmarks/bench_tracking.py [--max-per-composition 20] [--epochs 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from hydradgl.configio import load_config
from hydradgl.data.pipeline import prepare_data
from hydradgl.plugins import get_registry
from hydradgl.train.run import train_run
from hydradgl.train.tracking import open_tracker


def config(args, mode: str, out: Path):
    return load_config(None, {"dataset.options": {"max_per_composition": args.max_per_composition},
                              "training.epochs": args.epochs, "training.patience": None, "training.threads": 2,
                              "training.device": "cpu", "tracking.tensorboard": mode, "output_dir": str(out)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-per-composition", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (import once, outside the timings)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = prepare_data(config(args, "off", root))
        seconds: dict[str, list[float]] = {"off": [], "on": []}
        epochs: list[float] = []
        for i in range(args.repeats):
            for mode in ("off", "on"):
                cfg = config(args, mode, root / f"{mode}-{i}")
                start = time.perf_counter()
                result = train_run(cfg, data=data, quiet=True, plots_enabled=False)
                seconds[mode].append(time.perf_counter() - start)
                epochs += [row["seconds"] for row in result.history]
        off, on = statistics.median(seconds["off"]), statistics.median(seconds["on"])
        print(f"{len(data.train)} training graphs, {args.epochs} epochs, {args.repeats} runs each")
        print(f"whole run: tracking off {off:.2f} s, on {on:.2f} s (medians): overhead {100 * (on - off) / off:+.1f}%")

        cfg = config(args, "on", root / "calls")
        tracker = open_tracker(cfg, get_registry(), cfg.output_dir, enabled=True, warn=print)
        row = result.history[-1]
        calls = 200
        start = time.perf_counter()
        for step in range(calls):
            tracker.epoch({**row, "epoch": step + 1})
        per_call = (time.perf_counter() - start) / calls
        tracker.close()
        epoch = statistics.median(epochs)
        print(f"tracker per epoch: {1e3 * per_call:.2f} ms = {100 * per_call / epoch:.3f}% of a {epoch:.2f} s epoch")


if __name__ == "__main__":
    main()
