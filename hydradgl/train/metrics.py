"""Error sums per head, reduced across ranks, turned into losses, RMSE and MAE (normalized and physical)."""

from __future__ import annotations

import math

import torch

from hydradgl.data.batch import Batch
from hydradgl.data.normalize import Normalizer
from hydradgl.model.heads import HeadDescription
from hydradgl.model.loss import LOSSES, head_target
from hydradgl.train.runtime import Runtime, all_reduce_sum

FIELDS = ("count", "loss", "se", "ae", "se_phys", "ae_phys")


class ErrorSums:
    """Accumulates, per head, sums over every predicted value (not averages of batch averages)."""

    def __init__(self, heads: list[HeadDescription], normalizer: Normalizer, device: torch.device):
        self.heads = list(heads)
        self.normalizer = normalizer
        self.sums = torch.zeros(len(heads), len(FIELDS), dtype=torch.float64, device=device)
        self.span = {h.name: torch.as_tensor(normalizer.span[h.target], device=device) for h in heads}

    @torch.no_grad()
    def add(self, preds: dict[str, torch.Tensor], batch: Batch) -> None:
        for i, h in enumerate(self.heads):
            true = head_target(batch, h.level, h.target)
            diff = (preds[h.name] - true).double()
            phys = diff * self.span[h.name]
            loss_sum = LOSSES[h.loss](preds[h.name].double(), true.double(), reduction="sum")
            self.sums[i] += torch.stack([torch.tensor(float(diff.numel()), dtype=torch.float64, device=diff.device),
                                         loss_sum, (diff * diff).sum(), diff.abs().sum(),
                                         (phys * phys).sum(), phys.abs().sum()])

    def reduce(self, runtime: Runtime) -> dict[str, dict[str, float]]:
        """Per head: loss, rmse, mae (normalized) and rmse_phys, mae_phys, summed over every rank."""
        totals = all_reduce_sum(self.sums.clone(), runtime).cpu().tolist()
        out = {}
        for h, row in zip(self.heads, totals):
            n = row[0] if row[0] > 0 else math.nan  # no values: NaN, never a perfect 0
            out[h.name] = {"loss": row[1] / n, "rmse": math.sqrt(row[2] / n), "mae": row[3] / n,
                         "rmse_phys": math.sqrt(row[4] / n), "mae_phys": row[5] / n}
        return out


def with_units(metrics: dict[str, dict[str, float]], heads: list[HeadDescription]) -> dict[str, dict]:
    """Each head's metrics plus its unit and level (as test_metrics.json and ``evaluate --json`` give them)."""
    return {h.name: {**metrics[h.name], "unit": h.unit, "level": h.level} for h in heads if h.name in metrics}
