"""Train/validation/test splits: stratified by composition (as in the paper) or random; seeded."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hydradgl.errors import DataError


def random_split(n: int, fractions: tuple[float, float, float], seed: int) -> tuple[np.ndarray, ...]:
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    return tuple(np.sort(p) for p in (perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:]))


def label_codes(labels: Sequence[str]) -> tuple[np.ndarray, int]:
    """Each label's rank among the sorted distinct labels, and how many there are; a coded sequence
    (the cache's compositions: ``codes`` and ``table``) is ranked without a pass in Python."""
    if hasattr(labels, "codes") and hasattr(labels, "table"):
        order = np.argsort(np.asarray(labels.table, dtype=str), kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        return rank[np.asarray(labels.codes, dtype=np.int64)], len(order)
    table, codes = np.unique(np.asarray(list(labels), dtype=str), return_inverse=True)
    return codes.astype(np.int64).reshape(-1), len(table)


def stratified_split(labels: Sequence[str], fractions: tuple[float, float, float], seed: int) -> tuple[np.ndarray, ...]:
    """Split each composition separately; a composition with >= 3 samples lands in every non-empty split.

    Compositions are taken in sorted order, each one's members shuffled by one generator seeded by ``seed``.
    """
    rng = np.random.default_rng(seed)
    codes, n_labels = label_codes(labels)
    order = np.argsort(codes, kind="stable")  # members of each label, ascending
    bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=n_labels))])
    parts: tuple[list[np.ndarray], ...] = ([], [], [])
    for label in range(n_labels):
        members = rng.permutation(order[bounds[label]:bounds[label + 1]])
        n = len(members)
        n_val = int(round(fractions[1] * n))
        n_test = int(round(fractions[2] * n))
        if n >= 3:
            n_val = max(n_val, 1) if fractions[1] > 0 else 0
            n_test = max(n_test, 1) if fractions[2] > 0 else 0
        elif fractions[0] > 0:
            n_val = n_test = 0  # too few to share: keep them for training
        n_train = n - n_val - n_test
        parts[0].append(members[:n_train])
        parts[1].append(members[n_train:n_train + n_val])
        parts[2].append(members[n_train + n_val:])
    return tuple(np.sort(np.concatenate([np.zeros(0, np.int64), *p]).astype(np.int64)) for p in parts)


def check_split_sizes(fractions: tuple[float, float, float], counts: tuple[int, int, int]) -> list[str]:
    """Refuse splits that would give numbers about nothing; the notes to log for an intended empty test split.

    Training needs validation structures (best.pt and early stopping follow the validation loss) and,
    unless ``split.fractions[2]`` is 0, test structures: a metric over zero structures is not a score.
    """
    n_train, n_val, n_test = counts
    said = f"split.fractions {list(fractions)} gives {n_train} train, {n_val} val, {n_test} test structures"
    if n_val == 0:
        raise DataError(f"{said}: training needs validation structures (best.pt, early stopping); "
                        "use more data or raise split.fractions[1]")
    if n_test == 0 and fractions[2] > 0:
        raise DataError(f"{said}: the test split is empty, so test metrics would describe nothing; use more data, "
                        "raise split.fractions[2], or set it to 0 to train without a test split")
    if n_test == 0:
        return ["no test split (split.fractions[2] = 0): no test metrics, test_metrics.json or parity plots"]
    return []
