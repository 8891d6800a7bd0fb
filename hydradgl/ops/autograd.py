"""Autograd functions behind :class:`~hydradgl.ops.graph.MessageGraph`'s dgl path: forward on a fast
kernel, backward written out so that it too avoids DGL's slow CPU kernels.

Each takes the graph as its first argument and calls only its index tensors and edge-to-node sums.
Every backward pass is made of differentiable torch ops (torch's CSR product included), so it has a
derivative itself: forces trained by autograd (``create_graph=True``) need the second derivative.
"""

from __future__ import annotations

import torch

from hydradgl.dglcompat import dgl


def scatter_to_winners(grad: torch.Tensor, winner: torch.Tensor, n: int) -> torch.Tensor:
    """(n, F...): each element of ``grad`` (R, F...) sent to row ``winner`` (R, F...) of the input, where
    ``winner == n`` marks an output without a winner (it gets nothing). Linear in ``grad``, so twice
    differentiable."""
    return grad.new_zeros((n + 1, *grad.shape[1:])).scatter_add_(0, winner, grad.contiguous())[:n]


class EdgeSum(torch.autograd.Function):
    """:meth:`MessageGraph.reduce` sum on DGL's gspmm, with the backward pass a plain gather of the
    output gradient at each edge's destination (DGL's own backward, a gsddmm, is slower on CPU)."""

    @staticmethod
    def forward(ctx, graph, e):
        ctx.graph = graph
        return graph._sum_into("to_dst", e)

    @staticmethod
    def backward(ctx, grad):
        return None, grad.index_select(0, ctx.graph.dst)


class UAddV(torch.autograd.Function):
    """:meth:`MessageGraph.u_add_v` as two gathers, with a backward pass of two fused edge-to-node sums
    (to destinations, and to sources on the reversed graph), which on CPU beats DGL's gsddmm."""

    @staticmethod
    def forward(ctx, graph, x_src, x_dst):
        ctx.graph, ctx.shapes = graph, (x_src.shape, x_dst.shape)
        return x_src.index_select(0, graph.src) + x_dst.index_select(0, graph.dst)

    @staticmethod
    def backward(ctx, grad):
        graph = ctx.graph
        grad_src = grad_dst = None
        if ctx.needs_input_grad[1]:
            grad_src = graph._sum_into("to_src", grad).sum_to_size(ctx.shapes[0])
        if ctx.needs_input_grad[2]:
            grad_dst = graph._sum_into("to_dst", grad).sum_to_size(ctx.shapes[1])
        return None, grad_src, grad_dst


class CopyUExtremum(torch.autograd.Function):
    """:meth:`MessageGraph.copy_u` max/min on CPU with torch's CSR reduce kernel (torch.sparse.mm), which
    beats DGL's CPU max/min. Keeps the winning entry per output element for the backward pass, which
    sends each gradient element to that entry's source node."""

    @staticmethod
    def forward(ctx, graph, x, op):
        matrix, sources = graph._csr(x.dtype)
        reduce = "amax" if op == "max" else "amin"
        x = x.contiguous()
        if not ctx.needs_input_grad[1]:
            return torch.sparse.mm(matrix, x, reduce)
        with torch.enable_grad():  # the kernel reports the winning entries only for an input that needs grad
            out, entry = torch.ops.aten._sparse_mm_reduce_impl(matrix, x.detach().requires_grad_(), reduce)
        ctx.save_for_backward(sources.index_select(0, entry.reshape(-1)).view(entry.shape))
        return out.detach()

    @staticmethod
    def backward(ctx, grad):
        (winner,) = ctx.saved_tensors  # source node per output element; N where a node has no edges
        return None, scatter_to_winners(grad, winner, grad.shape[0]), None


class SegmentSum(torch.autograd.Function):
    """:meth:`MessageGraph.readout` sum on CPU with torch's segment_reduce (faster there than DGL's),
    with the backward pass a broadcast of the output gradient to each graph's nodes: segment_reduce's
    own backward has no derivative."""

    @staticmethod
    def forward(ctx, graph, h):
        ctx.graph = graph
        return torch.segment_reduce(h, "sum", lengths=graph.batch_num_nodes)

    @staticmethod
    def backward(ctx, grad):
        return None, ctx.graph.broadcast(grad)


class SegmentMax(torch.autograd.Function):
    """:meth:`MessageGraph.readout` max on DGL's segment kernel (0 for a graph without nodes, as DGL's
    ``segment_reduce``), with the backward pass a scatter to the winning nodes: DGL's own backward is
    a raw kernel call that a second derivative cannot see through."""

    @staticmethod
    def forward(ctx, graph, h):
        offsets = torch.cat([graph.batch_num_nodes.new_zeros(1), graph.batch_num_nodes.cumsum(0)])
        out, arg = dgl._sparse_ops._segment_reduce("max", h, offsets)
        n = h.shape[0]
        ctx.save_for_backward(torch.where(arg < 0, n, arg))  # DGL's arg is -1 for a graph without nodes
        ctx.n = n
        return out.masked_fill(out.isinf(), 0)

    @staticmethod
    def backward(ctx, grad):
        (winner,) = ctx.saved_tensors
        return None, scatter_to_winners(grad, winner, ctx.n)
