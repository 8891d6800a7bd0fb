"""Multi-task loss: sum_i alpha_i * loss_i over the heads (paper eq. 9), each head's term reported.

Only present targets count: an entry whose target is NaN (a frame stored without forces or stress, a
partial target's masked value) is left out of its head's mean.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable

import torch
from torch.nn import functional as F

from hydradgl.data.batch import Batch
from hydradgl.model.heads import HeadDescription

LOSSES: dict[str, Callable[..., torch.Tensor]] = {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.huber_loss}


def head_target(batch: Batch, level: str, target: str) -> torch.Tensor:
    return (batch.graph_targets if level == "graph" else batch.node_targets)[target]


def present_mean_loss(loss: str, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """``LOSSES[loss]`` averaged over the entries whose target is finite (all present: the plain mean, the
    same numbers as without masking); 0 (still a function of ``pred``, so backward runs and gives zero
    gradients) when none is. Masked entries add nothing to the value or the gradient: both tensors hold 0
    there, whose loss and its derivative are 0 for mse, mae and huber."""
    present = torch.isfinite(true)
    if bool(present.all()):  # nothing masked: the plain mean, as without masking
        return LOSSES[loss](pred, true)
    total = LOSSES[loss](torch.where(present, pred, 0.0), torch.where(present, true, 0.0), reduction="sum")
    return total / present.sum().clamp(min=1).to(total.dtype)


class MultiTaskLoss:
    """``loss(preds, batch) -> (total, {head: loss})``; each head's term is the mean over its present
    entries (node heads: every atom and component of the batch)."""

    def __init__(self, heads: list[HeadDescription]):
        self.heads = list(heads)

    def __call__(self, preds: dict[str, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {h.name: present_mean_loss(h.loss, preds[h.name], head_target(batch, h.level, h.target))
                 for h in self.heads}
        total = functools.reduce(operator.add, (h.weight * parts[h.name] for h in self.heads))
        return total, parts
