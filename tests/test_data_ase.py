"""The ``ase`` reader: formats, calculator results or named keys, units, stress conventions, masked frames;
NaN-aware loss, statistics and baselines; the recommended potential config on a folder of files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from hydradgl.configio import load_config, parse_options
from hydradgl.data.baselines import composition_features, composition_fit_prediction, element_counts, rmse
from hydradgl.data.packing import check_finite
from hydradgl.data.pipeline import load_dataset
from hydradgl.data.records import Structure, TargetInfo
from hydradgl.errors import ConfigError, DataError
from hydradgl.model.loss import present_mean_loss
from hydradgl.plugins import DatasetContext
from hydradgl_plugins.datasets.ase_files import AseFileOptions, load_ase_files
from tests.conftest import small_config

ROOT = Path(__file__).resolve().parents[1]
VASPRUN = Path(__file__).parent / "data" / "vasprun.xml"


def frames(n: int = 3, seed: int = 0, forces: bool = True, stress=True) -> list[Atoms]:
    """Cu-Au pairs in a 4 A cell with random energy, forces and Voigt stress attached as calculator results."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        atoms = Atoms("CuAu", positions=[[0, 0, 0], [1.8 + 0.1 * i, 0.1, 0]], cell=np.eye(3) * 4, pbc=True)
        results = {"energy": float(rng.normal())}
        if forces:
            results["forces"] = rng.normal(size=(2, 3))
        if stress is True:
            results["stress"] = rng.normal(size=6)
        atoms.calc = SinglePointCalculator(atoms, **results)
        out.append(atoms)
    return out


def read(path: Path, **options):
    parsed = parse_options(AseFileOptions, {"path": str(path), **options}, "dataset.options", plugin="ase")
    return load_ase_files(parsed, DatasetContext(cache_dir=path.parent))


def stacked(raw, name: str) -> np.ndarray:
    return np.stack([s.targets[name] for s in raw.structures])


@pytest.mark.parametrize("suffix", [".xyz", ".traj", ".db"])
def test_calculator_results_read_back_from_every_format(tmp_path, suffix):
    written = frames()
    write(tmp_path / f"f{suffix}", written)  # the format from the name, as a user's files
    raw = read(tmp_path / f"f{suffix}")
    assert [s.source for s in raw.structures] == [f"{tmp_path / f'f{suffix}'}#{i}" for i in range(3)]
    expected = {k: np.stack([np.reshape(a.calc.results[k], -1 if k != "forces" else (2, 3)) for a in written])
                for k in ("energy", "forces", "stress")}
    for name, values in expected.items():
        np.testing.assert_allclose(stacked(raw, name), values, rtol=1e-7, atol=1e-10)
    assert (raw.targets["energy"].level, raw.targets["energy"].unit, raw.targets["energy"].extensive) == \
        ("graph", "eV", True)
    assert (raw.targets["forces"].level, raw.targets["forces"].dim) == ("node", 3)
    assert (raw.targets["stress"].dim, raw.targets["stress"].unit) == (6, "eV/A^3")
    assert not any(t.partial for t in raw.targets.values())


def test_vasprun_energy_free_energy_forces_and_stress(tmp_path):
    """ASE gives VASP's stress in its own convention, kbar -> eV/A^3; the second step has no stress."""
    with pytest.raises(DataError, match=r"vasprun.xml#1: no stress \(stress_key 'stress'.*1 of 2 frames have it"):
        read(VASPRUN)
    raw = read(VASPRUN, missing="mask")
    np.testing.assert_allclose(stacked(raw, "energy")[:, 0], [-7.1, -7.25])
    np.testing.assert_allclose(raw.structures[0].targets["forces"], [[0.1, 0.2, 0.3], [-0.1, -0.2, -0.3]])
    kbar = 0.1 * units.GPa
    np.testing.assert_allclose(raw.structures[0].targets["stress"], [-10 * kbar, -20 * kbar, -30 * kbar,
                                                                      -3 * kbar, -2 * kbar, -1 * kbar])
    assert np.isnan(raw.structures[1].targets["stress"]).all() and raw.targets["stress"].partial
    assert "stress missing in 1 of 2 frames (masked)" in raw.log
    free = read(VASPRUN, energy_key="free_energy", stress_key=None)
    np.testing.assert_allclose(stacked(free, "energy")[:, 0], [-7.0, -7.2])
    assert set(free.targets) == {"energy", "forces"}
    last = read(VASPRUN, index="-1", stress_key=None)
    assert [s.source for s in last.structures] == [f"{VASPRUN}#1"]  # frames keep their number in the file


