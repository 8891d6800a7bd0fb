"""Multi-task loss: sum_i alpha_i * loss_i over the heads (paper eq. 9), each head's term reported.

Only present targets count: an entry whose target is NaN (a frame stored without forces or stress, a
partial target's masked value) is left out of its head's mean. A potential's terms are its energy per
atom, forces and stress in physical units over the potential's scale
(:meth:`~hydradgl.model.assembler.HydraModel.loss_units`); every other head's are in normalized units.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping

import torch
from torch.nn import functional as F

from hydradgl.data.batch import Batch
from hydradgl.model.heads import HeadDescription

LOSSES: dict[str, Callable[..., torch.Tensor]] = {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.huber_loss}


def head_target(batch: Batch, level: str, target: str) -> torch.Tensor:
    return (batch.graph_targets if level == "graph" else batch.node_targets)[target]


def in_loss_units(head: HeadDescription, pred: torch.Tensor, true: torch.Tensor, batch: Batch,
                  units: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``pred`` and ``true`` (normalized) in the units the loss measures ``head`` in: ``units[head]`` times,
    for an energy, divided by each structure's atom count; unchanged for a head without units."""
    factor = units.get(head.name)
    if factor is None:
        return pred, true
    factor = factor.to(pred.device, pred.dtype)
    if head.energy:
        factor = factor / batch.graph.batch_num_nodes.unsqueeze(1).to(pred.dtype)
    return pred * factor, true * factor


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
    entries (node heads: every atom and component of the batch), in the units ``units()`` gives (the
    model's :meth:`~hydradgl.model.assembler.HydraModel.loss_units`; none: normalized units)."""

    def __init__(self, heads: list[HeadDescription], units: Callable[[], Mapping[str, torch.Tensor]] | None = None):
        self.heads = list(heads)
        self.units = units  # read at every call: a resumed model's scales arrive after the loss is made

    def __call__(self, preds: dict[str, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        units = self.units() if self.units is not None else {}
        parts = {h.name: present_mean_loss(h.loss, *in_loss_units(
                     h, preds[h.name], head_target(batch, h.level, h.target), batch, units)) for h in self.heads}
        total = functools.reduce(operator.add, (h.weight * parts[h.name] for h in self.heads))
        return total, parts
