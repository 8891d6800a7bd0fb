"""A potential trained for a fixed budget on emt-alloy: test energy (meV/atom) and force (meV/A) errors
beside the baselines of the same split and, with ``--peer mace``, beside MACE trained on the same split.

    python benchmarks/bench_potential.py [--config configs/emt-potential.yaml ...] [--minutes 10] [--threads 2]
        [--peer mace] [--set KEY=VALUE ...] [-o runs/bench-potential]

Trains each config (its ``training.max_minutes`` replaced by ``--minutes``, ``training.threads`` by
``--threads``; repeat ``--config`` to compare models, one after the other: they must share the dataset,
graph, split, seed and potential head), then prints the test RMSE and MAE of the energy per atom and of
the force components, with three baselines fitted on the training split: zero forces, the composition fit of the energy
(:mod:`hydradgl.data.baselines`) and the per-element reference energies alone. ``--set`` overrides any
config key of every config (e.g. ``--set dataset.options.per_composition=4`` for a quick try). Each
model's ASE calculator is also timed: the median energy + forces call on the first test structure, one
thread (MACE's the same way, in its venv). ``benchmarks/potential-convs/`` holds configs/emt-potential.yaml
with each other distance-aware conv (egnn, cgcnn and pna with their envelopes), for a table of convs.

MACE peer (``--peer mace``): MACE (mace-torch, https://github.com/ACEsuit/mace) is never a dependency
of hydradgl or its tests; it lives in its own venv ``.venv-mace/`` at the repository root, made by
``python benchmarks/bench_potential.py --setup`` (what that runs is in benchmarks/peers/README.md:
torch 2.13.0 CPU first, then mace-torch with torch held at that version by a constraints file).
After hydradgl, the same train/validation/test structures (the dataset plugin's own positions, cells,
periodicity, energies and forces, matched by source) go to extxyz files (``REF_energy``/``REF_forces``)
and benchmarks/peers/mace_peer.py trains MACE with ``mace_run_train``'s code, in the MACE venv, for the
same budget and thread count (one run after the other, never concurrently). Flags and why:

- ``--model MACE --num_channels 32 --max_L 0`` (hidden irreps 32x0e: invariant messages, the small
  MACE the issue compares with); ``max_ell``, ``correlation``, ``num_interactions``, radial basis, loss
  weights (energy 1, forces 100), learning rate, its plateau schedule and AMSGrad: MACE's defaults.
- ``--r_max`` = the config's ``graph.radius`` (MACE's default is 5 A): both see the same neighbours.
- ``--E0s average``: per-element energies by least squares over the training split, as hydradgl's
  potential head fits its E0.
- ``--batch_size`` and ``--valid_batch_size`` = ``training.batch_size``; ``--seed`` = ``training.seed``;
  ``--ema --ema_decay`` = ``training.ema_decay`` when the config averages weights.
- ``--default_dtype float32`` (``--mace-dtype``): hydradgl trains in float32; float64, MACE's default,
  would cost it time at the same budget.
- ``--device cpu``, ``--plot False``, ``--pin_memory False``; ``--max_num_epochs`` large: the budget
  stops training. Budget: the epoch that reaches it finishes, for both (mace_peer.py's docstring says
  how); each side's best-validation weights are evaluated on the test split.
- ``--mace-flag=--NAME=VALUE`` (repeatable) appends a flag; argparse keeps the last of a repeated one.

MACE's predictions (its ASE calculator, in the MACE venv) come back as JSON; both models are scored
against the same targets by :func:`errors`. The run directories are ``-o``/hydradgl and ``-o``/mace.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from hydradgl.api import load
from hydradgl.ase import HydraCalculator
from hydradgl.config import RunConfig
from hydradgl.configio import load_config, parse_options, parse_set_value
from hydradgl.data.baselines import composition_fit_prediction, element_counts
from hydradgl.data.graphset import GraphView
from hydradgl.data.pipeline import PreparedData, default_cache_dir, prepare_data, requested_targets
from hydradgl.data.records import Structure
from hydradgl.plugins import DatasetContext, Registry, get_registry
from hydradgl.train.run import train_run

ROOT = Path(__file__).resolve().parents[1]
MACE_VENV = ROOT / ".venv-mace"
PEERS = ROOT / "benchmarks" / "peers"
sys.path.insert(0, str(PEERS))
from timing import calculator_seconds  # noqa: E402  (benchmarks/peers/timing.py, shared with the MACE side)

TORCH = "torch==2.13.0"  # the CPU build that hydradgl's venv has; unpinned, pip would pull a CUDA build


def errors(pred: np.ndarray, true: np.ndarray, scale: float) -> tuple[float, float]:
    diff = (pred - true) * scale
    return float(np.sqrt(np.mean(diff ** 2))), float(np.mean(np.abs(diff)))


def setup_mace() -> None:
    """Create ``.venv-mace`` with torch pinned first, then mace-torch constrained to that torch."""
    python = MACE_VENV / "bin" / "python"
    for cmd in ([sys.executable, "-m", "venv", str(MACE_VENV)], [str(python), "-m", "pip", "install", TORCH],
                [str(python), "-m", "pip", "install", "-c", str(PEERS / "mace-constraints.txt"), "mace-torch"],
                [str(MACE_VENV / "bin" / "mace_run_train"), "--help"]):
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL if cmd[-1] == "--help" else None)


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as config overrides."""
    overrides = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE, e.g. --set dataset.options.per_composition=4")
        overrides[key.strip()] = parse_set_value(raw)
    return overrides


