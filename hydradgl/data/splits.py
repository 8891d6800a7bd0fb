"""Train/validation/test splits: stratified by composition (as in the paper) or random; seeded."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from hydradgl.errors import DataError


def random_split(n: int, fractions: tuple[float, float, float], seed: int) -> tuple[np.ndarray, ...]:
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    return tuple(np.sort(p) for p in (perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:]))


def stratified_split(labels: list[str], fractions: tuple[float, float, float], seed: int) -> tuple[np.ndarray, ...]:
    """Split each composition separately; a composition with >= 3 samples lands in every non-empty split."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        groups[label].append(i)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for label in sorted(groups):
        members = rng.permutation(groups[label])
        n = len(members)
        n_val = int(round(fractions[1] * n))
        n_test = int(round(fractions[2] * n))
        if n >= 3:
            n_val = max(n_val, 1) if fractions[1] > 0 else 0
            n_test = max(n_test, 1) if fractions[2] > 0 else 0
        elif fractions[0] > 0:
            n_val = n_test = 0  # too few to share: keep them for training
        n_train = n - n_val - n_test
        parts[0].extend(members[:n_train])
        parts[1].extend(members[n_train:n_train + n_val])
        parts[2].extend(members[n_train + n_val:])
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)


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