def test_named_keys_instead_of_the_calculator_and_unit_conversion(tmp_path):
    written = frames(stress=False)
    for i, atoms in enumerate(written):
        atoms.info["REF_energy"] = -0.5 * i  # Ry
        atoms.arrays["REF_forces"] = np.full((2, 3), 0.1 * i)  # Ry/A
        atoms.info["REF_stress"] = np.arange(6.0) + i  # kbar
    write(tmp_path / "ry.xyz", written)
    raw = read(tmp_path / "ry.xyz", energy_key="REF_energy", forces_key="REF_forces", stress_key="REF_stress",
               energy_unit="Ry", stress_unit="kbar")
    np.testing.assert_allclose(stacked(raw, "energy")[:, 0], -0.5 * np.arange(3) * units.Ry)  # not the calculator's
    np.testing.assert_allclose(raw.structures[2].targets["forces"], np.full((2, 3), 0.2 * units.Ry))
    np.testing.assert_allclose(raw.structures[1].targets["stress"], (np.arange(6.0) + 1) * 1e3 * units.bar)
    assert any(note.startswith("energies converted from Ry to eV (x 13.605693") for note in raw.log)
    assert any("stress converted from kbar to eV/A^3" in note for note in raw.log)
    per_volume = read(tmp_path / "ry.xyz", energy_key="REF_energy", forces_key=None, stress_key="REF_stress",
                      energy_unit="Ry")  # stress_unit default: the energy unit per A^3
    np.testing.assert_allclose(per_volume.structures[1].targets["stress"], (np.arange(6.0) + 1) * units.Ry)


def test_3x3_stress_to_voigt_pressure_sign_and_an_asymmetric_tensor(tmp_path):
    written = frames(n=2, stress=False)
    tensor = np.array([[1.0, 6.0, 5.0], [6.0, 2.0, 4.0], [5.0, 4.0, 3.0]])
    for atoms in written:
        atoms.info["S"] = tensor.copy()
    write(tmp_path / "s.traj", written)
    raw = read(tmp_path / "s.traj", stress_key="S")
    np.testing.assert_allclose(raw.structures[0].targets["stress"], [1, 2, 3, 4, 5, 6])  # xx yy zz yz xz xy
    flipped = read(tmp_path / "s.traj", stress_key="S", stress_convention="pressure")
    np.testing.assert_allclose(flipped.structures[1].targets["stress"], [-1, -2, -3, -4, -5, -6])
    assert any("pressure convention" in note for note in flipped.log)
    written[1].info["S"] = tensor + np.triu(np.ones((3, 3)), 1)
    write(tmp_path / "s.traj", written)
    with pytest.raises(DataError, match=r"s.traj#1: stress 'S' is a 3x3 tensor that is not symmetric"):
        read(tmp_path / "s.traj", stress_key="S")


def test_missing_forces_error_names_frame_and_key_mask_keeps_it(tmp_path):
    written = frames(n=4, stress=False)
    written[2].calc = SinglePointCalculator(written[2], energy=1.5)
    write(tmp_path / "x.xyz", written)
    with pytest.raises(DataError, match=r"x.xyz#2: no forces \(forces_key 'forces': not in atoms.arrays nor in the "
                                        r"calculator's results\), while 3 of 4 frames have it; set "
                                        r"dataset.options.missing: mask"):
        read(tmp_path / "x.xyz")
    raw = read(tmp_path / "x.xyz", missing="mask")
    assert "forces missing in 1 of 4 frames (masked)" in raw.log
    assert raw.targets["forces"].partial and not raw.targets["energy"].partial
    assert np.isnan(raw.structures[2].targets["forces"]).all() and raw.structures[2].targets["forces"].shape == (2, 3)
    energyless = frames(n=2)
    energyless[1].calc = SinglePointCalculator(energyless[1], forces=np.zeros((2, 3)), stress=np.zeros(6))
    write(tmp_path / "e.xyz", energyless)
    with pytest.raises(DataError, match=r"e.xyz#1: no energy .*every frame needs one"):
        read(tmp_path / "e.xyz", missing="mask")  # energies are never masked
    none = read(tmp_path / "x.xyz", missing="mask", forces_key="no_such_array")
    assert "forces" not in none.targets
    assert "forces: no frame has 'no_such_array' (forces_key), not a target" in none.log


