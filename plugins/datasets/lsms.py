"""LSMS reader plugin: the text format HydraGNN reads for LSMS-3 DFT output, one file per configuration.

Format (whitespace separated, ``#`` starts a comment line; an optional ``# atoms: N`` comment declares
the atom count, checked like the ``num_atoms`` option):

* line 1: graph-level values; column 0 is the total energy (Ry by default: ``energy_unit``);
* every further line is one atom: ``Z index x y z charge moment [more columns]`` with Z the proton
  number (or a type index 0..T-1 with ``species_by_type``), ``index`` running 0..n-1, x y z Cartesian
  positions in Angstrom, ``charge`` the atom's electron count and ``moment`` its magnetic moment.

Derived targets (option ``derived``, default all three, the LSMS physics): ``C`` = charge - Z (charge
transfer, node), ``M`` = moment (node), ``H`` = mixing enthalpy E_total - sum_t N_t e_t (graph), with
reference energies e_t per element from the pure-element configurations in the data set, or given in
the options; they are demanded only when a head predicts H. More columns can be named as targets.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from hydradgl import hookimpl
from hydradgl.data.files import FileSetOptions, TargetSource, fingerprint_files, list_files, skip_summary
from hydradgl.data.records import RawDataset, Structure, TargetInfo
from hydradgl.errors import DataError
from hydradgl.plugins import DatasetContext, DatasetSpec

ATOM_FIXED_COLUMNS = 7  # Z index x y z charge moment


class ColumnTarget(TargetSource):
    """A target read from one column: graph level = a column of line 1, node level = a column of atom lines."""

    column: int = Field(ge=0, description="Column of line 1 (graph level) or of the atom lines (node level).")


class LSMSOptions(FileSetOptions):
    num_atoms: int | None = Field(
        None, ge=1, description="Expected atoms per file (checked when set; a file may also declare its own count "
        "in a `# atoms: N` comment line).")
    species_by_type: list[int] | None = Field(
        None, min_length=1, description="Column 0 holds a type index 0..T-1 (HydraGNN's synthetic data), mapped "
        "to these proton numbers in order; default: column 0 is the proton number.")
    derived: list[Literal["H", "C", "M"]] = Field(
        ["H", "C", "M"], description="Targets derived from the LSMS columns (H: mixing enthalpy, C: charge "
        "transfer, M: magnetic moment).")
    energy_unit: str = Field("Ry", description="Unit of the energy column (and so of H and reference energies).")
    moment_unit: str = Field("mu_B", description="Unit of the moment column (M).")
    reference_energies: dict[int, float] | None = Field(
        None, description="Per-element reference energies (energy_unit per atom) by proton number; default: "
        "pure-element files. Needed only when a head predicts H.")
    energy_column: int = Field(0, ge=0, description="Column of line 1 holding the total energy, for H.")
    charge_column: int = Field(5, ge=0, description="Atom-line column of the electron count, for C = charge - Z.")
    moment_column: int = Field(6, ge=0, description="Atom-line column of the magnetic moment, for M.")
    extra_targets: dict[str, ColumnTarget] = Field(
        default_factory=dict, description="More targets by column: name -> column, level, unit, description, "
        "extensive.")
    input_columns: dict[str, int] = Field(
        default_factory=dict, description="Extra per-atom model inputs: name -> atom-line column.")
    cell: list[Annotated[list[float], Field(min_length=3, max_length=3)]] | None = Field(
        None, min_length=3, max_length=3, description="Lattice vectors (3x3, rows, Angstrom) for periodic images; "
        "also given to the files passed to `hydradgl predict`.")
    pbc: tuple[bool, bool, bool] = Field((True, True, True), description="Periodic axes when a cell is given.")


def derived_targets(options: LSMSOptions) -> dict[str, TargetInfo]:
    """What each derived target is, in the options' units and columns (``data info`` shows this)."""
    return {
        "H": TargetInfo(level="graph", unit=options.energy_unit, extensive=True,
                        description=f"derived: mixing enthalpy, line-1 column {options.energy_column} "
                                    "E_total - sum_t N_t e_t"),
        "C": TargetInfo(level="node", unit="e",
                        description=f"derived: charge transfer, atom column {options.charge_column} - Z"),
        "M": TargetInfo(level="node", unit=options.moment_unit,
                        description=f"read: magnetic moment, atom column {options.moment_column}"),
    }


