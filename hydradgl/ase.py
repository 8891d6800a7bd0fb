"""ASE calculator: a trained hydradgl model (or ensemble) inside ASE relaxations, MD and screening loops.

``properties`` maps ASE result names to heads: ``energy`` to a one-component graph head (converted to eV
from the head's unit), ``energies``/``charges``/``magmoms`` to one-component node heads, any other name
to any head (stored as predicted in ``atoms.calc.results``). Forces and stress are derivatives of the
energy, ``F = -dE/dr`` and ``sigma = (1/V) dE/d(strain)``, by autograd through the edge vectors, which
are recomputed in torch from the positions on every call (the neighbour list too). They exist only when
the model reads distances (edge features used by the conv). For an ensemble, every value is the members'
mean and ``<name>_std`` holds their spread (forces: derivative of the mean energy).
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import torch
from ase import Atoms, units
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from hydradgl.api import TrainedModel, load, structure_from_atoms
from hydradgl.data.loader import collate
from hydradgl.errors import ConfigError, HydraError

#: Head units the calculator converts to eV for ``energy`` ("" counts as eV).
ENERGY_UNITS = {"": 1.0, "eV": 1.0, "meV": 1e-3, "Ry": units.Ry, "Ha": units.Hartree, "Hartree": units.Hartree,
                "kcal/mol": units.kcal / units.mol, "kJ/mol": units.kJ / units.mol}
NODE_PROPERTIES = ("energies", "charges", "magmoms")


class ForcesUnavailable(HydraError, PropertyNotImplementedError):
    """Forces or stress were asked of a model whose energy does not depend on interatomic distances."""


class HydraCalculator(Calculator):
    """ASE calculator over a run directory, an ensemble directory, or a loaded :class:`TrainedModel`.

    Args:
        model: run/ensemble directory, or a model from :func:`hydradgl.load`.
        properties: ASE name -> head name, e.g. ``{"energy": "H", "charges": "C", "magmoms": "M"}``
            (default: every head under its own name).
        device: torch device when ``model`` is a path.
        dtype: ``torch.float64`` for finite-difference-grade derivatives (default: the model's dtype).
    """

    def __init__(self, model: TrainedModel | str | os.PathLike, properties: dict[str, str] | None = None,
                 device: str = "cpu", dtype: torch.dtype | None = None, **kwargs):
        super().__init__(**kwargs)
        self.model = model if isinstance(model, TrainedModel) else load(model, device=device)
        if dtype is not None:
            self.model.to(dtype)
        self.mapping = dict(properties) if properties is not None else {h: h for h in self.model.heads}
        self._check_mapping()
        self.implemented_properties = list(self.mapping)
        if "energy" in self.mapping:
            self.implemented_properties += ["free_energy", "forces", "stress"]
        self.implemented_properties += [f"{name}_std" for name in self.mapping] if self.model.is_ensemble else []

    def _check_mapping(self) -> None:
        m = self.model
        for name, head in self.mapping.items():
            if head not in m.heads:
                raise ConfigError(f"properties[{name!r}]: no head {head!r} in this model; "
                                  f"heads: {', '.join(m.heads)}")
            level, dim = m.levels[head], m.dims[head]
            if name == "energy" and (level != "graph" or dim != 1):
                raise ConfigError(f"properties['energy']: head {head!r} is {level}-level with {dim} component(s); "
                                  "energy needs a one-component graph-level head")
            if name in NODE_PROPERTIES and (level != "node" or dim != 1):
                raise ConfigError(f"properties[{name!r}]: head {head!r} is {level}-level with {dim} component(s); "
                                  f"{name} needs a one-component node-level head")
            if name == "energy" and m.units[head] not in ENERGY_UNITS:
                raise ConfigError(f"properties['energy']: head {head!r} has unit {m.units[head]!r}, which is not an "
                                  f"energy unit this calculator converts to eV ({', '.join(u for u in ENERGY_UNITS if u)})")

    def _forces_unavailable(self) -> ForcesUnavailable:
        cfg = self.model.cfg.model
        why = ("model.edge_features is 'none'" if cfg.edge_features == "none"
               else f"its conv layer {cfg.conv!r} does not use edge features (for pna: conv_options.use_edge_features)")
        return ForcesUnavailable(
            f"{self.model.run_dirs[0]}: forces and stress need an energy that depends smoothly on interatomic "
            f"distances, but this model sees distances only through the neighbour cutoff ({why}): its energy "
            "is piecewise constant in the positions. Train a model whose conv uses edge features for forces.")

    def calculate(self, atoms: Atoms | None = None, properties: list[str] | None = None,
                  system_changes: list[str] = all_changes) -> None:
        super().calculate(atoms, properties or ["energy"], system_changes)
        wanted = set(properties or ["energy"])
        need_forces = "forces" in wanted
        need_stress = "stress" in wanted
        if (need_forces or need_stress) and not self.model.depends_on_distances:
            raise self._forces_unavailable()
        if need_stress and not self.atoms.pbc.all():
            raise PropertyNotImplementedError("stress needs a cell periodic along all three axes")
        self.results.update(self._evaluate(self.atoms, need_forces, need_stress))

    def _evaluate(self, atoms: Atoms, need_forces: bool, need_stress: bool) -> dict[str, object]:
        m = self.model
        graphs = m.graphs([structure_from_atoms(atoms, "the calculator's atoms")])
        batch = collate(graphs, np.arange(1))
        dtype, device = m.dtype, m.device
        grad = need_forces or need_stress
        pos = torch.tensor(atoms.positions, dtype=dtype, device=device, requires_grad=need_forces)
        cell = torch.tensor(atoms.cell.array, dtype=dtype, device=device)
        src, dst = (torch.from_numpy(np.asarray(a, dtype=np.int64)).to(device) for a in (graphs.src, graphs.dst))
        # Image shifts in cell units, recovered from the neighbour list's vectors: vec = r_dst - r_src - S @ cell.
        shift_cart = atoms.positions[graphs.dst] - atoms.positions[graphs.src] - graphs.vec
        periodic = atoms.cell.rank == 3 and bool(np.abs(shift_cart).max(initial=0.0) > 1e-3)
        images = np.rint(shift_cart @ np.linalg.inv(atoms.cell.array)) if periodic else np.zeros_like(shift_cart)
        strain = torch.zeros((3, 3), dtype=dtype, device=device, requires_grad=need_stress)
        deform = torch.eye(3, dtype=dtype, device=device) + 0.5 * (strain + strain.T)
        r, lattice = pos @ deform, cell @ deform
        vec = r[dst] - r[src] - torch.from_numpy(images).to(device=device, dtype=dtype) @ lattice
        batch = replace(batch, edge_vec=vec, edge_dist=torch.linalg.norm(vec, dim=1))
        with torch.enable_grad() if grad else torch.no_grad():
            outputs = m.outputs(batch, set(self.mapping.values()))  # head -> (members, rows, 1)
            results: dict[str, object] = {}
            for name, head in self.mapping.items():
                values = outputs[head] * (ENERGY_UNITS[m.units[head]] if name == "energy" else 1.0)
                results[name] = _value(values.mean(0), m.levels[head])
                if m.is_ensemble:
                    results[f"{name}_std"] = _value(values.std(0), m.levels[head])
            if "energy" in results:
                results["free_energy"] = results["energy"]
            if grad:
                head = self.mapping["energy"]
                energy = outputs[head].mean(0).sum() * ENERGY_UNITS[m.units[head]]
                inputs = [t for t, needed in ((pos, need_forces), (strain, need_stress)) if needed]
                derivatives = list(torch.autograd.grad(energy, inputs))
                if need_forces:
                    results["forces"] = -derivatives.pop(0).detach().cpu().numpy().astype(np.float64)
                if need_stress:
                    sigma = derivatives.pop(0).detach().cpu().numpy() / atoms.get_volume()
                    results["stress"] = sigma[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]].astype(np.float64)
        return results


def _value(values: torch.Tensor, level: str) -> float | np.ndarray:
    """A (rows, dim) prediction as ASE stores it: a float for one graph value, else (n,) or (n, dim) arrays."""
    array = values.detach().cpu().numpy().astype(np.float64)
    if level == "graph":
        array = array[0]
        return float(array[0]) if array.size == 1 else array
    return array[:, 0] if array.shape[1] == 1 else array
