"""CLI: list-plugins."""

from __future__ import annotations

import json

import click
from rich.table import Table

from hydradgl.cli.common import out
from hydradgl.plugins import KINDS, ConvSpec, HeadSpec, Registry, get_registry


def plugins_as_dict(registry: Registry) -> dict:
    """Machine-readable view: every distribution and every registered plugin."""
    distributions = [
        {"name": d.name, "version": d.version, "builtin": d.builtin, "status": "broken" if d.broken else "ok",
         "errors": d.errors, "provides": {k: sorted(v) for k, v in d.provides.items() if v}}
        for d in sorted(registry.distributions.values(), key=lambda d: (not d.builtin, d.name))
    ]
    plugins = [
        {"kind": kind, "name": name, "description": spec.description, "distribution": registry.owners[(kind, name)],
         **({"level": spec.level} if isinstance(spec, HeadSpec) else {}),
         **({"traits": conv_traits(spec)} if isinstance(spec, ConvSpec) else {}),
         "conflict": sorted(registry.conflicts.get((kind, name), []))}
        for kind in KINDS for name, spec in sorted(registry.specs[kind].items())
    ]
    return {"distributions": distributions, "plugins": plugins}


def conv_traits(spec: ConvSpec) -> list[str]:
    """What a conv's class declares, in words (options may narrow some per layer: docs/plugins.md)."""
    t = spec.traits
    words = [label for flag, label in ((t.reads_edge_features or t.needs_geometry, "distance-aware"),
                                       (t.smooth_at_cutoff, "smooth at cutoff"), (t.equivariant, "equivariant"),
                                       (t.uses_extrema, "extrema"))
             if flag]
    return [*words, "kernels: " + ", ".join(t.kernels)]


@click.command("list-plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_plugins(as_json: bool) -> None:
    """Every plugin distribution (built-in and external) and what it provides."""
    data = plugins_as_dict(get_registry())
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    dists = Table(title="plugin distributions")
    for col in ("distribution", "version", "origin", "provides", "status"):
        dists.add_column(col)
    for d in data["distributions"]:
        provides = "; ".join(f"{k}: {', '.join(v)}" for k, v in d["provides"].items()) or "—"
        status = "[green]ok[/]" if d["status"] == "ok" else "[red]broken[/]: " + " | ".join(d["errors"])
        dists.add_row(d["name"], d["version"], "built-in" if d["builtin"] else "external", provides, status)
    plugins = Table(title="plugins")
    for col in ("kind", "name", "description", "from"):
        plugins.add_column(col)
    for p in data["plugins"]:
        source = p["distribution"] + (f" [red](conflict: {', '.join(p['conflict'])})[/]" if p["conflict"] else "")
        traits = f" [dim]({'; '.join(p['traits'])})[/]" if "traits" in p else ""
        plugins.add_row(p["kind"], p["name"], p["description"] + traits, source)
    out.print(dists)
    out.print(plugins)
