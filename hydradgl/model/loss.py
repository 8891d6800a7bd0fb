"""Multi-task loss: sum_i alpha_i * loss_i over the heads (paper eq. 9), each head's term reported."""

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


class MultiTaskLoss:
    """``loss(preds, batch) -> (total, {head: loss})``; node heads average over every atom of the batch."""

    def __init__(self, heads: list[HeadDescription]):
        self.heads = list(heads)

    def __call__(self, preds: dict[str, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {h.name: LOSSES[h.loss](preds[h.name], head_target(batch, h.level, h.target)) for h in self.heads}
        total = functools.reduce(operator.add, (h.weight * parts[h.name] for h in self.heads))
        return total, parts
