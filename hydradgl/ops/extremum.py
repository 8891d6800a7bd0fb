"""Max/min of rows grouped by an owner index, with DGL's tie rule (shared by both kernel paths)."""

from __future__ import annotations

import torch


def as_rows(index: torch.Tensor, dim: int) -> torch.Tensor:
    """``index`` (R,) viewed as (R, 1, ...) to broadcast against a ``dim``-dimensional tensor."""
    return index.view(-1, *([1] * (dim - 1)))


def extremum(values: torch.Tensor, owner: torch.Tensor, n_out: int, op: str,
             row_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Max/min of the rows of ``values`` (R >= 1 rows, no autograd) grouped by ``owner`` into ``n_out``
    rows: ``(best, winner, found)``, each shaped (n_out, F...). ``best`` is the extremum (0 for a group
    without rows); ``winner`` the lowest row id that attains it, as in DGL's kernels, so that gathering
    the winners routes the gradient like DGL does; ``found`` is False where no row attains it (empty
    groups, and NaN extrema: callers keep ``best`` there rather than hide a NaN as 0).

    ``row_ids`` (R, F...) holds each row's id as a float (exact below 2**24 in float32, 2**53 in
    float64), contiguous: CPU scatter and where are slower on int64 and on expanded
    (stride-0) operands.
    """
    n_rows = values.shape[0]
    out_shape = (n_out, *values.shape[1:])
    index = as_rows(owner, values.dim()).expand_as(values)
    with torch.no_grad():
        best = values.new_zeros(out_shape).scatter_reduce(
            0, index, values, "amax" if op == "max" else "amin", include_self=False)
        candidates = torch.where(values == best.gather(0, index), row_ids, n_rows)
        winner = torch.full(out_shape, n_rows, dtype=row_ids.dtype, device=values.device).scatter_reduce(
            0, index, candidates, "amin", include_self=True).long()
    found = winner < n_rows
    return best, winner.clamp_(max=n_rows - 1), found
