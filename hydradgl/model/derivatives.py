"""Forces and stress as derivatives of a model's energy, through the edge vectors.

A model sees the positions only through its edge vectors ``v_e = r_dst(e) - r_src(e) - s_e`` (``s_e``
the periodic image shift, a lattice vector combination), so with ``g_e = dE/dv_e``

.. math::
    F_k = -\\frac{\\partial E}{\\partial r_k} = \\sum_{e:\\, src(e) = k} g_e - \\sum_{e:\\, dst(e) = k} g_e,

which reaches every atom, images included, without positions in the batch.

A homogeneous strain :math:`\\varepsilon` maps every position and every lattice vector, hence every
image shift, by :math:`x \\to (I + \\varepsilon) x`, so every edge vector goes to
:math:`(I + \\varepsilon) v_e` and

.. math::
    \\frac{\\partial E_g}{\\partial \\varepsilon_{ab}} = \\sum_{e \\in g} g_{e,a} v_{e,b},
    \\qquad \\sigma_g = \\frac{1}{V_g} \\operatorname{sym}\\Big(\\sum_{e \\in g} g_e \\otimes v_e\\Big),

the stress in ASE's convention (positive under tension; ``V_g`` the cell's volume), its symmetric part
(an antisymmetric strain is a rotation, which leaves an invariant energy unchanged), in Voigt order
xx, yy, zz, yz, xz, xy. Both come from the one gradient ``g``: :func:`derivatives` takes it once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hydradgl.ops import MessageGraph

#: The tensor components of the Voigt order xx, yy, zz, yz, xz, xy (ASE's): rows, then columns.
VOIGT_ROWS = (0, 1, 2, 1, 0, 0)
VOIGT_COLUMNS = (0, 1, 2, 2, 2, 1)


@dataclass(frozen=True)
class Derivatives:
    """What :func:`derivatives` was asked for: ``forces`` (N, 3), ``stress`` (B, 6) Voigt; None if not."""

    forces: torch.Tensor | None = None
    stress: torch.Tensor | None = None


def cell_volumes(cell: torch.Tensor) -> torch.Tensor:
    """(B,) volumes ``|det|`` of (B, 3, 3) cells (lattice vectors as rows; 0 for a structure without one)."""
    return torch.linalg.det(cell).abs()


def derivatives(energy: torch.Tensor, edge_vec: torch.Tensor, graph: MessageGraph,
                volume: torch.Tensor | None = None, forces: bool = True, stress: bool = False,
                create_graph: bool = False, retain_graph: bool | None = None) -> Derivatives:
    """Forces ``-dE/dr`` (N, 3) and/or stress (B, 6) of the ``energy`` (any shape; summed: each graph's
    energy must depend on its own edges only) from one gradient along ``edge_vec`` (E, 3), the edges of
    ``graph``. ``volume``: (B,) the graphs' cell volumes, which the stress needs (positive: a structure
    without a periodic cell has no stress, the caller refuses it). ``create_graph``: keep the
    derivatives differentiable (training on them needs it); ``retain_graph``: keep the energy's graph
    for another gradient (default: as ``create_graph``)."""
    if stress and volume is None:
        raise ValueError("the stress needs the volume of every graph's cell")
    grad = None
    if graph.num_edges and (forces or stress):
        (grad,) = torch.autograd.grad(energy.sum(), edge_vec, create_graph=create_graph, retain_graph=retain_graph,
                                      allow_unused=True)
    if grad is None:  # no edges, or an energy that does not depend on them
        grad = torch.zeros_like(edge_vec)
    out_forces = out_stress = None
    if forces:
        out_forces = grad.new_zeros((graph.num_nodes, 3)).index_add(0, graph.src, grad)
        out_forces = out_forces.index_add(0, graph.dst, grad, alpha=-1.0)
    if stress:
        assert volume is not None  # checked above
        rows, columns = list(VOIGT_ROWS), list(VOIGT_COLUMNS)
        per_edge = 0.5 * (grad[:, rows] * edge_vec[:, columns] + grad[:, columns] * edge_vec[:, rows])  # (E, 6)
        edge_graph = graph.node_graph().index_select(0, graph.dst)
        virial = per_edge.new_zeros((graph.num_graphs, 6)).index_add(0, edge_graph, per_edge)
        out_stress = virial / volume.to(virial.dtype).unsqueeze(1)
    return Derivatives(out_forces, out_stress)
