"""The model assembler: species embedding, a trunk of conv layers, one head per configured property."""

from __future__ import annotations

import re
import warnings
from collections.abc import Collection
from dataclasses import replace
from typing import cast

import numpy as np
import torch
from torch import nn

from hydradgl.config import RunConfig
from hydradgl.configio import parse_options
from hydradgl.data.baselines import element_counts
from hydradgl.data.batch import Batch
from hydradgl.data.graphset import GraphView
from hydradgl.data.normalize import Normalizer
from hydradgl.data.records import DatasetInfo
from hydradgl.errors import ConfigError, DataError, PluginError
from hydradgl.model.derivatives import cell_volumes, derivatives
from hydradgl.model.heads import HeadDescription, describe_heads
from hydradgl.nn import Conv, ConvTraits, Edges, NodeState
from hydradgl.nn.layers import GaussianExpansion
from hydradgl.ops import Backend
from hydradgl.plugins import ConvContext, ConvSpec, HeadContext, Registry, get_registry


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


class TargetScale(nn.Module):
    """A target's normalization ``(y - lo) / span`` inside the model (for potentials, whose heads work in
    physical units); not saved with the weights: it is rebuilt from the run's dataset statistics. Kept in
    float64 and applied in the values' dtype, so that it is the exact inverse of the
    :class:`~hydradgl.data.normalize.Normalizer` that turns the outputs back into physical units (a float64
    model's forces and stress are then its energy's derivatives to float64 rounding)."""

    lo: torch.Tensor
    span: torch.Tensor

    def __init__(self, lo, span):
        super().__init__()
        self.register_buffer("lo", torch.as_tensor(lo, dtype=torch.float64), persistent=False)
        self.register_buffer("span", torch.as_tensor(span, dtype=torch.float64), persistent=False)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return (values - self.lo.to(values.dtype)) / self.span.to(values.dtype)


