"""CLI: model summary."""

from __future__ import annotations

import click
from rich.table import Table

from hydradgl.cli.common import config_from_options, out, run_config_options


@click.group()
def model() -> None:
    """Inspect models."""


@model.command("summary")
@run_config_options
def summary(run_options: dict) -> None:
    """Parameter counts per block for a config, without training (reads the dataset's cached statistics)."""
    from hydradgl.data.pipeline import prepare_data
    from hydradgl.model.assembler import build_model
    from hydradgl.model.summary import parameter_blocks

    cfg = config_from_options(run_options)
    built = build_model(cfg, prepare_data(cfg).info)
    table = Table(title=f"{cfg.model.conv} x{cfg.model.layers}, width {cfg.model.hidden}")
    table.add_column("block")
    table.add_column("parameters", justify="right")
    rows = parameter_blocks(built)
    for name, n in rows:
        table.add_row(name, f"{n:,}")
    table.add_row("[bold]total[/]", f"[bold]{sum(n for _, n in rows):,}[/]")
    out.print(table)
