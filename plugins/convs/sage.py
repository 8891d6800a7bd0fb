"""GraphSAGE convolution (Hamilton, Ying, Leskovec, "Inductive Representation Learning on Large
Graphs", NeurIPS 2017), on hydradgl's kernel layer."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from hydradgl import hookimpl
from hydradgl.nn import ConvTraits, Edges, ScalarConv
from hydradgl.plugins import ConvContext, ConvSpec


class SAGEOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    aggregator: Literal["mean", "pool", "gcn"] = Field("mean", description="Neighbourhood aggregator.")


class SAGEConv(ScalarConv):
    r"""GraphSAGE layer.

    .. math::
        h_i' = W_{self} h_i + W_{neigh}\,\mathrm{AGG}_{j \in N(i)} h_j + b

    with AGG the mean of the neighbours (``mean``), the max of ``ReLU(W_{pool} h_j + b_{pool})``
    (``pool``), or for ``gcn`` :math:`h_i' = W_{neigh} (h_i + \sum_j h_j) / (d_i + 1) + b` (no self
    term). Edge features are not used; an atom without neighbours aggregates 0.

    Args:
        in_dim: input node feature width.
        out_dim: output width.
        aggregator: ``mean``, ``pool`` or ``gcn``.
        norm, activation: applied to the layer's output (:class:`~hydradgl.nn.ScalarConv`).

    Shapes:
        node features (N, in_dim) -> (N, out_dim).
    """

    traits = ConvTraits(uses_extrema=True, kernels=("dgl", "torch"))

    def __init__(self, in_dim: int, out_dim: int, aggregator: str = "mean", norm: str = "none",
                 activation: str | None = None):
        super().__init__(out_dim, norm, activation)
        self.aggregator = aggregator
        self.traits = type(self).traits.narrowed(uses_extrema=aggregator == "pool")  # a max over neighbours
        self.fc_pool = nn.Linear(in_dim, in_dim) if aggregator == "pool" else None
        self.fc_self = nn.Linear(in_dim, out_dim, bias=False) if aggregator != "gcn" else None
        self.fc_neigh = nn.Linear(in_dim, out_dim)

    def update(self, graph, h: torch.Tensor, edges: Edges) -> torch.Tensor:
        if self.fc_self is None:  # gcn
            degree = graph.in_degrees().to(h.dtype).unsqueeze(1)
            return self.fc_neigh((graph.copy_u(h, "sum") + h) / (degree + 1))
        if self.fc_pool is not None:  # pool
            neigh = graph.copy_u(torch.relu(self.fc_pool(h)), "max")
        else:  # mean
            neigh = graph.copy_u(h, "mean")
        return self.fc_self(h) + self.fc_neigh(neigh)


def make_sage(in_dim: int, out_dim: int, options: SAGEOptions, context: ConvContext) -> SAGEConv:
    return SAGEConv(in_dim, out_dim, options.aggregator, context.norm, context.activation)


@hookimpl
def register_convs(register):
    register(ConvSpec(name="sage", description="GraphSAGE (mean, pool or gcn aggregator)",
                      options=SAGEOptions, factory=make_sage, module=SAGEConv))
