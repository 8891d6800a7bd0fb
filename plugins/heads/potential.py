"""Potential head: a total energy as a sum of atomic energies in physical units, whose forces and stress
the model differentiates (an interatomic potential beside the other heads)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from ase.data import atomic_numbers, chemical_symbols
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from hydradgl import hookimpl
from hydradgl.errors import ConfigError
from hydradgl.nn.layers import mlp
from hydradgl.plugins import HeadContext, HeadSpec


class PotentialHeadOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    forces: str | None = Field(
        None, description="Dataset target (3-component node target, the energy's unit per Angstrom) the forces "
                          "-dE/dr are fitted to; reported as a head of that name. Default: energies only.")
    force_weight: float = Field(1.0, ge=0, description="Weight of the force term in the total loss (the energy's "
                                                       "weight is the head's alpha).")
    stress: str | None = Field(
        None, description="Dataset target (6-component graph target, the energy's unit per Angstrom^3, ASE's "
                          "convention (1/V) dE/d(strain) in Voigt order xx yy zz yz xz xy) the stress is fitted to; "
                          "reported as a head of that name. Needs periodic cells (graph.periodic). Default: none.")
    stress_weight: float = Field(1.0, ge=0, description="Weight of the stress term in the total loss.")
    e0: Literal["fit", "average"] | dict[str, float] = Field(
        "fit", description="Reference energy per element: fit (least squares of the training energies on the "
                           "element counts), average (the mean energy per atom for every element), or given as "
                           "{symbol: energy}.")


class PotentialHead(nn.Module):
    r"""Total energy as a sum of atomic energies, the convention of NequIP and MACE:

    .. math::
        E_g = \sum_{i \in g} \big( s\, \mathrm{MLP}(h_i) + \mu + E^0_{z_i} \big)

    with reference energies :math:`E^0` per element, and a shift :math:`\mu` and scale :math:`s` fitted on
    the training split (:meth:`fit_statistics`): :math:`\mu` the mean residual energy per atom after the
    references, :math:`s` the RMS of the force components (the residuals' standard deviation without
    forces); absent values (NaN: frames stored without an energy or forces) are left out. All three are
    buffers, saved with the weights, so a trained model carries them. The loss measures the energy per
    atom, the forces and the stress in units of :math:`s` (HeadSpec's ``scale``), so ``force_weight``
    weighs force components against energies per atom on one scale.

    Args:
        in_dim: width of the trunk's node features.
        layers: hidden widths of the MLP.
        act: activation name.
        n_species: number of elements (rows of ``e0``).
        e0: ``"fit"``, ``"average"``, or a reference energy per species index.

    Shapes:
        input: batched graph of B graphs, node features (N, in_dim), species (N,); output: (B, 1).
    """

    e0: torch.Tensor
    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, in_dim: int, layers: list[int], act: str, n_species: int,
                 e0: Literal["fit", "average"] | list[float] = "fit"):
        super().__init__()
        self.mlp = mlp(in_dim, layers, 1, act)
        self.e0_mode = e0 if isinstance(e0, str) else "given"
        self.register_buffer("e0", torch.zeros(n_species) if isinstance(e0, str) else torch.tensor(e0))
        self.register_buffer("shift", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))

    def forward(self, graph, h: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        atomic = self.scale * self.mlp(h).squeeze(-1) + self.shift + self.e0[species]
        return graph.readout(atomic.unsqueeze(-1), "sum")

    def fit_statistics(self, counts: np.ndarray, energy: np.ndarray, forces: np.ndarray | None) -> None:
        """Reference energies, shift and scale from the training split: ``counts`` (G, S) atoms of each
        element per graph, ``energy`` (G,), ``forces`` (N, 3) or None; NaN entries (absent) ignored, the
        energies' statistics taken over the graphs with a finite energy."""
        present = np.isfinite(energy)
        counts, energy = counts[present], energy[present]
        atoms = counts.sum(axis=1)
        if self.e0_mode == "fit":
            e0 = np.linalg.lstsq(counts, energy, rcond=None)[0]
        elif self.e0_mode == "average":
            e0 = np.full(counts.shape[1], energy.sum() / atoms.sum())
        else:
            e0 = self.e0.double().cpu().numpy()
        residual = (energy - counts @ e0) / atoms
        shift = float(residual.mean())
        if forces is not None and np.isfinite(forces).any():
            scale = float(np.sqrt(np.nanmean(forces ** 2)))
        else:
            scale = float(residual.std())
        self.e0.copy_(torch.as_tensor(e0))
        self.shift.fill_(shift)
        self.scale.fill_(scale if scale > 0 else 1.0)


def make_potential_head(in_dim: int, out_dim: int, layers: list[int], options: PotentialHeadOptions,
                        context: HeadContext) -> PotentialHead:
    e0: Literal["fit", "average"] | list[float]
    if isinstance(options.e0, dict):
        given = {atomic_numbers.get(symbol, -1): value for symbol, value in options.e0.items()}
        missing = [chemical_symbols[z] for z in context.species if z not in given]
        unknown = [symbol for symbol in options.e0 if symbol not in atomic_numbers]
        if missing or unknown:
            raise ConfigError(f"heads.options.e0: {'unknown element(s) ' + ', '.join(unknown) if unknown else ''}"
                              f"{'; ' if missing and unknown else ''}"
                              f"{'no reference energy for ' + ', '.join(missing) if missing else ''} "
                              f"(the dataset's elements: {', '.join(chemical_symbols[z] for z in context.species)})")
        e0 = [given[z] for z in context.species]
    else:
        e0 = options.e0
    return PotentialHead(in_dim, layers, context.activation, len(context.species), e0)


@hookimpl
def register_heads(register):
    register(HeadSpec(name="potential", description="Total energy as a sum of atomic energies (reference "
                                                     "energies, shift, scale); forces and stress as its derivatives",
                      options=PotentialHeadOptions, factory=make_potential_head, level="graph",
                      kernels=("dgl", "torch"), energy=True))
