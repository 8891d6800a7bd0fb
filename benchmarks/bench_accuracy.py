"""Accuracy of every installed conv on emt-alloy and FePt, next to geometry-free baselines on the same split.

For each dataset the data are prepared (and split) once; every conv of the registry is trained on them
through the public entry point ``hydradgl.train.run.train_run`` with a fixed budget (``--epochs`` and,
optionally, ``--minutes`` per run), and its test RMSE per head (physical units) is printed next to two
baselines fitted on the same training split (hydradgl.data.baselines): the training mean, and a quadratic
least-squares fit on composition (graph targets) / the per-element mean (node targets). A conv whose
options have ``use_edge_features`` runs twice, with and without. Also: seconds per epoch and training
graphs/s (median over the epochs after the first, which includes warm-up).

Targets (default model on emt-alloy, 10 minutes on 2 cores): total-energy RMSE <= 0.15x the
composition fit, |F| RMSE <= 0.3x the per-element mean.

Usage: python benchmarks/bench_accuracy.py [--datasets emt-alloy,fept] [--convs pna,sage] [--epochs N]
       [--minutes M] [--markdown FILE] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from hydradgl.atomic import atomic_write_text
from hydradgl.config import RunConfig
from hydradgl.configio import load_config
from hydradgl.data.baselines import baseline_rmse
from hydradgl.data.normalize import Normalizer
from hydradgl.data.pipeline import PreparedData, prepare_data
from hydradgl.plugins import Registry, get_registry
from hydradgl.train.run import RunResult, train_run

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ("emt-alloy", "fept")
# Full size: emt-alloy 2,112 structures (configs/emt-alloy.yaml), FePt 2,966 (the default); quick: ~130 each (4 per composition: every split gets each composition).
SIZE = {"emt-alloy": ("per_composition", 64, 4), "fept": ("max_per_composition", 100, 4)}


@dataclass
class Variant:
    """One conv setting to benchmark: the conv's name plus option overrides."""

    conv: str
    options: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        parts = [("edges" if v else "no edges") if k == "use_edge_features" else k.replace("_", " ")
                 for k, v in self.options.items() if k == "use_edge_features" or v is True]
        return f"{self.conv} ({', '.join(parts)})" if parts else self.conv


# Options of built-in convs worth a row of their own (with edge features where the conv has the option).
EXTRA = {"pna": [{"edge_features_in_extrema": True}, {"envelope": True, "aggregators": ["mean", "std", "sum"]}],
         "cgcnn": [{"envelope": True}], "egnn": [{"vector_features": True}]}


def variants(registry: Registry, only: list[str] | None) -> list[Variant]:
    """Every registered conv (or those in ``only``); convs with ``use_edge_features`` run without and with."""
    names = registry.names("conv")
    unknown = [n for n in only or [] if n not in names]
    if unknown:
        sys.exit(f"--convs: unknown conv {', '.join(unknown)}; installed: {', '.join(names)}")
    out = []
    for name in only or names:
        fields = registry.conv(name).options.model_fields
        edges = [{"use_edge_features": False}, {"use_edge_features": True}] if "use_edge_features" in fields else [{}]
        out += [Variant(name, e) for e in edges]
        out += [Variant(name, {**edges[-1], **extra}) for extra in EXTRA.get(name, [])
                if set(extra) <= set(fields)]
    return out


def dataset_config(name: str, args: argparse.Namespace) -> RunConfig:
    key, full, quick = SIZE[name]
    overrides = {f"dataset.options.{key}": quick if args.quick else full, "training.threads": args.threads,
                 "training.device": args.device, "output_dir": str(Path(args.output_dir) / name)}
    if args.quick:
        overrides.update({"model.hidden": 8, "model.layers": 2})
    return load_config(ROOT / "configs" / "emt-alloy.yaml" if name == "emt-alloy" else None, overrides)


def train_with_budget(cfg: RunConfig, data: PreparedData, epochs: int, minutes: float | None,
                      registry: Registry) -> RunResult:
    """Train for ``epochs``, or fewer when ``minutes`` would be exceeded at the first epoch's pace.

    With a time budget, one epoch is trained first to time it, then the run is resumed from its
    checkpoint up to the number of epochs that fit (so the budget costs no extra epoch).
    """
    run = lambda c, resume=None: train_run(c, registry, resume=resume, quiet=True, data=data,  # noqa: E731
                                           plots_enabled=False)
    cfg.training.epochs = epochs if minutes is None else 1
    first = run(cfg)
    if minutes is None or epochs == 1:
        return first
    fitting = int(minutes * 60 / max(first.history[0]["seconds"], 1e-9))
    cfg.training.epochs = max(1, min(epochs, fitting))
    if cfg.training.epochs == 1:
        return first
    result = run(cfg, resume=cfg.output_dir)
    result.seconds += first.seconds
    return result


