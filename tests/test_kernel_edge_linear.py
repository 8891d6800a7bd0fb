"""The primitives on u = x[src] + basis @ W.T (a node term plus a projected per-edge basis), on both kernel
paths, against the plain per-edge computation (float64 values and gradients): hydradgl.ops.pna_fused.u_add_e_linear
(max/min with a sparse backward) and u_add_e_moments (sums of u and u * u)."""

from __future__ import annotations

import pytest
import torch

from hydradgl.ops import MessageGraph
from hydradgl.ops.pna_fused import u_add_e_linear, u_add_e_moments
from tests.test_model_convs import random_graph


def graph_with_isolated_node() -> MessageGraph:
    base = random_graph(n=8, seed=2)
    keep = base.dst != 3  # node 3 receives nothing
    return MessageGraph.from_edges(base.src[keep], base.dst[keep], base.num_nodes)


def check_against_per_edge_reference(graph: MessageGraph, primitive, reference, out_width: int, seed: int) -> None:
    """``primitive(x, basis, weight)`` against a loop over nodes that forms each node's messages
    ``u = x[src] + basis @ weight.T`` explicitly and reduces them with ``reference(u)`` (u: (D, 5), D >= 0),
    values and gradients of x, basis and weight; node 3 has no incoming edge and must give 0."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(graph.num_nodes, 5, generator=g, dtype=torch.float64, requires_grad=True)
    basis = torch.randn(graph.num_edges, 3, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(graph.num_nodes, out_width, generator=g, dtype=torch.float64)

    out = primitive(x, basis, weight)
    grads = torch.autograd.grad((out * upstream).sum(), (x, basis, weight))
    rows = []
    for i in range(graph.num_nodes):
        eids = (graph.dst == i).nonzero(as_tuple=True)[0]
        rows.append(reference(x[graph.src[eids]] + basis[eids] @ weight.T))
    expected = torch.stack(rows)
    expected_grads = torch.autograd.grad((expected * upstream).sum(), (x, basis, weight))
    torch.testing.assert_close(out, expected)
    assert out.shape == (graph.num_nodes, out_width) and out[3].abs().max() == 0
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("backend", ["dgl", "torch"])
@pytest.mark.parametrize("op", ["max", "min"])
def test_u_add_e_linear_matches_per_edge_reference(backend, op):
    graph = graph_with_isolated_node().using(backend)

    def extremum(u):
        if len(u) == 0:
            return torch.zeros(5, dtype=torch.float64)
        return u.max(0).values if op == "max" else u.min(0).values
    check_against_per_edge_reference(graph, lambda *a: u_add_e_linear(graph, *a, op), extremum, 5, seed=0)


@pytest.mark.parametrize("backend", ["dgl", "torch"])
def test_u_add_e_moments_matches_per_edge_reference(backend):
    graph = graph_with_isolated_node().using(backend)
    check_against_per_edge_reference(graph, lambda *a: u_add_e_moments(graph, *a),
                                     lambda u: torch.cat([u.sum(0), (u * u).sum(0)]), 10, seed=1)


def test_u_add_e_linear_without_edges_is_zero():
    graph = MessageGraph.from_edges(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 3)
    x = torch.randn(3, 2, requires_grad=True)
    weight = torch.randn(2, 4, requires_grad=True)
    for backend in ("dgl", "torch"):
        out = u_add_e_linear(graph.using(backend), x, torch.zeros(0, 4), weight, "max")
        assert out.shape == (3, 2) and out.abs().max() == 0
        out.sum().backward()


def test_u_add_e_moments_without_edges_is_zero():
    graph = MessageGraph.from_edges(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 3)
    x = torch.randn(3, 2, requires_grad=True)
    weight = torch.randn(2, 4, requires_grad=True)
    for backend in ("dgl", "torch"):
        out = u_add_e_moments(graph.using(backend), x, torch.zeros(0, 4), weight)
        assert out.shape == (3, 4) and out.abs().max() == 0
        out.sum().backward()


@pytest.mark.parametrize("backend", ["dgl", "torch"])
def test_weighted_moments_match_per_node_loop(backend):
    """u_add_e_moments with edge weights (PNA's envelope): sum_j w_ij u_ij and sum_j w_ij u_ij^2, values
    and gradients (the weights' too: forces reach the envelope) against a loop over nodes."""
    graph = graph_with_isolated_node().using(backend)
    g = torch.Generator().manual_seed(3)
    x, basis, weight, w = (torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
                           for shape in ((graph.num_nodes, 5), (graph.num_edges, 3), (5, 3), (graph.num_edges, 1)))
    upstream = torch.randn(graph.num_nodes, 10, generator=g, dtype=torch.float64)
    out = u_add_e_moments(graph, x, basis, weight, w)
    rows = []
    for i in range(graph.num_nodes):
        eids = (graph.dst == i).nonzero(as_tuple=True)[0]
        u = x[graph.src[eids]] + basis[eids] @ weight.T
        rows.append(torch.cat([(w[eids] * u).sum(0), (w[eids] * u * u).sum(0)]))
    expected = torch.stack(rows)
    torch.testing.assert_close(out, expected)
    for got, want in zip(torch.autograd.grad((out * upstream).sum(), (x, basis, weight, w)),
                         torch.autograd.grad((expected * upstream).sum(), (x, basis, weight, w))):
        torch.testing.assert_close(got, want)
