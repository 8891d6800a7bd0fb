"""Error sums per head, reduced across ranks, turned into losses, RMSE and MAE (normalized and physical)."""

from __future__ import annotations

import math

import torch

from hydradgl.data.batch import Batch
from hydradgl.data.normalize import Normalizer
from hydradgl.model.loss import LOSSES, head_target
from hydradgl.train.runtime import Runtime, all_reduce_sum

FIELDS = ("count", "loss", "se", "ae", "se_phys", "ae_phys")


class ErrorSums:
    """Accumulates, per head, sums over every predicted value (not averages of batch averages)."""

    def __init__(self, heads: dict[str, tuple[str, str, str]], normalizer: Normalizer, device: torch.device):
        self.heads = heads  # name -> (target, level, loss)
        self.normalizer = normalizer
        self.sums = torch.zeros(len(heads), len(FIELDS), dtype=torch.float64, device=device)
        self.span = {n: torch.as_tensor(normalizer.span[t], device=device) for n, (t, _, _) in heads.items()}

    @torch.no_grad()
    def add(self, preds: dict[str, torch.Tensor], batch: Batch) -> None:
        for i, (name, (target, level, loss)) in enumerate(self.heads.items()):
            diff = (preds[name] - head_target(batch, level, target)).double()
            phys = diff * self.span[name]
            loss_sum = LOSSES[loss](preds[name].double(), head_target(batch, level, target).double(), reduction="sum")
            self.sums[i] += torch.stack([torch.tensor(float(diff.numel()), dtype=torch.float64, device=diff.device),
                                         loss_sum, (diff * diff).sum(), diff.abs().sum(),
                                         (phys * phys).sum(), phys.abs().sum()])

    def reduce(self, runtime: Runtime) -> dict[str, dict[str, float]]:
        """Per head: loss, rmse, mae (normalized) and rmse_phys, mae_phys, summed over every rank."""
        totals = all_reduce_sum(self.sums.clone(), runtime).cpu().tolist()
        out = {}
        for (name, _), row in zip(self.heads.items(), totals):
            n = row[0] if row[0] > 0 else math.nan  # no values: NaN, never a perfect 0
            out[name] = {"loss": row[1] / n, "rmse": math.sqrt(row[2] / n), "mae": row[3] / n,
                         "rmse_phys": math.sqrt(row[4] / n), "mae_phys": row[5] / n}
        return out
