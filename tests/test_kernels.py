"""The two kernel paths (hydradgl.ops): every primitive against a per-node loop, and the dgl and
torch paths against each other for every primitive, every registered conv and head, and the paper model
(float64, outputs and gradients of parameters and inputs to 1e-10), on batches with isolated atoms,
one-atom graphs, graphs without atoms, batches without atoms or without edges, and tied neighbour
features. Tests marked ``cuda`` repeat the comparison on a GPU when torch sees one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from hydradgl.configio import parse_options
from hydradgl.data.loader import collate
from hydradgl.errors import PluginError, TrainingError
from hydradgl.model.assembler import build_model
from hydradgl.ops import MessageGraph
from hydradgl.nn import ConvTraits, Edges, NodeState
from hydradgl.model.loss import MultiTaskLoss
from hydradgl.plugins import ConvContext, ConvSpec, HeadContext, Registry
from plugins.convs.sage import SAGEConv
from hydradgl.train import runtime as rt
from tests.conftest import small_config

TOL = dict(atol=1e-10, rtol=1e-10)
F = 3
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def batch_graph(sizes: list[int], edges: list[tuple[int, int]]) -> MessageGraph:
    """Graphs of ``sizes`` atoms batched; ``edges`` (src, dst) in batch numbering, each within one graph."""
    src = torch.tensor([s for s, _ in edges], dtype=torch.long)
    dst = torch.tensor([d for _, d in edges], dtype=torch.long)
    starts = np.cumsum([0, *sizes])
    per_graph = [sum(starts[g] <= d < starts[g + 1] for _, d in edges) for g in range(len(sizes))]
    return MessageGraph.from_edges(src, dst, int(starts[-1]), torch.tensor(sizes), torch.tensor(per_graph))


# Graph 0: 5 atoms, atom 4 isolated, atom 0 receives from 1, 2, 3 (ties planted below). Graph 1: 1 atom.
# Graph 2: no atoms. Graph 3: 3 atoms, a chain 5 -> 6 -> 7 plus 7 -> 6 (edge ids not sorted by dst).
MIXED = ([5, 1, 0, 3], [(1, 0), (2, 0), (3, 0), (0, 1), (2, 3), (6, 7), (5, 6), (7, 6), (3, 2)])
NO_EDGES = ([2, 1, 3], [])
GRAPHS = {"mixed": MIXED, "no-edges": NO_EDGES, "one-atom": ([1], []), "no-atoms": ([0, 0], [])}


def features(n: int, seed: int, ties: bool = True) -> torch.Tensor:
    """(n, F) float64; rows 1, 2, 3 equal (so the max/min over node 0's neighbours ties) when ``ties``."""
    x = torch.randn(n, F, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    if ties and n > 3:
        x[2] = x[1]
        x[3] = x[1]
    return x


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


def outputs_and_grads(fn, inputs: list[torch.Tensor], params=(), seed: int = 7):
    """``fn(*inputs)`` and the gradients of <out, R> (R random) w.r.t. inputs and params (None -> zeros)."""
    inputs = [leaf(t) for t in inputs]
    out = fn(*inputs)
    outs = out if isinstance(out, (list, tuple)) else [out]
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, dtype=o.dtype, generator=gen).to(o.device)).sum() for o in outs)
    wrt = [*inputs, *params]
    grads = torch.autograd.grad(loss, wrt, allow_unused=True) if loss.requires_grad else [None] * len(wrt)
    return [o.detach() for o in outs], [torch.zeros_like(w) if g is None else g for w, g in zip(wrt, grads)]


def assert_paths_agree(run, inputs, params=()):
    """``run(path, *inputs)`` gives the same outputs and gradients on the dgl and the torch path."""
    out_d, grad_d = outputs_and_grads(lambda *x: run("dgl", *x), inputs, params)
    out_t, grad_t = outputs_and_grads(lambda *x: run("torch", *x), inputs, params)
    for a, b in zip(out_d + grad_d, out_t + grad_t):
        torch.testing.assert_close(b, a, **TOL)
        assert torch.isfinite(a).all()


