"""Built-in FePt dataset: a deterministic FePt-like data set generated from a physical toy model.

The paper's LSMS-3 data cannot be downloaded here, so configurations on the paper's lattice (BCT,
2 atoms per cell, 2x2x4 supercell = 32 sites) get targets from the toy model in docs/data.md. They are
written as LSMS files into the cache on first use and read back with the LSMS reader, so the default
path of ``hydradgl train`` exercises the real reader.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from hydradgl import hookimpl
from hydradgl.atomic import default_mode, remove_stale_temporaries, temp_prefix
from hydradgl.data.cache import unwritable_cache
from hydradgl.data.records import RawDataset
from hydradgl.plugins import DatasetContext, DatasetSpec

from .lsms import LSMSOptions, load_lsms, read_lsms_structures, write_lsms

FE, PT = 26, 78
GENERATOR_VERSION = 1


class FePtOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_per_composition: int = Field(
        100, ge=1, description="Unique configurations per composition (paper: 1000, giving ~28,000 in all).")
    seed: int = Field(0, description="Seed of the configuration sampling and of the noise.")
    a: float = Field(2.76, gt=0, description="BCT lattice constant a (Angstrom).")
    c: float = Field(3.74, gt=0, description="BCT lattice constant c (Angstrom).")
    noise: float = Field(0.0, ge=0, description="Std of Gaussian noise added to energies (Ry) and moments (mu_B).")

    def lsms(self, path: Path, pattern: str = "*") -> LSMSOptions:
        """How the generated files are read: 32 atoms, the supercell's lattice (periodic images of new
        LSMS files given to ``predict`` use it too)."""
        return LSMSOptions(path=path, pattern=pattern, num_atoms=32, cell=lattice(self.a, self.c)[1].tolist())


# Toy-model parameters (docs/data.md explains them).
E_REF = {FE: -2545.60, PT: -36868.40}  # per-element energy terms, Ry/atom
J1, J2 = 0.030, 0.012  # unlike-pair energy per 1st / 2nd shell pair, Ry
K_MAG = 0.010  # magnetic energy per Fe per mu_B^2, Ry
M_FE0, M_FE_PT = 2.20, 0.12  # Fe moment: base + per Pt in the 1st shell, mu_B
M_PT_FE = 0.035  # induced Pt moment per Fe in the 1st shell, mu_B
Q_PAIR = 0.055  # electrons moved Fe -> Pt per unlike 1st-shell pair


def lattice(a: float, c: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions (32, 3) of the 2x2x4 BCT supercell and its cell (3x3)."""
    basis = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    shifts = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(4)], dtype=float)
    frac = (shifts[:, None, :] + basis[None, :, :]).reshape(-1, 3)
    cell_vec = np.array([a, a, c])
    return frac * cell_vec, np.diag(cell_vec * [2, 2, 4])


