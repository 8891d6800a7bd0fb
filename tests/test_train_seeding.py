"""Random-number-generator state survives a checkpoint round trip, so a resumed run draws what the
uninterrupted one would have drawn (torch, numpy and python generators); checkpoints of another format
are named as such."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from hydradgl.errors import TrainingError
from hydradgl.train.checkpoint import load_checkpoint, save_checkpoint
from hydradgl.train.seeding import rng_state, seed_everything, set_rng_state


def draws() -> tuple[float, float, float, float]:
    return random.random(), float(np.random.rand()), float(np.random.normal()), float(torch.rand(()))


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    seed_everything(7)
    draws()
    np.random.normal()  # leaves a cached Gaussian in numpy's legacy state
    save_checkpoint(tmp_path / "last.pt", {"rng": rng_state()})
    expected = draws()
    seed_everything(123)  # scramble every generator
    set_rng_state(load_checkpoint(tmp_path / "last.pt")["rng"])
    assert draws() == expected


def test_same_seed_same_draws_other_seed_differs():
    seed_everything(1)
    first = draws()
    seed_everything(1)
    assert draws() == first
    seed_everything(2)
    assert draws() != first


def test_checkpoint_of_another_format_is_named(tmp_path):
    torch.save({"format": 1, "model": {}}, tmp_path / "old.pt")
    with pytest.raises(TrainingError, match=r"old.pt: checkpoint format 1 was written by another hydradgl version"):
        load_checkpoint(tmp_path / "old.pt")
    torch.save({"model": {}}, tmp_path / "foreign.pt")
    with pytest.raises(TrainingError, match=r"foreign.pt: not a hydradgl checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
