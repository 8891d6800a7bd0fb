"""NequIP: one layer against a float64 loop reference, O(3) equivariance of scalars, Cartesian vectors and
degree-2 features, the Cartesian <-> e3nn basis conversion, both kernel paths, second derivatives with
respect to the edge vectors, smoothness at the cutoff, and the factory's options and refusals."""

from __future__ import annotations

import math
from contextlib import contextmanager

import pytest
import torch
from e3nn import o3
from pydantic import ValidationError
from torch.autograd import gradgradcheck

from hydradgl.errors import ConfigError
from hydradgl.nn import Edges, NodeState
from hydradgl.ops import MessageGraph
from hydradgl.plugins import ConvContext
from hydradgl_plugins.convs.nequip import NequIPConv, NequIPOptions, cartesian_to_e3nn_basis, make_nequip

CUTOFF = 4.0
DIM = 4
PATHS = ("dgl", "torch")


def geometric_graph(n: int = 8, box: float = 5.0, seed: int = 0) -> tuple[MessageGraph, torch.Tensor]:
    """Random positions in a cube and every ordered pair closer than the cutoff as an edge; the graph
    and its edge vectors pos[dst] - pos[src]."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, 3, generator=g, dtype=torch.float64) * box
    close = (torch.cdist(pos, pos) < CUTOFF) & ~torch.eye(n, dtype=torch.bool)
    dst, src = close.nonzero(as_tuple=True)  # sorted by receiver, as hydradgl's graphs are
    return MessageGraph.from_edges(src, dst, n), pos[dst] - pos[src]


@contextmanager
def default_dtype(dtype: torch.dtype):
    """Build e3nn modules in ``dtype``: their Clebsch-Gordan constants are made in the default dtype, so a
    layer built in float32 and then converted is equivariant to float32 rounding (~1e-7) only."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def layers(n: int = 2, max_ell: int = 1, avg: float = 3.0, seed: int = 0, dim: int = DIM) -> list[NequIPConv]:
    torch.manual_seed(seed)
    options = NequIPOptions(max_ell=max_ell, radial_basis=5, radial_hidden=8, avg_num_neighbors=avg)
    with default_dtype(torch.float64):
        return [make_nequip(dim, dim, options, ConvContext(0, None, CUTOFF)) for _ in range(n)]


def edges_of(vec: torch.Tensor) -> Edges:
    return Edges(None, vec.norm(dim=1), vec, CUTOFF)


def random_state(n: int, max_ell: int = 1, seed: int = 1, dim: int = DIM) -> NodeState:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, dim, generator=g, dtype=torch.float64)
    v = torch.randn(n, 3, dim, generator=g, dtype=torch.float64)
    spherical = {2: torch.randn(n, 5, dim, generator=g, dtype=torch.float64)} if max_ell == 2 else {}
    return NodeState(s, v, spherical)


def run(convs: list[NequIPConv], graph: MessageGraph, state: NodeState, edges: Edges) -> NodeState:
    for conv in convs:
        state = conv(graph, state, edges)
    return state


def orthogonal(seed: int, reflect: bool) -> torch.Tensor:
    torch.manual_seed(seed)
    r = o3.rand_matrix(dtype=torch.float64)
    return r @ torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)) if reflect else r


def representation(ell: int, rot: torch.Tensor) -> torch.Tensor:
    """(2l+1, 2l+1) D with Y_l(R x) = D Y_l(x) for e3nn's spherical harmonics (its (-1)^l-parity irrep),
    by least squares over sample directions: float64-exact, where ``D_from_matrix`` is good to ~1e-7;
    checked against it."""
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y, y_turned = (o3.spherical_harmonics(ell, p, normalize=True) for p in (x, x @ rot.T))
    d = torch.linalg.lstsq(y, y_turned).solution.T
    torch.testing.assert_close(d, o3.Irrep(ell, (-1) ** ell).D_from_matrix(rot), rtol=0, atol=1e-6)
    return d


