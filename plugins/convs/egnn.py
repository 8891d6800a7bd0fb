"""E(n)-equivariant graph convolution (Satorras, Hoogeboom, Welling, ICML 2021), invariant form."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F

from hydradgl import hookimpl
from hydradgl.errors import ConfigError
from hydradgl.nn import ConvTraits, Edges, ScalarConv
from hydradgl.ops import MessageGraph
from hydradgl.plugins import ConvContext, ConvSpec

VECTOR_EPS = 1e-8  # inside the square root of a vector length: finite gradients at zero length


class EGNNMessageOptions(BaseModel):
    """The options of the messages, shared with egnn-vector."""

    model_config = ConfigDict(extra="forbid")

    use_edge_features: bool = Field(False, description="Also feed the trunk's edge features (a_ij) into the edge "
                                                        "network, beside the squared distance.")
    envelope: bool = Field(True, description="Multiply each message by the cosine cutoff of its distance, so "
                                             "messages fade out smoothly at the cutoff radius.")


class EGNNOptions(EGNNMessageOptions):
    vector_features: bool = Field(False, description="Also feed the node update the lengths of the paper's "
                                  "coordinate-update vectors, sum_j (x_i - x_j) phi_x(m_ij), one per channel: "
                                  "invariant, and they see directions (a net force is such a vector sum).")


class EGNNConv(ScalarConv):
    r"""EGNN layer with fixed coordinates: messages depend on the invariant squared distance.

    .. math::
        m_{ij} = f_c(r_{ij})\, \phi_e\!\left(h_i, h_j, \|x_i - x_j\|^2 / r_c^2 \,[, a_{ij}]\right), \qquad
        h_i' = h_i + \phi_h\!\left(h_i, \sum_{j \in N(i)} m_{ij}\right)

    with :math:`\phi_e` and :math:`\phi_h` two-layer perceptrons with SiLU (after both layers of
    :math:`\phi_e`, between the layers of :math:`\phi_h`), as in the paper; :math:`a_{ij}` the trunk's
    edge features when ``use_edge_features`` is set, and :math:`f_c` the cosine cutoff when
    ``envelope`` is set (the paper works on complete graphs; on a radius graph the envelope keeps the
    model continuous as atoms cross the cutoff). The paper's coordinate update
    :math:`x_i' = x_i + C \sum_j (x_i - x_j)\, \phi_x(m_{ij})` is not applied: coordinates stay fixed,
    so node features, and every head on them, are invariant under rotations, translations and
    permutations. With ``vector_features``, :math:`\phi_x` is linear with ``dim`` outputs and the
    update's input gains the length of each channel of that vector sum,

    .. math::
        v_i = \sum_{j \in N(i)} \frac{x_i - x_j}{r_c}\, (W_x m_{ij})^\top \in \mathbb{R}^{3 \times d},
        \qquad h_i' = h_i + \phi_h\!\left(h_i, \sum_j m_{ij}, \sqrt{\textstyle\sum_k v_{i,k}^2 + \epsilon}\right),

    invariant like the rest, but sensitive to the directions of the neighbours, which distances alone
    are not (a per-atom force is a vector sum of this kind). The first layer of :math:`\phi_e` is split
    by its inputs, so the receiver and sender terms are computed per node, not per edge.

    Args:
        dim: node feature width (in and out: the update is residual).
        edge_dim: width of the trunk's edge features (used only with ``use_edge_features``).
        use_edge_features: add the edge features to the edge network's input.
        envelope: multiply messages by the cosine cutoff.
        vector_features: add the per-channel lengths of :math:`v_i` to the update's input.
        norm, activation: applied to the layer's output (:class:`~hydradgl.nn.ScalarConv`).

    Shapes:
        node features (N, dim), distances and edge vectors (E,), (E, 3) [, edge features (E, edge_dim)]
        -> (N, dim).
    """

    traits = ConvTraits(reads_edge_features=True, needs_geometry=True, smooth_at_cutoff=True, kernels=("dgl", "torch"))

    def __init__(self, dim: int, edge_dim: int = 0, use_edge_features: bool = False, envelope: bool = True,
                 vector_features: bool = False, norm: str = "none", activation: str | None = None):
        super().__init__(dim, norm, activation)
        self.envelope = envelope
        # with the envelope every message carries the cosine cutoff
        self.traits = type(self).traits.narrowed(reads_edge_features=use_edge_features, smooth_at_cutoff=envelope)
        self.edge_dst = nn.Linear(dim, dim)  # first layer of phi_e on h_i (with its bias)
        self.edge_src = nn.Linear(dim, dim, bias=False)  # ... on h_j
        self.edge_dist = nn.Parameter(torch.empty(dim))  # ... on the squared distance
        nn.init.uniform_(self.edge_dist, -1.0, 1.0)
        self.edge_attr = nn.Linear(edge_dim, dim, bias=False) if use_edge_features else None
        self.edge_out = nn.Linear(dim, dim)  # second layer of phi_e
        self.vector = nn.Linear(dim, dim, bias=False) if vector_features else None  # phi_x, one per channel
        node_in = (3 if vector_features else 2) * dim
        self.node_net = nn.Sequential(nn.Linear(node_in, dim), nn.SiLU(), nn.Linear(dim, dim))  # phi_h

    def messages(self, graph: MessageGraph, h: torch.Tensor, edges: Edges) -> torch.Tensor:
        """(E, dim): the messages m_ij."""
        d2 = (edges.dist / edges.cutoff).square().unsqueeze(1)
        z = graph.u_add_v(self.edge_src(h), self.edge_dst(h)) + d2 * self.edge_dist
        if self.edge_attr is not None:
            z = z + self.edge_attr(edges.attr)
        m = F.silu(self.edge_out(F.silu(z)))
        return m * edges.envelope.unsqueeze(1) if self.envelope else m

    def coordinate_update(self, graph: MessageGraph, m: torch.Tensor, edges: Edges) -> torch.Tensor:
        """(N, 3, dim): sum_j (x_i - x_j) / r_c (W_x m_ij)^T (vec points from source j to receiver i)."""
        assert self.vector is not None
        return graph.reduce((edges.vec / edges.cutoff).unsqueeze(2) * self.vector(m).unsqueeze(1), "sum")

    def node_update(self, h: torch.Tensor, m_sum: torch.Tensor, v: torch.Tensor | None) -> torch.Tensor:
        """h + phi_h(h, sum_j m_ij [, the per-channel lengths of v])."""
        parts = [h, m_sum] if v is None else [h, m_sum, torch.sqrt(v.square().sum(dim=1) + VECTOR_EPS)]
        return h + self.node_net(torch.cat(parts, dim=1))

    def update(self, graph: MessageGraph, h: torch.Tensor, edges: Edges) -> torch.Tensor:
        m = self.messages(graph, h, edges)
        v = self.coordinate_update(graph, m, edges) if self.vector is not None else None
        return self.node_update(h, graph.reduce(m, "sum"), v)


def check_widths_and_edges(name: str, in_dim: int, out_dim: int, options: EGNNMessageOptions,
                           context: ConvContext) -> None:
    """The factories' refusals: a changed width, edge features asked for but not built."""
    if in_dim != out_dim:
        raise ConfigError(f"{name} keeps the feature width: in ({in_dim}) and out ({out_dim}) widths must match")
    if options.use_edge_features and context.edge_dim <= 0:
        raise ConfigError(f"{name}: model.conv_options.use_edge_features is true but model.edge_features is 'none'; "
                          "set model.edge_features to 'gaussian' or turn the option off")


def make_egnn(in_dim: int, out_dim: int, options: EGNNOptions, context: ConvContext) -> EGNNConv:
    check_widths_and_edges("egnn", in_dim, out_dim, options, context)
    return EGNNConv(in_dim, context.edge_dim, options.use_edge_features, options.envelope, options.vector_features,
                    context.norm, context.activation)


@hookimpl
def register_convs(register):
    register(ConvSpec(name="egnn", description="E(n)-equivariant GNN (invariant: squared distances, fixed coordinates)",
                      options=EGNNOptions, factory=make_egnn, module=EGNNConv))
