"""Radius graphs: brute-force neighbour reference over periodic images, invariances, max neighbours."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from hydradgl.config import GraphConfig
from hydradgl.data import graphs
from hydradgl.data.graphs import neighbour_edges
from hydradgl.data.records import Structure


def brute_force(pos, cell, pbc, cutoff):
    """Every (src, dst, rounded distance) with |pos[dst] - pos[src] - shift| < cutoff, by explicit loops."""
    spread = np.ptp(pos @ np.linalg.inv(cell), axis=0)  # atoms may lie several cells apart
    reach = [int(np.ceil(cutoff / np.linalg.norm(cell[a]) + spread[a])) + 1 if pbc[a] else 0 for a in range(3)]
    edges = Counter()
    for i, j in itertools.product(range(len(pos)), repeat=2):
        for n in itertools.product(*(range(-r, r + 1) for r in reach)):
            if i == j and not any(n):
                continue
            shift = np.array(n) @ cell
            d = np.linalg.norm(pos[i] - (pos[j] + shift))
            if d < cutoff:
                edges[(j, i, round(d, 5))] += 1
    return edges


def edge_multiset(structure, graph):
    src, dst, vec = neighbour_edges(structure, graph)
    return Counter((int(s), int(d), round(float(np.linalg.norm(v)), 5)) for s, d, v in zip(src, dst, vec))


def random_structure(n, cell, pbc, seed):
    rng = np.random.default_rng(seed)
    return Structure(numbers=rng.integers(1, 30, n), positions=rng.random((n, 3)) @ cell, cell=cell, pbc=pbc)


@pytest.mark.parametrize("search", ["all pairs", "ase"])  # small cells: every pair at once; else ASE's bins
@pytest.mark.parametrize("cell,pbc,cutoff,outside", [
    (np.diag([6.0, 7.0, 8.0]), (True, True, True), 4.0, False),
    (np.diag([2.5, 3.0, 2.8]), (True, True, True), 5.0, False),  # cutoff larger than the cell: many images
    (np.array([[3.0, 0, 0], [1.0, 3.0, 0], [0.5, 0.3, 3.5]]), (True, False, True), 4.5, False),  # triclinic, mixed
    (np.array([[3.0, 0, 0], [1.0, 3.0, 0], [0.5, 0.3, 3.5]]), (True, True, True), 4.5, True),  # atoms outside the cell
])
def test_periodic_neighbours_match_brute_force(cell, pbc, cutoff, outside, search, monkeypatch):
    if search == "ase":
        monkeypatch.setattr(graphs, "SMALL_CELL_PAIRS", 0)
    s = random_structure(5, cell, pbc, seed=1)
    if outside:
        s.positions[:] += np.array([[2, -1, 0], [0, 0, 3], [-2, 1, 1], [0, 0, 0], [1, 1, -1]]) @ cell
    assert edge_multiset(s, GraphConfig(radius=cutoff, periodic=True)) == brute_force(s.positions, cell, pbc, cutoff)


def test_small_cell_has_self_images_and_repeated_neighbours():
    s = Structure(numbers=np.array([26, 78]), positions=np.array([[0, 0, 0], [1.0, 1.0, 1.0]]),
                  cell=np.eye(3) * 2.0, pbc=(True, True, True))
    edges = edge_multiset(s, GraphConfig(radius=2.5, periodic=True))
    assert edges[(0, 0, 2.0)] == 6  # an atom's own six nearest images
    assert edges[(1, 0, round(np.sqrt(3), 5))] == 8  # the other atom through eight images


def test_non_periodic_ignores_cell_and_has_no_self_loops():
    s = random_structure(6, np.eye(3) * 3.0, (True, True, True), seed=2)
    src, dst, vec = neighbour_edges(s, GraphConfig(radius=10.0, periodic=False))
    assert len(src) == 6 * 5 and (src != dst).all()
    np.testing.assert_allclose(vec, s.positions[dst] - s.positions[src], atol=1e-12)


def test_translation_and_permutation_invariance():
    cell = np.diag([5.0, 5.5, 6.0])
    s = random_structure(7, cell, (True, True, True), seed=3)
    g = GraphConfig(radius=4.0, periodic=True)
    base = edge_multiset(s, g)
    moved = Structure(numbers=s.numbers, positions=s.positions + np.array([1.3, -2.1, 7.7]), cell=cell, pbc=s.pbc)
    assert edge_multiset(moved, g) == base
    perm = np.random.default_rng(0).permutation(7)
    inverse = np.argsort(perm)  # new index of old atom k is inverse[k]
    permuted = Structure(numbers=s.numbers[perm], positions=s.positions[perm], cell=cell, pbc=s.pbc)
    mapped = Counter({(int(inverse[a]), int(inverse[b]), d): c for (a, b, d), c in base.items()})
    assert edge_multiset(permuted, g) == mapped


def test_max_neighbours_keeps_nearest():
    s = random_structure(8, np.eye(3) * 4.0, (False,) * 3, seed=4)
    full_src, full_dst, full_vec = neighbour_edges(s, GraphConfig(radius=20.0))
    src, dst, vec = neighbour_edges(s, GraphConfig(radius=20.0, max_neighbours=3))
    for atom in range(8):
        dists = np.sort(np.linalg.norm(full_vec[full_dst == atom], axis=1))[:3]
        np.testing.assert_allclose(np.sort(np.linalg.norm(vec[dst == atom], axis=1)), dists)
