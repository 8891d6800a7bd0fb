"""Multi-task loss: sum_i alpha_i * loss_i over the heads (paper eq. 9), each head's term reported."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from hydradgl.config import HeadConfig
from hydradgl.data.batch import Batch

LOSSES = {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.huber_loss}


def head_target(batch: Batch, level: str, target: str) -> torch.Tensor:
    return (batch.graph_targets if level == "graph" else batch.node_targets)[target]


class MultiTaskLoss:
    """``loss(preds, batch) -> (total, {head: loss})``; node heads average over every atom of the batch."""

    def __init__(self, heads: list[HeadConfig], head_levels: dict[str, str]):
        self.terms = [(h.name, h.target_name, head_levels[h.name], h.alpha, LOSSES[h.loss]) for h in heads]

    def __call__(self, preds: dict[str, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {name: loss_fn(preds[name], head_target(batch, level, target))
                 for name, target, level, _, loss_fn in self.terms}
        total = sum(alpha * parts[name] for name, _, _, alpha, _ in self.terms)
        return total, parts
