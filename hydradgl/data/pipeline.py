"""From a config to normalized train/val/test GraphSets: load (or reuse the cache), build graphs, split."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from functools import partial
from typing import Callable, Iterable

import numpy as np
from ase.data import chemical_symbols

from hydradgl.config import RunConfig
from hydradgl.configio import parse_options
from hydradgl.data import cache
from hydradgl.data.graphs import edges_cached
from hydradgl.data.graphset import GraphSet, GraphView
from hydradgl.data.normalize import Normalizer
from hydradgl.data.records import DatasetInfo, RawDataset, Structure, TargetInfo
from hydradgl.data.splitfile import load_split
from hydradgl.data.splits import random_split, stratified_split
from hydradgl.data.store import Store, build_store, open_store, packed_chunks
from hydradgl.errors import DataError, PluginError
from hydradgl.plugins import DatasetContext, Registry, get_registry


def default_cache_dir() -> Path:
    return Path(os.environ.get("HYDRADGL_CACHE", Path.home() / ".cache" / "hydradgl"))


def composition(numbers: np.ndarray) -> str:
    """``Fe12Pt20``-style label, elements by increasing proton number."""
    zs, counts = np.unique(numbers, return_counts=True)
    return "".join(f"{chemical_symbols[int(z)]}{int(c)}" for z, c in zip(zs, counts))


def check_finite(raw: RawDataset | Iterable[Structure]) -> None:
    """NaN or infinite targets are refused, naming the structure's source."""
    for s in getattr(raw, "structures", raw):
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
    return GraphSet(numbers=numbers, node_inputs=inputs, node_ptr=node_ptr,
                    src=np.concatenate(src), dst=np.concatenate(dst), vec=vec_all,
                    dist=np.linalg.norm(vec_all, axis=1).astype(np.float32), edge_ptr=edge_ptr,
                    graph_targets=graph_t, node_targets=node_t,
                    compositions=[composition(s.numbers) for s in structures],
                    sources=[s.source for s in structures])


@dataclass
class LoadedData:
    """The whole dataset as packed graphs with physical targets, before any split.

    ``graphs`` are read on demand from the processed cache ``store``, which also holds the statistics
    the split needs (train-only ranges and degree histogram, computed from per-graph summaries).
    """

    graphs: GraphSet
    targets: dict[str, TargetInfo]
    node_inputs: dict[str, int]
    log: list[str] = field(default_factory=list)
    store: Store | None = None


def pack_checked(structures: list[Structure], targets: dict[str, TargetInfo], node_inputs: dict[str, int],
                 cfg: RunConfig) -> GraphSet:
    """:func:`pack` for one chunk of a dataset, refusing NaN targets and structures lacking a target."""
    check_finite(structures)
    for s in structures:
        missing = [k for k in targets if k not in s.targets]
        if missing:
            raise DataError(f"{s.source}: no value for target(s) {', '.join(missing)}")
    return pack(structures, targets, node_inputs, cfg)


def loaded_from_store(stored: Store) -> LoadedData:
    """An opened cache folder as LoadedData."""
    notes = [f"processed graphs read from cache {stored.folder}; notes from when it was built:",
             *(f"  {note}" for note in stored.manifest["log"])]
    return LoadedData(stored.graphs, stored.targets, stored.manifest["node_inputs"], notes, stored)


