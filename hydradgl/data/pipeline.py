"""From a config to normalized train/val/test GraphSets: load (or reuse the cache), build graphs, split.

With a saved run's ``DatasetInfo`` (its data contract) nothing is fitted: the model's species table,
graph settings, targets and normalization are applied to the data, so other data is seen exactly as
the model was trained to see it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

from hydradgl.config import GraphConfig, RunConfig
from hydradgl.configio import parse_options
from hydradgl.data import cache
from hydradgl.data.graphset import GraphSet, GraphView
from hydradgl.data.normalize import Normalizer
from hydradgl.data.packing import assign_species, check_complete, check_finite, pack
from hydradgl.data.records import DatasetInfo, RawDataset, Structure, TargetInfo
from hydradgl.data.splitfile import load_split
from hydradgl.data.splits import random_split, stratified_split
from hydradgl.data.store import Store, open_store
from hydradgl.data.store_build import build_store, memory_available, packed_chunks
from hydradgl.errors import DataError
from hydradgl.plugins import DatasetContext, Registry, get_registry


def default_cache_dir() -> Path:
    return Path(os.environ.get("HYDRADGL_CACHE", Path.home() / ".cache" / "hydradgl"))


def requested_targets(cfg: RunConfig) -> frozenset[str]:
    """The dataset targets the configured heads predict (passed to dataset factories)."""
    return frozenset(h.target_name for h in cfg.heads)


@dataclass
class LoadedData:
    """The whole dataset as packed graphs with physical targets, before any split.

    ``graphs`` are read on demand from the processed cache ``store``, which also holds the statistics
    the split needs (train-only ranges and degree histogram, computed from per-graph summaries).
    """

    graphs: GraphSet
    targets: dict[str, TargetInfo]
    node_inputs: dict[str, int]
    log: list[str]
    store: Store


def pack_checked(structures: list[Structure], targets: dict[str, TargetInfo], node_inputs: dict[str, int],
                 graph: GraphConfig, skip_incomplete: bool = False) -> GraphSet:
    """:func:`pack` for one chunk of a dataset, refusing NaN targets (but a partial target's masked
    frames) and structures lacking a target (left out instead with ``skip_incomplete``: the build counts them)."""
    check_finite(structures, targets)
    chunk = RawDataset(structures=list(structures), targets=targets, node_inputs=node_inputs)
    check_complete(chunk, skip_incomplete)
    return pack(list(chunk.structures), targets, node_inputs, graph)


def resident(loaded: LoadedData, setting: bool | None) -> LoadedData:
    """``loaded`` with its cache read into memory as ``dataset.in_memory`` says (None: when the arrays
    take at most a quarter of the available memory divided among this node's torchrun processes)."""
    stored = loaded.store
    if setting is None:
        available = memory_available()
        processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        setting = available is not None and stored.nbytes * processes * 4 <= available
    if not setting or stored.in_memory:
        return loaded
    stored = stored.read_into_memory()
    note = f"processed graphs read into memory ({stored.nbytes / 1e6:.0f} MB; dataset.in_memory)"
    return replace(loaded, graphs=stored.graphs, store=stored, log=[*loaded.log, note])


def loaded_from_store(stored: Store, notes: Iterable[str] = (), how: str = "") -> LoadedData:
    """An opened cache folder as LoadedData; the build's notes (reference energies, skipped files)
    still hold, so they are repeated, saying they are from then."""
    log = [*notes, f"processed graphs read from cache {stored.folder}{how}; notes from when it was built:",
           *(f"  {note}" for note in stored.manifest["log"])]
    return LoadedData(stored.graphs, stored.targets, stored.manifest["node_inputs"], log, stored)


def _open_cached(folder: Path, notes: list[str]) -> Store | None:
    """The valid cache folder ``folder``, else None with a note saying why it is rebuilt."""
    cached = open_store(folder)
    if isinstance(cached, Store):
        return cached
    if folder.with_suffix(".npz").exists():
        notes.append(f"cache {folder.with_suffix('.npz')} has the old single-file format: rebuilding it as {folder}")
    elif cached != "missing":
        notes.append(f"cache {folder} is {cached}: rebuilding it")
    return None


def _uncached_folder(name: str) -> Path:
    """A private folder for the graphs of a dataset that cannot be cached, removed when the process ends."""
    scratch = Path(tempfile.mkdtemp(prefix="hydradgl-uncached-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    return scratch / name


def load_dataset(cfg: RunConfig, registry: Registry | None = None, log: Callable[[str], None] | None = None,
                 graph: GraphConfig | None = None, workers: int = 1) -> LoadedData:
    """Packed graphs of the configured dataset (graph settings ``graph``, default the config's).

    The processed cache is keyed by the plugin's cheap ``fingerprint`` when it has one (the raw files
    are then not read at all), else by ``RawDataset.fingerprint`` after the factory ran (graph building
    is still saved); a plugin that gives neither is not cached (its graphs go to a private temporary
    folder). A missing or invalid cache is (re)built streaming, ``workers`` processes packing graphs.
    """
    registry = registry or get_registry()
    graph = graph or cfg.graph
    emit = log or (lambda note: None)
    spec = registry.dataset(cfg.dataset.name)
    options = parse_options(spec.options, cfg.dataset.options, "dataset.options", plugin=spec.name)
    cache_dir = Path(cfg.dataset.cache_dir or default_cache_dir())
    context = DatasetContext(cache_dir=cache_dir, skip_bad_files=cfg.dataset.skip_bad_files,
                             targets=requested_targets(cfg))

    def cache_folder(fingerprint: str) -> Path:
        key = cache.cache_key(f"{fingerprint}|skip_incomplete={cfg.dataset.skip_incomplete}", graph)
        return cache_dir / "processed" / f"{spec.name}-{key}"

    notes: list[str] = []
    folder = cache_folder(spec.fingerprint(options, context)) if spec.fingerprint else None
    cached = _open_cached(folder, notes) if folder is not None else None
    how = ""
    if cached is None:
        raw = spec.factory(options, context)
        if isinstance(raw.structures, list):  # else checked chunk by chunk while the cache is built
            check_finite(raw)
            check_complete(raw, cfg.dataset.skip_incomplete)
        if folder is None and raw.fingerprint:
            folder = cache_folder(raw.fingerprint)
            cached = _open_cached(folder, notes)
            how = " (raw files read again: the dataset plugin has no cheap fingerprint)"
    if cached is not None:
        loaded = resident(loaded_from_store(cached, notes, how), cfg.dataset.in_memory)
        for note in loaded.log:
            emit(note)
        return loaded
    uncached = folder is None
    if folder is None:
        folder = _uncached_folder(spec.name)
    count = {"read": 0, "packed": 0}  # structures read / graphs packed (skip_incomplete on a generator)

    def counted(structures: Iterable[Structure]) -> Iterator[Structure]:
        for s in structures:
            count["read"] += 1
            yield s

    def chunks() -> Iterator[GraphSet]:
        pack_chunk = partial(pack_checked, targets=raw.targets, node_inputs=raw.node_inputs, graph=graph,
                             skip_incomplete=cfg.dataset.skip_incomplete)
        for chunk in packed_chunks(counted(raw.structures), pack_chunk, workers=workers):
            count["packed"] += len(chunk)
            yield chunk

    def build_notes() -> list[str]:
        skipped = count["read"] - count["packed"]
        return [*notes, *raw.log, *(f"skipped: {s}" for s in raw.skipped),
                *([f"skipped {skipped} structure(s) lacking a target"] if skipped else [])]

    try:
        stored = build_store(folder, chunks(), raw.targets, raw.node_inputs, build_notes)
    except OSError as exc:
        raise cache.unwritable_cache(exc) from None
    folder.with_suffix(".npz").unlink(missing_ok=True)
    notes = [*stored.manifest["log"], f"processed graphs not cached: dataset plugin {spec.name!r} gives no fingerprint"
             if uncached else f"processed graphs written to cache {folder}"]
    loaded = resident(LoadedData(stored.graphs, raw.targets, raw.node_inputs, notes, stored), cfg.dataset.in_memory)
    for note in loaded.log:
        emit(note)
    return loaded


@dataclass
class PreparedData:
    """Views of the split (targets normalized when batches are read) and the DatasetInfo."""

    info: DatasetInfo
    train: GraphView
    val: GraphView
    test: GraphView
    log: list[str] = field(default_factory=list)


def _apply_contract(data: LoadedData, contract: DatasetInfo, dataset: str) -> GraphSet:
    """The data's graphs with only the targets the model knows; DataError where the data disagrees."""
    if data.node_inputs != contract.node_inputs:
        raise DataError(f"dataset {dataset!r} gives per-atom inputs {data.node_inputs or 'none'}, but the model "
                        f"was trained with {contract.node_inputs or 'none'}")
    for name, target in data.targets.items():
        known = contract.targets.get(name)
        if known is not None and (known.level, known.dim, known.unit) != (target.level, target.dim, target.unit):
            raise DataError(f"dataset {dataset!r}: target {name!r} is {target.level}-level, dim {target.dim}, "
                            f"unit {target.unit or 'none'!r}, but the model's is {known.level}-level, dim {known.dim}, "
                            f"unit {known.unit or 'none'!r}")
    graphs = data.graphs
    return graphs.with_targets({k: v for k, v in graphs.graph_targets.items() if k in contract.targets},
                               {k: v for k, v in graphs.node_targets.items() if k in contract.targets})


def prepare_data(cfg: RunConfig, registry: Registry | None = None, log: Callable[[str], None] | None = None,
                 contract: DatasetInfo | None = None, split: Path | None = None) -> PreparedData:
    """Normalized, split views of the dataset plus the DatasetInfo a model needs.

    Without ``contract`` the species table and min-max statistics are fitted (on the training split)
    and the graphs follow ``cfg.graph``. With a saved run's ``contract`` they are its own: an element it
    never saw is a DataError naming the element and file, and targets it does not know are left out.
    ``split`` names a saved split file (hydradgl/data/splitfile.py) to use instead of splitting.
    """
    data = load_dataset(cfg, registry, log, graph=contract.graph if contract is not None else None)
    return split_dataset(data, cfg, log, split, contract)


def split_dataset(data: LoadedData, cfg: RunConfig, log: Callable[[str], None] | None = None,
                  split: Path | None = None, contract: DatasetInfo | None = None) -> PreparedData:
    """:func:`prepare_data` after loading: split, training-split statistics (streamed), normalizing views."""
    stored = data.store
    graphs = data.graphs if contract is None else _apply_contract(data, contract, cfg.dataset.name)
    species = contract.species if contract is not None else stored.species
    assign_species(graphs, species, present=stored.species)
    parts: tuple[np.ndarray, ...]
    if split is not None:
        parts = load_split(split, len(graphs))
    elif cfg.split.method == "stratified":
        parts = stratified_split(graphs.compositions, cfg.split.fractions, cfg.split.seed)
    else:
        parts = random_split(len(graphs), cfg.split.fractions, cfg.split.seed)
    train, val, test = (GraphView(graphs, p) for p in parts)
    if contract is not None:
        info = contract
    else:
        if len(train) == 0:
            raise DataError(f"dataset {cfg.dataset.name!r} has no training graphs ({len(graphs)} graphs in all)")
        lo, hi = stored.target_range(train.rows)
        unseen = [name for name, low in lo.items() if not np.all(np.isfinite(low))]
        if unseen:
            raise DataError(f"dataset {cfg.dataset.name!r}: target(s) {', '.join(map(repr, unseen))} have no value in "
                            f"the training split ({len(train)} structures, all masked); give more frames with them, "
                            "or train without them")
        info = DatasetInfo(species=species, node_inputs=data.node_inputs, targets=data.targets,
                           target_min=lo, target_max=hi, degree_histogram=stored.degree_histogram(train.rows).tolist(),
                           cutoff=cfg.graph.radius, graph=cfg.graph)
    norm = Normalizer.from_info(info)
    how = f"read from {split}" if split is not None else cfg.split.method
    split_note = f"split ({how}): {len(train)} train, {len(val)} val, {len(test)} test"
    if log is not None:
        log(split_note)
    notes = [*data.log, split_note]
    return PreparedData(info, train.with_normalizer(norm), val.with_normalizer(norm), test.with_normalizer(norm), notes)
