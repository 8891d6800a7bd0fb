"""From a config to normalized train/val/test GraphSets: load (or reuse the cache), build graphs, split."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from ase.data import chemical_symbols

from hydradgl.config import RunConfig
from hydradgl.configio import parse_options
from hydradgl.data import cache
from hydradgl.data.graphs import edges_cached
from hydradgl.data.graphset import GraphSet
from hydradgl.data.normalize import Normalizer, fit_min_max
from hydradgl.data.records import DatasetInfo, RawDataset, Structure, TargetInfo
from hydradgl.data.splits import random_split, stratified_split
from hydradgl.errors import DataError, PluginError
from hydradgl.plugins import DatasetContext, Registry, get_registry


def default_cache_dir() -> Path:
    return Path(os.environ.get("HYDRADGL_CACHE", Path.home() / ".cache" / "hydradgl"))


def composition(numbers: np.ndarray) -> str:
    """``Fe12Pt20``-style label, elements by increasing proton number."""
    zs, counts = np.unique(numbers, return_counts=True)
    return "".join(f"{chemical_symbols[int(z)]}{int(c)}" for z, c in zip(zs, counts))


def check_finite(raw: RawDataset) -> None:
    """NaN or infinite targets are refused, naming the structure's source."""
    for s in raw.structures:
        for name, values in s.targets.items():
            if not np.all(np.isfinite(values)):
                raise DataError(f"{s.source}: target {name!r} has NaN or infinite values")


def pack(structures: list[Structure], targets: dict[str, TargetInfo], node_inputs: dict[str, int],
         cfg: RunConfig) -> GraphSet:
    """Build every structure's graph and concatenate everything into one GraphSet (physical targets)."""
    if cfg.graph.periodic:
        lacking = next((s for s in structures if s.cell is None), None)
        if lacking is not None:
            raise DataError(f"{lacking.source}: graph.periodic is set but this structure has no lattice; give "
                            "dataset.options.cell (LSMS) or a Lattice (extxyz), or set graph.periodic: false")
    memo: dict = {}
    src, dst, vec, n_nodes, n_edges = [], [], [], [], []
    for s in structures:
        e_src, e_dst, e_vec = edges_cached(s, cfg.graph, memo)
        src.append(e_src)
        dst.append(e_dst)
        vec.append(e_vec)
        n_nodes.append(s.n_atoms)
        n_edges.append(len(e_src))
    node_ptr = np.concatenate([[0], np.cumsum(n_nodes)]).astype(np.int64)
    edge_ptr = np.concatenate([[0], np.cumsum(n_edges)]).astype(np.int64)
    vec_all = np.concatenate(vec).astype(np.float32) if vec else np.zeros((0, 3), np.float32)
    numbers = np.concatenate([s.numbers for s in structures]).astype(np.int64)
    inputs = (np.concatenate([np.concatenate([s.node_inputs[k].reshape(s.n_atoms, -1) for k in node_inputs], axis=1)
                              for s in structures]).astype(np.float32)
              if node_inputs else np.zeros((len(numbers), 0), np.float32))
    graph_t = {k: np.stack([np.asarray(s.targets[k], dtype=np.float32).reshape(-1) for s in structures])
               for k, t in targets.items() if t.level == "graph" and all(k in s.targets for s in structures)}
    node_t = {k: np.concatenate([np.asarray(s.targets[k], dtype=np.float32).reshape(s.n_atoms, -1) for s in structures])
              for k, t in targets.items() if t.level == "node" and all(k in s.targets for s in structures)}
    return GraphSet(species=np.zeros_like(numbers), numbers=numbers, node_inputs=inputs, node_ptr=node_ptr,
                    src=np.concatenate(src), dst=np.concatenate(dst), vec=vec_all,
                    dist=np.linalg.norm(vec_all, axis=1).astype(np.float32), edge_ptr=edge_ptr,
                    graph_targets=graph_t, node_targets=node_t,
                    compositions=[composition(s.numbers) for s in structures],
                    sources=[s.source for s in structures])


def _to_cache(graphs: GraphSet) -> dict[str, np.ndarray]:
    arrays = {k: getattr(graphs, k) for k in ("numbers", "node_inputs", "node_ptr", "src", "dst", "vec", "dist", "edge_ptr")}
    arrays.update({f"graph_target:{k}": v for k, v in graphs.graph_targets.items()})
    arrays.update({f"node_target:{k}": v for k, v in graphs.node_targets.items()})
    return arrays


