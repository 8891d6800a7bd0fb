"""The root click group; it gathers the commands defined in the sibling modules."""

from __future__ import annotations

import click

from hydradgl import __version__
from hydradgl.cli.common import CleanErrorsGroup, console
from hydradgl.cli.config_cmd import config
from hydradgl.cli.data_cmd import data
from hydradgl.cli.model_cmd import model
from hydradgl.cli.plugins_cmd import list_plugins
from hydradgl.cli.train_cmd import evaluate, experiment, predict, train
from hydradgl.cli.tune_cmd import tune


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


for command in (config, data, model, list_plugins, train, evaluate, predict, experiment, tune):
    main.add_command(command)
