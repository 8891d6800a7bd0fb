"""PaiNN: one layer against a float64 loop reference on both kernel paths, O(3) equivariance, continuity
at the cutoff, second derivatives with respect to the edge vectors, and the factory's refusals; a float64
PaiNN potential on a periodic triclinic cell: forces rotate with it, energy invariant under translation and
permutation, forces equal to finite differences of the energy, and a vector head on its vectors."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch.autograd import gradcheck, gradgradcheck
from torch.nn import functional as F

from hydradgl.api import structure_from_atoms
from hydradgl.data.graphs import neighbour_edges
from hydradgl.data.loader import collate
from hydradgl.data.packing import assign_species, pack
from hydradgl.data.pipeline import prepare_data
from hydradgl.data.records import Structure
from hydradgl.errors import ConfigError
from hydradgl.model.assembler import build_model
from hydradgl.nn import Edges, NodeState
from hydradgl.ops import MessageGraph
from hydradgl.plugins import ConvContext
from hydradgl_plugins.convs.painn import VECTOR_EPS, PaiNNConv, PaiNNOptions, make_painn
from tests.test_model_convs import incoming, random_graph
from tests.test_model_geometric import CUTOFF, random_geometry, random_rotation, transformed
from tests.test_potential import emt_cell, emt_config

DIM = 5
PATHS = ("dgl", "torch")


def layers(n: int = 2, dim: int = DIM, radial_basis: int = 6, seed: int = 0) -> list[PaiNNConv]:
    torch.manual_seed(seed)
    return [make_painn(dim, dim, PaiNNOptions(radial_basis=radial_basis), ConvContext(0, None, CUTOFF)).double()
            for _ in range(n)]


def edges_of(vec: torch.Tensor) -> Edges:
    return Edges(None, vec.norm(dim=1), vec, CUTOFF)


def random_state(n: int, dim: int = DIM, vectors: bool = True, seed: int = 1) -> NodeState:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, dim, generator=g, dtype=torch.float64)
    v = torch.randn(n, 3, dim, generator=g, dtype=torch.float64) if vectors else None
    return NodeState(s, v)


def run(convs: list[PaiNNConv], graph: MessageGraph, state: NodeState, edges: Edges) -> NodeState:
    for conv in convs:
        state = conv(graph, state, edges)
    return state


def reference(conv: PaiNNConv, graph: MessageGraph, s: torch.Tensor, v: torch.Tensor,
              vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer by loops over receivers and their incoming edges, from the paper's equations."""
    f = conv.dim
    w1, b1, w2, b2 = conv.phi[0].weight, conv.phi[0].bias, conv.phi[2].weight, conv.phi[2].bias
    s_mid, v_mid = s.clone(), v.clone()
    for i in range(graph.num_nodes):
        for j, e in zip(*incoming(graph, i)):
            r = float(vec[e].norm())
            basis = torch.tensor([math.sin(n * math.pi * r / CUTOFF) / r for n in range(1, conv.radial_basis + 1)],
                                 dtype=torch.float64)
            envelope = 0.5 * (math.cos(math.pi * r / CUTOFF) + 1.0) if r < CUTOFF else 0.0
            w = (conv.filter.weight @ basis + conv.filter.bias) * envelope
            x = (w2 @ F.silu(w1 @ s[j] + b1) + b2) * w
            s_mid[i] = s_mid[i] + x[:f]
            v_mid[i] = v_mid[i] + v[j] * x[f:2 * f] + torch.outer(vec[e] / r, x[2 * f:])
    u1, c1, u2, c2 = (conv.update_net[0].weight, conv.update_net[0].bias, conv.update_net[2].weight,
                      conv.update_net[2].bias)
    s_out, v_out = s_mid.clone(), v_mid.clone()
    for i in range(graph.num_nodes):
        uv = v_mid[i] @ conv.mix_u.weight.T  # (3, F): the same channel mixing for each component
        vv = v_mid[i] @ conv.mix_v.weight.T
        length = torch.sqrt((vv ** 2).sum(dim=0) + VECTOR_EPS)
        a = u2 @ F.silu(u1 @ torch.cat([s_mid[i], length]) + c1) + c2
        v_out[i] = v_mid[i] + a[:f] * uv
        s_out[i] = s_mid[i] + a[2 * f:] + a[f:2 * f] * (uv * vv).sum(dim=0)
    return s_out, v_out


