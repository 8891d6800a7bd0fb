"""BatchLoader: seeded, shardable mini-batches of a GraphSet, collated by slicing packed arrays."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from hydradgl.data.batch import Batch
from hydradgl.data.graphset import GraphSet, gather_ranges
from hydradgl.model.kernels import MessageGraph


def collate(graphs: GraphSet, idx: np.ndarray) -> Batch:
    """One Batch of graphs ``idx``: one MessageGraph built from offset edge arrays (no per-graph objects)."""
    nodes, node_ptr = gather_ranges(graphs.node_ptr, idx)
    edges, edge_ptr = gather_ranges(graphs.edge_ptr, idx)
    edge_counts = np.diff(edge_ptr)
    offsets = np.repeat(node_ptr[:-1], edge_counts)
    src = torch.from_numpy(graphs.src[edges] + offsets)
    dst = torch.from_numpy(graphs.dst[edges] + offsets)
    graph = MessageGraph.from_edges(src, dst, int(node_ptr[-1]), torch.from_numpy(np.diff(node_ptr)),
                                    torch.from_numpy(edge_counts))
    return Batch(
        graph=graph,
        species=torch.from_numpy(graphs.species[nodes]),
        node_inputs=torch.from_numpy(graphs.node_inputs[nodes]),
        edge_dist=torch.from_numpy(graphs.dist[edges]),
        edge_vec=torch.from_numpy(graphs.vec[edges]),
        graph_targets={k: torch.from_numpy(v[idx]) for k, v in graphs.graph_targets.items()},
        node_targets={k: torch.from_numpy(v[nodes]) for k, v in graphs.node_targets.items()},
        graph_ids=torch.from_numpy(graphs.ids[idx]),
    )


class BatchLoader:
    """Iterates Batches of ``graphs``.

    With ``shuffle`` the order is a permutation seeded by ``seed`` and the epoch (``set_epoch``). With
    ``world_size > 1`` each rank takes every ``world_size``-th graph of the (padded) order, so ranks see
    disjoint shards and the same number of batches, like torch's DistributedSampler.
    """

    def __init__(self, graphs: GraphSet, batch_size: int, shuffle: bool = False, seed: int = 0,
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
