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
from hydradgl.data.graphset import GraphSet
from hydradgl.errors import DataError

FORMAT_VERSION = 2


def cache_key(fingerprint: str, graph: GraphConfig) -> str:
    """Names the file of one (raw inputs, graph options) pair under this format version."""
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


GRAPH_ARRAYS = ("numbers", "node_inputs", "node_ptr", "src", "dst", "vec", "dist", "edge_ptr")


def graphs_to_arrays(graphs: GraphSet) -> dict[str, np.ndarray]:
    """The arrays of a GraphSet as ``save`` stores them (targets prefixed by their level)."""
    arrays = {k: getattr(graphs, k) for k in GRAPH_ARRAYS}
    arrays.update({f"graph_target:{k}": v for k, v in graphs.graph_targets.items()})
    arrays.update({f"node_target:{k}": v for k, v in graphs.node_targets.items()})
    return arrays


def graphs_from_arrays(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> GraphSet | str:
    """The GraphSet back from ``load``'s output, or why its contents do not fit together."""
    try:
        graphs = GraphSet(
            species=np.zeros_like(arrays["numbers"]), **{k: arrays[k] for k in GRAPH_ARRAYS},
            graph_targets={k.split(":", 1)[1]: v for k, v in arrays.items() if k.startswith("graph_target:")},
            node_targets={k.split(":", 1)[1]: v for k, v in arrays.items() if k.startswith("node_target:")},
            compositions=meta["compositions"], sources=meta["sources"])
        n_graphs, n_nodes, n_edges = len(graphs), int(graphs.node_ptr[-1]), int(graphs.edge_ptr[-1])
        consistent = (len(graphs.edge_ptr) == n_graphs + 1 and len(graphs.numbers) == n_nodes
                      and len(graphs.src) == len(graphs.dst) == len(graphs.dist) == n_edges
                      and len(graphs.compositions) == n_graphs
                      and all(len(v) == n_graphs for v in graphs.graph_targets.values())
                      and all(len(v) == n_nodes for v in graphs.node_targets.values()))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        return f"inconsistent ({type(exc).__name__}: {exc})"
    return graphs if consistent else "inconsistent (array lengths do not match)"
