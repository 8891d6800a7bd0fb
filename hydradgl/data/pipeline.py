"""From a config to normalized train/val/test GraphSets: load (or reuse the cache), build graphs, split.

With a saved run's ``DatasetInfo`` (its data contract) nothing is fitted: the model's species table,
graph settings, targets and normalization are applied to the data, so other data is seen exactly as
the model was trained to see it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from hydradgl.config import GraphConfig, RunConfig
from hydradgl.configio import parse_options
from hydradgl.data import cache
from hydradgl.data.graphset import GraphSet
from hydradgl.data.normalize import Normalizer, fit_min_max
from hydradgl.data.packing import assign_species, check_complete, check_finite, pack
from hydradgl.data.records import DatasetInfo, TargetInfo
from hydradgl.data.splits import random_split, stratified_split
from hydradgl.errors import DataError
from hydradgl.plugins import DatasetContext, Registry, get_registry


def default_cache_dir() -> Path:
    return Path(os.environ.get("HYDRADGL_CACHE", Path.home() / ".cache" / "hydradgl"))


def requested_targets(cfg: RunConfig) -> frozenset[str]:
    """The dataset targets the configured heads predict (passed to dataset factories)."""
    return frozenset(h.target_name for h in cfg.heads)


@dataclass
class LoadedData:
    """The whole dataset as packed graphs with physical targets, before any split."""

    graphs: GraphSet
    targets: dict[str, TargetInfo]
    node_inputs: dict[str, int]
    log: list[str] = field(default_factory=list)


def _from_cache(path: Path, notes: list[str], reread: bool = False) -> LoadedData | None:
    """The cached dataset at ``path`` if it is valid; else None, with a note when the file is bad."""
    loaded = cache.load(path)
    if isinstance(loaded, str):
        if loaded != "missing":
            notes.append(f"cache {path} is {loaded}: rebuilding it")
        return None
    arrays, meta = loaded
    graphs = cache.graphs_from_arrays(arrays, meta)
    if isinstance(graphs, str):
        notes.append(f"cache {path} is {graphs}: rebuilding it")
        return None
    # The build's notes (reference energies, skipped files) still hold; say they are from then.
    how = " (raw files read again: the dataset plugin has no cheap fingerprint)" if reread else ""
    log = [*notes, f"processed graphs read from cache {path}{how}; notes from when it was built:",
           *(f"  {note}" for note in meta["log"])]
    return LoadedData(graphs, {k: TargetInfo(**v) for k, v in meta["targets"].items()}, meta["node_inputs"], log)


def load_dataset(cfg: RunConfig, registry: Registry | None = None, log: Callable[[str], None] | None = None,
                 graph: GraphConfig | None = None) -> LoadedData:
    """Packed graphs of the configured dataset (graph settings ``graph``, default the config's).

    The processed cache is keyed by the plugin's cheap ``fingerprint`` when it has one (the raw files
    are then not read at all), else by ``RawDataset.fingerprint`` after the factory ran (graph building
    is still saved); a plugin that gives neither is not cached.
    """
    registry = registry or get_registry()
    graph = graph or cfg.graph
    emit = log or (lambda note: None)
    spec = registry.dataset(cfg.dataset.name)
    options = parse_options(spec.options, cfg.dataset.options, "dataset.options", plugin=spec.name)
    cache_dir = Path(cfg.dataset.cache_dir or default_cache_dir())
    context = DatasetContext(cache_dir=cache_dir, skip_bad_files=cfg.dataset.skip_bad_files,
                             targets=requested_targets(cfg))

    def cache_path(fingerprint: str) -> Path:
        key = cache.cache_key(f"{fingerprint}|skip_incomplete={cfg.dataset.skip_incomplete}", graph)
        return cache_dir / "processed" / f"{spec.name}-{key}.npz"

    notes: list[str] = []
    path = cache_path(spec.fingerprint(options, context)) if spec.fingerprint else None
    cached = _from_cache(path, notes) if path is not None else None
    if cached is None:
        raw = spec.factory(options, context)
        check_finite(raw)
        check_complete(raw, cfg.dataset.skip_incomplete)
        if path is None and raw.fingerprint:
            path = cache_path(raw.fingerprint)
            cached = _from_cache(path, notes, reread=True)
    if cached is not None:
        for note in cached.log:
            emit(note)
        return cached
    notes.extend(raw.log)
    notes.extend(f"skipped: {s}" for s in raw.skipped)
    graphs = pack(raw.structures, raw.targets, raw.node_inputs, graph)
    if path is None:
        notes.append(f"processed graphs not cached: dataset plugin {spec.name!r} gives no fingerprint")
    else:
        meta = {"targets": {k: v.model_dump() for k, v in raw.targets.items()}, "node_inputs": raw.node_inputs,
                "compositions": graphs.compositions, "sources": graphs.sources, "log": list(notes)}
        cache.save(path, cache.graphs_to_arrays(graphs), meta)
        notes.append(f"processed graphs written to cache {path}")
    for note in notes:
        emit(note)
    return LoadedData(graphs, raw.targets, raw.node_inputs, notes)


@dataclass
class PreparedData:
    info: DatasetInfo
    train: GraphSet
    val: GraphSet
    test: GraphSet
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
                 contract: DatasetInfo | None = None) -> PreparedData:
    """Normalized, split GraphSets plus the DatasetInfo a model needs.

    Without ``contract`` the species table and min-max statistics are fitted (on the training split)
    and the graphs follow ``cfg.graph``. With a saved run's ``contract`` they are its own: an element it
    never saw is a DataError naming the element and file, and targets it does not know are left out.
    """
    data = load_dataset(cfg, registry, log, graph=contract.graph if contract is not None else None)
    graphs = data.graphs if contract is None else _apply_contract(data, contract, cfg.dataset.name)
    species = contract.species if contract is not None else sorted(int(z) for z in np.unique(graphs.numbers))
    assign_species(graphs, species)
    if cfg.split.method == "stratified":
        parts = stratified_split(graphs.compositions, cfg.split.fractions, cfg.split.seed)
    else:
        parts = random_split(len(graphs), cfg.split.fractions, cfg.split.seed)
    train, val, test = (graphs.subset(p) for p in parts)
    if contract is not None:
        info = contract
    else:
        if len(train) == 0:
            raise DataError(f"dataset {cfg.dataset.name!r} has no training graphs ({len(graphs)} graphs in all)")
        lo, hi = fit_min_max(train)
        info = DatasetInfo(species=species, node_inputs=data.node_inputs, targets=data.targets,
                           target_min=lo, target_max=hi, degree_histogram=train.in_degree_histogram().tolist(),
                           cutoff=cfg.graph.radius, graph=cfg.graph)
    norm = Normalizer.from_info(info)
    split_note = f"split ({cfg.split.method}): {len(train)} train, {len(val)} val, {len(test)} test"
    if log is not None:
        log(split_note)
    notes = [*data.log, split_note]
    return PreparedData(info, norm.apply(train), norm.apply(val), norm.apply(test), notes)
