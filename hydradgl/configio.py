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
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start}: {exc.reason}); "
                          "a config is YAML or JSON text") from None
    try:
        data = json.loads(text, object_pairs_hook=_unique_json_keys) if path.suffix == ".json" else \
            yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506  (a SafeLoader subclass)
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}{exc.where}: key {exc.key!r} appears twice in one mapping; "
                          "keep one (YAML would silently drop the first)") from None
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


class DuplicateKeyError(ValueError):
    def __init__(self, key: str, where: str = ""):
        super().__init__(key)
        self.key, self.where = key, where


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key repeated in one mapping is an error, not a silent overwrite."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DuplicateKeyError(str(key), f":{key_node.start_mark.line + 1}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _unique_json_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    repeated = next((k for k in keys if keys.count(k) > 1), None)
    if repeated is not None:
        raise DuplicateKeyError(repeated)
    return dict(pairs)


def parse_set_value(raw: str) -> Any:
    """A ``--set`` value as YAML (``32``, ``[50, 25]``, ``null``), or the raw string when it is not valid
    YAML (``*.xyz``, ``[1,2``): the config's own validation then says what the key expects."""
    try:
        return yaml.load(raw, Loader=UniqueKeyLoader)  # noqa: S506  (a SafeLoader subclass)
    except (yaml.YAMLError, DuplicateKeyError):
        return raw


def _child(node: Any, part: str, key: str) -> tuple[Any, Any]:
    """The slot ``part`` names in ``node`` (a dict key, a list index, or a head name in a list of heads)."""
    if isinstance(node, dict):
        return node, part
    if isinstance(node, list):
        if part.lstrip("-").isdigit():
            index = int(part)
            if not -len(node) <= index < len(node):
                raise ConfigError(f"{key}: index {index} is out of range (the list has {len(node)} entries)")
            return node, index
        named = [i for i, item in enumerate(node) if isinstance(item, dict) and item.get("name") == part]
        if named:
            return node, named[0]
        names = [item["name"] for item in node if isinstance(item, dict) and "name" in item]
        raise ConfigError(f"{key}: no entry named {part!r} (entries: {', '.join(names) or 'none'}; "
                          "or give an index, e.g. heads.0.layers)")
    raise ConfigError(f"{key}: {part!r} is inside a value, not a section")


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """``set_dotted(d, "training.epochs", 5)`` sets ``d["training"]["epochs"]``; list entries are reached
    by index or, for entries with a ``name`` (heads), by name: ``heads.0.layers`` or ``heads.H.layers``."""
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"{key}: empty key part; expected dotted keys like training.epochs")
    if parts[0] == "heads" and len(parts) > 1 and "heads" not in data:
        data["heads"] = [h.model_dump(mode="json", exclude_defaults=True) for h in RunConfig().heads]
    node: Any = data
    for part in parts[:-1]:
        owner, slot = _child(node, part, key)
        if isinstance(owner, dict):
            owner.setdefault(slot, {})
        if not isinstance(owner[slot], (dict, list)):
            raise ConfigError(f"{key}: {part!r} is not a section")
        node = owner[slot]
    owner, slot = _child(node, parts[-1], key)
    owner[slot] = value


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


def resolve_plugin_options(cfg: RunConfig, registry, levels: dict[str, str]) -> RunConfig:
    """``cfg`` with every plugin's options complete (defaults written out) and every head's kind named,
    as a run saves it: a later change of a plugin's defaults then cannot change what a saved run builds.
    ``levels``: target name -> graph/node (the dataset's), which decides a head's default kind."""
    def complete(spec, values: dict[str, Any], key_path: str) -> dict[str, Any]:
        return parse_options(spec.options, values, key_path, plugin=spec.name).model_dump(mode="json")

    heads = []
    for i, head in enumerate(cfg.heads):
        spec = registry.head(head_kind(head, levels[head.target_name]))
        heads.append(head.model_copy(update={"kind": spec.name,
                                             "options": complete(spec, head.options, f"heads[{i}].options")}))
    dataset = complete(registry.dataset(cfg.dataset.name), cfg.dataset.options, "dataset.options")
    conv = complete(registry.conv(cfg.model.conv), cfg.model.conv_options, "model.conv_options")
    return cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"options": dataset}),
                                  "model": cfg.model.model_copy(update={"conv_options": conv}), "heads": heads})


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
