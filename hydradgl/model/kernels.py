"""The message-passing kernel layer: what convs and heads call instead of DGL.

A :class:`MessageGraph` is the batched graph a conv or head receives. Its methods are the few
message-passing primitives hydradgl's layers need (gather, fused gather-and-reduce, per-graph
readout), each with two implementations:

* ``dgl``: DGL's fused sparse kernels (gspmm/gsddmm). Per-edge messages of the fused forms are never
  materialized. Runs wherever the installed DGL supports the tensors' device (CPU always; CUDA only
  with DGL's own CUDA wheels, which exist for torch <= 2.4). Slow DGL CPU kernels are bypassed:
  on CPU, edge-to-node sums (``reduce`` sum/mean, the backward of ``u_add_v``) and ``copy_u``
  max/min run on torch's CSR sparse-dense kernels (sums: as fast as DGL's on batches, 3-4x faster on
  one small graph, where DGL's per-call overhead dominates), sum and mean readouts on torch's
  ``segment_reduce``, the backward of an edge-to-node sum is a gather, and ``u_add_v`` gathers
  forward and sums backward.
* ``torch``: plain torch (``index_select``, ``index_add_``, ``scatter_reduce``) on the edge index
  tensors. Runs on any device torch supports.

Both paths compute the same function, gradients included: a max (min) over no edges is 0, and when
several edges tie for the max the gradient goes to the one with the lowest edge id, as DGL's kernels
do. Reductions go from edges to their destination node (``dst``); ``u`` is the source node of an
edge, ``v`` its destination, ``e`` the edge itself (DGL's naming).
"""

from __future__ import annotations

