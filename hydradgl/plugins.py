"""Plugin specs and the registry that loads them from the ``hydradgl`` entry-point group.

Every plugin, built-in or third-party, is a module named by an entry point in the ``hydradgl`` group.
The modules are registered with a pluggy ``PluginManager`` and their ``@hookimpl`` functions are
called one implementation at a time, so loading is fault tolerant: a module that fails to import,
implements a hook that does not exist (a misspelling such as ``register_conv``: pluggy's
``check_pending``), implements none, or whose hook raises or registers one name twice marks that
distribution as broken (``hydradgl list-plugins`` shows it with the error); only a command that asks
for one of its names fails, with that error. A name registered by two distributions is refused with
both named.
"""

from __future__ import annotations

import difflib
import importlib.metadata as md
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pluggy
from pydantic import BaseModel, ConfigDict

from hydradgl import hookspecs
from hydradgl.errors import PluginError
from hydradgl.nn import Conv, ConvTraits

Kind = Literal["dataset", "conv", "head", "logger"]
KINDS: tuple[Kind, ...] = ("dataset", "conv", "head", "logger")
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
    # Target names the configured heads predict (None: all). A factory may skip deriving a target nobody
    # asked for; it must not change what it returns otherwise (the processed cache does not key on this).
    targets: frozenset[str] | None = None


@dataclass(frozen=True)
class DatasetSpec(PluginSpec):
    """``factory(options, context: DatasetContext) -> hydradgl.data.records.RawDataset``.

    ``fingerprint(options, context) -> str``, when given, identifies the raw inputs cheaply (file names,
    sizes and modification times; generator parameters) so the processed cache is used without reading
    them. Without it the factory runs on every load and the processed graphs are cached under
    ``RawDataset.fingerprint`` (graph building is saved, reading is not); with neither, nothing is cached.

    ``read_structures(path, options) -> list[Structure]``, when given, reads one file given to
    ``hydradgl predict`` (targets not needed). ``options`` are the saved run's dataset options when the
    run was trained on this plugin, so the reader can give files the dataset's lattice (``cell``/``pbc``)
    when the format has none; they are None when the file is only matched by ``suffixes`` (file name
    endings such as ``.xyz`` this reader claims for files given to a run trained on another plugin).
    """

    fingerprint: Callable[..., str] | None = None
    read_structures: Callable[[Path, Any], list] | None = None
    suffixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConvContext:
    """What a conv factory gets besides its options.

    ``edge_dim`` is the width of the edge features the trunk passes (0: none). ``degree_histogram[k]``
    counts training-set nodes with in-degree k (PNA's scalers need it); it is saved with the model.
    ``norm`` and ``activation`` are what the config asks after each layer (``model.norm``,
    ``model.activation``): invariant layers (:class:`hydradgl.nn.ScalarConv`) apply them.
    """

    edge_dim: int
    degree_histogram: list[int] | None  # None before statistics exist
    cutoff: float
    norm: str = "none"  # model.norm, for layers that normalize their output (ScalarConv)
    activation: str | None = None  # model.activation, likewise


@dataclass(frozen=True)
class ConvSpec(PluginSpec):
    """``factory(in_dim, out_dim, options, context: ConvContext) -> module``, a ``module`` instance.

    ``module`` is the layer's class, a subclass of :class:`hydradgl.nn.Conv`: its ``forward(graph, state,
    edges)`` maps a :class:`~hydradgl.nn.NodeState` to the next, and its class-level
    :class:`~hydradgl.nn.ConvTraits` say what it reads (edge features, geometry), what it promises (smooth at
    the cutoff, equivariant, extrema) and which kernel paths it runs on. The registry checks them when the
    plugin registers; the assembler, the calculator's warnings and ``hydradgl list-plugins`` read them.
    """

    module: type[Conv] | None = None

    @property
    def traits(self) -> ConvTraits:
        return self.module.traits if self.module is not None else ConvTraits()

    @property
    def kernels(self) -> tuple[str, ...]:
        return self.traits.kernels

    @property
    def equivariant(self) -> bool:
        return self.traits.equivariant

    def problems(self) -> list[str]:
        """Why this spec cannot be registered (empty when it can)."""
        if not (isinstance(self.module, type) and issubclass(self.module, Conv)):
            return [f"module must be the layer's class, a subclass of hydradgl.nn.Conv (got {self.module!r})"]
        return [f"{self.module.__name__}.traits: {problem}" for problem in self.module.traits.problems()]


