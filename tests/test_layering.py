"""The package's layering (pyproject.toml's [tool.importlinter]): kept by the code, broken by a planted
upward import, a planted import cycle (even a function-level one) and a core module importing a plugin."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(src: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with the project's contracts on the packages found in ``src`` first."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=src, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the two packages under the names they are imported by."""
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "hydradgl", tmp_path / "hydradgl", ignore=ignore)
    shutil.copytree(ROOT / "plugins", tmp_path / "hydradgl_plugins", ignore=ignore)
    return tmp_path


def plant(tree: Path, module: str, code: str) -> None:
    path = tree / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + "\n\n" + code + "\n")


def test_the_contracts_are_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_the_copy_is_what_is_checked(tree):
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_upward_import_breaks_the_layers(tree):
    plant(tree, "hydradgl.data.records", "import hydradgl.train.run  # planted")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "hydradgl layers" in result.stdout and "BROKEN" in result.stdout
    assert "hydradgl.data.records -> hydradgl.train.run" in result.stdout


def test_a_lazy_import_cycle_between_siblings_is_broken(tree):
    # hydradgl.train.plots imports hydradgl.train.uncertainty; a function-level import back closes a cycle
    plant(tree, "hydradgl.train.uncertainty", "def _planted():\n    from hydradgl.train import plots  # noqa: F401")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "no import cycles" in result.stdout and "BROKEN" in result.stdout


def test_core_importing_a_plugin_is_broken(tree):
    plant(tree, "hydradgl.model.heads", "import hydradgl_plugins.heads.graph  # planted")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "hydradgl.model.heads -> hydradgl_plugins.heads.graph" in result.stdout
