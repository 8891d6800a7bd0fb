"""``extxyz`` reader plugin: the ``ase`` reader (plugins/datasets/ase_files.py) with the format fixed to
extxyz and ``*.xyz`` files: info keys, per-atom arrays and the calculator's energy, forces and stress."""

from __future__ import annotations

from functools import partial
from typing import Literal

from pydantic import Field

from hydradgl import hookimpl
from hydradgl.plugins import DatasetSpec

from .ase_files import AseFileOptions, fingerprint_ase_files, load_ase_files, read_structures


class ExtxyzOptions(AseFileOptions):
    """extxyz files (any number of frames each)."""

    pattern: str = Field("*.xyz", description="Glob of files inside a folder.")
    format: Literal["extxyz"] = Field("extxyz", description="Always extxyz (the `ase` plugin reads other formats).")


read_extxyz_structures = partial(read_structures, format="extxyz")


@hookimpl
def register_datasets(register):
    register(DatasetSpec(name="extxyz", description="extxyz files read with ASE (info keys, per-atom arrays, "
                                                    "calculator energy, forces and stress)",
                         options=ExtxyzOptions, factory=load_ase_files, fingerprint=fingerprint_ase_files,
                         read_structures=read_extxyz_structures, suffixes=(".xyz", ".extxyz")))
