"""Shared fixtures: a private cache, a small FePt configuration, its prepared data."""

from __future__ import annotations

import pytest
import torch

from hydradgl.configio import load_config
from hydradgl.data.pipeline import prepare_data
from hydradgl.plugins import get_registry

torch.set_num_threads(2)

# A small but complete FePt set: every composition, at most 5 configurations each (157 graphs).
SMALL_FEPT = {"dataset.options": {"max_per_composition": 5}}


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Every test writes its caches under a temporary folder, never into ~/.cache."""
    path = tmp_path_factory.mktemp("hydradgl-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("HYDRADGL_CACHE", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="session")
def registry():
    return get_registry()


def small_config(tmp_path=None, **overrides):
    """The small FePt config with a small model on the CPU (the GPU tests ask for CUDA themselves), plus
    dotted-key overrides."""
    base = {**SMALL_FEPT, "model.hidden": 16, "model.layers": 2, "training.batch_size": 16,
            "training.epochs": 2, "training.threads": 2, "training.device": "cpu"}
    if tmp_path is not None:
        base["output_dir"] = str(tmp_path / "run")
    base.update(overrides)
    return load_config(None, base)


@pytest.fixture(scope="session")
def small_prepared(registry):
    return prepare_data(small_config(), registry)
