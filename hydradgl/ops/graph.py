"""The batched graph convs and heads receive, with its message-passing primitives on two kernel paths.

A :class:`MessageGraph` holds a batch of graphs as edge index tensors. Its methods are the few
message-passing primitives hydradgl's layers need (gather, fused gather-and-reduce, per-graph readout),
each with two implementations:

* ``dgl``: DGL's fused sparse kernels (gspmm/gsddmm); per-edge messages of the fused forms are never
  materialized. Runs wherever the installed DGL supports the tensors' device (CPU always; CUDA only with
  DGL's own CUDA wheels). Where DGL's CPU kernels are slow, this path uses torch's instead: edge-to-node
  sums (``reduce`` sum/mean, the backward of ``u_add_v``) and ``copy_u`` max/min on torch's CSR
  sparse-dense kernels, sum and mean readouts on ``segment_reduce``, the backward of an edge-to-node sum
  as a gather, and ``u_add_v`` as gathers forward and sums backward (:mod:`hydradgl.ops.autograd`).
* ``torch``: plain torch (``index_select``, ``index_add_``, ``scatter_reduce``) on the edge index
  tensors. Runs on any device torch supports.

Both paths compute the same function, gradients included (second derivatives too, which forces
trained by autograd need): a max (min) over no edges is 0, and when several edges tie for the max the
gradient goes to the one with the lowest edge id, as DGL's kernels do. Reductions go from edges to their
destination node (``dst``); ``u`` is the source node of an edge, ``v`` its destination, ``e`` the edge
itself (DGL's naming). PNA's fused edge-basis operations live in :mod:`hydradgl.ops.pna_fused`.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from typing import Literal

import torch

from hydradgl.dglcompat import dgl
from hydradgl.ops.autograd import CopyUExtremum, EdgeSum, SegmentMax, SegmentSum, UAddV
from hydradgl.ops.extremum import as_rows, extremum

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
                   backend: Backend = "dgl") -> MessageGraph:
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

    def using(self, backend: Backend) -> MessageGraph:
        """The same graph on another kernel path (cached index data is shared)."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown kernel path {backend!r}; expected one of {', '.join(BACKENDS)}")
        return self if backend == self.backend else replace(self, backend=backend, _cache=self._cache)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MessageGraph:
        """The graph with its index tensors on ``device`` (cached data is rebuilt there on demand); itself,
        cache included, when it is there already."""
        if self.device == torch.device(device):
            return self
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return replace(self, src=move(self.src), dst=move(self.dst), batch_num_nodes=move(self.batch_num_nodes),
                       batch_num_edges=move(self.batch_num_edges), _cache={})

    def _cached(self, key: Hashable, make):
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
            return UAddV.apply(self, x_src, x_dst)
        return self.gather_src(x_src) + self.gather_dst(x_dst)

    # -- edges to destination nodes -----------------------------------------------------------------
    def reduce(self, e: torch.Tensor, op: Reduce = "sum") -> torch.Tensor:
        """(N, F...): ``op`` over each node's incoming edge values ``e`` (E, F...)."""
        if self._dgl_edges and op in ("sum", "mean"):
            out = EdgeSum.apply(self, e)
            return out if op == "sum" else out / as_rows(self.in_degrees().clamp(min=1).to(out.dtype), out.dim())
        if self._dgl_edges:
            return self._dgl_spmm("copy_rhs", op, None, e)
        return self._torch_reduce(op, None, e)

    def copy_u(self, x: torch.Tensor, op: Reduce = "sum") -> torch.Tensor:
        """(N, F): ``op`` over incoming edges of the source features ``x[src]`` (fused on ``dgl``)."""
        if self._dgl_edges and op in ("max", "min") and x.device.type == "cpu" and x.dim() == 2:
            return CopyUExtremum.apply(self, x, op)
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
            out = torch.where(as_rows(self.in_degrees() > 0, out.dim()), out, out.new_zeros(()))
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
                out = out / as_rows(self.in_degrees().clamp(min=1).to(m.dtype), m.dim())
            return out
        with torch.no_grad():
            values = message(x, e)
        best, winner, found = extremum(values, self.dst, self.num_nodes, op, self._row_ids(values, "edges"))
        # Recompute each winning message from the inputs (same float ops, so the same value): the
        # gradient then reaches x at the winning edge's source and e at the winning edge, and no
        # (E, F) tensor is needed in the backward pass.
        shape = values.shape[1:]
        x_won = None if x is None else x.expand(x.shape[0], *shape).gather(0, self.src[winner])
        e_won = None if e is None else e.expand(e.shape[0], *shape).gather(0, winner)
        won = e_won if x_won is None else x_won if e_won is None else combine(x_won, e_won)
        assert won is not None  # x or e is given
        return torch.where(found, won, best)

    def _row_ids(self, values: torch.Tensor, rows: Literal["edges", "nodes"]) -> torch.Tensor:
        """Row ids shaped like ``values`` (one row per edge or per node; contiguous, float: see
        :func:`~hydradgl.ops.extremum.extremum`), cached per feature shape. The key holds no row count, so that a model
        compiled with dynamic shapes (the calculator's) is not specialized to one edge count."""
        n_rows = values.shape[0]
        dtype = torch.float32 if n_rows < 2**24 else torch.float64

        def make():
            ids = torch.arange(n_rows, dtype=dtype, device=values.device)
            return as_rows(ids, values.dim()).repeat(1, *values.shape[1:])
        return self._cached(("row_ids", rows, tuple(values.shape[1:])), make)

    # -- nodes to graphs -------------------------------------------------------------------------
    def readout(self, h: torch.Tensor, op: Literal["sum", "mean", "max"] = "sum") -> torch.Tensor:
        """(B, F): ``op`` over each graph's nodes (0 for a graph without nodes)."""
        if self.backend == "dgl" and op != "max" and h.device.type == "cpu":  # torch's kernel beats DGL's on CPU
            out = SegmentSum.apply(self, h)
            return out if op == "sum" else out / as_rows(self.batch_num_nodes.clamp(min=1).to(h.dtype), h.dim())
        if self.backend == "dgl" and self.num_nodes > 0:  # DGL's mean over a batch without nodes is NaN
            return SegmentMax.apply(self, h) if op == "max" else dgl.ops.segment_reduce(self.batch_num_nodes, h, op)
        if op == "max" and self.num_nodes > 0:
            row_ids = self._row_ids(h, "nodes")
            best, winner, found = extremum(h.detach(), self.node_graph(), self.num_graphs, "max", row_ids)
            return torch.where(found, h.gather(0, winner), best)
        out = h.new_zeros((self.num_graphs, *h.shape[1:])).index_add_(0, self.node_graph(), h)
        if op == "mean":
            out = out / as_rows(self.batch_num_nodes.clamp(min=1).to(h.dtype), h.dim())
        return out

    def broadcast(self, g: torch.Tensor) -> torch.Tensor:
        """(N, F): each node gets its graph's row of ``g`` (B, F)."""
        return g.index_select(0, self.node_graph())
