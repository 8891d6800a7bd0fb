"""CLI: train, evaluate, predict, experiment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import click

from hydradgl.cli.common import config_from_options, console, out, overrides_from_options, run_config_options
from hydradgl.cli.reporting import ConsoleReporter, metrics_table, uncertainty_table
from hydradgl.configio import load_config
from hydradgl.errors import ConfigError


@click.command()
@run_config_options
@click.option("--resume", type=click.Path(path_type=Path, file_okay=False),
              help="Continue the run in this directory from its last checkpoint.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@click.option("--overwrite", is_flag=True, help="Replace the run already in the run directory (else refused).")
@click.option("--ensemble", type=int, metavar="N",
              help="Train N members (seeds seed..seed+N-1) into <output>/member-k, for predictions with uncertainty.")
@click.option("--bootstrap", is_flag=True,
              help="With --ensemble: each member trains on a bootstrap resample of the training split.")
@click.pass_context
def train(ctx: click.Context, run_options: dict, resume: Path | None, no_plots: bool, overwrite: bool,
          ensemble: int | None, bootstrap: bool) -> None:
    """Train a multi-task model (default: the paper's PNA model, heads H,C,M, on the built-in FePt data)."""
    from hydradgl.train.run import train_run

    if bootstrap and ensemble is None:
        raise ConfigError("--bootstrap resamples the members of an ensemble: give --ensemble N too")
    if resume is not None:
        if ensemble is not None:
            raise ConfigError("--resume continues one run; it cannot be combined with --ensemble")
        if run_options.get("config_path"):
            raise ConfigError("--resume uses the run's own config.yaml; do not combine it with --config")
        overrides = overrides_from_options(run_options)
        unsafe = sorted(k for k in overrides if k not in ("training.epochs", "training.max_minutes"))
        if unsafe:
            raise ConfigError(f"--resume can only change training.epochs and training.max_minutes, "
                              f"not {', '.join(unsafe)}")
        cfg = load_config(resume / "config.yaml", {**overrides, "output_dir": str(resume)})
    else:
        cfg = config_from_options(run_options)
    if resume is not None and overwrite:
        raise ConfigError("--resume continues the run in place; --overwrite would delete it: give one of them")
    if ensemble is not None:
        from hydradgl.train.ensemble import train_ensemble

        train_ensemble(cfg, ensemble, bootstrap, reporter=ConsoleReporter(console), quiet=ctx.obj["quiet"],
                       plots_enabled=not no_plots, overwrite=overwrite)
        return
    train_run(cfg, resume=resume, reporter=ConsoleReporter(console), quiet=ctx.obj["quiet"],
              plots_enabled=not no_plots, overwrite=overwrite)


CHECKPOINT_OPTION = click.option(
    "--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True,
    help="Which model of the run: best.pt (lowest validation loss; last.pt if there is none) or last.pt.")


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--config", "-c", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Evaluate on the test split of this config's dataset instead of the run's own (read with the "
                   "model's elements, graph settings and normalization; heads whose target it lacks are skipped).")
@CHECKPOINT_OPTION
@click.option("--per-structure", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write one CSV row per test structure: graph heads' true and predicted values, "
                   "node heads' RMSE over the structure's atoms (physical units).")
@click.option("--json", "as_json", is_flag=True,
              help="Print metrics as JSON (with unit and level per head, and the errors as the table shows them).")
@click.option("--no-plots", is_flag=True, help="Ensembles: skip the uncertainty plots.")
def evaluate(run_dir: Path, config_path: Path | None, checkpoint: Literal["best", "last"], per_structure: Path | None,
             as_json: bool, no_plots: bool) -> None:
    """Test metrics of a saved run (RMSE and MAE, normalized and physical: a potential's energy per atom in
    meV/atom, forces in meV/A, stress in GPa); for an ensemble, its uncertainty metrics and calibration
    (docs/api.md)."""
    from hydradgl.atomic import atomic_write_csv, atomic_write_text
    from hydradgl.train.rundir import member_dirs
    from hydradgl.train.saved import evaluate_saved, load_run

    cfg = load_config(config_path) if config_path else None
    if len(member_dirs(run_dir)) > 1:
        from hydradgl.api import evaluate_ensemble, load

        plots = None if no_plots else run_dir / "plots"
        metrics = evaluate_ensemble(load(run_dir), cfg, plots_dir=plots)
        atomic_write_text(run_dir / "ensemble_metrics.json", json.dumps(metrics, indent=2) + "\n")
        if as_json:
            out.print_json(json.dumps(metrics))
        else:
            out.print(uncertainty_table(metrics))
        if plots is not None:
            console.print(f"plots in {plots}: uncertainty_<head>.png, calibration_<head>.png")
        return
    run = load_run(run_dir, checkpoint=checkpoint)
    result = evaluate_saved(run, cfg, per_structure=per_structure is not None)
    for head, why in result.skipped.items():
        console.print(f"head {head} not evaluated: {why}")
    if per_structure is not None:
        atomic_write_csv(per_structure, result.structures)
        console.print(f"{len(result.structures)} test structures -> {per_structure}")
    if as_json:
        out.print_json(json.dumps(result.metrics))
    else:
        out.print(metrics_table(result.metrics))


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="CSV of per-structure predictions; per-atom ones go beside it as <name>.atoms.csv.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Structures per batch.")
def predict(run_dir: Path, inputs: tuple[Path, ...], output: Path, device: str, batch_size: int) -> None:
    """Predict LSMS or extxyz files (or folders of them) with a saved run or ensemble, in physical units
    (a potential's forces per atom, its stress per structure, included)."""
    from hydradgl.api import load
    from hydradgl.atomic import atomic_write_text

    result = load(run_dir, device=device).predict(list(inputs), batch_size=batch_size)
    atoms_path = output.with_name(output.stem + ".atoms.csv")
    atomic_write_text(output, result.structures.to_csv(index=False))
    atomic_write_text(atoms_path, result.atoms.to_csv(index=False))
    console.print(f"{len(result.structures)} structures -> {output}; {len(result.atoms)} atoms -> {atoms_path}")


@click.command()
@run_config_options
@click.option("--seeds", type=click.IntRange(min=1), default=12, show_default=True,
              help="Runs per head set (paper: 12).")
@click.option("--head-sets", default="HCM,HC,HM,CM,H,C,M", show_default=True,
              help="Comma-separated head sets; a set is its head names joined by '+' or, for one-letter names, "
                   "written together.")
@click.option("--overwrite", is_flag=True, help="Replace runs already in the experiment's folders (else refused).")
@click.pass_context
def experiment(ctx: click.Context, run_options: dict, seeds: int, head_sets: str, overwrite: bool) -> None:
    """The paper's MTL-vs-STL comparison: an ensemble per head set, mean +- std of test RMSE (Table 1).

    Runs go under output_dir (from -o, --set or the config file; default runs/experiment)."""
    from hydradgl.train.experiment import parse_head_sets, run_experiment

    cfg = config_from_options(run_options)
    if "output_dir" not in cfg.model_fields_set:  # not given anywhere: not the single runs' runs/latest
        cfg.output_dir = Path("runs/experiment")
    run_experiment(cfg, parse_head_sets(head_sets), seeds, reporter=ConsoleReporter(console), quiet=ctx.obj["quiet"],
                   overwrite=overwrite)
