"""Ensembles: training N members, loading them, uncertainty metrics and calibration, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import hydradgl
from hydradgl.cli import main
from hydradgl.errors import TrainingError
from hydradgl.train.ensemble import bootstrap, train_ensemble
from hydradgl.train.uncertainty import uncertainty_metrics
from tests.conftest import small_config


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory, small_prepared):
    cfg = small_config(tmp_path_factory.mktemp("ens"), **{"training.epochs": 1, "training.seed": 5})
    return train_ensemble(cfg, 3, use_bootstrap=True, quiet=True, plots_enabled=False)


def test_ensemble_directory_and_manifest(ensemble):
    manifest = json.loads((ensemble / "ensemble.json").read_text())
    assert manifest == {"format": 1, "members": ["member-0", "member-1", "member-2"], "seeds": [5, 6, 7],
                        "bootstrap": True}
    seeds = [hydradgl.load(ensemble / m).cfg.training.seed for m in manifest["members"]]
    assert seeds == [5, 6, 7]
    model = hydradgl.load(ensemble)
    assert model.is_ensemble and len(model.members) == 3


def test_bootstrap_resamples_train_only(small_prepared):
    a, b = bootstrap(small_prepared, 0), bootstrap(small_prepared, 1)
    assert len(a.train) == len(small_prepared.train) and a.val is small_prepared.val and a.test is small_prepared.test
    ids_a, ids_b = a.train.ids, b.train.ids
    assert set(ids_a) <= set(small_prepared.train.ids) and len(set(ids_a)) < len(ids_a)  # repeats
    assert not np.array_equal(ids_a, ids_b)
    np.testing.assert_array_equal(bootstrap(small_prepared, 0).train.ids, ids_a)


def test_uncertainty_metrics_on_known_distributions():
    """Errors drawn with twice the predicted std: s = 2, and after scaling 68%/95% fall within 1/2 std."""
    rng = np.random.default_rng(0)
    std = rng.uniform(0.5, 1.5, 200_000)
    true = np.zeros_like(std)
    val = (true, 2 * std * rng.standard_normal(std.size), std)
    test = (true, 2 * std * rng.standard_normal(std.size), std)
    m = uncertainty_metrics(val, test)
    assert m["calibration"] == pytest.approx(2.0, rel=0.01) and m["calibration_rms"] == pytest.approx(2.0, rel=0.01)
    assert m["miscalibration_area_calibrated"] < 0.005 < m["miscalibration_area"]
    assert m["within_1std"] == pytest.approx(0.383, abs=0.005)  # P(|z| < 0.5)
    assert m["within_1std_calibrated"] == pytest.approx(0.683, abs=0.005)
    assert m["within_2std_calibrated"] == pytest.approx(0.954, abs=0.005)
    assert m["rmse"] == pytest.approx(2 * np.sqrt(np.mean(std ** 2)), rel=0.01)
    assert m["mean_std"] == pytest.approx(float(std.mean()))


def test_calibration_of_heavy_tailed_errors_matches_the_analytic_optimum():
    """Laplace errors (scale b) against std = 1: coverage of the interval +-s z_p is 1 - exp(-s z_p / b), so
    the least-area s is found independently by minimizing that curve's gap to the diagonal. The
    variance-matching scale (sqrt(2) b) overshoots it and puts more than 68.3% within 1 std."""
    from scipy.optimize import minimize_scalar
    from scipy.special import erfinv

    from hydradgl.train.uncertainty import LEVELS

    rng = np.random.default_rng(1)
    b, n = 0.7, 400_000
    val = (np.zeros(n), rng.laplace(0, b, n), np.ones(n))
    test = (np.zeros(n), rng.laplace(0, b, n), np.ones(n))
    z = np.sqrt(2) * erfinv(LEVELS)
    exact = minimize_scalar(lambda s: np.mean(np.abs(1 - np.exp(-s * z / b) - LEVELS)), bounds=(0.1, 5),
                            method="bounded").x
    m = uncertainty_metrics(val, test)
    assert m["calibration"] == pytest.approx(exact, rel=0.01)
    assert m["calibration_rms"] == pytest.approx(np.sqrt(2) * b, rel=0.01)
    assert m["miscalibration_area_calibrated"] < m["miscalibration_area"]
    assert m["within_1std_calibrated"] == pytest.approx(1 - np.exp(-exact / b), abs=0.005)
    assert np.mean(np.abs(test[1]) <= m["calibration_rms"]) > m["within_1std_calibrated"] + 0.03


def test_cli_evaluate_and_predict_on_an_ensemble(ensemble, small_prepared, tmp_path):
    res = CliRunner().invoke(main, ["evaluate", str(ensemble), "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)  # the note on where the plots went is on stderr
    assert set(metrics) == {"H", "C", "M"}
    saved = json.loads((ensemble / "ensemble_metrics.json").read_text())
    for head, m in metrics.items():
        assert saved[head] == m
        assert 0 <= m["within_1std"] <= m["within_2std"] <= 1 and m["calibration"] > 0 and m["mean_std"] > 0
        assert (ensemble / "plots" / f"uncertainty_{head}.png").is_file()
        assert (ensemble / "plots" / f"calibration_{head}.png").is_file()
    # The reported RMSE is that of the ensemble mean, recomputed here from predict on the test files.
    pred = hydradgl.load(ensemble).predict(small_prepared.test.sources)
    from hydradgl.data.normalize import Normalizer

    norm = Normalizer.from_info(small_prepared.info)
    true_h = small_prepared.test.graph_targets["H"][:, 0] * norm.span["H"][0] + norm.lo["H"][0]
    rmse = float(np.sqrt(np.mean((pred.structures["H"] - true_h) ** 2)))
    assert metrics["H"]["rmse"] == pytest.approx(rmse, rel=1e-4)
    out = tmp_path / "p.csv"
    res = CliRunner().invoke(main, ["predict", str(ensemble), *small_prepared.test.sources[:2], "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_text().splitlines()[0] == "structure,source,n_atoms,H,H_std"
    assert (tmp_path / "p.atoms.csv").read_text().splitlines()[0] == "structure,source,atom,Z,C,C_std,M,M_std"


def test_ensemble_cli_errors(tmp_path):
    res = CliRunner().invoke(main, ["train", "--bootstrap", "-o", str(tmp_path)])
    assert res.exit_code == 1 and "--bootstrap resamples the members of an ensemble" in res.output
    res = CliRunner().invoke(main, ["train", "--ensemble", "1", "-o", str(tmp_path), "--set",
                                    "dataset.options.max_per_composition=5"])
    assert res.exit_code == 1 and "at least 2 members" in res.output
    with pytest.raises(TrainingError, match="not a readable ensemble manifest"):
        (tmp_path / "ensemble.json").write_text("{")
        hydradgl.load(tmp_path)