@dataclass(frozen=True)
class HeadContext:
    """What a head factory gets besides its options: the activation the config names, and the
    dataset's description of the head's target (level, dimension, unit; None when built without one)."""

    activation: str
    target: Any = None  # hydradgl.data.records.TargetInfo
    species: tuple[int, ...] = ()  # proton numbers, in the order of Batch.species' indices


@dataclass(frozen=True)
class HeadSpec(PluginSpec):
    """``factory(in_dim, out_dim, layers, options, context: HeadContext) -> torch.nn.Module``.

    The module's ``forward(graph, h)`` returns (B, out_dim) for ``level="graph"`` heads and
    (N, out_dim) for ``level="node"`` heads; ``layers`` are the hidden FC widths. ``kernels``: as for
    :class:`ConvSpec`.

    ``energy=True`` declares a potential: the module's ``forward(graph, h, species)`` returns each
    graph's total energy (B, 1) in the target's physical unit, the model differentiates it for the
    forces, and before training ``fit_statistics(counts, energy, forces)`` gets the training split's
    element counts (G, S), energies (G,) and force components (or None), and sets the module's ``scale``
    (a scalar tensor buffer in the energy's unit per A, e.g. the RMS force component), which the loss
    divides the energy per atom, the forces and the stress by. Its options name the force
    target and its loss weight as ``forces`` and ``force_weight``, and may name a stress target (a
    6-component graph target) and its weight as ``stress`` and ``stress_weight``.

    ``reads_vectors=True`` declares a head of the trunk's vector features: the module's
    ``forward(graph, h, vectors)`` also gets them (N, 3, in_dim), and the head is refused on a trunk
    that is not equivariant. A 3-component node target needs such a head (or, for forces, a potential).
    """

    level: Literal["graph", "node"] = "graph"
    kernels: tuple[str, ...] = ("dgl",)
    energy: bool = False
    reads_vectors: bool = False


@dataclass(frozen=True)
class LoggerContext:
    """What a logger factory gets besides its options: the run directory and the resolved config."""

    run_dir: Any  # pathlib.Path
    config: dict[str, Any]  # RunConfig.model_dump(mode="json")


class RunLogger:
    """Base of what a logger factory returns; override the methods you need (each default does nothing).

    Called on rank 0 only, in this order: ``log_scalars`` once per epoch (tags such as ``total/val_loss``,
    ``H/val_rmse``, ``optim/lr``, ``speed/graphs_per_s``; ``step`` is the epoch), at the end
    ``log_scalars`` with the test metrics (``H/test_rmse``, ...), ``log_image`` per plot, then ``close``.
    An exception from any method is reported once and that logger is dropped; training goes on.
    """

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        """Record numbers at ``step`` (the epoch)."""

    def log_image(self, tag: str, path: Any) -> None:
        """Record a PNG file (``path``: pathlib.Path) under ``tag``, e.g. ``parity/H``."""

    def close(self) -> None:
        """Flush and release; called once at the end of the run (or when it stops early)."""


@dataclass(frozen=True)
class LoggerSpec(PluginSpec):
    """``factory(options, context: LoggerContext) -> RunLogger``: an experiment tracker that receives the
    run's metric stream. A run uses the loggers its config names under ``tracking.loggers``."""


