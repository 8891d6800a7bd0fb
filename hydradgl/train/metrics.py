"""Error sums per head, reduced across ranks, turned into losses, RMSE and MAE (normalized and physical).

Only present (finite) targets count: a frame stored without forces or stress (NaN targets) adds nothing
to those heads' sums or counts. A potential head's energy (``HeadDescription.energy``) is also scored
per atom: each structure's error divided by its atom count (``rmse_per_atom``, ``mae_per_atom``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from hydradgl.data.batch import Batch
from hydradgl.data.normalize import Normalizer
from hydradgl.model.heads import HeadDescription
from hydradgl.model.loss import LOSSES, head_target, in_loss_units
from hydradgl.train.display_units import displayed_errors, per_atom_unit
from hydradgl.train.runtime import Runtime, all_reduce_sum

FIELDS = ("count", "loss", "se", "ae", "se_phys", "ae_phys", "se_atom", "ae_atom")


class ErrorSums:
    """Accumulates, per head, sums over every present value (not averages of batch averages): a node
    head with several components (forces) over every atom and component."""

    def __init__(self, heads: list[HeadDescription], normalizer: Normalizer, device: torch.device,
                 units: Mapping[str, torch.Tensor] | None = None):
        self.heads = list(heads)
        self.units = dict(units or {})  # the loss's units (HydraModel.loss_units), for the loss field
        self.normalizer = normalizer
        self.sums = torch.zeros(len(heads), len(FIELDS), dtype=torch.float64, device=device)
        self.span = {h.name: torch.as_tensor(normalizer.span[h.target], device=device) for h in heads}

    @torch.no_grad()
    def add(self, preds: dict[str, torch.Tensor], batch: Batch) -> None:
        for i, h in enumerate(self.heads):
            true, pred = head_target(batch, h.level, h.target).double(), preds[h.name].double()
            present = torch.isfinite(true)
            diff = torch.where(present, pred - true, 0.0)
            phys = diff * self.span[h.name]
            scaled_pred, scaled_true = in_loss_units(h, pred, true, batch, self.units)
            loss_sum = LOSSES[h.loss](scaled_pred[present], scaled_true[present], reduction="sum")
            per_atom = phys / batch.graph.batch_num_nodes.unsqueeze(1) if h.energy else torch.zeros_like(phys)
            self.sums[i] += torch.stack([present.sum().double(), loss_sum, (diff * diff).sum(), diff.abs().sum(),
                                         (phys * phys).sum(), phys.abs().sum(),
                                         (per_atom * per_atom).sum(), per_atom.abs().sum()])

    def reduce(self, runtime: Runtime) -> dict[str, dict[str, float]]:
        """Per head: loss, rmse, mae (normalized) and rmse_phys, mae_phys, summed over every rank (one
        all-reduce); a potential's energy also rmse_per_atom, mae_per_atom (physical unit per atom)."""
        totals = all_reduce_sum(self.sums.clone(), runtime).cpu().tolist()
        out = {}
        for h, row in zip(self.heads, totals):
            n = row[0] if row[0] > 0 else math.nan  # no values: NaN, never a perfect 0
            out[h.name] = {"loss": row[1] / n, "rmse": math.sqrt(row[2] / n), "mae": row[3] / n,
                           "rmse_phys": math.sqrt(row[4] / n), "mae_phys": row[5] / n}
            if h.energy:
                out[h.name].update(rmse_per_atom=math.sqrt(row[6] / n), mae_per_atom=row[7] / n)
        return out


def with_units(metrics: dict[str, dict[str, float]], heads: list[HeadDescription]) -> dict[str, dict]:
    """Each head's metrics plus its unit and level, and the errors as they are shown (``rmse_display``,
    ``mae_display`` in ``display_unit``: :mod:`~hydradgl.train.display_units`); a potential's energy also
    ``unit_per_atom``. As test_metrics.json and ``evaluate --json`` give them."""
    out = {}
    for h in heads:
        if h.name not in metrics:
            continue
        m = {**metrics[h.name], "unit": h.unit, "level": h.level}
        if "rmse_per_atom" in m:
            m["unit_per_atom"] = per_atom_unit(h.unit)
        rmse, mae, unit = displayed_errors(m)
        out[h.name] = {**m, "rmse_display": rmse, "mae_display": mae, "display_unit": unit}
    return out
