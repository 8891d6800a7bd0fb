"""Per-target min-max normalization to [0, 1] (as in the paper), with statistics of the training split only
(computed from the processed cache: hydradgl/data/store.py ``Store.target_range``)."""

from __future__ import annotations

import numpy as np
import torch

from hydradgl.data.graphset import GraphSet, GraphView
from hydradgl.data.records import DatasetInfo


class Normalizer:
    """Maps targets to [0, 1] and back; a constant target maps to 0 (its span counts as 1)."""

    def __init__(self, lo: dict[str, list[float]], hi: dict[str, list[float]]):
        self.lo = {k: np.asarray(v, dtype=np.float64) for k, v in lo.items()}
        span = {k: np.asarray(hi[k], dtype=np.float64) - self.lo[k] for k in lo}
        self.span = {k: np.where(s > 0, s, 1.0) for k, s in span.items()}

    @classmethod
    def from_info(cls, info: DatasetInfo) -> Normalizer:
        return cls(info.target_min, info.target_max)

    def _stats(self, name: str, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.as_tensor(self.lo[name], dtype=like.dtype, device=like.device),
                torch.as_tensor(self.span[name], dtype=like.dtype, device=like.device))

    def normalize(self, name: str, values: torch.Tensor) -> torch.Tensor:
        lo, span = self._stats(name, values)
        return (values - lo) / span

    def denormalize(self, name: str, values: torch.Tensor) -> torch.Tensor:
        lo, span = self._stats(name, values)
        return values * span + lo

    def normalize_array(self, name: str, values: np.ndarray) -> np.ndarray:
        return ((values - self.lo[name]) / self.span[name]).astype(np.float32)

    def denormalize_array(self, name: str, values: np.ndarray) -> np.ndarray:
        return values * self.span[name] + self.lo[name]

    def apply(self, graphs: GraphSet | GraphView) -> GraphSet | GraphView:
        """``graphs`` with normalized targets: a view gets this normalizer (targets normalized when
        read); an in-memory GraphSet becomes a normalized copy."""
        if isinstance(graphs, GraphView):
            return graphs.with_normalizer(self)
        return graphs.with_targets({k: self.normalize_array(k, v) for k, v in graphs.graph_targets.items()},
                                   {k: self.normalize_array(k, v) for k, v in graphs.node_targets.items()})

    def restore(self, graphs: GraphSet | GraphView) -> GraphSet:
        """An in-memory copy of normalized ``graphs`` with targets back in physical units (the inverse of
        ``apply``; a view's physical targets are read from its base, not denormalized)."""
        if isinstance(graphs, GraphView):
            return graphs.with_normalizer(None).materialize()
        back = lambda k, v: v.astype(np.float64) * self.span[k] + self.lo[k]  # noqa: E731
        return graphs.with_targets({k: back(k, v) for k, v in graphs.graph_targets.items()},
                                   {k: back(k, v) for k, v in graphs.node_targets.items()})
