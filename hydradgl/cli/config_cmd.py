"""CLI: config show / config schema."""

from __future__ import annotations

import json

import click

from hydradgl.cli.common import config_from_options, run_config_options
from hydradgl.config import RunConfig
from hydradgl.configio import dump_config, validate_plugin_options
from hydradgl.plugins import get_registry


@click.group()
def config() -> None:
    """Inspect configurations."""


@config.command("show")
@run_config_options
def show(run_options: dict) -> None:
    """Print the resolved configuration (file + flags), validated, as YAML."""
    cfg = config_from_options(run_options)
    validate_plugin_options(cfg, get_registry())
    click.echo(dump_config(cfg), nl=False)


@config.command("schema")
@click.option("--markdown", is_flag=True, help="The key reference as Markdown tables (docs/config.md).")
def schema(markdown: bool) -> None:
    """Print the JSON schema of the run configuration."""
    if markdown:
        from hydradgl.configdoc import reference_markdown

        click.echo(reference_markdown(), nl=False)
        return
    click.echo(json.dumps(RunConfig.model_json_schema(), indent=2))