def reference(conv: NequIPConv, graph: MessageGraph, state: NodeState, vec: torch.Tensor) -> torch.Tensor:
    """One layer's e3nn output features by loops over receivers and their incoming edges, the radial
    basis, envelope and spherical harmonics computed edge by edge from their formulas."""
    x = conv.features(state)
    h = conv.self_interaction(x)
    rows = []
    for i in range(graph.num_nodes):
        m = torch.zeros(conv.tp.irreps_out.dim, dtype=torch.float64)
        for e in (graph.dst == i).nonzero(as_tuple=True)[0].tolist():
            j, r = int(graph.src[e]), float(vec[e].norm())
            basis = torch.tensor([[math.sin(k * math.pi * r / CUTOFF) / r for k in range(1, conv.radial_basis + 1)]],
                                 dtype=torch.float64)
            envelope = 0.5 * (math.cos(math.pi * r / CUTOFF) + 1.0)
            y = o3.spherical_harmonics(conv.irreps_sh, vec[e:e + 1] / r, normalize=False, normalization="component")
            m = m + conv.tp(h[j:j + 1], y, conv.radial(basis) * envelope)[0]
        rows.append(m / conv.avg_num_neighbors)
    m = torch.stack(rows)
    return x + conv.gate(conv.linear_out(m) + conv.self_connection(x))


@pytest.mark.parametrize("max_ell", [1, 2])
@pytest.mark.parametrize("path", PATHS)
def test_layer_matches_the_loop_reference(max_ell, path):
    graph, vec = geometric_graph(seed=2)
    (conv,) = layers(1, max_ell)
    state = random_state(graph.num_nodes, max_ell)
    out = conv(graph.using(path), state, edges_of(vec))
    expected = reference(conv, graph, state, vec)
    torch.testing.assert_close(conv.features(out), expected, rtol=1e-10, atol=1e-10)
    assert out.vectors is not None and out.vectors.abs().max() > 1e-2  # the messages reach the vectors


@pytest.mark.parametrize("max_ell", [1, 2])
@pytest.mark.parametrize("reflect", [False, True])
def test_outputs_are_equivariant_under_rotations_and_reflections(max_ell, reflect):
    graph, vec = geometric_graph(seed=3)
    convs = layers(2, max_ell)
    state = random_state(graph.num_nodes, max_ell)
    rot = orthogonal(7, reflect)
    d2 = representation(2, rot)
    turned = NodeState(state.scalars, torch.einsum("ij,njf->nif", rot, state.vectors),
                       {deg: torch.einsum("ij,njf->nif", d2, t) for deg, t in state.spherical.items()})
    out = run(convs, graph, state, edges_of(vec))
    out_turned = run(convs, graph, turned, edges_of(vec @ rot.T))
    torch.testing.assert_close(out_turned.scalars, out.scalars, rtol=0, atol=1e-9)
    torch.testing.assert_close(out_turned.vectors, torch.einsum("ij,njf->nif", rot, out.vectors), rtol=0, atol=1e-9)
    assert set(out.spherical) == ({2} if max_ell == 2 else set())
    if max_ell == 2:
        torch.testing.assert_close(out_turned.spherical[2], torch.einsum("ij,njf->nif", d2, out.spherical[2]),
                                   rtol=0, atol=1e-9)
    assert out.vectors.abs().max() > 1e-2  # not trivially equivariant by being 0
    if reflect:  # vectors are polar (1o): a reflection flips them; axial ones (1e) would not follow R
        assert (out_turned.vectors - out.vectors).abs().max() > 1e-3