class HydraModel(nn.Module):
    """Shared trunk + heads. ``forward(batch)`` returns normalized predictions keyed by head name:
    (B, d) for graph heads, (N, d) for node heads. A potential head (a head plugin with ``energy=True``)
    gives each graph's energy in physical units, normalized here; its forces ``-dE/dr`` and stress
    ``(1/V) dE/d(strain)`` (the derived heads ``forces_of`` and ``stress_of`` it) come from one gradient
    of it in :func:`~hydradgl.model.derivatives.derivatives`, with the double-backward graph kept while
    autograd is on (training on them). The stress needs ``Batch.cell``: a structure without a periodic
    cell is refused (DataError), never divided by a zero volume.

    Args:
        n_species: rows of the element embedding (``Batch.species`` indexes it).
        hidden: width of the embedding and of every conv layer.
        convs: the conv layers (:class:`hydradgl.nn.Conv`), each a NodeState of width hidden to the next; each
            applies its own normalization and activation (``model.norm``, ``model.activation``).
        heads: one module per head, keyed like ``descriptions``.
        descriptions: what each head predicts (:class:`~hydradgl.model.heads.HeadDescription`).
        edge_features: the module computing edge features from distances.
        input_dim: width of the extra per-atom inputs (0: none).
        energy_scales: for each potential head, and each derived forces or stress head, its target's
            normalization (:class:`TargetScale`), keyed by head name.
    """

    def __init__(self, n_species: int, hidden: int, convs: list[Conv], heads: dict[str, nn.Module],
                 descriptions: list[HeadDescription], edge_features: EdgeFeatures, input_dim: int = 0,
                 energy_scales: dict[str, TargetScale] | None = None,
                 vector_heads: Collection[str] = ()):
        super().__init__()
        self.embedding = nn.Embedding(n_species, hidden)
        self.input_proj = nn.Linear(input_dim, hidden, bias=False) if input_dim else None
        self.edge_features = edge_features
        self.convs = nn.ModuleList(convs)
        #: Each conv's traits, in trunk order (the assembler checked them against the registered class).
        self.conv_traits: tuple[ConvTraits, ...] = tuple(c.traits for c in convs)
        self.needs_edges = any(t.reads_edge_features for t in self.conv_traits) and self.edge_features.dim > 0
        self.cutoff = edge_features.cutoff
        #: Heads that also read the trunk's vector features (HeadSpec.reads_vectors).
        self.vector_heads = frozenset(vector_heads)
        self.heads = nn.ModuleDict(heads)
        self.head_descriptions = list(descriptions)
        self.energy_scales = nn.ModuleDict(energy_scales or {})
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
        return self.needs_edges or any(t.needs_geometry for t in self.conv_traits)

    @property
    def smooth_at_cutoff(self) -> bool:
        """Whether every conv's traits say ``smooth_at_cutoff``: each message goes to zero as its
        distance reaches the cutoff, so the outputs do not jump when a neighbour crosses it (MD
        conserves energy). Convs whose messages carry the neighbours' features or count do not."""
        return all(t.smooth_at_cutoff for t in self.conv_traits)

    @property
    def uses_extrema(self) -> bool:
        """Whether a conv (its traits) or a head (a module attribute ``uses_extrema = True``) reduces by a
        max or min. Its outputs then follow one of the candidates, and where equivalent neighbours tie, as
        in a perfect crystal, their derivatives (forces) follow one of them and lose the structure's
        symmetry."""
        return (any(t.uses_extrema for t in self.conv_traits)
                or any(getattr(module, "uses_extrema", False) for module in self.heads.modules()))

    #: The kernel path convs and heads run on (hydradgl.ops); the run sets it from
    #: hydradgl.train.runtime.resolve_kernels(training.kernels, device, model.plugin_kernels).
    kernels: Backend = "dgl"

    def trunk(self, batch: Batch) -> NodeState:
        """The node state after the shared conv layers (heads read its invariant scalars)."""
        graph = batch.graph.using(self.kernels)
        h = self.embedding(batch.species)
        if self.input_proj is not None:
            h = h + self.input_proj(batch.node_inputs)
        edges = Edges(self.edge_features(batch.edge_dist) if self.needs_edges else None, batch.edge_dist,
                      batch.edge_vec, self.cutoff)
        state = NodeState(h)
        for conv in self.convs:
            state = conv(graph, state, edges)
        return state

    @property
    def potential_heads(self) -> dict[str, str | None]:
        """Each potential head's name and the name of its derived forces head (None without one)."""
        forces = {d.forces_of: d.name for d in self.head_descriptions if d.forces_of is not None}
        return {name: forces.get(name) for name in self.heads if name in self.energy_scales}

    @property
    def stress_heads(self) -> dict[str, str]:
        """Each potential head with a derived stress head, and that head's name."""
        return {d.stress_of: d.name for d in self.head_descriptions if d.stress_of is not None}

    def forward(self, batch: Batch, heads: Collection[str] | None = None) -> dict[str, torch.Tensor]:
        """Every head's output, or only those named in ``heads``."""
        wanted = [d for d in self.head_descriptions if heads is None or d.name in heads]
        derived = [d for d in wanted if d.derivative_of is not None]
        modules = list(dict.fromkeys([d.name for d in wanted if d.derivative_of is None]
                                     + [d.derivative_of for d in derived if d.derivative_of is not None]))
        if not derived:
            return self._outputs(batch, modules)
        volume = _stress_volumes(batch) if any(d.stress_of is not None for d in derived) else None
        differentiable = torch.is_grad_enabled()
        with torch.enable_grad():
            vec = batch.edge_vec if batch.edge_vec.requires_grad else batch.edge_vec.detach().requires_grad_(True)
            batch = replace(batch, edge_vec=vec, edge_dist=torch.linalg.norm(vec, dim=1))
            physical: dict[str, torch.Tensor] = {}
            out = self._outputs(batch, modules, physical)
            graph = batch.graph.using(self.kernels)
            energies = [e for e in dict.fromkeys(d.derivative_of for d in derived) if e is not None]
            for i, energy_head in enumerate(energies):  # one gradient per potential: its forces and stress
                forces = next((d.name for d in derived if d.forces_of == energy_head), None)
                stress = next((d.name for d in derived if d.stress_of == energy_head), None)
                found = derivatives(physical[energy_head], vec, graph, volume, forces=forces is not None,
                                    stress=stress is not None, create_graph=differentiable,
                                    retain_graph=differentiable or i + 1 < len(energies))
                for name, value in ((forces, found.forces), (stress, found.stress)):
                    if name is not None and value is not None:
                        out[name] = self.energy_scales[name](value)
        return out if differentiable else {name: value.detach() for name, value in out.items()}

    def _outputs(self, batch: Batch, names: list[str],
                 physical: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The named heads' normalized outputs; potential heads' physical energies also into ``physical``."""
        state = self.trunk(batch)
        h = state.scalars
        graph = batch.graph.using(self.kernels)
        out = {}
        for name in names:
            if name in self.vector_heads:
                out[name] = self.heads[name](graph, h, state.vectors)
            elif name in self.energy_scales:
                energy = self.heads[name](graph, h, batch.species)
                if physical is not None:
                    physical[name] = energy
                out[name] = self.energy_scales[name](energy)
            else:
                out[name] = self.heads[name](graph, h)
        return out

    def loss_units(self) -> dict[str, torch.Tensor]:
        """For each potential head and its forces and stress heads, the factor (dim,) from the head's
        normalized output to the loss's units: the physical value over the potential's ``scale`` ``s``
        (the RMS training force component, fitted on the training split), the energy then taken per atom
        by the loss. One number for every term weighs eV and eV/A on one footing, alike in every direction
        (the NequIP and MACE convention); min-max spans would weigh a total energy and each force
        component by their own ranges, so that forces count for little."""
        units = {}
        for d in self.head_descriptions:
            owner = d.name if d.energy else d.derivative_of
            if owner is not None:
                scale = cast(torch.Tensor, self.heads[owner].scale)  # HeadSpec: an energy head's scale buffer
                span = cast(torch.Tensor, self.energy_scales[d.name].span)
                units[d.name] = span / scale.double()
        return units

    def fit_energy_statistics(self, graphs: GraphView, species: list[int]) -> None:
        """Hand every potential head the training split's element counts (``species``: the model's
        element table), energies and force components (physical units), from which it fits its
        reference energies and scale (before training)."""
        d = {x.name: x for x in self.head_descriptions}
        physical = graphs.with_normalizer(None)
        counts = element_counts(physical, species)
        for name, forces_head in self.potential_heads.items():
            energy = np.asarray(physical.graph_targets[d[name].target], dtype=np.float64).reshape(-1)
            forces = (None if forces_head is None else
                      np.asarray(physical.node_targets[d[forces_head].target], dtype=np.float64))
            # nn.Module's __getattr__ is typed Tensor | Module; a potential head defines fit_statistics (HeadSpec)
            self.heads[name].fit_statistics(counts, energy, forces)  # type: ignore[operator]


def upgrade_state_dict(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights saved before the convs owned their normalization (``norms.{i}.*``, now ``convs.{i}.norm.*``)
    under today's names; others unchanged."""
    return {re.sub(r"^norms\.(\d+)\.", r"convs.\1.norm.", key): value for key, value in weights.items()}


