"""``ase`` reader plugin: every format ase.io reads (extxyz, ASE .traj and .db, VASP OUTCAR and
vasprun.xml, ...), with energy, forces and stress from the attached calculator's results or named keys,
converted to eV, eV/A and eV/A^3 (ASE's stress convention, Voigt order), and frames lacking forces or
stress refused or kept masked. docs/data.md describes the options."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from hydradgl import hookimpl
from hydradgl.data.files import FileSetOptions, TargetSource, fingerprint_files, list_files, skip_summary
from hydradgl.data.records import RawDataset, Structure, TargetInfo
from hydradgl.errors import DataError
from hydradgl.plugins import DatasetContext, DatasetSpec


def _units() -> tuple[dict[str, float], dict[str, float]]:
    from ase import units

    energy = {"eV": 1.0, "meV": 1e-3, "Ry": units.Ry, "Ha": units.Hartree, "kcal/mol": units.kcal / units.mol,
              "kJ/mol": units.kJ / units.mol}
    stress = {"eV/A^3": 1.0, "GPa": units.GPa, "kbar": 1e3 * units.bar}
    return energy, stress


ENERGY_UNITS, STRESS_UNITS = _units()  # unit -> eV (per A^3 for stress)
EnergyUnit = Literal["eV", "meV", "Ry", "Ha", "kcal/mol", "kJ/mol"]
StressUnit = Literal["eV/A^3", "GPa", "kbar"]
# file name endings ``hydradgl predict`` hands to this reader (OUTCAR and vasprun.xml have no suffix of their own)
SUFFIXES = (".xyz", ".extxyz", ".traj", ".db", "OUTCAR", "vasprun.xml")


class KeyTarget(TargetSource):
    """A target read from ``atoms.info[key]`` (graph level) or ``atoms.arrays[key]`` (node level)."""

    key: str = Field(description="The `info` key (graph level) or per-atom array (node level); keys ASE keeps in "
                                 "a calculator (energy, forces, ...) are found there too.")


@dataclass(frozen=True)
class Quantity:
    """One of the standard targets (energy, forces, stress): where its key option is and what it is."""

    name: str
    key_option: str
    info: TargetInfo
    maskable: bool  # whether ``missing: mask`` may keep a frame lacking it


QUANTITIES = (
    Quantity("energy", "energy_key", TargetInfo(level="graph", dim=1, unit="eV", extensive=True,
                                                description="total energy"), maskable=False),
    Quantity("forces", "forces_key", TargetInfo(level="node", dim=3, unit="eV/A",
                                                description="force vector F = -dE/dr"), maskable=True),
    Quantity("stress", "stress_key", TargetInfo(level="graph", dim=6, unit="eV/A^3",
                                                description="stress (1/V) dE/d(strain), Voigt xx yy zz yz xz xy, "
                                                            "positive under tension"), maskable=True),
)


class AseFileOptions(FileSetOptions):
    """Files ase.io reads, any number of frames each."""

    pattern: str = Field("*", description="Glob of files inside a folder, e.g. *.xyz, OUTCAR*, **/vasprun.xml "
                                          "(** descends into subfolders).")
    format: str | None = Field(
        None, description="ase.io format name of every file (extxyz, traj, db, vasp-out for OUTCAR, vasp-xml for "
                          "vasprun.xml, ...). Default: ASE guesses each file's format from its name and contents.")
    index: str = Field(":", description="Frames of each file, an ase.io index: ':' all, '-1' the last, '::10' "
                                        "every tenth, '5:' from the sixth on.")
    energy_key: str | None = Field(
        "energy", description="Where the total energy (target `energy`, eV, graph level) is: an `atoms.info` key, "
                              "else the calculator's result of that name (ASE's readers put energy and free_energy "
                              "there; free_energy: VASP's TOTEN). null: no energy target.")
    forces_key: str | None = Field(
        "forces", description="Where the forces (target `forces`, eV/A, 3 per atom) are: an `atoms.arrays` key, else "
                              "the calculator's result of that name. null: no forces target.")
    stress_key: str | None = Field(
        "stress", description="Where the stress (target `stress`, eV/A^3, Voigt order xx yy zz yz xz xy) is: an "
                              "`atoms.info` key, else the calculator's result of that name; 6 Voigt or 9 (3x3, "
                              "symmetric) numbers. null: no stress target.")
    missing: Literal["error", "mask"] = Field(
        "error", description="A frame lacking forces or stress that other frames have: error (a DataError naming "
                             "the frame and the key), or mask (the frame is kept with that target NaN, skipped by "
                             "the loss, metrics and statistics; the count goes to the run log). A quantity no frame "
                             "has is not a target; every frame needs an energy when any has one.")
    energy_unit: EnergyUnit = Field(
        "eV", description="Unit of the energies as read (forces in it per A, stress per A^3 unless stress_unit says "
                          "otherwise), converted to eV on read. ASE's traj, db and VASP readers give eV already.")
    stress_unit: StressUnit | None = Field(
        None, description="Unit of the stress as read, converted to eV/A^3. Default: energy_unit per A^3.")
    stress_convention: Literal["ase", "pressure"] = Field(
        "ase", description="Sign of the stress as read: ase (positive under tension, (1/V) dE/d(strain); what ASE's "
                           "readers give, VASP's included) or pressure (positive under compression, as VASP prints "
                           "it): negated on read.")
    targets: dict[str, KeyTarget] = Field(
        default_factory=dict, description="Further targets: name -> key, level, unit, description, extensive (read "
                                          "as they are, not converted). A name energy, forces or stress replaces that "
                                          "standard target.")
    node_inputs: list[str] = Field(default_factory=list, description="Per-atom arrays used as extra inputs.")

    @field_validator("format")
    @classmethod
    def _readable_format(cls, value: str | None) -> str | None:
        from ase.io.formats import ioformats

        if value is not None and (value not in ioformats or not ioformats[value].can_read):
            readable = ", ".join(sorted(n for n, f in ioformats.items() if f.can_read))
            raise ValueError(f"{value!r} is not a format ase.io reads; these are: {readable}")
        return value

    @field_validator("index")
    @classmethod
    def _frame_index(cls, value: str) -> str:
        from ase.io.formats import string2index

        if not isinstance(string2index(value), (int, slice)):
            raise ValueError(f"{value!r} is not an ase.io index such as ':', '-1', '::10' or '2:8'")
        return value

    @model_validator(mode="after")
    def _target_named_twice(self) -> AseFileOptions:
        twice = [q for q in QUANTITIES if q.name in self.targets and q.key_option in self.model_fields_set
                 and getattr(self, q.key_option) is not None]
        if twice:
            q = twice[0]
            raise ValueError(f"target {q.name!r} is given twice, by {q.key_option} and by targets.{q.name}; "
                             f"drop one (or set {q.key_option}: null)")
        return self


def guessed_format(path: Path, format: str | None) -> str:
    """``format``, else the one ASE guesses from the file's name and contents; DataError naming the file."""
    if format is not None:
        return format
    from ase.io.formats import filetype, ioformats

    try:
        guess = filetype(str(path))
        why = "" if guess in ioformats and ioformats[guess].can_read else f"it guesses {guess!r}, no format it reads"
    except Exception as exc:  # noqa: BLE001  (UnknownFileTypeError, OSError, parse errors)
        why = f"{type(exc).__name__}: {exc}"
    if why:
        raise DataError(f"{path}: ase.io cannot tell this file's format ({why}); give dataset.options.format, or "
                        "a pattern that matches only structure files")
    return guess


