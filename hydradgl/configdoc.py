"""The generated parts of docs/: the config reference, every built-in plugin's options, the module map.

Each part sits in its Markdown file between ``<!-- NAME:start ... -->`` and ``<!-- NAME:end -->`` lines
and is rendered from the code: the config reference from the pydantic models of ``hydradgl/config.py``
(docs/config.md), each built-in plugin's options table from its options model
(``options:<kind>:<name>``, docs/config.md), docs/architecture.md's tables from the module
docstrings' first paragraphs and from the plugin registry, and docs/data.md's table of the processed
cache from its schema (``cache-schema``). tests/test_docs.py checks every part is
current; after changing a model, a Field description, a module docstring or the module layout, run

    python -m hydradgl.configdoc --write

which rewrites the parts in place (``--check`` only reports the stale ones). A new built-in plugin
needs its two marker lines placed once by hand (under a heading in docs/config.md), then ``--write``.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path
from types import UnionType
from typing import Annotated, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from hydradgl.atomic import atomic_write_text
from hydradgl.config import (
    DatasetConfig,
    GraphConfig,
    HeadConfig,
    LoggerConfig,
    ModelConfig,
    ParamRange,
    RunConfig,
    SplitConfig,
    TrackingConfig,
    TrainingConfig,
    TuneConfig,
)
from hydradgl.data.store import schema_markdown
from hydradgl.plugins import BUILTIN_DISTRIBUTION, KINDS, PluginSpec, Registry, get_registry

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SOURCE_ROOTS = (ROOT / "hydradgl", ROOT / "plugins")  # plugins/ is installed as hydradgl_plugins
PLUGIN_PACKAGE = "hydradgl_plugins"

SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("dataset", DatasetConfig), ("graph", GraphConfig), ("split", SplitConfig), ("model", ModelConfig),
    ("heads[]", HeadConfig), ("training", TrainingConfig), ("tracking", TrackingConfig),
    ("tracking.loggers[]", LoggerConfig), ("tune", TuneConfig), ("tune.space.<key>", ParamRange),
]
TABLE_HEAD = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]


def _value(value):
    """A default as a config writes it: options models as the keys that differ from their defaults."""
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_defaults=True)
    if isinstance(value, dict):
        return {k: _value(v) for k, v in value.items()}
    return value


def _default(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        return ", ".join(getattr(v, "name", "…") for v in value)
    return f"`{_value(value)!r}`" if value is not None else "`null`"


def _plain(annotation) -> str:
    """A type as a reader writes it: ``Annotated[float, validators]`` is just ``float``."""
    if get_origin(annotation) is Annotated:
        return _plain(get_args(annotation)[0])
    if isinstance(annotation, type) and not get_args(annotation):
        return annotation.__name__
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, UnionType):
        return " | ".join(_plain(a) for a in args)
    if origin is Literal:
        return str(annotation).replace("typing.", "")
    if origin is not None and args:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_plain(a) for a in args)}]"
    return str(annotation).replace("typing.", "")


def _type(field) -> str:
    return _plain(field.annotation).replace("NoneType", "None").replace("|", "\\|")


def _row(key: str, field) -> str:
    description = (field.description or "").replace("|", "\\|")
    return f"| `{key}` | {_type(field)} | {_default(field)} | {description} |"


def reference_markdown() -> str:
    """The config reference: one table per section of the run configuration."""
    lines = []
    top = RunConfig.model_fields
    for name, model in SECTIONS:
        lines += [f"### `{name}`", "", *TABLE_HEAD]
        lines += [_row(key, field) for key, field in model.model_fields.items()]
        lines.append("")
    lines += ["### top level", "", "| key | default | meaning |", "| --- | --- | --- |",
              f"| `heads` | {_default(top['heads'])} | list of heads, see `heads[]` |",
              f"| `output_dir` | {_default(top['output_dir'])} | {top['output_dir'].description} |", ""]
    return "\n".join(lines)


def _nested(annotation) -> tuple[str, type[BaseModel]] | None:
    """The options model a field's values are made of, and the key step to one (``""``, ``[]``, ``.<name>``)."""
    if get_origin(annotation) is Annotated:
        return _nested(get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "", annotation
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, UnionType):
        found = [n for n in map(_nested, args) if n]
        return found[0] if len(found) == 1 else None
    if origin is list and args:
        inner = _nested(args[0])
        return (f"[]{inner[0]}", inner[1]) if inner else None
    if origin is dict and len(args) == 2:
        inner = _nested(args[1])
        return (f".<name>{inner[0]}", inner[1]) if inner else None
    return None


def _option_rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    rows = []
    for key, field in model.model_fields.items():
        rows.append(_row(prefix + key, field))
        nested = _nested(field.annotation)
        if nested:
            rows += _option_rows(nested[1], f"{prefix}{key}{nested[0]}.")
    return rows