def split_structures(cfg: RunConfig, registry: Registry, views: list[GraphView]) -> list[list[Structure]]:
    """The dataset plugin's own structures (positions, cell, periodicity, float64 targets) of each view,
    matched by source, checked against the view's atoms and energies."""
    spec = registry.dataset(cfg.dataset.name)
    options = parse_options(spec.options, cfg.dataset.options, "dataset.options", plugin=spec.name)
    context = DatasetContext(cache_dir=Path(cfg.dataset.cache_dir or default_cache_dir()),
                             skip_bad_files=cfg.dataset.skip_bad_files, targets=requested_targets(cfg))
    by_source = {s.source: s for s in spec.factory(options, context).structures}
    energy = cfg.heads[0].target_name
    parts = []
    for view in views:
        structures = [by_source[source] for source in view.sources]
        numbers = np.concatenate([s.numbers for s in structures])
        raw = np.array([s.targets[energy][0] for s in structures])
        graphed = view.with_normalizer(None).graph_targets[energy][:, 0]
        if not (np.array_equal(numbers, view.numbers) and np.allclose(raw, graphed, rtol=1e-6, atol=1e-5)):
            raise SystemExit(f"dataset {cfg.dataset.name!r}: its structures do not match the processed graphs "
                             "(atoms or energies differ); clear the processed cache and run again")
        parts.append(structures)
    return parts


def write_extxyz(structures: list[Structure], path: Path, energy: str, forces: str) -> None:
    """Structures as extxyz with MACE's default keys ``REF_energy`` (info) and ``REF_forces`` (arrays)."""
    from ase import Atoms
    from ase.io import write

    frames = []
    for s in structures:
        atoms = Atoms(numbers=s.numbers, positions=s.positions, cell=s.cell, pbc=s.pbc)
        atoms.info["REF_energy"] = float(s.targets[energy][0])
        atoms.arrays["REF_forces"] = np.asarray(s.targets[forces], dtype=np.float64).reshape(-1, 3)
        frames.append(atoms)
    write(path, frames, format="extxyz")


def mace_flags(cfg: RunConfig, work: Path, dtype: str, extra: list[str]) -> list[str]:
    """``mace_run_train`` flags of the peer (the module docstring says why each), then ``extra``."""
    t = cfg.training
    flags = ["--name", "mace", "--work_dir", work, "--model_dir", work, "--checkpoints_dir", work / "checkpoints",
             "--log_dir", work / "logs", "--results_dir", work / "results",
             "--train_file", work / "train.xyz", "--valid_file", work / "val.xyz",
             "--energy_key", "REF_energy", "--forces_key", "REF_forces", "--E0s", "average",
             "--model", "MACE", "--num_channels", 32, "--max_L", 0, "--r_max", cfg.graph.radius,
             "--batch_size", t.batch_size, "--valid_batch_size", t.batch_size, "--max_num_epochs", 100000,
             "--seed", t.seed, "--default_dtype", dtype, "--device", "cpu", "--plot", "False",
             "--pin_memory", "False"]
    if t.ema_decay:
        flags += ["--ema", "--ema_decay", t.ema_decay]
    return [str(f) for f in [*flags, *extra]]


