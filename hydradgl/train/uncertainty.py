"""Uncertainty metrics of an ensemble's predictions (numpy and scipy, no torch), used by the
ensemble evaluation and its plots.

The metrics (:func:`uncertainty_metrics`), per head, with ``err = mean - true`` and ``std`` the
members' sample standard deviation: RMSE of the mean; mean predicted std; fractions of ``|err|`` within
1 and 2 std; the miscalibration area (mean absolute gap between the observed and nominal coverage of
the central Gaussian intervals at levels 1%..99%: 0 is perfect); and a calibration factor ``s`` fitted
on the validation split: the scale of std whose calibration curve is closest to the diagonal (least
miscalibration area), with the test fractions and area after scaling std by ``s``. Also reported:
``calibration_rms``, the variance-matching scale ``sqrt(mean(err^2 / std^2))``, which equals ``s`` for
Gaussian errors but overshoots it when a few large errors dominate (heavy tails, as ensembles show).
A perfectly calibrated Gaussian predictor puts 68.3% of errors within 1 std and 95.4% within 2.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erfinv

STD_FLOOR = 1e-12  # a zero spread (identical members) must not divide by zero
LEVELS = np.linspace(0.01, 0.99, 99)  # nominal coverages of the calibration curve and its area


def within(err: np.ndarray, std: np.ndarray, k: float) -> float:
    """Fraction of errors with ``|err| <= k * std``."""
    return float(np.mean(np.abs(err) <= k * std))


def variance_factor(err: np.ndarray, std: np.ndarray) -> float:
    """``sqrt(mean(err^2 / std^2))``: scaling std by it makes the normalized errors unit-variance."""
    return float(np.sqrt(np.mean(err ** 2 / np.maximum(std, STD_FLOOR) ** 2)))


def _coverage(err: np.ndarray, std: np.ndarray, half_widths: np.ndarray) -> np.ndarray:
    """Fraction of errors with ``|err| <= w * std`` for every ``w`` in ``half_widths`` (any shape)."""
    ratios = np.sort(np.abs(err) / np.maximum(std, STD_FLOOR))
    return np.searchsorted(ratios, half_widths, side="right") / max(ratios.size, 1)


def coverage_curve(err: np.ndarray, std: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Observed fraction of errors inside the central Gaussian interval of each nominal level."""
    return _coverage(err, std, np.sqrt(2.0) * erfinv(levels))


def miscalibration_area(err: np.ndarray, std: np.ndarray) -> float:
    """Mean absolute gap between observed and nominal coverage over LEVELS (0: calibrated)."""
    return float(np.mean(np.abs(coverage_curve(err, std, LEVELS) - LEVELS)))


def calibration_factor(err: np.ndarray, std: np.ndarray) -> float:
    """The scale of ``std`` with the least miscalibration area, searched on a log grid (0.25% steps) from
    1/1000 to 10 times the variance-matching scale (scaling std by s moves every interval edge by s)."""
    grid = variance_factor(err, std) * np.exp(np.linspace(np.log(1e-3), np.log(10.0), 3000))
    covered = _coverage(err, std, grid[:, None] * (np.sqrt(2.0) * erfinv(LEVELS))[None, :])
    return float(grid[int(np.argmin(np.abs(covered - LEVELS).mean(axis=1)))])


def uncertainty_metrics(val: tuple[np.ndarray, np.ndarray, np.ndarray],
                        test: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, float]:
    """Metrics of one head from (true, mean, std) arrays on validation and test (see the module docstring)."""
    v_err, v_std = val[1] - val[0], np.maximum(val[2], STD_FLOOR)
    t_err, t_std = test[1] - test[0], np.maximum(test[2], STD_FLOOR)
    s, s_rms = (calibration_factor(v_err, v_std), variance_factor(v_err, v_std)) if v_err.size else (1.0, 1.0)
    return {"rmse": float(np.sqrt(np.mean(t_err ** 2))), "mean_std": float(np.mean(t_std)),
            "within_1std": within(t_err, t_std, 1), "within_2std": within(t_err, t_std, 2),
            "miscalibration_area": miscalibration_area(t_err, t_std),
            "calibration": s, "calibration_rms": s_rms,
            "within_1std_calibrated": within(t_err, s * t_std, 1),
            "within_2std_calibrated": within(t_err, s * t_std, 2),
            "miscalibration_area_calibrated": miscalibration_area(t_err, s * t_std), "values": int(t_err.size)}