def options_markdown(spec: PluginSpec) -> str:
    """One plugin: its description, then its options model as a table (nested models' keys dotted)."""
    description = spec.description.rstrip(".") + "."
    rows = _option_rows(spec.options)
    return "\n".join([description, "", *TABLE_HEAD, *rows, ""] if rows else [description, "", "No options.", ""])


def builtin_specs(registry: Registry) -> list[tuple[str, PluginSpec]]:
    """Every plugin the hydradgl distribution registers, as (kind, spec), by kind then name."""
    return [(kind, registry.specs[kind][name]) for kind in KINDS for name in sorted(registry.specs[kind])
            if registry.owners[(kind, name)] == BUILTIN_DISTRIBUTION]


def _source_file(module: str) -> str:
    """``hydradgl_plugins.convs.pna`` -> ``plugins/convs/pna.py`` (the repository's path)."""
    parts = module.split(".")
    if parts[0] == PLUGIN_PACKAGE:
        parts[0] = "plugins"
    return "/".join(parts) + ".py"


def plugins_markdown(registry: Registry) -> str:
    """docs/architecture.md's table of the built-in plugins: kind, name, the file that holds it, what it is."""
    lines = ["| kind | name | file | what it is |", "| --- | --- | --- | --- |"]
    for kind, spec in builtin_specs(registry):
        file = _source_file(spec.factory.__module__)
        lines.append(f"| {kind} | `{spec.name}` | `{file}` | {spec.description} |")
    return "\n".join(lines) + "\n"


_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc):`(~?)([^`]+)`")


def _markdown(rst: str) -> str:
    """Docstring markup as Markdown: ``code`` and cross-references as `code` (``~`` keeps the last name)."""
    text = _ROLE.sub(lambda m: f"`{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}`", rst)
    return text.replace("``", "`").replace("|", "\\|")


def _summary(path: Path) -> str:
    """A module docstring's first paragraph on one line, as Markdown (empty without a docstring)."""
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return _markdown(" ".join(docstring.split("\n\n")[0].split()))


def modules_markdown(roots: tuple[Path, ...] = SOURCE_ROOTS) -> str:
    """docs/architecture.md's module map: every Python file under ``roots`` and its docstring's summary."""
    lines = ["| file | what it holds |", "| --- | --- |"]
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" not in path.parts:
                lines.append(f"| `{path.relative_to(root.parent).as_posix()}` | {_summary(path)} |")
    return "\n".join(lines) + "\n"


def generated_parts(registry: Registry | None = None) -> dict[str, tuple[str, str]]:
    """Every generated part: marker name -> (file under docs/, the text between its markers)."""
    registry = registry or get_registry()
    parts = {"config-reference": ("config.md", reference_markdown()),
             "modules": ("architecture.md", modules_markdown()),
             "builtin-plugins": ("architecture.md", plugins_markdown(registry)),
             "cache-schema": ("data.md", schema_markdown())}
    for kind, spec in builtin_specs(registry):
        parts[f"options:{kind}:{spec.name}"] = ("config.md", options_markdown(spec))
    return parts


def _span(text: str, name: str) -> tuple[int, int] | None:
    """Where the text between ``name``'s start line and its end marker lies in ``text``; None without both."""
    start = re.search(rf"^<!-- {re.escape(name)}:start\b.*-->\n", text, flags=re.MULTILINE)
    end = text.find(f"<!-- {name}:end -->", start.end()) if start else -1
    return (start.end(), end) if start and end >= 0 else None


def embedded(text: str, name: str) -> str | None:
    """The text between ``name``'s markers in a document, or None where the markers are missing."""
    span = _span(text, name)
    return text[span[0]:span[1]] if span else None


def _replaced(text: str, name: str, body: str) -> str:
    span = _span(text, name)
    assert span is not None  # main replaces only parts whose markers it found
    return text[:span[0]] + body + text[span[1]:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hydradgl.configdoc", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the stale parts in place")
    parser.add_argument("--check", action="store_true", help="only report the stale parts (exit 1 if any)")
    parser.add_argument("--docs", type=Path, default=DOCS, help="the docs folder (default: %(default)s)")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        parser.error("give --write or --check")
    stale, missing = [], []
    texts: dict[str, str] = {}
    for name, (file, body) in generated_parts().items():
        text = texts.setdefault(file, (args.docs / file).read_text(encoding="utf-8"))
        current = embedded(text, name)
        if current is None:
            missing.append(f"{file}: no <!-- {name}:start --> ... <!-- {name}:end --> lines; place them by hand")
        elif current != body:
            stale.append(f"{file}: {name}")
            texts[file] = _replaced(text, name, body)
    if args.write:
        for file in sorted({s.split(":")[0] for s in stale}):
            atomic_write_text(args.docs / file, texts[file])
    for line in stale:
        print(("rewrote " if args.write else "stale: ") + line)
    for line in missing:
        print(line, file=sys.stderr)
    return 1 if missing or (stale and not args.write) else 0


if __name__ == "__main__":
    sys.exit(main())