def _floats(tokens: list[str], path: Path, line_no: int) -> list[float]:
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        bad = next(t for t in tokens if not _is_float(t))
        raise DataError(f"{path}:{line_no}: expected a number, got {bad!r}") from None
    for v, t in zip(values, tokens):
        if not math.isfinite(v):
            raise DataError(f"{path}:{line_no}: value {t!r} is not finite (NaN or inf)")
    return values


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def read_lsms(path: Path, num_atoms: int | None = None,
              species_by_type: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Parse one file into (graph values (G,), atom table (n, C)); DataError names file and line.

    Column 0 of the table holds proton numbers (type indices are mapped with ``species_by_type``)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    rows: list[tuple[int, list[str]]] = [
        (i, line.split()) for i, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not rows:
        raise DataError(f"{path}: empty file (expected a line of graph values, then one line per atom)")
    graph_line, graph_tokens = rows[0]
    graph = np.array(_floats(graph_tokens, path, graph_line))
    atoms = rows[1:]
    if not atoms:
        raise DataError(f"{path}: no atom lines after the graph values on line {graph_line}")
    width = len(atoms[0][1])
    if width < ATOM_FIXED_COLUMNS:
        raise DataError(f"{path}:{atoms[0][0]}: expected at least {ATOM_FIXED_COLUMNS} columns "
                        f"(Z index x y z charge moment), got {width}")
    table = np.empty((len(atoms), width))
    for row, (line_no, tokens) in enumerate(atoms):
        if len(tokens) != width:
            raise DataError(f"{path}:{line_no}: expected {width} columns like the first atom line, got {len(tokens)}")
        table[row] = _floats(tokens, path, line_no)
    if num_atoms is not None and len(atoms) != num_atoms:
        raise DataError(f"{path}: expected {num_atoms} atoms, found {len(atoms)} atom lines")
    declared = _declared_atoms(text, path)
    if declared is not None and declared[1] != len(atoms):
        raise DataError(f"{path}:{declared[0]}: header declares {declared[1]} atoms, found {len(atoms)} atom lines")
    if species_by_type is not None:
        _map_types(table, species_by_type, path, [r[0] for r in atoms])
    z = table[:, 0]
    bad_z = np.flatnonzero((z != np.round(z)) | (z < 1) | (z > 118))
    if bad_z.size:
        raise DataError(f"{path}:{atoms[bad_z[0]][0]}: unknown element, proton number {z[bad_z[0]]:g} "
                        "(expected an integer 1..118)")
    index = table[:, 1]
    if not np.array_equal(index, np.arange(len(atoms))):
        first = int(np.flatnonzero(index != np.arange(len(atoms)))[0])
        raise DataError(f"{path}:{atoms[first][0]}: atom index {index[first]:g}, expected {first} "
                        "(indices must run 0..n-1)")
    _check_distinct_positions(table[:, 2:5], path, [r[0] for r in atoms])
    return graph, table


def _map_types(table: np.ndarray, species: list[int], path: Path, line_numbers: list[int]) -> None:
    """Replace type indices 0..T-1 in column 0 by the proton numbers ``species[t]``."""
    types = table[:, 0]
    bad = np.flatnonzero((types != np.round(types)) | (types < 0) | (types >= len(species)))
    if bad.size:
        raise DataError(f"{path}:{line_numbers[bad[0]]}: type index {types[bad[0]]:g}, expected 0..{len(species) - 1} "
                        f"(dataset.options.species_by_type lists {len(species)} species)")
    table[:, 0] = np.asarray(species, dtype=float)[types.astype(np.int64)]


# A comment declaring the atom count: ``# atoms: 32``, ``# atoms = 32`` or ``# atoms 32`` (a number is
# required for it to count: ``# atoms listed below`` is an ordinary comment).
ATOMS_HEADER = re.compile(r"^[ \t]*#[ \t]*atoms[ \t]*(?:[:=][ \t]*(\S*)|(\d+)\b)", re.MULTILINE | re.IGNORECASE)


def _declared_atoms(text: str, path: Path) -> tuple[int, int] | None:
    """(line, count) of an optional ``# atoms: N`` comment line declaring the atom count."""
    if "#" not in text:
        return None
    match = ATOMS_HEADER.search(text)
    if match is None:
        return None
    line_no = text.count("\n", 0, match.start()) + 1
    count = match.group(1) if match.group(1) is not None else match.group(2)
    if not count.isdigit():
        raise DataError(f"{path}:{line_no}: '# atoms:' header must give a whole number, got {count!r}")
    return line_no, int(count)


def _check_distinct_positions(pos: np.ndarray, path: Path, line_numbers: list[int]) -> None:
    rounded = np.round(pos, 6)
    _, first, counts = np.unique(rounded, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = rounded[first[np.argmax(counts > 1)]]
        same = np.flatnonzero((rounded == dup).all(axis=1))
        raise DataError(f"{path}: atoms on lines {line_numbers[same[0]]} and {line_numbers[same[1]]} "
                        f"sit at the same position {tuple(float(x) for x in dup)}")


def write_lsms(path: Path, total_energy: float, numbers: np.ndarray, positions: np.ndarray,
               charges: np.ndarray, moments: np.ndarray) -> None:
    """Write one configuration in the LSMS text format (full precision for the energy)."""
    lines = [f"{total_energy:.10f}"]
    for i, (z, (x, y, zz), q, m) in enumerate(zip(numbers, positions, charges, moments)):
        lines.append(f"{int(z)} {i} {x:.6f} {y:.6f} {zz:.6f} {q:.8f} {m:.8f}")
    Path(path).write_text("\n".join(lines) + "\n")


def reference_energies(structures: Iterable[tuple[np.ndarray, float]]) -> dict[int, float]:
    """Per-atom energy of each element from its pure-element configurations (mean over them)."""
    sums: dict[int, list[float]] = {}
    for numbers, energy in structures:
        elements = np.unique(numbers)
        if elements.size == 1:
            sums.setdefault(int(elements[0]), []).append(energy / len(numbers))
    return {z: float(np.mean(v)) for z, v in sums.items()}


def _reference_energies(options: LSMSOptions, numbers_of: list[np.ndarray], energies: list[float],
                        log: list[str]) -> dict[int, float] | str:
    """Per-element reference energies for H, or why there are none for some element."""
    if options.reference_energies is not None:
        refs = {int(k): float(v) for k, v in options.reference_energies.items()}
        log.append(f"mixing enthalpy: reference energies ({options.energy_unit}/atom) from the config: {refs}")
    else:
        refs = reference_energies(zip(numbers_of, energies))
        log.append(f"mixing enthalpy: reference energies ({options.energy_unit}/atom) from pure-element files: {refs}")
    missing = sorted({int(z) for n in numbers_of for z in np.unique(n)} - set(refs))
    if missing:
        return (f"{options.path}: no reference energy for element(s) {missing}: add pure-element "
                "files or set dataset.options.reference_energies")
    return refs


def load_lsms(options: LSMSOptions, context: DatasetContext) -> RawDataset:
    """Read every file, derive H, C, M (as asked) and extra targets, and fingerprint the raw bytes."""
    parsed: list[tuple[Path, np.ndarray, np.ndarray]] = []
    skipped: list[str] = []
    digest = hashlib.sha256(options.model_dump_json().encode())
    for path in list_files(options.path, options.pattern):
        try:
            graph, table = read_lsms(path, options.num_atoms, options.species_by_type)
        except DataError as exc:
            if not context.skip_bad_files:
                raise
            skipped.append(str(exc))
            continue
        digest.update(graph.tobytes())
        digest.update(table.tobytes())
        parsed.append((path, graph, table))
    if not parsed:
        raise DataError(f"{options.path}: no readable LSMS files ({skip_summary(skipped)})")
    log = [skip_summary(skipped)] if skipped else []
    numbers_of = [t[:, 0].astype(np.int64) for _, _, t in parsed]
    derived = list(options.derived)
    refs: dict[int, float] = {}
    if "H" in derived:
        energies = [float(_column(g, options.energy_column, "energy_column", p)[0]) for p, g, _ in parsed]
        found = _reference_energies(options, numbers_of, energies, log)
        if isinstance(found, str):
            if context.targets is None or "H" in context.targets:
                raise DataError(found)
            derived.remove("H")  # no head predicts H: leave it out instead of failing
            log.append(f"H not derived (no head predicts it): {found}")
        else:
            refs = found
    cell = np.array(options.cell, dtype=float) if options.cell is not None else None
    structures = []
    for (path, graph, table), numbers in zip(parsed, numbers_of):
        targets: dict[str, np.ndarray] = {}
        if "H" in derived:
            ref = sum(refs[int(z)] for z in numbers)
            targets["H"] = _column(graph, options.energy_column, "energy_column", path) - ref
        if "C" in derived:
            targets["C"] = _column(table, options.charge_column, "charge_column", path) - table[:, :1]
        if "M" in derived:
            targets["M"] = _column(table, options.moment_column, "moment_column", path)
        for name, spec in options.extra_targets.items():
            targets[name] = _column(graph if spec.level == "graph" else table, spec.column,
                                    f"extra_targets.{name}.column", path)
        structures.append(_structure(path, table, numbers, cell, options, targets))
    infos: dict[str, TargetInfo] = {n: t for n, t in derived_targets(options).items() if n in derived}
    infos.update({n: s.info() for n, s in options.extra_targets.items()})
    return RawDataset(structures=structures, targets=infos, node_inputs={n: 1 for n in options.input_columns},
                      fingerprint=digest.hexdigest(), log=log, skipped=skipped)


def _structure(path: Path, table: np.ndarray, numbers: np.ndarray, cell: np.ndarray | None, options: LSMSOptions,
               targets: dict[str, np.ndarray]) -> Structure:
    inputs = {name: _column(table, col, f"input_columns.{name}", path) for name, col in options.input_columns.items()}
    return Structure(numbers=numbers, positions=table[:, 2:5].copy(), cell=cell,
                     pbc=options.pbc if cell is not None else (False, False, False),
                     targets=targets, node_inputs=inputs, source=str(path))


def read_lsms_structures(path: Path, options: LSMSOptions | None) -> list[Structure]:
    """One file for ``predict``: positions, elements, extra inputs, and the options' lattice."""
    options = options or LSMSOptions(path=path)
    _, table = read_lsms(path, options.num_atoms, options.species_by_type)
    cell = np.array(options.cell, dtype=float) if options.cell is not None else None
    return [_structure(path, table, table[:, 0].astype(np.int64), cell, options, {})]


def _column(values: np.ndarray, column: int, key: str, path: Path) -> np.ndarray:
    """Column ``column`` of the graph line (as shape (1,)) or of the atom table (as (n, 1))."""
    width = values.shape[-1]
    if column >= width:
        level = "graph-line" if values.ndim == 1 else "atom-line"
        raise DataError(f"{path}: dataset.options.{key} = {column} but the file has {width} {level} columns")
    return values[column:column + 1] if values.ndim == 1 else values[:, column:column + 1].copy()


def fingerprint_lsms(options: LSMSOptions, context: DatasetContext) -> str:
    return fingerprint_files(options, list_files(options.path, options.pattern), context.skip_bad_files)


@hookimpl
def register_datasets(register):
    register(DatasetSpec(name="lsms", description="LSMS-3 text files (HydraGNN's format): H, C, M targets",
                         options=LSMSOptions, factory=load_lsms, fingerprint=fingerprint_lsms,
                         read_structures=read_lsms_structures, suffixes=(".lsms",)))