def _db_frames(path: Path) -> list:
    """Every row of an ASE database as Atoms, its key-value pairs in ``info`` and its data in ``arrays``
    (per-atom, length = atom count) or ``info``, so named keys find them as in any other format."""
    import ase.db

    frames = []
    with ase.db.connect(path, serial=True) as db:
        for row in db.select():
            atoms = row.toatoms(add_additional_information=True)
            atoms.info.update(atoms.info.pop("key_value_pairs", {}))
            for key, value in atoms.info.pop("data", {}).items():
                if np.ndim(value) and len(value) == len(atoms):
                    atoms.arrays[key] = np.asarray(value)
                else:
                    atoms.info[key] = value
            frames.append(atoms)
    return frames


def read_frames(path: Path, format: str | None = None) -> list:
    """Every frame of a file as ASE Atoms; DataError names the file when ASE cannot read it."""
    from ase.io import read

    fmt = guessed_format(path, format)
    try:
        frames = _db_frames(path) if fmt == "db" else read(path, index=":", format=fmt)
    except Exception as exc:  # noqa: BLE001  (ASE raises many kinds)
        raise DataError(f"{path}: not readable by ase.io as {fmt} ({type(exc).__name__}: {exc})") from None
    return frames if isinstance(frames, list) else [frames]


def selected(frames: list, index: str) -> list[tuple[int, object]]:
    """(frame number in the file, frame) of the frames ``index`` selects."""
    from ase.io.formats import string2index

    chosen = string2index(index)  # an int or a slice: the options' validator saw to it
    numbers = list(range(len(frames)))
    picked = numbers[chosen] if isinstance(chosen, slice) else numbers[int(chosen):int(chosen) + 1 or None]
    return [(i, frames[i]) for i in picked]