def load_dataset(cfg: RunConfig, registry: Registry | None = None, log: Callable[[str], None] | None = None,
                 workers: int = 1) -> LoadedData:
    """Packed graphs of the configured dataset, from the processed cache when it is valid.

    A missing or invalid cache is (re)built streaming, ``workers`` processes packing graphs.
    """
    registry = registry or get_registry()
    emit = log or (lambda note: None)
    spec = registry.dataset(cfg.dataset.name)
    options = parse_options(spec.options, cfg.dataset.options, "dataset.options", plugin=spec.name)
    cache_dir = Path(cfg.dataset.cache_dir or default_cache_dir())
    context = DatasetContext(cache_dir=cache_dir, skip_bad_files=cfg.dataset.skip_bad_files)
    notes: list[str] = []
    fingerprint = spec.fingerprint(options, context) if spec.fingerprint else None
    folder = cache_dir / "processed" / f"{spec.name}-{cache.cache_key(fingerprint, cfg.graph)}" if fingerprint else None
    if folder is not None:
        cached = open_store(folder)
        if isinstance(cached, Store):
            loaded = loaded_from_store(cached)
            for note in loaded.log:
                emit(note)
            return loaded
        if folder.with_suffix(".npz").exists():
            notes.append(f"cache {folder.with_suffix('.npz')} has the old single-file format: rebuilding it as {folder}")
        elif cached != "missing":
            notes.append(f"cache {folder} is {cached}: rebuilding it")
    raw = spec.factory(options, context)
    folder = folder or cache_dir / "processed" / f"{spec.name}-{cache.cache_key(raw.fingerprint, cfg.graph)}"
    pack_chunk = partial(pack_checked, targets=raw.targets, node_inputs=raw.node_inputs, cfg=cfg)
    stored = build_store(folder, packed_chunks(raw.structures, pack_chunk, workers=workers), raw.targets,
                         raw.node_inputs, lambda: [*notes, *raw.log, *(f"skipped: {s}" for s in raw.skipped)])
    folder.with_suffix(".npz").unlink(missing_ok=True)
    notes = [*stored.manifest["log"], f"processed graphs written to cache {folder}"]
    for note in notes:
        emit(note)
    return LoadedData(stored.graphs, raw.targets, raw.node_inputs, notes, stored)


def assign_species(graphs: GraphSet, species: list[int], where: str = "",
                   present: Iterable[int] | None = None) -> GraphSet:
    """Set ``graphs.species_lookup`` (proton number -> index into ``species``); DataError for an element
    not in it. ``present`` (the elements the graphs hold, if known) spares a pass over all atoms."""
    lookup = np.full(119, -1, dtype=np.int64)
    lookup[species] = np.arange(len(species))
    present = np.unique(graphs.numbers) if present is None else np.asarray(list(present), dtype=np.int64)
    unknown = present[lookup[present] < 0]
    if len(unknown):
        atom = int(np.flatnonzero(np.isin(graphs.numbers, unknown))[0])
        z = int(graphs.numbers[atom])
        graph = int(np.searchsorted(graphs.node_ptr, atom, side="right") - 1)
        source = graphs.sources[graph] if len(graphs.sources) else where
        raise DataError(f"{source}: element {chemical_symbols[z]} (Z={z}) "
                        f"is not among the elements the model was trained on: {species}")
    graphs.species_lookup = lookup
    return graphs


@dataclass
class PreparedData:
    """Views of the split (targets normalized when batches are read) and the DatasetInfo."""

    info: DatasetInfo
    train: GraphView
    val: GraphView
    test: GraphView
    log: list[str] = field(default_factory=list)


def prepare_data(cfg: RunConfig, registry: Registry | None = None,
                 log: Callable[[str], None] | None = None, split: Path | None = None) -> PreparedData:
    """Normalized, split views of the dataset plus the DatasetInfo a model needs.

    ``split`` names a saved split file (hydradgl/data/splitfile.py) to use instead of splitting.
    """
    return split_dataset(load_dataset(cfg, registry, log), cfg, log, split)


def split_dataset(data: LoadedData, cfg: RunConfig, log: Callable[[str], None] | None = None,
                  split: Path | None = None) -> PreparedData:
    """:func:`prepare_data` after loading: split, training-split statistics (streamed), normalizing views."""
    graphs, stored = data.graphs, data.store
    species = stored.species
    assign_species(graphs, species, present=species)
    if split is not None:
        parts = load_split(split, len(graphs))
    elif cfg.split.method == "stratified":
        parts = stratified_split(graphs.compositions, cfg.split.fractions, cfg.split.seed)
    else:
        parts = random_split(len(graphs), cfg.split.fractions, cfg.split.seed)
    train, val, test = (GraphView(graphs, p) for p in parts)
    if len(train) == 0:
        raise DataError(f"dataset {cfg.dataset.name!r} has no training graphs ({len(graphs)} graphs in all)")
    lo, hi = stored.target_range(train.rows)
    info = DatasetInfo(species=species, node_inputs=data.node_inputs, targets=data.targets,
                       target_min=lo, target_max=hi, degree_histogram=stored.degree_histogram(train.rows).tolist(),
                       cutoff=cfg.graph.radius)
    norm = Normalizer.from_info(info)
    how = f"read from {split}" if split is not None else cfg.split.method
    split_note = f"split ({how}): {len(train)} train, {len(val)} val, {len(test)} test"
    if log is not None:
        log(split_note)
    notes = [*data.log, split_note]
    return PreparedData(info, *(part.with_normalizer(norm) for part in (train, val, test)), notes)


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
