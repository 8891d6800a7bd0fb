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
    of its own.
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


def describe_heads(cfg: RunConfig, info: DatasetInfo, registry: Registry) -> list[HeadDescription]:
    """The configured heads checked against the dataset's targets and the head plugins' levels, in the
    config's order, then the forces of potential heads (derived heads)."""
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
        out.append(HeadDescription(name=head.name, target=head.target_name, level=target.level, kind=spec.name,
                                   loss=head.loss, weight=head.alpha, dim=target.dim, unit=target.unit))
        if spec.energy:
            options = cast(_ForceOptions, parse_options(spec.options, head.options, f"heads[{i}].options",
                                                         plugin=spec.name))
            if target.dim != 1:
                raise ConfigError(f"heads[{i}] ({head.name!r}): a {spec.name} head predicts a total energy, but "
                                  f"target {head.target_name!r} has {target.dim} components")
            if options.forces is not None:
                derived.append(_forces_description(i, head.name, head.loss, options.forces, options.force_weight,
                                                   info))
    names = [d.name for d in out]
    for d in derived:
        if d.name in names:
            raise ConfigError(f"heads: {d.forces_of!r}'s forces are reported as {d.name!r}, which another head is "
                              f"named too; rename that head or predict its target with the potential")
        names.append(d.name)
    return out + derived


class _ForceOptions(Protocol):
    """What the options of an energy head hold besides its own (see :class:`~hydradgl.plugins.HeadSpec`)."""

    forces: str | None  # the dataset's force target
    force_weight: float  # its loss weight


def _forces_description(i: int, energy_head: str, loss: str, forces: str, weight: float,
                        info: DatasetInfo) -> HeadDescription:
    """The derived head of a potential's forces (``forces``: the dataset's force target)."""
    target = info.targets.get(forces)
    if target is None or target.level != "node" or target.dim != 3:
        found = ("is not in the dataset" if target is None
                 else f"is a {target.level}-level target with {target.dim} component(s)")
        vectors = [n for n, t in info.targets.items() if t.level == "node" and t.dim == 3]
        raise ConfigError(f"heads[{i}].options.forces: {forces!r} {found}; it must name a 3-component "
                          f"node target (here: {', '.join(vectors) or 'none'})")
    return HeadDescription(name=forces, target=forces, level="node", kind="forces", loss=loss,
                           weight=weight, dim=3, unit=target.unit, forces_of=energy_head)
