"""Checkpoints: written atomically (temp file, fsync, rename), so a crash never leaves a truncated one."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch

from hydradgl.atomic import atomic_open
from hydradgl.errors import PluginError, TrainingError
from hydradgl.plugins import Kind, Registry

FORMAT = 3  # 3: plugin options saved complete; 2: as given (read, see _from_format2); 2 added the RNG state


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically; a failed write (full disk, quota) is a TrainingError and leaves the previous file."""
    try:
        with atomic_open(path) as handle:
            torch.save({**payload, "format": FORMAT}, handle)
    except (OSError, RuntimeError) as exc:  # torch wraps a failed write of its zip writer in RuntimeError
        cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        kept = f"; the previous {path.name} is kept" if path.exists() else ""
        raise TrainingError(f"{path}: cannot write checkpoint ({cause}){kept}") from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path}: no checkpoint there")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise TrainingError(f"{path}: not a readable hydradgl checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or "format" not in payload:
        raise TrainingError(f"{path}: not a hydradgl checkpoint")
    if payload["format"] == 2:
        _from_format2(payload)
    if payload["format"] != FORMAT:
        raise TrainingError(f"{path}: checkpoint format {payload['format']} was written by another hydradgl version; "
                            f"this one reads formats 2 and {FORMAT}")
    return payload


def _from_format2(payload: dict[str, Any]) -> None:
    """Format 2 saved plugin options as given, so a changed default changed the model a run builds. The one
    default that changed within it, PNA's ``use_edge_features`` (off before edge features became the
    default), is read back from the weights: a PNA layer has edge weights exactly when it used them."""
    model = payload["config"]["model"]
    if model["conv"] == "pna" and "use_edge_features" not in model["conv_options"]:
        used = any(".pre_edge." in key for key in payload["model"])
        model["conv_options"] = {**model["conv_options"], "use_edge_features": used}
    payload["format"] = FORMAT


def plugin_provenance(registry: Registry, used: dict[str, tuple[str, str]]) -> dict[str, dict[str, str]]:
    """For each role (``conv``, ``dataset``, ``head:H``...): plugin name, distribution and its version."""
    out = {}
    for role, (kind, name) in used.items():
        owner = registry.owners.get((cast(Kind, kind), name), "unknown")
        dist = registry.distributions.get(owner)
        out[role] = {"kind": kind, "name": name, "distribution": owner, "version": dist.version if dist else "unknown"}
    return out


def check_plugins(provenance: dict[str, dict[str, str]], registry: Registry, path: Path) -> None:
    """A clear error when a plugin the checkpoint was trained with is not installed."""
    for role, p in provenance.items():
        if p["name"] not in registry.specs[cast(Kind, p["kind"])]:
            raise PluginError(f"{path}: this model needs the {p['kind']} plugin {p['name']!r} (for {role}) from "
                              f"distribution {p['distribution']!r} version {p['version']}, which is not installed")
