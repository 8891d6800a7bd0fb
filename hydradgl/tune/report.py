"""What a search leaves behind: the best trials as a table (and ``trials.csv``), ``best.yaml``, plots."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from matplotlib.ticker import MaxNLocator
from rich.console import Console
from rich.table import Table

from hydradgl.atomic import atomic_write_text
from hydradgl.config import RunConfig
from hydradgl.configio import save_config
from hydradgl.train.plots import plt, save_figure
from hydradgl.tune import space as search

BEST_CONFIG = "best.yaml"
TABLE_ROWS = 5


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def best_trials_table(trials: list, space: dict, objective: str, rows: int = TABLE_ROWS) -> Table:
    """The ``rows`` best completed trials, best first; the config as given is marked (baseline)."""
    table = Table(title=f"best trials ({objective})")
    for col in ("trial", objective, "epoch", *space):
        table.add_column(col, justify="right")
    for t in sorted(trials, key=lambda t: t.value)[:rows]:
        values = search.decode(space, t.params)
        label = f"{t.number}" + (" (baseline)" if t.user_attrs.get("baseline") else "")
        table.add_row(label, f"{t.value:.4e}", str(t.user_attrs.get("best_epoch", "")),
                      *(_fmt(values.get(k, "")) for k in space))
    return table


def write_trials_csv(path: Path, trials: list, space: dict) -> None:
    """Every trial: number, state, value, seconds, values of the searched keys, run directory."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["trial", "state", "value", "seconds", *space, "run_dir"])
    for t in trials:
        values = search.decode(space, t.params)
        writer.writerow([t.number, t.state.name.lower(), "" if t.value is None else t.value,
                         f"{t.duration.total_seconds():.1f}" if t.duration else "",
                         *(values.get(k, "") for k in space), t.user_attrs.get("run_dir", "")])
    atomic_write_text(path, buffer.getvalue())


def plot_history(trials: list, objective: str, path: Path) -> None:
    """Objective per completed trial and the best so far."""
    numbers, values = [t.number for t in trials], [t.value for t in trials]
    best = [min(values[: i + 1]) for i in range(len(values))]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.scatter(numbers, values, s=16, label="trial")
    ax.step(numbers, best, where="post", color="tab:red", label="best so far")
    ax.set(xlabel="trial", ylabel=objective, yscale="log", title="optimization history")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_importances(importances: dict[str, float], path: Path) -> None:
    """Optuna's fANOVA importance of each searched key (share of the objective's variance)."""
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(5.5, 0.5 + 0.4 * len(names)))
    ax.barh(names, [importances[n] for n in names], color="steelblue")
    ax.set(xlabel="importance", title="parameter importances")
    save_figure(fig, path)


def write_report(study, cfg: RunConfig, out_dir: Path, console: Console, results: Console,
                 quiet: bool = False) -> RunConfig | None:
    """Print the best trials, write ``trials.csv``, ``best.yaml`` and ``plots/``; the best config, or None
    when no trial completed."""
    import optuna

    say = (lambda msg: None) if quiet else (lambda msg: console.print(msg, highlight=False))
    space, objective = cfg.tune.space, cfg.tune.objective
    trials = study.get_trials(deepcopy=False)
    write_trials_csv(out_dir / "trials.csv", trials, space)
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    counts = {s: sum(t.state.name.lower() == s for t in trials) for s in ("complete", "pruned", "fail", "running")}
    say(f"{len(trials)} trials: {counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed"
        + (f", {counts['running']} running" if counts["running"] else ""))
    if not done:
        say("no trial completed: no best config")
        return None
    results.print(best_trials_table(done, space, objective))
    best = min(done, key=lambda t: t.value)
    baseline = next((t for t in done if t.user_attrs.get("baseline")), None)
    best_cfg = search.apply_values(cfg, search.decode(space, best.params), out_dir / "best")
    save_config(best_cfg, out_dir / BEST_CONFIG)
    if baseline is not None:
        results.print(f"config as given (trial {baseline.number}): {objective} {baseline.value:.4e}; "
                      f"best (trial {best.number}): {best.value:.4e}", highlight=False)
    results.print(f"best config -> {out_dir / BEST_CONFIG}; train it with "
                  f"`hydradgl train -c {out_dir / BEST_CONFIG}`", highlight=False)
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    plot_history(done, objective, plot_dir / "optimization_history.png")
    try:
        importances = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as exc:  # too few completed trials, or no parameter varied
        say(f"parameter importances not plotted: {exc}")
    else:
        if importances:
            plot_importances(importances, plot_dir / "param_importances.png")
    return best_cfg
