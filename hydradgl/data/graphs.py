"""Radius graphs: neighbour lists (ASE) with periodic images, optional max neighbours, no self loops."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

from hydradgl.config import GraphConfig
from hydradgl.data.records import Structure


def neighbour_edges(structure: Structure, graph: GraphConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed edges (src, dst, vec) with ``vec = pos[dst] - (pos[src] + image shift)``.

    Every neighbour pair appears in both directions (unless ``max_neighbours`` keeps only one side).
    With periodic images, a neighbour reached through several images yields several edges, and an
    atom's own image within the cutoff is a neighbour; the atom itself is not.
    """
    pbc = structure.pbc if graph.periodic and structure.cell is not None else (False, False, False)
    cell = structure.cell if structure.cell is not None else np.zeros((3, 3))
    atoms = Atoms(numbers=structure.numbers, positions=structure.positions, cell=cell, pbc=pbc)
    i, j, d, disp = neighbor_list("ijdD", atoms, graph.radius, self_interaction=False)
    # ASE: disp = pos[j] + shift - pos[i]. Messages flow from neighbour j (src) to atom i (dst).
    src, dst, vec, dist = j, i, -disp, d
    if graph.max_neighbours is not None:
        order = np.lexsort((src, dist, dst))  # by receiving atom, then distance, then neighbour index
        src, dst, vec, dist = src[order], dst[order], vec[order], dist[order]
        starts = np.searchsorted(dst, dst, side="left")
        keep = (np.arange(len(dst)) - starts) < graph.max_neighbours
        src, dst, vec = src[keep], dst[keep], vec[keep]
    return src.astype(np.int64), dst.astype(np.int64), vec


def edges_cached(structure: Structure, graph: GraphConfig, memo: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`neighbour_edges`, computed once per distinct geometry (many alloy configurations share one)."""
    key = (structure.positions.tobytes(), None if structure.cell is None else structure.cell.tobytes(),
           structure.pbc)
    if key not in memo:
        memo[key] = neighbour_edges(structure, graph)
    return memo[key]
