"""Training throughput of the paper configuration (6 PNA layers of width 20, heads H, C, M, batch 64) on
the full-size FePt data (~28,000 graphs, ~19,600 for training): steady-state training graphs/s and seconds
per epoch (training + validation), for 1 process x 2 threads and 2 processes x 1 thread (gloo DDP).

Target: >= 1,500 training graphs/s with 1 process x 2 threads; the same with PNA's
edge features on (the default), and >= 1,000 for cgcnn, schnet and egnn. ``--variants`` runs every conv
variant of benchmarks/model_variants.py at 1 process x 2 threads instead (one after the other: on a
shared machine compare them with bench_model.py, which interleaves them).
Usage: python benchmarks/bench_train.py [--max-per-composition 1000] [--epochs 2] [--max-batches N] [--variants]
(``--max-batches`` trains on the first N batches of each epoch to save time; seconds per epoch are then
extrapolated to the full training split.)
"""

from __future__ import annotations

import argparse
import itertools
import os
import socket

import torch
import torch.multiprocessing as mp

from hydradgl.configio import load_config
from hydradgl.data.pipeline import prepare_data
from hydradgl.model.assembler import build_model
from hydradgl.train.seeding import seed_everything
from hydradgl.train.runtime import setup_runtime, teardown_runtime
from hydradgl.train.trainer import Trainer
from model_variants import VARIANTS


def config(args, threads: int, overrides: dict | None = None):
    return load_config(None, {"dataset.options": {"max_per_composition": args.max_per_composition},
                              "training.epochs": args.epochs, "training.patience": None,
                              "training.threads": threads, "training.device": "cpu", **(overrides or {})})


class FirstBatches:
    """The first ``limit`` batches of a loader per epoch (keeps ``set_epoch`` and ``len``)."""

    def __init__(self, loader, limit: int):
        self.loader, self.limit = loader, limit

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return min(self.limit, len(self.loader))

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.limit)


def run(args, threads: int, label: str = "", overrides: dict | None = None) -> None:
    cfg = config(args, threads, overrides)
    runtime = setup_runtime(cfg.training)
    try:
        seed_everything(0)
        data = prepare_data(cfg)
        trainer = Trainer(cfg, data, build_model(cfg, data.info), runtime, run_dir=None)
        full_batches = len(trainer.loader)
        if args.max_batches:
            trainer.loader = FirstBatches(trainer.loader, args.max_batches)
        trainer.fit()
        steady = trainer.history[1:] or trainer.history  # the first epoch includes warm-up
        if runtime.is_main:
            row = steady[-1]
            train_seconds = row["train_seconds"] * full_batches / len(trainer.loader)
            val_seconds = row["seconds"] - row["train_seconds"]
            line = (f"{label}{runtime.world_size} process(es) x {threads} thread(s): {row['graphs_per_s']:.0f} training graphs/s, "
                    f"{train_seconds:.1f} s training + {val_seconds:.1f} s validation "
                    f"= {train_seconds + val_seconds:.1f} s per epoch ({len(data.train)} training graphs"
                    + (f"; timed on {len(trainer.loader)} of {full_batches} batches per rank)" if args.max_batches else ")"))
            print(line, flush=True)
    finally:
        teardown_runtime(runtime)


def ddp_worker(rank: int, args, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    run(args, threads=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-per-composition", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-batches", type=int, default=None, help="Train on at most N batches per epoch and rank.")
    parser.add_argument("--variants", action="store_true", help="Each conv variant at 1 process x 2 threads.")
    args = parser.parse_args()
    prepare_data(config(args, 2))  # fill the cache once, outside the timed runs
    if args.variants:
        for name, overrides in VARIANTS.items():
            run(args, threads=2, label=f"{name}: ", overrides=overrides)
        return
    run(args, threads=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(ddp_worker, args=(args, port), nprocs=2, join=True)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
