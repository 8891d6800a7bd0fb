"""GraphSet: many small graphs packed into concatenated arrays, so subsets and batches are slices."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


def gather_ranges(ptr: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated positions of segments ``idx`` of a CSR-style ``ptr``, and the new ``ptr``."""
    counts = ptr[idx + 1] - ptr[idx]
    new_ptr = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(counts, out=new_ptr[1:])
    positions = np.arange(new_ptr[-1], dtype=np.int64) + np.repeat(ptr[idx] - new_ptr[:-1], counts)
    return positions, new_ptr


@dataclass
class GraphSet:
    """Graphs as packed arrays.

    Nodes of graph g are ``node_ptr[g]:node_ptr[g+1]`` of ``species``/``node_inputs``/``node_targets``;
    its edges are ``edge_ptr[g]:edge_ptr[g+1]`` of ``src``/``dst`` (local node indices)/``vec``/``dist``.
    ``ids`` are the graphs' indices in the full dataset; ``compositions`` label each graph
    (e.g. ``Fe12Pt20``) for stratified splits and reports; ``sources`` name where each came from.
    """

    species: np.ndarray  # (N,) int64
    numbers: np.ndarray  # (N,) int64 proton numbers
    node_inputs: np.ndarray  # (N, F) float32
    node_ptr: np.ndarray  # (G+1,) int64
    src: np.ndarray  # (E,) int64, local
    dst: np.ndarray  # (E,) int64, local
    vec: np.ndarray  # (E, 3) float32
    dist: np.ndarray  # (E,) float32
    edge_ptr: np.ndarray  # (G+1,) int64
    graph_targets: dict[str, np.ndarray] = field(default_factory=dict)  # (G, d) float32
    node_targets: dict[str, np.ndarray] = field(default_factory=dict)  # (N, d) float32
    ids: np.ndarray | None = None  # (G,) int64
    compositions: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.ids is None:
            self.ids = np.arange(len(self.node_ptr) - 1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.node_ptr) - 1

    @property
    def num_nodes(self) -> np.ndarray:
        return np.diff(self.node_ptr)

    @property
    def num_edges(self) -> np.ndarray:
        return np.diff(self.edge_ptr)

    def subset(self, indices: np.ndarray) -> "GraphSet":
        """The graphs ``indices`` (in that order) as a new GraphSet."""
        idx = np.asarray(indices, dtype=np.int64)
        nodes, node_ptr = gather_ranges(self.node_ptr, idx)
        edges, edge_ptr = gather_ranges(self.edge_ptr, idx)
        return GraphSet(
            species=self.species[nodes], numbers=self.numbers[nodes], node_inputs=self.node_inputs[nodes],
            node_ptr=node_ptr, src=self.src[edges], dst=self.dst[edges], vec=self.vec[edges], dist=self.dist[edges],
            edge_ptr=edge_ptr,
            graph_targets={k: v[idx] for k, v in self.graph_targets.items()},
            node_targets={k: v[nodes] for k, v in self.node_targets.items()},
            ids=self.ids[idx], compositions=[self.compositions[i] for i in idx] if self.compositions else [],
            sources=[self.sources[i] for i in idx] if self.sources else [],
        )

    def with_targets(self, graph_targets: dict[str, np.ndarray], node_targets: dict[str, np.ndarray]) -> "GraphSet":
        """The same graphs with other target arrays (e.g. normalized ones)."""
        return replace(self, graph_targets=graph_targets, node_targets=node_targets)

    def in_degree_histogram(self) -> np.ndarray:
        """``hist[k]`` = number of nodes with k incoming edges."""
        offsets = np.repeat(self.node_ptr[:-1], self.num_edges)
        degree = np.bincount(self.dst + offsets, minlength=int(self.node_ptr[-1]))
        return np.bincount(degree)
