"""Small building blocks shared by the trunk, the convs and the heads: activations, normalizations, MLPs,
the distance expansion and the smooth cutoff envelope."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class ShiftedSoftplus(nn.Module):
    """``softplus(x) - log 2`` (SchNet's activation: 0 at x = 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x) - math.log(2.0)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "silu": nn.SiLU, "softplus": nn.Softplus, "tanh": nn.Tanh, "gelu": nn.GELU,
}


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def normalization(kind: str, width: int) -> nn.Module:
    """``batch`` (BatchNorm1d), ``layer`` (LayerNorm) or ``none`` over a width of ``width``."""
    return {"batch": lambda: nn.BatchNorm1d(width), "layer": lambda: nn.LayerNorm(width),
            "none": nn.Identity}[kind]()


def mlp(in_dim: int, hidden: list[int], out_dim: int, act: str) -> nn.Sequential:
    """Linear layers of widths ``hidden`` with ``act`` between them, then a linear output layer."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), activation(act)]
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def cosine_cutoff(dist: torch.Tensor, cutoff: float) -> torch.Tensor:
    """``(cos(pi r / r_c) + 1) / 2`` inside the cutoff, 0 beyond (Behler's envelope): goes to 0 with a
    zero slope at ``r_c``, so anything it multiplies fades in smoothly as atoms enter the cutoff."""
    return torch.where(dist < cutoff, 0.5 * (torch.cos(dist * (math.pi / cutoff)) + 1.0), torch.zeros_like(dist))


class GaussianExpansion(nn.Module):
    """Distances expanded on ``n`` Gaussians with centres evenly spaced on [0, cutoff], each multiplied
    by the cosine cutoff envelope when ``envelope`` is set (then every feature is 0 at the cutoff)."""

    centres: torch.Tensor

    def __init__(self, cutoff: float, n: int, envelope: bool = False):
        super().__init__()
        self.register_buffer("centres", torch.linspace(0.0, cutoff, n))
        self.gamma = 1.0 / (cutoff / max(n - 1, 1)) ** 2
        self.cutoff, self.envelope = cutoff, envelope

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        # exponents below -50 are held there (e^-50 ~ 2e-22): denormal floats would slow every later op
        rbf = torch.exp((-self.gamma * (dist[:, None] - self.centres) ** 2).clamp(min=-50.0))
        return rbf * cosine_cutoff(dist, self.cutoff)[:, None] if self.envelope else rbf
