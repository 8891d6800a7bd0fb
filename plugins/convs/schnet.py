"""SchNet interaction block (Schütt et al., NeurIPS 2017; J. Chem. Phys. 148, 241722, 2018)."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from hydradgl import hookimpl
from hydradgl.errors import ConfigError
from hydradgl.nn import ConvTraits, Edges, ScalarConv
from hydradgl.nn.layers import ShiftedSoftplus
from hydradgl.plugins import ConvContext, ConvSpec


class SchNetOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filters: int | None = Field(None, ge=1, description="Width of the continuous filters (default: the layer width).")


class SchNetConv(ScalarConv):
    r"""SchNet interaction block: a continuous-filter convolution between atom-wise layers, with a residual.

    .. math::
        x_j = W_{in} h_j, \qquad
        W(r_{ij}) = f_c(r_{ij}) \left( W_2\, \mathrm{ssp}(W_1 e_{ij} + b_1) + b_2 \right),

        m_i = \sum_{j \in N(i)} x_j \odot W(r_{ij}), \qquad
        h_i' = h_i + W_4\, \mathrm{ssp}(W_3 m_i + b_3) + b_4

    with :math:`e_{ij}` the trunk's edge features (the radial basis of the distance), the filter-generating
    network :math:`W_1, W_2` (one per interaction block), :math:`\mathrm{ssp}(x) = \ln(1 + e^x) - \ln 2`
    the shifted softplus, and :math:`f_c(r) = (\cos(\pi r / r_c) + 1) / 2` the cosine cutoff, so every
    filter, and with it every message, goes smoothly to 0 at the cutoff radius :math:`r_c`. The
    product-and-sum over edges runs fused (``u_mul_e``): the per-edge messages are not stored.

    Args:
        dim: node feature width (in and out: the block is residual).
        edge_dim: width of the trunk's edge features (> 0).
        filters: width of the filters (default ``dim``).
        norm, activation: applied to the block's output (:class:`~hydradgl.nn.ScalarConv`).

    Shapes:
        node features (N, dim), edge features (E, edge_dim), envelope (E,) -> (N, dim).
    """

    # every filter carries the cosine envelope
    traits = ConvTraits(reads_edge_features=True, needs_geometry=True, smooth_at_cutoff=True, kernels=("dgl", "torch"))

    def __init__(self, dim: int, edge_dim: int, filters: int | None = None, norm: str = "none",
                 activation: str | None = None):
        super().__init__(dim, norm, activation)
        filters = filters or dim
        self.atom_in = nn.Linear(dim, filters, bias=False)
        self.filter_net = nn.Sequential(nn.Linear(edge_dim, filters), ShiftedSoftplus(), nn.Linear(filters, filters))
        self.atom_out = nn.Sequential(nn.Linear(filters, dim), ShiftedSoftplus(), nn.Linear(dim, dim))

    def update(self, graph, h: torch.Tensor, edges: Edges) -> torch.Tensor:
        filters = self.filter_net(edges.attr) * edges.envelope.unsqueeze(1)
        return h + self.atom_out(graph.u_mul_e(self.atom_in(h), filters, "sum"))


def make_schnet(in_dim: int, out_dim: int, options: SchNetOptions, context: ConvContext) -> SchNetConv:
    if in_dim != out_dim:
        raise ConfigError(f"schnet keeps the feature width: in ({in_dim}) and out ({out_dim}) widths must match")
    if context.edge_dim <= 0:
        raise ConfigError("schnet needs edge features: set model.edge_features to 'gaussian' (or 'distance')")
    return SchNetConv(in_dim, context.edge_dim, options.filters, context.norm, context.activation)


@hookimpl
def register_convs(register):
    register(ConvSpec(name="schnet", description="SchNet continuous-filter convolution on the radial basis",
                      options=SchNetOptions, factory=make_schnet, module=SchNetConv))
