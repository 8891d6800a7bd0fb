"""What a dataset plugin returns: structures with their targets, before any graph is built."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from hydradgl.config import GraphConfig

Level = Literal["graph", "node"]


class TargetInfo(BaseModel):
    """One predictable property of a dataset (e.g. ``H``: mixing enthalpy, graph level, Ry).

    ``extensive`` (graph targets): True when the value grows with the number of atoms (total energy:
    a sum readout fits), False when it does not (energy per atom: a mean readout fits), None if unknown.
    ``partial``: some structures lack the target (a reader's masked frames, e.g. forces absent from a few
    DFT files): theirs is stored as NaN, which the loss, metrics, statistics and baselines skip; a NaN in
    a target that is not partial is an error.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: Level
    dim: int = 1
    unit: str = ""
    description: str = ""
    extensive: bool | None = None
    partial: bool = False

    @property
    def readout(self) -> str | None:
        """The graph-head readout that fits this target (``sum``/``mean``), None when unknown or node level."""
        if self.level != "graph" or self.extensive is None:
            return None
        return "sum" if self.extensive else "mean"


@dataclass
class Structure:
    """One atomic configuration.

    ``targets[name]`` has shape ``(dim,)`` for graph-level targets and ``(n_atoms, dim)`` for node-level
    ones; ``node_inputs[name]`` has shape ``(n_atoms, dim)`` (extra per-atom input features beyond the
    element). ``source`` names the file (and line, if useful) the structure came from, for messages.
    """

    numbers: np.ndarray  # (n,) int proton numbers
    positions: np.ndarray  # (n, 3) float64 Cartesian, Angstrom
    cell: np.ndarray | None = None  # (3, 3) lattice vectors as rows, Angstrom
    pbc: tuple[bool, bool, bool] = (False, False, False)
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    node_inputs: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""

    @property
    def n_atoms(self) -> int:
        return int(len(self.numbers))


@dataclass
class RawDataset:
    """A dataset plugin's output.

    ``fingerprint`` identifies the raw inputs (file contents, generator parameters) and keys the
    processed cache: two calls with the same fingerprint must return the same structures.
    ``log`` carries notes for the run log (e.g. which reference energies were used).
    ``structures`` may be any iterable, e.g. a generator reading files one by one: the cache build
    consumes it once, in chunks, so a plugin for a very large set need not hold every structure in
    memory (``log`` and ``skipped`` are read after it is consumed).
    """

    structures: Iterable[Structure]
    targets: dict[str, TargetInfo]
    node_inputs: dict[str, int] = field(default_factory=dict)  # name -> dim
    fingerprint: str = ""
    log: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # files skipped as bad, with the reason


class DatasetInfo(BaseModel):
    """What a model needs to know about its data (its data contract); saved with every checkpoint.

    evaluate and predict use these, never the settings of the data they are given: ``species`` lists the proton
    numbers present (``Batch.species`` indexes into it); ``target_min``/``target_max`` are the min-max normalization
    statistics fitted on the training split, per target and component; ``degree_histogram[k]`` counts training nodes
    with in-degree k; ``graph`` holds the graph settings (radius, periodic images, neighbour cap) the model was
    trained with (None only in checkpoints written before it existed: the run's config has them).
    """

    model_config = ConfigDict(extra="forbid")

    species: list[int]
    node_inputs: dict[str, int] = {}
    targets: dict[str, TargetInfo]
    target_min: dict[str, list[float]] = {}
    target_max: dict[str, list[float]] = {}
    degree_histogram: list[int] = []
    cutoff: float = 7.0
    graph: GraphConfig | None = None
