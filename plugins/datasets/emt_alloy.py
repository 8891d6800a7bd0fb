"""Built-in ``emt-alloy`` dataset: strained, rattled fcc alloy supercells labelled by ASE's EMT potential.

Unlike FePt (fixed positions, toy model), geometry matters here: every structure has its own cell
strain and atomic displacements, and the targets come from an interatomic potential nobody here
wrote (effective-medium theory, Jacobsen et al. 1987/1996, as implemented in ``ase.calculators.emt``).
Structures are generated once into the cache as one extxyz file and read back with the extxyz
reader; docs/data.md gives the physics, targets, units and options.
"""

from __future__ import annotations

import hashlib
import itertools
from functools import cache
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from hydradgl import hookimpl
from hydradgl.atomic import atomic_open
from hydradgl.data.records import RawDataset, Structure, TargetInfo
from hydradgl.plugins import DatasetContext, DatasetSpec

from .ase_files import KeyTarget, read_frames, to_structure
from .extxyz import read_extxyz_structures

GENERATOR_VERSION = 1
# EMT's parameters cover these metals in their fcc ground state; its H, C, N, O parameters are meant for
# adsorbates on such metals, not for occupying lattice sites, so they are not offered here.
FCC_METALS = ("Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")
LATTICES = ("fcc",)


class EMTAlloyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    elements: list[str] = Field(
        ["Cu", "Au"], min_length=1, max_length=4,
        description=f"1 to 4 distinct elements among EMT's fcc metals: {', '.join(FCC_METALS)}.")
    lattice: str = Field("fcc", description=f"Parent lattice; allowed: {', '.join(LATTICES)}.")
    supercell: tuple[int, int, int] = Field(
        (2, 2, 2), description="Repetitions of the 4-atom conventional cubic cell (2x2x2: 32 sites).")
    per_composition: int = Field(64, ge=1, description="Structures per composition (random occupations).")
    composition_step: int = Field(
        1, ge=1, description="Atom counts per element are multiples of this (must divide the number of sites).")
    strain: float = Field(0.02, ge=0, le=0.1,
                          description="Each component of the symmetric strain tensor is uniform in [-strain, strain].")
    rattle: float = Field(0.05, ge=0, le=0.5, description="Std of the Gaussian displacement of every atom, per "
                                                       "Cartesian component (Angstrom).")
    forces: bool = Field(False, description="Also provide the force vector as a 3-component node target `forces`.")
    stress: bool = Field(False, description="Also provide EMT's stress as a 6-component graph target `stress` "
                                            "(eV/A^3, ASE's convention, Voigt xx yy zz yz xz xy).")
    seed: int = Field(0, description="Seed of occupations, strains and displacements.")

    @field_validator("elements")
    @classmethod
    def _emt_metals(cls, value: list[str]) -> list[str]:
        unknown = [e for e in value if e not in FCC_METALS]
        if unknown:
            raise ValueError(f"{', '.join(map(repr, unknown))} not supported by EMT on an fcc lattice; "
                             f"allowed elements: {', '.join(FCC_METALS)}")
        if len(set(value)) != len(value):
            raise ValueError(f"elements repeat: {value}")
        return value

    @field_validator("lattice")
    @classmethod
    def _lattice(cls, value: str) -> str:
        if value not in LATTICES:
            raise ValueError(f"not supported; allowed lattices: {', '.join(LATTICES)}")
        return value

    @field_validator("supercell")
    @classmethod
    def _positive(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(value) < 1:
            raise ValueError(f"repetitions must be >= 1, got {value}")
        return value

    @field_validator("composition_step")
    @classmethod
    def _step_divides_sites(cls, value: int, info: ValidationInfo) -> int:
        supercell = info.data.get("supercell")  # absent when the supercell itself was invalid
        if supercell is not None and site_count(supercell) % value:
            raise ValueError(
                f"{value} does not divide the {site_count(supercell)} sites of supercell {tuple(supercell)}")
        return value

    @property
    def n_sites(self) -> int:
        return site_count(self.supercell)


def site_count(supercell: tuple[int, int, int]) -> int:
    """Sites of a supercell of the 4-atom conventional fcc cell."""
    return 4 * int(np.prod(supercell))


def target_infos(forces: bool, stress: bool = False) -> dict[str, TargetInfo]:
    """The targets and their units; ``extensive`` says which readout fits a graph target (sum or mean)."""
    infos = {
        "energy": TargetInfo(level="graph", unit="eV", extensive=True, description="EMT total energy"),
        "mixing_energy": TargetInfo(level="graph", unit="eV/atom", extensive=False,
                                    description="(E - sum_t N_t e_t) / N vs pure fcc metals"),
        "atom_energy": TargetInfo(level="node", unit="eV", description="EMT energy of each atom (sums to E)"),
        "force_norm": TargetInfo(level="node", unit="eV/A", description="|F| of each atom"),
    }
    if forces:
        infos["forces"] = TargetInfo(level="node", dim=3, unit="eV/A", description="force vector F = -dE/dr")
    if stress:
        infos["stress"] = TargetInfo(level="graph", dim=6, unit="eV/A^3",
                                     description="stress (ASE convention, Voigt xx yy zz yz xz xy)")
    return infos


@cache
def reference(element: str) -> tuple[float, float]:
    """EMT's equilibrium fcc lattice constant (A) of a pure element and its energy per atom there (eV)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from scipy.optimize import minimize_scalar

    def energy(a: float) -> float:
        atoms = bulk(element, "fcc", a=a)
        atoms.calc = EMT()
        return float(atoms.get_potential_energy())

    guess = bulk(element, "fcc").cell.cellpar()[0] * np.sqrt(2)  # ASE's experimental lattice constant
    found = minimize_scalar(energy, bracket=(0.95 * guess, guess), tol=1e-10)
    return float(found.x), float(found.fun)


def compositions(n_elements: int, n_sites: int, step: int) -> list[tuple[int, ...]]:
    """Every atom-count tuple (multiples of ``step``) summing to ``n_sites``, in lexicographic order."""
    units = n_sites // step
    return [tuple(step * c for c in counts) for counts in itertools.product(range(units + 1), repeat=n_elements)
            if sum(counts) == units]


def generate_structures(options: EMTAlloyOptions):
    """The structures as ASE Atoms with EMT targets in ``info``/``arrays``, in a fixed order (deterministic)."""
    from ase import Atoms
    from ase.build import bulk
    from ase.calculators.emt import EMT

    refs = {e: reference(e) for e in options.elements}
    rng = np.random.default_rng(options.seed)
    unit = bulk("X", "fcc", a=1.0, cubic=True).repeat(options.supercell)  # fractional geometry of the sites
    calc = EMT()
    frames = []
    for counts in compositions(len(options.elements), options.n_sites, options.composition_step):
        symbols = np.repeat(options.elements, counts)
        a_vegard = sum(n * refs[e][0] for e, n in zip(options.elements, counts)) / options.n_sites
        for _ in range(options.per_composition):
            eps = rng.uniform(-options.strain, options.strain, (3, 3))
            deform = np.eye(3) + (eps + eps.T) / 2
            cell = unit.cell[:] * a_vegard @ deform
            positions = unit.positions * a_vegard @ deform + rng.normal(0.0, options.rattle, (options.n_sites, 3))
            atoms = Atoms(symbols=rng.permutation(symbols), positions=positions, cell=cell, pbc=True)
            atoms.calc = calc
            energy = float(atoms.get_potential_energy())
            per_atom = atoms.get_potential_energies()
            forces = atoms.get_forces()
            stress = atoms.get_stress()  # computed with the energy
            atoms.calc = None
            reference_energy = sum(n * refs[e][1] for e, n in zip(options.elements, counts))
            atoms.info.update(energy=energy, mixing_energy=(energy - reference_energy) / options.n_sites)
            atoms.arrays.update(atom_energy=per_atom.copy(), force_norm=np.linalg.norm(forces, axis=1))
            if options.forces:
                atoms.arrays["forces"] = forces.copy()
            if options.stress:
                atoms.info["stress"] = stress.copy()
            frames.append(atoms)
    return frames


def generation_key(options: EMTAlloyOptions) -> str:
    """Options, generator version and ASE version (EMT's numbers are ASE's): a changed one regenerates."""
    import ase

    payload = f"v{GENERATOR_VERSION}:ase{ase.__version__}:{options.model_dump_json()}"
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def write_extxyz(frames, path: Path) -> None:
    """All frames into one extxyz file, published by an atomic rename (a concurrent writer's copy is equal)."""
    from ase.io import write

    with atomic_open(path, "w") as handle:
        write(handle, frames, format="extxyz")


def load_emt_alloy(options: EMTAlloyOptions, context: DatasetContext) -> RawDataset:
    path = Path(context.cache_dir) / "raw" / f"emt-alloy-{generation_key(options)}.xyz"
    generated = not path.is_file()
    if generated:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_extxyz(generate_structures(options), path)
    infos = target_infos(options.forces, options.stress)
    keys = {name: KeyTarget(key=name, level=info.level) for name, info in infos.items()}
    structures = [to_structure(a, f"{path}#{i}", keys) for i, a in enumerate(read_frames(path, "extxyz"))]
    refs = ", ".join(f"{e}: a={reference(e)[0]:.4f} A, e={reference(e)[1]:.6f} eV/atom" for e in options.elements)
    return RawDataset(structures=structures, targets=infos, fingerprint=fingerprint_emt_alloy(options, context),
                      log=[f"emt-alloy: {len(structures)} {'-'.join(options.elements)} structures in {path}"
                           + (" (generated now)" if generated else ""),
                           f"emt-alloy: pure-element references (EMT, fcc) {refs}"])


def fingerprint_emt_alloy(options: EMTAlloyOptions, context: DatasetContext) -> str:
    return f"emt-alloy-{generation_key(options)}"


def read_emt_structures(path: Path, options: EMTAlloyOptions | None) -> list[Structure]:
    """Structures of an extxyz file for ``predict`` with a model trained on emt-alloy (each file brings its
    own periodic cell, as the generated ones do)."""
    return read_extxyz_structures(path, None)


@hookimpl
def register_datasets(register):
    register(DatasetSpec(name="emt-alloy",
                         description="Generated strained, rattled fcc alloy (default Cu-Au, 32 atoms) with EMT "
                                     "energies, forces and stress",
                         options=EMTAlloyOptions, factory=load_emt_alloy, fingerprint=fingerprint_emt_alloy,
                         read_structures=read_emt_structures))
