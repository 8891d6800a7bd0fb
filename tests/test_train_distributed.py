"""Data-parallel training on CPU with gloo: two ranks end with identical parameters; torchrun launches."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

from tests.conftest import small_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, out: str, cache: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), HYDRADGL_CACHE=cache)
    from hydradgl.train.run import train_run

    cfg = small_config(Path(out), **{"training.threads": 1, "training.epochs": 2})
    result = train_run(cfg, quiet=True, plots_enabled=False)
    torch.save({k: v.clone() for k, v in result.model.state_dict().items()}, Path(out) / f"rank{rank}.pt")


def test_two_gloo_ranks_end_identical(tmp_path, private_cache):
    from hydradgl.data.pipeline import load_dataset

    load_dataset(small_config())  # fill the cache first; the ranks then only read it
    mp.spawn(worker, args=(2, free_port(), str(tmp_path), str(private_cache)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (tmp_path / "run" / "last.pt").exists() and (tmp_path / "run" / "test_metrics.json").exists()


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
