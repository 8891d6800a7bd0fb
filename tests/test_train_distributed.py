"""Data-parallel training on CPU with gloo: two ranks end with identical parameters; a potential trained
on forces (double backward under DistributedDataParallel) on two ranks equals one process on the same
global batches; torchrun launches."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.conftest import small_config
from tests.test_potential import emt_config

# Two ranks of 8 graphs each see, batch by batch, the 16 graphs one process of batch 16 sees (the loader
# deals a shared order out rank by rank); every emt-alloy cell has 32 atoms, so the mean of the ranks'
# losses is the loss of the whole batch (no batch norm: a potential refuses it).
POTENTIAL_DDP = {"training.epochs": 2}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, out: str, cache: str, potential: bool = False) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), HYDRADGL_CACHE=cache)
    from hydradgl.train.run import train_run

    if potential:
        cfg = emt_config(Path(out), **POTENTIAL_DDP, **{"training.threads": 1, "training.batch_size": 8})
    else:
        cfg = small_config(Path(out), **{"training.threads": 1, "training.epochs": 2})
    result = train_run(cfg, quiet=True, plots_enabled=False)
    torch.save({k: v.clone() for k, v in result.model.state_dict().items()}, Path(out) / f"rank{rank}.pt")
    torch.save(result.history, Path(out) / f"history{rank}.pt")


def test_two_gloo_ranks_end_identical(tmp_path, private_cache):
    from hydradgl.data.pipeline import load_dataset

    load_dataset(small_config())  # fill the cache first; the ranks then only read it
    mp.spawn(worker, args=(2, free_port(), str(tmp_path), str(private_cache)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (tmp_path / "run" / "last.pt").exists() and (tmp_path / "run" / "test_metrics.json").exists()


def test_force_training_on_two_ranks_equals_one_process_on_the_global_batch(tmp_path, private_cache):
    from hydradgl.data.pipeline import load_dataset
    from hydradgl.train.run import train_run

    single = train_run(emt_config(tmp_path / "single", **POTENTIAL_DDP, **{"training.batch_size": 16}),
                       quiet=True, plots_enabled=False)  # also fills the cache the ranks read
    load_dataset(emt_config())
    mp.spawn(worker, args=(2, free_port(), str(tmp_path), str(private_cache), True), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key, value in single.model.state_dict().items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-4, atol=1e-5, msg=key)
    history = torch.load(tmp_path / "history0.pt", weights_only=True)
    for row, expected in zip(history, single.history, strict=True):
        for column in ("train_loss", "train_energy_loss", "train_forces_loss", "val_loss", "val_forces_rmse"):
            assert row[column] == pytest.approx(expected[column], rel=1e-4), column


def test_torchrun_launch(tmp_path, private_cache):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           "-m", "hydradgl", "train", "--config", str(Path(__file__).parents[1] / "configs" / "smoke.yaml"),
           "--epochs", "1", "--device", "cpu", "-o", str(tmp_path / "run"), "--set", "training.threads=1", "--no-plots"]
    env = {**os.environ, "HYDRADGL_CACHE": str(private_cache), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es) on cpu" in proc.stderr
    assert proc.stderr.count("epoch   1/1") == 1  # only rank 0 prints
    assert (tmp_path / "run" / "test_metrics.json").exists()
