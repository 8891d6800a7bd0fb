"""What every command shares: the console, clean user errors, and the run-config flags."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from hydradgl.config import RunConfig
from hydradgl.configio import format_validation_error, load_config, parse_set_value
from hydradgl.errors import ConfigError, HydraError

console = Console(stderr=True, soft_wrap=True)  # logs and progress (silenced by --quiet); results go to stdout
errors = Console(stderr=True, soft_wrap=True)  # error messages: shown even with --quiet
out = Console()


@contextlib.contextmanager
def user_errors(debug: bool = False) -> Iterator[None]:
    """Turn a user's mistake (HydraError, or a pydantic ValidationError that leaked) into a short red
    message on stderr and exit status 1; with ``debug`` re-raise it so the traceback shows.
    Usable as ``with user_errors(debug):`` or as a decorator ``@user_errors()``."""
    try:
        yield
    except (HydraError, ValidationError, OSError, UnicodeDecodeError) as exc:
        if debug:
            raise
        errors.print(f"[bold red]error:[/] {escape(error_line(exc))}", highlight=False)
        raise SystemExit(1) from None


def error_line(exc: HydraError | ValidationError | OSError | UnicodeDecodeError) -> str:
    """The message of a user error; an OSError (read-only folder, full disk, a file where a folder
    should be) names its path, since those are the user's to fix too."""
    if isinstance(exc, HydraError):
        return str(exc)
    if isinstance(exc, ValidationError):
        return format_validation_error(exc, RunConfig)
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({exc.reason} at byte {exc.start}); run with --debug to see which"
    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    return f"{paths or 'a file operation'}: {exc.strerror or exc}"


class CleanErrorsGroup(click.Group):
    """Runs every subcommand inside :func:`user_errors`, so each gets clean errors and ``--debug``."""

    def invoke(self, ctx: click.Context) -> Any:
        with user_errors(debug=bool(ctx.params.get("debug") or (ctx.obj or {}).get("debug"))):
            return super().invoke(ctx)


def _parse_set(values: tuple[str, ...]) -> dict[str, Any]:
    overrides = {}
    for item in values:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set training.lr=0.0005")
        key, raw = item.split("=", 1)
        overrides[key.strip()] = parse_set_value(raw)
    return overrides


DATA_OPTIONS: list[Callable] = [
    click.option("--config", "-c", "config_path", type=click.Path(path_type=Path, dir_okay=False),
                 help="YAML or JSON run configuration; flags below override it."),
    click.option("--dataset", help="Dataset plugin name."),
    click.option("--heads", help="Comma-separated head names, e.g. H,C,M (the targets they predict are the ones "
                                 "the dataset must provide)."),
    click.option("--set", "set_values", multiple=True, metavar="KEY=VALUE",
                 help="Override any config key, e.g. --set model.hidden=32 (repeatable)."),
]
TRAINING_OPTIONS: list[Callable] = [
    click.option("--conv", help="Conv layer plugin name (e.g. pna, sage, cgcnn)."),
    click.option("--epochs", type=int, help="Maximum number of epochs."),
    click.option("--max-minutes", type=float, help="Training-time budget in minutes (stops after the epoch that "
                 "reaches it)."),
    click.option("--batch-size", type=int, help="Graphs per batch (per process)."),
    click.option("--lr", type=float, help="Learning rate."),
    click.option("--seed", type=int, help="Training seed."),
    click.option("--device", help="auto, cpu, cuda or cuda:N."),
    click.option("--kernels", type=click.Choice(["auto", "dgl", "torch"]),
                 help="Message-passing kernels: auto (dgl where DGL supports the device, else torch), dgl, torch."),
    click.option("--output", "-o", type=click.Path(path_type=Path, file_okay=False), help="Run directory."),
]

FLAG_KEYS = {"dataset": "dataset.name", "conv": "model.conv", "epochs": "training.epochs",
             "max_minutes": "training.max_minutes",
             "batch_size": "training.batch_size", "lr": "training.lr", "seed": "training.seed",
             "device": "training.device", "kernels": "training.kernels", "output": "output_dir"}


def _config_options(options: list[Callable]) -> Callable[[Callable], Callable]:
    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            names = ["config_path", "set_values", "heads", *FLAG_KEYS]
            kwargs["run_options"] = {k: kwargs.pop(k, None) for k in names}
            return command(*args, **kwargs)

        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate


#: Every run-config flag; the command receives ``run_options`` (a dict) to pass to config_from_options.
run_config_options = _config_options(DATA_OPTIONS + TRAINING_OPTIONS)
#: Only the flags that change what data is read (for ``data prepare``/``data info``).
data_config_options = _config_options(DATA_OPTIONS)


def overrides_from_options(run_options: dict[str, Any]) -> dict[str, Any]:
    """Dotted-key overrides from the flags that were given (the config file is not included)."""
    overrides = {key: run_options[flag] for flag, key in FLAG_KEYS.items() if run_options.get(flag) is not None}
    if run_options.get("heads"):
        names = [n.strip() for n in run_options["heads"].split(",") if n.strip()]
        if not names:
            raise ConfigError("--heads: expected comma-separated head names, e.g. H,C,M")
        overrides["heads"] = names
    given = _parse_set(run_options.get("set_values") or ())
    clash = sorted(set(given) & set(overrides))
    if clash:
        flags = {**{key: flag for flag, key in FLAG_KEYS.items()}, "heads": "heads"}
        raise ConfigError(f"--set {clash[0]} and --{flags[clash[0]].replace('_', '-')} both set {clash[0]}; "
                          "give it once")
    overrides.update(given)
    return overrides


def config_from_options(run_options: dict[str, Any]) -> RunConfig:
    return load_config(run_options.get("config_path"), overrides_from_options(run_options))
