"""Reference predictors that use no geometry, to judge a model's test error against.

- ``mean``: the training mean of each target component (graph or node level).
- ``composition``: for graph targets, a least-squares fit on composition: an intercept, the per-element
  atom counts n_a and their pairwise products n_a n_b (a <= b), i.e. a quadratic in composition; for
  node targets, the training mean of each element (the atom's own element is all it sees).

A model that is not clearly better than ``composition`` has learned little beyond the stoichiometry.
Every function takes GraphSets with targets in physical units and is fitted on ``train`` only. NaN
targets (a partial target's masked frames) are skipped: in the fits and in the errors.
"""

from __future__ import annotations

import numpy as np

from hydradgl.data.graphset import GraphSet, GraphView
from hydradgl.data.records import TargetInfo

BASELINES = ("mean", "composition")


def element_counts(graphs: GraphSet | GraphView, species: list[int]) -> np.ndarray:
    """(G, S) number of atoms of each element of ``species`` (proton numbers) in every graph."""
    zs = np.asarray(species)
    graph_of_node = np.repeat(np.arange(len(graphs)), graphs.num_nodes)
    column = np.minimum(np.searchsorted(zs, graphs.numbers), len(zs) - 1)
    known = zs[column] == graphs.numbers  # elements outside ``species`` are not counted
    counts = np.zeros((len(graphs), len(zs)))
    np.add.at(counts, (graph_of_node[known], column[known]), 1.0)
    return counts


def composition_features(counts: np.ndarray) -> np.ndarray:
    """(G, 1 + S + S(S+1)/2): intercept, counts n_a, and products n_a n_b for a <= b."""
    rows, cols = np.triu_indices(counts.shape[1])
    return np.hstack([np.ones((len(counts), 1)), counts, counts[:, rows] * counts[:, cols]])


def present_rows(values: np.ndarray) -> np.ndarray:
    """(n,) bool: the rows of (n, d) ``values`` with every component finite (NaN: a masked frame)."""
    return np.all(np.isfinite(values), axis=1)


def mean_prediction(train_values: np.ndarray, n: int) -> np.ndarray:
    """(n, d): the training mean of every component (over the present rows), repeated."""
    flat = train_values.reshape(len(train_values), -1).astype(float)
    return np.tile(flat[present_rows(flat)].mean(axis=0), (n, 1))


def composition_fit_prediction(train: GraphSet, test: GraphSet, name: str, species: list[int]) -> np.ndarray:
    """(G_test, d): least-squares fit of graph target ``name`` on ``composition_features`` (minimum norm),
    over the training graphs where it is present."""
    x_train = composition_features(element_counts(train, species))
    y_train = train.graph_targets[name].reshape(len(train), -1).astype(float)
    keep = present_rows(y_train)
    coef, *_ = np.linalg.lstsq(x_train[keep], y_train[keep], rcond=None)
    return composition_features(element_counts(test, species)) @ coef


def element_mean_prediction(train: GraphSet, test: GraphSet, name: str) -> np.ndarray:
    """(N_test, d): the training mean of node target ``name`` over atoms of the same element.

    An element absent from the training split (or whose atoms all lack the target) gets the mean over all
    training atoms that have it.
    """
    y_train = train.node_targets[name].reshape(len(train.numbers), -1).astype(float)
    present = present_rows(y_train)
    prediction = np.broadcast_to(y_train[present].mean(axis=0), (len(test.numbers), y_train.shape[1])).copy()
    for z in np.unique(test.numbers):
        seen = (np.asarray(train.numbers) == z) & present
        if seen.any():
            prediction[test.numbers == z] = y_train[seen].mean(axis=0)
    return prediction


def rmse(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Root mean square over every value and component whose truth is present (finite), as the training
    metrics count them; NaN when none is."""
    diff = np.asarray(prediction, dtype=float).reshape(-1) - np.asarray(truth, dtype=float).reshape(-1)
    diff = diff[np.isfinite(np.asarray(truth, dtype=float).reshape(-1))]
    return float(np.sqrt(np.mean(diff * diff))) if diff.size else float("nan")


def baseline_rmse(train: GraphSet, test: GraphSet, targets: dict[str, TargetInfo]) -> dict[str, dict[str, float]]:
    """Test RMSE (physical units) of every baseline for every target present in both sets.

    ``{target: {"mean": ..., "composition": ...}}``; ``composition`` is the quadratic composition fit for
    graph targets and the per-element mean for node targets.
    """
    species = sorted(int(z) for z in np.unique(train.numbers))
    out: dict[str, dict[str, float]] = {}
    for name, info in targets.items():
        store_train = train.graph_targets if info.level == "graph" else train.node_targets
        store_test = test.graph_targets if info.level == "graph" else test.node_targets
        if name not in store_train or name not in store_test:
            continue
        truth = store_test[name]
        fitted = (composition_fit_prediction(train, test, name, species) if info.level == "graph"
                  else element_mean_prediction(train, test, name))
        out[name] = {"mean": rmse(mean_prediction(store_train[name], len(truth)), truth),
                     "composition": rmse(fitted, truth)}
    return out
