"""Plugin specs and the registry that loads them from the ``hydradgl`` entry-point group.

Every plugin, built-in or third-party, is a module named by an entry point in the ``hydradgl`` group.
Loading is fault tolerant: a module that fails to import, or a hook that raises, marks that
distribution as broken (``hydradgl list-plugins`` shows it with the error) and only a command that
asks for one of its names fails, with that error. A name registered by two distributions is refused
with both named.
"""

from __future__ import annotations

import difflib
import importlib.metadata as md
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal

import pluggy
from pydantic import BaseModel, ConfigDict

from hydradgl import hookspecs
from hydradgl.errors import PluginError

Kind = Literal["dataset", "conv", "head"]
KINDS: tuple[Kind, ...] = ("dataset", "conv", "head")
ENTRY_POINT_GROUP = "hydradgl"
BUILTIN_DISTRIBUTION = "hydradgl"


class NoOptions(BaseModel):
    """Options model for a plugin that takes none."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class PluginSpec:
    """One registration: a unique name, a one-line description, an options model and a factory."""

    name: str
    description: str
    factory: Callable[..., Any]
    options: type[BaseModel] = NoOptions


@dataclass(frozen=True)
class DatasetContext:
    """What a dataset factory gets besides its options."""

    cache_dir: Any  # pathlib.Path: where generated or downloaded raw files may be written
    skip_bad_files: bool = False  # skip malformed files (reported in RawDataset.skipped) instead of failing


@dataclass(frozen=True)
class DatasetSpec(PluginSpec):
    """``factory(options, context: DatasetContext) -> hydradgl.data.records.RawDataset``.

    ``fingerprint(options, context) -> str``, when given, identifies the raw inputs cheaply (file names,
    sizes and modification times; generator parameters) so the processed cache can be used without
    reading them; without it the cache is keyed by ``RawDataset.fingerprint`` after loading.
    """

    fingerprint: Callable[..., str] | None = None


@dataclass(frozen=True)
class ConvContext:
    """What a conv factory gets besides its options.

    ``edge_dim`` is the width of the edge features the trunk passes (0: none). ``degree_histogram[k]``
    counts training-set nodes with in-degree k (PNA's scalers need it); it is saved with the model.
    """

    edge_dim: int
    degree_histogram: Any  # torch.Tensor (long), or None before statistics exist
    cutoff: float


@dataclass(frozen=True)
class ConvSpec(PluginSpec):
    """``factory(in_dim, out_dim, options, context: ConvContext) -> torch.nn.Module``.

    The module's ``forward(graph, h, edge_attr)`` maps node features (N, in_dim) to (N, out_dim);
    ``edge_attr`` is (E, edge_dim) or None. Normalization and activation are the trunk's job. A module
    that ignores edge features may set ``uses_edge_features = False`` so the trunk skips computing them.
    A module that sets ``uses_geometry = True`` is called as ``forward(graph, h, edge_attr, geometry=g)``
    with ``g`` a :class:`hydradgl.model.layers.EdgeGeometry` (distances, edge vectors, cutoff envelope).
    """


@dataclass(frozen=True)
class HeadContext:
    """What a head factory gets besides its options: the activation the config names, and the
    dataset's description of the head's target (level, dimension, unit; None when built without one)."""

    activation: str
    target: Any = None  # hydradgl.data.records.TargetInfo


@dataclass(frozen=True)
class HeadSpec(PluginSpec):
    """``factory(in_dim, out_dim, layers, options, context: HeadContext) -> torch.nn.Module``.

    The module's ``forward(graph, h)`` returns (B, out_dim) for ``level="graph"`` heads and
    (N, out_dim) for ``level="node"`` heads; ``layers`` are the hidden FC widths.
    """

    level: Literal["graph", "node"] = "graph"


SPEC_TYPES: dict[Kind, type[PluginSpec]] = {"dataset": DatasetSpec, "conv": ConvSpec, "head": HeadSpec}
HOOKS: dict[Kind, str] = {"dataset": "register_datasets", "conv": "register_convs", "head": "register_heads"}


@dataclass
class Distribution:
    """A package that provides plugins, as ``list-plugins`` shows it."""

    name: str
    version: str
    builtin: bool
    provides: dict[Kind, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    errors: list[str] = field(default_factory=list)

    @property
    def broken(self) -> bool:
        return bool(self.errors)


@dataclass
class Registry:
    """Every registered spec by kind and name, plus where each came from."""

    specs: dict[Kind, dict[str, PluginSpec]] = field(default_factory=lambda: {k: {} for k in KINDS})
    owners: dict[tuple[Kind, str], str] = field(default_factory=dict)
    conflicts: dict[tuple[Kind, str], list[str]] = field(default_factory=dict)
    distributions: dict[str, Distribution] = field(default_factory=dict)

    def get(self, kind: Kind, name: str) -> PluginSpec:
        """The spec registered as ``name``, or a PluginError that says why there is none."""
        if (kind, name) in self.conflicts:
            owners = " and ".join(sorted(self.conflicts[(kind, name)]))
            raise PluginError(
                f"{kind} plugin name {name!r} is registered by more than one distribution: {owners}. "
                "Uninstall one of them."
            )
        try:
            return self.specs[kind][name]
        except KeyError:
            pass
        known = sorted(self.specs[kind])
        message = f"unknown {kind} plugin {name!r}; available: {', '.join(known) or 'none'}"
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            message += f". Did you mean {close[0]!r}?"
        broken = [d for d in self.distributions.values() if d.broken]
        for dist in broken:
            message += f"\nplugin distribution {dist.name!r} is broken and may have provided it: {dist.errors[0]}"
        raise PluginError(message)

    def dataset(self, name: str) -> DatasetSpec:
        return self.get("dataset", name)  # type: ignore[return-value]

    def conv(self, name: str) -> ConvSpec:
        return self.get("conv", name)  # type: ignore[return-value]

    def head(self, name: str) -> HeadSpec:
        return self.get("head", name)  # type: ignore[return-value]

    def names(self, kind: Kind) -> list[str]:
        return sorted(n for n in self.specs[kind] if (kind, n) not in self.conflicts)


def _distribution_of(ep: md.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return ep.value.split(".")[0], "unknown"
    return dist.metadata["Name"], dist.version


def _make_register(registry: Registry, dist: Distribution, kind: Kind) -> Callable[[PluginSpec], None]:
    def register(spec: PluginSpec) -> None:
        expected = SPEC_TYPES[kind]
        if not isinstance(spec, expected):
            raise PluginError(f"{HOOKS[kind]} must register {expected.__name__} objects, got {type(spec).__name__}")
        key = (kind, spec.name)
        if key in registry.owners and registry.owners[key] != dist.name:
            registry.conflicts.setdefault(key, [registry.owners[key]])
            registry.conflicts[key].append(dist.name)
            return
        registry.owners[key] = dist.name
        registry.specs[kind][spec.name] = spec
        dist.provides[kind].append(spec.name)

    return register


def load_registry(entry_points: Iterable[md.EntryPoint] | None = None) -> Registry:
    """Import every plugin module of the ``hydradgl`` group and collect what each registers."""
    if entry_points is None:
        entry_points = md.entry_points(group=ENTRY_POINT_GROUP)
    manager = pluggy.PluginManager(ENTRY_POINT_GROUP)
    manager.add_hookspecs(hookspecs)
    registry = Registry()
    for ep in sorted(entry_points, key=lambda e: e.name):
        dist_name, dist_version = _distribution_of(ep)
        dist = registry.distributions.setdefault(
            dist_name, Distribution(dist_name, dist_version, builtin=dist_name == BUILTIN_DISTRIBUTION)
        )
        try:
            module = ep.load()
            manager.register(module, name=f"{dist_name}:{ep.name}")
        except Exception as exc:  # noqa: BLE001  (any failure in third-party code marks it broken)
            dist.errors.append(f"entry point {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}")
            continue
        for kind in KINDS:
            hook = getattr(module, HOOKS[kind], None)
            if hook is None:
                continue
            try:
                hook(register=_make_register(registry, dist, kind))
            except Exception as exc:  # noqa: BLE001
                dist.errors.append(f"{HOOKS[kind]} in {ep.value} raised {type(exc).__name__}: {exc}")
    return registry


_cached: Registry | None = None


def get_registry(refresh: bool = False) -> Registry:
    """The process-wide registry, loaded on first use."""
    global _cached
    if _cached is None or refresh:
        _cached = load_registry()
    return _cached
