"""Using a finished run: load its model and evaluate it (prediction: :mod:`hydradgl.api`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hydradgl.config import RunConfig
from hydradgl.data.graphset import GraphSet
from hydradgl.data.normalize import Normalizer
from hydradgl.data.pipeline import prepare_data
from hydradgl.data.records import DatasetInfo
from hydradgl.errors import TrainingError
from hydradgl.model.assembler import HydraModel, build_model
from hydradgl.plugins import Registry, get_registry
from hydradgl.train.checkpoint import check_plugins, load_checkpoint
from hydradgl.train.runtime import Runtime, resolve_device
from hydradgl.train.trainer import evaluate


@dataclass
class SavedRun:
    cfg: RunConfig
    info: DatasetInfo
    model: HydraModel
    device: torch.device


def load_run(run_dir: Path, registry: Registry | None = None, device: str = "cpu") -> SavedRun:
    """The best (else last) model of a run directory, in eval mode."""
    registry = registry or get_registry()
    run_dir = Path(run_dir)
    path = run_dir / "best.pt" if (run_dir / "best.pt").exists() else run_dir / "last.pt"
    if not path.exists():
        raise TrainingError(f"{run_dir}: no best.pt or last.pt: not a hydradgl run directory")
    state = load_checkpoint(path)
    check_plugins(state.get("plugins", {}), registry, path)
    cfg = RunConfig.model_validate(state["config"])
    info = DatasetInfo.model_validate(state["info"])
    model = build_model(cfg, info, registry)
    model.load_state_dict(state["model"])
    target = resolve_device(device)
    return SavedRun(cfg, info, model.to(target).eval(), target)


def evaluate_run(run: SavedRun, cfg: RunConfig | None = None, registry: Registry | None = None) -> dict[str, dict[str, float]]:
    """Test-split metrics of a saved run, on its own data set or on the one ``cfg`` names."""
    data = prepare_data(cfg or run.cfg, registry)
    normalizer = Normalizer.from_info(run.info)
    if cfg is not None:  # another data set: normalize it with the run's statistics
        test = normalizer.apply(_physical(data.test, Normalizer.from_info(data.info)))
    else:
        test = data.test
    metrics, _ = evaluate(run.model, run.cfg, test, normalizer, Runtime(0, 1, 0, run.device))
    return metrics


def _physical(graphs: GraphSet, normalizer: Normalizer) -> GraphSet:
    def back(name: str, v: np.ndarray) -> np.ndarray:
        return (v * normalizer.span[name] + normalizer.lo[name]).astype(np.float32)
    return graphs.with_targets({k: back(k, v) for k, v in graphs.graph_targets.items()},
                               {k: back(k, v) for k, v in graphs.node_targets.items()})
