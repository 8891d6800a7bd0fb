"""The geometry-aware convs (schnet, egnn, pna with edge features): float64 loop references, the smooth
cutoff, and invariance of whole models under rotations, translations and permutations of periodic cells."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from hydradgl.data.loader import collate
from hydradgl.data.packing import assign_species, pack
from hydradgl.data.records import Structure
from hydradgl.errors import ConfigError
from hydradgl.model.assembler import build_model
from hydradgl.ops import MessageGraph
from hydradgl.nn import Edges
from hydradgl.nn.layers import GaussianExpansion, cosine_cutoff
from hydradgl.plugins import ConvContext
from hydradgl_plugins.convs.egnn import EGNNOptions, make_egnn
from hydradgl_plugins.convs.schnet import SchNetOptions, make_schnet
from tests.conftest import small_config
from tests.test_model_convs import incoming, random_graph

CUTOFF = 5.0


def random_geometry(graph: MessageGraph, seed: int = 0, attr: torch.Tensor | None = None) -> Edges:
    """Random float64 edge vectors (some beyond the cutoff) with edge features ``attr``."""
    g = torch.Generator().manual_seed(seed)
    vec = (torch.rand(graph.num_edges, 3, generator=g, dtype=torch.float64) - 0.5) * 6.0
    return Edges(attr, vec.norm(dim=1), vec, CUTOFF)


def test_cosine_cutoff_values_and_smoothness():
    r = torch.tensor([0.0, 2.5, 5.0, 6.0], dtype=torch.float64, requires_grad=True)
    fc = cosine_cutoff(r, 5.0)
    torch.testing.assert_close(fc, torch.tensor([1.0, 0.5, 0.0, 0.0], dtype=torch.float64))
    (grad,) = torch.autograd.grad(fc.sum(), r)
    torch.testing.assert_close(grad[2:], torch.zeros(2, dtype=torch.float64))  # zero slope at the cutoff
    rbf = GaussianExpansion(5.0, 8, envelope=True).double()(r.detach())
    assert rbf[2:].abs().max() == 0 and rbf[0].abs().max() > 0.5


def ssp(x):
    return F.softplus(x) - math.log(2.0)


def test_schnet_matches_reference():
    graph = random_graph(seed=4)
    conv = make_schnet(5, 5, SchNetOptions(filters=7), ConvContext(3, None, CUTOFF)).double()
    geometry = random_geometry(graph)
    h = torch.randn(graph.num_nodes, 5, dtype=torch.float64)
    e = torch.randn(graph.num_edges, 3, dtype=torch.float64)
    l1, l2 = conv.filter_net[0], conv.filter_net[2]
    o1, o2 = conv.atom_out[0], conv.atom_out[2]
    rows = []
    for i in range(graph.num_nodes):
        m = torch.zeros(7, dtype=torch.float64)
        for j, eid in zip(*incoming(graph, i)):
            r = float(geometry.dist[eid])
            fc = 0.5 * (math.cos(math.pi * r / CUTOFF) + 1) if r < CUTOFF else 0.0
            w = (l2.weight @ ssp(l1.weight @ e[eid] + l1.bias) + l2.bias) * fc
            m += (conv.atom_in.weight @ h[j]) * w
        rows.append(h[i] + o2.weight @ ssp(o1.weight @ m + o1.bias) + o2.bias)
    torch.testing.assert_close(conv.update(graph, h, Edges(e, geometry.dist, geometry.vec, CUTOFF)), torch.stack(rows), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("edge_features,envelope,vectors", [(False, True, False), (True, False, False), (False, True, True)])
def test_egnn_matches_reference(edge_features, envelope, vectors):
    graph = random_graph(seed=5)
    options = EGNNOptions(use_edge_features=edge_features, envelope=envelope, vector_features=vectors)
    conv = make_egnn(4, 4, options, ConvContext(3, None, CUTOFF)).double()
    geometry = random_geometry(graph, seed=1)
    h = torch.randn(graph.num_nodes, 4, dtype=torch.float64)
    e = torch.randn(graph.num_edges, 3, dtype=torch.float64)
    # phi_e's first layer as one matrix on [h_i, h_j, d^2 (, a_ij)]
    blocks = [conv.edge_dst.weight, conv.edge_src.weight, conv.edge_dist.unsqueeze(1)]
    if edge_features:
        blocks.append(conv.edge_attr.weight)
    W1 = torch.cat(blocks, dim=1)
    rows = []
    for i in range(graph.num_nodes):
        total = torch.zeros(4, dtype=torch.float64)
        v = torch.zeros(3, 4, dtype=torch.float64)  # sum_j (x_i - x_j) / r_c (W_x m_ij)^T
        for j, eid in zip(*incoming(graph, i)):
            d2 = float(geometry.vec[eid].dot(geometry.vec[eid])) / CUTOFF**2
            z = torch.cat([h[i], h[j], torch.tensor([d2], dtype=torch.float64)] + ([e[eid]] if edge_features else []))
            m = F.silu(conv.edge_out(F.silu(W1 @ z + conv.edge_dst.bias)))
            if envelope:
                r = math.sqrt(d2) * CUTOFF
                m = m * (0.5 * (math.cos(math.pi * r / CUTOFF) + 1) if r < CUTOFF else 0.0)
            total += m
            if vectors:
                v += torch.outer(geometry.vec[eid] / CUTOFF, conv.vector.weight @ m)
        lengths = [torch.sqrt((v * v).sum(0) + 1e-8)] if vectors else []
        rows.append(h[i] + conv.node_net(torch.cat([h[i], total, *lengths])))
    torch.testing.assert_close(conv.update(graph, h, Edges(e, geometry.dist, geometry.vec, CUTOFF)), torch.stack(rows), atol=1e-10, rtol=1e-10)


def test_geometric_convs_refuse_missing_edge_features_naming_the_key():
    with pytest.raises(ConfigError, match="schnet needs edge features: set model.edge_features"):
        make_schnet(4, 4, SchNetOptions(), ConvContext(0, None, CUTOFF))
    with pytest.raises(ConfigError, match="egnn: model.conv_options.use_edge_features is true but model.edge_features"):
        make_egnn(4, 4, EGNNOptions(use_edge_features=True), ConvContext(0, None, CUTOFF))
    with pytest.raises(ConfigError, match="widths must match"):
        make_egnn(4, 8, EGNNOptions(), ConvContext(0, None, CUTOFF))
    make_egnn(4, 4, EGNNOptions(), ConvContext(0, None, CUTOFF))  # distances alone are enough


# -- whole models on periodic cells --------------------------------------------------------------------

def random_rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def periodic_structures(seed: int = 0, n: int = 3) -> list[Structure]:
    """Small strained, rattled Fe-Pt cells (fcc, 2x2x1 conventional cells, 16 atoms)."""
    rng = np.random.default_rng(seed)
    base = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    frac = np.concatenate([(base + [i, j, 0]) / [2, 2, 1] for i in range(2) for j in range(2)])
    out = []
    for k in range(n):
        cell = np.diag([7.6, 7.6, 3.8]) @ (np.eye(3) + rng.normal(scale=0.03, size=(3, 3)))
        pos = frac @ cell + rng.normal(scale=0.1, size=frac.shape)
        numbers = rng.choice([26, 78], size=len(frac))
        out.append(Structure(numbers=numbers, positions=pos, cell=cell, pbc=(True, True, True), source=f"cell{k}"))
    return out


def transformed(s: Structure, rotation: np.ndarray, shift: np.ndarray, perm: np.ndarray) -> Structure:
    return Structure(numbers=s.numbers[perm], positions=(s.positions @ rotation.T + shift)[perm],
                     cell=s.cell @ rotation.T, pbc=s.pbc, source=s.source)


def predict(model, structures, cfg, species):
    graphs = assign_species(pack(structures, {}, {}, cfg.graph), species)
    return model(collate(graphs, np.arange(len(structures))))


@pytest.mark.parametrize("conv, options", [("pna", {}), ("schnet", {}), ("egnn", {}), ("egnn", {"vector_features": True}),
                                           ("cgcnn", {}), ("cgcnn", {"envelope": True}),
                                           ("pna", {"envelope": True, "aggregators": ["mean", "std", "sum"]})])
def test_periodic_model_invariant_under_rotation_translation_permutation(conv, options, small_prepared):
    cfg = small_config(**{"model.conv": conv, "heads": ["H", "C"], "graph.periodic": True, "graph.radius": 5.0,
                          "model.conv_options": options})
    info = small_prepared.info.model_copy(update={"cutoff": 5.0})
    torch.manual_seed(0)
    model = build_model(cfg, info).eval()
    structures = periodic_structures()
    with torch.no_grad():
        model_out = predict(model, structures, cfg, info.species)
        n_atoms = len(structures[0].numbers)
        for seed in range(2):
            rotation = random_rotation(seed)
            rng = np.random.default_rng(seed)
            perm = rng.permutation(n_atoms)
            moved = [transformed(s, rotation, rng.normal(size=3) * 3, perm) for s in structures]
            out = predict(model, moved, cfg, info.species)
            torch.testing.assert_close(out["H"], model_out["H"], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(out["C"][:n_atoms], model_out["C"][:n_atoms][perm], atol=1e-4, rtol=1e-4)
    # and the geometry matters: squeezing the cells changes the prediction
    squeezed = [Structure(numbers=s.numbers, positions=s.positions * 0.97, cell=s.cell * 0.97, pbc=s.pbc)
                for s in structures]
    with torch.no_grad():
        assert (predict(model, squeezed, cfg, info.species)["H"] - model_out["H"]).abs().max() > 1e-6


@pytest.mark.parametrize("conv, options", [("pna", {}), ("schnet", {}), ("egnn", {}), ("egnn", {"vector_features": True}),
                                           ("cgcnn", {}), ("cgcnn", {"envelope": True}),
                                           ("pna", {"envelope": True, "aggregators": ["mean", "std", "sum"]})])
def test_gradients_reach_the_edge_vectors(conv, options, small_prepared):
    """Forces by autograd: every geometric input comes from batch.edge_vec (through edge_dist)."""
    from dataclasses import replace

    torch.manual_seed(0)
    model = build_model(small_config(**{"model.conv": conv, "heads": ["H"], "model.conv_options": options}),
                        small_prepared.info)
    batch = collate(small_prepared.train, np.arange(3))
    vec = batch.edge_vec.clone().requires_grad_()
    out = model(replace(batch, edge_vec=vec, edge_dist=vec.norm(dim=1)))["H"].sum()
    (grad,) = torch.autograd.grad(out, vec)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0
