"""NequIP interaction block: an E(3)-equivariant tensor-product convolution on e3nn irreps (Batzner et al.,
"E(3)-equivariant graph neural networks for data-efficient and accurate interatomic potentials", Nat.
Commun. 13, 2453, 2022)."""

from __future__ import annotations

import torch
from e3nn import o3
from e3nn.nn import Gate
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F

from hydradgl import hookimpl
from hydradgl.errors import ConfigError
from hydradgl.nn import Conv, ConvTraits, Edges, NodeState
from hydradgl.nn.contract import FEATURE_TYPES
from hydradgl.ops import MessageGraph
from hydradgl.plugins import ConvContext, ConvSpec

from .painn import sinc_basis


class NequIPOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_ell: int = Field(1, ge=1, le=2, description="Highest degree l of the features and of the edges' spherical "
                         "harmonics: 1 (scalars and vectors) or 2 (also rank-2 tensors, 2e; slower).")
    radial_basis: int = Field(8, ge=1, description="Number of Bessel radial basis functions sin(n pi r / r_c) / r "
                              "(n = 1..radial_basis) the radial network reads.")
    radial_hidden: int = Field(32, ge=1, description="Width of the two hidden layers of the radial network that "
                               "makes each edge's tensor-product weights.")
    avg_num_neighbors: float | None = Field(None, gt=0, description="The neighbour sum is divided by this "
                                            "(default: the training set's mean in-degree, else 1).")


def cartesian_to_e3nn_basis() -> torch.Tensor:
    """(3, 3) ``M`` with ``v @ M`` the e3nn ``1o`` components of a Cartesian (x, y, z) row vector ``v``.

    Row i is e3nn's degree-1 spherical harmonic of the unit axis e_i (which is linear in its argument),
    read from e3nn itself, so the conversion does not depend on the component order e3nn uses (the
    identity in e3nn 0.6, a permutation where the order is (y, z, x)). ``M`` is orthogonal: ``u @ M.T``
    converts back.
    """
    return o3.spherical_harmonics(1, torch.eye(3, dtype=torch.float64), normalize=True, normalization="norm")


def hidden_irreps(width: int, max_ell: int) -> o3.Irreps:
    """``width x 0e + width x 1o (+ width x 2e)``: the true tensors of degree up to ``max_ell``."""
    return o3.Irreps([(width, (ell, (-1) ** ell)) for ell in range(max_ell + 1)])


