"""Ensembles: train N members (seeds, optional bootstrap), find them again, and judge their uncertainty.

An ensemble directory holds ``member-0/ ... member-{N-1}/`` (ordinary run directories) and
``ensemble.json`` (the manifest: members, seeds, bootstrap). An experiment directory of one head set
(``runs/experiment/HCM/seed-*``) or any folder of run directories also loads as an ensemble.

Uncertainty metrics (:func:`uncertainty_metrics`), per head, with ``err = mean - true`` and ``std`` the
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

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.special import erfinv

from hydradgl.atomic import atomic_write_text
from hydradgl.config import RunConfig
from hydradgl.data.pipeline import PreparedData, prepare_data
from hydradgl.errors import TrainingError
from hydradgl.plugins import Registry, get_registry

if TYPE_CHECKING:
    from hydradgl.api import TrainedModel

MANIFEST = "ensemble.json"
MANIFEST_FORMAT = 1
STD_FLOOR = 1e-12  # a zero spread (identical members) must not divide by zero
LEVELS = np.linspace(0.01, 0.99, 99)  # nominal coverages of the calibration curve and its area


def _is_run(path: Path) -> bool:
    return (path / "best.pt").is_file() or (path / "last.pt").is_file()


def member_dirs(path: Path) -> list[Path]:
    """The run directories ``path`` stands for: itself (a run), its manifest's members, or its run subfolders."""
    path = Path(path)
    if not path.exists():
        raise TrainingError(f"{path}: no such run or ensemble directory")
    if _is_run(path):
        return [path]
    manifest = path / MANIFEST
    if manifest.is_file():
        try:
            meta = json.loads(manifest.read_text())
            members = [path / m for m in meta["members"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise TrainingError(f"{manifest}: not a readable ensemble manifest ({exc})") from None
        if meta.get("format") != MANIFEST_FORMAT:
            raise TrainingError(f"{manifest}: ensemble manifest format {meta.get('format')} was written by another "
                                f"hydradgl version; this one reads format {MANIFEST_FORMAT}")
        missing = [str(m) for m in members if not _is_run(m)]
        if missing:
            raise TrainingError(f"{manifest}: member(s) {', '.join(missing)} have no best.pt or last.pt")
        return members
    subs = sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []
    runs = [p for p in subs if _is_run(p)]
    if runs:
        return runs
    nested = [p.name for p in subs if any(_is_run(q) for q in p.iterdir() if q.is_dir())]
    if nested:
        raise TrainingError(f"{path}: holds several ensembles ({', '.join(nested)}); load one of them, "
                            f"e.g. {path / nested[0]}")
    raise TrainingError(f"{path}: not a hydradgl run directory (no best.pt or last.pt), ensemble ({MANIFEST}) "
                        "or folder of runs")


def bootstrap(data: PreparedData, seed: int) -> PreparedData:
    """The same data with the training split resampled with replacement (validation and test untouched)."""
    idx = np.random.default_rng(seed).integers(0, len(data.train), len(data.train))
    return replace(data, train=data.train.subset(np.sort(idx)))


def train_ensemble(cfg: RunConfig, members: int, use_bootstrap: bool = False, registry: Registry | None = None,
                   console: Console | None = None, quiet: bool = False, plots_enabled: bool = True,
                   overwrite: bool = False) -> Path:
    """Train ``members`` runs (seeds ``seed .. seed+members-1``) into ``output_dir/member-k`` on one data set."""
    from hydradgl.train.run import train_run

    if members < 2:
        raise TrainingError(f"--ensemble {members}: an ensemble needs at least 2 members")
    registry = registry or get_registry()
    console = console or Console(stderr=True)
    root = Path(cfg.output_dir)
    data = prepare_data(cfg, registry, log=None if quiet else console.print)
    names, seeds = [], []
    for k in range(members):
        member = cfg.model_copy(deep=True)
        member.training.seed = cfg.training.seed + k
        member.output_dir = root / f"member-{k}"
        member_data = bootstrap(data, member.training.seed) if use_bootstrap else data
        result = train_run(member, registry, console=console, quiet=True, data=member_data,
                           plots_enabled=plots_enabled, overwrite=overwrite)
        names.append(f"member-{k}")
        seeds.append(member.training.seed)
        if not quiet:
            scores = "  ".join(f"{h} {m['rmse']:.3e}" for h, m in result.test.items())
            console.print(f"member {k} (seed {member.training.seed}): test RMSE (norm.) {scores}  "
                          f"({result.seconds:.1f} s)", highlight=False)
    manifest = {"format": MANIFEST_FORMAT, "members": names, "seeds": seeds, "bootstrap": use_bootstrap}
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    if not quiet:
        console.print(f"ensemble of {members} written to {root} (load it with hydradgl.load({str(root)!r}))")
    return root


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


def _data_statistics(info) -> tuple:
    """What of a DatasetInfo decides the data a model saw (descriptions and units may be reworded)."""
    return info.species, info.target_min, info.target_max, info.degree_histogram


def evaluate_ensemble(model: "TrainedModel", cfg: RunConfig | None = None, registry: Registry | None = None,
                      plots_dir: Path | None = None,
                      log: Callable[[str], None] | None = None) -> dict[str, dict[str, float]]:
    """Uncertainty metrics per head on the test split (calibration fitted on validation); optional plots."""
    if len(model.members) < 2:
        raise TrainingError(f"{model.run_dirs[0]}: one run is not an ensemble; uncertainty needs at least 2 members")
    first = model.members[0]
    data = prepare_data(cfg or first.cfg, registry, log)
    if any(_data_statistics(m.info) != _data_statistics(data.info) for m in model.members):
        raise TrainingError(f"{', '.join(map(str, model.run_dirs))}: the members were trained on other data than "
                            "the data set evaluated here (normalization statistics differ)")
    val = model.true_mean_std(data.val, data.info)
    test = model.true_mean_std(data.test, data.info)
    metrics = {h: uncertainty_metrics(val[h], test[h]) for h in model.heads}
    for h in model.heads:
        metrics[h]["unit"] = model.units[h]
    if plots_dir is not None:
        from hydradgl.train.plots import uncertainty_plots

        uncertainty_plots({h: (test[h], metrics[h]["calibration"]) for h in model.heads}, model.units, plots_dir)
    return metrics


def uncertainty_table(metrics: dict[str, dict[str, float]]) -> Table:
    table = Table(title="ensemble uncertainty (test; calibration fitted on validation)")
    for col in ("head", "RMSE of mean", "mean std", "within 1 std", "within 2 std", "area", "calib. s",
                "within 1 s*std", "within 2 s*std", "area (s)", "unit"):
        table.add_column(col, justify="left" if col in ("head", "unit") else "right")
    for head, m in metrics.items():
        table.add_row(head, f"{m['rmse']:.4g}", f"{m['mean_std']:.4g}", f"{m['within_1std']:.3f}",
                      f"{m['within_2std']:.3f}", f"{m['miscalibration_area']:.3f}", f"{m['calibration']:.3g}",
                      f"{m['within_1std_calibrated']:.3f}", f"{m['within_2std_calibrated']:.3f}",
                      f"{m['miscalibration_area_calibrated']:.3f}", m["unit"])
    return table