def build_model(cfg: RunConfig, info: DatasetInfo, registry: Registry | None = None) -> HydraModel:
    """The model a config describes for data with ``info``: conv and head plugins looked up and built."""
    registry = registry or get_registry()
    m = cfg.model
    edge_features = EdgeFeatures(m.edge_features, info.cutoff, m.edge_basis, m.edge_envelope == "cosine")
    conv_spec = registry.conv(m.conv)
    conv_options = parse_options(conv_spec.options, m.conv_options, "model.conv_options", plugin=m.conv)
    context = ConvContext(edge_dim=edge_features.dim, degree_histogram=info.degree_histogram, cutoff=info.cutoff,
                          norm=m.norm, activation=m.activation)
    convs = [_checked_conv(conv_spec, conv_spec.factory(m.hidden, m.hidden, conv_options, context))
             for _ in range(m.layers)]
    descriptions = describe_heads(cfg, info, registry)
    heads, scales, vector_heads = {}, {}, []
    normalizer = Normalizer.from_info(info)
    kernels = {f"conv plugin {m.conv!r}": tuple(conv_spec.kernels)}
    for i, (head_cfg, d) in enumerate(zip(cfg.heads, descriptions)):  # the derived heads come last: no module
        spec = registry.head(d.kind)
        options = parse_options(spec.options, head_cfg.options, f"heads[{i}].options", plugin=spec.name)
        head_context = HeadContext(activation=m.activation, target=info.targets[d.target],
                                   species=tuple(info.species))
        heads[d.name] = spec.factory(m.hidden, d.dim, head_cfg.layers, options, head_context)
        if spec.energy and not isinstance(getattr(heads[d.name], "scale", None), torch.Tensor):
            raise PluginError(f"head plugin {spec.name!r}: a potential head's module needs a `scale` tensor "
                              "buffer, which the loss divides the energy per atom and forces by (HeadSpec)")
        kernels[f"head plugin {spec.name!r} (heads[{i}])"] = tuple(spec.kernels)
        if spec.energy:
            scales[d.name] = TargetScale(normalizer.lo[d.target], normalizer.span[d.target])
        if spec.reads_vectors:
            vector_heads.append(d.name)
    for d in descriptions[len(cfg.heads):]:
        scales[d.name] = TargetScale(normalizer.lo[d.target], normalizer.span[d.target])
    model = HydraModel(len(info.species), m.hidden, convs, heads, descriptions, edge_features,
                       input_dim=sum(info.node_inputs.values()), energy_scales=scales, vector_heads=vector_heads)
    model.plugin_kernels = kernels
    _check_potentials(model, cfg.model.conv, cfg.model.activation)
    return model


