"""Using a finished run: load its model, evaluate it, predict new structures in physical units."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hydradgl.config import RunConfig
from hydradgl.atomic import atomic_write_text
from hydradgl.data.loader import BatchLoader
from hydradgl.data.normalize import Normalizer
from hydradgl.data.pipeline import graphs_for_prediction, prepare_data
from hydradgl.data.records import DatasetInfo
from hydradgl.data.splitfile import SPLIT_FILE
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
    split: Path | None = None  # the run's split.npz, if it saved one


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
    split = run_dir / SPLIT_FILE
    return SavedRun(cfg, info, model.to(target).eval(), target, split if split.exists() else None)


def evaluate_run(run: SavedRun, cfg: RunConfig | None = None, registry: Registry | None = None) -> dict[str, dict[str, float]]:
    """Test-split metrics of a saved run, on its own data set (and saved split) or on the one ``cfg`` names."""
    data = prepare_data(cfg or run.cfg, registry, split=run.split if cfg is None else None)
    normalizer = Normalizer.from_info(run.info)
    test = data.test.with_normalizer(normalizer)  # another data set is normalized with the run's statistics
    metrics, _ = evaluate(run.model, run.cfg, test, normalizer, Runtime(0, 1, 0, run.device))
    return metrics


@torch.no_grad()
def predict(run: SavedRun, paths: list[Path], registry: Registry | None = None) -> tuple[list[dict], list[dict]]:
    """Per-structure rows (graph heads) and per-atom rows (node heads), physical units."""
    graphs = graphs_for_prediction(paths, run.info, run.cfg, registry)
    normalizer = Normalizer.from_info(run.info)
    structures: list[dict] = []
    atoms: list[dict] = []
    for batch in BatchLoader(graphs, run.cfg.training.batch_size):
        preds = run.model(batch.to(run.device))
        phys = {h: normalizer.denormalize(run.model.head_targets[h], p).cpu().numpy() for h, p in preds.items()}
        counts = batch.graph.batch_num_nodes.cpu().numpy()
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        for g, gid in enumerate(batch.graph_ids.cpu().numpy()):
            row = {"structure": int(gid), "source": graphs.sources[gid], "n_atoms": int(counts[g])}
            for head, values in phys.items():
                if run.model.head_levels[head] == "graph":
                    row.update(_columns(head, values[g]))
            structures.append(row)
            for a in range(counts[g]):
                node = starts[g] + a
                atom_row = {"structure": int(gid), "source": graphs.sources[gid], "atom": a,
                            "Z": int(graphs.numbers[graphs.node_ptr[gid] + a])}
                for head, values in phys.items():
                    if run.model.head_levels[head] == "node":
                        atom_row.update(_columns(head, values[node]))
                atoms.append(atom_row)
    return structures, atoms


def _columns(head: str, values: np.ndarray) -> dict[str, float]:
    values = np.atleast_1d(values)
    if len(values) == 1:
        return {head: float(values[0])}
    return {f"{head}[{i}]": float(v) for i, v in enumerate(values)}


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows as CSV, written atomically (nothing is written for no rows)."""
    if not rows:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
