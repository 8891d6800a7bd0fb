"""Node-level head: the same fully connected layers applied to every atom (paper: 50, 25)."""

from __future__ import annotations

import torch
from torch import nn

from hydradgl import hookimpl
from hydradgl.nn.layers import mlp
from hydradgl.plugins import HeadContext, HeadSpec, NoOptions


class NodeHead(nn.Module):
    r"""Node-level head: the same MLP on every atom, :math:`y_i = \mathrm{MLP}(h_i)`.

    Args:
        in_dim: width of the trunk's node features.
        out_dim: dimension of the per-atom target.
        layers: hidden widths of the MLP (paper: 50, 25).
        act: activation name.

    Shapes:
        input: node features (N, in_dim) (the graph is not used); output: (N, out_dim).
    """

    def __init__(self, in_dim: int, out_dim: int, layers: list[int], act: str):
        super().__init__()
        self.mlp = mlp(in_dim, layers, out_dim, act)

    def forward(self, graph, h: torch.Tensor) -> torch.Tensor:
        return self.mlp(h)


def make_node_head(in_dim: int, out_dim: int, layers: list[int], options: NoOptions,
                   context: HeadContext) -> NodeHead:
    return NodeHead(in_dim, out_dim, layers, context.activation)


@hookimpl
def register_heads(register):
    register(HeadSpec(name="node-head", description="Per-atom FC layers, one value set per atom",
                      options=NoOptions, factory=make_node_head, level="node",
                      kernels=("dgl", "torch")))
