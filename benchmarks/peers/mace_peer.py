"""MACE trained by its own code for a wall-clock budget, then its predictions on a test file.

Runs in the MACE venv (``.venv-mace/bin/python``; see benchmarks/peers/README.md), started by
``benchmarks/bench_potential.py --peer mace``; hydradgl never imports it. Usage:

    .venv-mace/bin/python benchmarks/peers/mace_peer.py --minutes M --threads T --test test.xyz \\
        --dtype float32 --output result.json -- <mace_run_train flags>

``mace_run_train`` has no time limit, so this runs ``mace.cli.run_train.run`` in-process with MACE's
epoch function wrapped: once the epochs so far (training and validation) have taken ``--minutes``, the
next epoch is refused, so the epoch that reaches the budget finishes, as hydradgl's
``training.max_minutes`` does. MACE saves a checkpoint whenever the validation loss improves (with
``--ema``, of the averaged weights); a second ``run`` with ``--restart_latest --max_num_epochs 0`` loads
that best checkpoint, trains nothing and writes MACE's model file, which MACE's ASE calculator then
evaluates on ``--test``. The JSON output holds the epochs, their seconds, and the predicted energies and
forces in the test file's order.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

import torch
from ase.io import read
from mace import __version__ as mace_version
from mace import tools
from mace.calculators import MACECalculator
from mace.cli import run_train
from timing import calculator_seconds  # beside this file (the script's folder is on sys.path)

# The module (``mace.tools.train`` as an attribute is the function of that name it exports).
mace_train = importlib.import_module("mace.tools.train")


class BudgetSpent(Exception):
    """Raised instead of starting an epoch once the budget is spent."""


def budgeted(train_one_epoch, seconds: float, clock: dict[str, float]):
    """MACE's ``train_one_epoch`` that refuses to start once ``seconds`` have passed since the first epoch
    began; ``clock`` collects the epochs run and the seconds spent training (without validation)."""
    def epoch(*args, **kwargs):
        now = time.perf_counter()
        clock.setdefault("start", now)
        if now - clock["start"] >= seconds:
            clock["seconds"] = now - clock["start"]
            raise BudgetSpent
        train_one_epoch(*args, **kwargs)
        clock["epochs"] += 1
        clock["train_seconds"] += time.perf_counter() - now
    return epoch


def train(mace_args: list[str], minutes: float) -> dict[str, float]:
    """Train within the budget and write MACE's model file; the clock's readings."""
    parser = tools.build_default_arg_parser()
    clock = {"epochs": 0, "train_seconds": 0.0}
    mace_train.train_one_epoch = budgeted(mace_train.train_one_epoch, minutes * 60, clock)
    try:
        run_train.run(parser.parse_args(mace_args))
    except BudgetSpent:  # the best checkpoint is on disk: load it and save the model, without training
        run_train.run(parser.parse_args([*mace_args, "--restart_latest", "--max_num_epochs", "0"]))
    else:  # every epoch of --max_num_epochs ran within the budget
        clock["seconds"] = time.perf_counter() - clock["start"]
    return clock


def predict(model: Path, test: Path, dtype: str) -> dict[str, list]:
    """Energies (eV) and forces (eV/A, one row per atom, structures concatenated) of every frame of ``test``."""
    calc = MACECalculator(model_paths=str(model), device="cpu", default_dtype=dtype)
    energies, forces = [], []
    for atoms in read(test, index=":", format="extxyz"):
        atoms.calc = calc
        energies.append(float(atoms.get_potential_energy()))
        forces.extend(atoms.get_forces().tolist())
    return {"energy": energies, "forces": forces,  # one thread, as hydradgl's calculator is timed
            "calculator_seconds": calculator_seconds(calc, read(test, index=0))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, required=True, help="training budget")
    parser.add_argument("--threads", type=int, required=True, help="torch intra-op threads")
    parser.add_argument("--test", type=Path, required=True, help="extxyz file to predict")
    parser.add_argument("--dtype", choices=["float32", "float64"], required=True, help="as --default_dtype")
    parser.add_argument("--output", type=Path, required=True, help="JSON file to write")
    parser.add_argument("mace_args", nargs=argparse.REMAINDER, help="-- then mace_run_train's flags")
    args = parser.parse_args()
    mace_args = args.mace_args[1:] if args.mace_args[:1] == ["--"] else args.mace_args
    flags = tools.build_default_arg_parser().parse_args(mace_args)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    clock = train(mace_args, args.minutes)
    trained = time.perf_counter() - started
    model = Path(flags.model_dir) / f"{flags.name}.model"
    result = {"mace_version": mace_version, "torch_version": torch.__version__, "threads": torch.get_num_threads(),
              "epochs": clock["epochs"], "seconds": clock["seconds"], "train_seconds": clock["train_seconds"],
              "wall_seconds_training": trained, "model": str(model), **predict(model, args.test, args.dtype)}
    result["wall_seconds"] = time.perf_counter() - started
    args.output.write_text(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