def _checked_conv(spec: ConvSpec, conv: object) -> Conv:
    """``conv`` if it is an instance of the spec's class whose traits keep the class's fixed ones."""
    module = spec.module
    assert module is not None  # the registry refuses a conv spec without its class
    if not isinstance(conv, module):
        raise PluginError(f"conv plugin {spec.name!r}: its factory returned {type(conv).__name__}, not the "
                          f"{module.__name__} it registered")
    fixed = ("kernels", "equivariant", "takes", "returns")
    changed = [name for name in fixed if getattr(conv.traits, name) != getattr(module.traits, name)]
    if changed:
        raise PluginError(f"conv plugin {spec.name!r}: a layer changed its class's traits {changed} (only "
                          "option-dependent ones may differ per instance: ConvTraits.narrowed)")
    return conv


def _stress_volumes(batch: Batch) -> torch.Tensor:
    """(B,) the batch's cell volumes, for the stress; DataError when a structure has no periodic cell."""
    if batch.cell is None:
        raise DataError("the stress needs each structure's cell, but this batch carries none")
    volume = cell_volumes(batch.cell)
    lacking = torch.nonzero(volume <= 0).flatten()
    if len(lacking):
        ids = lacking if batch.graph_ids is None else batch.graph_ids.to(lacking.device)[lacking]
        shown = ", ".join(f"#{int(g)}" for g in ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        raise DataError(f"the stress needs a cell periodic along all three axes, but structure(s) {shown} (their index "
                        "in the dataset, or among the structures predicted) have none; predict the stress of "
                        "periodic structures only (graph.periodic: true, a lattice periodic along x, y and z)")
    return volume


class SmoothnessWarning(UserWarning):
    """Forces were asked of a model whose energy is not smooth in the positions: it jumps when a
    neighbour crosses the cutoff, or follows a max/min among equivalent neighbours."""


def roughness(conv: str, smooth_at_cutoff: bool, uses_extrema: bool, activation: str) -> list[str]:
    """What makes a model's energy not smooth in the positions (nothing: empty), for SmoothnessWarning:
    at training and in the ASE calculator."""
    reasons = []
    if not smooth_at_cutoff:
        reasons.append(f"its conv ({conv}) does not declare smooth_at_cutoff with these options: its messages do "
                       "not go to zero at the cutoff, so the energy jumps whenever a neighbour crosses it and MD does "
                       "not conserve energy (an envelope option, where the conv has one, fixes that)")
    if uses_extrema:
        reasons.append("a layer or head reduces by a max or min, so where an atom's neighbours are equivalent, as "
                       "in a perfect crystal, the forces follow one of them and lose the structure's symmetry")
    if activation == "relu":
        reasons.append("model.activation is relu, which has a kink at 0, so the forces jump wherever a unit of the "
                       "trunk or the heads switches on or off (silu or softplus are smooth)")
    return reasons


def _check_potentials(model: HydraModel, conv: str, activation: str) -> None:
    """Refuse forces or stress of an energy that depends on the batch (batch norm) or not on distances; warn
    when it is not smooth."""
    if not any(forces for forces in model.potential_heads.values()) and not model.stress_heads:
        return
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.convs.modules()):
        raise ConfigError(f"model.norm: the {conv!r} trunk has batch norm, which in training normalizes each "
                          "feature over the whole batch: a structure's energy would depend on the other "
                          "structures of its batch, its forces -dE/dr would take terms from their atoms, and "
                          "training and prediction would differ; set model.norm: layer or none")
    if not model.depends_on_distances:
        raise ConfigError(f"model.conv: {conv!r} reads neither edge features nor the geometry here, so its "
                          "energy does not depend on interatomic distances and has no forces or stress; use a "
                          "distance-aware conv (`hydradgl list-plugins` marks them) or options that make this "
                          "one read distances")
    reasons = roughness(conv, model.smooth_at_cutoff, model.uses_extrema, activation)
    if reasons:
        warnings.warn(f"potential: the energy is not smooth in the positions: {'; and '.join(reasons)}",
                      SmoothnessWarning, stacklevel=2)
