"""Geometry-free baselines (hydradgl.data.baselines) against hand-built, independently computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from hydradgl.data.baselines import (baseline_rmse, composition_fit_prediction, element_counts,
                                     element_mean_prediction, rmse)
from hydradgl.data.graphset import GraphSet
from hydradgl.data.normalize import Normalizer
from hydradgl.data.records import TargetInfo

CU, AU, AG = 29, 79, 47


def graph_set(structures: list[list[int]], graph_values: list[float], node_values: list[list[float]]) -> GraphSet:
    """Graphs without edges: only elements and targets matter to the baselines."""
    numbers = np.concatenate([np.asarray(s, dtype=np.int64) for s in structures])
    node_ptr = np.concatenate([[0], np.cumsum([len(s) for s in structures])]).astype(np.int64)
    return GraphSet(numbers=numbers, node_inputs=np.zeros((len(numbers), 0)),
                    node_ptr=node_ptr, src=np.zeros(0, np.int64), dst=np.zeros(0, np.int64),
                    vec=np.zeros((0, 3)), dist=np.zeros(0), edge_ptr=np.zeros(len(structures) + 1, np.int64),
                    graph_targets={"E": np.asarray(graph_values, dtype=float).reshape(-1, 1)},
                    node_targets={"e": np.concatenate([np.asarray(v, dtype=float) for v in node_values]).reshape(-1, 1)})


def random_structures(rng, n_graphs: int, sizes=(3, 4, 5, 6)) -> list[list[int]]:
    return [list(rng.choice([CU, AU], size=rng.choice(sizes))) for _ in range(n_graphs)]


def test_element_counts_by_hand():
    g = graph_set([[CU, AU, CU], [AU], [AG, CU]], [0, 0, 0], [[0, 0, 0], [0], [0, 0]])
    np.testing.assert_array_equal(element_counts(g, [CU, AU]), [[2, 1], [0, 1], [1, 0]])  # Ag is not counted


def test_composition_fit_equals_independent_lstsq():
    rng = np.random.default_rng(0)
    train_s, test_s = random_structures(rng, 40), random_structures(rng, 15)
    target = lambda s: 0.3 * s.count(CU) - 1.1 * s.count(AU) + 0.05 * s.count(CU) * s.count(AU) + rng.normal(0, 0.1)  # noqa: E731
    train = graph_set(train_s, [target(s) for s in train_s], [[0] * len(s) for s in train_s])
    test = graph_set(test_s, [target(s) for s in test_s], [[0] * len(s) for s in test_s])

    def features(s):  # written out: 1, n_Cu, n_Au, n_Cu^2, n_Cu n_Au, n_Au^2
        a, b = s.count(CU), s.count(AU)
        return [1, a, b, a * a, a * b, b * b]

    coef, *_ = np.linalg.lstsq(np.array([features(s) for s in train_s], float), train.graph_targets["E"], rcond=None)
    expected = np.array([features(s) for s in test_s], float) @ coef
    np.testing.assert_allclose(composition_fit_prediction(train, test, "E", [CU, AU]), expected, atol=1e-9)


def test_composition_fit_recovers_an_exact_quadratic():
    """Fixed atom count (collinear counts, as in alloy supercells): the minimum-norm fit is still exact."""
    rng = np.random.default_rng(1)
    structures = random_structures(rng, 30, sizes=(8,))
    values = [2.0 * s.count(CU) * s.count(AU) - 0.5 * s.count(AU) for s in structures]
    data = graph_set(structures, values, [[0] * 8 for _ in structures])
    train, test = data.subset(np.arange(20)), data.subset(np.arange(20, 30))
    assert rmse(composition_fit_prediction(train, test, "E", [CU, AU]), test.graph_targets["E"]) < 1e-8


def test_element_mean_by_hand_and_unseen_element():
    train = graph_set([[CU, AU], [CU, CU, AU]], [0, 0], [[1.0, 10.0], [3.0, 5.0, 20.0]])
    test = graph_set([[AU, CU, AG]], [0], [[0.0, 0.0, 0.0]])
    all_mean = (1 + 10 + 3 + 5 + 20) / 5
    np.testing.assert_allclose(element_mean_prediction(train, test, "e")[:, 0], [15.0, 3.0, all_mean])


def test_baseline_rmse_table():
    train = graph_set([[CU, AU], [CU, CU]], [1.0, 3.0], [[1.0, 10.0], [3.0, 5.0]])
    test = graph_set([[AU, AU], [CU, AU]], [0.0, 4.0], [[12.0, 8.0], [2.0, 9.0]])
    targets = {"E": TargetInfo(level="graph"), "e": TargetInfo(level="node"), "absent": TargetInfo(level="node")}
    table = baseline_rmse(train, test, targets)
    assert set(table) == {"E", "e"}
    assert table["E"]["mean"] == pytest.approx(np.sqrt(((0 - 2) ** 2 + (4 - 2) ** 2) / 2))
    assert table["e"]["mean"] == pytest.approx(np.sqrt(np.mean((np.array([12, 8, 2, 9]) - 4.75) ** 2)))
    # per-element means: Cu (1+3+5)/3 = 3, Au 10
    assert table["e"]["composition"] == pytest.approx(np.sqrt(np.mean((np.array([12, 8, 2, 9]) - [10, 10, 3, 10]) ** 2)))


def test_normalizer_restore_inverts_apply(small_prepared):
    norm = Normalizer.from_info(small_prepared.info)
    physical = norm.restore(small_prepared.test)
    again = norm.apply(physical)
    for k, v in small_prepared.test.graph_targets.items():
        np.testing.assert_allclose(again.graph_targets[k], v, atol=1e-6)
    lo, hi = small_prepared.info.target_min["H"][0], small_prepared.info.target_max["H"][0]
    np.testing.assert_allclose(physical.graph_targets["H"], small_prepared.test.graph_targets["H"] * (hi - lo) + lo)
