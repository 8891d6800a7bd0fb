"""A third-party plugin package, installed with pip, shows up and trains: no back door for anyone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gin_site(tmp_path_factory):
    """The example package pip-installed into a private folder (the test venv stays clean)."""
    target = tmp_path_factory.mktemp("gin-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT / "examples" / "hydradgl-gin")], check=True,
                   capture_output=True, timeout=300)
    return target


def hydradgl(args, site, cache, tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HYDRADGL_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "hydradgl", *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)


def test_listed_as_external(gin_site, private_cache, tmp_path):
    proc = hydradgl(["list-plugins", "--json"], gin_site, private_cache, tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    gin = next(d for d in data["distributions"] if d["name"] == "hydradgl-gin")
    assert gin == {"name": "hydradgl-gin", "version": "0.1.0", "builtin": False, "status": "ok", "errors": [],
                   "provides": {"conv": ["gin"]}}


def test_trains_with_gin(gin_site, private_cache, tmp_path):
    proc = hydradgl(["train", "--conv", "gin", "--config", str(ROOT / "configs" / "smoke.yaml"), "--epochs", "1",
                     "-o", str(tmp_path / "run"), "--no-plots", "--set", "model.conv_options.aggregator=mean"],
                    gin_site, private_cache, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "training gin x2" in proc.stderr
    metrics = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert set(metrics["heads"]) == {"H", "C", "M"}


def test_bad_gin_option_names_key(gin_site, private_cache, tmp_path):
    proc = hydradgl(["config", "show", "--conv", "gin", "--set", "model.conv_options.aggregator=median"],
                    gin_site, private_cache, tmp_path)
    assert proc.returncode == 1 and "model.conv_options.aggregator" in proc.stderr and "Traceback" not in proc.stderr


def test_without_the_package_gin_is_unknown(private_cache, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hydradgl", "train", "--conv", "gin"], capture_output=True, text=True,
                          env={**os.environ, "HYDRADGL_CACHE": str(private_cache)}, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1 and "unknown conv plugin 'gin'" in proc.stderr
