"""The units errors are shown in: meV, meV/atom, meV/A and GPa rather than eV, eV/A and eV/A^3.

Metrics are computed and stored in a head's own unit (``rmse_phys``, ``mae_phys``); the test table,
``evaluate``, TensorBoard and the parity plots show them scaled by :data:`DISPLAY_UNITS`, and a
potential head's energy by its error per atom. A unit not in the table is shown as it is (``Ry``,
``e``, ``mu_B``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ase.units import GPa

#: A head's unit -> (the unit shown, the factor from one to the other: shown = factor * value).
DISPLAY_UNITS: dict[str, tuple[str, float]] = {
    "eV": ("meV", 1e3),
    "eV/atom": ("meV/atom", 1e3),
    "eV/A": ("meV/A", 1e3),
    "eV/Å": ("meV/Å", 1e3),
    "eV/A^3": ("GPa", 1 / GPa),
    "eV/Å^3": ("GPa", 1 / GPa),
}


def display_unit(unit: str) -> tuple[str, float]:
    """The unit values in ``unit`` are shown in, and the factor that converts them."""
    return DISPLAY_UNITS.get(unit, (unit, 1.0))


def per_atom_unit(unit: str) -> str:
    """The unit of a quantity in ``unit`` divided by the structure's atom count."""
    return f"{unit}/atom" if unit else "per atom"


def displayed_errors(metrics: Mapping[str, Any]) -> tuple[float, float, str]:
    """(RMSE, MAE, unit) of one head's metrics (``rmse_phys``, ``mae_phys``, ``unit``, and for a
    potential's energy ``rmse_per_atom``, ``mae_per_atom``) as they are shown: the energy per atom where
    the metrics hold it, in the display unit of :data:`DISPLAY_UNITS`. Reads metrics written before the
    per-atom fields existed as well (they are then shown per structure)."""
    if "rmse_per_atom" in metrics:
        unit, factor = display_unit(per_atom_unit(metrics["unit"]))
        return factor * metrics["rmse_per_atom"], factor * metrics["mae_per_atom"], unit
    unit, factor = display_unit(metrics["unit"])
    return factor * metrics["rmse_phys"], factor * metrics["mae_phys"], unit
