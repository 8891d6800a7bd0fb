"""Model speed on a batch of 64 FePt graphs (32 atoms, 7 A cutoff, ~600 edges each), 2 CPU threads:
forward+backward of one conv layer, ours vs dgl.nn.PNAConv (same aggregators and scalers), and of the
full paper model (6 PNA layers of width 20, batch norm, heads H, C, M with FC 50/25).

Then one training step (forward, backward, Adam) of the paper model with each conv of
benchmarks/model_variants.py (PNA with and without edge features, cgcnn, schnet, egnn), timed
round-robin in one process so that load from other jobs hits every variant alike; the ratio to PNA
without edge features is the figure to compare across machines.

Target: our PNA layer >= 2.5x faster than dgl.nn.PNAConv. PNA with edge features at
most ~20% slower than without.
Timings are medians (variants: minima) after warm-up; on a machine shared with other jobs they are noisy,
and with more busy processes than cores 2 OpenMP threads can be slower than 1 (barrier stalls): compare
--threads 1.
Usage: python benchmarks/bench_model.py [--repeats 30] [--threads 2] [--variants-only]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from hydradgl.allocator import keep_freed_memory
from hydradgl.configio import load_config
from hydradgl.data.loader import collate
from hydradgl.data.pipeline import prepare_data
from hydradgl.dglcompat import dgl
from hydradgl.model.assembler import build_model
from hydradgl.model.loss import MultiTaskLoss
from hydradgl.plugins import ConvContext
from hydradgl.train.trainer import make_optimizer
from hydradgl_plugins.convs.pna import PNAOptions, delta_from_histogram, make_pna
from model_variants import BASELINE, VARIANTS

AGGREGATORS = ["mean", "min", "max", "std"]
SCALERS = ["identity", "amplification", "attenuation"]


def timed(step, repeats: int) -> float:
    """Median seconds of ``step()`` after warm-up."""
    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2,
                        help="intra-op threads (on a loaded shared machine, 1 avoids OpenMP oversubscription stalls)")
    parser.add_argument("--variants-only", action="store_true", help="only the conv variants' training steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as training does (hydradgl.train.runtime.setup_runtime)
    with tempfile.TemporaryDirectory() as cache:
        cfg = load_config(None, {"dataset.cache_dir": cache, "dataset.options": {"max_per_composition": 20}})
        data = prepare_data(cfg)
    batch = collate(data.train, np.arange(64))
    if args.variants_only:
        compare_variants(data, batch, args.repeats)
        return
    graph, width = batch.graph, 20
    print(f"batch: {batch.num_graphs} graphs, {graph.num_nodes} nodes, {graph.num_edges} edges, width {width}, "
          f"{torch.get_num_threads()} threads")
    hist = data.info.degree_histogram
    h = torch.randn(graph.num_nodes, width, requires_grad=True)

    ours = make_pna(width, width, PNAOptions(aggregators=AGGREGATORS, scalers=SCALERS),
                    ConvContext(edge_dim=0, degree_histogram=hist, cutoff=7.0))
    theirs = dgl.nn.PNAConv(width, width, AGGREGATORS, SCALERS, delta_from_histogram(hist))

    def layer_step(layer):
        def step():
            layer(graph if layer is ours else graph.dgl, h).sum().backward()
        return step

    t_ours = timed(layer_step(ours), args.repeats)
    t_dgl = timed(layer_step(theirs), max(5, args.repeats // 3))
    print(f"one PNA layer fwd+bwd: ours {t_ours * 1e3:.2f} ms, dgl.nn.PNAConv {t_dgl * 1e3:.2f} ms, "
          f"speed-up {t_dgl / t_ours:.1f}x (target >= 2.5x)")

    model, loss, train_step = training_step({}, data, batch)

    def fwd_bwd():
        total, _ = loss(model(batch), batch)
        total.backward()

    t_full = timed(fwd_bwd, args.repeats)
    t_step = timed(train_step, args.repeats)
    print(f"paper model ({sum(p.numel() for p in model.parameters())} parameters) fwd+bwd: {t_full * 1e3:.1f} ms "
          f"= {64 / t_full:.0f} graphs/s; with the Adam step: {t_step * 1e3:.1f} ms = {64 / t_step:.0f} graphs/s")

    paper_dgl = torch.nn.ModuleList(dgl.nn.PNAConv(width, width, AGGREGATORS, SCALERS, delta_from_histogram(hist))
                                    for _ in range(6))

    def dgl_stack():
        x = h
        for layer in paper_dgl:
            x = torch.relu(layer(graph.dgl, x))
        x.sum().backward()

    t_stack = timed(dgl_stack, max(5, args.repeats // 3))
    ours_stack = torch.nn.ModuleList(make_pna(width, width, PNAOptions(), ConvContext(0, hist, 7.0)) for _ in range(6))

    def our_stack():
        x = h
        for layer in ours_stack:
            x = torch.relu(layer(graph, x))
        x.sum().backward()

    t_our_stack = timed(our_stack, args.repeats)
    print(f"6-layer PNA stack fwd+bwd: ours {t_our_stack * 1e3:.1f} ms, dgl.nn.PNAConv {t_stack * 1e3:.1f} ms, "
          f"speed-up {t_stack / t_our_stack:.1f}x")
    compare_variants(data, batch, args.repeats)


def training_step(overrides: dict, data, batch):
    """The paper model with config ``overrides``, its loss, and one forward-backward-optimizer step of it
    (the optimizer training uses: the configured one, fused where torch has a fused kernel)."""
    cfg = load_config(None, {"dataset.options": {"max_per_composition": 20}, **overrides})
    torch.manual_seed(0)
    model = build_model(cfg, data.info)
    loss = MultiTaskLoss(model.head_descriptions)
    optimizer = make_optimizer(cfg.training, model.parameters())

    def step():
        total, _ = loss(model(batch), batch)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
    return model, loss, step


def compare_variants(data, batch, repeats: int) -> None:
    """Training steps of every conv variant, round-robin; the fastest of ``repeats`` rounds each."""
    steps = {name: training_step(overrides, data, batch)[2] for name, overrides in VARIANTS.items()}
    best = dict.fromkeys(steps, float("inf"))
    for step in steps.values():
        for _ in range(3):
            step()
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            best[name] = min(best[name], time.perf_counter() - start)
    print(f"paper model, one training step (fwd+bwd+Adam), batch of {batch.num_graphs} graphs, fastest of {repeats}:")
    for name, seconds in best.items():
        print(f"  {name:30s} {seconds * 1e3:7.1f} ms = {batch.num_graphs / seconds:6.0f} graphs/s, "
              f"{seconds / best[BASELINE]:.2f}x the time of {BASELINE}")


if __name__ == "__main__":
    main()
