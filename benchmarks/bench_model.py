"""Model speed on a batch of 64 FePt graphs (32 atoms, 7 A cutoff, ~600 edges each), 2 CPU threads:
forward+backward of one conv layer, ours vs dgl.nn.PNAConv (same aggregators and scalers), and of the
full paper model (6 PNA layers of width 20, batch norm, heads H, C, M with FC 50/25).

Then one training step (forward, backward, Adam) of the paper model with each conv of
benchmarks/model_variants.py (PNA with and without edge features, cgcnn, schnet, egnn), timed
round-robin in one process so that load from other jobs hits every variant alike; the ratio to PNA
without edge features is the figure to compare across machines.

Then the cost of training on forces: for each distance-aware conv (schnet, egnn, cgcnn, PNA with edge
features, painn, and nequip at the width of configs/emt-nequip.yaml) one training step of the
potential config (configs/emt-potential.yaml: its width, depth and potential head) on a batch of 16
emt-alloy cells (32 atoms, 4 A cutoff, periodic), energies only vs energies and forces (-dE/dr with
create_graph, so the backward pass is a double backward), timed round-robin in one process as above.

Targets: our PNA layer >= 2.5x faster than dgl.nn.PNAConv. PNA with edge features at
most ~20% slower than without. A force-training step <= 3x the energy-only step of the same conv and batch.
Timings are medians (variants: minima) after warm-up; on a machine shared with other jobs they are noisy,
and with more busy processes than cores 2 OpenMP threads can be slower than 1 (barrier stalls): compare
--threads 1.
Usage: python benchmarks/bench_model.py [--repeats 30] [--threads 2] [--variants-only | --force-steps-only]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from model_variants import BASELINE, VARIANTS

from hydradgl.allocator import keep_freed_memory
from hydradgl.config import RunConfig
from hydradgl.configio import load_config
from hydradgl.data.loader import collate
from hydradgl.data.pipeline import prepare_data
from hydradgl.dglcompat import dgl
from hydradgl.model.assembler import SmoothnessWarning, build_model
from hydradgl.model.loss import MultiTaskLoss
from hydradgl.plugins import ConvContext
from hydradgl.train.trainer import make_optimizer
from hydradgl_plugins.convs.pna import PNAOptions, delta_from_histogram, make_pna

AGGREGATORS = ["mean", "min", "max", "std"]
SCALERS = ["identity", "amplification", "attenuation"]
POTENTIAL_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "emt-potential.yaml"
# The distance-aware convs (a potential needs one): their model_variants.py overrides, with the conv named.
FORCE_CONVS = {**{name: {"model.conv": name.split()[0], **VARIANTS[name]}
                  for name in ("schnet", "egnn", "cgcnn", "pna (edge features)")},
               "painn": {"model.conv": "painn"},
               "nequip (width 32)": {"model.conv": "nequip", "model.hidden": 32}}
FORCE_BATCH = 16


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
    parser.add_argument("--force-steps-only", action="store_true",
                        help="only the energy-only vs force training steps of the potential")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as training does (hydradgl.train.runtime.setup_runtime)
    if args.force_steps_only:
        compare_force_steps(args.repeats)
        return
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

    model, loss, train_step = training_step(paper_config({}), data, batch)

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
    compare_force_steps(args.repeats)


def paper_config(overrides: dict) -> RunConfig:
    """The paper model (the default config) on the FePt subset benchmarked here, with ``overrides``."""
    return load_config(None, {"dataset.options": {"max_per_composition": 20}, **overrides})


def training_step(cfg: RunConfig, data, batch):
    """The model of ``cfg``, its loss, and one forward-backward-optimizer step of it (the optimizer
    training uses: the configured one, fused where torch has a fused kernel)."""
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


def fastest(steps: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Seconds of each step, the fastest of ``repeats`` rounds that run every step once (after warm-up),
    so that load from other jobs hits every step alike."""
    best = dict.fromkeys(steps, float("inf"))
    for step in steps.values():
        for _ in range(3):
            step()
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def compare_variants(data, batch, repeats: int) -> None:
    """Training steps of every conv variant, round-robin; the fastest of ``repeats`` rounds each."""
    steps = {name: training_step(paper_config(overrides), data, batch)[2] for name, overrides in VARIANTS.items()}
    best = fastest(steps, repeats)
    print(f"paper model, one training step (fwd+bwd+Adam), batch of {batch.num_graphs} graphs, fastest of {repeats}:")
    for name, seconds in best.items():
        print(f"  {name:30s} {seconds * 1e3:7.1f} ms = {batch.num_graphs / seconds:6.0f} graphs/s, "
              f"{seconds / best[BASELINE]:.2f}x the time of {BASELINE}")


def compare_force_steps(repeats: int) -> None:
    """For each distance-aware conv, a training step of the potential config on energies only and on
    energies and forces (same model, initial weights and batch), round-robin; the fastest of ``repeats``."""
    with tempfile.TemporaryDirectory() as cache:
        # 2 structures per composition all go to training (too few to split): 66 cells, 16 of them batched.
        base = load_config(POTENTIAL_CONFIG, {"dataset.cache_dir": cache, "dataset.options.per_composition": 2})
        data = prepare_data(base)
    batch = collate(data.train, np.arange(FORCE_BATCH))
    with_forces = base.heads[0].model_dump(mode="json")
    energy_only = {**with_forces, "options": {k: v for k, v in with_forces["options"].items()
                                              if k not in ("forces", "force_weight")}}
    steps = {}
    with warnings.catch_warnings():  # the cost of a step does not depend on smoothness at the cutoff
        warnings.simplefilter("ignore", SmoothnessWarning)
        for name, overrides in FORCE_CONVS.items():
            for label, head in (("energy", energy_only), ("forces", with_forces)):
                cfg = load_config(POTENTIAL_CONFIG, {**overrides, "heads": [head]})
                steps[name, label] = training_step(cfg, data, batch)[2]
    best = fastest(steps, repeats)
    print(f"potential ({base.model.hidden} wide, {base.model.layers} layers), one training step (fwd+bwd+"
          f"{base.training.optimizer}), batch of {batch.num_graphs} emt-alloy cells ({batch.graph.num_nodes} atoms, "
          f"{batch.graph.num_edges} edges), fastest of {repeats}; target: forces <= 3x energy only")
    for name in FORCE_CONVS:
        energy, forces = best[name, "energy"], best[name, "forces"]
        print(f"  {name:22s} energy only {energy * 1e3:7.1f} ms, energy + forces {forces * 1e3:7.1f} ms: "
              f"{forces / energy:.2f}x")


if __name__ == "__main__":
    main()
