"""CGCNN gated convolution (Xie & Grossman, Phys. Rev. Lett. 120, 145301, 2018).

v_i' = v_i + sum_j sigmoid(z_ij W_f + b_f) * softplus(z_ij W_s + b_s), z_ij = v_i (+) v_j (+) u_ij,
with u_ij the trunk's edge features (a Gaussian expansion of the distance). The weights are split by
the parts of z, so the receiver and sender terms are computed per node, not per edge. The ``envelope``
option (ours) multiplies each message by the cosine cutoff of its distance, so that the energy stays
continuous as neighbours cross the cutoff, as MD needs.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F

from hydradgl import hookimpl
from hydradgl.errors import ConfigError
from hydradgl.nn import ConvTraits, Edges, ScalarConv
from hydradgl.plugins import ConvContext, ConvSpec


class CGCNNOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    envelope: bool = Field(False, description="Multiply each message by the cosine cutoff of its distance, so the "
                                              "energy stays continuous as neighbours cross the cutoff (MD and "
                                              "relaxations need it: docs/api.md). False: the paper's CGCNN, whose "
                                              "messages do not vanish there, so its energy jumps.")


class CGCNNConv(ScalarConv):
    r"""CGCNN gated convolution with a residual.

    .. math::
        h_i' = h_i + \sum_{j \in N(i)} f_c(r_{ij})\, \sigma(W_f z_{ij} + b_f) \odot
        \mathrm{softplus}(W_s z_{ij} + b_s), \qquad z_{ij} = h_i \oplus h_j \oplus e_{ij}

    with :math:`f_c` the cosine cutoff when ``envelope`` is set, else 1 (the paper's CGCNN).

    Args:
        dim: node feature width (in and out).
        edge_dim: width of the trunk's edge features (> 0).
        envelope: multiply each message by the cosine cutoff of its distance.
        norm, activation: applied to the layer's output (:class:`~hydradgl.nn.ScalarConv`).

    Shapes:
        node features (N, dim), edge features (E, edge_dim) [, envelope (E,)] -> (N, dim).
    """

    traits = ConvTraits(reads_edge_features=True, needs_geometry=True, smooth_at_cutoff=True, kernels=("dgl", "torch"))

    def __init__(self, dim: int, edge_dim: int, envelope: bool = False, norm: str = "none",
                 activation: str | None = None):
        super().__init__(dim, norm, activation)
        self.dim, self.envelope = dim, envelope
        # with the envelope every message vanishes at the cutoff; without it the layer reads no geometry
        self.traits = type(self).traits.narrowed(needs_geometry=envelope, smooth_at_cutoff=envelope)
        self.dst = nn.Linear(dim, 2 * dim)  # [W_f; W_s] blocks acting on v_i, with both biases
        self.src = nn.Linear(dim, 2 * dim, bias=False)
        self.edge = nn.Linear(edge_dim, 2 * dim, bias=False)

    def update(self, graph, h: torch.Tensor, edges: Edges) -> torch.Tensor:
        assert edges.attr is not None  # traits.reads_edge_features: the trunk passes them
        z = torch.addmm(graph.u_add_v(self.src(h), self.dst(h)), edges.attr, self.edge.weight.T)  # one pass over E
        # contiguous halves: torch's CPU sigmoid and softplus are much slower on strided ones
        gate, core = (part.contiguous() for part in z.chunk(2, dim=1))
        messages = torch.sigmoid(gate) * F.softplus(core)
        if self.envelope:
            messages = messages * edges.envelope.unsqueeze(1)
        return h + graph.reduce(messages, "sum")


def make_cgcnn(in_dim: int, out_dim: int, options: CGCNNOptions, context: ConvContext) -> CGCNNConv:
    if in_dim != out_dim:
        raise ConfigError(f"cgcnn keeps the feature width: in ({in_dim}) and out ({out_dim}) widths must match")
    if context.edge_dim <= 0:
        raise ConfigError("cgcnn needs edge features: set model.edge_features to 'gaussian' or 'distance'")
    return CGCNNConv(in_dim, context.edge_dim, options.envelope, context.norm, context.activation)


@hookimpl
def register_convs(register):
    register(ConvSpec(name="cgcnn", description="CGCNN gated convolution with distance features",
                      options=CGCNNOptions, factory=make_cgcnn, module=CGCNNConv))
