"""The batch every model and the trainer consume."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from hydradgl.ops import MessageGraph


@dataclass
class Batch:
    """A mini-batch of graphs.

    ``graph`` is a :class:`~hydradgl.ops.MessageGraph` holding both directions of every
    neighbour pair, without self loops; convs and heads run their message passing through it. Per-node and
    per-edge arrays are kept beside it (not in ``graph.ndata``) so that models read them explicitly:

    * ``species``: (N,) long, index of each atom's element in the dataset's species list;
    * ``node_inputs``: (N, F) float, extra per-atom inputs (F may be 0);
    * ``edge_dist``: (E,) float distances, ``edge_vec``: (E, 3) displacement ``pos[dst] - pos[src]``
      (including the periodic image shift);
    * ``graph_targets[name]``: (B, d) and ``node_targets[name]``: (N, d), normalized targets;
    * ``graph_ids``: (B,) long, index of each graph in its dataset (for predictions and plots);
    * ``cell``: (B, 3, 3) float, each structure's lattice vectors as rows where it is periodic along all
      three axes, zeros where not (the stress needs the cell's volume); None when not known.
    """

    graph: MessageGraph
    species: torch.Tensor
    node_inputs: torch.Tensor
    edge_dist: torch.Tensor
    edge_vec: torch.Tensor
    graph_targets: dict[str, torch.Tensor] = field(default_factory=dict)
    node_targets: dict[str, torch.Tensor] = field(default_factory=dict)
    graph_ids: torch.Tensor | None = None
    cell: torch.Tensor | None = None

    @property
    def num_graphs(self) -> int:
        return self.graph.num_graphs

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Move the graph and every tensor together."""

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=non_blocking)

        return replace(
            self,
            graph=self.graph.to(device, non_blocking=non_blocking),
            species=move(self.species),
            node_inputs=move(self.node_inputs),
            edge_dist=move(self.edge_dist),
            edge_vec=move(self.edge_vec),
            graph_targets={k: move(v) for k, v in self.graph_targets.items()},
            node_targets={k: move(v) for k, v in self.node_targets.items()},
            graph_ids=None if self.graph_ids is None else move(self.graph_ids),
            cell=None if self.cell is None else move(self.cell),
        )
