"""Trained models from Python: ``hydradgl.load(run_dir)`` and ``model.predict(structures)``.

A loaded model is one run or an ensemble of runs (see :mod:`hydradgl.train.rundir`); predictions
come back in physical units as pandas DataFrames, with a ``<head>_std`` column per head for ensembles.
Structures go through the same graph construction as the training data (the run's graph settings and
element list), in batches bounded by a graph count and an edge count.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ase import Atoms

from hydradgl.allocator import keep_freed_memory
from hydradgl.config import RunConfig
from hydradgl.data.batch import Batch
from hydradgl.data.graphset import GraphSet, GraphView
from hydradgl.data.loader import collate
from hydradgl.data.normalize import Normalizer
from hydradgl.data.packing import assign_species, pack
from hydradgl.data.pipeline import prepare_data
from hydradgl.data.prediction import graphs_for_prediction
from hydradgl.data.records import DatasetInfo, Structure
from hydradgl.errors import DataError, TrainingError
from hydradgl.plugins import Registry, get_registry
from hydradgl.train.plots import uncertainty_plots
from hydradgl.train.rundir import member_dirs
from hydradgl.train.saved import SavedRun, load_run
from hydradgl.train.uncertainty import uncertainty_metrics

StructureLike = Atoms | Structure | str | os.PathLike
#: Default cap on the edges of one batch (bounds the activations of one forward pass).
MAX_EDGES = 2_000_000
#: Default structures per batch.
BATCH_SIZE = 256


@dataclass(frozen=True)
class Predictions:
    """What :meth:`TrainedModel.predict` returns, in physical units (``model.units``).

    ``structures``: one row per input structure, in input order: ``structure`` (its index), ``source``
    (file and frame, or ``atoms #i``), ``n_atoms``, then one column per graph-level head. ``atoms``: one
    row per atom: ``structure``, ``source``, ``atom`` (index within its structure), ``Z``, then one column
    per node-level head. A head with several components gets columns ``head[0]``, ``head[1]``...; an
    ensemble adds ``<column>_std`` (the members' standard deviation) after each mean column. Derived
    heads are predicted too: a potential's forces per atom (named after the force target, e.g.
    ``forces[0]``..``forces[2]``; autograd computes them also under ``torch.no_grad``), its stress per
    structure where the model has a stress head.
    """

    structures: pd.DataFrame
    atoms: pd.DataFrame


def structure_from_atoms(atoms: Atoms, source: str) -> Structure:
    """An ASE Atoms object as a Structure (its own cell and pbc; no cell if it has none)."""
    cell = atoms.cell.array.copy() if atoms.cell.array.any(axis=1).all() else None  # 3 lattice vectors
    px, py, pz = (bool(p) for p in atoms.pbc)
    return Structure(numbers=atoms.numbers.astype(np.int64), positions=np.array(atoms.positions, dtype=float),
                     cell=cell, pbc=(px, py, pz) if cell is not None else (False, False, False), source=source)


def _structure(item: object, i: int) -> Structure:
    if isinstance(item, Atoms):
        return structure_from_atoms(item, f"atoms #{i}")
    if isinstance(item, Structure):
        return item if item.source else replace(item, source=f"structure #{i}")
    raise DataError(f"input #{i}: expected an ase.Atoms, a hydradgl Structure or a file path, "
                    f"got {type(item).__name__}")


def _check_compatible(runs: list[SavedRun], dirs: list[Path]) -> None:
    """Ensemble members must agree on everything a prediction depends on besides weights."""
    first = runs[0]
    for run, path in zip(runs[1:], dirs[1:]):
        for what, a, b in (("heads", first.model.head_targets, run.model.head_targets),
                           ("elements", first.info.species, run.info.species),
                           ("graph settings", first.cfg.graph, run.cfg.graph),
                           ("targets", first.info.targets, run.info.targets)):
            if a != b:
                raise TrainingError(f"{path}: its {what} differ from those of {dirs[0]} ({b} vs {a}); "
                                    "an ensemble's members must be trained alike")


class TrainedModel:
    """One trained run, or an ensemble of runs, ready to predict.

    Attributes: ``heads`` (names, in training order), ``levels`` (head -> ``graph``/``node``),
    ``units`` (head -> unit string), ``dims`` (head -> components), ``cutoff`` (graph radius, Angstrom),
    ``elements`` (proton numbers the model knows), ``members`` (the loaded runs), ``run_dirs``, ``device``.
    """

    def __init__(self, runs: list[SavedRun], run_dirs: list[Path], registry: Registry | None = None):
        _check_compatible(runs, run_dirs)
        for run in runs:  # inference only: autograd follows positions (forces), never the weights
            run.model.requires_grad_(False)
        self.members, self.run_dirs, self.registry = runs, run_dirs, registry
        first = runs[0]
        self.cfg, self.info, self.device = first.cfg, first.info, first.device
        self.heads = list(first.model.head_targets)
        self.levels = dict(first.model.head_levels)
        self.targets = dict(first.model.head_targets)
        self.units = {h: first.info.targets[t].unit for h, t in self.targets.items()}
        self.dims = {h: first.info.targets[t].dim for h, t in self.targets.items()}
        self.cutoff = float(first.cfg.graph.radius)
        self.elements = list(first.info.species)
        self.normalizers = [Normalizer.from_info(m.info) for m in runs]
        self.dtype = torch.float32

    @property
    def is_ensemble(self) -> bool:
        return len(self.members) > 1

    @property
    def depends_on_distances(self) -> bool:
        """Whether the outputs change continuously with interatomic distances (needed for forces)."""
        return all(m.model.depends_on_distances for m in self.members)

    @property
    def smooth_at_cutoff(self) -> bool:
        """Whether the outputs stay continuous as neighbours cross the cutoff (see HydraModel)."""
        return all(m.model.smooth_at_cutoff for m in self.members)

    @property
    def uses_extrema(self) -> bool:
        """Whether a layer or head reduces by a max or min (see HydraModel.uses_extrema): forces then lose
        the symmetry of symmetric structures."""
        return any(m.model.uses_extrema for m in self.members)

    def to(self, dtype: torch.dtype) -> TrainedModel:
        """Cast every member's weights (e.g. ``torch.float64`` for finite-difference checks); returns self."""
        for m in self.members:
            m.model.to(dtype)
        self.dtype = dtype
        return self

    def __repr__(self) -> str:
        kind = f"ensemble of {len(self.members)}" if self.is_ensemble else "run"
        heads = ", ".join(f"{h} ({self.levels[h]}, {self.units[h] or 'no unit'})" for h in self.heads)
        return f"<hydradgl model: {kind} {self.run_dirs[0]}; heads {heads}; cutoff {self.cutoff} A>"

    # ---- input -----------------------------------------------------------------------------------------

    def graphs(self, inputs: StructureLike | Iterable[StructureLike], skin: float = 0.0) -> GraphSet:
        """Graphs of ASE Atoms / hydradgl Structures, or of LSMS/extxyz files and folders (not both in one
        call), built exactly like the training graphs; elements checked against the model's. ``skin``
        widens the cutoff of in-memory structures (the calculator's reusable neighbour list)."""
        if isinstance(inputs, (Atoms, Structure, str, os.PathLike)):
            inputs = [inputs]
        inputs = list(inputs)
        paths = [Path(p) for p in inputs if isinstance(p, (str, os.PathLike))]
        if paths and len(paths) < len(inputs):
            raise DataError("give either file paths or in-memory structures (ase.Atoms) in one call, not both")
        if paths:
            return graphs_for_prediction(paths, self.info, self.cfg.dataset, self.registry)
        if not inputs:
            raise DataError("no structures to predict")
        if self.info.node_inputs:
            raise DataError(f"this model needs extra per-atom inputs ({', '.join(self.info.node_inputs)}); "
                            "predict reads only positions and elements")
        graph = self.info.graph
        assert graph is not None  # load_run fills in the graph settings of older checkpoints
        if skin:
            graph = graph.model_copy(update={"radius": graph.radius + skin})
        return assign_species(pack([_structure(item, i) for i, item in enumerate(inputs)], {}, {}, graph),
                              self.elements)

    def batches(self, graphs: GraphSet | GraphView, batch_size: int,
                max_edges: int = MAX_EDGES) -> Iterator[tuple[np.ndarray, Batch]]:
        """Consecutive (indices, Batch) of at most ``batch_size`` graphs and ``max_edges`` edges."""
        edges = graphs.num_edges
        too_big = np.flatnonzero(edges > max_edges)
        if too_big.size:
            g = int(too_big[0])
            raise DataError(f"{graphs.sources[g]}: {int(graphs.num_nodes[g])} atoms with {int(edges[g])} edges "
                            f"within the {self.cutoff} A cutoff exceed one batch's limit of {max_edges} edges; "
                            "raise max_edges if memory allows, or split the structure")
        start, n = 0, len(graphs)
        while start < n:
            stop = min(start + batch_size, n)
            total = np.cumsum(edges[start:stop])
            stop = start + max(1, int(np.searchsorted(total, max_edges, side="right")))
            idx = np.arange(start, stop)
            yield idx, collate(graphs, idx)
            start = stop

    # ---- output ----------------------------------------------------------------------------------------

    def outputs(self, batch: Batch | Sequence[Batch], heads: Collection[str] | None = None) -> dict[str, torch.Tensor]:
        """Physical predictions of every member: head -> (members, rows, dim), for every head or those in
        ``heads``; differentiable. A sequence of batches, one per member, gives each member its own copy
        of the inputs (the calculator's per-member positions, for per-member forces)."""
        batches = [batch] * len(self.members) if isinstance(batch, Batch) else list(batch)
        if len(batches) != len(self.members):
            raise ValueError(f"{len(batches)} batches for {len(self.members)} ensemble members")
        per_member: dict[str, list[torch.Tensor]] = {h: [] for h in self.heads if heads is None or h in heads}
        moved: dict[int, Batch] = {}  # members given the same batch share one copy on the device
        for m, normalizer, b in zip(self.members, self.normalizers, batches):
            if id(b) not in moved:
                moved[id(b)] = _as_dtype(b.to(self.device), self.dtype)
            for h, p in m.model(moved[id(b)], heads).items():
                per_member[h].append(normalizer.denormalize(self.targets[h], p))
        return {h: torch.stack(v) for h, v in per_member.items()}

    @torch.no_grad()
    def predict_arrays(self, graphs: GraphSet | GraphView, batch_size: int = BATCH_SIZE,
                       max_edges: int = MAX_EDGES) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """head -> (mean, std or None): (G, dim) for graph heads, (N, dim) for node heads, physical units."""
        chunks: dict[str, list[np.ndarray]] = {h: [] for h in self.heads}
        for idx, batch in self.batches(graphs, batch_size, max_edges):
            try:
                outputs = self.outputs(batch)
            except torch.OutOfMemoryError:
                raise DataError(f"out of memory predicting {graphs.sources[idx[0]]} .. {graphs.sources[idx[-1]]} "
                                f"({int(graphs.num_edges[idx].sum())} edges); pass a smaller batch_size or "
                                "max_edges") from None
            for h, values in outputs.items():
                chunks[h].append(values.cpu().numpy())
        result = {}
        for h, parts in chunks.items():
            stacked = np.concatenate(parts, axis=1).astype(np.float64)  # (members, rows, dim)
            std = stacked.std(axis=0, ddof=1) if self.is_ensemble else None
            result[h] = (stacked.mean(axis=0), std)
        return result

    def predict(self, structures: StructureLike | Iterable[StructureLike], batch_size: int = BATCH_SIZE,
                max_edges: int = MAX_EDGES) -> Predictions:
        """Per-structure and per-atom predictions in physical units (see :class:`Predictions`)."""
        graphs = self.graphs(structures)
        arrays = self.predict_arrays(graphs, batch_size, max_edges)
        counts = graphs.num_nodes
        sources = np.asarray(graphs.sources, dtype=object)
        frame = {"structure": np.arange(len(graphs)), "source": sources, "n_atoms": counts}
        atoms = {"structure": np.repeat(np.arange(len(graphs)), counts), "source": np.repeat(sources, counts),
                 "atom": np.arange(int(counts.sum())) - np.repeat(graphs.node_ptr[:-1], counts), "Z": graphs.numbers}
        for h in self.heads:
            _add_columns(frame if self.levels[h] == "graph" else atoms, h, *arrays[h])
        return Predictions(pd.DataFrame(frame), pd.DataFrame(atoms))

    def true_mean_std(self, graphs: GraphSet | GraphView,
                      info: DatasetInfo) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """head -> (true, mean, std) in physical units over a normalized GraphSet with targets (``info``'s
        statistics), flattened over rows and components."""
        arrays = self.predict_arrays(graphs)
        normalizer = Normalizer.from_info(info)
        out = {}
        for h in self.heads:
            target = self.targets[h]
            stored = graphs.graph_targets if self.levels[h] == "graph" else graphs.node_targets
            true = stored[target] * normalizer.span[target] + normalizer.lo[target]
            mean, std = arrays[h]
            out[h] = (true.ravel(), mean.ravel(), std.ravel() if std is not None else np.zeros(mean.size))
        return out


def _as_dtype(batch: Batch, dtype: torch.dtype) -> Batch:
    if batch.edge_dist.dtype == dtype:
        return batch
    return replace(batch, node_inputs=batch.node_inputs.to(dtype), edge_dist=batch.edge_dist.to(dtype),
                   edge_vec=batch.edge_vec.to(dtype), cell=None if batch.cell is None else batch.cell.to(dtype))


def _add_columns(frame: dict, head: str, mean: np.ndarray, std: np.ndarray | None) -> None:
    names = [head] if mean.shape[1] == 1 else [f"{head}[{i}]" for i in range(mean.shape[1])]
    for i, name in enumerate(names):
        frame[name] = mean[:, i]
        if std is not None:
            frame[f"{name}_std"] = std[:, i]


def load(path: str | os.PathLike | Sequence[str | os.PathLike], device: str = "cpu",
         registry: Registry | None = None) -> TrainedModel:
    """A trained model from a run directory, an ensemble/experiment directory, or a list of run directories.

    ``device``: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``. Errors name the directory: not a run,
    written by an incompatible hydradgl version, a plugin that is not installed, members that disagree.
    """
    keep_freed_memory()  # inference allocates like training: see hydradgl.allocator
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        raise TrainingError("hydradgl.load: no run directory given")
    dirs = [d for p in paths for d in member_dirs(Path(p))]
    registry = registry or get_registry()
    return TrainedModel([load_run(d, registry, device) for d in dirs], dirs, registry)


def _data_statistics(info) -> tuple:
    """What of a DatasetInfo decides the data a model saw (descriptions and units may be reworded)."""
    return info.species, info.target_min, info.target_max, info.degree_histogram


def evaluate_ensemble(model: TrainedModel, cfg: RunConfig | None = None, registry: Registry | None = None,
                      plots_dir: Path | None = None,
                      log: Callable[[str], None] | None = None) -> dict[str, dict[str, float | str]]:
    """Uncertainty metrics per head on the test split (calibration fitted on validation); optional plots."""
    if len(model.members) < 2:
        raise TrainingError(f"{model.run_dirs[0]}: one run is not an ensemble; uncertainty needs at least 2 members")
    first = model.members[0]
    data = prepare_data(cfg or first.cfg, registry, log)
    if any(_data_statistics(m.info) != _data_statistics(data.info) for m in model.members):
        raise TrainingError(f"{', '.join(map(str, model.run_dirs))}: the members were trained on other data than "
                            "the data set evaluated here (normalization statistics differ)")
    val = model.true_mean_std(data.val, data.info)
    test = model.true_mean_std(data.test, data.info)
    metrics = {h: uncertainty_metrics(val[h], test[h]) for h in model.heads}
    if plots_dir is not None:
        uncertainty_plots({h: (test[h], metrics[h]["calibration"]) for h in model.heads}, model.units, plots_dir)
    return {h: {**metrics[h], "unit": model.units[h]} for h in model.heads}
