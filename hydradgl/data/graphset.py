"""GraphSet: many small graphs packed into concatenated arrays; GraphView: some of them, without copying.

The packed arrays may be in memory or read on demand from the processed cache (hydradgl/data/store.py);
either way a subset or a batch only touches the graphs it names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np


class ArrayNormalizer(Protocol):
    """What a view needs of its normalizer (:class:`hydradgl.data.normalize.Normalizer`)."""

    def normalize_array(self, name: str, values: np.ndarray) -> np.ndarray: ...


def gather_ranges(ptr: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated positions of segments ``idx`` of a CSR-style ``ptr``, and the new ``ptr``."""
    starts = np.asarray(ptr[idx], dtype=np.int64)
    counts = np.asarray(ptr[idx + 1], dtype=np.int64) - starts
    new_ptr = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(counts, out=new_ptr[1:])
    positions = np.arange(new_ptr[-1], dtype=np.int64) + np.repeat(starts - new_ptr[:-1], counts)
    return positions, new_ptr


@dataclass
class GraphSet:
    """Graphs as packed arrays.

    Nodes of graph g are ``node_ptr[g]:node_ptr[g+1]`` of ``numbers``/``node_inputs``/``node_targets``;
    its edges are ``edge_ptr[g]:edge_ptr[g+1]`` of ``src``/``dst`` (local node indices)/``vec``/``dist``.
    ``ids`` are the graphs' indices in the full dataset; ``compositions`` label each graph
    (e.g. ``Fe12Pt20``) for stratified splits and reports; ``sources`` name where each came from
    (both may be lazy sequences over the cache's tables). ``species_lookup`` maps a proton number to
    its index in the model's species list (set by ``assign_species``), so ``species`` needs no array
    of its own. ``cell`` holds each graph's lattice vectors (rows) where it is periodic along all three
    axes and its graph has periodic images, zeros elsewhere (no stress there); all zeros when not given.
    """

    numbers: np.ndarray  # (N,) integer proton numbers
    node_inputs: np.ndarray  # (N, F) float32
    node_ptr: np.ndarray  # (G+1,) int64
    src: np.ndarray  # (E,) integer, local
    dst: np.ndarray  # (E,) integer, local
    vec: np.ndarray  # (E, 3) float32
    dist: np.ndarray  # (E,) float32
    edge_ptr: np.ndarray  # (G+1,) int64
    graph_targets: dict[str, np.ndarray] = field(default_factory=dict)  # (G, d) float32
    node_targets: dict[str, np.ndarray] = field(default_factory=dict)  # (N, d) float32
    ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))  # (G,) int64; default 0..G-1
    compositions: Sequence[str] = field(default_factory=list)
    sources: Sequence[str] = field(default_factory=list)
    species_lookup: np.ndarray | None = None  # (119,) int64, -1 for absent elements
    cell: np.ndarray = field(default_factory=lambda: np.zeros((0, 3, 3), np.float32))  # (G, 3, 3) float32

    def __post_init__(self) -> None:
        if len(self.ids) == 0:  # not given: the graphs are the dataset's, in order
            self.ids = np.arange(len(self.node_ptr) - 1, dtype=np.int64)
        if len(self.cell) == 0:  # not given: no graph has a periodic cell
            self.cell = np.zeros((len(self), 3, 3), np.float32)

    def __len__(self) -> int:
        return len(self.node_ptr) - 1

    @property
    def species(self) -> np.ndarray:
        """(N,) int64 species index of every atom (needs ``species_lookup``)."""
        return self.species_of(slice(None))

    def species_of(self, nodes: np.ndarray | slice) -> np.ndarray:
        if self.species_lookup is None:
            raise ValueError("species are not assigned yet (assign_species)")
        return self.species_lookup[np.asarray(self.numbers[nodes], dtype=np.int64)]

    @property
    def num_nodes(self) -> np.ndarray:
        return np.diff(self.node_ptr)

    @property
    def num_edges(self) -> np.ndarray:
        return np.diff(self.edge_ptr)

    def subset(self, indices: np.ndarray) -> GraphSet:
        """The graphs ``indices`` (in that order) as a new, in-memory GraphSet."""
        idx = np.asarray(indices, dtype=np.int64)
        nodes, node_ptr = gather_ranges(self.node_ptr, idx)
        edges, edge_ptr = gather_ranges(self.edge_ptr, idx)
        return GraphSet(
            numbers=self.numbers[nodes], node_inputs=self.node_inputs[nodes],
            node_ptr=node_ptr, src=self.src[edges], dst=self.dst[edges], vec=self.vec[edges], dist=self.dist[edges],
            edge_ptr=edge_ptr,
            graph_targets={k: v[idx] for k, v in self.graph_targets.items()},
            node_targets={k: v[nodes] for k, v in self.node_targets.items()},
            ids=self.ids[idx], compositions=[self.compositions[i] for i in idx] if len(self.compositions) else [],
            sources=[self.sources[i] for i in idx] if len(self.sources) else [], species_lookup=self.species_lookup,
            cell=self.cell[idx],
        )

    def with_targets(self, graph_targets: dict[str, np.ndarray], node_targets: dict[str, np.ndarray]) -> GraphSet:
        """The same graphs with other target arrays (e.g. normalized ones)."""
        return replace(self, graph_targets=graph_targets, node_targets=node_targets)


