"""``.npy`` files read by rows without mapping them, and written row by row with a fixed-size header.

Every file has numpy's format 1.0, C order, a header of exactly :data:`HEADER_BYTES`, so its size is
known from its dtype and shape alone, and the header can be written once the number of rows is.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

HEADER_BYTES = 128


def npy_header(dtype: Any, shape: Sequence[int]) -> bytes:
    """The :data:`HEADER_BYTES`-long header of a C-order ``.npy`` file of ``dtype`` and ``shape``."""
    text = f"{{'descr': {np.dtype(dtype).str!r}, 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    body = text.ljust(HEADER_BYTES - 11) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


def data_bytes(dtype: Any, shape: Sequence[int]) -> int:
    """Bytes of an array of ``dtype`` and ``shape`` (a file's size less its header)."""
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


class NpyAppender:
    """One ``.npy`` file grown row by row; its header is written when it is closed."""

    def __init__(self, path: Path, dtype: Any, row_shape: tuple[int, ...] = ()):
        self.path, self.dtype, self.row_shape, self.rows = path, np.dtype(dtype), tuple(row_shape), 0
        self.handle = open(path, "wb")
        self.handle.write(b"\0" * HEADER_BYTES)

    def append(self, values: ArrayLike) -> None:
        rows = np.ascontiguousarray(values, dtype=self.dtype)
        rows = rows.reshape((len(rows), *self.row_shape))
        self.handle.write(rows.data)  # no copy of a contiguous array
        self.rows += len(rows)

    def close(self) -> dict[str, Any]:
        """Write the header, flush to disk; the file's ``dtype`` (numpy's ``str``) and ``shape``."""
        shape = (self.rows, *self.row_shape)
        self.handle.seek(0)
        self.handle.write(npy_header(self.dtype, shape))
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        return {"dtype": self.dtype.str, "shape": list(shape)}


class FileArray:
    """A read-only array in a ``.npy`` file, read by rows with ``pread`` when indexed, never mapped.

    Why not ``np.load(mmap_mode="r")``: every page fault on a mapped file also maps its neighbours
    (kernel read-ahead and fault-around), and those pages count in the process's RSS until the kernel
    reclaims them. Random batches touch a little of many places, so a mapped cache's RSS grows by a
    large share of the files. Reading exactly the rows asked for keeps a process's memory at what it
    holds.
    """

    def __init__(self, path: Path):
        self._open(path)

    def _open(self, path: Path) -> None:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version != (1, 0):
                raise ValueError(f"npy format {version}, expected (1, 0)")
            self.shape, fortran, self.dtype = np.lib.format.read_array_header_1_0(handle)
            if fortran:
                raise ValueError("Fortran order")
            self.offset = handle.tell()
        self.path = path
        self.row_bytes = data_bytes(self.dtype, self.shape[1:])
        self.fd = os.open(path, os.O_RDONLY)

    def __del__(self) -> None:
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:  # a worker process opens the file itself
        self._open(state["path"])

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _rows(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, *self.shape[1:]), self.dtype)
        buffer, done = out.reshape(-1).view(np.uint8).data, 0
        while done < len(buffer):  # one pread returns at most ~2 GiB
            got = os.preadv(self.fd, [buffer[done:]], self.offset + start * self.row_bytes + done)
            if got == 0:
                raise OSError(f"{self.path}: file ends before row {stop}")
            done += got
        return out

    def __getitem__(self, key):
        if isinstance(key, tuple):  # rows first, then the other axes in memory
            rows = self[key[0]]
            return rows[key[1:]] if np.isscalar(key[0]) else rows[(slice(None),) + tuple(key[1:])]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            rows = self._rows(start, max(start, stop))
            return rows if step == 1 else rows[::step]
        if np.isscalar(key):
            i = int(key) + (len(self) if int(key) < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"index {key} out of range for {len(self)} rows")
            return self._rows(i, i + 1)[0]
        idx = np.asarray(key, dtype=np.int64)
        flat = idx.reshape(-1)
        if len(flat) and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"indices out of range for {len(self)} rows")
        if len(flat) == 0:
            return np.zeros((*idx.shape, *self.shape[1:]), self.dtype)
        # one read per run of consecutive rows (a graph's atoms or edges), in file order
        order = np.argsort(flat, kind="stable")
        ordered = flat[order]
        breaks = np.flatnonzero(np.diff(ordered) > 1) + 1
        starts = ordered[np.concatenate([[0], breaks])]
        stops = ordered[np.concatenate([breaks - 1, [len(ordered) - 1]])] + 1
        block = (np.concatenate([self._rows(a, b) for a, b in zip(starts.tolist(), stops.tolist())]) if self.row_bytes
                 else np.zeros((int((stops - starts).sum()), *self.shape[1:]), self.dtype))
        run = np.repeat(np.arange(len(starts)), np.diff(np.concatenate([[0], breaks, [len(ordered)]])))
        run_offset = np.concatenate([[0], np.cumsum(stops - starts)[:-1]])
        out = np.empty((len(flat), *self.shape[1:]), self.dtype)
        out[order] = block[ordered - starts[run] + run_offset[run]]
        return out.reshape((*idx.shape, *self.shape[1:]))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)
