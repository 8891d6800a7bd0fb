"""Using a finished run: load its model, evaluate it, its predictions per test structure
(prediction of new structures: :mod:`hydradgl.api`).

The run's saved ``DatasetInfo`` is the model's data contract: every data set given to evaluate or
predict is read with its species table, graph settings and normalization, never its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from hydradgl.config import RunConfig
from hydradgl.data.graphset import GraphSet
from hydradgl.data.loader import BatchLoader
from hydradgl.data.normalize import Normalizer
from hydradgl.data.pipeline import prepare_data
from hydradgl.data.records import DatasetInfo
from hydradgl.data.splitfile import SPLIT_FILE
from hydradgl.errors import DataError, TrainingError
from hydradgl.model.assembler import HydraModel, build_model, upgrade_state_dict
from hydradgl.model.heads import HeadDescription
from hydradgl.plugins import Registry, get_registry
from hydradgl.train.checkpoint import check_plugins, load_checkpoint
from hydradgl.train.metrics import with_units
from hydradgl.train.runtime import Runtime, resolve_device, resolve_kernels
from hydradgl.train.trainer import evaluate

Checkpoint = Literal["best", "last"]


@dataclass
class SavedRun:
    cfg: RunConfig
    info: DatasetInfo
    model: HydraModel
    device: torch.device
    checkpoint: Path | None = None
    split: Path | None = None  # the run's split.npz, if it saved one


def load_run(run_dir: Path, registry: Registry | None = None, device: str = "cpu",
             checkpoint: Checkpoint = "best") -> SavedRun:
    """A run directory's model in eval mode: ``best.pt`` (else ``last.pt``), or ``last.pt`` when asked."""
    registry = registry or get_registry()
    run_dir = Path(run_dir)
    path = run_dir / "last.pt"
    if checkpoint == "best" and (run_dir / "best.pt").exists():
        path = run_dir / "best.pt"
    if not path.exists():
        wanted = "last.pt" if checkpoint == "last" else "best.pt or last.pt"
        raise TrainingError(f"{run_dir}: no {wanted}: not a hydradgl run directory")
    state = load_checkpoint(path)
    check_plugins(state.get("plugins", {}), registry, path)
    cfg = RunConfig.model_validate(state["config"])
    info = DatasetInfo.model_validate(state["info"])
    if info.graph is None:  # checkpoints from before the contract held the graph settings
        info = info.model_copy(update={"graph": cfg.graph})
    model = build_model(cfg, info, registry)
    try:
        model.load_state_dict(upgrade_state_dict(state["model"]))
    except RuntimeError as exc:  # missing, unexpected or mis-shaped weights
        raise TrainingError(f"{path}: its weights do not fit the model its config builds with this hydradgl and "
                            f"these plugins ({_first_problem(exc)}); was it written by another version of a "
                            "plugin?") from None
    target = resolve_device(device)
    model.kernels = resolve_kernels("auto", target, model.plugin_kernels)  # both paths compute the same function
    split = run_dir / SPLIT_FILE
    return SavedRun(cfg, info, model.to(target).eval(), target, path, split if split.exists() else None)


def _first_problem(exc: RuntimeError) -> str:
    """The first line of torch's state-dict report after its header, shortened."""
    lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
    first = lines[0] if lines else str(exc)
    return first if len(first) <= 200 else first[:200] + "..."


@dataclass
class Evaluation:
    """Test-split metrics per head (with unit and level), heads left out and why, per-structure rows."""

    metrics: dict[str, dict]
    skipped: dict[str, str] = field(default_factory=dict)
    structures: list[dict] = field(default_factory=list)


def evaluate_saved(run: SavedRun, cfg: RunConfig | None = None, registry: Registry | None = None,
                   per_structure: bool = False) -> Evaluation:
    """Evaluate on the test split of the run's data, or of the data set ``cfg`` names (read by the
    model's contract). Heads whose target that data lacks are left out, named in ``skipped``."""
    data_cfg = run.cfg if cfg is None else cfg.model_copy(update={"heads": run.cfg.heads})
    # the run's own data is split as it was in training (its split.npz); other data by its config
    data = prepare_data(data_cfg, registry, contract=run.info, split=run.split if cfg is None else None)
    test = data.test
    present = {**test.graph_targets, **test.node_targets}
    heads = [h for h in run.model.head_descriptions if h.target in present]
    skipped = {h.name: f"dataset {data_cfg.dataset.name!r} has no target {h.target!r}"
               for h in run.model.head_descriptions if h.target not in present}
    if not heads:
        raise DataError(f"dataset {data_cfg.dataset.name!r} has none of the model's targets "
                        f"({', '.join(h.target for h in run.model.head_descriptions)}): nothing to evaluate")
    if len(test) == 0:
        raise DataError(f"dataset {data_cfg.dataset.name!r} has an empty test split: nothing to evaluate")
    normalizer = Normalizer.from_info(run.info)
    metrics, _ = evaluate(run.model, run.cfg, test, normalizer, Runtime(0, 1, 0, run.device), heads=heads)
    rows = _structure_errors(run, test.materialize(), heads, normalizer) if per_structure else []
    return Evaluation(with_units(metrics, heads), skipped, rows)


def evaluate_run(run: SavedRun, cfg: RunConfig | None = None, registry: Registry | None = None) -> dict[str, dict]:
    """Test-split metrics per head of a saved run (see :func:`evaluate_saved`)."""
    return evaluate_saved(run, cfg, registry).metrics


@torch.no_grad()
def _physical_batches(
        run: SavedRun, graphs: GraphSet) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
    """Per batch (in order): positions of its graphs in ``graphs``, atoms per graph, and every head's
    predictions in physical units."""
    normalizer = Normalizer.from_info(run.info)
    start = 0
    for batch in BatchLoader(graphs, run.cfg.training.batch_size):
        preds = run.model(batch.to(run.device))
        phys = {h.name: normalizer.denormalize(h.target, preds[h.name]).cpu().numpy()
                for h in run.model.head_descriptions}
        yield np.arange(start, start + batch.num_graphs), batch.graph.batch_num_nodes.cpu().numpy(), phys
        start += batch.num_graphs


def _structure_errors(run: SavedRun, graphs: GraphSet, heads: list[HeadDescription],
                      normalizer: Normalizer) -> list[dict]:
    """One row per test structure: graph heads' true and predicted values, node heads' RMSE over atoms."""
    truth = {h.name: normalizer.denormalize_array(h.target, (graphs.graph_targets if h.level == "graph"
                                                             else graphs.node_targets)[h.target]) for h in heads}
    rows = []
    for ids, counts, phys in _physical_batches(run, graphs):
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        for g, gid in enumerate(ids):
            row = {"id": int(graphs.ids[gid]), "source": graphs.sources[gid], "n_atoms": int(counts[g])}
            for h in heads:
                if h.level == "graph":
                    row.update(_columns(f"{h.name}_true", truth[h.name][gid]))
                    row.update(_columns(f"{h.name}_pred", phys[h.name][g]))
                else:
                    a, b = graphs.node_ptr[gid], graphs.node_ptr[gid + 1]
                    diff = phys[h.name][starts[g]:starts[g] + counts[g]] - truth[h.name][a:b]
                    row[f"{h.name}_rmse"] = float(np.sqrt(np.mean(diff ** 2)))
            rows.append(row)
    return rows


def _columns(head: str, values: np.ndarray) -> dict[str, float]:
    values = np.atleast_1d(values)
    if len(values) == 1:
        return {head: float(values[0])}
    return {f"{head}[{i}]": float(v) for i, v in enumerate(values)}
