"""The config reference in Markdown, generated from the pydantic models (docs/config.md embeds it)."""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from hydradgl.config import (DatasetConfig, GraphConfig, HeadConfig, LoggerConfig, ModelConfig, ParamRange,
                             RunConfig, SplitConfig, TrackingConfig, TrainingConfig, TuneConfig)

SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("dataset", DatasetConfig), ("graph", GraphConfig), ("split", SplitConfig), ("model", ModelConfig),
    ("heads[]", HeadConfig), ("training", TrainingConfig), ("tracking", TrackingConfig),
    ("tracking.loggers[]", LoggerConfig), ("tune", TuneConfig), ("tune.space.<key>", ParamRange),
]


def _default(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        return ", ".join(getattr(v, "name", "…") for v in value)
    return f"`{value!r}`" if value is not None else "`null`"


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


def reference_markdown() -> str:
    lines = []
    top = RunConfig.model_fields
    for name, model in SECTIONS:
        lines += [f"### `{name}`", "", "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for key, field in model.model_fields.items():
            lines.append(f"| `{key}` | {_type(field)} | {_default(field)} | {field.description or ''} |")
        lines.append("")
    lines += ["### top level", "", "| key | default | meaning |", "| --- | --- | --- |",
              f"| `heads` | {_default(top['heads'])} | list of heads, see `heads[]` |",
              f"| `output_dir` | {_default(top['output_dir'])} | {top['output_dir'].description} |", ""]
    return "\n".join(lines)
