"""GraphSAGE convolution (Hamilton, Ying, Leskovec, NeurIPS 2017), through DGL's SAGEConv.

h_i' = W_self h_i + W_neigh AGG_j(h_j) (+ b); AGG = mean, pool (max over a ReLU-activated linear
map of the neighbours), or gcn. Edge features are not used.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from hydradgl import hookimpl
from hydradgl.dglcompat import dgl
from hydradgl.plugins import ConvContext, ConvSpec


class SAGEOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    aggregator: Literal["mean", "pool", "gcn"] = Field("mean", description="Neighbourhood aggregator.")


class SAGEConv(nn.Module):
    uses_edge_features = False

    def __init__(self, in_dim: int, out_dim: int, options: SAGEOptions):
        super().__init__()
        self.conv = dgl.nn.SAGEConv(in_dim, out_dim, options.aggregator)

    def forward(self, graph, h: torch.Tensor, edge_attr: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(graph, h)


def make_sage(in_dim: int, out_dim: int, options: SAGEOptions, context: ConvContext) -> SAGEConv:
    return SAGEConv(in_dim, out_dim, options)


@hookimpl
def register_convs(register):
    register(ConvSpec(name="sage", description="GraphSAGE (mean, pool or gcn aggregator)",
                      options=SAGEOptions, factory=make_sage, uses_edge_features=False))