def reference_case(path: str) -> tuple[MessageGraph, torch.Tensor, NodeState]:
    """A random graph on kernel path ``path``, its edge vectors (the first one beyond the cutoff, so its
    message is 0) and a random node state with vectors: the input of a loop-reference test."""
    graph = random_graph(n=7, seed=3).using(path)
    vec = random_geometry(graph, seed=4).vec.clone()
    vec[0] *= 1.1 * CUTOFF / vec[0].norm()
    return graph, vec, random_state(graph.num_nodes)


@pytest.mark.parametrize("path", PATHS)
def test_painn_layer_matches_loop_reference(path):
    graph, vec, state = reference_case(path)
    (conv,) = layers(1)
    out = conv(graph, state, edges_of(vec))
    s_ref, v_ref = reference(conv, graph, state.scalars, state.vectors, vec)
    torch.testing.assert_close(out.scalars, s_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.vectors, v_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("path", PATHS)
def test_a_first_layer_without_vectors_starts_from_zero_vectors(path):
    graph = random_graph(n=6, seed=5).using(path)
    edges = edges_of(random_geometry(graph, seed=6).vec)
    (conv,) = layers(1)
    state = random_state(graph.num_nodes, vectors=False)
    out = conv(graph, state, edges)
    zeros = conv(graph, state.replace(vectors=torch.zeros(graph.num_nodes, 3, DIM, dtype=torch.float64)), edges)
    assert out.vectors is not None and out.vectors.shape == (graph.num_nodes, 3, DIM)
    assert out.vectors.abs().max() > 0  # the edge directions seed the vectors
    torch.testing.assert_close(out.scalars, zeros.scalars, rtol=0, atol=0)
    torch.testing.assert_close(out.vectors, zeros.vectors, rtol=0, atol=0)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("reflect", [False, True])
def test_scalars_are_invariant_and_vectors_rotate(path, reflect):
    graph = random_graph(n=8, seed=7).using(path)
    vec = random_geometry(graph, seed=8).vec
    convs = layers(2)
    state = random_state(graph.num_nodes)
    for seed in range(2):
        rot = torch.as_tensor(random_rotation(seed)) * (-1.0 if reflect else 1.0)  # det -1: a reflection too
        turned = NodeState(state.scalars, torch.einsum("ab,nbf->naf", rot, state.vectors))
        for start in (state, NodeState(state.scalars)):  # given vectors, and none (a first layer)
            out = run(convs, graph, start, edges_of(vec))
            moved = run(convs, graph, turned if start.vectors is not None else start, edges_of(vec @ rot.T))
            torch.testing.assert_close(moved.scalars, out.scalars, rtol=0, atol=1e-10)
            torch.testing.assert_close(moved.vectors, torch.einsum("ab,nbf->naf", rot, out.vectors), rtol=0, atol=1e-10)
            assert (out.vectors - torch.einsum("ab,nbf->naf", rot, out.vectors)).abs().max() > 1e-3  # they do turn


def two_node_graph(path: str) -> MessageGraph:
    return MessageGraph.from_edges(torch.tensor([0, 1]), torch.tensor([1, 0]), 2).using(path)


@pytest.mark.parametrize("path", PATHS)
def test_messages_fade_out_smoothly_at_the_cutoff(path):
    """An edge just inside the cutoff changes nothing, to first order, against no edge at all."""
    graph = two_node_graph(path)
    alone = MessageGraph.from_edges(torch.tensor([0]), torch.tensor([1]), 2).using(path)  # edge 1 -> 0 gone
    direction = torch.tensor([0.6, 0.0, 0.8], dtype=torch.float64)
    convs = layers(2)
    state = random_state(2)

    def outputs(length: float, g: MessageGraph = graph) -> tuple[torch.Tensor, torch.Tensor]:
        vec = torch.stack([2.0 * direction, length * -direction])[: g.num_edges].clone().requires_grad_()
        out = run(convs, g, state, edges_of(vec))
        return torch.cat([out.scalars.flatten(), out.vectors.flatten()]), vec

    without, _ = outputs(0.0, alone)
    inside, vec = outputs(CUTOFF - 1e-6)
    torch.testing.assert_close(inside, without, rtol=0, atol=1e-10)
    (slope,) = torch.autograd.grad(inside.sum(), vec)
    assert slope[1].abs().max() < 1e-4 and slope[0].abs().max() > 1e-2  # zero slope at the cutoff only
    torch.testing.assert_close(outputs(CUTOFF + 1e-6)[0], without, rtol=0, atol=1e-14)
    assert (outputs(0.5 * CUTOFF)[0] - without).abs().max() > 1e-3  # a closer neighbour does count


@pytest.mark.parametrize("path", PATHS)
def test_outputs_are_twice_differentiable_in_the_edge_vectors(path):
    graph = random_graph(n=4, p=0.6, seed=9).using(path)
    vec = random_geometry(graph, seed=10).vec.clone().requires_grad_()
    convs = layers(2, dim=3, radial_basis=4)
    state = random_state(graph.num_nodes, dim=3, vectors=False)
    weights = torch.randn(graph.num_nodes, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def energy_and_moment(vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = run(convs, graph, state, edges_of(vec))
        return out.scalars.sum(), (out.vectors * weights).sum()

    assert gradcheck(energy_and_moment, (vec,))
    assert gradgradcheck(energy_and_moment, (vec,))


def test_traits_and_options():
    traits = PaiNNConv.traits
    assert traits.problems() == []
    assert traits.equivariant and traits.needs_geometry and traits.smooth_at_cutoff
    assert not traits.reads_edge_features and set(traits.kernels) == set(PATHS)
    assert traits.takes == traits.returns == {"scalars", "vectors"}
    assert PaiNNOptions().radial_basis == 20
    with pytest.raises(ValidationError, match="radial_basis"):
        PaiNNOptions(radial_basis=0)
    with pytest.raises(ValidationError, match="filters"):
        PaiNNOptions(filters=8)
    with pytest.raises(ConfigError, match=r"painn keeps the feature width: in \(4\) and out \(8\)"):
        make_painn(4, 8, PaiNNOptions(), ConvContext(0, None, CUTOFF))


def test_painn_is_registered_with_its_module(registry):
    spec = registry.conv("painn")
    assert getattr(spec, "module", None) is PaiNNConv
    assert spec.options is PaiNNOptions
    assert isinstance(spec.factory(8, 8, PaiNNOptions(), ConvContext(0, None, CUTOFF)), PaiNNConv)


def test_the_sinc_basis_has_its_limit_at_zero_distance():
    from hydradgl_plugins.convs.painn import sinc_basis

    r = torch.tensor([0.0, 1e-4, 1.3], dtype=torch.float64, requires_grad=True)
    basis = sinc_basis(r, CUTOFF, 3)
    k = torch.arange(1, 4, dtype=torch.float64) * math.pi / CUTOFF
    torch.testing.assert_close(basis[0], k)
    torch.testing.assert_close(basis[1], k, rtol=1e-6, atol=0)
    torch.testing.assert_close(basis[2], torch.sin(k * 1.3) / 1.3)
    (grad,) = torch.autograd.grad(basis.sum(), r)
    assert torch.isfinite(grad).all()
    np.testing.assert_allclose(grad[2].item(), float((k * torch.cos(k * 1.3) / 1.3 - torch.sin(k * 1.3) / 1.69).sum()))


# -- a float64 PaiNN potential on a periodic triclinic cell ---------------------------------------------

PAINN = {"model.conv": "painn", "model.conv_options": {"radial_basis": 8}}


@pytest.fixture(scope="module")
def potential(registry):
    cfg = emt_config(**PAINN)
    prepared = prepare_data(cfg, registry)
    torch.manual_seed(0)
    model = build_model(cfg, prepared.info, registry).double()
    model.fit_energy_statistics(prepared.train, prepared.info.species)
    return cfg, prepared.info, model.eval()


def float64_batch(cfg, species, structures: list[Structure]):
    """The structures' batch with float64 edge vectors from the positions (the stored ones are float32)."""
    batch = collate(assign_species(pack(structures, {}, {}, cfg.graph), species), np.arange(len(structures)))
    vec = torch.from_numpy(np.concatenate([neighbour_edges(s, cfg.graph)[2] for s in structures]))
    return replace(batch, node_inputs=batch.node_inputs.double(), edge_vec=vec, edge_dist=vec.norm(dim=1),
                   cell=None if batch.cell is None else batch.cell.double())


def physical(model, name: str, values: torch.Tensor) -> np.ndarray:
    scale = model.energy_scales[name]
    return (values * scale.span + scale.lo).detach().numpy()


def energy_and_forces(potential, structure: Structure, path: str = "dgl") -> tuple[float, np.ndarray]:
    cfg, info, model = potential
    model.kernels = path
    out = model(float64_batch(cfg, info.species, [structure]))
    return float(physical(model, "energy", out["energy"])[0, 0]), physical(model, "forces", out["forces"])


def cell() -> Structure:
    return structure_from_atoms(emt_cell(), "triclinic")


@pytest.mark.parametrize("path", PATHS)
def test_potential_forces_rotate_and_reflect_with_the_cell(potential, path):
    s = cell()
    assert not np.allclose(s.cell, np.diag(np.diag(s.cell)))  # a triclinic cell
    energy, forces = energy_and_forces(potential, s, path)
    assert np.abs(forces).max() > 1e-3
    for sign in (1.0, -1.0):
        rot = sign * random_rotation(3)
        moved_energy, moved_forces = energy_and_forces(potential, transformed(s, rot, np.zeros(3),
                                                                              np.arange(s.n_atoms)), path)
        np.testing.assert_allclose(moved_energy, energy, rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(moved_forces, forces @ rot.T, rtol=0, atol=1e-10)


def test_potential_energy_is_invariant_under_translation_and_permutation(potential):
    s = cell()
    energy, forces = energy_and_forces(potential, s)
    rng = np.random.default_rng(0)
    perm = rng.permutation(s.n_atoms)
    moved_energy, moved_forces = energy_and_forces(potential, transformed(s, np.eye(3), rng.normal(size=3) * 3,
                                                                          perm))
    np.testing.assert_allclose(moved_energy, energy, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(moved_forces, forces[perm], rtol=0, atol=1e-10)
    squeezed = Structure(numbers=s.numbers, positions=s.positions * 0.98, cell=s.cell * 0.98, pbc=s.pbc)
    assert abs(energy_and_forces(potential, squeezed)[0] - energy) > 1e-4  # and the geometry matters


def test_potential_forces_are_finite_differences_of_the_energy(potential):
    s = cell()
    _, forces = energy_and_forces(potential, s)
    h = 1e-5
    for atom, axis in [(0, 0), (3, 1), (10, 2), (17, 0), (31, 2)]:
        energies = []
        for step in (h, -h):
            positions = s.positions.copy()
            positions[atom, axis] += step
            energies.append(energy_and_forces(potential, replace(s, positions=positions))[0])
        np.testing.assert_allclose(-(energies[0] - energies[1]) / (2 * h), forces[atom, axis],
                                   rtol=0, atol=1e-7 * max(1.0, np.abs(forces).max()))


def test_a_vector_head_on_painn_rotates_with_the_structure(registry):
    cfg = emt_config(**PAINN, heads=[{"name": "F", "kind": "vector-head", "target": "forces"}])
    prepared = prepare_data(cfg, registry)
    torch.manual_seed(0)
    model = build_model(cfg, prepared.info, registry).double().eval()
    s = cell()
    rot = -random_rotation(4)
    with torch.no_grad():
        out = model(float64_batch(cfg, prepared.info.species, [s]))["F"]
        turned = model(float64_batch(cfg, prepared.info.species,
                                     [transformed(s, rot, np.zeros(3), np.arange(s.n_atoms))]))["F"]
    assert out.shape == (s.n_atoms, 3) and out.abs().max() > 1e-6
    torch.testing.assert_close(turned, out @ torch.as_tensor(rot).T, rtol=0, atol=1e-10)
