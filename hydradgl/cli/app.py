"""The root click group; it only gathers the commands defined in the sibling modules."""

from __future__ import annotations

import click

from hydradgl import __version__
from hydradgl.cli.common import CleanErrorsGroup, console


@click.group(cls=CleanErrorsGroup)
@click.version_option(__version__, prog_name="hydradgl")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.option("--quiet", "-q", is_flag=True, help="Only warnings, errors and final results.")
@click.pass_context
def main(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """Multi-task graph neural networks for atomistic data, built on DGL."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    ctx.obj["quiet"] = quiet
    console.quiet = quiet  # logs off; results (stdout) and errors stay


# Command modules attach their commands to `main` when imported.
from hydradgl.cli import config_cmd, data_cmd, model_cmd, plugins_cmd, train_cmd, tune_cmd  # noqa: E402,F401
