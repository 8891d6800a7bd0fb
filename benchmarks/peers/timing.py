"""The calculator timing both sides of bench_potential.py use (numpy and torch only: it runs in the MACE venv too)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch


def calculator_seconds(calc: Any, atoms: Any, repeats: int = 20, threads: int = 1) -> float:
    """Median seconds of one energy + forces call of ASE calculator ``calc`` on a copy of ``atoms``, its
    positions nudged before each call so that nothing is reused, after three warm-up calls, with
    ``threads`` torch threads (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _median_call(calc, atoms, repeats)
    finally:
        torch.set_num_threads(before)


def _median_call(calc: Any, atoms: Any, repeats: int) -> float:
    atoms = atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng(0)
    times = []
    for i in range(repeats + 3):
        atoms.positions = atoms.positions + rng.normal(0.0, 1e-4, atoms.positions.shape)
        started = time.perf_counter()
        atoms.get_potential_energy()
        atoms.get_forces()
        if i >= 3:
            times.append(time.perf_counter() - started)
    return float(np.median(times))