def test_cartesian_vectors_convert_to_e3nns_basis_and_back():
    (conv,) = layers(1, max_ell=2)
    state = random_state(6, max_ell=2)
    back = conv.state(conv.features(state), NodeState(state.scalars))
    for got, want in ((back.scalars, state.scalars), (back.vectors, state.vectors),
                      (back.spherical[2], state.spherical[2])):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-15)
    # The 1o block of e3nn's features is e3nn's degree-1 spherical harmonic of the Cartesian vector ...
    def vector_block(st: NodeState) -> torch.Tensor:  # (N, F, 3)
        return conv.features(st)[:, DIM:4 * DIM].view(6, DIM, 3)

    block = vector_block(state)
    v = state.vectors.transpose(1, 2)  # (N, F, 3) Cartesian
    torch.testing.assert_close(block, o3.spherical_harmonics(1, v, normalize=False, normalization="norm"))
    # ... and so rotates with e3nn's 1o representation when the Cartesian vector rotates with R.
    rot = orthogonal(3, reflect=True)
    turned = NodeState(state.scalars, torch.einsum("ij,njf->nif", rot, state.vectors), state.spherical)
    d1 = representation(1, rot)
    torch.testing.assert_close(vector_block(turned), block @ d1.T, rtol=0, atol=1e-12)
    basis = cartesian_to_e3nn_basis()
    torch.testing.assert_close(basis @ basis.T, torch.eye(3, dtype=torch.float64))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_vectors_from_an_edge_along_one_axis_point_along_that_axis(axis):
    # Two atoms on the given axis, no incoming vectors: the structure is symmetric under rotations about
    # that axis, so every output vector lies along it (in Cartesian order, whatever e3nn's order is).
    graph = MessageGraph.from_edges(torch.tensor([0, 1]), torch.tensor([1, 0]), 2)
    vec = torch.zeros(2, 3, dtype=torch.float64)
    vec[0, axis], vec[1, axis] = 1.7, -1.7
    state = NodeState(torch.randn(2, DIM, dtype=torch.float64))
    out = run(layers(2, max_ell=2), graph, state, edges_of(vec))
    others = [a for a in range(3) if a != axis]
    assert out.vectors[:, axis].abs().max() > 1e-2
    torch.testing.assert_close(out.vectors[:, others], torch.zeros_like(out.vectors[:, others]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("max_ell", [1, 2])
def test_kernel_paths_agree_on_outputs_and_gradients(max_ell):
    graph, vec = geometric_graph(seed=4)
    convs = layers(2, max_ell)
    results = []
    for path in PATHS:
        v = vec.clone().requires_grad_(True)
        out = run(convs, graph.using(path), NodeState(random_state(graph.num_nodes).scalars), edges_of(v))
        loss = out.scalars.square().sum() + out.vectors.sum() + sum(t.sum() for t in out.spherical.values())
        (grad,) = torch.autograd.grad(loss, v)
        results.append((out.scalars, out.vectors, grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("path", PATHS)
def test_second_derivatives_with_respect_to_the_edge_vectors(path):
    graph, vec = geometric_graph(n=3, box=2.0, seed=5)
    convs = layers(2, max_ell=1, dim=2)
    scalars = random_state(3, dim=2).scalars

    def energy(v: torch.Tensor) -> torch.Tensor:
        return run(convs, graph.using(path), NodeState(scalars), edges_of(v)).scalars.sum()

    assert gradgradcheck(energy, (vec.clone().requires_grad_(True),), atol=1e-6)


def test_an_edge_at_the_cutoff_contributes_nothing():
    graph, vec = geometric_graph(n=6, seed=6)
    far = torch.tensor([[CUTOFF - 1e-6, 0.0, 0.0]], dtype=torch.float64)
    convs = layers(2, max_ell=2)
    state = random_state(6, max_ell=2)

    def with_extra(extra: torch.Tensor) -> tuple[NodeState, torch.Tensor]:
        v = torch.cat([vec, extra]).requires_grad_(True)
        src, dst = torch.cat([graph.src, torch.tensor([0])]), torch.cat([graph.dst, torch.tensor([5])])
        g = MessageGraph.from_edges(src, dst, 6)
        out = run(convs, g, state, edges_of(v))
        (grad,) = torch.autograd.grad(out.scalars.sum() + out.vectors.sum(), v)
        return out, grad[-1]

    base = run(convs, graph, state, edges_of(vec))
    at_cutoff, slope = with_extra(far)
    inside, _ = with_extra(far / 2)
    for a, b in ((at_cutoff.scalars, base.scalars), (at_cutoff.vectors, base.vectors),
                 (at_cutoff.spherical[2], base.spherical[2])):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    assert slope.abs().max() < 1e-5  # the force that edge exerts fades out too
    assert (inside.scalars - base.scalars).abs().max() > 1e-3  # the same edge well inside does contribute


def test_factory_options_traits_and_refusals():
    context = ConvContext(0, [0, 2, 4, 2], CUTOFF)  # mean in-degree (2 + 8 + 6) / 8 = 2
    assert make_nequip(8, 8, NequIPOptions(), context).avg_num_neighbors == pytest.approx(2.0)
    assert make_nequip(8, 8, NequIPOptions(), ConvContext(0, None, CUTOFF)).avg_num_neighbors == 1.0
    assert make_nequip(8, 8, NequIPOptions(avg_num_neighbors=12.5), context).avg_num_neighbors == 12.5
    assert NequIPConv.traits.problems() == [] and NequIPConv.traits.equivariant
    with pytest.raises(ConfigError, match=r"nequip keeps the feature width: in \(8\) and out \(16\)"):
        make_nequip(8, 16, NequIPOptions(), context)
    with pytest.raises(ValidationError, match="max_ell"):
        NequIPOptions(max_ell=3)
    with pytest.raises(ValidationError, match="extra"):
        NequIPOptions(lmax=2)
    (conv,) = layers(1)
    with pytest.raises(ValueError, match=r"nequip \(width 4\) got degree-1 features of shape \(3, 3, 5\)"):
        conv.features(NodeState(torch.zeros(3, DIM, dtype=torch.float64), torch.zeros(3, 3, 5, dtype=torch.float64)))
