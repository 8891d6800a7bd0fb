"""A run's train/val/test split as index files (``split.npz`` in the run directory).

Saved when a run starts and read back by ``--resume`` and ``evaluate``, so a run is continued or
evaluated on exactly its own split without re-splitting (and without the split method having to
reproduce it). Format, one ``.npz`` (numpy's zip of ``.npy`` arrays):

* ``train``, ``val``, ``test``: int64, ascending: graph indices into the processed cache, i.e. the
  positions of the structures in the order the dataset plugin returns them (``Batch.graph_ids``);
* ``n_graphs``: int64 scalar, the size of the dataset the indices refer to (checked on reading);
* ``format_version``: int64 scalar (1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hydradgl.atomic import atomic_open
from hydradgl.errors import DataError

SPLIT_FILE = "split.npz"  # its name in a run directory
SPLITS = ("train", "val", "test")
FORMAT_VERSION = 1


def save_split(path: Path, parts: tuple[np.ndarray, np.ndarray, np.ndarray], n_graphs: int) -> None:
    """Write the three index arrays atomically."""
    arrays: dict[str, Any] = {name: np.sort(np.asarray(p, dtype=np.int64)) for name, p in zip(SPLITS, parts)}
    with atomic_open(Path(path)) as handle:
        np.savez(handle, **arrays, n_graphs=np.int64(n_graphs), format_version=np.int64(FORMAT_VERSION))


def load_split(path: Path, n_graphs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The train/val/test indices saved in ``path``; DataError if the file is unreadable or does not fit
    a dataset of ``n_graphs`` graphs (indices out of range, or in two splits)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            version, saved_n = int(data["format_version"]), int(data["n_graphs"])
            parts = tuple(np.asarray(data[name], dtype=np.int64) for name in SPLITS)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{path}: not a readable split file ({type(exc).__name__}: {exc})") from None
    if version != FORMAT_VERSION:
        raise DataError(f"{path}: split file format {version}, expected {FORMAT_VERSION}")
    if saved_n != n_graphs:
        raise DataError(f"{path}: this split is of a dataset of {saved_n} graphs, the configured one has "
                        f"{n_graphs}: the dataset changed since the run started")
    joined = np.concatenate(parts)
    if len(joined) and (joined.min() < 0 or joined.max() >= n_graphs or len(np.unique(joined)) != len(joined)):
        raise DataError(f"{path}: split indices out of range 0..{n_graphs - 1} or in more than one split")
    return parts  # type: ignore[return-value]
