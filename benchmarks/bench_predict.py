"""Inference speed: model.predict on many FePt structures, and the ASE calculator's time per call.

    python benchmarks/bench_predict.py [--structures 10000] [--threads 2] [--calc-threads 1] [--run DIR]
                                       [--device cuda] [--compile]

Without --run it trains a throwaway model for one epoch (the default FePt architecture: PNA x6, width 20,
with edge features; speed does not depend on the weights) on the built-in FePt data. Prints
structures/s of ``model.predict`` on ASE Atoms (graph building included) and the calculator's ms per
call for energy alone and energy + forces of a 32-atom periodic cell: FePt with that architecture and
with CGCNN (both with periodic images at 7 A), Cu-Au with ``configs/emt-alloy.yaml`` (EGNN, 4 A), and
FePt with the predicted-on model itself (without --run: the default config, whose graphs, like the
paper's, have no periodic images).
Targets: >= 3,000 structures/s on 2 cores; <= 5 ms per energy + forces call on CPU.
With ``--device cuda`` the model and the calculator run on the GPU (graph building stays on the CPU).
With ``--compile`` each calculator is also compiled (``HydraCalculator(compile=True)``): the first call's
time, then energy + forces per call alternately with the eager model.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk

ROOT = Path(__file__).resolve().parent.parent


def train_throwaway(root: Path, config: Path | None = None, **overrides) -> Path:
    """A one-epoch run of ``config`` (default: the default config) on a small slice of its data."""
    from hydradgl.configio import load_config
    from hydradgl.train.run import train_run

    size = {"per_composition": 4} if config else {"max_per_composition": 20}
    cfg = load_config(config, {"training.epochs": 1, "dataset.options": size, "output_dir": str(root), **overrides})
    return train_run(cfg, quiet=True, plots_enabled=False).run_dir


def fept_atoms(n: int, seed: int = 0) -> list[Atoms]:
    from hydradgl_plugins.datasets.fept import lattice

    positions, cell = lattice(3.86, 3.72)
    rng = np.random.default_rng(seed)
    return [Atoms(numbers=np.where(rng.random(32) < rng.random(), 26, 78), positions=positions, cell=cell, pbc=True)
            for _ in range(n)]


def per_call_ms(calc, atoms: Atoms, properties: list[str], calls: int) -> float:
    calc.calculate(atoms, properties)  # warm up
    start = time.perf_counter()
    for i in range(calls):
        atoms.positions[i % len(atoms), 0] += 1e-4  # a new geometry every call, as in MD
        calc.calculate(atoms, properties)
    return 1e3 * (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--calc-threads", type=int, default=1,
                        help="torch threads for the calculator (one small cell: 1 avoids thread hand-offs).")
    parser.add_argument("--run", type=Path, help="An existing run directory (default: train a throwaway one).")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: where the model runs.")
    parser.add_argument("--compile", action="store_true",
                        help="Also time the calculator with compile=True (a 15-70 s compilation per model).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import hydradgl
    from hydradgl.ase import HydraCalculator, SmoothnessWarning

    warnings.simplefilter("ignore", SmoothnessWarning)  # timings here, not the physics of the energy surface

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or train_throwaway(Path(tmp) / "pna")
        model = hydradgl.load(run, device=args.device)
        structures = fept_atoms(args.structures)
        model.predict(structures[:512], batch_size=args.batch_size)  # warm up
        start = time.perf_counter()
        result = model.predict(structures, batch_size=args.batch_size)
        seconds = time.perf_counter() - start
        print(f"predict: {len(result.structures)} structures ({len(result.atoms)} atoms) in {seconds:.2f} s = "
              f"{len(structures) / seconds:.0f} structures/s ({args.device}, {args.threads} threads, batch {args.batch_size})")

        torch.set_num_threads(args.calc_threads)
        atoms = fept_atoms(1, seed=1)[0]
        atoms.rattle(0.02, seed=0)
        cu_au = bulk("Cu", "fcc", a=3.8, cubic=True).repeat(2)  # 32 atoms, half of them Au
        cu_au.numbers[::2] = 79
        cu_au.rattle(0.05, seed=0)
        cases = [(f"{conv}, FePt, 7 A", atoms, "H",
                  train_throwaway(Path(tmp) / f"{conv}-periodic", **{"model.conv": conv, "graph.periodic": True}))
                 for conv in ("pna", "cgcnn")]
        cases.append(("egnn, emt-alloy, 4 A", cu_au, "energy",
                      train_throwaway(Path(tmp) / "emt", ROOT / "configs" / "emt-alloy.yaml")))
        cases.append(("pna, FePt, 7 A, no images", atoms, "H", run))  # the default config: the paper's graphs
        print(f"ASE calculator, 32-atom periodic cell, {args.device}, {args.calc_threads} thread(s):")
        both = ["energy", "forces"]
        for name, cell, energy, run_dir in cases:
            calc = HydraCalculator(run_dir, properties={"energy": energy}, device=args.device)
            edges = int(calc.model.graphs([cell]).num_edges[0])
            label = f"  {name:25s} x{calc.model.cfg.model.layers} ({edges} edges)"
            for properties in (["energy"], both):
                ms = per_call_ms(calc, cell, properties, args.calls)
                print(f"{label} {' + '.join(properties):16s} {ms:6.2f} ms/call")
            if args.compile:
                compiled = HydraCalculator(run_dir, properties={"energy": energy}, device=args.device, compile=True)
                start = time.perf_counter()
                compiled.calculate(cell, both)
                print(f"{label} compile=True: first call {time.perf_counter() - start:.0f} s; then, interleaved "
                      "with the eager model (energy + forces):")
                for _ in range(2):
                    print(f"{label}   eager {per_call_ms(calc, cell, both, args.calls):6.2f} ms/call, compiled "
                          f"{per_call_ms(compiled, cell, both, args.calls):6.2f} ms/call")

if __name__ == "__main__":
    main()
