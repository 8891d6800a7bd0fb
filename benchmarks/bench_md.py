"""A trained potential in ASE: a relaxation and an NVE run of a 32-atom Cu-Au cell, beside EMT itself.

    python benchmarks/bench_md.py --run runs/bench-potential [--ps 1] [--timestep 1.0] [--temperature 300]
                                  [--float64] [--threads 1]

``--run`` is a run (or ensemble) directory of a model with a potential head trained on ``emt-alloy``
(e.g. the one ``benchmarks/bench_potential.py -o runs/bench-potential`` leaves). On a rattled Cu16Au16
fcc cell (2x2x2 cubic cells at the mean of the two EMT lattice constants) it prints:

* the relaxation: FIRE with the model to fmax 0.05 eV/A, then EMT's largest force at the model's
  minimum and the energy per atom there above EMT's own minimum from the same start;
* NVE (velocity Verlet) for ``--ps`` picoseconds from Maxwell-Boltzmann velocities at
  ``--temperature``: the drift of the total energy (slope of a straight-line fit, meV/atom/ps), its
  largest departure from the start (meV/atom), the temperature reached, and the same run with EMT as
  the reference for the integrator's own error at that timestep; ms per MD step.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator
from ase.calculators.emt import EMT
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from ase.optimize import FIRE

from hydradgl.ase import HydraCalculator
from hydradgl_plugins.datasets.emt_alloy import reference


def alloy_cell(seed: int = 0, rattle: float = 0.05) -> Atoms:
    """Cu16Au16 on a 2x2x2 cubic fcc supercell, random occupation, rattled positions."""
    a = 0.5 * (reference("Cu")[0] + reference("Au")[0])
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat((2, 2, 2))
    rng = np.random.default_rng(seed)
    atoms.numbers[rng.permutation(len(atoms))[:16]] = 79
    atoms.rattle(rattle, seed=seed)
    return atoms


def relax(atoms: Atoms, calc: Calculator, fmax: float = 0.05, steps: int = 500) -> tuple[Atoms, int]:
    atoms = atoms.copy()
    atoms.calc = calc
    optimizer = FIRE(atoms, logfile=None)
    optimizer.run(fmax=fmax, steps=steps)
    return atoms, optimizer.nsteps


def nve(atoms: Atoms, calc: Calculator, picoseconds: float, timestep_fs: float,
        temperature: float) -> dict[str, float]:
    """Drift (meV/atom/ps, fitted slope), largest departure (meV/atom), mean temperature (K), ms/step."""
    atoms = atoms.copy()
    atoms.calc = calc
    thermalize_momenta(atoms, temperature, rng=np.random.default_rng(0))
    Stationary(atoms)
    steps = int(round(picoseconds * 1000 / timestep_fs))
    total, temperatures = [], []
    md = VelocityVerlet(atoms, timestep=timestep_fs * units.fs, logfile=None)
    md.attach(lambda: (total.append(atoms.get_total_energy()), temperatures.append(atoms.get_temperature())),
              interval=1)
    start = time.perf_counter()
    md.run(steps)
    ms = 1e3 * (time.perf_counter() - start) / steps
    energy = (np.array(total) - total[0]) / len(atoms) * 1e3  # meV/atom
    times = np.arange(len(energy)) * timestep_fs / 1000  # ps
    return {"drift": float(np.polyfit(times, energy, 1)[0]), "departure": float(np.abs(energy).max()),
            "temperature": float(np.mean(temperatures)), "ms_per_step": ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run or ensemble directory of a potential")
    parser.add_argument("--ps", type=float, default=1.0)
    parser.add_argument("--timestep", type=float, default=1.0, help="fs")
    parser.add_argument("--temperature", type=float, default=300.0, help="K")
    parser.add_argument("--float64", action="store_true", help="run the model in float64")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = HydraCalculator(args.run, dtype=torch.float64 if args.float64 else None)
    start = alloy_cell()

    relaxed, model_steps = relax(start, model)
    reference_min, emt_steps = relax(start, EMT())
    check = relaxed.copy()
    check.calc = EMT()
    emt_force = float(np.linalg.norm(check.get_forces(), axis=1).max())
    above = (check.get_potential_energy() - reference_min.get_potential_energy()) / len(start) * 1e3
    converged = "" if model_steps < 500 else " (not converged)"
    print(f"relaxation (FIRE, fmax 0.05 eV/A): model {model_steps} steps{converged}, EMT {emt_steps} steps; "
          f"at the model's minimum EMT's largest force is {1e3 * emt_force:.1f} meV/A and its energy {above:.3f} meV/atom above "
          "EMT's own minimum")

    print(f"NVE, {args.ps} ps at {args.timestep} fs from {args.temperature:.0f} K, 32 atoms "
          f"({'float64' if args.float64 else 'the model dtype'}, {args.threads} thread(s)):")
    print(f"  {'calculator':<10} {'drift (meV/atom/ps)':>20} {'max |dE| (meV/atom)':>20} {'<T> (K)':>8} "
          f"{'ms/step':>8}")
    for name, calc in (("model", model), ("EMT", EMT())):
        row = nve(start, calc, args.ps, args.timestep, args.temperature)
        print(f"  {name:<10} {row['drift']:20.4f} {row['departure']:20.4f} {row['temperature']:8.1f} "
              f"{row['ms_per_step']:8.2f}")


if __name__ == "__main__":
    main()
