"""Second derivatives through the kernel layer (hydradgl.ops), which training on forces needs (a loss on
``-dE/dr`` taken with ``create_graph=True``): gradcheck and gradgradcheck of every MessageGraph primitive
and of PNA's fused ops on each kernel path, and the force-loss gradients of whole models with every
distance-aware conv, and SchNet's stress-loss gradients, equal on the dgl and torch paths (float64).
Inputs have no ties, so max and min are locally smooth."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from hydradgl.data.loader import collate
from hydradgl.dglcompat import dgl
from hydradgl.model.assembler import build_model
from hydradgl.model.derivatives import derivatives
from hydradgl.ops import MessageGraph
from hydradgl.ops.pna_fused import u_add_e_linear, u_add_e_moments
from tests.conftest import small_config
from tests.test_kernels import GRAPHS, F, batch_graph, features, leaf

# "dgl-gspmm": the dgl path as it runs off CPU, its edge-to-node sums (and their backward) on DGL's gspmm.
PATHS = ["dgl", "dgl-gspmm", "torch"]
OPS = ["sum", "mean", "max", "min"]
K = 2  # basis width of the fused PNA ops


@pytest.fixture
def graph_on(monkeypatch):
    """``graph_on(path, graph_name)``: a test graph of tests.test_kernels on one of PATHS."""
    def make(path: str, graph_name: str) -> MessageGraph:
        if path == "dgl-gspmm":
            monkeypatch.setattr(MessageGraph, "_csr_sums", property(lambda self: False))
        return batch_graph(*GRAPHS[graph_name]).using("torch" if path == "torch" else "dgl")
    return make


def inputs(graph: MessageGraph) -> dict[str, torch.Tensor]:
    """Random float64 leaves without ties, by the argument names CASES use."""
    n, m, b = graph.num_nodes, graph.num_edges, graph.num_graphs
    gen = torch.Generator().manual_seed(11)
    return {"x": leaf(features(n, 2, ties=False)), "y": leaf(features(n, 3, ties=False)),
            "x3": leaf(torch.randn(n, F, 2, dtype=torch.float64, generator=gen)),
            "e": leaf(features(m, 4, ties=False)), "b": leaf(features(b, 5, ties=False)),
            "ew": leaf(torch.rand(m, 1, dtype=torch.float64, generator=gen) + 0.5),
            "basis": leaf(torch.randn(m, K, dtype=torch.float64, generator=gen)),
            "weight": leaf(torch.randn(F, K, dtype=torch.float64, generator=gen))}


# name -> (argument names, function of the graph and those arguments)
CASES = {
    "gather_src": (("x",), lambda g, x: g.gather_src(x)),
    "gather_dst": (("x",), lambda g, x: g.gather_dst(x)),
    "u_add_v": (("x", "y"), lambda g, x, y: g.u_add_v(x, y)),
    "broadcast": (("b",), lambda g, b: g.broadcast(b)),
    **{f"readout {op}": (("x",), lambda g, x, op=op: g.readout(x, op)) for op in ("sum", "mean", "max")},
    **{f"reduce {op}": (("e",), lambda g, e, op=op: g.reduce(e, op)) for op in OPS},
    **{f"copy_u {op}": (("x",), lambda g, x, op=op: g.copy_u(x, op)) for op in OPS},
    **{f"copy_u(N,F,2) {op}": (("x3",), lambda g, x, op=op: g.copy_u(x, op)) for op in OPS},
    **{f"u_add_e {op}": (("x", "e"), lambda g, x, e, op=op: g.u_add_e(x, e, op)) for op in OPS},
    **{f"u_mul_e {op}": (("x", "e"), lambda g, x, e, op=op: g.u_mul_e(x, e, op)) for op in OPS},
    **{f"u_mul_e(E,1) {op}": (("x", "ew"), lambda g, x, e, op=op: g.u_mul_e(x, e, op)) for op in OPS},
    "u_add_e_moments": (("x", "basis", "weight"), u_add_e_moments),
    "u_add_e_moments weighted": (("x", "basis", "weight", "ew"), u_add_e_moments),
    **{f"u_add_e_linear {op}": (("x", "basis", "weight"), lambda g, x, b, w, op=op: u_add_e_linear(g, x, b, w, op))
       for op in ("max", "min")},
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("graph_name", ["mixed", "no-edges"])
@pytest.mark.parametrize("path", PATHS)
def test_primitive_is_twice_differentiable(graph_on, path, graph_name, name):
    graph = graph_on(path, graph_name)
    names, fn = CASES[name]
    available = inputs(graph)
    args = [available[n] for n in names]
    assert gradcheck(lambda *a: fn(graph, *a), args)
    assert gradgradcheck(lambda *a: fn(graph, *a), args)


@pytest.mark.parametrize("path", PATHS)
def test_moments_first_derivative_is_the_same_with_create_graph(graph_on, path):
    """The dgl path keeps u for the first derivative; under create_graph it forms u again, bit for bit."""
    graph = graph_on(path, "mixed")
    available = inputs(graph)
    args = [available[n] for n in ("x", "basis", "weight")]
    upstream = torch.randn(graph.num_nodes, 2 * F, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    plain = torch.autograd.grad(u_add_e_moments(graph, *args), args, upstream)
    kept = torch.autograd.grad(u_add_e_moments(graph, *args), args, upstream, create_graph=True)
    for a, b in zip(plain, kept):
        assert torch.equal(a, b.detach())


@pytest.mark.parametrize("op", ["sum", "mean"])
def test_dgl_segment_sums_are_twice_differentiable(op):
    """The dgl path's sum and mean readouts off CPU are DGL's own segment_reduce."""
    graph = batch_graph(*GRAPHS["mixed"])
    h = leaf(features(graph.num_nodes, 2, ties=False))
    assert gradgradcheck(lambda h: dgl.ops.segment_reduce(graph.batch_num_nodes, h, op), [h])


# -- force training: dgl path == torch path -----------------------------------------------------
DISTANCE_AWARE = [("cgcnn", {}), ("cgcnn", {"envelope": True}), ("schnet", {}), ("egnn", {}),
                  ("egnn", {"vector_features": True, "use_edge_features": True}),
                  ("pna", {"use_edge_features": True}),
                  ("pna", {"use_edge_features": True, "edge_features_in_extrema": True}),
                  ("pna", {"envelope": True, "aggregators": ["mean", "std", "sum"]}),
                  ("pna", {"use_edge_features": True, "pre_layers": 2})]


def derivative_loss_gradients(model, batch, path: str, of: str = "forces") -> list[torch.Tensor | None]:
    """Each parameter's gradient of sum(D**2), D = F = -dE/dr (E: the graph head's sum, r: positions) or,
    with ``of="stress"``, D the stress of E along the edge vectors (hydradgl.model.derivatives, unit cells)."""
    model.kernels = path
    model.zero_grad(set_to_none=True)
    graph = batch.graph
    positions = torch.zeros(graph.num_nodes, 3, dtype=torch.float64, requires_grad=True)
    vec = batch.edge_vec + positions.index_select(0, graph.dst) - positions.index_select(0, graph.src)
    energy = model(dataclasses.replace(batch, edge_vec=vec, edge_dist=vec.norm(dim=1)))["H"].sum()
    if of == "stress":
        volume = torch.ones(graph.num_graphs, dtype=torch.float64)
        value = derivatives(energy, vec, graph.using(path), volume, forces=False, stress=True, create_graph=True).stress
    else:
        (value,) = torch.autograd.grad(-energy, positions, create_graph=True)
    (value ** 2).sum().backward()
    return [None if p.grad is None else p.grad.clone() for p in model.parameters()]


def assert_paths_agree(prepared, conv: str, options: dict, of: str = "forces") -> None:
    """The loss on the derivatives ``of`` gives the same parameter gradients on the dgl and torch paths."""
    torch.manual_seed(0)
    cfg = small_config(**{"model.conv": conv, "heads": ["H"], "model.conv_options": options})
    model = build_model(cfg, prepared.info).double()
    batch = collate(prepared.train, np.arange(3))
    # the ideal lattice ties distances exactly; a little jitter keeps the paths' max aggregations apart
    jitter = 1e-3 * torch.rand(batch.edge_vec.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    batch = dataclasses.replace(batch, node_inputs=batch.node_inputs.double(),
                                edge_vec=batch.edge_vec.double() + jitter)
    on_dgl, on_torch = (derivative_loss_gradients(model, batch, path, of) for path in ("dgl", "torch"))
    assert any(g is not None and g.abs().max() > 0 for g in on_dgl)
    for (name, _), a, b in zip(model.named_parameters(), on_dgl, on_torch):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(b, a, atol=1e-8, rtol=1e-8, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("conv, options", DISTANCE_AWARE,
                         ids=[f"{conv}{sorted(options) or ''}" for conv, options in DISTANCE_AWARE])
def test_force_loss_gradients_agree_on_both_paths(small_prepared, conv, options):
    assert_paths_agree(small_prepared, conv, options)


def test_stress_loss_gradients_agree_on_both_paths(small_prepared):
    assert_paths_agree(small_prepared, "schnet", {}, of="stress")