def shell_matrices(positions: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Periodic neighbour count matrices of the 1st (body diagonal) and 2nd (in-plane a) shells.

    Counted over periodic images, so a neighbour reached through two images (the +a and -a
    neighbours are one atom in a 2-cell supercell) counts twice, as in the infinite crystal.
    """
    images = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]) @ cell
    d = positions[None, :, None, :] + images[None, None, :, :] - positions[:, None, None, :]
    r = np.linalg.norm(d, axis=-1)  # (i, j, image)
    radii = np.unique(np.round(r[r > 1e-6], 4))
    first = np.isclose(r, radii[0], atol=1e-3).sum(axis=-1).astype(float)
    second = np.isclose(r, radii[1], atol=1e-3).sum(axis=-1).astype(float)
    return first, second


def sample_occupations(max_per_composition: int, seed: int, n_sites: int = 32) -> list[np.ndarray]:
    """Unique Fe/Pt occupations (True = Fe) for every composition 0..n_sites, at most K each."""
    rng = np.random.default_rng(seed)
    out = []
    for n_fe in range(n_sites + 1):
        total = math.comb(n_sites, n_fe)
        seen: set[bytes] = set()
        occupations = []
        if total <= max_per_composition:
            from itertools import combinations
            for fe_sites in combinations(range(n_sites), n_fe):
                occ = np.zeros(n_sites, dtype=bool)
                occ[list(fe_sites)] = True
                occupations.append(occ)
        else:
            while len(occupations) < max_per_composition:
                occ = np.zeros(n_sites, dtype=bool)
                occ[rng.choice(n_sites, n_fe, replace=False)] = True
                key = np.packbits(occ).tobytes()
                if key not in seen:
                    seen.add(key)
                    occupations.append(occ)
        out.extend(occupations)
    return out


def toy_model(fe: np.ndarray, first: np.ndarray, second: np.ndarray, rng: np.random.Generator,
              noise: float) -> tuple[float, np.ndarray, np.ndarray]:
    """Total energy (Ry), electron counts and moments for one occupation (True = Fe)."""
    pt = ~fe
    n_pt1 = first @ pt  # Pt neighbours in the 1st shell of every site
    n_fe1 = first @ fe
    moments = np.where(fe, M_FE0 + M_FE_PT * n_pt1, M_PT_FE * n_fe1)
    transfer = np.where(fe, -Q_PAIR * n_pt1, Q_PAIR * n_fe1)  # sums to zero exactly: pair by pair
    unlike1 = fe.astype(float) @ first @ pt.astype(float)
    unlike2 = fe.astype(float) @ second @ pt.astype(float)
    energy = (np.where(fe, E_REF[FE], E_REF[PT]).sum() + J1 * unlike1 + J2 * unlike2
              - K_MAG * np.sum(moments[fe] ** 2))
    if noise > 0:
        energy += rng.normal(0, noise)
        moments = moments + rng.normal(0, noise, moments.shape)
    numbers = np.where(fe, FE, PT)
    return float(energy), numbers + transfer, moments


def _generation_key(options: FePtOptions) -> str:
    payload = f"v{GENERATOR_VERSION}:{options.model_dump_json()}"
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def file_name(fe: np.ndarray, i: int) -> str:
    return f"fept_{int(fe.sum()):02d}fe_{i:06d}.lsms"


def missing_files(options: FePtOptions, folder: Path) -> list[str]:
    """Files the generator writes for ``options`` that ``folder`` lacks (the sampling is deterministic)."""
    present = {p.name for p in folder.glob("*.lsms")}
    occupations = sample_occupations(options.max_per_composition, options.seed)
    return [name for name in (file_name(fe, i) for i, fe in enumerate(occupations)) if name not in present]


def generate(options: FePtOptions, folder: Path) -> None:
    """Write every configuration as an LSMS file into ``folder`` (atomically: all or nothing)."""
    positions, cell = lattice(options.a, options.c)
    first, second = shell_matrices(positions, cell)
    rng = np.random.default_rng(options.seed + 1)
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder.parent)  # partial folders of killed generations
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(folder), suffix=".tmp", dir=folder.parent))
    os.chmod(tmp, default_mode(directory=True))
    try:
        for i, fe in enumerate(sample_occupations(options.max_per_composition, options.seed)):
            energy, charges, moments = toy_model(fe, first, second, rng, options.noise)
            write_lsms(tmp / file_name(fe, i), energy, np.where(fe, FE, PT), positions, charges, moments)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not folder.is_dir():  # not another process (e.g. another DDP rank) finishing first: a real error
            raise


def load_fept(options: FePtOptions, context: DatasetContext) -> RawDataset:
    folder = Path(context.cache_dir) / "raw" / f"fept-{_generation_key(options)}"
    notes = []
    missing = missing_files(options, folder) if folder.is_dir() else []
    if missing:  # a lost file would silently shrink the data set under the same cache key
        notes.append(f"fept: {folder} lacks {len(missing)} generated file(s) (e.g. {missing[0]}): regenerated it")
        _discard(folder)
    generated = not folder.is_dir()
    if generated:
        try:
            generate(options, folder)
        except OSError as exc:
            raise unwritable_cache(exc) from None
    raw = load_lsms(options.lsms(folder, "*.lsms"), context)
    count = len(raw.structures) if isinstance(raw.structures, list) else "the"  # load_lsms gives a list
    raw.log[:0] = [*notes, f"fept: {count} configurations as LSMS files in {folder}"
                   + (" (generated now)" if generated else "")]
    return raw


def _discard(folder: Path) -> None:
    """Move a damaged generated folder aside (atomically) and delete it; another process may race us."""
    doomed = folder.with_name(temp_prefix(folder) + "discard.tmp")
    try:
        os.replace(folder, doomed)
    except OSError:
        return  # someone else moved it first
    shutil.rmtree(doomed, ignore_errors=True)


def fingerprint_fept(options: FePtOptions, context: DatasetContext) -> str:
    return f"fept-{_generation_key(options)}"


def read_fept_structures(path: Path, options: FePtOptions | None) -> list:
    """An LSMS file for ``predict``, with the FePt supercell's lattice."""
    return read_lsms_structures(path, (options or FePtOptions()).lsms(path))


@hookimpl
def register_datasets(register):
    register(DatasetSpec(name="fept", description="Generated FePt-like BCT alloy (32 atoms), targets H, C, M",
                         options=FePtOptions, factory=load_fept, fingerprint=fingerprint_fept,
                         read_structures=read_fept_structures, suffixes=(".lsms",)))
