"""GIN convolution (Xu, Hu, Leskovec, Jegelka, "How Powerful are Graph Neural Networks?", ICLR 2019).

h_i' = MLP((1 + eps) h_i + AGG_{j in N(i)} h_j), with a learnable or fixed eps.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from hydradgl import hookimpl
from hydradgl.nn import ConvTraits, Edges, ScalarConv
from hydradgl.plugins import ConvContext, ConvSpec


class GINOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mlp_layers: int = Field(2, ge=1, description="Linear layers in the update MLP.")
    aggregator: Literal["sum", "mean", "max"] = Field("sum", description="Neighbourhood aggregation.")
    learn_eps: bool = Field(True, description="Learn eps (GIN-eps) instead of fixing it at 0 (GIN-0).")


class GINConv(ScalarConv):
    """GIN layer on the scalar features; the configured norm and activation follow (ScalarConv)."""

    # Declared once: no edge features, no geometry; runs on both kernel paths (MessageGraph methods only).
    # A max aggregator picks one neighbour: the instance says so below.
    traits = ConvTraits(uses_extrema=True, kernels=("dgl", "torch"))

    def __init__(self, in_dim: int, out_dim: int, options: GINOptions, norm: str = "none",
                 activation: str | None = None):
        super().__init__(out_dim, norm, activation)
        self.traits = type(self).traits.narrowed(uses_extrema=options.aggregator == "max")
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(options.mlp_layers - 1):
            layers += [nn.Linear(width, out_dim), nn.ReLU()]
            width = out_dim
        layers.append(nn.Linear(width, out_dim))
        self.mlp = nn.Sequential(*layers)
        self.eps = nn.Parameter(torch.zeros(1), requires_grad=options.learn_eps)
        self.aggregator = options.aggregator

    def update(self, graph, h: torch.Tensor, edges: Edges) -> torch.Tensor:
        # ``graph`` is hydradgl's MessageGraph: its ops run on DGL's kernels or plain torch.
        return self.mlp((1 + self.eps) * h + graph.copy_u(h, self.aggregator))


def make_gin(in_dim: int, out_dim: int, options: GINOptions, context: ConvContext) -> GINConv:
    return GINConv(in_dim, out_dim, options, context.norm, context.activation)


@hookimpl
def register_convs(register):
    register(ConvSpec(name="gin", description="Graph Isomorphism Network convolution (example plugin)",
                      options=GINOptions, factory=make_gin, module=GINConv))