# -- primitives against a per-node loop ---------------------------------------------------------
def loop_reduce(values: torch.Tensor, owner: torch.Tensor, n: int, op: str) -> torch.Tensor:
    rows = []
    for i in range(n):
        group = values[owner == i]
        if len(group) == 0:
            rows.append(values.new_zeros(values.shape[1:]))
        else:
            rows.append({"sum": group.sum(0), "mean": group.mean(0), "max": group.max(0).values,
                         "min": group.min(0).values}[op])
    return torch.stack(rows) if rows else values.new_zeros((0, *values.shape[1:]))


@pytest.mark.parametrize("path", ["dgl", "torch"])
@pytest.mark.parametrize("op", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
def test_reductions_match_loop(path, op, graph_name):
    graph = batch_graph(*GRAPHS[graph_name]).using(path)
    x = features(graph.num_nodes, 0)
    e = torch.randn(graph.num_edges, F, dtype=torch.float64)
    x_src = x[graph.src]
    torch.testing.assert_close(graph.reduce(e, op), loop_reduce(e, graph.dst, graph.num_nodes, op), **TOL)
    torch.testing.assert_close(graph.copy_u(x, op), loop_reduce(x_src, graph.dst, graph.num_nodes, op), **TOL)
    torch.testing.assert_close(graph.u_add_e(x, e, op), loop_reduce(x_src + e, graph.dst, graph.num_nodes, op), **TOL)
    torch.testing.assert_close(graph.u_mul_e(x, e, op), loop_reduce(x_src * e, graph.dst, graph.num_nodes, op), **TOL)
    torch.testing.assert_close(graph.u_add_v(x, 2 * x), x_src + 2 * x[graph.dst], **TOL)
    if op != "min":
        torch.testing.assert_close(graph.readout(x, op), loop_reduce(x, graph.node_graph(), graph.num_graphs, op), **TOL)
    torch.testing.assert_close(graph.in_degrees(), torch.bincount(graph.dst, minlength=graph.num_nodes))
    torch.testing.assert_close(graph.broadcast(torch.arange(graph.num_graphs)), graph.node_graph())


@pytest.mark.parametrize("path", ["dgl", "torch"])
@pytest.mark.parametrize("op", ["max", "min"])
@pytest.mark.parametrize("sizes, edges, winner", [
    (*MIXED, 1),  # rows 1, 2, 3 tie; they reach node 0 by edges 0, 1, 2: edge 0 comes from node 1
    ([5], [(0, 1), (3, 0), (4, 2), (1, 0), (2, 0)], 3),  # the lowest tying edge id (1) is neither first nor lowest source
])
def test_tied_extremum_gradient_goes_to_lowest_edge_id(path, op, sizes, edges, winner):
    graph = batch_graph(sizes, edges).using(path)
    x = leaf(features(graph.num_nodes, 1))
    graph.copy_u(x, op)[0].sum().backward()
    expected = torch.zeros_like(x)
    expected[winner] = 1.0
    torch.testing.assert_close(x.grad, expected, **TOL)


def test_batch_counts_must_come_together():
    with pytest.raises(ValueError, match="batch_num_nodes and batch_num_edges"):
        MessageGraph.from_edges(torch.tensor([0]), torch.tensor([1]), 2, batch_num_nodes=torch.tensor([2]))


# -- dgl path == torch path ---------------------------------------------------------------------
PRIMITIVES = {
    "reduce": lambda g, x, e, op: g.reduce(e, op),
    "copy_u": lambda g, x, e, op: g.copy_u(x, op),
    "u_add_e": lambda g, x, e, op: g.u_add_e(x, e, op),
    "u_mul_e": lambda g, x, e, op: g.u_mul_e(x, e, op),
    "u_mul_e(E,1)": lambda g, x, e, op: g.u_mul_e(x, e[:, :1], op),
}


@pytest.mark.parametrize("op", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("name", sorted(PRIMITIVES))
@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
def test_fused_primitives_agree(graph_name, name, op):
    graph = batch_graph(*GRAPHS[graph_name])
    x, e = features(graph.num_nodes, 2), features(graph.num_edges, 3)
    assert_paths_agree(lambda path, x, e: PRIMITIVES[name](graph.using(path), x, e, op), [x, e])


@pytest.mark.parametrize("op", ["sum", "mean", "max"])
@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
def test_node_and_graph_primitives_agree(graph_name, op):
    graph = batch_graph(*GRAPHS[graph_name])
    x, g = features(graph.num_nodes, 4), features(graph.num_graphs, 5)

    def run(path, x, g):
        m = graph.using(path)
        return [m.readout(x, op), m.broadcast(g), m.u_add_v(x, x * x), m.gather_src(x), m.gather_dst(x)]
    assert_paths_agree(run, [x, g])


# Option sets that reach every code path of the built-in convs; other convs run with their defaults.
CONV_OPTIONS = {
    "pna": [{}, {"use_edge_features": True, "aggregators": ["mean", "min", "max", "std", "sum"]},
            {"use_edge_features": True, "edge_features_in_extrema": True},
            {"pre_layers": 2, "post_layers": 2, "use_edge_features": True, "towers": 3, "divide_input": False},
            {"envelope": True, "aggregators": ["mean", "std", "sum"]},
            {"envelope": True, "aggregators": ["mean", "std"], "use_edge_features": False},
            {"envelope": True, "aggregators": ["sum"], "pre_layers": 2}],
    "sage": [{"aggregator": a} for a in ("mean", "pool", "gcn")],
    "cgcnn": [{}, {"envelope": True}],
    "egnn": [{}, {"vector_features": True, "use_edge_features": True}],
    "gin": [{"aggregator": a} for a in ("sum", "mean", "max")],
}
WIDTH, EDGE_DIM = 6, 4


def kernel_specs(registry, kind):
    """Every registered spec of ``kind`` that declares both kernel paths (a one-path plugin has nothing to compare)."""
    return [s for n in registry.names(kind) if set(rt.KERNEL_PATHS) <= set((s := registry.get(kind, n)).kernels)]


def conv_cases(registry):
    return [(spec, options) for spec in kernel_specs(registry, "conv") for options in CONV_OPTIONS.get(spec.name, [{}])]


@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
def test_every_conv_agrees_on_both_paths(registry, graph_name):
    graph = batch_graph(*GRAPHS[graph_name])
    cases = conv_cases(registry)
    assert {"pna", "sage", "cgcnn"} <= {spec.name for spec, _ in cases}
    for spec, raw in cases:
        torch.manual_seed(0)
        options = parse_options(spec.options, raw, "model.conv_options", plugin=spec.name)
        context = ConvContext(edge_dim=EDGE_DIM, degree_histogram=[1, 3, 5, 2], cutoff=7.0)
        conv = spec.factory(WIDTH, WIDTH, options, context).double()
        # ties in h and in the edge features: identical neighbours, as in a crystal
        h = features(graph.num_nodes, 6).repeat(1, 2)
        e = features(graph.num_edges, 7).repeat(1, 2)[:, :EDGE_DIM]
        params = [p for p in conv.parameters() if p.requires_grad]
        # geometry convs (schnet, egnn) also get distances and vectors: random ones, with ties (rows 1-3)
        vec = features(graph.num_edges, 9)[:, :3] * 2.0
        try:
            assert_paths_agree(lambda path, h, e: conv(graph.using(path), NodeState(h),
                                                       Edges(e, vec.norm(dim=1), vec, 7.0)).scalars, [h, e], params)
        except AssertionError as exc:
            raise AssertionError(f"conv {spec.name!r} with options {raw}: {exc}") from None


@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
def test_every_head_agrees_on_both_paths(registry, graph_name):
    graph = batch_graph(*GRAPHS[graph_name])
    specs = kernel_specs(registry, "head")
    assert {"graph-head", "node-head"} <= {s.name for s in specs}
    for spec in specs:
        option_sets = ([{"readout": r} for r in ("sum", "mean", "max")] + [{"readout": "mean", "per_atom": True}]
                       if spec.name == "graph-head" else [{}])
        for raw in option_sets:
            torch.manual_seed(0)
            options = parse_options(spec.options, raw, "heads[0].options", plugin=spec.name)
            context = HeadContext(activation="relu", species=(26, 78))
            head = spec.factory(WIDTH, 1 if spec.energy else 3 if spec.reads_vectors else 2, [5, 4], options,
                                context).double()
            h = features(graph.num_nodes, 8).repeat(1, 2)
            species = torch.arange(graph.num_nodes) % 2
            vectors = features(3 * graph.num_nodes, 5).repeat(1, 2)[:, :WIDTH].reshape(graph.num_nodes, 3, WIDTH)
            extra = (species,) if spec.energy else (vectors,) if spec.reads_vectors else ()
            assert_paths_agree(lambda path, h: head(graph.using(path), h, *extra), [h], list(head.parameters()))


def test_builtin_plugins_run_on_both_paths(registry):
    """Every conv and head shipped with hydradgl is written against the kernel layer only."""
    for kind in ("conv", "head"):
        for name in registry.names(kind):
            if registry.owners[(kind, name)] == "hydradgl":
                assert registry.get(kind, name).kernels == ("dgl", "torch"), (kind, name)


def model_case(small_prepared, conv: str, without_edges: bool):
    cfg = small_config(**{"model.conv": conv, "model.layers": 3})
    batch = collate(small_prepared.train, np.arange(6))
    if without_edges:  # the same atoms, every edge dropped
        g = batch.graph
        empty = torch.zeros(0, dtype=torch.long)
        graph = MessageGraph.from_edges(empty, empty, g.num_nodes, g.batch_num_nodes, torch.zeros_like(g.batch_num_edges))
        batch = dataclasses.replace(batch, graph=graph, edge_dist=batch.edge_dist[:0], edge_vec=batch.edge_vec[:0])
    # The FePt lattice is ideal: most edges of a node tie exactly with another edge (same element, same
    # distance) in its max aggregations, where the gradient is a subgradient that either tied edge may
    # receive. The paths sum in different orders on some CPUs (torch 2.11 on AVX-512 machines), which
    # flips such ties in the last bit; distances a little apart make every gradient well defined.
    jitter = 1e-3 * torch.rand(batch.edge_dist.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    batch = dataclasses.replace(batch, node_inputs=batch.node_inputs.double(), edge_dist=batch.edge_dist.double() + jitter,
                                graph_targets={k: v.double() for k, v in batch.graph_targets.items()},
                                node_targets={k: v.double() for k, v in batch.node_targets.items()})
    torch.manual_seed(0)
    return cfg, batch, build_model(cfg, small_prepared.info).double()


@pytest.mark.parametrize("without_edges", [False, True])
@pytest.mark.parametrize("conv", ["pna", "cgcnn"])
def test_paper_model_agrees_on_both_paths(small_prepared, conv, without_edges):
    cfg, batch, model = model_case(small_prepared, conv, without_edges)
    loss = MultiTaskLoss(model.head_descriptions)

    def run(path, node_inputs, edge_dist):
        model.kernels = path
        b = dataclasses.replace(batch, node_inputs=node_inputs, edge_dist=edge_dist)
        preds = model(b)
        return [*preds.values(), loss(preds, b)[0]]
    assert_paths_agree(run, [batch.node_inputs, batch.edge_dist], list(model.parameters()))


# -- choosing the path --------------------------------------------------------------------------
GPU = torch.device("cuda:0")


@pytest.fixture
def cpu_only_dgl(monkeypatch):
    """A CUDA torch with the PyPI (CPU-only) DGL, as most GPU users have it."""
    monkeypatch.setattr(rt, "dgl_has_cuda", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_auto_picks_dgl_on_cpu_and_torch_where_dgl_cannot_run(cpu_only_dgl):
    assert rt.resolve_kernels("auto", torch.device("cpu")) == "dgl"
    assert rt.resolve_kernels("torch", torch.device("cpu")) == "torch"
    assert rt.resolve_kernels("auto", GPU) == "torch"
    assert rt.resolve_device("cuda") == GPU  # trains on the torch path instead of stopping
    assert rt.resolve_device("auto", local_rank=1) == torch.device("cuda:1")
    assert rt.resolve_device("auto", kernels="dgl") == torch.device("cpu")
    with pytest.raises(TrainingError, match="training.kernels is 'dgl' but DGL cannot run on cuda:0.*docs/install.md"):
        rt.resolve_kernels("dgl", GPU)


@pytest.mark.parametrize("requested,local_rank,said", [
    ("auto", 2, r"device 'auto' in the process with LOCAL_RANK 2 means cuda:2, but torch sees 2 CUDA device\(s\) "
                r"here: start at most 2 process\(es\) per node \(torchrun --nproc-per-node 2\), or use --device cpu"),
    ("cuda", 3, r"device 'cuda' in the process with LOCAL_RANK 3 means cuda:3, but torch sees 2"),
    ("cuda:2", 0, r"device 'cuda:2' names cuda:2, but torch sees 2 CUDA device\(s\) here: name one of "
                  r"cuda:0 .. cuda:1, or use --device cpu"),
])
def test_more_processes_than_gpus_is_explained(cpu_only_dgl, requested, local_rank, said):
    with pytest.raises(TrainingError, match=said):
        rt.resolve_device(requested, local_rank)


def test_auto_serves_a_plugin_that_supports_one_path(cpu_only_dgl):
    assert rt.resolve_kernels("auto", torch.device("cpu"), {"conv plugin 'x'": ("torch",)}) == "torch"
    assert rt.resolve_kernels("auto", GPU, {"conv plugin 'x'": ("dgl", "torch")}) == "torch"


@pytest.mark.parametrize("requested,device,fix", [
    ("auto", GPU, "install a CUDA build of DGL"),
    ("torch", GPU, "install a CUDA build of DGL"),
    ("torch", torch.device("cpu"), "set training.kernels to auto"),
])
def test_dgl_only_plugin_where_dgl_cannot_serve_is_explained(cpu_only_dgl, requested, device, fix):
    with pytest.raises(PluginError, match=rf"conv plugin 'legacy' does not support the torch kernel path.*{fix}"):
        rt.resolve_kernels(requested, device, {"conv plugin 'legacy'": ("dgl",)})


def test_undeclared_third_party_conv_defaults_to_dgl_only(registry, small_prepared):
    """A conv whose traits do not declare kernels may touch graph.dgl: it is refused on the torch path."""
    mine = Registry()
    for kind in ("dataset", "head"):
        mine.specs[kind] = dict(registry.specs[kind])
    sage = registry.conv("sage")

    class Legacy(SAGEConv):
        traits = ConvTraits()  # kernels: the default, dgl only

    mine.specs["conv"]["legacy"] = ConvSpec(name="legacy", description="x", options=sage.options, module=Legacy,
                                            factory=lambda i, o, options, context: Legacy(i, o, options.aggregator))
    model = build_model(small_config(**{"model.conv": "legacy"}), small_prepared.info, mine)
    assert rt.resolve_kernels("auto", torch.device("cpu"), model.plugin_kernels) == "dgl"
    with pytest.raises(PluginError, match="conv plugin 'legacy' does not support the torch kernel path.*training.kernels"):
        rt.resolve_kernels("torch", torch.device("cpu"), model.plugin_kernels)


def test_unknown_declared_path_is_refused():
    with pytest.raises(PluginError, match=r"head plugin 'h' \(heads\[0\]\) declares kernels=\('cuda',\)"):
        rt.resolve_kernels("auto", torch.device("cpu"), {"head plugin 'h' (heads[0])": ("cuda",)})


# -- on a GPU, when there is one ----------------------------------------------------------------
@cuda
@pytest.mark.parametrize("op", ["sum", "mean", "max", "min"])
def test_cuda_torch_path_matches_cpu(op):
    graph = batch_graph(*MIXED)
    x, e = features(graph.num_nodes, 2), features(graph.num_edges, 3)
    out_cpu, grad_cpu = outputs_and_grads(lambda x, e: graph.using("dgl").u_mul_e(x, e, op), [x, e])
    on_gpu = graph.to("cuda").using("torch")
    out_gpu, grad_gpu = outputs_and_grads(lambda x, e: on_gpu.u_mul_e(x, e, op), [x.cuda(), e.cuda()])
    assert out_gpu[0].device.type == "cuda"
    for a, b in zip(out_cpu + grad_cpu, out_gpu + grad_gpu):
        torch.testing.assert_close(b.cpu(), a, **TOL)


@cuda
def test_cuda_model_matches_cpu(small_prepared):
    cfg, batch, model = model_case(small_prepared, "pna", without_edges=False)
    with torch.no_grad():
        expected = model(batch)
        model.to("cuda").kernels = rt.resolve_kernels("auto", GPU, model.plugin_kernels)
        got = model(batch.to("cuda"))
    for name, value in expected.items():
        assert got[name].device.type == "cuda"
        torch.testing.assert_close(got[name].cpu(), value, atol=1e-8, rtol=1e-8)
