"""The paper's experiment (Table 1): an ensemble of seeds per head set, mean +- std of test RMSE."""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

from hydradgl.atomic import atomic_write_text
from hydradgl.config import HeadConfig, RunConfig
from hydradgl.data.pipeline import prepare_data
from hydradgl.errors import ConfigError
from hydradgl.plugins import Registry, get_registry
from hydradgl.train.report import LineReporter, Reporter
from hydradgl.train.run import train_run


def parse_head_sets(text: str) -> list[list[str]]:
    """``"HCM,HC,H"`` -> [[H, C, M], [H, C], [H]]; ``"energy+forces"`` keeps multi-letter names."""
    sets = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        names = item.split("+") if "+" in item else list(item)
        if len(set(names)) != len(names):
            raise ConfigError(f"--head-sets: {item!r} repeats a head")
        sets.append(names)
    if not sets:
        raise ConfigError("--head-sets: no head set given")
    return sets


def _fmt(values: list[float]) -> str:
    if not values:
        return "—"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2e} ± {std:.2e}"


def run_experiment(cfg: RunConfig, head_sets: list[list[str]], seeds: int, registry: Registry | None = None,
                   reporter: Reporter | None = None, quiet: bool = False, overwrite: bool = False) -> Path:
    """Train ``seeds`` models per head set on one prepared data set; write table.md and table.csv.

    ``reporter`` gets one line per run and the runs' warnings (default: plain lines on stderr); ``quiet``
    passes it only the warnings."""
    if seeds < 1:
        raise ConfigError(f"--seeds: at least 1 run per head set is needed, got {seeds}")
    registry = registry or get_registry()
    reporter = reporter or LineReporter()
    say = (lambda msg: None) if quiet else reporter.message
    root = Path(cfg.output_dir)
    configured = {h.name: h for h in cfg.heads}
    properties = list(dict.fromkeys(n for s in head_sets for n in s))
    data = prepare_data(cfg, registry, log=None if quiet else reporter.message)
    unknown = [n for n in properties if n not in configured and n not in data.info.targets]
    if unknown:
        raise ConfigError(f"--head-sets names {', '.join(unknown)}, which is neither a configured head nor a "
                          f"dataset target ({', '.join(sorted(data.info.targets))})")
    rows = []
    for names in head_sets:
        joiner = "" if all(len(n) == 1 for n in names) else "+"
        label = ("MTL, " if len(names) > 1 else "STL, ") + joiner.join(names)
        rmse: dict[str, list[float]] = {n: [] for n in names}
        seconds = []
        for seed in range(seeds):
            run_cfg = cfg.model_copy(deep=True)
            run_cfg.heads = [configured.get(n) or HeadConfig(name=n) for n in names]
            run_cfg.training.seed = seed
            run_cfg.output_dir = root / joiner.join(names) / f"seed-{seed}"
            result = train_run(run_cfg, registry, reporter=reporter, quiet=True, data=data, plots_enabled=False,
                               overwrite=overwrite)
            for n in names:
                rmse[n].append(result.test[n]["rmse"])
            seconds.append(result.seconds)
            say(f"{label:<12} seed {seed}: " + "  ".join(f"{n} {rmse[n][-1]:.3e}" for n in names)
                + f"  ({result.seconds:.1f} s)")
        rows.append({"method": label, **{p: _fmt(rmse.get(p, [])) for p in properties},
                     "seconds_per_model": f"{statistics.fmean(seconds):.1f}", "runs": str(seeds)})
    header = ["method", *properties, "seconds_per_model", "runs"]
    md = ["| " + " | ".join(["training method", *(f"test RMSE {p} (normalized)" for p in properties),
                             "mean training time (s)", "runs"]) + " |",
          "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r[k] for k in header) + " |" for r in rows]
    text = "\n".join(md) + "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(root / "table.md", text)
    atomic_write_text(root / "table.csv", buffer.getvalue())
    say(text)
    say(f"table written to {root / 'table.md'} and {root / 'table.csv'}")
    return root