def test_masked_frames_are_stored_nan_and_ignored_by_the_statistics(tmp_path):
    written = frames(n=6, stress=False)
    written[1].calc = SinglePointCalculator(written[1], energy=0.5)
    write(tmp_path / "x.xyz", written)
    cfg = small_config(tmp_path, **{"dataset.name": "ase", "dataset.options": {"path": str(tmp_path / "x.xyz"),
                                                                               "missing": "mask"},
                                    "dataset.cache_dir": str(tmp_path / "cache"), "graph.periodic": True,
                                    "graph.radius": 3.0})
    data = load_dataset(cfg)
    forces = np.asarray(data.graphs.node_targets["forces"])
    assert np.isnan(forces[2:4]).all() and np.isfinite(np.delete(forces, [2, 3], axis=0)).all()
    present = np.concatenate([a.calc.results["forces"] for i, a in enumerate(written) if i != 1])
    lo, hi = data.store.target_range(np.arange(6))
    np.testing.assert_allclose(lo["forces"], present.min(axis=0), rtol=1e-6)
    np.testing.assert_allclose(hi["forces"], present.max(axis=0), rtol=1e-6)
    statistics = data.store.manifest["statistics"]
    np.testing.assert_allclose(statistics["target_min"]["forces"], present.min(axis=0), rtol=1e-6)
    lo, _ = data.store.target_range(np.array([1]))  # only the masked frame: no value
    assert np.isinf(lo["forces"]).all()
    assert data.store.targets["forces"].partial


def test_nan_stays_refused_for_a_target_that_is_not_partial():
    s = Structure(numbers=np.array([29]), positions=np.zeros((1, 3)), source="a.xyz#3",
                  targets={"q": np.array([[np.nan]]), "forces": np.full((1, 3), np.nan)})
    with pytest.raises(DataError, match=r"a.xyz#3: target 'q' has NaN or infinite values"):
        check_finite([s], {"q": TargetInfo(level="node"), "forces": TargetInfo(level="node", dim=3, partial=True)})
    s.targets["q"] = np.array([[1.0]])
    check_finite([s], {"q": TargetInfo(level="node"), "forces": TargetInfo(level="node", dim=3, partial=True)})
    s.targets["forces"] = np.array([[np.nan, 0.0, 0.0]])  # partly NaN: not a masked frame
    with pytest.raises(DataError, match=r"target 'forces' has NaN"):
        check_finite([s], {"forces": TargetInfo(level="node", dim=3, partial=True)})


@pytest.mark.parametrize("loss", ["mse", "mae", "huber"])
def test_loss_is_the_mean_over_present_entries(loss):
    rng = np.random.default_rng(1)
    pred = rng.normal(size=(5, 3)) * 2
    true = rng.normal(size=(5, 3))
    true[1] = np.nan
    true[3, 2] = np.nan
    keep = np.isfinite(true)
    d = pred[keep] - true[keep]
    expected = {"mse": np.mean(d ** 2), "mae": np.mean(np.abs(d)),
                "huber": np.mean(np.where(np.abs(d) < 1, 0.5 * d ** 2, np.abs(d) - 0.5))}[loss]
    p = torch.tensor(pred, requires_grad=True)
    value = present_mean_loss(loss, p, torch.tensor(true))
    assert value.item() == pytest.approx(expected, rel=1e-12)
    value.backward()
    assert p.grad is not None and torch.all(p.grad[1] == 0) and torch.isfinite(p.grad).all()
    none = torch.tensor(pred, requires_grad=True)
    empty = present_mean_loss(loss, none, torch.full((5, 3), float("nan"), dtype=torch.float64))
    empty.backward()
    assert empty.item() == 0.0 and none.grad is not None and torch.all(none.grad == 0)


