"""Processed-graph cache key: one cache folder per (raw inputs, graph options).

The folder's format (its schema), writing and checks are in hydradgl/data/store.py; the parallel
build is in hydradgl/data/store_build.py.
"""

from __future__ import annotations

import hashlib
import json

from hydradgl.config import GraphConfig
from hydradgl.errors import DataError

FORMAT_VERSION = 2  # of how graphs are built from structures; the folder layout has store.FORMAT_VERSION


def cache_key(fingerprint: str, graph: GraphConfig) -> str:
    """Names the folder of one (raw inputs, graph options) pair under this format version."""
    payload = json.dumps({"v": FORMAT_VERSION, "raw": fingerprint, "graph": graph.model_dump()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def unwritable_cache(exc: OSError) -> DataError:
    """The one-line error for a cache folder that cannot be written (read-only, a file, full disk)."""
    return DataError(f"{exc.filename or 'cache'}: cannot write the cache ({exc.strerror or exc}); set "
                     "dataset.cache_dir or $HYDRADGL_CACHE to a writable folder")
