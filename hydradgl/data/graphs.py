"""Radius graphs: neighbour lists (ASE for periodic images, a k-d tree for clusters), optional max
neighbours, no self loops; geometry and the expected edge count are checked before anything is allocated."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list
from scipy.spatial import cKDTree

from hydradgl.config import GraphConfig
from hydradgl.data.records import Structure
from hydradgl.errors import DataError

MAX_EDGES = 20_000_000  # per structure: beyond this the neighbour search alone needs several GiB


def check_geometry(structure: Structure, periodic: bool) -> None:
    """Positions (n, 3) and finite; a cell 3x3, finite, and of non-zero volume where it makes images."""
    where = structure.source or "a structure"
    positions = np.asarray(structure.positions)
    if structure.n_atoms == 0:
        raise DataError(f"{where}: no atoms")
    if positions.shape != (structure.n_atoms, 3):
        raise DataError(f"{where}: positions have shape {positions.shape}, expected ({structure.n_atoms}, 3)")
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if bad.size:
        raise DataError(f"{where}: atom {bad[0]} has a NaN or infinite position {positions[bad[0]].tolist()} "
                        f"({bad.size} atom(s) in all)")
    if structure.cell is None:
        return
    cell = np.asarray(structure.cell, dtype=float)
    if cell.shape != (3, 3) or not np.isfinite(cell).all():
        raise DataError(f"{where}: the cell must be 3 finite lattice vectors of 3 components (3x3), got "
                        f"{cell.tolist()}")
    scale = float(np.prod(np.linalg.norm(cell, axis=1)))
    if periodic and any(structure.pbc) and abs(np.linalg.det(cell)) <= 1e-9 * max(scale, 1.0):
        raise DataError(f"{where}: the cell {cell.tolist()} has zero volume, so its periodic images would "
                        "overlap; give 3 independent lattice vectors or set graph.periodic: false")


def estimated_edges(structure: Structure, pbc: tuple[bool, bool, bool], radius: float) -> float:
    """Edges a radius graph will have, from the atom density (exact enough to refuse absurd settings)."""
    n = structure.n_atoms
    sphere = 4.0 / 3.0 * np.pi * radius**3
    if any(pbc) and structure.cell is not None:  # periodic axes come with a cell (check_geometry)
        volume = abs(np.linalg.det(structure.cell))
        return n * n / volume * sphere
    extent = np.ptp(structure.positions, axis=0) if n else np.zeros(3)
    volume = float(np.prod(np.maximum(extent, radius)))  # a flat or small cluster still fills the sphere
    return n * min(n - 1, n / volume * sphere)


def neighbour_edges(structure: Structure, graph: GraphConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed edges (src, dst, vec) with ``vec = pos[dst] - (pos[src] + image shift)``.

    Every neighbour pair appears in both directions (unless ``max_neighbours`` keeps only one side).
    With periodic images, a neighbour reached through several images yields several edges, and an
    atom's own image within the cutoff is a neighbour; the atom itself is not. A structure without
    periodic axes is searched inside its bounding box (ASE bins atoms by the cell: with a zero cell its
    search is quadratic in the atoms).
    """
    periodic = graph.periodic and structure.cell is not None
    check_geometry(structure, periodic)
    pbc = structure.pbc if periodic else (False, False, False)
    expected = estimated_edges(structure, pbc, graph.radius)
    if expected > MAX_EDGES:
        raise DataError(f"{structure.source}: graph.radius {graph.radius} A would give about {expected:.2g} edges "
                        f"for its {structure.n_atoms} atoms (limit {MAX_EDGES:.0e}); lower graph.radius "
                        "(graph.max_neighbours trims edges only after the search)")
    if any(pbc):
        pairs = _small_cell_pairs(np.asarray(structure.positions, dtype=float),
                                  np.asarray(structure.cell, dtype=float), pbc, graph.radius)
        if pairs is not None:
            i, j, d, disp = pairs
        else:
            atoms = Atoms(numbers=structure.numbers, positions=structure.positions, cell=structure.cell, pbc=pbc)
            i, j, d, disp = neighbor_list("ijdD", atoms, graph.radius, self_interaction=False)
    else:
        i, j, d, disp = _cluster_pairs(np.asarray(structure.positions, dtype=float), graph.radius)
    # ASE: disp = pos[j] + shift - pos[i]. Messages flow from neighbour j (src) to atom i (dst).
    src, dst, vec, dist = j, i, -disp, d
    if graph.max_neighbours is not None:
        order = np.lexsort((src, dist, dst))  # by receiving atom, then distance, then neighbour index
        src, dst, vec, dist = src[order], dst[order], vec[order], dist[order]
        starts = np.searchsorted(dst, dst, side="left")
        keep = (np.arange(len(dst)) - starts) < graph.max_neighbours
        src, dst, vec = src[keep], dst[keep], vec[keep]
    return src.astype(np.int64), dst.astype(np.int64), vec


