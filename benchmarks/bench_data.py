"""Data pipeline speed: prepare the full-size FePt set (~28,000 graphs, 7 A, no periodic images) from
scratch, reload it from the processed cache, and collate batches of 64.

Targets: prepare < 60 s, reload < 5 s on 2 cores.
Usage: python benchmarks/bench_data.py [--max-per-composition 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from hydradgl.configio import load_config
from hydradgl.data.loader import collate
from hydradgl.data.pipeline import load_dataset, prepare_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-per-composition", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as cache:
        cfg = load_config(None, {"dataset.cache_dir": cache,
                                 "dataset.options": {"max_per_composition": args.max_per_composition},
                                 "graph.radius": 7.0, "graph.periodic": False})
        start = time.perf_counter()
        loaded = load_dataset(cfg)
        prepare = time.perf_counter() - start
        g = loaded.graphs
        print(f"graphs: {len(g)}, atoms: {int(g.num_nodes.sum())}, edges: {int(g.num_edges.sum())}, "
              f"mean degree {g.num_edges.sum() / g.num_nodes.sum():.2f}")
        print(f"prepare from scratch (generate + write LSMS + parse + graphs + cache): {prepare:.1f} s  (target < 60 s)")
        start = time.perf_counter()
        load_dataset(cfg)
        reload = time.perf_counter() - start
        print(f"reload from cache: {reload:.2f} s  (target < 5 s)")
        start = time.perf_counter()
        data = prepare_data(cfg)
        print(f"reload + split + normalize (what training does): {time.perf_counter() - start:.2f} s")
        rng = np.random.default_rng(0)
        batches = [rng.choice(len(data.train), 64, replace=False) for _ in range(200)]
        start = time.perf_counter()
        for idx in batches:
            collate(data.train, idx)
        print(f"collate a batch of 64 graphs: {(time.perf_counter() - start) / len(batches) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
