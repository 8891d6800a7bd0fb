"""Graph-level head: readout over each graph's atoms, then fully connected layers (paper: 50, 25)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from hydradgl import hookimpl
from hydradgl.nn.layers import mlp
from hydradgl.plugins import HeadContext, HeadSpec


class GraphHeadOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    readout: Literal["sum", "mean", "max"] | None = Field(
        None, description="Pooling over a graph's atoms (default: sum for a target the dataset marks extensive, "
                          "e.g. a total energy, mean otherwise).")
    per_atom: bool = Field(
        False, description="Run the MLP on every atom and pool its outputs (the target as a sum or mean of atomic "
                           "contributions, as SchNet and MACE model energies) instead of pooling the features "
                           "first (the paper's head). Not with a max readout.")

    @model_validator(mode="after")
    def _pooled_outputs(self) -> GraphHeadOptions:
        if self.per_atom and self.readout == "max":
            raise ValueError("per_atom needs a sum or mean readout (a max of atomic outputs is not a contribution "
                             "model); set readout to sum or mean, or per_atom to false")
        return self


class GraphHead(nn.Module):
    r"""Graph-level head: pool each graph's atoms, then an MLP (HydraGNN's graph head), or the MLP on
    every atom, then pool (``per_atom``: a sum or mean of atomic contributions).

    .. math::
        y_g = \mathrm{MLP}\big(\mathrm{readout}_{i \in g}\, h_i\big)
        \quad \text{or} \quad y_g = \mathrm{readout}_{i \in g}\, \mathrm{MLP}(h_i), \qquad
        \mathrm{readout} \in \{\textstyle\sum, \text{mean}, \max\}

    The MLP has the hidden widths ``layers`` with the activation between layers and a linear output.

    Args:
        in_dim: width of the trunk's node features.
        out_dim: dimension of the target.
        layers: hidden widths of the MLP (paper: 50, 25).
        readout: sum, mean or max.
        act: activation name.
        per_atom: MLP before the readout (sum or mean) instead of after it.

    Shapes:
        input: batched graph of B graphs, node features (N, in_dim); output: (B, out_dim).
    """

    def __init__(self, in_dim: int, out_dim: int, layers: list[int], readout: str, act: str, per_atom: bool = False):
        super().__init__()
        self.readout, self.per_atom = readout, per_atom
        self.uses_extrema = readout == "max"
        self.mlp = mlp(in_dim, layers, out_dim, act)

    def forward(self, graph, h: torch.Tensor) -> torch.Tensor:
        if self.per_atom:
            return graph.readout(self.mlp(h), self.readout)
        return self.mlp(graph.readout(h, self.readout))


def make_graph_head(in_dim: int, out_dim: int, layers: list[int], options: GraphHeadOptions,
                    context: HeadContext) -> GraphHead:
    # The dataset's TargetInfo.readout ("sum" for extensive targets, "mean" for intensive ones) where the
    # installed hydradgl's TargetInfo knows extensivity; mean otherwise.
    readout = options.readout or getattr(context.target, "readout", None) or "mean"
    return GraphHead(in_dim, out_dim, layers, readout, context.activation, options.per_atom)


@hookimpl
def register_heads(register):
    register(HeadSpec(name="graph-head", description="Readout (sum/mean/max) then FC layers, one value set per graph",
                      options=GraphHeadOptions, factory=make_graph_head, level="graph",
                      kernels=("dgl", "torch")))
