"""Forces as derivatives of a model's energy, through the edge vectors.

A model sees the positions only through its edge vectors ``v_e = r_dst(e) - r_src(e)`` (periodic image
shifts included), so with ``g_e = dE/dv_e``

.. math::
    F_k = -\\frac{\\partial E}{\\partial r_k} = \\sum_{e:\\, src(e) = k} g_e - \\sum_{e:\\, dst(e) = k} g_e,

which reaches every atom, images included, without positions in the batch.
"""

from __future__ import annotations

import torch

from hydradgl.ops import MessageGraph


def forces_from_edges(energy: torch.Tensor, edge_vec: torch.Tensor, graph: MessageGraph,
                      create_graph: bool) -> torch.Tensor:
    """(N, 3) forces ``-dE/dr`` of the total ``energy`` (any shape; summed) with respect to the atoms,
    from its gradient along ``edge_vec`` (E, 3). ``create_graph``: keep the derivative differentiable
    (training on forces needs it)."""
    if graph.num_edges == 0:
        return edge_vec.new_zeros((graph.num_nodes, 3))
    (grad,) = torch.autograd.grad(energy.sum(), edge_vec, create_graph=create_graph, allow_unused=True)
    if grad is None:  # the energy does not depend on the edge vectors
        return edge_vec.new_zeros((graph.num_nodes, 3))
    forces = grad.new_zeros((graph.num_nodes, 3)).index_add(0, graph.src, grad)
    return forces.index_add(0, graph.dst, grad, alpha=-1.0)