def test_composition_baseline_and_rmse_skip_nan(small_prepared):
    train = small_prepared.train.with_normalizer(None).materialize()
    species = small_prepared.info.species
    values = np.array(train.graph_targets["H"], dtype=np.float64)
    masked = values.copy()
    masked[::3] = np.nan
    fit = composition_fit_prediction(train.with_targets({"H": masked}, {}), train, "H", species)
    x = composition_features(element_counts(train, species))
    keep = np.isfinite(masked[:, 0])
    coef, *_ = np.linalg.lstsq(x[keep], values[keep], rcond=None)
    np.testing.assert_allclose(fit, x @ coef, rtol=1e-9, atol=1e-9)
    assert rmse(np.array([1.0, 2.0, 5.0]), np.array([0.0, np.nan, 1.0])) == pytest.approx(np.sqrt((1 + 16) / 2))


def test_unreadable_files_and_options_are_named(tmp_path):
    (tmp_path / "bad.xyz").write_text("2\nnot a comment line = [\nCu 0 0\n")
    with pytest.raises(DataError, match=r"bad.xyz: not readable by ase.io as extxyz"):
        read(tmp_path / "bad.xyz")
    (tmp_path / "notes.qqq").write_text("hello\n")
    with pytest.raises(DataError, match=r"notes.qqq: ase.io cannot tell this file's format"):
        read(tmp_path / "notes.qqq")
    with pytest.raises(ConfigError, match=r"format: Value error, 'outcar' is not a format ase.io reads"):
        read(tmp_path / "bad.xyz", format="outcar")
    with pytest.raises(ConfigError, match=r"target 'energy' is given twice"):
        read(tmp_path / "bad.xyz", energy_key="E", targets={"energy": {"key": "E", "level": "graph"}})


def test_predict_reads_vasprun_and_outcar_names_with_the_ase_reader(tmp_path):
    from hydradgl.data.prediction import read_for_prediction

    structures = read_for_prediction([VASPRUN], small_config().dataset)  # a model trained on fept (LSMS files)
    assert [s.source for s in structures] == [f"{VASPRUN}#0", f"{VASPRUN}#1"]
    assert structures[1].positions[0, 0] == pytest.approx(0.04) and structures[0].cell is not None
    from hydradgl.data.prediction import _reader
    from hydradgl.plugins import get_registry

    registry = get_registry()
    lsms = registry.dataset("lsms")
    assert _reader(Path("run7/OUTCAR"), lsms, registry).name == "ase"
    assert _reader(Path("relax.traj"), lsms, registry).name == "ase"
    assert _reader(Path("run7/OUTCAR"), registry.dataset("ase"), registry).name == "ase"


@pytest.mark.parametrize("missing", ["error", "mask"])
def test_recommended_potential_config_trains_on_a_folder_of_extxyz(tmp_path, missing):
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from hydradgl.train.run import train_run

    rng = np.random.default_rng(0)
    folder = tmp_path / "dft"
    folder.mkdir()
    for f in range(2):
        labelled = []
        for i in range(8):
            atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
            atoms.symbols[rng.integers(0, 4, size=1 + i % 3)] = "Au"
            atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
            atoms.calc = EMT()
            atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
            labelled.append(atoms)
        if missing == "mask":
            labelled[3].calc = SinglePointCalculator(labelled[3], energy=labelled[3].get_potential_energy())
        write(folder / f"part{f}.xyz", labelled)
    cfg = load_config(ROOT / "configs" / "potential.yaml", {
        "dataset.options.path": str(folder), "dataset.options.missing": missing,
        "dataset.cache_dir": str(tmp_path / "cache"), "training.epochs": 1, "training.threads": 2,
        "training.device": "cpu", "output_dir": str(tmp_path / "run")})
    assert (cfg.model.conv, cfg.model.hidden, cfg.model.layers, cfg.graph.radius) == ("schnet", 64, 3, 4.0)
    result = train_run(cfg, quiet=True, plots_enabled=False)
    assert {"energy", "forces"} <= set(result.test)
    assert all(np.isfinite(result.test[h]["rmse_phys"]) for h in ("energy", "forces"))
    log = (cfg.output_dir / "run.log").read_text()
    assert "read 16 structures from 2 file(s) (extxyz: 2)" in log
    assert ("forces missing in 2 of 16 frames (masked)" in log) == (missing == "mask")