def _from_cache(arrays: dict[str, np.ndarray], meta: dict) -> GraphSet:
    return GraphSet(
        species=np.zeros_like(arrays["numbers"]), numbers=arrays["numbers"], node_inputs=arrays["node_inputs"],
        node_ptr=arrays["node_ptr"], src=arrays["src"], dst=arrays["dst"], vec=arrays["vec"], dist=arrays["dist"],
        edge_ptr=arrays["edge_ptr"],
        graph_targets={k.split(":", 1)[1]: v for k, v in arrays.items() if k.startswith("graph_target:")},
        node_targets={k.split(":", 1)[1]: v for k, v in arrays.items() if k.startswith("node_target:")},
        compositions=meta["compositions"], sources=meta["sources"])


@dataclass
class LoadedData:
    """The whole dataset as packed graphs with physical targets, before any split."""

    graphs: GraphSet
    targets: dict[str, TargetInfo]
    node_inputs: dict[str, int]
    log: list[str] = field(default_factory=list)


def _restore(arrays: dict[str, np.ndarray], meta: dict, path: Path) -> LoadedData | str:
    """The cached dataset, or why the file's contents do not fit together (then it is rebuilt)."""
    try:
        graphs = _from_cache(arrays, meta)
        targets = {k: TargetInfo(**v) for k, v in meta["targets"].items()}
        n_graphs, n_nodes, n_edges = len(graphs), int(graphs.node_ptr[-1]), int(graphs.edge_ptr[-1])
        consistent = (len(graphs.edge_ptr) == n_graphs + 1 and len(graphs.numbers) == n_nodes
                      and len(graphs.src) == len(graphs.dst) == len(graphs.dist) == n_edges
                      and len(graphs.compositions) == n_graphs
                      and all(len(v) == n_graphs for v in graphs.graph_targets.values())
                      and all(len(v) == n_nodes for v in graphs.node_targets.values()))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        return f"inconsistent ({type(exc).__name__}: {exc})"
    if not consistent:
        return "inconsistent (array lengths do not match)"
    # The build's notes (reference energies, skipped files) still hold; say they are from then.
    notes = [f"processed graphs read from cache {path}; notes from when it was built:",
             *(f"  {note}" for note in meta["log"])]
    return LoadedData(graphs, targets, meta["node_inputs"], notes)


def load_dataset(cfg: RunConfig, registry: Registry | None = None, log: Callable[[str], None] | None = None) -> LoadedData:
    """Packed graphs of the configured dataset, from the processed cache when it is valid."""
    registry = registry or get_registry()
    emit = log or (lambda note: None)
    spec = registry.dataset(cfg.dataset.name)
    options = parse_options(spec.options, cfg.dataset.options, "dataset.options", plugin=spec.name)
    cache_dir = Path(cfg.dataset.cache_dir or default_cache_dir())
    context = DatasetContext(cache_dir=cache_dir, skip_bad_files=cfg.dataset.skip_bad_files)
    notes: list[str] = []
    fingerprint = spec.fingerprint(options, context) if spec.fingerprint else None
    path = cache_dir / "processed" / f"{spec.name}-{cache.cache_key(fingerprint, cfg.graph)}.npz" if fingerprint else None
    if path is not None:
        cached = cache.load(path)
        if isinstance(cached, tuple):
            cached = _restore(*cached, path)
        if isinstance(cached, LoadedData):
            for note in cached.log:
                emit(note)
            return cached
        if cached != "missing":
            notes.append(f"cache {path} is {cached}: rebuilding it")
    raw = spec.factory(options, context)
    check_finite(raw)
    notes.extend(raw.log)
    notes.extend(f"skipped: {s}" for s in raw.skipped)
    graphs = pack(raw.structures, raw.targets, raw.node_inputs, cfg)
    path = path or cache_dir / "processed" / f"{spec.name}-{cache.cache_key(raw.fingerprint, cfg.graph)}.npz"
    meta = {"targets": {k: v.model_dump() for k, v in raw.targets.items()}, "node_inputs": raw.node_inputs,
            "compositions": graphs.compositions, "sources": graphs.sources, "log": notes}
    cache.save(path, _to_cache(graphs), meta)
    notes.append(f"processed graphs written to cache {path}")
    for note in notes:
        emit(note)
    return LoadedData(graphs, raw.targets, raw.node_inputs, notes)


