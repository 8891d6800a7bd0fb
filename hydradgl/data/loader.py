"""BatchLoader: seeded, shardable mini-batches of a GraphSet, collated by slicing packed arrays."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from hydradgl.data.batch import Batch
from hydradgl.data.graphset import GraphSet, GraphView, gather_ranges, view_of
from hydradgl.ops import MessageGraph


def collate(graphs: GraphSet | GraphView, idx: np.ndarray) -> Batch:
    """One Batch of graphs ``idx``: one MessageGraph built from offset edge arrays (no per-graph objects).

    Only these graphs' rows of the (possibly on-disk) arrays are read; a view's targets are
    normalized here, a batch at a time.
    """
    view = view_of(graphs)
    base, rows = view.base, view.rows[np.asarray(idx, dtype=np.int64)]
    nodes, node_ptr = gather_ranges(base.node_ptr, rows)
    edges, edge_ptr = gather_ranges(base.edge_ptr, rows)
    edge_counts = np.diff(edge_ptr)
    offsets = np.repeat(node_ptr[:-1], edge_counts)
    src = torch.from_numpy(base.src[edges].astype(np.int64) + offsets)
    dst = torch.from_numpy(base.dst[edges].astype(np.int64) + offsets)
    graph = MessageGraph.from_edges(src, dst, int(node_ptr[-1]), torch.from_numpy(np.diff(node_ptr)),
                                    torch.from_numpy(edge_counts))
    return Batch(
        graph=graph,
        species=torch.from_numpy(base.species_of(nodes)),
        node_inputs=torch.from_numpy(np.asarray(base.node_inputs[nodes])),
        edge_dist=torch.from_numpy(np.asarray(base.dist[edges])),
        edge_vec=torch.from_numpy(np.asarray(base.vec[edges])),
        graph_targets={k: torch.from_numpy(view.scale(k, np.asarray(v[rows]))) for k, v in base.graph_targets.items()},
        node_targets={k: torch.from_numpy(view.scale(k, np.asarray(v[nodes]))) for k, v in base.node_targets.items()},
        graph_ids=torch.from_numpy(base.ids[rows]),
        cell=torch.from_numpy(np.asarray(base.cell[rows])),
    )


class BatchLoader:
    """Iterates Batches of ``graphs`` (a GraphSet or a view of one).

    With ``shuffle`` the order is a permutation seeded by ``seed`` and the epoch (``set_epoch``). With
    ``world_size > 1`` each rank takes every ``world_size``-th graph of the (padded) order, so ranks see
    disjoint shards and the same number of batches, like torch's DistributedSampler; a rank reads
    only its own shard's rows of arrays on disk.
    """

    def __init__(self, graphs: GraphSet | GraphView, batch_size: int, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1, pad: bool = True):
        self.graphs, self.batch_size, self.shuffle, self.seed = graphs, batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size, self.pad = drop_last, rank, world_size, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> np.ndarray:
        """This rank's graph order for the current epoch."""
        n = len(self.graphs)
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle
                 else np.arange(n))
        if self.world_size > 1:
            if self.pad:  # training: equal batch counts on every rank (DDP needs them)
                padded = -(-n // self.world_size) * self.world_size
                order = np.concatenate([order, order[: padded - n]])
            order = order[self.rank::self.world_size]
        return order

    def __len__(self) -> int:
        n = len(self.indices())
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = self.indices()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield collate(self.graphs, order[start:start + self.batch_size])