def _numbers(value, source: str, what: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"{source}: {what} is {value!r}, expected numbers") from None


def _lookup(atoms, key: str, level: str):
    """``atoms.info[key]`` (graph level) or ``atoms.arrays[key]`` (node level), else the attached
    calculator's result ``key`` (ASE's readers move energy, forces, stress there), else None."""
    store = atoms.info if level == "graph" else atoms.arrays
    if key in store:
        return store[key]
    return (getattr(atoms.calc, "results", None) or {}).get(key)


def voigt_stress(value: np.ndarray, source: str, key: str) -> np.ndarray:
    """(6,) Voigt stress (xx, yy, zz, yz, xz, xy) from 6 numbers as they are or 9 (a 3x3 tensor, rows),
    which must be symmetric; DataError naming the frame otherwise."""
    flat = value.reshape(-1)
    if flat.size == 6:
        return flat
    if flat.size != 9:
        raise DataError(f"{source}: stress {key!r} has {flat.size} numbers, expected 6 (Voigt xx yy zz yz xz xy) "
                        "or 9 (a 3x3 tensor)")
    tensor = flat.reshape(3, 3)
    asymmetry = float(np.abs(tensor - tensor.T).max())
    if asymmetry > 1e-5 * float(np.abs(tensor).max()):
        raise DataError(f"{source}: stress {key!r} is a 3x3 tensor that is not symmetric (|s - s^T| up to "
                        f"{asymmetry:.3g}): {tensor.tolist()}")
    sym = (tensor + tensor.T) / 2
    return np.array([sym[0, 0], sym[1, 1], sym[2, 2], sym[1, 2], sym[0, 2], sym[0, 1]])


def standard_value(q: Quantity, atoms, source: str, key: str, factor: float) -> np.ndarray | None:
    """Energy (1,), forces (n, 3) or Voigt stress (6,) of one frame, times ``factor``; None when absent."""
    found = _lookup(atoms, key, q.info.level)
    if found is None:
        return None
    v = _numbers(found, source, f"{key!r} (target {q.name!r})")
    if q.name == "stress":
        return factor * voigt_stress(v, source, key)
    expected = (1,) if q.info.level == "graph" else (len(atoms), q.info.dim)
    if v.size != int(np.prod(expected)):
        raise DataError(f"{source}: {q.name} {key!r} has shape {v.shape}, expected {expected}")
    return factor * v.reshape(expected)


def to_structure(atoms, source: str, targets: dict[str, KeyTarget] | None = None,
                 node_inputs: Sequence[str] = ()) -> Structure:
    """One frame as a Structure with ``targets`` (each required) and ``node_inputs`` read from it."""
    values = {}
    for name, t in (targets or {}).items():
        found = _lookup(atoms, t.key, t.level)
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


def _same_widths(structures: list[Structure], arrays: str, key_path: str) -> dict[str, int]:
    """The width of each target/input, which every structure must share (a model head has one width)."""
    widths = {k: int(v.shape[-1]) for k, v in getattr(structures[0], arrays).items()}
    for s in structures[1:]:
        for k, v in getattr(s, arrays).items():
            if int(v.shape[-1]) != widths[k]:
                raise DataError(f"{s.source}: {key_path} {k!r} has {v.shape[-1]} components, but "
                                f"{structures[0].source} has {widths[k]}; every structure needs the same number")
    return widths


def conversion_notes(options: AseFileOptions) -> list[str]:
    """What was converted on read (for the run log), nothing when the data was in eV and ASE's convention."""
    notes = []
    per_volume = options.stress_unit or f"{options.energy_unit}/A^3"
    if options.energy_unit != "eV":
        factor = ENERGY_UNITS[options.energy_unit]
        notes.append(f"energies converted from {options.energy_unit} to eV (x {factor:.8g}), forces from "
                     f"{options.energy_unit}/A to eV/A")
    if per_volume != "eV/A^3" and options.stress_key is not None:
        factor = STRESS_UNITS[options.stress_unit] if options.stress_unit else ENERGY_UNITS[options.energy_unit]
        notes.append(f"stress converted from {per_volume} to eV/A^3 (x {factor:.8g})")
    if options.stress_convention == "pressure" and options.stress_key is not None:
        notes.append("stress read in the pressure convention (positive under compression): negated to ASE's")
    return notes