@dataclass
class GraphView:
    """Graphs ``rows`` of ``base``, in that order, without copying anything.

    Targets stay physical in ``base``; with a ``normalizer`` they are normalized when read (a batch at
    a time in :func:`~hydradgl.data.loader.collate`), so a split of a dataset on disk costs only
    its index array.
    """

    base: GraphSet
    rows: np.ndarray  # (G,) int64 graph indices into base
    normalizer: ArrayNormalizer | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def ids(self) -> np.ndarray:
        return self.base.ids[self.rows]

    @property
    def num_nodes(self) -> np.ndarray:
        return self.base.node_ptr[self.rows + 1] - self.base.node_ptr[self.rows]

    @property
    def num_edges(self) -> np.ndarray:
        return self.base.edge_ptr[self.rows + 1] - self.base.edge_ptr[self.rows]

    @property
    def compositions(self) -> list[str]:
        return [self.base.compositions[i] for i in self.rows]

    def _nodes(self) -> np.ndarray:
        return gather_ranges(self.base.node_ptr, self.rows)[0]

    @property
    def numbers(self) -> np.ndarray:
        """(N,) proton numbers of these graphs' atoms, in order (a copy)."""
        return np.asarray(self.base.numbers[self._nodes()])

    @property
    def species(self) -> np.ndarray:
        """(N,) species index of these graphs' atoms, in order (needs the base's ``species_lookup``)."""
        return self.base.species_of(self._nodes())

    @property
    def sources(self) -> list[str]:
        return [self.base.sources[i] for i in self.rows]

    @property
    def cell(self) -> np.ndarray:
        """(G, 3, 3) these graphs' periodic cells (zeros for a graph without one; a copy)."""
        return np.asarray(self.base.cell[self.rows])

    @property
    def graph_targets(self) -> dict[str, np.ndarray]:
        """Copies of the (normalized) graph targets of these graphs; for reports and tests, not for batches."""
        return self._targets(self.base.graph_targets, self.rows)

    @property
    def node_targets(self) -> dict[str, np.ndarray]:
        return self._targets(self.base.node_targets, self._nodes())

    def _targets(self, arrays: dict[str, np.ndarray], where: np.ndarray) -> dict[str, np.ndarray]:
        return {k: self.scale(k, np.asarray(v[where])) for k, v in arrays.items()}

    def scale(self, name: str, values: np.ndarray) -> np.ndarray:
        """Target values as batches carry them: normalized if this view has a normalizer."""
        return values if self.normalizer is None else self.normalizer.normalize_array(name, values)

    def subset(self, indices: np.ndarray) -> GraphView:
        """Graphs ``indices`` of this view, again a view."""
        return replace(self, rows=self.rows[np.asarray(indices, dtype=np.int64)])

    def with_normalizer(self, normalizer: ArrayNormalizer | None) -> GraphView:
        return replace(self, normalizer=normalizer)

    def materialize(self) -> GraphSet:
        """An in-memory GraphSet of these graphs with normalized targets."""
        graphs = self.base.subset(self.rows)
        return graphs.with_targets(self.graph_targets, self.node_targets)


def view_of(graphs: GraphSet | GraphView) -> GraphView:
    """``graphs`` as a view (a GraphSet becomes a view of all its graphs)."""
    return graphs if isinstance(graphs, GraphView) else GraphView(graphs, np.arange(len(graphs), dtype=np.int64))
