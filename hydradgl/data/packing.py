"""Structures to one packed GraphSet: checks on the raw targets, radius graphs, species indices."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from ase.data import chemical_symbols

from hydradgl.config import GraphConfig
from hydradgl.data.graphs import edges_cached
from hydradgl.data.graphset import GraphSet
from hydradgl.data.records import RawDataset, Structure, TargetInfo
from hydradgl.errors import DataError


def composition(numbers: np.ndarray) -> str:
    """``Fe12Pt20``-style label, elements by increasing proton number."""
    return _label(np.bincount(numbers))


def _label(counts: np.ndarray) -> str:
    return "".join(f"{chemical_symbols[z]}{counts[z]}" for z in np.flatnonzero(counts))


def compositions(numbers: np.ndarray, node_ptr: np.ndarray) -> list[str]:
    """:func:`composition` of every structure of a packed set (atoms ``node_ptr[g]:node_ptr[g + 1]``),
    each distinct composition labelled once."""
    n_graphs, width = len(node_ptr) - 1, int(numbers.max(initial=0)) + 1
    owner = np.repeat(np.arange(n_graphs), np.diff(node_ptr))
    counts = np.bincount(owner * width + numbers, minlength=n_graphs * width).reshape(n_graphs, width)
    labels: dict[bytes, str] = {}  # count row -> label
    out = []
    for row in counts:
        key = row.tobytes()
        if key not in labels:
            labels[key] = _label(row)
        out.append(labels[key])
    return out


def check_finite(raw: RawDataset | Iterable[Structure], targets: dict[str, TargetInfo] | None = None) -> None:
    """NaN or infinite targets are refused, naming the structure's source. A partial target
    (``TargetInfo.partial``; ``targets`` are the declared ones when ``raw`` is not a RawDataset) may be all
    NaN in a structure (a frame that lacks it, masked), never partly NaN or infinite."""
    declared = raw.targets if isinstance(raw, RawDataset) else targets or {}
    partial = {name for name, info in declared.items() if info.partial}
    for s in raw.structures if isinstance(raw, RawDataset) else raw:
        for name, values in s.targets.items():
            if np.all(np.isfinite(values)) or (name in partial and np.all(np.isnan(values))):
                continue
            raise DataError(f"{s.source}: target {name!r} has NaN or infinite values")


def _sources(structures: list[Structure], limit: int = 3) -> str:
    shown = ", ".join(s.source or "?" for s in structures[:limit])
    return shown + (f" and {len(structures) - limit} more" if len(structures) > limit else "")


def check_complete(raw: RawDataset, skip_incomplete: bool = False) -> None:
    """Every structure must carry every target the dataset declares (nothing is dropped silently).

    With ``skip_incomplete`` the structures lacking one are removed instead, counted in ``raw.log``.
    """
    lacking = {name: [s for s in raw.structures if name not in s.targets] for name in raw.targets}
    lacking = {name: found for name, found in lacking.items() if found}
    if not lacking:
        return
    if not skip_incomplete:
        name, found = next(iter(lacking.items()))
        raise DataError(f"{len(found)} structure(s) lack target {name!r}: {_sources(found)}; fix the files, or "
                        "set dataset.skip_incomplete: true to leave such structures out")
    dropped = {id(s) for found in lacking.values() for s in found}
    raw.structures = [s for s in raw.structures if id(s) not in dropped]
    raw.log.append(f"skipped {len(dropped)} structure(s) lacking a target ("
                   + ", ".join(f"{n}: {len(f)}" for n, f in lacking.items()) + ")")
    if not raw.structures:
        raise DataError("every structure lacks a target: nothing left after dataset.skip_incomplete")


def pack(structures: list[Structure], targets: dict[str, TargetInfo], node_inputs: dict[str, int],
         graph: GraphConfig) -> GraphSet:
    """Build every structure's graph and concatenate everything into one GraphSet (physical targets)."""
    if graph.periodic:
        lacking = next((s for s in structures if s.cell is None), None)
        if lacking is not None:
            raise DataError(f"{lacking.source}: graph.periodic is set but this structure has no lattice; give "
                            "dataset.options.cell (LSMS) or a Lattice (extxyz), or set graph.periodic: false")
    memo: dict = {}
    src, dst, vec, n_nodes, n_edges = [], [], [], [], []
    for s in structures:
        e_src, e_dst, e_vec = edges_cached(s, graph, memo)
        src.append(e_src)
        dst.append(e_dst)
        vec.append(e_vec)
        n_nodes.append(s.n_atoms)
        n_edges.append(len(e_src))
    node_ptr = np.concatenate([[0], np.cumsum(n_nodes)]).astype(np.int64)
    edge_ptr = np.concatenate([[0], np.cumsum(n_edges)]).astype(np.int64)
    vec_all = np.concatenate(vec) if vec else np.zeros((0, 3), np.float32)
    numbers = np.concatenate([s.numbers for s in structures]).astype(np.int64)
    inputs = (np.concatenate([np.concatenate([s.node_inputs[k].reshape(s.n_atoms, -1) for k in node_inputs], axis=1)
                              for s in structures]).astype(np.float32)
              if node_inputs else np.zeros((len(numbers), 0), np.float32))
    graph_t = {k: np.stack([np.asarray(s.targets[k], dtype=np.float32).reshape(-1) for s in structures])
               for k, t in targets.items() if t.level == "graph"}
    node_t = {k: np.concatenate([np.asarray(s.targets[k], dtype=np.float32).reshape(s.n_atoms, -1) for s in structures])
              for k, t in targets.items() if t.level == "node"}
    return GraphSet(numbers=numbers, node_inputs=inputs, node_ptr=node_ptr,
                    src=np.concatenate(src), dst=np.concatenate(dst), vec=vec_all,
                    dist=np.sqrt(np.einsum("ij,ij->i", vec_all, vec_all)), edge_ptr=edge_ptr,
                    graph_targets=graph_t, node_targets=node_t,
                    compositions=compositions(numbers, node_ptr),
                    sources=[s.source for s in structures],
                    cell=np.array([periodic_cell(s, graph) for s in structures], dtype=np.float32).reshape(-1, 3, 3))