class NequIPConv(Conv):
    r"""NequIP interaction block: a tensor product of the senders' features with the spherical harmonics
    of the edge directions, weighted by learned radial functions, summed over neighbours, then a linear
    map, a linear self-connection, an equivariant gate and a residual.

    The node features :math:`x_i` are the irreps :math:`F \times 0e + F \times 1o\ (+ F \times 2e)`:
    the state's scalars, Cartesian vectors (converted to e3nn's ``1o`` basis and back) and, with
    ``max_ell = 2``, its degree-2 features (in e3nn's basis already); parts the incoming state lacks (the
    first layer's vectors and tensors) are zeros. With :math:`\vec r_{ij} = \vec x_i - \vec x_j` (from the
    sender j to the receiver i, :attr:`Edges.vec`) and :math:`r_{ij}` its length,

    .. math::
        h_j = W_{SI}\, x_j, \qquad
        R(r) = \mathrm{MLP}\big(e(r)\big)\, f_c(r), \qquad
        e_n(r) = \frac{\sin(n \pi r / r_c)}{r},\ n = 1, \dots, n_b,

        m_i = \frac{1}{Z} \sum_{j \in N(i)} \Big( R_{p,u}(r_{ij})\,
              \big( h_j^{(l_1), u} \otimes Y^{(l_2)}(\hat r_{ij}) \big)^{(l_3)} \Big)_{p = (l_1, l_2, l_3),\, u},

        x_i' = x_i + \mathrm{Gate}\big( W_{out}\, m_i + W_{SC}\, x_i \big)

    with :math:`Y^{(l)}` e3nn's real spherical harmonics (``component`` normalization), computed once per
    forward and shared by the layers (``edges.derived(("sh", max_ell))``); the tensor product in e3nn's
    ``uvu`` mode: every path :math:`p` couples channel u of a sender irrep of degree :math:`l_1` with
    :math:`Y^{(l_2)}` into degree :math:`l_3` by the Clebsch-Gordan coefficients, one weight per path,
    channel and edge, keeping only the outputs of parity :math:`(-1)^{l_3}` with :math:`l_3 \le` ``max_ell``
    (so every feature stays a true tensor, and the block is equivariant under reflections too);
    :math:`W_{SI}, W_{out}, W_{SC}` equivariant linear maps (``o3.Linear``: channel mixing within each
    degree); the radial network an MLP with two SiLU hidden layers of width ``radial_hidden`` giving
    every edge its tensor-product weights; :math:`f_c(r) = (\cos(\pi r / r_c) + 1) / 2` the cosine cutoff
    (instead of the paper's polynomial envelope: both reach 0 with a zero slope at :math:`r_c`, so every
    message fades out smoothly); :math:`Z` ``avg_num_neighbors``. The gate applies SiLU to the scalars
    and multiplies each degree-1 and degree-2 channel by the sigmoid of an extra scalar of
    :math:`W_{out} m_i + W_{SC} x_i`. The paper's self-connection is a tensor product with the one-hot
    species; the contract's state carries no species, so a linear self-connection and the residual
    stand in for it. The e3nn modules run in e3nn's eager mode on torch >= 2.10 (its default there),
    and are twice differentiable: forces trained by autograd work.

    Args:
        width: channels F of every degree (in and out: the block is residual).
        max_ell: highest degree of the features and spherical harmonics (1 or 2).
        radial_basis: number of Bessel basis functions :math:`n_b`.
        radial_hidden: width of the radial network's hidden layers.
        avg_num_neighbors: the normalization :math:`Z` of the neighbour sum.

    Shapes:
        state: scalars (N, F), vectors (N, 3, F) or None, spherical {2: (N, 5, F)} (read with
        ``max_ell = 2``); edges: ``vec`` (E, 3), ``dist`` (E,) -> scalars (N, F), vectors (N, 3, F), and
        spherical {2: (N, 5, F)} with ``max_ell = 2`` (other degrees pass through).
    """

    traits = ConvTraits(needs_geometry=True, smooth_at_cutoff=True, equivariant=True, kernels=("dgl", "torch"),
                        takes=frozenset(FEATURE_TYPES), returns=frozenset(FEATURE_TYPES))

    to_e3nn: torch.Tensor

    def __init__(self, width: int, max_ell: int = 1, radial_basis: int = 8, radial_hidden: int = 32,
                 avg_num_neighbors: float = 1.0):
        super().__init__()
        if max_ell not in (1, 2):
            raise ValueError(f"max_ell must be 1 or 2, got {max_ell}")
        self.width, self.max_ell, self.radial_basis = width, max_ell, radial_basis
        self.avg_num_neighbors = float(avg_num_neighbors)
        self.register_buffer("to_e3nn", cartesian_to_e3nn_basis().to(torch.get_default_dtype()), persistent=False)
        irreps = hidden_irreps(width, max_ell)
        self.irreps_sh = o3.Irreps.spherical_harmonics(max_ell)
        mid: list[tuple[int, o3.Irrep]] = []
        instructions = []
        for i, (mul, ir_in) in enumerate(irreps):
            for j, (_, ir_sh) in enumerate(self.irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out in irreps:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        self.self_interaction = o3.Linear(irreps, irreps)
        self.tp = o3.TensorProduct(irreps, self.irreps_sh, o3.Irreps(mid), instructions,
                                   shared_weights=False, internal_weights=False)
        self.radial = nn.Sequential(nn.Linear(radial_basis, radial_hidden), nn.SiLU(),
                                    nn.Linear(radial_hidden, radial_hidden), nn.SiLU(),
                                    nn.Linear(radial_hidden, self.tp.weight_numel))
        gated = hidden_irreps(width, max_ell)[1:]
        self.gate = Gate(o3.Irreps(f"{width}x0e"), [F.silu], o3.Irreps(f"{gated.num_irreps}x0e"), [torch.sigmoid],
                         gated)
        self.linear_out = o3.Linear(self.tp.irreps_out, self.gate.irreps_in)
        self.self_connection = o3.Linear(irreps, self.gate.irreps_in)

    def forward(self, graph: MessageGraph, state: NodeState, edges: Edges) -> NodeState:
        x = self.features(state)
        sh = edges.derived(("sh", self.max_ell), lambda: o3.spherical_harmonics(
            self.irreps_sh, edges.vec, normalize=True, normalization="component"))
        basis = edges.derived(("sinc", self.radial_basis),
                              lambda: sinc_basis(edges.dist, edges.cutoff, self.radial_basis))
        weights = self.radial(basis) * edges.envelope.unsqueeze(1)
        messages = self.tp(graph.gather_src(self.self_interaction(x)), sh, weights)
        m = graph.reduce(messages, "sum") / self.avg_num_neighbors
        return self.state(x + self.gate(self.linear_out(m) + self.self_connection(x)), state)

    def features(self, state: NodeState) -> torch.Tensor:
        """(N, irreps dim): the state as e3nn features ``[scalars | 1o | 2e]``, each block channel-major."""
        s, f = state.scalars, self.width
        n = s.shape[0]
        v = state.vectors if state.vectors is not None else s.new_zeros((n, 3, f))
        parts = [s, v] + ([state.spherical.get(2, s.new_zeros((n, 5, f)))] if self.max_ell == 2 else [])
        for ell, part in enumerate(parts):
            if part.shape != ((n, f) if ell == 0 else (n, 2 * ell + 1, f)):
                raise ValueError(f"nequip (width {f}) got degree-{ell} features of shape {tuple(part.shape)}")
        blocks = [s, torch.einsum("nif,ij->nfj", v, self.to_e3nn.to(v.dtype)).reshape(n, 3 * f)]
        if self.max_ell == 2:
            blocks.append(parts[2].transpose(1, 2).reshape(n, 5 * f))
        return torch.cat(blocks, dim=1)

    def state(self, x: torch.Tensor, state: NodeState) -> NodeState:
        """The e3nn features ``x`` back as a NodeState (Cartesian vectors); degrees it lacks kept from ``state``."""
        n, f = x.shape[0], self.width
        blocks = x.split([f * (2 * ell + 1) for ell in range(self.max_ell + 1)], dim=1)
        vectors = torch.einsum("nfj,ij->nif", blocks[1].view(n, f, 3), self.to_e3nn.to(x.dtype))
        spherical = dict(state.spherical)
        if self.max_ell == 2:
            spherical[2] = blocks[2].view(n, f, 5).transpose(1, 2)
        return state.replace(scalars=blocks[0], vectors=vectors, spherical=spherical)


def default_avg_num_neighbors(context: ConvContext) -> float:
    """The training set's mean in-degree from the context's degree histogram, else 1."""
    counts = context.degree_histogram or []
    mean = sum(k * c for k, c in enumerate(counts)) / max(sum(counts), 1)
    return mean if mean > 0 else 1.0


def make_nequip(in_dim: int, out_dim: int, options: NequIPOptions, context: ConvContext) -> NequIPConv:
    if in_dim != out_dim:
        raise ConfigError(f"nequip keeps the feature width: in ({in_dim}) and out ({out_dim}) widths must match")
    avg = options.avg_num_neighbors if options.avg_num_neighbors is not None else default_avg_num_neighbors(context)
    return NequIPConv(in_dim, options.max_ell, options.radial_basis, options.radial_hidden, avg)


@hookimpl
def register_convs(register):
    register(ConvSpec(name="nequip", description="NequIP E(3)-equivariant tensor-product convolution (e3nn irreps)",
                      options=NequIPOptions, factory=make_nequip, module=NequIPConv))
