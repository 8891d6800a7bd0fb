"""Loading, overriding, validating and saving run configurations, with errors that name the key."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from hydradgl.atomic import atomic_write_text
from hydradgl.config import HeadConfig, RunConfig
from hydradgl.errors import ConfigError


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that holds the key at ``loc`` (for suggestions), if it can be found."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return None
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        candidates = [a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not candidates:
            return None
        current = candidates[0]
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def format_validation_error(exc: ValidationError, model: type[BaseModel], prefix: str = "", source: str = "") -> str:
    """One line per problem: ``key.path: what is wrong`` plus a suggestion for misspelled keys."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")
        path = f"{prefix}.{path}" if prefix and path else (prefix or path)
        if err["type"] == "extra_forbidden":
            owner = _model_at(model, loc)
            known = sorted(owner.model_fields) if owner else []
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else (f"; valid keys: {', '.join(known)}" if known else "")
            lines.append(f"{path}: unknown key{hint}")
        else:
            given = err.get("input")
            shown = f" (got {given!r})" if not isinstance(given, (dict, list)) else ""
            lines.append(f"{path}: {err['msg']}{shown}")
    where = f" in {source}" if source else ""
    return f"invalid configuration{where}:\n  " + "\n  ".join(lines)


def parse_options(model: type[BaseModel], values: dict[str, Any], key_path: str, plugin: str = "") -> BaseModel:
    """Validate a plugin's options dict with the plugin's own model; ConfigError names ``key_path.<key>``."""
    try:
        return model.model_validate(values or {})
    except ValidationError as exc:
        message = format_validation_error(exc, model, prefix=key_path)
        if plugin:
            message = message.replace("invalid configuration", f"invalid options for plugin {plugin!r}", 1)
        raise ConfigError(message) from None


def read_file(path: Path) -> dict[str, Any]:
    """A YAML or JSON mapping from ``path``; ConfigError names the file (and line) when it does not parse."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections, got {type(data).__name__}")
    return data


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """``set_dotted(d, "training.epochs", 5)`` sets ``d["training"]["epochs"]``."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def select_heads(data: dict[str, Any], names: list[str]) -> None:
    """Keep (in the given order) the heads of ``names``: configured ones as configured, new ones default."""
    configured = {h["name"]: h for h in data.get("heads") or [] if isinstance(h, dict) and "name" in h}
    if not configured and "heads" not in data:
        configured = {h.name: h.model_dump() for h in RunConfig().heads}
    data["heads"] = [configured.get(n, {"name": n}) for n in names]


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Config from a YAML/JSON file (or defaults), with dotted-key overrides applied on top."""
    data = read_file(path) if path is not None else {}
    for key, value in (overrides or {}).items():
        if key == "heads" and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            select_heads(data, list(value))
        else:
            set_dotted(data, key, value)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, RunConfig, source=str(path) if path else "")) from None


def dump_config(cfg: RunConfig) -> str:
    """The config as YAML (paths as strings, tuples as lists)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def save_config(cfg: RunConfig, path: Path) -> None:
    atomic_write_text(path, dump_config(cfg))


def head_kind(head: HeadConfig, level: str) -> str:
    """The head plugin of ``head``: its explicit ``kind``, else graph-head or node-head by the target level."""
    return head.kind or f"{level}-head"


def validate_plugin_options(cfg: RunConfig, registry) -> None:
    """Fail fast, before any data is read: every named plugin exists and its options parse.

    Heads without an explicit ``kind`` are checked when the model is built (their kind follows the
    dataset target's level).
    """
    dataset = registry.dataset(cfg.dataset.name)
    parse_options(dataset.options, cfg.dataset.options, "dataset.options", plugin=dataset.name)
    conv = registry.conv(cfg.model.conv)
    parse_options(conv.options, cfg.model.conv_options, "model.conv_options", plugin=conv.name)
    for i, head in enumerate(cfg.heads):
        if head.kind is not None:
            spec = registry.head(head.kind)
            parse_options(spec.options, head.options, f"heads[{i}].options", plugin=spec.name)
