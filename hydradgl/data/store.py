"""Processed cache on disk: a folder of flat ``.npy`` arrays plus a JSON manifest.

Folder ``<cache_dir>/processed/<dataset>-<key>/``: the arrays :data:`SCHEMA` declares (docs/data.md's
table is generated from it by :func:`schema_markdown`) and ``manifest.json`` (format version, counts,
array shapes and dtypes, targets, statistics, checksum). :class:`StoreWriter` appends packed chunks of
graphs to the files of a temporary folder renamed into place at the end, so a cache folder is complete
or absent (the parallel build is in hydradgl/data/store_build.py). :func:`open_store` checks the
manifest's checksum, that the files are those the schema gives for its targets, each of exactly the
size the manifest implies, and that the row counts and offsets agree: a truncated or half-copied cache
is rebuilt, never trusted. The per-graph summaries let the training split's statistics be computed
from a few small arrays instead of a pass over all atoms and edges.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from hydradgl.atomic import remove_stale_temporaries, temp_prefix
from hydradgl.data.graphset import GraphSet, gather_ranges
from hydradgl.data.npyio import HEADER_BYTES, FileArray, NpyAppender, data_bytes
from hydradgl.data.records import TargetInfo

FORMAT_VERSION = 4  # 4: the per-graph cell (stress)
MANIFEST = "manifest.json"
MAX_Z = 119


@dataclass(frozen=True)
class Column:
    """One kind of array file in the cache."""

    name: str  # file <name>.npy; a per-target column has one file <name>.<target>.npy per target
    dtype: str
    rows: str  # N atoms, E edges, G graphs, G+1 offsets, or a count that offsets set (K, B)
    row_shape: tuple[int | str, ...]  # the other axes: F is the node-input width, d the target's dim
    description: str
    resident: bool = False  # read whole when opened (batches and splits need all of it); else by rows
    per_target: str = ""  # "graph" or "node": one file per target of that level
    spans: str = ""  # offsets: ptr[0] == 0 and ptr[-1] == this row count
    graph_field: str = ""  # the GraphSet field it fills


SCHEMA: tuple[Column, ...] = (
    Column("numbers", "uint8", "N", (), "proton number of every atom, graph after graph", graph_field="numbers"),
    Column("node_inputs", "float32", "N", ("F",), "extra per-atom inputs (F may be 0), columns in the manifest's "
           "`node_inputs` order", graph_field="node_inputs"),
    Column("node_ptr", "int64", "G+1", (), "atoms of graph g are rows `node_ptr[g]:node_ptr[g+1]`", resident=True,
           spans="N", graph_field="node_ptr"),
    Column("src", "int32", "E", (), "edge source, an atom index local to its graph; messages flow src -> dst",
           graph_field="src"),
    Column("dst", "int32", "E", (), "edge destination, an atom index local to its graph", graph_field="dst"),
    Column("vec", "float32", "E", (3,), "displacement `pos[dst] - (pos[src] + image shift)`, Angstrom",
           graph_field="vec"),
    Column("dist", "float32", "E", (), "length of `vec`", graph_field="dist"),
    Column("edge_ptr", "int64", "G+1", (), "edges of graph g are rows `edge_ptr[g]:edge_ptr[g+1]`", resident=True,
           spans="E", graph_field="edge_ptr"),
    Column("cell", "float32", "G", (3, 3), "lattice vectors (rows), Angstrom, of a graph periodic along all three "
           "axes (graph.periodic); zeros for any other: it has no stress", resident=True, graph_field="cell"),
    Column("graph_target", "float32", "G", ("d",), "graph-level target t (d components), physical units",
           resident=True, per_target="graph", graph_field="graph_targets"),
    Column("node_target", "float32", "N", ("d",), "node-level target t (d components), physical units",
           per_target="node", graph_field="node_targets"),
    Column("node_target_min", "float32", "G", ("d",), "per-graph minimum of node target t", per_target="node"),
    Column("node_target_max", "float32", "G", ("d",), "per-graph maximum of node target t", per_target="node"),
    Column("degree_ptr", "int64", "G+1", (), "in-degree histogram of graph g, sparse: entries "
           "`degree_ptr[g]:degree_ptr[g+1]` of `degree_value` and `degree_count`", spans="K"),
    Column("degree_value", "int32", "K", (), "an in-degree present in the graph"),
    Column("degree_count", "int32", "K", (), "how many of the graph's atoms have that in-degree"),
    Column("composition", "int32", "G", (), "index into the manifest's `compositions` table (labels like "
           "`Fe12Pt20`)", resident=True),
    Column("source_ptr", "int64", "G+1", (), "where graph g came from: bytes `source_ptr[g]:source_ptr[g+1]` of "
           "`source_bytes`", spans="B"),
    Column("source_bytes", "uint8", "B", (), "the sources' UTF-8 bytes, concatenated"),
)
_COLUMNS = {column.name: column for column in SCHEMA}


def column_of(file: str) -> tuple[Column, str]:
    """The column of array file ``file`` (its name without ``.npy``) and its target ('' if none)."""
    name, _, target = file.partition(".")
    return _COLUMNS[name], target


def cache_files(targets: dict[str, TargetInfo], width: int) -> dict[str, tuple[Column, tuple[int, ...]]]:
    """The array files of a cache with these targets and node-input width: name -> (column, row shape),
    in writing order."""
    def row_shape(column: Column, dim: int) -> tuple[int, ...]:
        return tuple(width if axis == "F" else dim if axis == "d" else int(axis) for axis in column.row_shape)

    files = {c.name: (c, row_shape(c, 0)) for c in SCHEMA if not c.per_target}
    for target, info in targets.items():
        files.update({f"{c.name}.{target}": (c, row_shape(c, info.dim)) for c in SCHEMA if c.per_target == info.level})
    return files


def schema_markdown() -> str:
    """:data:`SCHEMA` as a Markdown table (docs/data.md embeds it)."""
    lines = ["| file | shape, dtype | read | content |", "| --- | --- | --- | --- |"]
    for c in SCHEMA:
        file = f"{c.name}.<t>.npy" if c.per_target else f"{c.name}.npy"
        axes = ", ".join([c.rows, *map(str, c.row_shape)])
        shape = f"({axes})" if c.row_shape else f"({axes},)"
        lines.append(f"| `{file}` | {shape} {c.dtype} | {'whole' if c.resident else 'by rows'} | {c.description} |")
    lines.append(f"| `{MANIFEST}` | | whole | see below |")
    return "\n".join(lines) + "\n"


class CodedStrings(Sequence[str]):
    """A sequence of strings stored as int codes into a small table (e.g. compositions)."""

    def __init__(self, codes: np.ndarray, table: list[str]):
        self.codes, self.table = codes, table

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.table[c] for c in self.codes[i]]
        return self.table[int(self.codes[i])]


class PackedStrings(Sequence[str]):
    """A sequence of strings stored as offsets into one UTF-8 byte array (e.g. sources)."""

    def __init__(self, ptr: np.ndarray, data: np.ndarray):
        self.ptr, self.data = ptr, data

    def __len__(self) -> int:
        return len(self.ptr) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return bytes(self.data[int(self.ptr[i]):int(self.ptr[i + 1])]).decode()


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
    """Per-segment min and max of ``values`` rows, NaN (a masked frame's) ignored: NaN where a segment
    has no other value, +inf/-inf for an empty segment."""
    n, dim = len(ptr) - 1, values.shape[1]
    lo, hi = np.full((n, dim), np.inf, np.float32), np.full((n, dim), -np.inf, np.float32)
    full = np.diff(ptr) > 0
    if full.any():
        starts = ptr[:-1][full]
        lo[full] = np.fmin.reduceat(values, starts, axis=0)
        hi[full] = np.fmax.reduceat(values, starts, axis=0)
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
        self.files = {name: NpyAppender(self.tmp / f"{name}.npy", column.dtype, shape)
                      for name, (column, shape) in cache_files(targets, sum(node_inputs.values())).items()}
        self.ends = {column.name: 0 for column in SCHEMA if column.spans}
        for name in self.ends:
            self.files[name].append(np.zeros(1))
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
        f["cell"].append(chunk.cell)
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
        """Min and max of every target over the whole set, from the finished files (graph-sized reads);
        NaN (masked frames of a partial target) ignored."""
        lo, hi = {}, {}
        for name, t in self.targets.items():
            prefix = (("graph_target.", "graph_target.") if t.level == "graph"
                      else ("node_target_min.", "node_target_max."))
            low = np.load(self.tmp / f"{prefix[0]}{name}.npy", mmap_mode="r")
            high = np.load(self.tmp / f"{prefix[1]}{name}.npy", mmap_mode="r")
            lo[name] = np.fmin.reduce(low, axis=0).astype(float).tolist() if n_graphs else []
            hi[name] = np.fmax.reduce(high, axis=0).astype(float).tolist() if n_graphs else []
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

    def target_range(self, rows: np.ndarray,
                     chunk: int = 1 << 16) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
        """Per-component min and max of every target over graphs ``rows``, read a chunk at a time; NaN
        (masked frames of a partial target) ignored, +inf/-inf for a component with no value."""
        lo: dict[str, list[float]] = {}
        hi: dict[str, list[float]] = {}
        for name, t in self.targets.items():
            low_key, high_key = ((f"graph_target.{name}",) * 2 if t.level == "graph"
                                 else (f"node_target_min.{name}", f"node_target_max.{name}"))
            low = np.full(t.dim, np.inf)
            high = np.full(t.dim, -np.inf)
            for part in _chunks_of(rows, chunk):
                low = np.fmin(low, np.fmin.reduce(self.arrays[low_key][part], axis=0))
                high = np.fmax(high, np.fmax.reduce(self.arrays[high_key][part], axis=0))
            lo[name] = low.astype(np.float32).astype(float).tolist()
            hi[name] = high.astype(np.float32).astype(float).tolist()
        return lo, hi

    @property
    def nbytes(self) -> int:
        """Size of all its arrays."""
        return sum(data_bytes(spec["dtype"], spec["shape"]) for spec in self.manifest["arrays"].values())

    @property
    def in_memory(self) -> bool:
        return not any(isinstance(a, FileArray) for a in self.arrays.values())

    def read_into_memory(self) -> Store:
        """The same cache with every array read whole: batches are then gathered from memory."""
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


def _layout_mismatch(specs: dict[str, dict[str, Any]], files: dict[str, tuple[Column, tuple[int, ...]]]) -> str:
    """How the manifest's arrays differ from the files the schema gives ('' when they do not)."""
    if set(specs) != set(files):
        return f"arrays {sorted(set(specs) ^ set(files))} do not fit its targets and node inputs"
    for name, (column, row_shape) in files.items():
        dtype, shape = specs[name]["dtype"], specs[name]["shape"]
        if dtype != np.dtype(column.dtype).str or list(shape[1:]) != list(row_shape):
            return f"{name} is {dtype} {shape}, expected {column.dtype} rows of {row_shape}"
    return ""


def _inconsistent(arrays: dict[str, np.ndarray], counts: dict[str, int]) -> str:
    """What does not fit together in a cache's arrays ('' when everything does)."""
    sizes = {"N": counts["nodes"], "E": counts["edges"], "G": counts["graphs"], "G+1": counts["graphs"] + 1}

    def wrong_rows(name: str) -> str:
        rows = sizes[column_of(name)[0].rows]
        return f"{name} has {len(arrays[name])} rows, expected {rows}" if len(arrays[name]) != rows else ""

    for column in SCHEMA:
        if column.spans:  # offsets first: they set the row counts of the arrays they divide (K, B)
            ptr = arrays[column.name]
            if wrong := wrong_rows(column.name):
                return wrong
            end = sizes.setdefault(column.spans, int(ptr[-1]))
            if int(ptr[0]) != 0 or int(ptr[-1]) != end:
                return f"{column.name} does not span 0..{end}"
    for name in arrays:
        if wrong := wrong_rows(name):
            return wrong
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
        files = cache_files({k: TargetInfo(**v) for k, v in manifest["targets"].items()},
                            sum(manifest["node_inputs"].values()))
        wrong = _layout_mismatch(manifest["arrays"], files)
        if wrong:
            return f"inconsistent ({wrong})"
        arrays: dict[str, np.ndarray] = {}
        for name, spec in manifest["arrays"].items():
            file = folder / f"{name}.npy"
            expected = HEADER_BYTES + data_bytes(spec["dtype"], spec["shape"])
            if not file.exists() or file.stat().st_size != expected:
                size = file.stat().st_size if file.exists() else "no"
                return f"truncated ({file.name}: {size} bytes, expected {expected})"
            # a FileArray is read by rows like an ndarray: the graphs' fields hold either
            arrays[name] = np.load(file) if files[name][0].resident else cast(np.ndarray, FileArray(file))
            if list(arrays[name].shape) != spec["shape"] or arrays[name].dtype.str != spec["dtype"]:
                return f"inconsistent ({file.name} holds {arrays[name].dtype}{arrays[name].shape})"
        wrong = _inconsistent(arrays, manifest["counts"])
        if wrong:
            return f"inconsistent ({wrong})"
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        return f"unreadable ({type(exc).__name__}: {exc})"
    return Store(folder, manifest, arrays, _graph_set(arrays, manifest))


def _graph_set(arrays: dict[str, np.ndarray], manifest: dict[str, Any]) -> GraphSet:
    """The GraphSet over a cache's arrays: each column's array in the field :data:`SCHEMA` names."""
    fields: dict[str, Any] = {}
    for name, array in arrays.items():
        column, target = column_of(name)
        if column.per_target and column.graph_field:
            fields.setdefault(column.graph_field, {})[target] = array
        elif column.graph_field:
            fields[column.graph_field] = array
    return GraphSet(**fields, compositions=CodedStrings(arrays["composition"], manifest["compositions"]),
                    sources=PackedStrings(arrays["source_ptr"], arrays["source_bytes"]))
