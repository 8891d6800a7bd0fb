"""An exponential moving average of the weights (``training.ema_decay``): the model that is evaluated,
checkpointed as best, tested and saved, while the optimizer keeps training the raw weights.

Late in training the raw weights still jump from step to step: each step follows one batch's gradient,
and with batch norm in training mode each batch is also normalized by its own statistics, which a sum
readout turns into an offset of the whole graph's prediction. Averaging the weights over the last
~1/(1 - decay) steps removes most of that step-to-step noise (Polyak & Juditsky 1992; NequIP's
``use_ema`` and MACE's ``--ema`` options evaluate such an average). The decay ramps up from 0.1 as
``(1 + n) / (10 + n)`` over the first updates, so the average does not remember the initial weights.
"""

from __future__ import annotations

import copy
from typing import Any, Generic, TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


class WeightAverage(Generic[M]):
    """``model``'s averaged copy: parameters are the moving average, buffers (batch-norm statistics)
    are copied from the trained model before each evaluation (and recomputed there when precise BN is
    on)."""

    def __init__(self, model: M, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.updates = 0

    def decay_now(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current parameters (after an optimizer step)."""
        weight = 1.0 - self.decay_now()
        for mine, theirs in zip(self.model.parameters(), model.parameters()):
            mine.lerp_(theirs, weight)
        self.updates += 1

    @torch.no_grad()
    def copy_buffers(self, model: nn.Module) -> None:
        for mine, theirs in zip(self.model.buffers(), model.buffers()):
            mine.copy_(theirs)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates}

    def load_state_dict(self, state: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(weights)
        self.updates = int(state["updates"])
