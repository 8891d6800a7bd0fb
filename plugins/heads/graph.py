"""Graph-level head: readout over each graph's atoms, then fully connected layers (paper: 50, 25)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from hydradgl import hookimpl
from hydradgl.model.layers import mlp
from hydradgl.plugins import HeadContext, HeadSpec


class GraphHeadOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    readout: Literal["sum", "mean", "max"] | None = Field(
        None, description="Pooling over a graph's atoms (default: sum for a target the dataset marks extensive, "
                          "e.g. a total energy, mean otherwise).")


class GraphHead(nn.Module):
    r"""Graph-level head: pool each graph's atoms, then an MLP (HydraGNN's graph head).

    .. math::
        y_g = \mathrm{MLP}\big(\mathrm{readout}_{i \in g}\, h_i\big), \quad
        \mathrm{readout} \in \{\textstyle\sum, \text{mean}, \max\}

    The MLP has the hidden widths ``layers`` with the activation between layers and a linear output.

    Args:
        in_dim: width of the trunk's node features.
        out_dim: dimension of the target.
        layers: hidden widths of the MLP (paper: 50, 25).
        readout: sum, mean or max.
        act: activation name.

    Shapes:
        input: batched graph of B graphs, node features (N, in_dim); output: (B, out_dim).
    """

    def __init__(self, in_dim: int, out_dim: int, layers: list[int], readout: str, act: str):
        super().__init__()
        self.readout = readout
        self.mlp = mlp(in_dim, layers, out_dim, act)

    def forward(self, graph, h: torch.Tensor) -> torch.Tensor:
        return self.mlp(graph.readout(h, self.readout))


def make_graph_head(in_dim: int, out_dim: int, layers: list[int], options: GraphHeadOptions,
                    context: HeadContext) -> GraphHead:
    # The dataset's TargetInfo.readout ("sum" for extensive targets, "mean" for intensive ones) where the
    # installed hydradgl's TargetInfo knows extensivity; mean otherwise.
    readout = options.readout or getattr(context.target, "readout", None) or "mean"
    return GraphHead(in_dim, out_dim, layers, readout, context.activation)


@hookimpl
def register_heads(register):
    register(HeadSpec(name="graph-head", description="Readout (sum/mean/max) then FC layers, one value set per graph",
                      options=GraphHeadOptions, factory=make_graph_head, level="graph",
                      kernels=("dgl", "torch")))
