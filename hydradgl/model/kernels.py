"""The message-passing kernel layer: what convs and heads call instead of DGL.

A :class:`MessageGraph` is the batched graph a conv or head receives. Its methods are the few
message-passing primitives hydradgl's layers need (gather, fused gather-and-reduce, per-graph
readout), each with two implementations:

* ``dgl``: DGL's fused sparse kernels (gspmm/gsddmm). Per-edge messages of the fused forms are never
  materialized. Runs wherever the installed DGL supports the tensors' device (CPU always; CUDA only
  with DGL's own CUDA wheels, which exist for torch <= 2.4).
* ``torch``: plain torch (``index_select``, ``index_add_``, ``scatter_reduce``) on the edge index
  tensors. Runs on any device torch supports.

Both paths compute the same function, gradients included: a max (min) over no edges is 0, and when
several edges tie for the max the gradient goes to the one with the lowest edge id, as DGL's kernels
do. Reductions go from edges to their destination node (``dst``); ``u`` is the source node of an
edge, ``v`` its destination, ``e`` the edge itself (DGL's naming).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch

from hydradgl.dglcompat import dgl

Backend = Literal["dgl", "torch"]
Reduce = Literal["sum", "mean", "max", "min"]
BACKENDS: tuple[Backend, ...] = ("dgl", "torch")


@dataclass
class MessageGraph:
    """A batch of graphs as edge index tensors, with message-passing ops on one kernel path.

    Shapes: ``src``, ``dst``: (E,) long; ``batch_num_nodes``: (B,) long, atoms per graph (nodes are
    numbered graph by graph); ``batch_num_edges``: (B,) long. Node features are (N, F), edge
    features (E, F), graph features (B, F).
    """

    src: torch.Tensor
    dst: torch.Tensor
    num_nodes: int
    batch_num_nodes: torch.Tensor
    batch_num_edges: torch.Tensor
    backend: Backend = "dgl"
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_edges(cls, src: torch.Tensor, dst: torch.Tensor, num_nodes: int,
                   batch_num_nodes: torch.Tensor | None = None, batch_num_edges: torch.Tensor | None = None,
                   backend: Backend = "dgl") -> "MessageGraph":
        """A graph from its edge lists; without per-graph counts it is one graph."""
        if batch_num_nodes is None:
            batch_num_nodes = torch.tensor([num_nodes], device=src.device)
            batch_num_edges = torch.tensor([src.shape[0]], device=src.device)
        return cls(src, dst, int(num_nodes), batch_num_nodes, batch_num_edges, backend)

    # -- structure -------------------------------------------------------------------------------
    @property
    def num_edges(self) -> int:
        return int(self.src.shape[0])

    @property
    def num_graphs(self) -> int:
        return int(self.batch_num_nodes.shape[0])

    @property
    def device(self) -> torch.device:
        return self.src.device

    def using(self, backend: Backend) -> "MessageGraph":
        """The same graph on another kernel path (cached index data is shared)."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown kernel path {backend!r}; expected one of {', '.join(BACKENDS)}")
        return self if backend == self.backend else replace(self, backend=backend, _cache=self._cache)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "MessageGraph":
        """The graph with its index tensors on ``device`` (cached data is rebuilt there on demand)."""
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return replace(self, src=move(self.src), dst=move(self.dst), batch_num_nodes=move(self.batch_num_nodes),
                       batch_num_edges=move(self.batch_num_edges), _cache={})

    def _cached(self, key: str, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def in_degrees(self) -> torch.Tensor:
        """(N,) long: incoming edges per node."""
        return self._cached("in_degrees", lambda: torch.bincount(self.dst, minlength=self.num_nodes))

    def node_graph(self) -> torch.Tensor:
        """(N,) long: the graph each node belongs to."""
        return self._cached("node_graph", lambda: torch.repeat_interleave(
            torch.arange(self.num_graphs, device=self.device), self.batch_num_nodes, output_size=self.num_nodes))

    @property
    def dgl(self):
        """The batched DGLGraph (built on first use), for plugins written against DGL directly."""
        def make():
            graph = dgl.graph((self.src, self.dst), num_nodes=self.num_nodes)
            graph.set_batch_num_nodes(self.batch_num_nodes)
            graph.set_batch_num_edges(self.batch_num_edges)
            return graph
        return self._cached("dgl", make)

    # -- edge-wise -------------------------------------------------------------------------------
    def gather_src(self, x: torch.Tensor) -> torch.Tensor:
        """(E, F): each edge's source node features."""
        return x.index_select(0, self.src)

    def gather_dst(self, x: torch.Tensor) -> torch.Tensor:
        """(E, F): each edge's destination node features."""
        return x.index_select(0, self.dst)

    def u_add_v(self, x_src: torch.Tensor, x_dst: torch.Tensor) -> torch.Tensor:
        """(E, F): ``x_src[src] + x_dst[dst]``."""
        if self.backend == "dgl":
            return dgl.ops.u_add_v(self.dgl, x_src, x_dst)
        return self.gather_src(x_src) + self.gather_dst(x_dst)

    # -- edges to destination nodes -----------------------------------------------------------------
    def reduce(self, e: torch.Tensor, op: Reduce = "sum") -> torch.Tensor:
        """(N, F): ``op`` over each node's incoming edge values ``e`` (E, F)."""
        if self.backend == "dgl":
            return self._dgl_spmm("copy_rhs", op, None, e)
        return self._torch_reduce(e, op)

    def copy_u(self, x: torch.Tensor, op: Reduce = "sum") -> torch.Tensor:
        """(N, F): ``op`` over incoming edges of the source features ``x[src]`` (fused on ``dgl``)."""
        if self.backend == "dgl":
            return self._dgl_spmm("copy_lhs", op, x, None)
        return self._torch_reduce(self.gather_src(x), op)

    def u_add_e(self, x: torch.Tensor, e: torch.Tensor, op: Reduce = "sum") -> torch.Tensor:
        """(N, F): ``op`` over incoming edges of ``x[src] + e``."""
        if self.backend == "dgl":
            return self._dgl_spmm("add", op, x, e)
        return self._torch_reduce(self.gather_src(x) + e, op)

    def u_mul_e(self, x: torch.Tensor, e: torch.Tensor, op: Reduce = "sum") -> torch.Tensor:
        """(N, F): ``op`` over incoming edges of ``x[src] * e`` (``e`` may be (E, 1) to scale rows)."""
        if self.backend == "dgl":
            return self._dgl_spmm("mul", op, x, e)
        return self._torch_reduce(self.gather_src(x) * e, op)

    def u_add_e_linear(self, x: torch.Tensor, basis: torch.Tensor, weight: torch.Tensor,
                       op: Literal["max", "min"] = "max") -> torch.Tensor:
        """(N, F): ``op`` over incoming edges of ``x[src] + basis @ weight.T``, with ``basis`` (E, K) a
        per-edge expansion shared by many layers and ``weight`` (F, K) a layer's projection of it.

        Same value as ``u_add_e(x, basis @ weight.T, op)``, but the backward pass forms no per-edge
        tensor: a max (min) picks one edge per output element, so the gradient of ``weight`` gathers
        those edges' basis rows ((N, F, K) values) instead of scattering an (E, F) gradient and
        multiplying it by the (E, K) basis.
        """
        return _UAddELinearExtremum.apply(self, x, basis, weight, op)

    def _edge_winners(self, x: torch.Tensor, e: torch.Tensor, op: Reduce) -> tuple[torch.Tensor, torch.Tensor]:
        """``op`` over incoming edges of ``x[src] + e`` and, per output element, the edge it came
        from (the lowest edge id among ties; any id for a node without edges)."""
        if self.backend == "dgl":
            out, (_, arg_e) = dgl._sparse_ops._gspmm(self.dgl._graph, "add", op, x, e)
            out = torch.where((self.in_degrees() > 0).unsqueeze(-1), out, out.new_zeros(()))
            return out, arg_e.long().clamp(min=0)
        u = self.gather_src(x) + e
        winner = _winners(u, self.dst, self.num_nodes, op).clamp(max=max(self.num_edges - 1, 0))
        out = u.gather(0, winner) if self.num_edges else u.new_zeros((self.num_nodes, *u.shape[1:]))
        return torch.where((self.in_degrees() > 0).unsqueeze(-1), out, out.new_zeros(())), winner

    def _dgl_spmm(self, binary: str, op: Reduce, lhs, rhs) -> torch.Tensor:
        out = dgl.ops.gspmm(self.dgl, binary, op, lhs, rhs)
        if op in ("max", "min"):  # DGL leaves -inf/inf on nodes without edges: those are 0 here
            out = torch.where((self.in_degrees() > 0).unsqueeze(-1), out, out.new_zeros(()))
        return out

    def _torch_reduce(self, e: torch.Tensor, op: Reduce) -> torch.Tensor:
        shape = (self.num_nodes, *e.shape[1:])
        if op in ("sum", "mean"):
            out = e.new_zeros(shape).index_add_(0, self.dst, e)
            if op == "mean":
                deg = self.in_degrees().clamp(min=1).to(e.dtype)
                out = out / _rows(deg, e.dim())
            return out
        return _extremum(e, self.dst, self.num_nodes, op)

    # -- nodes to graphs -------------------------------------------------------------------------
    def readout(self, h: torch.Tensor, op: Literal["sum", "mean", "max"] = "sum") -> torch.Tensor:
        """(B, F): ``op`` over each graph's nodes (0 for a graph without nodes)."""
        if self.backend == "dgl":
            return dgl.ops.segment_reduce(self.batch_num_nodes, h, op)
        if op == "max":
            return _extremum(h, self.node_graph(), self.num_graphs, "max")
        out = h.new_zeros((self.num_graphs, *h.shape[1:])).index_add_(0, self.node_graph(), h)
        if op == "mean":
            out = out / _rows(self.batch_num_nodes.clamp(min=1).to(h.dtype), h.dim())
        return out

    def broadcast(self, g: torch.Tensor) -> torch.Tensor:
        """(N, F): each node gets its graph's row of ``g`` (B, F)."""
        return g.index_select(0, self.node_graph())


def _rows(index: torch.Tensor, dim: int) -> torch.Tensor:
    """``index`` (R,) viewed as (R, 1, ...) to broadcast against a ``dim``-dimensional tensor."""
    return index.view(-1, *([1] * (dim - 1)))


def _winners(values: torch.Tensor, owner: torch.Tensor, n_out: int, op: Reduce) -> torch.Tensor:
    """(n_out, ...) long: per output element, the row of ``values`` holding the max/min of its group
    (``owner``), the lowest row id among ties as DGL's kernels do; ``len(values)`` for an empty group."""
    index = _rows(owner, values.dim()).expand_as(values)
    n_rows = values.shape[0]
    with torch.no_grad():
        best = values.new_zeros((n_out, *values.shape[1:])).scatter_reduce(
            0, index, values, "amax" if op == "max" else "amin", include_self=False)
        row_ids = _rows(torch.arange(n_rows, device=values.device), values.dim()).expand_as(values)
        candidates = torch.where(values == best.gather(0, index), row_ids, n_rows)
        return torch.full(best.shape, n_rows, dtype=torch.long, device=values.device).scatter_reduce(
            0, index, candidates, "amin", include_self=True)


def _extremum(values: torch.Tensor, owner: torch.Tensor, n_out: int, op: Reduce) -> torch.Tensor:
    """Max/min of the rows of ``values`` grouped by ``owner`` into ``n_out`` rows, routing the gradient
    as DGL's kernels do: to the lowest tying row id; a group without rows gives 0."""
    winner = _winners(values, owner, n_out, op)
    padded = torch.cat([values, values.new_zeros((1, *values.shape[1:]))])  # row n_rows: an empty group
    return padded.gather(0, winner)


class _UAddELinearExtremum(torch.autograd.Function):
    """:meth:`MessageGraph.u_add_e_linear`: the per-edge term is formed in the forward pass only."""

    @staticmethod
    def forward(ctx, graph: MessageGraph, x, basis, weight, op):
        out, winner = graph._edge_winners(x, basis @ weight.T, op)
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
