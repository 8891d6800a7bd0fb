"""One description per head (name, target, level, loss, weight), shared by the model, the loss, the
metrics, evaluate and predict, so they cannot disagree about what a head predicts."""

from __future__ import annotations

from dataclasses import dataclass

from hydradgl.config import RunConfig
from hydradgl.configio import head_kind
from hydradgl.data.records import DatasetInfo, Level
from hydradgl.errors import ConfigError
from hydradgl.plugins import Registry


@dataclass(frozen=True)
class HeadDescription:
    """What one head predicts and how it is trained.

    ``name`` keys the model's outputs, ``target`` the dataset target it predicts (the name unless the
    config says otherwise), ``kind`` the head plugin; ``loss`` and ``weight`` (the config's ``alpha``)
    form its term of the multi-task loss; ``unit`` is the target's physical unit.
    """

    name: str
    target: str
    level: Level
    kind: str
    loss: str
    weight: float
    dim: int = 1
    unit: str = ""


def describe_heads(cfg: RunConfig, info: DatasetInfo, registry: Registry) -> list[HeadDescription]:
    """The configured heads checked against the dataset's targets and the head plugins' levels."""
    out = []
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
    return out