def steady(history: list[dict[str, float]], key: str) -> float:
    rows = history[1:] or history  # the first epoch includes warm-up
    return statistics.median(r[key] for r in rows)


def fmt(value: float, reference: float | None = None) -> str:
    text = f"{value:.3e}"
    return f"{text} ({value / reference:.2f}x)" if reference else text


def dataset_table(name: str, args: argparse.Namespace, registry: Registry, console: Console) -> str:
    cfg = dataset_config(name, args)
    data = prepare_data(cfg, registry)
    norm = Normalizer.from_info(data.info)
    base = baseline_rmse(norm.restore(data.train), norm.restore(data.test), data.info.targets)
    heads = [(h.name, h.target_name, data.info.targets[h.target_name]) for h in cfg.heads]
    header = ["model", "epochs", "s/epoch", "train graphs/s",
              *(f"{h} RMSE ({t.unit})" if t.unit else f"{h} RMSE" for h, _, t in heads)]
    rows = [["training mean", "", "", "", *(fmt(base[target]["mean"]) for _, target, _ in heads)],
            ["composition fit (graph) / per-element mean (node)", "", "", "",
             *(fmt(base[target]["composition"]) for _, target, _ in heads)]]
    console.print(f"{name}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test graphs; "
                  f"baselines: " + ", ".join(f"{h} {base[t]['mean']:.3e} / {base[t]['composition']:.3e}"
                                             for h, t, _ in heads), highlight=False)
    for variant in variants(registry, args.convs):
        run_cfg = cfg.model_copy(deep=True)
        run_cfg.model.conv, run_cfg.model.conv_options = variant.conv, dict(variant.options)
        run_cfg.output_dir = Path(cfg.output_dir) / variant.label.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "")
        started = time.perf_counter()
        result = train_with_budget(run_cfg, data, args.epochs, args.minutes, registry)
        row = [variant.label, str(len(result.history)), f"{steady(result.history, 'seconds'):.2f}",
               f"{steady(result.history, 'graphs_per_s'):.0f}",
               *(fmt(result.test[h]["rmse_phys"], base[t]["composition"]) for h, t, _ in heads)]
        rows.append(row)
        console.print(f"{name} {variant.label}: " + "  ".join(f"{h} {c}" for h, c in zip(header[1:], row[1:]))
                      + f"  ({time.perf_counter() - started:.0f} s)", highlight=False)
    lines = [f"### {name}", "",
             f"{len(data.train)} training / {len(data.test)} test graphs; RMSE in physical units, "
             "(x) = ratio to the composition fit (graph) / per-element mean (node).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS), help="Comma-separated: emt-alloy, fept.")
    parser.add_argument("--convs", default=None, help="Comma-separated conv names (default: every installed conv).")
    parser.add_argument("--epochs", type=int, default=300, help="Epochs per run (at most).")
    parser.add_argument("--minutes", type=float, default=10.0, help="Training time budget per run (0: no limit).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output-dir", default="runs/bench-accuracy")
    parser.add_argument("--markdown", type=Path, default=None, help="Also write the tables to this file.")
    parser.add_argument("--quick", action="store_true", help="Smoke test: ~130 graphs per dataset, 2 epochs, a small model.")
    args = parser.parse_args(argv)
    args.convs = [c.strip() for c in args.convs.split(",") if c.strip()] if args.convs else None
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown:
        sys.exit(f"--datasets: unknown {', '.join(unknown)}; choose from {', '.join(DATASETS)}")
    if args.quick:
        args.epochs = 2
    args.minutes = args.minutes or None
    torch.set_num_threads(args.threads)
    console = Console(stderr=True)
    text = "\n".join(dataset_table(name, args, get_registry(), console) for name in datasets)
    print(text, flush=True)
    if args.markdown:
        atomic_write_text(args.markdown, text)
    return text


if __name__ == "__main__":
    main()