SMALL_CELL_PAIRS = 1_000_000  # candidate (atom, atom, image) triples below which all are compared at once


def _small_cell_pairs(positions: np.ndarray, cell: np.ndarray, pbc: tuple[bool, bool, bool],
                      radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Like ASE's ``neighbor_list("ijdD")`` with periodic images, by comparing every atom pair in every
    image that can reach the cutoff: vectorized, so much faster than ASE's binning on cells of tens of
    atoms (an MD step of the ASE calculator). None when the candidates exceed
    ``SMALL_CELL_PAIRS``: ASE's linear-time binning is then the better tool."""
    n = len(positions)
    inverse = np.linalg.inv(cell)
    # images per axis: the cutoff over the distance between lattice planes (1 / |reciprocal vector|)
    widths = 1.0 / np.linalg.norm(inverse.T, axis=1)
    reach = [int(np.ceil(radius / w)) if periodic else 0 for w, periodic in zip(widths, pbc)]
    n_images = int(np.prod([2 * k + 1 for k in reach]))
    if n * n * n_images > SMALL_CELL_PAIRS:
        return None
    wrapped = positions - np.floor(positions @ inverse * np.asarray(pbc)) @ cell  # periodic axes into [0, 1)
    shifts = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in reach], indexing="ij"), -1).reshape(-1, 3)
    translations = shifts @ cell
    # |wrapped[j] + t_s - wrapped[i]|^2 expanded: one (n * n, 3) x (3, images) product finds the candidates
    # (a hair beyond the cutoff), then their vectors and distances are formed directly. Indexed (i, j, s),
    # so nonzero lists them in ASE's order.
    pair = wrapped[None, :, :] - wrapped[:, None, :]
    squared = (np.einsum("ijk,ijk->ij", pair, pair)[:, :, None] + 2.0 * (pair @ translations.T)
               + np.einsum("sk,sk->s", translations, translations))
    candidate = squared < radius * radius * (1 + 1e-9) + 1e-9
    candidate[np.arange(n), np.arange(n), n_images // 2] = False  # the atom itself (zero shift)
    i, j, s = np.nonzero(candidate)
    disp = (wrapped[j] + translations[s]) - wrapped[i]
    keep = np.einsum("ek,ek->e", disp, disp) < radius * radius
    i, j, disp = i[keep], j[keep], disp[keep]
    return i, j, np.linalg.norm(disp, axis=1), disp


def _cluster_pairs(positions: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Like ASE's ``neighbor_list("ijdD")`` without periodic images, via a k-d tree: O(n log n), where
    ASE with a zero cell compares all pairs, in quadratic time and memory."""
    pairs = cKDTree(positions).query_pairs(radius, output_type="ndarray")
    i = np.concatenate([pairs[:, 0], pairs[:, 1]])
    j = np.concatenate([pairs[:, 1], pairs[:, 0]])
    order = np.lexsort((j, i))
    i, j = i[order], j[order]
    disp = positions[j] - positions[i]
    return i, j, np.linalg.norm(disp, axis=1), disp


def edges_cached(structure: Structure, graph: GraphConfig, memo: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`neighbour_edges` in the stored dtypes (int32 atom indices, float32 vectors), computed once
    per distinct geometry (many alloy configurations share one)."""
    key = (structure.positions.tobytes(), None if structure.cell is None else structure.cell.tobytes(),
           structure.pbc)
    if key not in memo:
        src, dst, vec = neighbour_edges(structure, graph)
        memo[key] = src.astype(np.int32), dst.astype(np.int32), vec.astype(np.float32)
    return memo[key]
