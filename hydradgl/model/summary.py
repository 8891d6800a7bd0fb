"""Parameter counts per block of a model (embedding, each conv with its norm, each head)."""

from __future__ import annotations

from torch import nn

from hydradgl.model.assembler import HydraModel


def count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def parameter_blocks(model: HydraModel) -> list[tuple[str, int]]:
    rows = [("embedding", count(model.embedding) + count(model.input_proj))]
    for i, conv in enumerate(model.convs):
        rows.append((f"conv {i + 1} ({type(conv).__name__})", count(conv)))
    rows += [(f"head {name} ({model.head_levels[name]})", count(head)) for name, head in model.heads.items()]
    return rows