def standard_targets(options: AseFileOptions, frames: list[tuple[Structure, dict[str, np.ndarray | None]]]
                     ) -> tuple[dict[str, TargetInfo], list[str]]:
    """Put energy, forces and stress into the structures where frames have them: a quantity no frame has is
    no target; one some frames lack is a DataError, or with ``missing: mask`` NaN there (``partial``)."""
    infos: dict[str, TargetInfo] = {}
    notes: list[str] = []
    for q in QUANTITIES:
        key = getattr(options, q.key_option)
        if key is None or q.name in options.targets:
            continue
        lacking = [s for s, values in frames if values[q.name] is None]
        if len(lacking) == len(frames):
            notes.append(f"{q.name}: no frame has {key!r} ({q.key_option}), not a target")
            continue
        if lacking and (options.missing == "error" or not q.maskable):
            where = "atoms.arrays" if q.info.level == "node" else "atoms.info"
            how = (f"set dataset.options.missing: mask to keep such frames with {q.name} masked, or "
                   f"{q.key_option}: null to read no {q.name}" if q.maskable else
                   f"every frame needs one (leave such files out with dataset.options.pattern, or set "
                   f"{q.key_option} to the key that holds it)")
            raise DataError(f"{lacking[0].source}: no {q.name} ({q.key_option} {key!r}: not in {where} nor in the "
                            f"calculator's results), while {len(frames) - len(lacking)} of {len(frames)} frames have "
                            f"it; {how}")
        for s, values in frames:
            found = values[q.name]
            s.targets[q.name] = found if found is not None else np.full(
                (s.n_atoms, q.info.dim) if q.info.level == "node" else (q.info.dim,), np.nan)
        infos[q.name] = q.info.model_copy(update={"partial": bool(lacking)})
        if lacking:
            notes.append(f"{q.name} missing in {len(lacking)} of {len(frames)} frames (masked)")
    return infos, notes


def load_ase_files(options: AseFileOptions, context: DatasetContext) -> RawDataset:
    energy_factor = ENERGY_UNITS[options.energy_unit]
    factors = {"energy": energy_factor, "forces": energy_factor,
               "stress": (STRESS_UNITS[options.stress_unit] if options.stress_unit else energy_factor)
               * (-1.0 if options.stress_convention == "pressure" else 1.0)}
    wanted = [q for q in QUANTITIES if getattr(options, q.key_option) is not None and q.name not in options.targets]
    frames: list[tuple[Structure, dict[str, np.ndarray | None]]] = []
    skipped: list[str] = []
    formats: Counter[str] = Counter()
    for path in list_files(options.path, options.pattern):
        try:
            fmt = guessed_format(path, options.format)
            read = []
            for i, atoms in selected(read_frames(path, fmt), options.index):
                source = f"{path}#{i}"
                s = to_structure(atoms, source, options.targets, options.node_inputs)
                read.append((s, {q.name: standard_value(q, atoms, source, getattr(options, q.key_option),
                                                        factors[q.name]) for q in wanted}))
        except DataError as exc:
            if not context.skip_bad_files:
                raise
            skipped.append(str(exc))
            continue
        frames.extend(read)
        formats[fmt] += 1
    if not frames:
        raise DataError(f"{options.path}: no readable structures ({skip_summary(skipped)})")
    infos, notes = standard_targets(options, frames)
    structures = [s for s, _ in frames]
    dims = _same_widths(structures, "node_inputs", "node input")
    widths = _same_widths(structures, "targets", "target")
    infos.update({n: t.info(dim=widths[n]) for n, t in options.targets.items()})
    files = ", ".join(f"{fmt}: {n}" for fmt, n in sorted(formats.items()))
    return RawDataset(structures=structures, targets=infos, node_inputs=dims,
                      fingerprint=fingerprint_ase_files(options, context), skipped=skipped,
                      log=[f"read {len(structures)} structures from {sum(formats.values())} file(s) ({files})",
                           *conversion_notes(options), *notes, *([skip_summary(skipped)] if skipped else [])])


def read_structures(path: Path, options: AseFileOptions | None, format: str | None = None) -> list[Structure]:
    """Every frame of one file for ``predict`` (the lattice is the file's own; extra inputs if the model has
    them); ``format`` when the run was not trained on this reader (``options`` None)."""
    fmt = options.format if options is not None else format
    inputs = options.node_inputs if options is not None else []
    return [to_structure(a, f"{path}#{i}", None, inputs) for i, a in enumerate(read_frames(path, fmt))]


def fingerprint_ase_files(options: AseFileOptions, context: DatasetContext) -> str:
    return fingerprint_files(options, list_files(options.path, options.pattern), context.skip_bad_files)


@hookimpl
def register_datasets(register):
    register(DatasetSpec(name="ase", description="Files ase.io reads (extxyz, traj, db, VASP OUTCAR and vasprun.xml, "
                                                 "...): energy, forces and stress with units and conventions",
                         options=AseFileOptions, factory=load_ase_files, fingerprint=fingerprint_ase_files,
                         read_structures=read_structures, suffixes=SUFFIXES))
