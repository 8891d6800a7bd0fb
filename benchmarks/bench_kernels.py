"""The two message-passing kernel paths (hydradgl.ops) on the paper model.

Default mode: forward+backward of the paper model (6 PNA layers of width 20, heads H, C, M with FC 50/25)
on one batch of 64 FePt graphs, with the same weights on the dgl and the torch path, on the CPU and, when
torch sees a GPU, on CUDA (the dgl path there only with a CUDA build of DGL): median time, graphs/s, peak
memory, and the largest difference between the two paths' outputs. Prints the torch/dgl time ratio on
the CPU (target: <= 2).

``--train``: training throughput of the paper configuration on the full-size FePt data (~19,600 training
graphs) on one device (default: cuda when present) and kernel path (default: auto), as ``hydradgl train``
runs it; steady-state training graphs/s of the last epoch (target on a GPU: >= 20,000 graphs/s
with batch 64 or larger; report the batch size).

Timings on a machine shared with other jobs are noisy; compare the two paths within one run, with
``--threads 1`` to avoid OpenMP oversubscription stalls.
Usage: python benchmarks/bench_kernels.py [--repeats 20] [--threads 1]
       python benchmarks/bench_kernels.py --train [--batch-size 64] [--device cuda] [--kernels auto]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import numpy as np
import torch

from hydradgl.configio import load_config
from hydradgl.data.loader import collate
from hydradgl.data.pipeline import prepare_data
from hydradgl.model.assembler import build_model
from hydradgl.model.loss import MultiTaskLoss
from hydradgl.train.runtime import dgl_serves, resolve_kernels, setup_runtime, teardown_runtime
from hydradgl.train.seeding import seed_everything
from hydradgl.train.trainer import Trainer


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, device: torch.device, repeats: int) -> float:
    """Median seconds of ``step()`` after warm-up."""
    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_bytes(step, device: torch.device) -> int:
    """Peak bytes allocated by torch during one ``step()``: CUDA's allocator statistics, or on the CPU the
    running total of the profiler's per-op allocations (each op's net bytes, counted at its start)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    total = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        total += event.self_cpu_memory_usage
        peak = max(peak, total)
    return peak


def compare(args) -> None:
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as cache:
        cfg = load_config(None, {"dataset.cache_dir": cache, "dataset.options": {"max_per_composition": 20}})
        data = prepare_data(cfg)
    cpu_batch = collate(data.train, np.arange(args.batch_size))
    torch.manual_seed(0)
    reference = build_model(cfg, data.info)
    print(f"batch: {cpu_batch.num_graphs} graphs, {cpu_batch.graph.num_nodes} nodes, {cpu_batch.graph.num_edges} "
          f"edges; paper model, {sum(p.numel() for p in reference.parameters())} parameters; "
          f"{torch.get_num_threads()} CPU thread(s)")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        batch = cpu_batch.to(device)
        seconds, outputs = {}, {}
        for path in ("dgl", "torch"):
            if path == "dgl" and not dgl_serves(device):
                print(f"{device.type}: dgl path skipped (the installed DGL has no CUDA support)")
                continue
            model = copy.deepcopy(reference).to(device)
            model.kernels = path
            loss = MultiTaskLoss(model.head_descriptions)

            def step():
                total, _ = loss(model(batch), batch)
                total.backward()

            seconds[path] = timed(step, device, args.repeats)
            memory = peak_bytes(step, device)
            with torch.no_grad():
                outputs[path] = model.eval()(batch)
            model.train()
            print(f"{device.type} {path:>5}: fwd+bwd {seconds[path] * 1e3:7.2f} ms = "
                  f"{batch.num_graphs / seconds[path]:8.0f} graphs/s, peak memory {memory / 2**20:6.1f} MiB")
        if len(outputs) == 2:
            diff = max((outputs["dgl"][k] - outputs["torch"][k]).abs().max().item() for k in outputs["dgl"])
            print(f"{device.type}: torch/dgl time ratio {seconds['torch'] / seconds['dgl']:.2f}"
                  + (" (target <= 2)" if device.type == "cpu" else "")
                  + f"; largest output difference {diff:.1e} (float32)")


def train_throughput(args) -> None:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = load_config(None, {"dataset.options": {"max_per_composition": args.max_per_composition},
                             "training.epochs": args.epochs, "training.patience": None,
                             "training.batch_size": args.batch_size, "training.device": device,
                             "training.kernels": args.kernels, "training.threads": args.threads})
    runtime = setup_runtime(cfg.training)
    try:
        seed_everything(0)
        data = prepare_data(cfg)
        model = build_model(cfg, data.info)
        model.kernels = resolve_kernels(cfg.training.kernels, runtime.device, model.plugin_kernels)
        trainer = Trainer(cfg, data, model, runtime, run_dir=None)
        trainer.fit()
        row = trainer.history[-1]  # the first epoch includes warm-up
        print(f"{runtime.device}, {model.kernels} kernels, batch {args.batch_size}: {row['graphs_per_s']:.0f} "
              f"training graphs/s ({len(data.train)} training graphs, epoch {int(row['epoch'])} of {args.epochs})")
    finally:
        teardown_runtime(runtime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="intra-op CPU threads")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train", action="store_true", help="training throughput instead of the path comparison")
    parser.add_argument("--device", default=None, help="--train: cpu, cuda or cuda:N (default: cuda when present)")
    parser.add_argument("--kernels", default="auto", choices=["auto", "dgl", "torch"], help="--train: kernel path")
    parser.add_argument("--epochs", type=int, default=2, help="--train: epochs (the last one is reported)")
    parser.add_argument("--max-per-composition", type=int, default=1000, help="--train: FePt data size")
    args = parser.parse_args()
    (train_throughput if args.train else compare)(args)


if __name__ == "__main__":
    main()
