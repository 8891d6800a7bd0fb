"""The model assembler: species embedding, a trunk of conv layers, one head per configured property."""

from __future__ import annotations

import torch
from torch import nn

from hydradgl.config import RunConfig
from hydradgl.configio import head_kind, parse_options
from hydradgl.data.batch import Batch
from hydradgl.data.records import DatasetInfo
from hydradgl.errors import ConfigError
from hydradgl.model.layers import EdgeGeometry, GaussianExpansion, activation
from hydradgl.plugins import ConvContext, HeadContext, Registry, get_registry


def _norm(kind: str, width: int) -> nn.Module:
    return {"batch": lambda: nn.BatchNorm1d(width), "layer": lambda: nn.LayerNorm(width),
            "none": nn.Identity}[kind]()


class EdgeFeatures(nn.Module):
    """Edge features from distances, computed once per forward and shared by every conv layer."""

    def __init__(self, kind: str, cutoff: float, basis: int, envelope: bool = False):
        super().__init__()
        self.kind = kind
        self.expand = GaussianExpansion(cutoff, basis, envelope) if kind == "gaussian" else None
        self.dim = {"none": 0, "distance": 1, "gaussian": basis}[kind]

    def forward(self, dist: torch.Tensor) -> torch.Tensor | None:
        if self.kind == "none":
            return None
        return dist[:, None] if self.expand is None else self.expand(dist)


class HydraModel(nn.Module):
    """Shared trunk + heads. ``forward(batch)`` returns normalized predictions keyed by head name:
    (B, d) for graph heads, (N, d) for node heads."""

    def __init__(self, cfg: RunConfig, info: DatasetInfo, registry: Registry | None = None):
        super().__init__()
        registry = registry or get_registry()
        m = cfg.model
        self.embedding = nn.Embedding(len(info.species), m.hidden)
        input_dim = sum(info.node_inputs.values())
        self.input_proj = nn.Linear(input_dim, m.hidden, bias=False) if input_dim else None
        self.edge_features = EdgeFeatures(m.edge_features, info.cutoff, m.edge_basis, m.edge_envelope == "cosine")
        conv_spec = registry.conv(m.conv)
        conv_options = parse_options(conv_spec.options, m.conv_options, "model.conv_options", plugin=m.conv)
        context = ConvContext(edge_dim=self.edge_features.dim, degree_histogram=info.degree_histogram,
                              cutoff=info.cutoff)
        self.convs = nn.ModuleList(conv_spec.factory(m.hidden, m.hidden, conv_options, context)
                                   for _ in range(m.layers))
        # A conv may declare ``uses_edge_features = False``; then nothing is computed per edge for it.
        self.needs_edges = self.edge_features.dim > 0 and any(
            getattr(c, "uses_edge_features", True) for c in self.convs)
        # A conv that declares ``uses_geometry = True`` also gets the raw edge geometry (EdgeGeometry).
        self.geometry_convs = [bool(getattr(c, "uses_geometry", False)) for c in self.convs]
        self.cutoff = info.cutoff
        self.norms = nn.ModuleList(_norm(m.norm, m.hidden) for _ in range(m.layers))
        self.act = activation(m.activation)
        self.heads = nn.ModuleDict()
        self.head_levels: dict[str, str] = {}
        self.head_targets: dict[str, str] = {}
        for i, head in enumerate(cfg.heads):
            target = info.targets.get(head.target_name)
            if target is None:
                raise ConfigError(f"heads[{i}] ({head.name!r}): target {head.target_name!r} is not in the dataset; "
                                  f"available targets: {', '.join(sorted(info.targets))}")
            spec = registry.head(head_kind(head, target.level))
            if spec.level != target.level:
                raise ConfigError(f"heads[{i}].kind: {spec.name!r} is a {spec.level}-level head but target "
                                  f"{head.target_name!r} is {target.level}-level")
            options = parse_options(spec.options, head.options, f"heads[{i}].options", plugin=spec.name)
            self.heads[head.name] = spec.factory(m.hidden, target.dim, head.layers, options,
                                                 HeadContext(activation=m.activation, target=target))
            self.head_levels[head.name] = target.level
            self.head_targets[head.name] = head.target_name

    #: The kernel path convs and heads run on (see hydradgl.model.kernels).
    kernels: str = "dgl"

    def trunk(self, batch: Batch) -> torch.Tensor:
        """Node features after the shared conv layers."""
        graph = batch.graph.using(self.kernels)
        h = self.embedding(batch.species)
        if self.input_proj is not None:
            h = h + self.input_proj(batch.node_inputs)
        edge_attr = self.edge_features(batch.edge_dist) if self.needs_edges else None
        geometry = (EdgeGeometry.from_batch(batch.edge_dist, batch.edge_vec, self.cutoff)
                    if any(self.geometry_convs) else None)
        for conv, norm, wants_geometry in zip(self.convs, self.norms, self.geometry_convs):
            out = conv(graph, h, edge_attr, geometry=geometry) if wants_geometry else conv(graph, h, edge_attr)
            h = self.act(norm(out))
        return h

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        h = self.trunk(batch)
        graph = batch.graph.using(self.kernels)
        return {name: head(graph, h) for name, head in self.heads.items()}


def build_model(cfg: RunConfig, info: DatasetInfo, registry: Registry | None = None) -> HydraModel:
    return HydraModel(cfg, info, registry)
