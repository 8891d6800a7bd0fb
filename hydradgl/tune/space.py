"""The search space of ``tune.space``: trial values from Optuna, and the run config a set of values gives.

Keys are dotted like ``--set`` (``model.hidden``, ``training.lr``, ``graph.radius``); a head's key names the
head by position or by name (``heads.0.alpha``, ``heads[0].alpha``, ``heads.H.alpha``). Categorical choices
that are lists or mappings (``heads.0.layers: [[50, 25], [64, 32]]``) are stored in the study as JSON text.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from hydradgl.config import ParamRange, RunConfig
from hydradgl.configio import load_config, set_dotted
from hydradgl.errors import ConfigError

HEAD_KEY = re.compile(r"^heads(?:\[([^\]]+)\]|\.([^.]+))\.(.+)$")


def _structured(param: ParamRange) -> bool:
    return param.type == "categorical" and any(isinstance(c, (list, dict)) for c in param.choices or [])


def encode_choice(param: ParamRange, value: Any) -> Any:
    """A categorical value as Optuna stores it (lists and mappings as JSON text)."""
    return json.dumps(value) if _structured(param) else value


def decode(space: dict[str, ParamRange], params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's stored values back as config values."""
    return {k: json.loads(v) if k in space and _structured(space[k]) else v for k, v in params.items()}


def suggest(trial: Any, space: dict[str, ParamRange]) -> dict[str, Any]:
    """One value per searched key from an ``optuna.Trial``, as config values."""
    values = {}
    for key, p in space.items():
        if p.type == "float":
            values[key] = trial.suggest_float(key, p.low, p.high, log=p.log, step=p.step)
        elif p.type == "int":
            low, high = p.bounds
            values[key] = trial.suggest_int(key, int(low), int(high), log=p.log, step=int(p.step or 1))
        else:
            values[key] = trial.suggest_categorical(key, [encode_choice(p, c) for c in p.choices or []])
    return decode(space, values)


def _head_index(key: str, heads: list[dict[str, Any]]) -> tuple[int, str] | None:
    """``heads.1.alpha`` / ``heads[1].alpha`` / ``heads.M.alpha`` -> (1, "alpha"); None for other keys."""
    match = HEAD_KEY.match(key)
    if match is None:
        return None
    ref, rest = match.group(1) or match.group(2), match.group(3)
    names = [h.get("name") for h in heads]
    if ref.isdigit() and int(ref) < len(heads):
        return int(ref), rest
    if ref in names:
        return names.index(ref), rest
    raise ConfigError(f"tune.space.{key}: no head {ref!r}; the config's heads are {', '.join(map(str, names))} "
                      f"(positions 0-{len(heads) - 1})")


def get_value(cfg: RunConfig, key: str) -> Any:
    """The config's current value at a searched key (KeyError when the key does not exist)."""
    node: Any = cfg.model_dump(mode="json")
    head = _head_index(key, node["heads"])
    if head is not None:
        node, key = node["heads"][head[0]], head[1]
    for part in key.split("."):
        node = node[part]
    return node


def apply_values(base: RunConfig, values: dict[str, Any], output_dir: Path) -> RunConfig:
    """The base config with a trial's values set (through :func:`set_dotted`) and its own run directory."""
    data = copy.deepcopy(base.model_dump(mode="json"))
    for key, value in values.items():
        head = _head_index(key, data["heads"])
        if head is not None:
            set_dotted(data["heads"][head[0]], head[1], value)
        else:
            set_dotted(data, key, value)
    data["output_dir"] = str(output_dir)
    try:
        return load_config(None, data)
    except ConfigError as exc:
        shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
        raise ConfigError(f"tune.space: the values {shown} do not give a valid config: {exc}") from None


def probe_values(param: ParamRange) -> list[Any]:
    """The extremes of a range (or every choice): values that must all give a valid config."""
    if param.type == "categorical":
        return list(param.choices or [])
    cast = int if param.type == "int" else float
    low, high = param.bounds
    return [cast(low), cast(high)]


def check_space(cfg: RunConfig) -> None:
    """Fail before any trial runs: an empty space, a key the config lacks, a range end the config refuses,
    an objective head that is not configured, no validation split."""
    space, tune = cfg.tune.space, cfg.tune
    if not space:
        raise ConfigError("tune.space is empty: nothing to search. Give keys with ranges, e.g.\n"
                          "  tune:\n    space:\n      training.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}")
    for key, param in space.items():
        try:
            get_value(cfg, key)
        except (KeyError, TypeError, IndexError):
            raise ConfigError(f"tune.space.{key}: no such config key (keys are dotted like --set, "
                              "e.g. model.hidden, training.lr, heads.0.alpha)") from None
        for value in probe_values(param):
            apply_values(cfg, {key: value}, Path(cfg.output_dir))
    weights = [k for k in space if (_head_index(k, [h.model_dump() for h in cfg.heads]) or (0, ""))[1] == "alpha"]
    if weights and tune.objective == "val_loss":
        raise ConfigError(f"tune.space.{weights[0]}: the objective val_loss is weighted by the heads' alpha, so "
                          "searching alpha would only shrink the weights; use tune.objective: val_rmse:HEAD")
    if tune.objective.startswith("val_rmse:"):
        head = tune.objective.split(":", 1)[1]
        names = [h.name for h in cfg.heads]
        if head not in names:
            raise ConfigError(f"tune.objective: no head {head!r} (heads: {', '.join(names)})")
    if cfg.split.fractions[1] <= 0:
        raise ConfigError("tune needs a validation split: split.fractions[1] is 0")


def baseline_values(cfg: RunConfig) -> tuple[dict[str, Any], str]:
    """The config's own values of the searched keys, encoded for Optuna, or why they cannot be a trial
    (a value outside its range or choices)."""
    values = {}
    for key, p in cfg.tune.space.items():
        value = get_value(cfg, key)
        inside = (value in (p.choices or []) if p.type == "categorical"
                  else isinstance(value, (int, float)) and p.bounds[0] <= value <= p.bounds[1])
        if not inside:
            return {}, f"{key}={value!r} is outside its searched range"
        values[key] = encode_choice(p, value)
    return values, ""
