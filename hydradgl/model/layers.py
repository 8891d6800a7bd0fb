"""Small building blocks shared by the trunk and the heads: activations, MLPs, distance expansion."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "silu": nn.SiLU, "softplus": nn.Softplus, "tanh": nn.Tanh, "gelu": nn.GELU,
}


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def mlp(in_dim: int, hidden: list[int], out_dim: int, act: str) -> nn.Sequential:
    """Linear layers of widths ``hidden`` with ``act`` between them, then a linear output layer."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), activation(act)]
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class GaussianExpansion(nn.Module):
    """Distances expanded on ``n`` Gaussians with centres evenly spaced on [0, cutoff]."""

    def __init__(self, cutoff: float, n: int):
        super().__init__()
        self.register_buffer("centres", torch.linspace(0.0, cutoff, n))
        self.gamma = 1.0 / (cutoff / max(n - 1, 1)) ** 2

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.gamma * (dist[:, None] - self.centres) ** 2)
