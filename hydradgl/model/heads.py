"""One description per head (name, target, level, loss, weight), shared by the model, the loss, the
metrics, evaluate and predict, so they cannot disagree about what a head predicts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, cast

from hydradgl.config import RunConfig
from hydradgl.configio import head_kind, parse_options
from hydradgl.data.records import DatasetInfo, Level
from hydradgl.errors import ConfigError
from hydradgl.plugins import Registry


@dataclass(frozen=True)
class HeadDescription:
    """What one head predicts and how it is trained.

    ``name`` keys the model's outputs, ``target`` the dataset target it predicts (the name unless the
    config says otherwise), ``kind`` the head plugin; ``loss`` and ``weight`` (the config's ``alpha``)
    form its term of the multi-task loss; ``unit`` is the target's physical unit. ``forces_of`` names
    the potential head whose energy's derivative this (derived, node-level) head is: it has no module
    of its own; ``stress_of`` likewise for a derived graph-level stress head (6 Voigt components, the
    energy's derivative with respect to strain over the volume). ``energy`` marks a potential head (its
    plugin's ``HeadSpec.energy``): a total energy, whose metrics are also reported per atom.
    """

    name: str
    target: str
    level: Level
    kind: str
    loss: str
    weight: float
    dim: int = 1
    unit: str = ""
    forces_of: str | None = None
    stress_of: str | None = None
    energy: bool = False

    @property
    def derivative_of(self) -> str | None:
        """The potential head this derived head (forces or stress) differentiates; None for a head with a
        module of its own."""
        return self.forces_of or self.stress_of


def describe_heads(cfg: RunConfig, info: DatasetInfo, registry: Registry) -> list[HeadDescription]:
    """The configured heads checked against the dataset's targets and the head plugins' levels, in the
    config's order, then the forces and stress of potential heads (derived heads)."""
    out, derived = [], []
    for i, head in enumerate(cfg.heads):
        target = info.targets.get(head.target_name)
        if target is None:
            raise ConfigError(f"heads[{i}] ({head.name!r}): target {head.target_name!r} is not in the dataset; "
                              f"available targets: {', '.join(sorted(info.targets))}")
        spec = registry.head(head_kind(head, target.level))
        if spec.level != target.level:
            raise ConfigError(f"heads[{i}].kind: {spec.name!r} is a {spec.level}-level head but target "
                              f"{head.target_name!r} is {target.level}-level")
        equivariant = registry.conv(cfg.model.conv).equivariant
        if spec.reads_vectors and not equivariant:
            raise ConfigError(
                f"heads[{i}].kind: {spec.name!r} reads the trunk's vector features, but the trunk "
                f"({cfg.model.conv!r}) is invariant and has none; use an equivariant conv (`hydradgl list-plugins` "
                "marks them)")
        if target.level == "node" and target.dim == 3 and not spec.reads_vectors:
            raise ConfigError(
                f"heads[{i}] ({head.name!r}): target {head.target_name!r} is a 3-component vector per atom, but "
                f"{spec.name!r} predicts it from invariant features, which do not change when the structure "
                "rotates, so the vector would not rotate with it. Give it a head that reads vector features "
                "(kind: vector-head) on an equivariant trunk"
                + ("" if equivariant else f" (not {cfg.model.conv!r})")
                + "; for forces, give the energy target a head of kind: potential with options.forces: "
                f"{head.target_name} (forces -dE/dr, which do rotate with it)")
        out.append(HeadDescription(name=head.name, target=head.target_name, level=target.level, kind=spec.name,
                                   loss=head.loss, weight=head.alpha, dim=target.dim, unit=target.unit,
                                   energy=spec.energy))
        if spec.energy:
            options = cast(_EnergyOptions, parse_options(spec.options, head.options, f"heads[{i}].options",
                                                          plugin=spec.name))
            if target.dim != 1:
                raise ConfigError(f"heads[{i}] ({head.name!r}): a {spec.name} head predicts a total energy, but "
                                  f"target {head.target_name!r} has {target.dim} components")
            # an energy head's plugin may offer no stress: its options then lack the two fields
            asked = (("forces", options.forces, options.force_weight),
                     ("stress", getattr(options, "stress", None), getattr(options, "stress_weight", 1.0)))
            derived += [_derived_description(i, head.name, head.loss, kind, name, weight, cfg, info)
                        for kind, name, weight in asked if name is not None]
    names = [d.name for d in out]
    for d in derived:
        if d.name in names:
            raise ConfigError(f"heads: {d.derivative_of!r}'s {d.kind} {'are' if d.kind == 'forces' else 'is'} "
                              f"reported as {d.name!r}, which another head is named too; rename that head or "
                              "predict its target with the potential")
        names.append(d.name)
    return out + derived


class _EnergyOptions(Protocol):
    """What the options of an energy head hold besides its own (see :class:`~hydradgl.plugins.HeadSpec`);
    ``stress`` and ``stress_weight`` are optional (read with a default)."""

    forces: str | None  # the dataset's force target
    force_weight: float  # its loss weight


#: Each kind of derived head: the level and components of its dataset target, and how to say so.
_DERIVED = {"forces": ("node", 3, "a 3-component node target"),
            "stress": ("graph", 6, "a 6-component graph target (Voigt xx, yy, zz, yz, xz, xy)")}


def _derived_description(i: int, energy_head: str, loss: str, kind: str, name: str, weight: float,
                         cfg: RunConfig, info: DatasetInfo) -> HeadDescription:
    """The derived head of a potential's forces or stress (``kind``), fitted to the dataset's target ``name``
    (option ``heads[i].options.<kind>``)."""
    level, dim, what = _DERIVED[kind]
    target = info.targets.get(name)
    if target is None or target.level != level or target.dim != dim:
        found = ("is not in the dataset" if target is None
                 else f"is a {target.level}-level target with {target.dim} component(s)")
        fitting = [n for n, t in info.targets.items() if t.level == level and t.dim == dim]
        raise ConfigError(f"heads[{i}].options.{kind}: {name!r} {found}; it must name {what} "
                          f"(here: {', '.join(fitting) or 'none'})")
    if kind == "stress" and not cfg.graph.periodic:
        raise ConfigError(f"heads[{i}].options.stress: the stress needs periodic cells, but graph.periodic is false "
                          "(the graphs have no periodic images, the batches no cell); set graph.periodic: true")
    return HeadDescription(name=name, target=name, level=target.level, kind=kind, loss=loss, weight=weight, dim=dim,
                           unit=target.unit, forces_of=energy_head if kind == "forces" else None,
                           stress_of=energy_head if kind == "stress" else None)
