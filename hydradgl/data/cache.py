"""Processed-graph cache key: one cache folder per (raw inputs, graph options).

The folder's format, writing and checks are in hydradgl/data/store.py.
"""

from __future__ import annotations

import hashlib
import json

from hydradgl.config import GraphConfig

FORMAT_VERSION = 2  # of how graphs are built from structures; the folder layout has store.FORMAT_VERSION


def cache_key(fingerprint: str, graph: GraphConfig) -> str:
    payload = json.dumps({"v": FORMAT_VERSION, "raw": fingerprint, "graph": graph.model_dump()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]
