"""Processed cache on disk: a folder of flat ``.npy`` arrays, read on demand, plus a JSON manifest.

Layout (``<cache_dir>/processed/<dataset>-<key>/``; G graphs, N atoms, E edges)::

    manifest.json          format version, counts, array shapes/dtypes, targets, statistics, checksum
    numbers.npy            (N,) uint8 proton numbers
    node_inputs.npy        (N, F) float32 extra per-atom inputs
    node_ptr.npy           (G+1,) int64 atoms of graph g: node_ptr[g]:node_ptr[g+1]
    src.npy, dst.npy       (E,) int32 local atom indices (messages flow src -> dst)
    vec.npy, dist.npy      (E, 3), (E,) float32 displacement pos[dst] - (pos[src] + image shift), length
    edge_ptr.npy           (G+1,) int64
    graph_target.<t>.npy   (G, d) float32 physical units
    node_target.<t>.npy    (N, d) float32 physical units
    node_target_min.<t>.npy, node_target_max.<t>.npy   (G, d) per-graph range of node target t
    degree_ptr.npy, degree_value.npy, degree_count.npy  per-graph in-degree histogram, sparse
    composition.npy        (G,) int32 code into the manifest's composition table
    source_ptr.npy, source_bytes.npy                    (G+1,) int64 and UTF-8 bytes of the sources

The build streams: structures are packed into graphs a chunk at a time (in worker processes with
``workers > 1``) and appended to the files, so neither the graphs nor their arrays are ever all in
memory. It happens in a temporary folder renamed into place at the end: a cache folder is complete or
absent. Opening checks the manifest's checksum and that every file has exactly the size the manifest
implies (a truncated or half-copied cache is rebuilt, never trusted). The per-graph summaries let the
training split's statistics be computed from a few small arrays instead of a pass over all atoms and
edges.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import struct
from collections import deque
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from hydradgl.atomic import remove_stale_temporaries, temp_prefix
from hydradgl.data.graphset import GraphSet, gather_ranges
from hydradgl.data.records import TargetInfo

FORMAT_VERSION = 3
MANIFEST = "manifest.json"
HEADER_BYTES = 128  # fixed .npy header length, so a file's header can be written after its data
MAX_Z = 119
# read whole when opened (~25 bytes per graph: batches and splits need them); the rest is read on demand
IN_MEMORY = ("node_ptr", "edge_ptr", "graph_target", "composition")
T = TypeVar("T")


class CodedStrings(Sequence[str]):
    """A sequence of strings stored as int codes into a small table (e.g. compositions)."""

    def __init__(self, codes: np.ndarray, table: list[str]):
        self.codes, self.table = codes, table

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self.table[c] for c in self.codes[i]]
        return self.table[int(self.codes[i])]


class PackedStrings(Sequence[str]):
    """A sequence of strings stored as offsets into one UTF-8 byte array (e.g. sources)."""

    def __init__(self, ptr: np.ndarray, data: np.ndarray):
        self.ptr, self.data = ptr, data

    def __len__(self) -> int:
        return len(self.ptr) - 1

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return bytes(self.data[int(self.ptr[i]):int(self.ptr[i + 1])]).decode()


class FileArray:
    """A read-only array in a ``.npy`` file, read by rows with ``pread`` when indexed, never mapped.

    Why not ``np.load(mmap_mode="r")``: every page fault on a mapped file also maps its neighbours
    (kernel read-ahead and fault-around, 64 KiB and more), and those pages count in the process's RSS
    until the kernel reclaims them. Random batches touch a little of many places, so a mapped
    1.4 GB cache reached ~0.7 GB of RSS after 10 batches. Reading exactly the rows asked for keeps a
    process's memory at what it holds.
    """

    def __init__(self, path: Path):
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version != (1, 0):
                raise ValueError(f"npy format {version}, expected (1, 0)")
            self.shape, fortran, self.dtype = np.lib.format.read_array_header_1_0(handle)
            if fortran:
                raise ValueError("Fortran order")
            self.offset = handle.tell()
        self.path = path
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.fd = os.open(path, os.O_RDONLY)

    def __del__(self) -> None:
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:  # a worker process opens the file itself
        self.__init__(state["path"])

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _rows(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, *self.shape[1:]), self.dtype)
        buffer, done = memoryview(out.reshape(-1).view(np.uint8)), 0
        while done < len(buffer):  # one pread returns at most ~2 GiB
            got = os.preadv(self.fd, [buffer[done:]], self.offset + start * self.row_bytes + done)
            if got == 0:
                raise OSError(f"{self.path}: file ends before row {stop}")
            done += got
        return out

    def __getitem__(self, key):
        if isinstance(key, tuple):  # rows first, then the other axes in memory
            rows = self[key[0]]
            return rows[key[1:]] if np.isscalar(key[0]) else rows[(slice(None), *key[1:])]
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


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    text = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (np.dtype(dtype).str, tuple(shape))
    body = text.ljust(HEADER_BYTES - 11) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


class _Appender:
    """One ``.npy`` file grown row by row; its header is written when it is closed."""

    def __init__(self, path: Path, dtype: Any, row_shape: tuple[int, ...] = ()):
        self.path, self.dtype, self.row_shape, self.rows = path, np.dtype(dtype), tuple(row_shape), 0
        self.handle = open(path, "wb")
        self.handle.write(b"\0" * HEADER_BYTES)

    def append(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=self.dtype)
        values = values.reshape((len(values), *self.row_shape))
        self.handle.write(values.data)  # no copy of a contiguous array
        self.rows += len(values)

    def close(self) -> dict[str, Any]:
        shape = (self.rows, *self.row_shape)
        self.handle.seek(0)
        self.handle.write(_npy_header(self.dtype, shape))
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        return {"dtype": self.dtype.str, "shape": list(shape)}


def _manifest_checksum(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def degree_pairs(graphs: GraphSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-graph in-degree histograms, sparse: (ptr over graphs, degree values, atom counts)."""
    n_graphs, n_nodes = len(graphs), int(graphs.node_ptr[-1])
    offsets = np.repeat(graphs.node_ptr[:-1], graphs.num_edges)
    degree = np.bincount(np.asarray(graphs.dst, dtype=np.int64) + offsets, minlength=n_nodes)
    graph_of_node = np.repeat(np.arange(n_graphs, dtype=np.int64), graphs.num_nodes)
    width = int(degree.max(initial=0)) + 1
    keys, counts = np.unique(graph_of_node * width + degree, return_counts=True)
    ptr = np.zeros(n_graphs + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys // width, minlength=n_graphs), out=ptr[1:])
    return ptr, keys % width, counts


def _segment_range(values: np.ndarray, ptr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-segment min and max of ``values`` rows (+inf/-inf for an empty segment)."""
    n, dim = len(ptr) - 1, values.shape[1]
    lo, hi = np.full((n, dim), np.inf, np.float32), np.full((n, dim), -np.inf, np.float32)
    full = np.diff(ptr) > 0
    if full.any():
        starts = ptr[:-1][full]
        lo[full] = np.minimum.reduceat(values, starts, axis=0)
        hi[full] = np.maximum.reduceat(values, starts, axis=0)
    return lo, hi


class StoreWriter:
    """Appends packed chunks of graphs to a new cache folder; ``finish`` makes it visible atomically."""

    def __init__(self, folder: Path, targets: dict[str, TargetInfo], node_inputs: dict[str, int]):
        self.folder, self.targets, self.node_inputs = Path(folder), targets, node_inputs
        # named like hydradgl/atomic.py's temporaries, so a killed build's folder is removed as stale later
        self.tmp = self.folder.parent / f".{temp_prefix(self.folder)}build.tmp"
        remove_stale_temporaries(self.folder.parent)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        width = sum(node_inputs.values())
        files: dict[str, tuple[Any, tuple[int, ...]]] = {
            "numbers": (np.uint8, ()), "node_inputs": (np.float32, (width,)), "node_ptr": (np.int64, ()),
            "src": (np.int32, ()), "dst": (np.int32, ()), "vec": (np.float32, (3,)), "dist": (np.float32, ()),
            "edge_ptr": (np.int64, ()), "degree_ptr": (np.int64, ()), "degree_value": (np.int32, ()),
            "degree_count": (np.int32, ()), "composition": (np.int32, ()), "source_ptr": (np.int64, ()),
            "source_bytes": (np.uint8, ()),
        }
        for name, t in targets.items():
            kinds = ("graph_target",) if t.level == "graph" else ("node_target", "node_target_min", "node_target_max")
            files.update({f"{kind}.{name}": (np.float32, (t.dim,)) for kind in kinds})
        self.files = {name: _Appender(self.tmp / f"{name}.npy", dtype, shape) for name, (dtype, shape) in files.items()}
        for name in ("node_ptr", "edge_ptr", "degree_ptr", "source_ptr"):
            self.files[name].append(np.zeros(1))
        self.ends = {"node_ptr": 0, "edge_ptr": 0, "degree_ptr": 0, "source_ptr": 0}
        self.compositions: dict[str, int] = {}
        self.element_counts = np.zeros(MAX_Z, dtype=np.int64)
        self.degree_histogram = np.zeros(1, dtype=np.int64)

    def _append_ptr(self, name: str, counts: np.ndarray) -> None:
        ptr = self.ends[name] + np.cumsum(counts, dtype=np.int64)
        self.files[name].append(ptr)
        self.ends[name] = int(ptr[-1]) if len(ptr) else self.ends[name]

    def append(self, chunk: GraphSet) -> None:
        """Add the graphs of ``chunk`` (physical targets, every target of the dataset present)."""
        missing = [k for k, t in self.targets.items()
                   if k not in (chunk.graph_targets if t.level == "graph" else chunk.node_targets)]
        if missing:
            raise ValueError(f"chunk lacks targets {missing}")
        f = self.files
        numbers = np.asarray(chunk.numbers)
        f["numbers"].append(numbers)
        self.element_counts += np.bincount(numbers, minlength=MAX_Z)[:MAX_Z]
        f["node_inputs"].append(chunk.node_inputs)
        for name in ("src", "dst", "vec", "dist"):
            f[name].append(getattr(chunk, name))
        self._append_ptr("node_ptr", chunk.num_nodes)
        self._append_ptr("edge_ptr", chunk.num_edges)
        ptr, values, counts = degree_pairs(chunk)
        self._append_ptr("degree_ptr", np.diff(ptr))
        f["degree_value"].append(values)
        f["degree_count"].append(counts)
        hist = np.bincount(values, weights=counts, minlength=len(self.degree_histogram)).astype(np.int64)
        hist[:len(self.degree_histogram)] += self.degree_histogram
        self.degree_histogram = hist
        for name, values in chunk.graph_targets.items():
            f[f"graph_target.{name}"].append(values)
        for name, values in chunk.node_targets.items():
            f[f"node_target.{name}"].append(values)
            lo, hi = _segment_range(np.asarray(values, dtype=np.float32).reshape(len(values), -1), chunk.node_ptr)
            f[f"node_target_min.{name}"].append(lo)
            f[f"node_target_max.{name}"].append(hi)
        f["composition"].append([self.compositions.setdefault(c, len(self.compositions)) for c in chunk.compositions])
        encoded = [s.encode() for s in chunk.sources]
        self._append_ptr("source_ptr", np.array([len(b) for b in encoded], dtype=np.int64))
        f["source_bytes"].append(np.frombuffer(b"".join(encoded), dtype=np.uint8))

    def finish(self, log: list[str]) -> Path:
        """Write the manifest, then rename the folder into place (replacing an invalid old one)."""
        arrays = {name: appender.close() for name, appender in self.files.items()}
        n_graphs = arrays["node_ptr"]["shape"][0] - 1
        manifest = {
            "format_version": FORMAT_VERSION,
            "counts": {"graphs": n_graphs, "nodes": arrays["numbers"]["shape"][0], "edges": arrays["src"]["shape"][0]},
            "arrays": arrays,
            "targets": {k: v.model_dump() for k, v in self.targets.items()},
            "node_inputs": self.node_inputs,
            "compositions": list(self.compositions),
            "statistics": {**self._target_statistics(n_graphs), "degree_histogram": self.degree_histogram.tolist(),
                           "element_counts": self.element_counts.tolist()},
            "log": log,
        }
        manifest["checksum"] = _manifest_checksum(manifest)
        (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if self.folder.exists() and not isinstance(open_store(self.folder), Store):
            shutil.rmtree(self.folder, ignore_errors=True)  # the invalid cache this build replaces
        try:
            os.replace(self.tmp, self.folder)
        except OSError:
            if not isinstance(open_store(self.folder), Store):
                raise
            shutil.rmtree(self.tmp)  # another process (a DDP rank) published the same cache first: use it
        return self.folder

    def _target_statistics(self, n_graphs: int) -> dict[str, dict[str, list[float]]]:
        """Min and max of every target over the whole set, from the finished files (graph-sized reads)."""
        lo, hi = {}, {}
        for name, t in self.targets.items():
            prefix = ("graph_target.", "graph_target.") if t.level == "graph" else ("node_target_min.", "node_target_max.")
            low = np.load(self.tmp / f"{prefix[0]}{name}.npy", mmap_mode="r")
            high = np.load(self.tmp / f"{prefix[1]}{name}.npy", mmap_mode="r")
            lo[name] = low.min(axis=0).astype(float).tolist() if n_graphs else []
            hi[name] = high.max(axis=0).astype(float).tolist() if n_graphs else []
        return {"target_min": lo, "target_max": hi}

    def abort(self) -> None:
        for appender in self.files.values():
            appender.handle.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


@dataclass
class Store:
    """An opened cache folder: the graphs (read on demand) and what the manifest says about them."""

    folder: Path
    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]
    graphs: GraphSet

    @property
    def targets(self) -> dict[str, TargetInfo]:
        return {k: TargetInfo(**v) for k, v in self.manifest["targets"].items()}

    @property
    def species(self) -> list[int]:
        """Proton numbers present in the whole set, ascending."""
        return [z for z, n in enumerate(self.manifest["statistics"]["element_counts"]) if n > 0]

    def target_range(self, rows: np.ndarray, chunk: int = 1 << 16) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
        """Per-component min and max of every target over graphs ``rows``, read a chunk at a time."""
        lo: dict[str, list[float]] = {}
        hi: dict[str, list[float]] = {}
        for name, t in self.targets.items():
            low_key, high_key = ((f"graph_target.{name}",) * 2 if t.level == "graph"
                                 else (f"node_target_min.{name}", f"node_target_max.{name}"))
            low = np.full(t.dim, np.inf)
            high = np.full(t.dim, -np.inf)
            for part in _chunks_of(rows, chunk):
                low = np.minimum(low, self.arrays[low_key][part].min(axis=0))
                high = np.maximum(high, self.arrays[high_key][part].max(axis=0))
            lo[name], hi[name] = low.astype(np.float32).astype(float).tolist(), high.astype(np.float32).astype(float).tolist()
        return lo, hi

    @property
    def nbytes(self) -> int:
        """Size of all its arrays."""
        return sum(int(np.prod(spec["shape"])) * np.dtype(spec["dtype"]).itemsize
                   for spec in self.manifest["arrays"].values())

    @property
    def in_memory(self) -> bool:
        return not any(isinstance(a, FileArray) for a in self.arrays.values())

    def read_into_memory(self) -> "Store":
        """The same cache with every array read whole: batches are then gathered from memory (a
        64-graph FePt batch in ~1 ms instead of ~9 ms of reads from the files)."""
        arrays = {name: np.asarray(a) if isinstance(a, FileArray) else a for name, a in self.arrays.items()}
        return Store(self.folder, self.manifest, arrays, _graph_set(arrays, self.manifest))

    def degree_histogram(self, rows: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
        """``hist[k]`` = number of atoms with k incoming edges in graphs ``rows``."""
        hist = np.zeros(1, dtype=np.int64)
        for part in _chunks_of(rows, chunk):
            pairs, _ = gather_ranges(self.arrays["degree_ptr"], part)
            h = np.bincount(self.arrays["degree_value"][pairs], weights=self.arrays["degree_count"][pairs])
            merged = np.zeros(max(len(hist), len(h)), dtype=np.int64)
            merged[:len(hist)] += hist
            merged[:len(h)] += h.astype(np.int64)
            hist = merged
        return hist


def _chunks_of(rows: np.ndarray, size: int) -> Iterator[np.ndarray]:
    rows = np.sort(np.asarray(rows, dtype=np.int64))  # sorted: each chunk reads nearby pages
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def _rows_expected(name: str, counts: dict[str, int]) -> int | None:
    """How many rows array ``name`` must have (None: checked through its offsets instead)."""
    kind = name.split(".", 1)[0]
    per = {"numbers": "nodes", "node_inputs": "nodes", "node_target": "nodes", "src": "edges", "dst": "edges",
           "vec": "edges", "dist": "edges", "graph_target": "graphs", "node_target_min": "graphs",
           "node_target_max": "graphs", "composition": "graphs"}
    if kind.endswith("_ptr"):
        return counts["graphs"] + 1
    return counts[per[kind]] if kind in per else None


def _inconsistent(arrays: dict[str, np.ndarray], counts: dict[str, int]) -> str:
    """What does not fit together in a cache's arrays ('' when everything does)."""
    for name, array in arrays.items():
        rows = _rows_expected(name, counts)
        if rows is not None and len(array) != rows:
            return f"{name} has {len(array)} rows, expected {rows}"
    ends = {"node_ptr": counts["nodes"], "edge_ptr": counts["edges"], "degree_ptr": len(arrays["degree_value"]),
            "source_ptr": len(arrays["source_bytes"])}
    for name, end in ends.items():
        if int(arrays[name][0]) != 0 or int(arrays[name][-1]) != end:
            return f"{name} does not span 0..{end}"
    return ""


def open_store(folder: Path) -> Store | str:
    """The cache folder opened, or a string saying why it is unusable (then it is rebuilt)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.exists():
        return "missing"
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            return f"format version {manifest.get('format_version')} != {FORMAT_VERSION}"
        if manifest.get("checksum") != _manifest_checksum(manifest):
            return "corrupt (manifest checksum does not match)"
        arrays = {}
        for name, spec in manifest["arrays"].items():
            file = folder / f"{name}.npy"
            expected = HEADER_BYTES + int(np.prod(spec["shape"])) * np.dtype(spec["dtype"]).itemsize
            if not file.exists() or file.stat().st_size != expected:
                return f"truncated ({file.name}: {file.stat().st_size if file.exists() else 'no'} bytes, expected {expected})"
            arrays[name] = np.load(file) if name.split(".")[0] in IN_MEMORY else FileArray(file)
            if list(arrays[name].shape) != spec["shape"] or arrays[name].dtype.str != spec["dtype"]:
                return f"inconsistent ({file.name} holds {arrays[name].dtype}{arrays[name].shape})"
        wrong = _inconsistent(arrays, manifest["counts"])
        if wrong:
            return f"inconsistent ({wrong})"
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        return f"unreadable ({type(exc).__name__}: {exc})"
    return Store(folder, manifest, arrays, _graph_set(arrays, manifest))


def _graph_set(arrays: dict[str, np.ndarray], manifest: dict[str, Any]) -> GraphSet:
    return GraphSet(
        numbers=arrays["numbers"], node_inputs=arrays["node_inputs"], node_ptr=arrays["node_ptr"],
        src=arrays["src"], dst=arrays["dst"], vec=arrays["vec"], dist=arrays["dist"], edge_ptr=arrays["edge_ptr"],
        graph_targets={k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("graph_target.")},
        node_targets={k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("node_target.")},
        compositions=CodedStrings(arrays["composition"], manifest["compositions"]),
        sources=PackedStrings(arrays["source_ptr"], arrays["source_bytes"]))


def memory_available() -> int | None:
    """Bytes of memory the system can still give processes (Linux's MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of up to ``size`` consecutive items (the last may be shorter)."""
    it = iter(items)
    return iter(lambda: list(islice(it, size)), [])


def packed_chunks(structures: Iterable[T], pack: Callable[[list[T]], GraphSet], chunk_size: int = 1024,
                  workers: int = 1) -> Iterator[GraphSet]:
    """``pack`` applied to consecutive chunks of ``structures``, in order; with ``workers > 1`` in that
    many processes, at most two chunks per worker in flight (memory stays bounded)."""
    if workers <= 1:
        yield from map(pack, chunked(structures, chunk_size))
        return
    with multiprocessing.get_context().Pool(workers) as pool:
        pending: deque = deque()
        for chunk in chunked(structures, chunk_size):
            pending.append(pool.apply_async(pack, (chunk,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def build_store(folder: Path, chunks: Iterable[GraphSet], targets: dict[str, TargetInfo],
                node_inputs: dict[str, int], log: Callable[[], list[str]] | list[str]) -> Store:
    """Write ``chunks`` of packed graphs as the cache folder ``folder`` and open it.

    ``log`` (the build's notes, kept in the manifest) may be a callable, evaluated after the chunks are
    consumed, for notes that only exist once the structures have been read.
    """
    writer = StoreWriter(folder, targets, node_inputs)
    try:
        for chunk in chunks:
            writer.append(chunk)
        writer.finish(log() if callable(log) else log)
    except BaseException:
        writer.abort()
        raise
    opened = open_store(folder)
    if isinstance(opened, str):
        raise OSError(f"{folder}: the cache just written is {opened}")
    return opened
