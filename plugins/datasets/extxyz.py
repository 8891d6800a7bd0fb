"""extxyz / ASE reader plugin: structures with per-structure info keys and per-atom arrays as targets."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import Field

from hydradgl import hookimpl
from hydradgl.data.files import FileSetOptions, TargetSource, fingerprint_files, list_files, skip_summary
from hydradgl.data.records import RawDataset, Structure
from hydradgl.errors import DataError
from hydradgl.plugins import DatasetContext, DatasetSpec


class KeyTarget(TargetSource):
    """A target read from ``atoms.info[key]`` (graph level) or ``atoms.arrays[key]`` (node level)."""

    key: str = Field(description="The `info` key (graph level) or per-atom array (node level); keys ASE keeps in "
                                 "a calculator (energy, forces, ...) are found there too.")


class ExtxyzOptions(FileSetOptions):
    """extxyz files (any number of frames each)."""

    pattern: str = Field("*.xyz", description="Glob of files inside a folder.")
    targets: dict[str, KeyTarget] = Field(
        default_factory=lambda: {"energy": KeyTarget(key="energy", level="graph", unit="eV")},
        description="Target name -> key, level, unit, description, extensive.")
    node_inputs: list[str] = Field(default_factory=list, description="Per-atom arrays used as extra inputs.")


def read_frames(path: Path):
    """Every frame of an extxyz file as ASE Atoms; DataError names the file when ASE cannot parse it."""
    from ase.io import read

    try:
        return read(path, index=":", format="extxyz")
    except Exception as exc:  # noqa: BLE001  (ASE raises many kinds)
        raise DataError(f"{path}: not a readable extxyz file ({type(exc).__name__}: {exc})") from None


def _numbers(value, source: str, what: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"{source}: {what} is {value!r}, expected numbers") from None


def _same_widths(structures: list[Structure], arrays: str, key_path: str) -> dict[str, int]:
    """The width of each target/input, which every structure must share (a model head has one width)."""
    widths = {k: int(v.shape[-1]) for k, v in getattr(structures[0], arrays).items()}
    for s in structures[1:]:
        for k, v in getattr(s, arrays).items():
            if int(v.shape[-1]) != widths[k]:
                raise DataError(f"{s.source}: {key_path} {k!r} has {v.shape[-1]} components, but "
                                f"{structures[0].source} has {widths[k]}; every structure needs the same number")
    return widths


def to_structure(atoms, source: str, targets: dict[str, KeyTarget] | None = None,
                 node_inputs: Sequence[str] = ()) -> Structure:
    values = {}
    # ASE moves standard keys (energy, forces, stress...) from info/arrays into a calculator's results.
    results = atoms.calc.results if atoms.calc is not None else {}
    for name, t in (targets or {}).items():
        store = atoms.info if t.level == "graph" else atoms.arrays
        found = store[t.key] if t.key in store else results.get(t.key)
        if found is None:
            raise DataError(f"{source}: missing {'info key' if t.level == 'graph' else 'per-atom array'} {t.key!r} "
                            f"for target {name!r}")
        v = _numbers(found, source, f"{t.key!r} (target {name!r})")
        values[name] = v.reshape(-1) if t.level == "graph" else v.reshape(len(atoms), -1)
    inputs = {}
    for key in node_inputs:
        if key not in atoms.arrays:
            raise DataError(f"{source}: missing per-atom array {key!r} (dataset.options.node_inputs)")
        inputs[key] = _numbers(atoms.arrays[key], source, f"{key!r} (dataset.options.node_inputs)").reshape(
            len(atoms), -1)
    cell = np.array(atoms.cell[:]) if atoms.cell.rank == 3 else None
    return Structure(numbers=atoms.numbers.astype(np.int64), positions=atoms.positions.astype(float), cell=cell,
                     pbc=(bool(atoms.pbc[0]), bool(atoms.pbc[1]), bool(atoms.pbc[2])), targets=values,
                     node_inputs=inputs, source=source)


def load_extxyz(options: ExtxyzOptions, context: DatasetContext) -> RawDataset:
    structures: list[Structure] = []
    skipped: list[str] = []
    for path in list_files(options.path, options.pattern):
        try:
            frames = read_frames(path)
            structures.extend(to_structure(a, f"{path}#{i}", options.targets, options.node_inputs)
                              for i, a in enumerate(frames))
        except DataError as exc:
            if not context.skip_bad_files:
                raise
            skipped.append(str(exc))
    if not structures:
        raise DataError(f"{options.path}: no readable structures ({skip_summary(skipped)})")
    dims = _same_widths(structures, "node_inputs", "node input")
    widths = _same_widths(structures, "targets", "target")
    infos = {n: t.info(dim=widths[n]) for n, t in options.targets.items()}
    return RawDataset(structures=structures, targets=infos, node_inputs=dims,
                      fingerprint=fingerprint_extxyz(options, context), skipped=skipped,
                      log=[f"extxyz: {len(structures)} structures", *([skip_summary(skipped)] if skipped else [])])


def read_extxyz_structures(path: Path, options: ExtxyzOptions | None) -> list[Structure]:
    """Every frame of one file for ``predict`` (the lattice is the file's own; extra inputs if the model has them)."""
    inputs = options.node_inputs if options is not None else []
    return [to_structure(a, f"{path}#{i}", None, inputs) for i, a in enumerate(read_frames(path))]


def fingerprint_extxyz(options: ExtxyzOptions, context: DatasetContext) -> str:
    return fingerprint_files(options, list_files(options.path, options.pattern), context.skip_bad_files)


@hookimpl
def register_datasets(register):
    register(DatasetSpec(name="extxyz", description="extxyz files read with ASE (info keys and per-atom arrays)",
                         options=ExtxyzOptions, factory=load_extxyz, fingerprint=fingerprint_extxyz,
                         read_structures=read_extxyz_structures, suffixes=(".xyz", ".extxyz")))
