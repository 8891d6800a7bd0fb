"""Node-level head: the same fully connected layers applied to every atom (paper: 50, 25)."""

from __future__ import annotations

import torch
from torch import nn

from hydradgl import hookimpl
from hydradgl.model.layers import mlp
from hydradgl.plugins import HeadContext, HeadSpec, NoOptions


class NodeHead(nn.Module):
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