import warnings
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
        """A graph from its edge lists (any integer dtype; kept as long on ``src``'s device); without
        per-graph counts it is one graph. Edges of graph b must follow those of graph b - 1."""
        if (batch_num_nodes is None) != (batch_num_edges is None):
            raise ValueError("give both batch_num_nodes and batch_num_edges, or neither (one graph)")
        device = src.device
        if batch_num_nodes is None:
            batch_num_nodes = torch.tensor([num_nodes], device=device)
            batch_num_edges = torch.tensor([src.shape[0]], device=device)
        as_index = lambda t: t.to(device=device, dtype=torch.long)  # noqa: E731
        return cls(as_index(src), as_index(dst), int(num_nodes), as_index(batch_num_nodes),
                   as_index(batch_num_edges), backend)

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
        """The graph with its index tensors on ``device`` (cached data is rebuilt there on demand); itself,
        cache included, when it is there already."""
        if self.device == torch.device(device):
            return self
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return replace(self, src=move(self.src), dst=move(self.dst), batch_num_nodes=move(self.batch_num_nodes),
                       batch_num_edges=move(self.batch_num_edges), _cache={})

    def _cached(self, key: str, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def in_degrees(self) -> torch.Tensor:
        """(N,) long: incoming edges per node (index_add_, unlike bincount, needs no device sync)."""
        return self._cached("in_degrees", lambda: torch.zeros(self.num_nodes, dtype=torch.long, device=self.device)
                            .index_add_(0, self.dst, torch.ones_like(self.dst)))

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

    @property
    def _dgl_edges(self) -> bool:
        """Whether edge ops run on DGL: on the dgl path, with at least one edge (DGL's max/min backward
        fails on an empty edge set; over no edges every reduction is 0 on either path anyway)."""
        return self.backend == "dgl" and self.num_edges > 0

    @property
    def _csr_sums(self) -> bool:
        """Whether edge-to-node sums run on torch's CSR kernels: the dgl path on CPU."""
        return self._dgl_edges and self.device.type == "cpu"

    # -- edge-wise -------------------------------------------------------------------------------
    def gather_src(self, x: torch.Tensor) -> torch.Tensor:
        """(E, F): each edge's source node features."""
        return x.index_select(0, self.src)

    def gather_dst(self, x: torch.Tensor) -> torch.Tensor:
        """(E, F): each edge's destination node features."""
        return x.index_select(0, self.dst)

    def u_add_v(self, x_src: torch.Tensor, x_dst: torch.Tensor) -> torch.Tensor:
        """(E, F): ``x_src[src] + x_dst[dst]``."""
        if self._dgl_edges:
            return _UAddV.apply(self, x_src, x_dst)
        return self.gather_src(x_src) + self.gather_dst(x_dst)

    # -- edges to destination nodes -----------------------------------------------------------------
    def reduce(self, e: torch.Tensor, op: Reduce = "sum") -> torch.Tensor:
        """(N, F...): ``op`` over each node's incoming edge values ``e`` (E, F...)."""
        if self._dgl_edges and op in ("sum", "mean"):
            out = _EdgeSum.apply(self, e)
            return out if op == "sum" else out / _rows(self.in_degrees().clamp(min=1).to(out.dtype), out.dim())
        if self._dgl_edges:
            return self._dgl_spmm("copy_rhs", op, None, e)
        return self._torch_reduce(op, None, e)

    def copy_u(self, x: torch.Tensor, op: Reduce = "sum") -> torch.Tensor:
        """(N, F): ``op`` over incoming edges of the source features ``x[src]`` (fused on ``dgl``)."""
        if self._dgl_edges and op in ("max", "min") and x.device.type == "cpu" and x.dim() == 2:
            return _CopyUExtremum.apply(self, x, op)
        if self._dgl_edges:
            return self._dgl_spmm("copy_lhs", op, x, None)
        return self._torch_reduce(op, x, None)

    def u_add_e(self, x: torch.Tensor, e: torch.Tensor, op: Reduce = "sum") -> torch.Tensor:
        """(N, F): ``op`` over incoming edges of ``x[src] + e``."""
        if self._dgl_edges:
            return self._dgl_spmm("add", op, x, e)
        return self._torch_reduce(op, x, e, torch.add)

    def u_mul_e(self, x: torch.Tensor, e: torch.Tensor, op: Reduce = "sum") -> torch.Tensor:
        """(N, F): ``op`` over incoming edges of ``x[src] * e`` (``e`` may be (E, 1) to scale rows)."""
        if self._dgl_edges:
            return self._dgl_spmm("mul", op, x, e)
        return self._torch_reduce(op, x, e, torch.mul)

    def u_add_e_moments(self, x: torch.Tensor, basis: torch.Tensor, weight: torch.Tensor,
                        edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 2F): sums over incoming edges of ``u`` and of ``u * u``, side by side, where
        ``u = x[src] + basis @ weight.T`` with ``basis`` (E, K) a per-edge expansion and ``weight`` (F, K);
        with ``edge_weight`` (E, 1), each edge's terms weighted by it (e.g. a cutoff envelope).

        On the dgl path without ``edge_weight`` one autograd node: ``u`` is formed once and kept, and the
        backward pass makes a single per-edge gradient, ``g1 + 2 u g2`` (g1, g2 the output gradients at
        each destination), instead of autograd's chain through the gather, the projection, the square and
        two sums.
        """
        if self._dgl_edges and edge_weight is None:
            return _UAddEMoments.apply(self, x, basis, weight)
        u = self.gather_src(x).addmm_(basis, weight.T)
        moments = torch.cat([u, u * u], dim=1)
        return self.reduce(moments if edge_weight is None else moments * edge_weight, "sum")

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
        shape = (self.num_nodes, *e.shape[1:])
        if self.num_edges == 0:  # over no edges the reduction is 0
            return e.new_zeros(shape), torch.zeros(shape, dtype=torch.long, device=e.device)
        if self._dgl_edges:
            out, (_, arg_e) = dgl._sparse_ops._gspmm(self.dgl._graph, "add", op, x, e)
            out = torch.where((self.in_degrees() > 0).unsqueeze(-1), out, out.new_zeros(()))
            return out, arg_e.long().clamp(min=0)
        u = self.gather_src(x) + e
        best, winner, found = _extremum(u, self.dst, self.num_nodes, op, self._row_ids(u, "edges"))
        return torch.where(found, u.gather(0, winner), best), winner

    def _csr(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The adjacency as an (N, N) CSR matrix of ones (row = destination) and each stored entry's
        source node, with N appended (the entry id torch reports for a row without entries). Entries
        keep edge-id order within a row, so "first in its row" is DGL's "lowest edge id"."""
        def make():
            matrix = self._sparse("adjacency", dtype)
            col = matrix.col_indices()
            return matrix, torch.cat([col, col.new_full((1,), self.num_nodes)])
        return self._cached(("csr", dtype), make)

    def _sparse(self, kind: Literal["adjacency", "to_dst", "to_src"], dtype: torch.dtype) -> torch.Tensor:
        """A CSR matrix of ones: ``adjacency`` (N, N), row = destination, column = source;
        ``to_dst`` / ``to_src`` (N, E), row = an edge's destination / source node, column = the edge
        (their product with edge values sums them into those nodes). Entries keep edge-id order within
        a row."""
        def make():
            side = "src" if kind == "to_src" else "dst"
            order, crow = self._row_order(side)
            cols = self.src.index_select(0, order) if kind == "adjacency" else order
            width = self.num_nodes if kind == "adjacency" else self.num_edges
            with warnings.catch_warnings():  # torch calls its CSR support "beta"
                warnings.simplefilter("ignore", UserWarning)
                return torch.sparse_csr_tensor(crow, cols, torch.ones(self.num_edges, dtype=dtype, device=self.device),
                                               (self.num_nodes, width), check_invariants=False)
        return self._cached(("sparse", kind, dtype), make)

    def _row_order(self, side: Literal["src", "dst"]) -> tuple[torch.Tensor, torch.Tensor]:
        """Edge ids sorted (stably) by their ``side`` node, and the CSR row pointers of that order;
        shared by every CSR matrix with those rows."""
        def make():
            rows = self.dst if side == "dst" else self.src
            counts = self.in_degrees() if side == "dst" else rows.new_zeros(self.num_nodes).index_add_(
                0, rows, torch.ones_like(rows))
            in_order = bool((rows[1:] >= rows[:-1]).all())  # hydradgl's graphs list edges by destination
            order = torch.arange(len(rows), device=rows.device) if in_order else torch.argsort(rows, stable=True)
            return order, torch.cat([rows.new_zeros(1), counts.cumsum(0)])
        return self._cached(("row_order", side), make)

    def _sum_into(self, kind: Literal["to_dst", "to_src"], e: torch.Tensor) -> torch.Tensor:
        """(N, F...): edge values ``e`` (E, F...) summed into each edge's destination / source node, on
        the dgl path only: torch's CSR kernel on CPU (``_sparse(kind) @ e``), else DGL's gspmm."""
        if self._csr_sums:
            out = torch.sparse.mm(self._sparse(kind, e.dtype), e.reshape(e.shape[0], -1))
            return out.view(self.num_nodes, *e.shape[1:])
        graph = self.dgl if kind == "to_dst" else self._cached("dgl_reverse", lambda: dgl.reverse(self.dgl))
        return dgl.ops.gspmm(graph, "copy_rhs", "sum", None, e)

    def _dgl_spmm(self, binary: str, op: Reduce, lhs, rhs) -> torch.Tensor:
        out = dgl.ops.gspmm(self.dgl, binary, op, lhs, rhs)
        if op in ("max", "min"):  # DGL leaves -inf/inf on nodes without edges: those are 0 here
            out = torch.where((self.in_degrees() > 0).unsqueeze(-1), out, out.new_zeros(()))
        return out

    def _torch_reduce(self, op: Reduce, x: torch.Tensor | None, e: torch.Tensor | None, combine=None) -> torch.Tensor:
        """``op`` over incoming edges of the message ``x[src]``, ``e`` or ``combine(x[src], e)``."""
        def message(x, e):
            if x is None:
                return e
            return self.gather_src(x) if e is None else combine(self.gather_src(x), e)

        if op in ("sum", "mean") or self.num_edges == 0:  # over no edges every reduction is 0
            m = message(x, e)
            out = m.new_zeros((self.num_nodes, *m.shape[1:])).index_add_(0, self.dst, m)
            if op == "mean":
                out = out / _rows(self.in_degrees().clamp(min=1).to(m.dtype), m.dim())
            return out
        with torch.no_grad():
            values = message(x, e)
        best, winner, found = _extremum(values, self.dst, self.num_nodes, op, self._row_ids(values, "edges"))
        # Recompute each winning message from the inputs (same float ops, so the same value): the
        # gradient then reaches x at the winning edge's source and e at the winning edge, and no
        # (E, F) tensor is needed in the backward pass.
        shape = values.shape[1:]
        x_won = None if x is None else x.expand(x.shape[0], *shape).gather(0, self.src[winner])
        e_won = None if e is None else e.expand(e.shape[0], *shape).gather(0, winner)
        won = e_won if x is None else x_won if e is None else combine(x_won, e_won)
        return torch.where(found, won, best)

    def _row_ids(self, values: torch.Tensor, rows: Literal["edges", "nodes"]) -> torch.Tensor:
        """Row ids shaped like ``values`` (one row per edge or per node; contiguous, float: see
        :func:`_extremum`), cached per feature shape. The key holds no row count, so that a model
        compiled with dynamic shapes (the calculator's) is not specialized to one edge count."""
        n_rows = values.shape[0]
        dtype = torch.float32 if n_rows < 2**24 else torch.float64

        def make():
            ids = torch.arange(n_rows, dtype=dtype, device=values.device)
            return _rows(ids, values.dim()).repeat(1, *values.shape[1:])
        return self._cached(("row_ids", rows, tuple(values.shape[1:])), make)

    # -- nodes to graphs -------------------------------------------------------------------------
    def readout(self, h: torch.Tensor, op: Literal["sum", "mean", "max"] = "sum") -> torch.Tensor:
        """(B, F): ``op`` over each graph's nodes (0 for a graph without nodes)."""
        if self.backend == "dgl" and op != "max" and h.device.type == "cpu":  # torch's kernel: 2-3x faster than DGL's
            out = torch.segment_reduce(h, "sum", lengths=self.batch_num_nodes)
            return out if op == "sum" else out / _rows(self.batch_num_nodes.clamp(min=1).to(h.dtype), h.dim())
        if self.backend == "dgl" and self.num_nodes > 0:  # DGL's mean over a batch without nodes is NaN
            return dgl.ops.segment_reduce(self.batch_num_nodes, h, op)
        if op == "max" and self.num_nodes > 0:
            row_ids = self._row_ids(h, "nodes")
            best, winner, found = _extremum(h.detach(), self.node_graph(), self.num_graphs, "max", row_ids)
            return torch.where(found, h.gather(0, winner), best)
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


def _extremum(values: torch.Tensor, owner: torch.Tensor, n_out: int, op: Reduce,
              row_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Max/min of the rows of ``values`` (R >= 1 rows, no autograd) grouped by ``owner`` into ``n_out``
    rows: ``(best, winner, found)``, each shaped (n_out, F...). ``best`` is the extremum (0 for a group
    without rows); ``winner`` the lowest row id that attains it, as in DGL's kernels, so that gathering
    the winners routes the gradient like DGL does; ``found`` is False where no row attains it (empty
    groups, and NaN extrema: callers keep ``best`` there rather than hide a NaN as 0).

    ``row_ids`` (R, F...) holds each row's id as a float (exact below 2**24 in float32, 2**53 in
    float64), contiguous: CPU scatter and where are several times slower on int64 and on expanded
    (stride-0) operands.
    """
    n_rows = values.shape[0]
    out_shape = (n_out, *values.shape[1:])
    index = _rows(owner, values.dim()).expand_as(values)
    with torch.no_grad():
        best = values.new_zeros(out_shape).scatter_reduce(
            0, index, values, "amax" if op == "max" else "amin", include_self=False)
        candidates = torch.where(values == best.gather(0, index), row_ids, n_rows)
        winner = torch.full(out_shape, n_rows, dtype=row_ids.dtype, device=values.device).scatter_reduce(
            0, index, candidates, "amin", include_self=True).long()
    found = winner < n_rows
    return best, winner.clamp_(max=n_rows - 1), found


class _EdgeSum(torch.autograd.Function):
    """:meth:`MessageGraph.reduce` sum on DGL's gspmm, with the backward pass a plain gather of the
    output gradient at each edge's destination (DGL's own backward, a gsddmm, is ~8x slower on CPU)."""

    @staticmethod
    def forward(ctx, graph: MessageGraph, e):
        ctx.graph = graph
        return graph._sum_into("to_dst", e)

    @staticmethod
    def backward(ctx, grad):
        return None, grad.index_select(0, ctx.graph.dst)


class _UAddEMoments(torch.autograd.Function):
    """:meth:`MessageGraph.u_add_e_moments` on the dgl path (edge-to-node sums on ``_sum_into``)."""

    @staticmethod
    def forward(ctx, graph: MessageGraph, x, basis, weight):
        u = x.index_select(0, graph.src).addmm_(basis, weight.T)  # in place: addmm would copy the gather first
        ctx.graph = graph
        ctx.save_for_backward(u, basis, weight)
        return torch.cat([graph._sum_into("to_dst", u), graph._sum_into("to_dst", u * u)], dim=1)

    @staticmethod
    def backward(ctx, grad):
        u, basis, weight = ctx.saved_tensors
        graph = ctx.graph
        g1, g2 = (part.contiguous().index_select(0, graph.dst) for part in grad.chunk(2, dim=1))
        grad_u = g1.addcmul_(u, g2, value=2.0)  # contiguous operands: 5x faster than on slices; g1 is ours
        grad_x = graph._sum_into("to_src", grad_u) if ctx.needs_input_grad[1] else None
        grad_basis = grad_u @ weight if ctx.needs_input_grad[2] else None
        grad_weight = grad_u.T @ basis if ctx.needs_input_grad[3] else None
        return None, grad_x, grad_basis, grad_weight


class _UAddV(torch.autograd.Function):
    """:meth:`MessageGraph.u_add_v` as two gathers, with a backward pass of two fused edge-to-node sums
    (to destinations, and to sources on the reversed graph): ~2x faster on CPU than DGL's gsddmm."""

    @staticmethod
    def forward(ctx, graph: MessageGraph, x_src, x_dst):
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


class _CopyUExtremum(torch.autograd.Function):
    """:meth:`MessageGraph.copy_u` max/min on CPU with torch's CSR reduce kernel (torch.sparse.mm),
    15-20x faster than DGL's CPU max/min. Keeps the winning entry per output element for the backward
    pass, which sends each gradient element to that entry's source node."""

    @staticmethod
    def forward(ctx, graph: MessageGraph, x, op):
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
        n = grad.shape[0]
        grad_x = grad.new_zeros((n + 1, *grad.shape[1:])).scatter_add_(0, winner, grad.contiguous())
        return None, grad_x[:n], None


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
