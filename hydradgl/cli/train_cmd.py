"""CLI: train, evaluate, predict, experiment."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hydradgl.cli.app import main
from hydradgl.cli.common import config_from_options, console, out, overrides_from_options, run_config_options
from hydradgl.configio import load_config
from hydradgl.errors import ConfigError


@main.command()
@run_config_options
@click.option("--resume", type=click.Path(path_type=Path, file_okay=False),
              help="Continue the run in this directory from its last checkpoint.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@click.option("--overwrite", is_flag=True, help="Replace the run already in the run directory (else refused).")
@click.pass_context
def train(ctx: click.Context, run_options: dict, resume: Path | None, no_plots: bool, overwrite: bool) -> None:
    """Train a multi-task model (default: the paper's PNA model, heads H,C,M, on the built-in FePt data)."""
    from hydradgl.train.run import train_run

    if resume is not None:
        if run_options.get("config_path"):
            raise ConfigError("--resume uses the run's own config.yaml; do not combine it with --config")
        overrides = overrides_from_options(run_options)
        unsafe = sorted(k for k in overrides if k != "training.epochs")
        if unsafe:
            raise ConfigError(f"--resume can only change training.epochs, not {', '.join(unsafe)}")
        cfg = load_config(resume / "config.yaml", {**overrides, "output_dir": str(resume)})
    else:
        cfg = config_from_options(run_options)
    if resume is not None and overwrite:
        raise ConfigError("--resume continues the run in place; --overwrite would delete it: give one of them")
    train_run(cfg, resume=resume, console=console, quiet=ctx.obj["quiet"], plots_enabled=not no_plots,
              overwrite=overwrite)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--config", "-c", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Evaluate on the test split of this config's dataset instead of the run's own.")
@click.option("--json", "as_json", is_flag=True, help="Print metrics as JSON.")
def evaluate(run_dir: Path, config_path: Path | None, as_json: bool) -> None:
    """Test metrics (RMSE and MAE, normalized and physical) of a saved run."""
    from hydradgl.train.run import metrics_table
    from hydradgl.train.saved import evaluate_run, load_run

    run = load_run(run_dir)
    metrics = evaluate_run(run, load_config(config_path) if config_path else None)
    units = {h: run.info.targets[t].unit for h, t in run.model.head_targets.items()}
    if as_json:
        out.print_json(json.dumps(metrics))
    else:
        out.print(metrics_table(metrics, units))


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="CSV of per-structure predictions; per-atom ones go beside it as <name>.atoms.csv.")
def predict(run_dir: Path, inputs: tuple[Path, ...], output: Path) -> None:
    """Predict LSMS or extxyz files (or folders of them) with a saved run, in physical units."""
    from hydradgl.train.saved import load_run, predict as run_predict, write_csv

    run = load_run(run_dir)
    structures, atoms = run_predict(run, list(inputs))
    write_csv(output, structures)
    atoms_path = output.with_name(output.stem + ".atoms.csv")
    write_csv(atoms_path, atoms)
    console.print(f"{len(structures)} structures -> {output}; {len(atoms)} atoms -> {atoms_path}")


@main.command()
@run_config_options
@click.option("--seeds", type=click.IntRange(min=1), default=12, show_default=True,
              help="Runs per head set (paper: 12).")
@click.option("--head-sets", default="HCM,HC,HM,CM,H,C,M", show_default=True,
              help="Comma-separated head sets; a set is its head names joined by '+' or, for one-letter names, written together.")
@click.option("--overwrite", is_flag=True, help="Replace runs already in the experiment's folders (else refused).")
@click.pass_context
def experiment(ctx: click.Context, run_options: dict, seeds: int, head_sets: str, overwrite: bool) -> None:
    """The paper's MTL-vs-STL comparison: an ensemble per head set, mean +- std of test RMSE (Table 1).

    Runs go under output_dir (from -o, --set or the config file; default runs/experiment)."""
    from hydradgl.train.experiment import parse_head_sets, run_experiment

    cfg = config_from_options(run_options)
    if "output_dir" not in cfg.model_fields_set:  # not given anywhere: not the single runs' runs/latest
        cfg.output_dir = Path("runs/experiment")
    run_experiment(cfg, parse_head_sets(head_sets), seeds, console=console, quiet=ctx.obj["quiet"],
                   overwrite=overwrite)
