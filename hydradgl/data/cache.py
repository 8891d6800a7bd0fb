"""Processed-graph cache: one ``.npz`` per (raw inputs, graph options), written atomically.

A file that cannot be read back (truncated, corrupt: the zip CRC fails, wrong format version) is
reported and rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from hydradgl.atomic import atomic_open, remove_stale_temporaries
from hydradgl.config import GraphConfig
from hydradgl.errors import DataError

FORMAT_VERSION = 2


def cache_key(fingerprint: str, graph: GraphConfig) -> str:
    payload = json.dumps({"v": FORMAT_VERSION, "raw": fingerprint, "graph": graph.model_dump()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def save(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write arrays plus JSON metadata to ``path`` atomically (temp file in the same folder, then rename),
    first removing temporaries that killed writers left in that folder."""
    try:
        remove_stale_temporaries(path.parent)
        with atomic_open(path) as handle:
            np.savez(handle, __meta__=np.array(json.dumps({**meta, "format_version": FORMAT_VERSION})), **arrays)
    except OSError as exc:
        raise unwritable_cache(exc) from None


def unwritable_cache(exc: OSError) -> DataError:
    """The one-line error for a cache folder that cannot be written (read-only, a file, full disk)."""
    return DataError(f"{exc.filename or 'cache'}: cannot write the cache ({exc.strerror or exc}); set "
                     "dataset.cache_dir or $HYDRADGL_CACHE to a writable folder")


def load(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]] | str:
    """The cached arrays and metadata, or a string saying why the file is unusable."""
    if not path.exists():
        return "missing"
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["__meta__"]))
            if meta.get("format_version") != FORMAT_VERSION:
                return f"format version {meta.get('format_version')} != {FORMAT_VERSION}"
            arrays = {k: data[k] for k in data.files if k != "__meta__"}
    except Exception as exc:  # noqa: BLE001  (any read failure means: rebuild)
        return f"unreadable ({type(exc).__name__}: {exc})"
    return arrays, meta