SPEC_TYPES: dict[Kind, type[PluginSpec]] = {"dataset": DatasetSpec, "conv": ConvSpec, "head": HeadSpec,
                                            "logger": LoggerSpec}
HOOKS: dict[Kind, str] = {"dataset": "register_datasets", "conv": "register_convs", "head": "register_heads",
                          "logger": "register_loggers"}


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

    def logger(self, name: str) -> LoggerSpec:
        return self.get("logger", name)  # type: ignore[return-value]

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
        if isinstance(spec, ConvSpec) and spec.problems():
            raise PluginError(f"conv {spec.name!r}: " + "; ".join(spec.problems()))
        key = (kind, spec.name)
        owner = registry.owners.get(key)
        if owner == dist.name:
            raise PluginError(f"{kind} {spec.name!r} is registered twice by this distribution; the second is refused")
        if owner is not None:
            registry.conflicts.setdefault(key, [owner])
            registry.conflicts[key].append(dist.name)
            return
        registry.owners[key] = dist.name
        registry.specs[kind][spec.name] = spec
        dist.provides[kind].append(spec.name)

    return register


def _register_module(manager: pluggy.PluginManager, ep: md.EntryPoint, plugin_name: str) -> str | None:
    """Load and register one entry point's module; why it cannot be used, or None."""
    try:
        module = ep.load()
    except Exception as exc:  # noqa: BLE001  (any failure in third-party code marks it broken)
        return f"entry point {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}"
    try:
        manager.register(module, name=plugin_name)
        manager.check_pending()  # hookimpls without a hookspec: misspelled hook names
    except pluggy.PluginValidationError as exc:
        if manager.is_registered(module):
            manager.unregister(module)
        return f"{ep.value}: {exc}"
    except ValueError as exc:  # the same module under two entry points
        return f"{ep.value}: {exc}"
    if not manager.get_hookcallers(module):
        unmarked = sorted(n for n in HOOKS.values() if callable(getattr(module, n, None)))
        hint = f" ({', '.join(unmarked)} lacks @hydradgl.hookimpl)" if unmarked else ""
        manager.unregister(module)
        return f"{ep.value} implements no hydradgl hook{hint}"
    return None


def load_registry(entry_points: Iterable[md.EntryPoint] | None = None) -> Registry:
    """Register every plugin module of the ``hydradgl`` group with pluggy and collect what each registers."""
    if entry_points is None:
        entry_points = md.entry_points(group=ENTRY_POINT_GROUP)
    manager = pluggy.PluginManager(ENTRY_POINT_GROUP)
    manager.add_hookspecs(hookspecs)
    registry = Registry()
    dist_of: dict[str, Distribution] = {}
    for ep in sorted(entry_points, key=lambda e: e.name):
        dist_name, dist_version = _distribution_of(ep)
        dist = registry.distributions.setdefault(
            dist_name, Distribution(dist_name, dist_version, builtin=dist_name == BUILTIN_DISTRIBUTION)
        )
        plugin_name = f"{dist_name}:{ep.name}"
        error = _register_module(manager, ep, plugin_name)
        if error:
            dist.errors.append(error)
        else:
            dist_of[plugin_name] = dist
    for kind in KINDS:
        caller = getattr(manager.hook, HOOKS[kind])
        for impl in sorted(caller.get_hookimpls(), key=lambda i: i.plugin_name):
            dist = dist_of[impl.plugin_name]
            try:  # one implementation at a time: a raising hook breaks only its own distribution
                impl.function(register=_make_register(registry, dist, kind))
            except Exception as exc:  # noqa: BLE001
                dist.errors.append(f"{HOOKS[kind]} of {impl.plugin_name} raised {type(exc).__name__}: {exc}")
    return registry


_cached: Registry | None = None


def get_registry(refresh: bool = False) -> Registry:
    """The process-wide registry, loaded on first use."""
    global _cached
    if _cached is None or refresh:
        _cached = load_registry()
    return _cached
