"""ASE calculator: a trained hydradgl model (or ensemble) inside ASE relaxations, MD and screening loops.

``properties`` maps ASE result names to heads: ``energy`` to a one-component graph head (converted to eV
from the head's unit), ``energies``/``charges``/``magmoms`` to one-component node heads, any other name
to any head (stored as predicted in ``atoms.calc.results``). Forces and stress are derivatives of the
energy, ``F = -dE/dr`` and ``sigma = (1/V) dE/d(strain)``, from its gradient along the edge vectors,
which are formed in torch from the positions, the cell and the image shifts on every call (the neighbour
list is reused while the atoms stay within its skin), by the function training uses
(:func:`hydradgl.model.derivatives.derivatives`). They exist only when the model reads distances (edge
features or the raw geometry), and come from a smooth energy only with convs that declare it (SchNet,
EGNN, CGCNN and PNA with their envelope; SmoothnessWarning says why otherwise).
For an ensemble, every value is the members' mean and ``<name>_std`` holds their spread, forces and
stress included (``forces_std``: each member's forces, from one backward pass through all of them, as
each member sees its own copy of the edge vectors).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ase import Atoms, units
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from hydradgl.api import TrainedModel, load, structure_from_atoms
from hydradgl.data.batch import Batch
from hydradgl.errors import ConfigError, HydraError
from hydradgl.model.assembler import SmoothnessWarning, roughness
from hydradgl.model.derivatives import derivatives
from hydradgl.ops import MessageGraph

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
        compile: run the model through ``torch.compile`` (inductor): the first call compiles (once per
            process for the energy alone and once with derivatives; faster with inductor's on-disk cache
            warm), later calls of a small cell are faster than eager ones (docs/api.md). The model then
            runs on the torch kernel path, also outside this calculator.
        skin: Angstrom added to the cutoff of the neighbour search, whose result is reused while no atom
            has moved more than half of it and the cell, elements and periodicity are unchanged (ASE's
            ``NeighborList`` rule): the same edges as a search every call, for less time per MD step.
            0 searches on every call; a model with ``graph.max_neighbours`` always does.

    Forces need a smooth energy: the first forces call of a model whose energy jumps at the cutoff
    (CGCNN and PNA without their envelope, SAGE) or follows a max/min (PNA's min/max aggregators) warns
    with :class:`SmoothnessWarning`; SchNet, EGNN, and CGCNN and PNA with their envelope are smooth
    (docs/api.md).
    """

    def __init__(self, model: TrainedModel | str | os.PathLike, properties: dict[str, str] | None = None,
                 device: str = "cpu", dtype: torch.dtype | None = None, compile: bool = False, skin: float = 0.5,
                 **kwargs):
        super().__init__(**kwargs)
        self.model = model if isinstance(model, TrainedModel) else load(model, device=device)
        graph = self.model.info.graph
        assert graph is not None  # load_run fills in the graph settings of older checkpoints
        # graph.max_neighbours keeps the nearest k, which a list searched wider cannot reproduce by a cutoff
        self.skin = float(skin) if graph.max_neighbours is None else 0.0
        self._neighbours: _NeighbourList | None = None
        #: How many times the neighbour list was searched (the rest of the calls reused it).
        self.neighbour_searches = 0
        self._smoothness_warned = False
        if dtype is not None:
            self.model.to(dtype)
        self.compiled = compile
        self._outputs = self._cell_outputs
        if compile:
            for member in self.model.members:  # DGL's kernels do not trace; the torch path computes the same
                member.model.kernels = "torch"
            # dynamic: one compiled graph serves every atom and edge count (MD changes the edges each step)
            self._outputs = torch.compile(self._cell_outputs, dynamic=True,
                                          options=_compile_options(self.model.device))
        self.mapping = dict(properties) if properties is not None else default_properties(self.model)
        self._check_mapping()
        self.implemented_properties = list(self.mapping)
        if "energy" in self.mapping:
            self.implemented_properties += ["free_energy", "forces", "stress"]
        if self.model.is_ensemble:
            derived = ["forces", "stress"] if "energy" in self.mapping else []
            self.implemented_properties += [f"{name}_std" for name in [*self.mapping, *derived]]

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
                known = ", ".join(u for u in ENERGY_UNITS if u)
                raise ConfigError(f"properties['energy']: head {head!r} has unit {m.units[head]!r}, which is not an "
                                  f"energy unit this calculator converts to eV ({known})")

    def _forces_unavailable(self) -> ForcesUnavailable:
        cfg = self.model.cfg.model
        why = ("model.edge_features is 'none'" if cfg.edge_features == "none"
               else f"its conv layer {cfg.conv!r}, with the options used, reads neither edge features nor the "
                    "geometry (its traits)")
        return ForcesUnavailable(
            f"{self.model.run_dirs[0]}: forces and stress need an energy that depends smoothly on interatomic "
            f"distances, but this model sees distances only through the neighbour cutoff ({why}): its energy "
            "is piecewise constant in the positions. Train a model whose conv reads edge features or the geometry "
            "(hydradgl list-plugins shows each conv's traits).")

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
        if need_forces and not self._smoothness_warned:
            self._smoothness_warned = True
            self._warn_if_not_smooth()
        self.results.update(self._evaluate(self.atoms, need_forces, need_stress))

    def _warn_if_not_smooth(self) -> None:
        """SmoothnessWarning naming what makes this model's energy rough, if anything does."""
        m = self.model
        reasons = roughness(m.cfg.model.conv, m.smooth_at_cutoff, m.uses_extrema, m.cfg.model.activation)
        if reasons:
            warnings.warn(SmoothnessWarning(
                f"{m.run_dirs[0]}: this model's energy is not smooth in the positions: {'; and '.join(reasons)}. "
                "For relaxations and MD train a smooth model: a conv whose traits say smooth at cutoff and no "
                "extrema with the options used (hydradgl list-plugins shows each conv's traits; some follow "
                "options such as model.conv_options.envelope) and a smooth model.activation (docs/api.md)."),
                stacklevel=3)

    def _edges(self, atoms: Atoms) -> tuple[_NeighbourList, np.ndarray, np.ndarray, np.ndarray]:
        """(neighbour list, src, dst, images): the edges within the model's cutoff and their image shifts in
        cell units, from the neighbour list, searched anew when the skin no longer covers the atoms' moves."""
        nl = self._neighbours
        if nl is None or not nl.covers(atoms, self.skin):
            nl = self._neighbours = _NeighbourList.search(self.model, atoms, self.skin)
            self.neighbour_searches += 1
        if not self.skin:  # searched at the cutoff itself, for these very positions
            return nl, nl.src, nl.dst, nl.images
        return nl, *nl.within(atoms.positions, atoms.cell.array, self.model.cutoff)

    def _evaluate(self, atoms: Atoms, need_forces: bool, need_stress: bool) -> dict[str, object]:
        m = self.model
        nl, src, dst, images = self._edges(atoms)
        dtype, device = m.dtype, m.device
        grad = need_forces or need_stress
        members, n, e = len(m.members), len(atoms), len(src)
        as_index = lambda a: torch.from_numpy(np.asarray(a, dtype=np.int64)).to(device)  # noqa: E731
        # Edge vectors from the positions and the cell (float64, then the model's dtype), one copy per member
        # stacked: one backward pass gives every member's derivatives.
        positions = torch.from_numpy(np.asarray(atoms.positions, dtype=np.float64))
        cell = torch.from_numpy(np.asarray(atoms.cell.array, dtype=np.float64))
        vec = positions[torch.from_numpy(dst)] - positions[torch.from_numpy(src)] - torch.from_numpy(images) @ cell
        vec = vec.to(device=device, dtype=dtype).repeat(members, 1).requires_grad_(grad)
        with torch.enable_grad() if grad else torch.no_grad():
            no_inputs = torch.zeros((n, 0), dtype=dtype, device=device)  # graphs() refuses models needing any
            outputs = self._call_model(nl.species.to(device), no_inputs, as_index(src), as_index(dst),
                                       as_index([n]), as_index([e]), vec)
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
                # the members as one batch of graphs, member k's edges being rows k*e:(k+1)*e of vec
                offsets = np.repeat(np.arange(members) * n, e)
                graph = MessageGraph.from_edges(as_index(np.tile(src, members) + offsets),
                                                as_index(np.tile(dst, members) + offsets), members * n,
                                                as_index([n] * members), as_index([e] * members))
                volume = torch.full((members,), float(abs(atoms.cell.volume)), dtype=dtype, device=device)
                found = derivatives(outputs[head] * ENERGY_UNITS[m.units[head]], vec, graph,
                                    volume if need_stress else None, forces=need_forces, stress=need_stress)
                if found.forces is not None:
                    results.update(_members_mean_std("forces", found.forces.view(members, n, 3), m.is_ensemble))
                if found.stress is not None:
                    results.update(_members_mean_std("stress", found.stress, m.is_ensemble))
        return results

    def _call_model(self, *tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        try:  # the eager model raises neither kind: only a failed compilation is translated
            return self._outputs(*tensors)
        except (torch._dynamo.exc.TorchDynamoException, torch._inductor.exc.InductorError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise HydraError(f"HydraCalculator(compile=True): torch.compile failed ({first}); inductor needs a "
                             "working C++ compiler on CPU. compile=False runs the same model without it") from error

    def _cell_outputs(self, species: torch.Tensor, node_inputs: torch.Tensor, src: torch.Tensor,
                      dst: torch.Tensor, batch_num_nodes: torch.Tensor, batch_num_edges: torch.Tensor,
                      vec: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every member's physical outputs of the mapped heads (head -> (members, rows, dim)) for one
        structure, member k reading its own copy of the edge vectors, rows ``k*E:(k+1)*E`` of ``vec``
        (members * E, 3): the function ``compile=True`` compiles (the derivatives are taken outside)."""
        graph = MessageGraph(src, dst, species.shape[0], batch_num_nodes, batch_num_edges)
        batches = [Batch(graph, species, node_inputs, torch.linalg.norm(v, dim=1), v)
                   for v in vec.view(len(self.model.members), -1, 3).unbind(0)]
        return self.model.outputs(batches, set(self.mapping.values()))


def default_properties(model: TrainedModel) -> dict[str, str]:
    """ASE result name -> head: every head under its own name, except that a model with one potential
    head gives it as ``energy`` (forces and stress then come from its derivatives, computed here) and
    the potential's derived forces and stress heads are left out."""
    first = model.members[0].model
    potentials = first.potential_heads
    derived = {forces for forces in potentials.values() if forces is not None} | set(first.stress_heads.values())
    mapping = {h: h for h in model.heads if h not in derived}
    if len(potentials) == 1:
        (name,) = potentials
        del mapping[name]
        mapping["energy"] = name
    return mapping


@dataclass
class _NeighbourList:
    """Edges within the model's cutoff plus a skin, with what they were searched for: the atoms'
    positions, cell, elements and periodicity. ``images``: (E, 3) image shifts in cell units;
    ``species``: (N,) the atoms' element indices in the model's table."""

    positions: np.ndarray
    cell: np.ndarray
    numbers: np.ndarray
    pbc: np.ndarray
    species: torch.Tensor
    src: np.ndarray
    dst: np.ndarray
    images: np.ndarray

    @classmethod
    def search(cls, model: TrainedModel, atoms: Atoms, skin: float) -> _NeighbourList:
        graphs = model.graphs([structure_from_atoms(atoms, "the calculator's atoms")], skin=skin)
        src, dst = (np.asarray(a, dtype=np.int64) for a in (graphs.src, graphs.dst))
        # Image shifts in cell units, recovered from the search's vectors: vec = r_dst - r_src - S @ cell.
        shift_cart = atoms.positions[dst] - atoms.positions[src] - graphs.vec
        periodic = atoms.cell.rank == 3 and bool(np.abs(shift_cart).max(initial=0.0) > 1e-3)
        images = np.rint(shift_cart @ np.linalg.inv(atoms.cell.array)) if periodic else np.zeros_like(shift_cart)
        return cls(atoms.positions.copy(), atoms.cell.array.copy(), atoms.numbers.copy(), atoms.pbc.copy(),
                   torch.from_numpy(graphs.species_of(slice(None))), src, dst, images)

    def covers(self, atoms: Atoms, skin: float) -> bool:
        """Whether every edge within the cutoff is among these: same cell, elements and periodicity, and
        no atom moved more than half the skin since the search."""
        if len(atoms) != len(self.numbers) or not (np.array_equal(atoms.numbers, self.numbers)
                                                    and np.array_equal(atoms.pbc, self.pbc)
                                                    and np.array_equal(atoms.cell.array, self.cell)):
            return False
        moved = atoms.positions - self.positions
        return bool(np.einsum("ij,ij->i", moved, moved).max(initial=0.0) <= (0.5 * skin) ** 2)

    def within(self, positions: np.ndarray, cell: np.ndarray,
               cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(src, dst, images) of the edges now shorter than ``cutoff`` (in the search's order)."""
        vec = positions[self.dst] - positions[self.src] - self.images @ cell
        keep = np.einsum("ij,ij->i", vec, vec) < cutoff * cutoff
        return self.src[keep], self.dst[keep], self.images[keep]


def _compile_options(device: torch.device | str) -> dict[str, str | int | bool | Callable[..., Any]]:
    """Inductor options for the calculator's graph. On CPU, an expression of more than 8 operations is
    stored once rather than recomputed wherever it is read: by default inductor inlines each atom's
    gradient (some 30 operations) into the backward pass's per-edge gather, computing it once per edge
    instead of once per atom (docs/api.md)."""
    return {"realize_opcount_threshold": 8} if torch.device(device).type == "cpu" else {}


def _members_mean_std(name: str, values: torch.Tensor, ensemble: bool) -> dict[str, np.ndarray]:
    """``name`` -> the members' mean of ``values`` (members, ...) and, for an ensemble, ``<name>_std`` ->
    their standard deviation, as float64 arrays."""
    array = values.detach().cpu().numpy().astype(np.float64)
    out = {name: array.mean(axis=0)}
    if ensemble:
        out[f"{name}_std"] = array.std(axis=0, ddof=1)
    return out


def _value(values: torch.Tensor, level: str) -> float | np.ndarray:
    """A (rows, dim) prediction as ASE stores it: a float for one graph value, else (n,) or (n, dim) arrays."""
    array = values.detach().cpu().numpy().astype(np.float64)
    if level == "graph":
        array = array[0]
        return float(array[0]) if array.size == 1 else array
    return array[:, 0] if array.shape[1] == 1 else array
