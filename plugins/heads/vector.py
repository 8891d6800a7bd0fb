"""Vector node head: a per-atom 3-vector (a direct force, a magnetic moment vector, a dipole contribution)
from an equivariant trunk's vector features, so that it rotates with the structure."""

from __future__ import annotations

import torch
from torch import nn

from hydradgl import hookimpl
from hydradgl.errors import ConfigError
from hydradgl.nn.layers import mlp
from hydradgl.plugins import HeadContext, HeadSpec, NoOptions


class VectorHead(nn.Module):
    r"""Per-atom vector from the trunk's vector channels, weighted by invariant gates of the scalars.

    .. math::
        \mathbf{y}_i = \sum_{f=1}^{F} g_f(h_i)\, \mathbf{v}_{i,f}, \qquad g = \mathrm{MLP}(h_i) \in \mathbb{R}^F

    The gates :math:`g` are invariant and the :math:`\mathbf{v}_{i,f}` rotate (and reflect) with the
    structure, so :math:`\mathbf{y}_i` does too: a rotation :math:`R` of the structure maps it to
    :math:`R\mathbf{y}_i`. Needs an equivariant trunk (one whose conv returns vector features).

    Args:
        in_dim: width of the trunk's scalar and vector features.
        layers: hidden widths of the gate MLP.
        act: activation name.

    Shapes:
        input: scalars (N, in_dim), vectors (N, 3, in_dim); output: (N, 3).
    """

    def __init__(self, in_dim: int, layers: list[int], act: str):
        super().__init__()
        self.gates = mlp(in_dim, layers, in_dim, act)

    def forward(self, graph, h: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ncf,nf->nc", vectors, self.gates(h))


def make_vector_head(in_dim: int, out_dim: int, layers: list[int], options: NoOptions,
                     context: HeadContext) -> VectorHead:
    if out_dim != 3:
        raise ConfigError(f"vector-head predicts a 3-component vector per atom, but its target has {out_dim} "
                          "component(s); use node-head for it")
    return VectorHead(in_dim, layers, context.activation)


@hookimpl
def register_heads(register):
    register(HeadSpec(name="vector-head", description="Per-atom 3-vector from an equivariant trunk's vectors",
                      options=NoOptions, factory=make_vector_head, level="node", kernels=("dgl", "torch"),
                      reads_vectors=True))
