"""PaiNN: polarizable atom interaction network (Schütt, Unke, Gastegger, ICML 2021), equivariant
message passing on scalar and Cartesian vector features."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from hydradgl import hookimpl
from hydradgl.errors import ConfigError
from hydradgl.nn import Conv, ConvTraits, Edges, NodeState
from hydradgl.ops import MessageGraph
from hydradgl.plugins import ConvContext, ConvSpec

VECTOR_EPS = 1e-8  # inside the square root of a vector length: finite derivatives at zero length


class PaiNNOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    radial_basis: int = Field(20, ge=1, description="Number of sinc radial basis functions sin(n pi r / r_c) / r "
                                                    "(n = 1..radial_basis) the filters are made from.")


def sinc_basis(dist: torch.Tensor, cutoff: float, n: int) -> torch.Tensor:
    """(E, n): ``sin(k pi r / r_c) / r`` for k = 1..n, with its limit ``k pi / r_c`` at r = 0."""
    k = torch.arange(1, n + 1, dtype=dist.dtype, device=dist.device) * (math.pi / cutoff)
    r = dist.unsqueeze(1)
    positive = r > 0
    safe = torch.where(positive, r, torch.ones_like(r))  # no 0/0 in the unused branch, nor in its gradient
    return torch.where(positive, torch.sin(k * safe) / safe, k.expand(r.shape[0], n))


def two_layer(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, out_dim))


class PaiNNConv(Conv):
    r"""One PaiNN layer: a message block, then an update block, on scalars :math:`s_i \in \mathbb{R}^F`
    and vectors :math:`\vec v_i \in \mathbb{R}^{3 \times F}` (Schütt, Unke, Gastegger, ICML 2021).

    Message block, with :math:`\vec r_{ij} = \vec r_i - \vec r_j` the edge vector from the sender
    :math:`j` to the receiver :math:`i` (``edges.vec``) and :math:`\hat r_{ij}` its direction:

    .. math::
        \big(x^s_{ij}, x^{vv}_{ij}, x^{vs}_{ij}\big) = \phi(s_j) \circ \mathcal{W}(r_{ij}), \qquad
        \mathcal{W}(r) = f_c(r)\,\big(W_r\, e(r) + b_r\big), \qquad
        e_n(r) = \frac{\sin(n \pi r / r_c)}{r},\ n = 1, \dots, n_{rbf},

        s_i \leftarrow s_i + \sum_{j \in N(i)} x^s_{ij}, \qquad
        \vec v_i \leftarrow \vec v_i + \sum_{j \in N(i)} \vec v_j \circ x^{vv}_{ij}
            + \hat r_{ij} \otimes x^{vs}_{ij}

    with :math:`\phi` a two-layer perceptron :math:`F \to F \to 3F` with SiLU, each of the three
    :math:`F`-wide parts multiplying every Cartesian component of its vector term, and
    :math:`f_c(r) = (\cos(\pi r / r_c) + 1) / 2` the cosine cutoff, so every message goes to 0 with a
    zero slope at the cutoff radius :math:`r_c`. Update block, with :math:`U, V` linear maps over the
    channels (no bias, the same for the three components) and :math:`a` a two-layer perceptron
    :math:`2F \to F \to 3F` with SiLU:

    .. math::
        \big(a^{vv}_i, a^{sv}_i, a^{ss}_i\big) = a\Big(s_i,\ \sqrt{\|V \vec v_i\|^2 + \epsilon}\Big), \qquad
        \vec v_i \leftarrow \vec v_i + a^{vv}_i \circ U \vec v_i, \qquad
        s_i \leftarrow s_i + a^{ss}_i + a^{sv}_i \circ \langle U \vec v_i, V \vec v_i \rangle

    with the norm and the scalar product taken over the three components per channel
    (:math:`\epsilon` keeps the norm's derivatives finite at zero vectors). Scalars are invariant and
    vectors rotate and reflect with the structure (:math:`\vec v \mapsto R \vec v` for any orthogonal
    :math:`R`): a vector head may read them. A first layer given no vectors starts from zeros. The
    layer owns its residual updates and applies no normalization or activation after them: the
    paper has none, and a batch norm over vector components would break equivariance, so
    ``model.norm`` and ``model.activation`` are not applied to PaiNN's features.

    Args:
        dim: scalar and vector feature width (in and out: the updates are residual).
        radial_basis: number of sinc basis functions :math:`n_{rbf}`.

    Shapes:
        scalars (N, dim), vectors (N, 3, dim) or None, edge distances (E,), edge vectors (E, 3)
        -> scalars (N, dim), vectors (N, 3, dim).
    """

    traits = ConvTraits(needs_geometry=True, smooth_at_cutoff=True, equivariant=True, kernels=("dgl", "torch"),
                        takes=frozenset({"scalars", "vectors"}), returns=frozenset({"scalars", "vectors"}))

    def __init__(self, dim: int, radial_basis: int = 20):
        super().__init__()
        self.dim, self.radial_basis = dim, radial_basis
        self.phi = two_layer(dim, dim, 3 * dim)
        self.filter = nn.Linear(radial_basis, 3 * dim)
        self.mix_u = nn.Linear(dim, dim, bias=False)
        self.mix_v = nn.Linear(dim, dim, bias=False)
        self.update_net = two_layer(2 * dim, dim, 3 * dim)

    def forward(self, graph: MessageGraph, state: NodeState, edges: Edges) -> NodeState:
        s, v = self.message(graph, state.scalars, state.vectors, edges)
        s, v = self.update(s, v)
        return state.replace(scalars=s, vectors=v)

    def message(self, graph: MessageGraph, s: torch.Tensor, v: torch.Tensor | None,
                edges: Edges) -> tuple[torch.Tensor, torch.Tensor]:
        """The message block; ``v`` None stands for zero vectors (a first layer), whose term is skipped."""
        # f_c (W_r e + b) = [W_r, b] (f_c [e, 1]): the cutoff multiplies the (E, n_rbf + 1) basis, shared
        # by every layer, rather than each layer's (E, 3F) filter.
        basis = edges.derived(("painn-sinc-cutoff", self.radial_basis), lambda: torch.cat(
            [sinc_basis(edges.dist, edges.cutoff, self.radial_basis), torch.ones_like(edges.dist).unsqueeze(1)],
            dim=1) * edges.envelope.unsqueeze(1))
        weight = torch.cat([self.filter.weight, self.filter.bias.unsqueeze(1)], dim=1)
        x = graph.gather_src(self.phi(s)) * F.linear(basis, weight)
        x_s, x_vv, x_vs = x.split(self.dim, dim=1)
        dv = edges.unit.unsqueeze(2) * x_vs.unsqueeze(1)
        if v is None:
            return s + graph.reduce(x_s, "sum"), graph.reduce(dv, "sum")
        dv = torch.addcmul(dv, graph.gather_src(v), x_vv.unsqueeze(1))
        return s + graph.reduce(x_s, "sum"), v + graph.reduce(dv, "sum")

    def update(self, s: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        uv, vv = self.mix_u(v), self.mix_v(v)
        length = torch.sqrt(vv.square().sum(dim=1) + VECTOR_EPS)
        a_vv, a_sv, a_ss = self.update_net(torch.cat([s, length], dim=1)).split(self.dim, dim=1)
        return s + a_ss + a_sv * (uv * vv).sum(dim=1), v + a_vv.unsqueeze(1) * uv


def make_painn(in_dim: int, out_dim: int, options: PaiNNOptions, context: ConvContext) -> PaiNNConv:
    if in_dim != out_dim:
        raise ConfigError(f"painn keeps the feature width: in ({in_dim}) and out ({out_dim}) widths must match")
    return PaiNNConv(in_dim, options.radial_basis)


@hookimpl
def register_convs(register):
    register(ConvSpec(name="painn", description="PaiNN equivariant message passing on scalar and vector features",
                      options=PaiNNOptions, factory=make_painn, module=PaiNNConv))
