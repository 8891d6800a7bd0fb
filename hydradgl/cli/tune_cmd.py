"""CLI: tune (hyper-parameter search)."""

from __future__ import annotations

from pathlib import Path

import click

from hydradgl.cli.common import console, out, overrides_from_options, run_config_options
from hydradgl.configio import load_config
from hydradgl.errors import ConfigError

DEFAULT_DIR = Path("runs/tune")


@click.command()
@run_config_options
@click.option("--trials", type=click.IntRange(min=1),
              help="Finished trials the study should hold in all (tune.trials).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              help="Stop starting trials after this many seconds (tune.timeout).")
@click.option("--resume", type=click.Path(path_type=Path, file_okay=False),
              help="Continue the search in this directory (its tune.yaml and study.db); also how a further "
                   "worker process joins a running search.")
@click.pass_context
def tune(ctx: click.Context, run_options: dict, trials: int | None, timeout: float | None, resume: Path | None) -> None:
    """Search the config's `tune.space` with Optuna; the study is kept in DIR/study.db (DIR: --output, else the
    config's output_dir, else runs/tune)."""
    from hydradgl.tune.study import BASE_CONFIG, run_tune

    overrides = overrides_from_options(run_options)
    search = {k: v for k, v in (("tune.trials", trials), ("tune.timeout", timeout)) if v is not None}
    if resume is not None:
        if run_options.get("config_path") or overrides:
            raise ConfigError("--resume uses the search's own tune.yaml; only --trials and --timeout may change")
        if not (resume / BASE_CONFIG).exists():
            raise ConfigError(f"{resume}: not a tune directory (no {BASE_CONFIG})")
        cfg = load_config(resume / BASE_CONFIG, search)
        out_dir = resume
    else:
        cfg = load_config(run_options.get("config_path"), {**overrides, **search})
        out_dir = cfg.output_dir if "output_dir" in cfg.model_fields_set else DEFAULT_DIR
    run_tune(cfg, Path(out_dir), resume=resume is not None, console=console, quiet=ctx.obj["quiet"], results=out)