def run_mace(cfg: RunConfig, registry: Registry, data: PreparedData, work: Path, minutes: float, threads: int,
             dtype: str, extra: list[str]) -> dict[str, Any]:
    """Write the split, train and evaluate MACE in its venv; mace_peer.py's JSON result."""
    python = MACE_VENV / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} not found: create the MACE venv first with "
                         f"`python benchmarks/bench_potential.py --setup` (benchmarks/peers/README.md)")
    work.mkdir(parents=True, exist_ok=True)
    head = cfg.heads[0]
    for name, structures in zip(("train", "val", "test"), split_structures(cfg, registry,
                                                                            [data.train, data.val, data.test])):
        write_extxyz(structures, work / f"{name}.xyz", head.target_name, head.options["forces"])
    cmd = [str(python), str(PEERS / "mace_peer.py"), "--minutes", str(minutes), "--threads", str(threads),
           "--test", str(work / "test.xyz"), "--dtype", dtype, "--output", str(work / "result.json"),
           "--", *mace_flags(cfg, work, dtype, extra)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(work / "mace.log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode:
        tail = (work / "mace.log").read_text().splitlines()[-30:]
        raise SystemExit(f"MACE failed (exit {proc.returncode}); the end of {work / 'mace.log'}:\n" + "\n".join(tail))
    return json.loads((work / "result.json").read_text())


def same_split(reference: RunConfig, other: RunConfig, path: Path) -> None:
    """Refuse a compared config whose data or split differ from the first config's."""
    for section in ("dataset", "graph", "split"):
        if getattr(reference, section) != getattr(other, section):
            raise SystemExit(f"--config {path}: its {section} section differs from the first config's; every compared "
                             "config must train on the same data and split")
    if reference.training.seed != other.training.seed or reference.heads[0] != other.heads[0]:
        raise SystemExit(f"--config {path}: the seed or the potential head differs from the first config's")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, action="append", dest="configs", metavar="CONFIG",
                        help="config to train (repeatable: each on the same split and budget; default "
                             "configs/emt-potential.yaml)")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of each model")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each model")
    parser.add_argument("--peer", choices=["mace"], help="also train this peer on the same split")
    parser.add_argument("--mace-dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--mace-flag", dest="mace_extra", action="append", default=[], metavar="FLAG",
                        help="extra mace_run_train flag, later ones win (repeatable), e.g. --mace-flag=--max_ell=2")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key of every config (repeatable)")
    parser.add_argument("--setup", action="store_true", help="create the MACE venv .venv-mace and exit")
    parser.add_argument("-o", "--output", type=Path, default=Path("runs/bench-potential"))
    args = parser.parse_args()
    if args.setup:
        setup_mace()
        return
    paths = args.configs or [ROOT / "configs" / "emt-potential.yaml"]
    names = [path.stem if len(paths) > 1 else "hydradgl" for path in paths]
    if len(set(names)) < len(names):
        raise SystemExit("--config: two configs share a file name; their run directories would collide")
    cfgs = [load_config(path, {**parse_sets(args.sets), "training.max_minutes": args.minutes,
                               "training.threads": args.threads, "output_dir": str(args.output / name)})
            for path, name in zip(paths, names)]
    for path, other in zip(paths[1:], cfgs[1:]):
        same_split(cfgs[0], other, path)
    cfg = cfgs[0]
    if args.peer and not cfg.heads[0].options.get("forces"):
        raise SystemExit(f"--peer {args.peer}: the first head of {paths[0]} trains no forces (options.forces)")
    registry = get_registry()
    data = prepare_data(cfg, registry)
    head = cfg.heads[0]
    energy_target, forces_target = head.target_name, head.options.get("forces")
    sample = _sample_atoms(cfg, registry, data)
    runs, energy_preds, force_preds, calc_seconds = [], [], [], []
    for model_cfg in cfgs:
        started = time.perf_counter()
        result = train_run(model_cfg, registry, data=data, quiet=True, plots_enabled=False, overwrite=True)
        wall = time.perf_counter() - started
        model = load(result.run_dir)
        predicted = model.predict_arrays(data.test)
        m = model_cfg.model
        label = f"hydradgl {m.conv} x{m.layers} w{m.hidden}"
        runs.append((label, len(result.history), sum(r["seconds"] for r in result.history),
                     sum(r["train_seconds"] for r in result.history), wall))
        energy_preds.append((label, predicted[energy_target][0][:, 0]))
        if forces_target:
            force_preds.append((label, predicted[forces_target][0]))
        calc_seconds.append((label, calculator_seconds(HydraCalculator(model), sample)))
    mace = (run_mace(cfg, registry, data, args.output / "mace", args.minutes, args.threads, args.mace_dtype,
                     args.mace_extra) if args.peer == "mace" else None)

    train, test = data.train.with_normalizer(None), data.test.with_normalizer(None)
    atoms = test.num_nodes.astype(np.float64)
    energy = test.graph_targets[energy_target][:, 0].astype(np.float64)
    species = list(data.info.species)
    counts_train, counts_test = element_counts(train, species), element_counts(test, species)
    e0 = np.linalg.lstsq(counts_train, train.graph_targets[energy_target][:, 0].astype(np.float64), rcond=None)[0]
    composition = composition_fit_prediction(train, test, energy_target, species)[:, 0]

    def per_atom(values: np.ndarray) -> tuple[float, float]:
        return errors(values / atoms, energy / atoms, 1e3)

    n_train = len(data.train)
    energy_rows = [(label, per_atom(values)) for label, values in energy_preds]
    if mace:
        label = f"MACE {mace['mace_version']} 32x0e"
        runs.append((label, mace["epochs"], mace["seconds"], mace["train_seconds"], mace["wall_seconds"]))
        energy_rows.append((label, per_atom(np.asarray(mace["energy"]))))
        calc_seconds.append((label, mace["calculator_seconds"]))
    energy_rows += [("composition fit", per_atom(composition)),
                    ("reference energies (E0) only", per_atom(counts_test @ e0))]
    width = max(32, *(len(row[0]) + 2 for row in runs))
    print(f"{cfg.dataset.name}: {n_train} train / {len(data.val)} val / {len(data.test)} test structures; "
          f"budget {args.minutes:g} min, {args.threads} threads each")
    print(f"  {'':<{width - 2}} {'epochs':>7} {'train min':>10} {'wall min':>9} {'structures/s':>13}")
    for name, epochs, seconds, train_seconds, run_wall in runs:
        print(f"  {name:<{width - 2}} {epochs:7d} {seconds / 60:10.2f} {run_wall / 60:9.2f} "
              f"{n_train * epochs / train_seconds:13.1f}")
    print(f"{'energy per atom (meV/atom)':<{width}} {'RMSE':>9} {'MAE':>9}")
    for name, (rmse, mae) in energy_rows:
        print(f"  {name:<{width - 2}} {rmse:9.3f} {mae:9.3f}")
    if forces_target:
        true = test.node_targets[forces_target].astype(np.float64)
        force_rows = [(label, errors(values, true, 1e3)) for label, values in force_preds]
        if mace:
            force_rows.append((f"MACE {mace['mace_version']} 32x0e", errors(np.asarray(mace["forces"]), true, 1e3)))
        force_rows.append(("zero forces", errors(np.zeros_like(true), true, 1e3)))
        print(f"{'force components (meV/A)':<{width}} {'RMSE':>9} {'MAE':>9}")
        for name, (rmse, mae) in force_rows:
            print(f"  {name:<{width - 2}} {rmse:9.3f} {mae:9.3f}")
    print(f"{f'ASE calculator, {len(sample)} atoms, 1 thread':<{width}} {'ms/call':>9}")
    for name, seconds in calc_seconds:
        print(f"  {name:<{width - 2}} {seconds * 1e3:9.2f}")
    print("train min: the budgeted epochs (training and validation); wall min: the whole run (data, test); "
          "structures/s: training passes only; ms/call: median energy + forces call on the first test structure")


def _sample_atoms(cfg: RunConfig, registry: Registry, data: PreparedData) -> Any:
    """The first test structure as ASE Atoms (the calculators' timing cell)."""
    from ase import Atoms

    (test,) = split_structures(cfg, registry, [data.test])
    s = test[0]
    return Atoms(numbers=s.numbers, positions=s.positions, cell=s.cell, pbc=s.pbc)


if __name__ == "__main__":
    main()