def assign_species(graphs: GraphSet, species: list[int], where: str = "") -> GraphSet:
    """Fill ``graphs.species`` with indices into ``species``; DataError for an element not in it."""
    lookup = np.full(119, -1, dtype=np.int64)
    lookup[species] = np.arange(len(species))
    index = lookup[graphs.numbers]
    if (index < 0).any():
        atom = int(np.flatnonzero(index < 0)[0])
        graph = int(np.searchsorted(graphs.node_ptr, atom, side="right") - 1)
        source = graphs.sources[graph] if graphs.sources else where
        raise DataError(f"{source}: element {chemical_symbols[graphs.numbers[atom]]} (Z={graphs.numbers[atom]}) "
                        f"is not among the elements the model was trained on: {species}")
    graphs.species = index
    return graphs


@dataclass
class PreparedData:
    info: DatasetInfo
    train: GraphSet
    val: GraphSet
    test: GraphSet
    log: list[str] = field(default_factory=list)


def prepare_data(cfg: RunConfig, registry: Registry | None = None,
                 log: Callable[[str], None] | None = None) -> PreparedData:
    """Normalized, split GraphSets plus the DatasetInfo a model needs."""
    data = load_dataset(cfg, registry, log)
    graphs = data.graphs
    species = sorted(int(z) for z in np.unique(graphs.numbers))
    assign_species(graphs, species)
    if cfg.split.method == "stratified":
        parts = stratified_split(graphs.compositions, cfg.split.fractions, cfg.split.seed)
    else:
        parts = random_split(len(graphs), cfg.split.fractions, cfg.split.seed)
    train, val, test = (graphs.subset(p) for p in parts)
    if len(train) == 0:
        raise DataError(f"dataset {cfg.dataset.name!r} has no training graphs ({len(graphs)} graphs in all)")
    lo, hi = fit_min_max(train)
    info = DatasetInfo(species=species, node_inputs=data.node_inputs, targets=data.targets,
                       target_min=lo, target_max=hi, degree_histogram=train.in_degree_histogram().tolist(),
                       cutoff=cfg.graph.radius)
    norm = Normalizer.from_info(info)
    split_note = f"split ({cfg.split.method}): {len(train)} train, {len(val)} val, {len(test)} test"
    if log is not None:
        log(split_note)
    notes = [*data.log, split_note]
    return PreparedData(info, norm.apply(train), norm.apply(val), norm.apply(test), notes)


def read_for_prediction(path: Path, cell: np.ndarray | None = None,
                        pbc: tuple[bool, bool, bool] = (True, True, True)) -> list[Structure]:
    """Structures (no targets) from an LSMS file, an extxyz file, or a folder of either.

    LSMS files carry no lattice: they get ``cell``/``pbc`` (from the training dataset's options);
    extxyz files bring their own.
    """
    from hydradgl_plugins.datasets.extxyz import read_frames, to_structure
    from hydradgl_plugins.datasets.lsms import read_lsms

    path = Path(path)
    if path.is_dir():
        return [s for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")
                for s in read_for_prediction(p, cell, pbc)]
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder")
    if path.suffix in (".xyz", ".extxyz"):
        return [to_structure(a, f"{path}#{i}") for i, a in enumerate(read_frames(path))]
    _, table = read_lsms(path)
    return [Structure(numbers=table[:, 0].astype(np.int64), positions=table[:, 2:5].copy(), cell=cell,
                      pbc=pbc if cell is not None else (False, False, False), source=str(path))]


def dataset_lattice(cfg: RunConfig, registry: Registry | None = None) -> tuple[np.ndarray | None, tuple[bool, ...]]:
    """The lattice the configured dataset gives LSMS files (its options' ``cell``/``pbc``), if any."""
    try:
        spec = (registry or get_registry()).dataset(cfg.dataset.name)
    except PluginError:  # the training dataset's plugin is not installed here: no lattice from it
        return None, (False, False, False)
    options = parse_options(spec.options, cfg.dataset.options, "dataset.options", plugin=spec.name)
    cell = getattr(options, "cell", None)
    return (None if cell is None else np.asarray(cell, dtype=float)), tuple(getattr(options, "pbc", (True,) * 3))


def graphs_for_prediction(paths: list[Path], info: DatasetInfo, cfg: RunConfig,
                          registry: Registry | None = None) -> GraphSet:
    """Graphs of new structures, built exactly like the training graphs, species checked against the model."""
    cell, pbc = dataset_lattice(cfg, registry)
    structures = [s for p in paths for s in read_for_prediction(p, cell, pbc)]
    if not structures:
        raise DataError(f"no structures found in {', '.join(map(str, paths))}")
    if info.node_inputs:
        raise DataError("this model needs extra per-atom inputs "
                        f"({', '.join(info.node_inputs)}); predict reads only positions and elements")
    graphs = pack(structures, {}, {}, cfg)
    return assign_species(graphs, info.species)
