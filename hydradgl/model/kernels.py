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
        """The graph with its index tensors on ``device`` (cached data is rebuilt there on demand)."""
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
            return dgl.ops.u_add_v(self.dgl, x_src, x_dst)
        return self.gather_src(x_src) + self.gather_dst(x_dst)

    # -- edges to destination nodes -----------------------------------------------------------------
    def reduce(self, e: torch.Tensor, op: Reduce = "sum") -> torch.Tensor:
        """(N, F): ``op`` over each node's incoming edge values ``e`` (E, F)."""
        if self._dgl_edges:
            return self._dgl_spmm("copy_rhs", op, None, e)
        return self._torch_reduce(e, op)

    def copy_u(self, x: torch.Tensor, op: Reduce = "sum") -> torch.Tensor:
        """(N, F): ``op`` over incoming edges of the source features ``x[src]`` (fused on ``dgl``)."""
        if self._dgl_edges:
            return self._dgl_spmm("copy_lhs", op, x, None)
        return self._torch_reduce(self.gather_src(x), op)

    def u_add_e(self, x: torch.Tensor, e: torch.Tensor, op: Reduce = "sum") -> torch.Tensor:
        """(N, F): ``op`` over incoming edges of ``x[src] + e``."""
        if self._dgl_edges:
            return self._dgl_spmm("add", op, x, e)
        return self._torch_reduce(self.gather_src(x) + e, op)

    def u_mul_e(self, x: torch.Tensor, e: torch.Tensor, op: Reduce = "sum") -> torch.Tensor:
        """(N, F): ``op`` over incoming edges of ``x[src] * e`` (``e`` may be (E, 1) to scale rows)."""
        if self._dgl_edges:
            return self._dgl_spmm("mul", op, x, e)
        return self._torch_reduce(self.gather_src(x) * e, op)

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


def _extremum(values: torch.Tensor, owner: torch.Tensor, n_out: int, op: Reduce) -> torch.Tensor:
    """Max/min of the rows of ``values`` grouped by ``owner`` into ``n_out`` rows, routing the gradient
    as DGL's kernels do: to the lowest tying row id; a group without rows gives 0.

    The extremum is found without autograd; the output then gathers each (group, feature) winner row,
    so the gradient (and a second derivative) flows to that row only. The row ids are compared as
    floats (exact below 2**24 in float32, 2**53 in float64) on contiguous tensors: CPU scatter and
    where are several times slower on int64 and on expanded (stride-0) operands.
    """
    n_rows = values.shape[0]
    out_shape = (n_out, *values.shape[1:])
    index = _rows(owner, values.dim()).expand_as(values)
    with torch.no_grad():
        best = values.new_zeros(out_shape).scatter_reduce(
            0, index, values, "amax" if op == "max" else "amin", include_self=False)
        id_dtype = torch.float32 if n_rows < 2**24 else torch.float64
        row_ids = _rows(torch.arange(n_rows, dtype=id_dtype, device=values.device), values.dim())
        row_ids = row_ids.repeat(1, *values.shape[1:])  # contiguous (E, F...)
        candidates = torch.where(values == best.gather(0, index), row_ids, n_rows)
        winner = torch.full(out_shape, n_rows, dtype=id_dtype, device=values.device).scatter_reduce(
            0, index, candidates, "amin", include_self=True).long()
    padded = torch.cat([values, values.new_zeros((1, *values.shape[1:]))])  # row n_rows: an empty group
    # A NaN never equals the extremum and so wins no group: keep it (``best``) rather than hide it as 0.
    return torch.where(winner < n_rows, padded.gather(0, winner), best)
