"""EGNN (Satorras, Hoogeboom, Welling, ICML 2021) with its coordinate-update vectors kept as equivariant
vector features between layers."""

from __future__ import annotations

import torch
from torch import nn

from hydradgl import hookimpl
from hydradgl.nn import ConvTraits, Edges, NodeState
from hydradgl.ops import MessageGraph
from hydradgl.plugins import ConvContext, ConvSpec

from .egnn import EGNNConv, EGNNMessageOptions, check_widths_and_edges


class EGNNVectorOptions(EGNNMessageOptions):
    """egnn-vector's options: those of egnn's messages."""


class EGNNVectorConv(EGNNConv):
    r"""EGNN layer that keeps the paper's coordinate-update vectors as equivariant vector features.

    The messages :math:`m_{ij}` are :class:`EGNNConv`'s. Each node carries vectors
    :math:`\vec v_i \in \mathbb{R}^{3 \times d}`, one per channel, updated like the paper's velocity
    (its Section 3.2, per channel) and read by the node update through their lengths:

    .. math::
        \vec v_i \leftarrow \sigma(W_v h_i + b_v) \circ \Big(\vec v_i
            + \sum_{j \in N(i)} \frac{x_i - x_j}{r_c}\, (W_x m_{ij})^\top\Big), \qquad
        h_i' = h_i + \phi_h\!\left(h_i, \sum_j m_{ij}, \sqrt{\textstyle\sum_k v_{i,k}^2 + \epsilon}\right)

    with :math:`\sigma` the logistic function: a per-channel gate from the atom's scalars (the paper
    gates the incoming velocity alone; gating the sum also gives a first layer, which starts from zero
    vectors, a gate that acts). Coordinates themselves stay fixed. Scalars are invariant and vectors
    rotate and reflect with the structure, so a vector head may read them; ``model.norm`` and
    ``model.activation`` apply to the scalars only.

    Args:
        dim, edge_dim, use_edge_features, envelope, norm, activation: as :class:`EGNNConv`.

    Shapes:
        scalars (N, dim), vectors (N, 3, dim) or None, distances and edge vectors (E,), (E, 3)
        [, edge features (E, edge_dim)] -> scalars (N, dim), vectors (N, 3, dim).
    """

    traits = ConvTraits(reads_edge_features=True, needs_geometry=True, smooth_at_cutoff=True, equivariant=True,
                        kernels=("dgl", "torch"), takes=frozenset({"scalars", "vectors"}),
                        returns=frozenset({"scalars", "vectors"}))

    def __init__(self, dim: int, edge_dim: int = 0, use_edge_features: bool = False, envelope: bool = True,
                 norm: str = "none", activation: str | None = None):
        super().__init__(dim, edge_dim, use_edge_features, envelope, True, norm, activation)
        self.gate = nn.Linear(dim, dim)

    def forward(self, graph: MessageGraph, state: NodeState, edges: Edges) -> NodeState:
        h = state.scalars
        m = self.messages(graph, h, edges)
        v = self.coordinate_update(graph, m, edges)
        if state.vectors is not None:
            v = v + state.vectors
        v = torch.sigmoid(self.gate(h)).unsqueeze(1) * v
        h = self.act(self.norm(self.node_update(h, graph.reduce(m, "sum"), v)))
        return state.replace(scalars=h, vectors=v)


def make_egnn_vector(in_dim: int, out_dim: int, options: EGNNVectorOptions, context: ConvContext) -> EGNNVectorConv:
    check_widths_and_edges("egnn-vector", in_dim, out_dim, options, context)
    return EGNNVectorConv(in_dim, context.edge_dim, options.use_edge_features, options.envelope,
                          context.norm, context.activation)


@hookimpl
def register_convs(register):
    register(ConvSpec(name="egnn-vector", description="EGNN with its coordinate-update vectors kept as equivariant "
                      "vector features", options=EGNNVectorOptions, factory=make_egnn_vector, module=EGNNVectorConv))