def periodic_cell(structure: Structure, graph: GraphConfig) -> np.ndarray:
    """The structure's lattice vectors (rows) where its graph has periodic images along all three axes (the
    stress needs its volume), else zeros."""
    if graph.periodic and structure.cell is not None and all(structure.pbc):
        return np.asarray(structure.cell, dtype=float)
    return np.zeros((3, 3))


def assign_species(graphs: GraphSet, species: list[int], where: str = "",
                   present: Iterable[int] | None = None) -> GraphSet:
    """Set ``graphs.species_lookup`` (proton number -> index into ``species``); DataError naming the
    element and its file for an element not in it (a model never saw it: its embedding row would be
    another element's). ``present`` (the elements the graphs hold, if known: the cache's manifest
    lists them) spares a pass over every atom."""
    lookup = np.full(119, -1, dtype=np.int64)
    lookup[species] = np.arange(len(species))
    present = np.unique(graphs.numbers) if present is None else np.asarray(list(present), dtype=np.int64)
    unknown = present[lookup[present] < 0]
    if len(unknown):
        atom = int(np.flatnonzero(np.isin(np.asarray(graphs.numbers), unknown))[0])
        z = int(graphs.numbers[atom])
        graph = int(np.searchsorted(graphs.node_ptr, atom, side="right") - 1)
        source = graphs.sources[graph] if len(graphs.sources) else where
        known = ", ".join(chemical_symbols[z] for z in species)
        raise DataError(f"{source}: element {chemical_symbols[z]} (Z={z}) "
                        f"is not among the elements the model was trained on ({known}), proton numbers {list(species)}")
    graphs.species_lookup = lookup
    return graphs
