"""The model assembler: species embedding, a trunk of conv layers, one head per configured property."""

from __future__ import annotations

from typing import Collection

import torch
from torch import nn

from hydradgl.config import RunConfig
from hydradgl.configio import parse_options
from hydradgl.data.batch import Batch
from hydradgl.data.records import DatasetInfo
from hydradgl.model.heads import HeadDescription, describe_heads
from hydradgl.model.layers import EdgeGeometry, GaussianExpansion
from hydradgl.model.layers import activation as _activation
from hydradgl.plugins import ConvContext, HeadContext, Registry, get_registry


def _norm(kind: str, width: int) -> nn.Module:
    return {"batch": lambda: nn.BatchNorm1d(width), "layer": lambda: nn.LayerNorm(width),
            "none": nn.Identity}[kind]()


class EdgeFeatures(nn.Module):
    """Edge features from distances, computed once per forward and shared by every conv layer."""

    def __init__(self, kind: str, cutoff: float, basis: int, envelope: bool = False):
        super().__init__()
        self.kind, self.cutoff = kind, cutoff
        self.expand = GaussianExpansion(cutoff, basis, envelope) if kind == "gaussian" else None
        self.dim = {"none": 0, "distance": 1, "gaussian": basis}[kind]

    def forward(self, dist: torch.Tensor) -> torch.Tensor | None:
        if self.kind == "none":
            return None
        return dist[:, None] if self.expand is None else self.expand(dist)


class HydraModel(nn.Module):
    """Shared trunk + heads. ``forward(batch)`` returns normalized predictions keyed by head name:
    (B, d) for graph heads, (N, d) for node heads.

    Args:
        n_species: rows of the element embedding (``Batch.species`` indexes it).
        hidden: width of the embedding and of every conv layer.
        convs: the conv layers, each (N, hidden) -> (N, hidden).
        heads: one module per head, keyed like ``descriptions``.
        descriptions: what each head predicts (:class:`~hydradgl.model.heads.HeadDescription`).
        edge_features: the module computing edge features from distances.
        input_dim: width of the extra per-atom inputs (0: none).
        norm: normalization after each conv (batch, layer, none).
        activation: activation after each normalization.
        needs_edges: whether any conv reads the edge features (else they are not computed).
    """

    def __init__(self, n_species: int, hidden: int, convs: list[nn.Module], heads: dict[str, nn.Module],
                 descriptions: list[HeadDescription], edge_features: "EdgeFeatures", input_dim: int = 0,
                 norm: str = "batch", activation: str = "relu", needs_edges: bool = True):
        super().__init__()
        self.embedding = nn.Embedding(n_species, hidden)
        self.input_proj = nn.Linear(input_dim, hidden, bias=False) if input_dim else None
        self.edge_features = edge_features
        self.convs = nn.ModuleList(convs)
        self.needs_edges = needs_edges and self.edge_features.dim > 0
        # A conv that declares ``uses_geometry = True`` also gets the raw edge geometry (EdgeGeometry).
        self.geometry_convs = [bool(getattr(c, "uses_geometry", False)) for c in self.convs]
        self.cutoff = edge_features.cutoff
        self.norms = nn.ModuleList(_norm(norm, hidden) for _ in convs)
        self.act = _activation(activation)
        self.heads = nn.ModuleDict(heads)
        self.head_descriptions = list(descriptions)
        #: The kernel paths each plugin of this model declares (see resolve_kernels); build_model fills it.
        self.plugin_kernels: dict[str, tuple[str, ...]] = {}

    @property
    def head_levels(self) -> dict[str, str]:
        return {d.name: d.level for d in self.head_descriptions}

    @property
    def head_targets(self) -> dict[str, str]:
        return {d.name: d.target for d in self.head_descriptions}

    @property
    def depends_on_distances(self) -> bool:
        """Whether the outputs change continuously with interatomic distances: a conv reads the edge
        features or the raw geometry (forces and stress need it)."""
        return self.needs_edges or any(self.geometry_convs)

    @property
    def smooth_at_cutoff(self) -> bool:
        """Whether every conv declares ``smooth_at_cutoff = True``: each message goes to zero as its
        distance reaches the cutoff, so the outputs do not jump when a neighbour crosses it (MD
        conserves energy). Convs whose messages carry the neighbours' features or count do not."""
        return all(getattr(conv, "smooth_at_cutoff", False) for conv in self.convs)

    @property
    def uses_extrema(self) -> bool:
        """Whether a conv or head reduces by a max or min (modules declare ``uses_extrema = True``). Its
        outputs then follow one of the candidates, and where equivalent neighbours tie, as in a perfect
        crystal, their derivatives (forces) follow one of them and lose the structure's symmetry."""
        return any(getattr(module, "uses_extrema", False) for module in self.modules() if module is not self)

    #: The kernel path convs and heads run on (hydradgl.ops); the run sets it from
    #: hydradgl.train.runtime.resolve_kernels(training.kernels, device, model.plugin_kernels).
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

    def forward(self, batch: Batch, heads: Collection[str] | None = None) -> dict[str, torch.Tensor]:
        """Every head's output, or only those named in ``heads``."""
        h = self.trunk(batch)
        graph = batch.graph.using(self.kernels)
        return {name: head(graph, h) for name, head in self.heads.items() if heads is None or name in heads}


def build_model(cfg: RunConfig, info: DatasetInfo, registry: Registry | None = None) -> HydraModel:
    """The model a config describes for data with ``info``: conv and head plugins looked up and built."""
    registry = registry or get_registry()
    m = cfg.model
    edge_features = EdgeFeatures(m.edge_features, info.cutoff, m.edge_basis, m.edge_envelope == "cosine")
    conv_spec = registry.conv(m.conv)
    conv_options = parse_options(conv_spec.options, m.conv_options, "model.conv_options", plugin=m.conv)
    context = ConvContext(edge_dim=edge_features.dim, degree_histogram=info.degree_histogram, cutoff=info.cutoff)
    convs = [conv_spec.factory(m.hidden, m.hidden, conv_options, context) for _ in range(m.layers)]
    # The spec declares whether its layers read edge features; a module attribute can say no as well.
    needs_edges = conv_spec.reads_edges(conv_options) and any(getattr(c, "uses_edge_features", True) for c in convs)
    descriptions = describe_heads(cfg, info, registry)
    heads = {}
    kernels = {f"conv plugin {m.conv!r}": tuple(conv_spec.kernels)}
    for i, d in enumerate(descriptions):
        spec = registry.head(d.kind)
        options = parse_options(spec.options, cfg.heads[i].options, f"heads[{i}].options", plugin=spec.name)
        heads[d.name] = spec.factory(m.hidden, d.dim, cfg.heads[i].layers, options, HeadContext(activation=m.activation, target=info.targets[d.target]))
        kernels[f"head plugin {spec.name!r} (heads[{i}])"] = tuple(spec.kernels)
    model = HydraModel(len(info.species), m.hidden, convs, heads, descriptions, edge_features,
                       input_dim=sum(info.node_inputs.values()), norm=m.norm, activation=m.activation,
                       needs_edges=needs_edges)
    model.plugin_kernels = kernels
    return model
