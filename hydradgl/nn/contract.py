"""The conv contract: what a conv layer declares about itself (:class:`ConvTraits`), what flows from one
layer to the next (:class:`NodeState`), what it reads of the edges (:class:`Edges`), and the base classes
every conv plugin derives from (:class:`Conv`, and :class:`ScalarConv` for invariant layers)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from hydradgl.nn.layers import activation, cosine_cutoff, normalization

if TYPE_CHECKING:
    from hydradgl.ops import MessageGraph

FeatureType = Literal["scalars", "vectors", "spherical"]
FEATURE_TYPES: tuple[FeatureType, ...] = ("scalars", "vectors", "spherical")
KERNEL_PATHS = ("dgl", "torch")


@dataclass(frozen=True)
class ConvTraits:
    """What a conv reads and promises, declared once on its class (``traits = ConvTraits(...)``).

    A layer whose options change a trait (an envelope switched off, a max aggregator, edge features
    unused) sets narrowed traits on the instance in ``__init__`` (``self.traits = replace(type(self).traits,
    smooth_at_cutoff=False)``); ``kernels``, ``equivariant``, ``takes`` and ``returns`` are the class's.

    Attributes:
        reads_edge_features: reads ``edges.attr``, the trunk's radial basis (else the trunk skips it).
        needs_geometry: reads distances, edge vectors or the envelope (``edges.dist``/``vec``/``unit``/...).
        smooth_at_cutoff: every message goes to 0 with a zero slope as its distance reaches the cutoff,
            so the outputs do not jump when a neighbour crosses it (energies conserved in MD).
        uses_extrema: reduces by a max or min (forces then follow one of tied neighbours).
        equivariant: the vector (and spherical) features it returns rotate with the structure; a head
            that predicts a vector from them is allowed only on an equivariant trunk.
        kernels: the message-passing paths it runs on (``dgl``: DGL's kernels, ``torch``: plain torch,
            for GPUs without CUDA DGL): ``("dgl", "torch")`` for a layer that calls nothing but the
            :class:`~hydradgl.ops.MessageGraph` methods.
        takes: the feature types it reads from the incoming state (``scalars`` always).
        returns: the feature types of the state it returns (``scalars`` always: heads read them).
    """

    reads_edge_features: bool = False
    needs_geometry: bool = False
    smooth_at_cutoff: bool = False
    uses_extrema: bool = False
    equivariant: bool = False
    kernels: tuple[str, ...] = ("dgl",)
    takes: frozenset[FeatureType] = frozenset({"scalars"})
    returns: frozenset[FeatureType] = frozenset({"scalars"})

    def problems(self) -> list[str]:
        """What is inconsistent in these traits (empty when none is)."""
        found = []
        if not self.kernels or set(self.kernels) - set(KERNEL_PATHS):
            found.append(f"kernels {self.kernels!r} must be a non-empty subset of {KERNEL_PATHS}")
        for side, types in (("takes", self.takes), ("returns", self.returns)):
            if "scalars" not in types or set(types) - set(FEATURE_TYPES):
                found.append(f"{side} {sorted(types)} must hold 'scalars' and only {FEATURE_TYPES}")
        directional = bool((set(self.takes) | set(self.returns)) - {"scalars"})
        if self.equivariant != ("vectors" in self.returns or "spherical" in self.returns):
            found.append("equivariant must be declared exactly when the layer returns vectors or spherical features")
        if directional and not self.needs_geometry:
            found.append("a layer with vector or spherical features needs the geometry (needs_geometry=True)")
        if self.smooth_at_cutoff and not (self.needs_geometry or self.reads_edge_features):
            found.append("smooth_at_cutoff needs distances: set needs_geometry or reads_edge_features")
        return found

    def narrowed(self, **changes: bool) -> ConvTraits:
        """These traits with option-dependent ones changed (kernels, equivariance and feature types are fixed)."""
        fixed = {"kernels", "equivariant", "takes", "returns"} & set(changes)
        if fixed:
            raise ValueError(f"a layer cannot change its class's {sorted(fixed)} per instance")
        flags: dict[str, Any] = dict(changes)
        return replace(self, **flags)


@dataclass
class NodeState:
    """The node features that flow between conv layers.

    Shapes: ``scalars`` (N, F), invariant; ``vectors`` (N, 3, F_v) or None, Cartesian vectors (odd parity,
    rotating like positions); ``spherical`` {l: (N, 2l+1, F_l)} for degrees l >= 2 (parity (-1)^l, in
    e3nn's real spherical-harmonics basis and component order), empty when the layers carry none.
    Heads read the invariant ``scalars``.
    """

    scalars: torch.Tensor
    vectors: torch.Tensor | None = None
    spherical: dict[int, torch.Tensor] = field(default_factory=dict)

    def replace(self, **changes: Any) -> NodeState:
        return replace(self, **changes)


@dataclass
class Edges:
    """What a conv reads of the edges, built once per forward and shared by every layer.

    Shapes: ``attr`` (E, edge_dim) the trunk's radial basis, or None when no layer reads it; ``dist`` (E,);
    ``vec`` (E, 3) = pos[dst] - pos[src] with the periodic image shift (gradients with respect to positions
    and strain flow through both); ``cutoff`` in Angstrom. ``envelope`` (E,) and ``unit`` (E, 3) are computed
    on first use; :meth:`derived` caches any other per-edge quantity (e.g. spherical harmonics) so the
    first layer that asks computes it and the others reuse it.
    """

    attr: torch.Tensor | None
    dist: torch.Tensor
    vec: torch.Tensor
    cutoff: float
    _cache: dict[Any, torch.Tensor] = field(default_factory=dict, repr=False)

    def derived(self, key: Any, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``make()``, computed once for this forward under ``key``."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def envelope(self) -> torch.Tensor:
        """(E,) the cosine cutoff ``(cos(pi r / r_c) + 1) / 2`` of each distance."""
        return self.derived("envelope", lambda: cosine_cutoff(self.dist, self.cutoff))

    @property
    def unit(self) -> torch.Tensor:
        """(E, 3) unit vectors from source to receiver (zero-length edges give 0, not NaN)."""
        return self.derived("unit", lambda: self.vec / self.dist.clamp(min=1e-9).unsqueeze(1))


class Conv(nn.Module):
    """Base class of every conv layer: ``forward(graph, state, edges) -> state``.

    Subclasses declare ``traits`` (a :class:`ConvTraits`) at class level and own what happens inside a
    layer, normalization, activation and residual included (a batch norm over vector components would
    break equivariance, so the trunk applies none). ``graph`` is a :class:`~hydradgl.ops.MessageGraph`.
    """

    traits: ConvTraits = ConvTraits()  # the class's; an instance may narrow it (ConvTraits.narrowed)

    def forward(self, graph: MessageGraph, state: NodeState, edges: Edges) -> NodeState:  # pragma: no cover
        raise NotImplementedError


class ScalarConv(Conv):
    """An invariant conv: ``update(graph, h, edges) -> h'`` on the scalars, then the configured
    normalization and activation (``model.norm``, ``model.activation``: the paper's batch norm + ReLU
    after every layer). Built directly with the defaults, it returns the raw update.

    Args:
        width: the update's output width.
        norm: ``batch``, ``layer`` or ``none``.
        activation: an activation name (:data:`~hydradgl.nn.layers.ACTIVATIONS`), or None for none.
    """

    def __init__(self, width: int, norm: str = "none", activation_name: str | None = None):
        super().__init__()
        self.norm = normalization(norm, width)
        self.act = activation(activation_name) if activation_name else nn.Identity()

    def update(self, graph: MessageGraph, h: torch.Tensor, edges: Edges) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, graph: MessageGraph, state: NodeState, edges: Edges) -> NodeState:
        return state.replace(scalars=self.act(self.norm(self.update(graph, state.scalars, edges))))
