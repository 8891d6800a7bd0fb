"""PNA's fused edge-basis operations: aggregates of ``x[src] + basis @ weight.T`` whose backward passes
form fewer per-edge tensors than autograd's chain would. Only PNA (``hydradgl_plugins.convs.pna``) uses
them; they are ordinary functions of a :class:`~hydradgl.ops.graph.MessageGraph` on either kernel path.
"""

from __future__ import annotations

from typing import Literal

import torch

from hydradgl.dglcompat import dgl
from hydradgl.ops.extremum import extremum
from hydradgl.ops.graph import MessageGraph


def u_add_e_moments(graph: MessageGraph, x: torch.Tensor, basis: torch.Tensor, weight: torch.Tensor,
                    edge_weight: torch.Tensor | None = None) -> torch.Tensor:
    """(N, 2F): sums over incoming edges of ``u`` and of ``u * u``, side by side, where
    ``u = x[src] + basis @ weight.T`` with ``basis`` (E, K) a per-edge expansion and ``weight`` (F, K);
    with ``edge_weight`` (E, 1), each edge's terms weighted by it (e.g. a cutoff envelope).

    On the dgl path without ``edge_weight`` one autograd node: ``u`` is formed once and kept, and the
    backward pass makes a single per-edge gradient, ``g1 + 2 u g2`` (g1, g2 the output gradients at
    each destination), instead of autograd's chain through the gather, the projection, the square and
    two sums.
    """
    if graph._dgl_edges and edge_weight is None:
        return _Moments.apply(graph, x, basis, weight)
    u = graph.gather_src(x).addmm_(basis, weight.T)
    moments = torch.cat([u, u * u], dim=1)
    return graph.reduce(moments if edge_weight is None else moments * edge_weight, "sum")


def u_add_e_linear(graph: MessageGraph, x: torch.Tensor, basis: torch.Tensor, weight: torch.Tensor,
                   op: Literal["max", "min"] = "max") -> torch.Tensor:
    """(N, F): ``op`` over incoming edges of ``x[src] + basis @ weight.T``, with ``basis`` (E, K) a
    per-edge expansion shared by many layers and ``weight`` (F, K) a layer's projection of it.

    Same value as ``graph.u_add_e(x, basis @ weight.T, op)``, but the backward pass forms no per-edge
    tensor: a max (min) picks one edge per output element, so the gradient of ``weight`` gathers
    those edges' basis rows ((N, F, K) values) instead of scattering an (E, F) gradient and
    multiplying it by the (E, K) basis.
    """
    return _LinearExtremum.apply(graph, x, basis, weight, op)


def _edge_winners(graph: MessageGraph, x: torch.Tensor, e: torch.Tensor,
                  op: Literal["max", "min"]) -> tuple[torch.Tensor, torch.Tensor]:
    """``op`` over incoming edges of ``x[src] + e`` and, per output element, the edge it came
    from (the lowest edge id among ties; any id for a node without edges)."""
    shape = (graph.num_nodes, *e.shape[1:])
    if graph.num_edges == 0:  # over no edges the reduction is 0
        return e.new_zeros(shape), torch.zeros(shape, dtype=torch.long, device=e.device)
    if graph._dgl_edges:
        out, (_, arg_e) = dgl._sparse_ops._gspmm(graph.dgl._graph, "add", op, x, e)
        out = torch.where((graph.in_degrees() > 0).unsqueeze(-1), out, out.new_zeros(()))
        return out, arg_e.long().clamp(min=0)
    u = graph.gather_src(x) + e
    best, winner, found = extremum(u, graph.dst, graph.num_nodes, op, graph._row_ids(u, "edges"))
    return torch.where(found, u.gather(0, winner), best), winner


def _edge_terms(graph: MessageGraph, x: torch.Tensor, basis: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(E, F): ``x[src] + basis @ weight.T`` (in place: addmm would copy the gather first)."""
    return x.index_select(0, graph.src).addmm_(basis, weight.T)


class _Moments(torch.autograd.Function):
    """:func:`u_add_e_moments` on the dgl path (edge-to-node sums on ``_sum_into``). The backward pass
    uses the ``u`` kept from the forward pass, except under ``create_graph``: there it forms ``u`` again
    from the inputs, with autograd on, so that the second derivative sees ``2 u g2`` depend on them."""

    @staticmethod
    def forward(ctx, graph, x, basis, weight):
        u = _edge_terms(graph, x, basis, weight)
        ctx.graph = graph
        ctx.save_for_backward(u, x, basis, weight)
        return torch.cat([graph._sum_into("to_dst", u), graph._sum_into("to_dst", u * u)], dim=1)

    @staticmethod
    def backward(ctx, grad):
        u, x, basis, weight = ctx.saved_tensors
        graph = ctx.graph
        if torch.is_grad_enabled():  # create_graph: the same float ops, so the same u
            u = _edge_terms(graph, x, basis, weight)
        g1, g2 = (part.contiguous().index_select(0, graph.dst) for part in grad.chunk(2, dim=1))
        grad_u = g1.addcmul_(u, g2, value=2.0)  # contiguous operands: faster than on slices; g1 is ours
        grad_x = graph._sum_into("to_src", grad_u) if ctx.needs_input_grad[1] else None
        grad_basis = grad_u @ weight if ctx.needs_input_grad[2] else None
        grad_weight = grad_u.T @ basis if ctx.needs_input_grad[3] else None
        return None, grad_x, grad_basis, grad_weight


class _LinearExtremum(torch.autograd.Function):
    """:func:`u_add_e_linear`: the per-edge term is formed in the forward pass only."""

    @staticmethod
    def forward(ctx, graph, x, basis, weight, op):
        out, winner = _edge_winners(graph, x, basis @ weight.T, op)
        ctx.graph = graph
        ctx.save_for_backward(basis, weight, winner)
        return out

    @staticmethod
    def backward(ctx, grad):
        basis, weight, winner = ctx.saved_tensors
        graph = ctx.graph
        if graph.num_edges == 0:  # the output is the constant 0
            return None, torch.zeros_like(grad), torch.zeros_like(basis), torch.zeros_like(weight), None
        grad = grad * (graph.in_degrees() > 0).unsqueeze(-1).to(grad.dtype)  # nodes without edges: constant 0
        grad_x = grad_basis = grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_x = grad.new_zeros(grad.shape).scatter_add_(0, graph.src[winner], grad)
        if ctx.needs_input_grad[2]:
            rows = (grad.unsqueeze(-1) * weight).reshape(-1, weight.shape[1])
            grad_basis = basis.new_zeros(basis.shape).index_add_(0, winner.reshape(-1), rows)
        if ctx.needs_input_grad[3]:
            picked = basis.index_select(0, winner.reshape(-1)).view(*winner.shape, basis.shape[1])
            grad_weight = torch.einsum("nf,nfk->fk", grad, picked)
        return None, grad_x, grad_basis, grad_weight, None
