"""A potential trained for a fixed budget on emt-alloy: test energy (meV/atom) and force (meV/A) errors
beside the baselines of the same split.

    python benchmarks/bench_potential.py [--config configs/potential.yaml] [--minutes 10] [-o runs/bench-potential]

Trains the config (its ``training.max_minutes`` replaced by ``--minutes``), then prints the test RMSE and
MAE of the energy per atom and of the force components, with three baselines fitted on the training
split: zero forces, the composition fit of the energy (:mod:`hydradgl.data.baselines`) and the per-element
reference energies alone. A MACE peer on the same split is not wired in yet.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from hydradgl.configio import load_config
from hydradgl.data.baselines import composition_fit_prediction, element_counts
from hydradgl.data.pipeline import prepare_data
from hydradgl.plugins import get_registry
from hydradgl.train.run import train_run


def errors(pred: np.ndarray, true: np.ndarray, scale: float) -> tuple[float, float]:
    diff = (pred - true) * scale
    return float(np.sqrt(np.mean(diff ** 2))), float(np.mean(np.abs(diff)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/potential.yaml"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("-o", "--output", type=Path, default=Path("runs/bench-potential"))
    args = parser.parse_args()
    cfg = load_config(args.config, {"training.max_minutes": args.minutes, "output_dir": str(args.output)})
    registry = get_registry()
    data = prepare_data(cfg, registry)
    started = time.perf_counter()
    result = train_run(cfg, registry, data=data, quiet=True, plots_enabled=False, overwrite=True)
    minutes = (time.perf_counter() - started) / 60
    head = cfg.heads[0]
    energy_target, forces_target = head.target_name, head.options.get("forces")
    train, test = data.train.with_normalizer(None), data.test.with_normalizer(None)
    atoms = test.num_nodes.astype(np.float64)
    energy = test.graph_targets[energy_target][:, 0].astype(np.float64)
    species = list(data.info.species)
    counts_train, counts_test = element_counts(train, species), element_counts(test, species)
    e0 = np.linalg.lstsq(counts_train, train.graph_targets[energy_target][:, 0].astype(np.float64), rcond=None)[0]
    composition = composition_fit_prediction(train, test, energy_target, species)[:, 0]
    from hydradgl.api import load

    predicted = load(result.run_dir).predict_arrays(data.test)
    model_energy = predicted[energy_target][0][:, 0]
    rows = [("model", errors(model_energy / atoms, energy / atoms, 1e3)),
            ("composition fit", errors(composition / atoms, energy / atoms, 1e3)),
            ("reference energies (E0) only", errors(counts_test @ e0 / atoms, energy / atoms, 1e3))]
    print(f"{cfg.model.conv} x{cfg.model.layers} (width {cfg.model.hidden}), {len(result.history)} epochs in "
          f"{minutes:.1f} min; {len(data.train)} train / {len(data.test)} test structures")
    print(f"{'energy per atom (meV/atom)':<32} {'RMSE':>9} {'MAE':>9}")
    for name, (rmse, mae) in rows:
        print(f"  {name:<30} {rmse:9.3f} {mae:9.3f}")
    if forces_target:
        true = test.node_targets[forces_target].astype(np.float64)
        model_forces = predicted[forces_target][0]
        print(f"{'force components (meV/A)':<32} {'RMSE':>9} {'MAE':>9}")
        for name, (rmse, mae) in (("model", errors(model_forces, true, 1e3)),
                                  ("zero forces", errors(np.zeros_like(true), true, 1e3))):
            print(f"  {name:<30} {rmse:9.3f} {mae:9.3f}")


if __name__ == "__main__":
    main()
