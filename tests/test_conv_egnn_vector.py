"""egnn-vector: one layer against a float64 loop reference on both kernel paths, O(3) equivariance of its
vectors, second derivatives in the edge vectors, its traits and refusals, and, in a float64 potential on a
periodic triclinic cell, forces that rotate with it and a vector head that does too."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck
from torch.nn import functional as F

from hydradgl.data.pipeline import prepare_data
from hydradgl.errors import ConfigError
from hydradgl.model.assembler import build_model
from hydradgl.nn import Edges, NodeState
from hydradgl.plugins import ConvContext
from hydradgl_plugins.convs.egnn_vector import EGNNVectorConv, EGNNVectorOptions, make_egnn_vector
from tests.test_conv_painn import PATHS, cell, edges_of, float64_batch, physical, random_state, reference_case, run
from tests.test_model_convs import incoming, random_graph
from tests.test_model_geometric import CUTOFF, random_geometry, random_rotation, transformed
from tests.test_potential import emt_config

DIM = 5
EGNN_VECTOR = {"model.conv": "egnn-vector"}


def layers(n: int = 2, dim: int = DIM, seed: int = 0) -> list[EGNNVectorConv]:
    torch.manual_seed(seed)
    return [make_egnn_vector(dim, dim, EGNNVectorOptions(), ConvContext(0, None, CUTOFF)).double() for _ in range(n)]


def reference(conv: EGNNVectorConv, graph, h: torch.Tensor, v: torch.Tensor,
              vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer by loops over receivers and their incoming edges, from the class docstring's equations."""
    w1 = torch.cat([conv.edge_dst.weight, conv.edge_src.weight, conv.edge_dist.unsqueeze(1)], dim=1)
    h_out, v_out = [], []
    for i in range(graph.num_nodes):
        total = torch.zeros(DIM, dtype=torch.float64)
        vi = v[i].clone()
        for j, e in zip(*incoming(graph, i)):
            r = float(vec[e].norm())
            z = torch.cat([h[i], h[j], torch.tensor([(r / CUTOFF) ** 2], dtype=torch.float64)])
            m = F.silu(conv.edge_out(F.silu(w1 @ z + conv.edge_dst.bias)))
            m = m * (0.5 * (math.cos(math.pi * r / CUTOFF) + 1.0) if r < CUTOFF else 0.0)
            total = total + m
            vi = vi + torch.outer(vec[e] / CUTOFF, conv.vector.weight @ m)
        vi = torch.sigmoid(conv.gate.weight @ h[i] + conv.gate.bias) * vi
        lengths = torch.sqrt((vi ** 2).sum(dim=0) + 1e-8)
        h_out.append(h[i] + conv.node_net(torch.cat([h[i], total, lengths])))
        v_out.append(vi)
    return torch.stack(h_out), torch.stack(v_out)


@pytest.mark.parametrize("path", PATHS)
def test_layer_matches_loop_reference(path):
    graph, vec, state = reference_case(path)
    (conv,) = layers(1)
    out = conv(graph, state, edges_of(vec))
    h_ref, v_ref = reference(conv, graph, state.scalars, state.vectors, vec)
    torch.testing.assert_close(out.scalars, h_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.vectors, v_ref, rtol=1e-10, atol=1e-10)
    no_vectors = conv(graph, state.replace(vectors=None), edges_of(vec))
    zeros = reference(conv, graph, state.scalars, torch.zeros_like(state.vectors), vec)
    torch.testing.assert_close(no_vectors.vectors, zeros[1], rtol=1e-10, atol=1e-10)  # a first layer: from zeros


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("reflect", [False, True])
def test_scalars_are_invariant_and_vectors_rotate(path, reflect):
    graph = random_graph(n=8, seed=7).using(path)
    vec = random_geometry(graph, seed=8).vec
    convs = layers(2)
    state = random_state(graph.num_nodes, vectors=False)
    rot = torch.as_tensor(random_rotation(1)) * (-1.0 if reflect else 1.0)
    out = run(convs, graph, state, edges_of(vec))
    moved = run(convs, graph, state, edges_of(vec @ rot.T))
    torch.testing.assert_close(moved.scalars, out.scalars, rtol=0, atol=1e-10)
    turned = torch.einsum("ab,nbf->naf", rot, out.vectors)
    torch.testing.assert_close(moved.vectors, turned, rtol=0, atol=1e-10)
    assert (out.vectors - turned).abs().max() > 1e-3  # they do turn


@pytest.mark.parametrize("path", PATHS)
def test_outputs_are_twice_differentiable_in_the_edge_vectors(path):
    graph = random_graph(n=4, p=0.6, seed=9).using(path)
    vec = random_geometry(graph, seed=10).vec.clone().requires_grad_()
    convs = layers(2, dim=3)
    state = NodeState(torch.randn(graph.num_nodes, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    weights = torch.randn(graph.num_nodes, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def energy_and_moment(vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = run(convs, graph, state, Edges(None, vec.norm(dim=1), vec, CUTOFF))
        return out.scalars.sum(), (out.vectors * weights).sum()

    assert gradcheck(energy_and_moment, (vec,))
    assert gradgradcheck(energy_and_moment, (vec,))


def test_traits_registration_and_refusals(registry):
    traits = EGNNVectorConv.traits
    assert traits.problems() == [] and traits.equivariant and traits.smooth_at_cutoff
    assert traits.takes == traits.returns == {"scalars", "vectors"}
    no_envelope = make_egnn_vector(4, 4, EGNNVectorOptions(envelope=False), ConvContext(0, None, CUTOFF))
    assert no_envelope.traits.smooth_at_cutoff is False
    spec = registry.conv("egnn-vector")
    assert spec.module is EGNNVectorConv and spec.options is EGNNVectorOptions and spec.equivariant
    assert not registry.conv("egnn").equivariant
    with pytest.raises(ConfigError, match=r"egnn-vector keeps the feature width: in \(4\) and out \(8\)"):
        make_egnn_vector(4, 8, EGNNVectorOptions(), ConvContext(0, None, CUTOFF))
    with pytest.raises(ConfigError, match="egnn-vector: model.conv_options.use_edge_features is true"):
        make_egnn_vector(4, 4, EGNNVectorOptions(use_edge_features=True), ConvContext(0, None, CUTOFF))


def test_potential_forces_and_a_vector_head_rotate_with_the_cell(registry):
    cfg = emt_config(**EGNN_VECTOR, heads=[{"name": "energy", "kind": "potential", "options": {"forces": "forces"}},
                                           {"name": "F", "kind": "vector-head", "target": "forces"}])
    prepared = prepare_data(cfg, registry)
    torch.manual_seed(0)
    model = build_model(cfg, prepared.info, registry).double()
    model.fit_energy_statistics(prepared.train, prepared.info.species)
    model.eval()
    s = cell()
    rot = -random_rotation(4)

    def outputs(structure):
        out = model(float64_batch(cfg, prepared.info.species, [structure]))
        return (physical(model, "energy", out["energy"])[0, 0], physical(model, "forces", out["forces"]),
                out["F"].detach().numpy())

    energy, forces, head = outputs(s)
    moved_energy, moved_forces, moved_head = outputs(transformed(s, rot, np.zeros(3), np.arange(s.n_atoms)))
    assert np.abs(forces).max() > 1e-4 and np.abs(head).max() > 1e-6
    np.testing.assert_allclose(moved_energy, energy, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(moved_forces, forces @ rot.T, rtol=0, atol=1e-10)
    np.testing.assert_allclose(moved_head, head @ rot.T, rtol=0, atol=1e-10)
