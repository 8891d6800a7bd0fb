"""Each conv layer against a straightforward float64 reference; PNA also against dgl.nn.PNAConv."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from hydradgl.dglcompat import dgl
from hydradgl.nn import Edges
from hydradgl.ops import MessageGraph
from hydradgl.plugins import ConvContext
from hydradgl_plugins.convs import pna as pna_module
from hydradgl_plugins.convs.cgcnn import CGCNNOptions, make_cgcnn
from hydradgl_plugins.convs.pna import PNAOptions, delta_from_histogram, make_pna
from hydradgl_plugins.convs.sage import SAGEOptions, make_sage

torch.manual_seed(0)


def random_graph(n=9, p=0.45, seed=0, min_in_degree=1):
    """A directed graph where every node has at least ``min_in_degree`` incoming edges, no self loops."""
    g = torch.Generator().manual_seed(seed)
    adj = (torch.rand(n, n, generator=g) < p) & ~torch.eye(n, dtype=torch.bool)
    for i in range(n):
        if adj[:, i].sum() < min_in_degree:
            adj[(i + 1) % n, i] = True
    src, dst = adj.nonzero(as_tuple=True)
    return MessageGraph.from_edges(src, dst, n)


def run(conv, graph, h, e=None, vec=None, cutoff=7.0):
    """A scalar conv's update on node features ``h``, edge features ``e`` and edge vectors ``vec``
    (zeros when not given: for layers that read no geometry)."""
    vec = torch.zeros(graph.num_edges, 3, dtype=h.dtype) if vec is None else vec
    return conv.update(graph, h, Edges(e, vec.norm(dim=1), vec, cutoff))


def incoming(graph, i):
    eids = (graph.dst == i).nonzero(as_tuple=True)[0]
    return graph.src[eids], eids


def pna_reference(conv, graph, h, e, aggregators, scalers, delta, mean_degree=1.0):
    """Loops over nodes: messages M[h_j, h_i, e_ij], aggregate, scale by degree, U[h_i, aggregates]."""
    tower = conv.towers[0]
    parts = [tower.pre_src.weight, tower.pre_dst.weight] + ([tower.pre_edge.weight] if tower.pre_edge is not None else [])
    W, b = torch.cat(parts, dim=1), tower.pre_dst.bias
    rows = []
    for i in range(graph.num_nodes):
        nbrs, eids = incoming(graph, i)
        z = [h[nbrs], h[i].expand(len(nbrs), -1)] + ([e[eids]] if tower.pre_edge is not None else [])
        m = torch.cat(z, dim=1) @ W.T + b
        # a linear M's min/max see the edge term only with edge_features_in_extrema
        m_ext = m if tower.pre_edge is None or tower.edge_features_in_extrema else m - e[eids] @ tower.pre_edge.weight.T
        if tower.pre_rest is not None:
            m = m_ext = tower.pre_rest(torch.relu(m))
        aggs = {"mean": m.mean(0), "max": m_ext.max(0).values, "min": m_ext.min(0).values, "sum": m.sum(0),
                "std": torch.sqrt(torch.relu((m * m).mean(0) - m.mean(0) ** 2) + pna_module.STD_EPS)}
        a = torch.cat([aggs[k] for k in aggregators])
        d = len(nbrs)
        scale = {"identity": 1.0, "amplification": math.log(d + 1) / delta, "attenuation": delta / math.log(d + 1),
                 "linear": d / mean_degree}
        rows.append(torch.cat([h[i], *(a * scale[s] for s in scalers)]))
    out = tower.post(torch.stack(rows))
    return conv.mixing(out) if conv.mixing is not None else out


@pytest.mark.parametrize("edges", [False, "sums", "all"])  # edge features none / not in min, max / everywhere
@pytest.mark.parametrize("aggregators,scalers", [
    (["mean", "min", "max", "std"], ["identity", "amplification", "attenuation"]),
    (["sum", "max"], ["identity"]),
    (["min", "max"], ["amplification"]),
])
def test_pna_matches_reference(edges, aggregators, scalers):
    graph = random_graph()
    hist = [0, 3, 5, 2, 1]
    options = PNAOptions(aggregators=aggregators, scalers=scalers, use_edge_features=bool(edges),
                         edge_features_in_extrema=edges == "all")
    conv = make_pna(6, 5, options, ConvContext(edge_dim=4, degree_histogram=hist, cutoff=7.0)).double()
    h = torch.randn(graph.num_nodes, 6, dtype=torch.float64)
    e = torch.randn(graph.num_edges, 4, dtype=torch.float64)
    expected = pna_reference(conv, graph, h, e, aggregators, scalers, delta_from_histogram(hist))
    torch.testing.assert_close(run(conv, graph, h, e), expected, atol=1e-5, rtol=1e-5)


def test_pna_linear_scaler_divides_by_the_mean_training_degree():
    """HydraGNN's ``linear`` scaler (PyG's DegreeScalerAggregation): aggregates times d / mean degree."""
    graph = random_graph(seed=2)
    hist = [0, 3, 5, 2, 1]  # mean in-degree (1*3 + 2*5 + 3*2 + 4*1) / 11 = 23 / 11
    aggregators, scalers = ["mean", "max", "std"], ["identity", "linear"]
    conv = make_pna(6, 5, PNAOptions(aggregators=aggregators, scalers=scalers, use_edge_features=False),
                    ConvContext(edge_dim=0, degree_histogram=hist, cutoff=7.0)).double()
    h = torch.randn(graph.num_nodes, 6, dtype=torch.float64)
    expected = pna_reference(conv, graph, h, None, aggregators, scalers, delta_from_histogram(hist), 23 / 11)
    torch.testing.assert_close(run(conv, graph, h), expected, atol=1e-5, rtol=1e-5)
    wrong = pna_reference(conv, graph, h, None, aggregators, scalers, delta_from_histogram(hist), 2.0)
    assert not torch.allclose(run(conv, graph, h), wrong, atol=1e-5)


@pytest.mark.parametrize("edges", [False, True])
def test_pna_deeper_pre_and_post_transforms_match_reference(edges):
    graph = random_graph(seed=1)
    aggregators, scalers, hist = ["mean", "min", "max", "std", "sum"], ["identity", "attenuation"], [0, 3, 5, 2]
    options = PNAOptions(aggregators=aggregators, scalers=scalers, use_edge_features=edges,
                         pre_layers=3, post_layers=2)
    conv = make_pna(6, 5, options, ConvContext(edge_dim=4, degree_histogram=hist, cutoff=7.0)).double()
    h = torch.randn(graph.num_nodes, 6, dtype=torch.float64)
    e = torch.randn(graph.num_edges, 4, dtype=torch.float64)
    expected = pna_reference(conv, graph, h, e, aggregators, scalers, delta_from_histogram(hist))
    torch.testing.assert_close(run(conv, graph, h, e), expected, atol=1e-5, rtol=1e-5)


def test_pna_undivided_input_feeds_every_tower_all_features():
    graph = random_graph()
    conv = make_pna(6, 8, PNAOptions(towers=2, mixing=False, divide_input=False, use_edge_features=False),
                    ConvContext(0, [0, 1, 1], 7.0)).double()
    h = torch.randn(graph.num_nodes, 6, dtype=torch.float64)
    out = run(conv, graph, h)
    for i, tower in enumerate(conv.towers):
        expected = tower(graph, h, None, graph.in_degrees().double(), conv.delta)
        torch.testing.assert_close(out[:, 4 * i:4 * (i + 1)], expected)


def test_pna_towers_split_features():
    graph = random_graph()
    conv = make_pna(8, 8, PNAOptions(towers=2, mixing=False, use_edge_features=False), ConvContext(0, [0, 1, 1], 7.0)).double()
    h = torch.randn(graph.num_nodes, 8, dtype=torch.float64)
    out = run(conv, graph, h)
    first = conv.towers[0](graph, h[:, :4], None, graph.in_degrees().double(), conv.delta)
    torch.testing.assert_close(out[:, :4], first)


@pytest.mark.parametrize("edges", [False, True])
def test_pna_isolated_atom_is_finite(edges):
    graph = MessageGraph.from_edges(torch.tensor([0]), torch.tensor([1]), 3)
    conv = make_pna(4, 4, PNAOptions(use_edge_features=edges), ConvContext(2 if edges else 0, [1, 2], 7.0))
    h = torch.randn(3, 4, requires_grad=True)
    out = run(conv, graph, h, torch.randn(1, 2))
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(h.grad).all()


def test_pna_edge_features_follow_the_trunk_by_default_and_are_refused_without_them():
    from hydradgl.errors import ConfigError

    assert make_pna(4, 4, PNAOptions(), ConvContext(16, [1, 2], 7.0)).traits.reads_edge_features  # on where the trunk has them
    assert not make_pna(4, 4, PNAOptions(), ConvContext(0, [1, 2], 7.0)).traits.reads_edge_features  # edge_features: none
    assert not make_pna(4, 4, PNAOptions(use_edge_features=False), ConvContext(16, [1, 2], 7.0)).traits.reads_edge_features
    with pytest.raises(ConfigError, match=r"model.conv_options.use_edge_features is true but model.edge_features is 'none'"):
        make_pna(4, 4, PNAOptions(use_edge_features=True), ConvContext(0, [1, 2], 7.0))


def test_pna_matches_dgl_pnaconv(monkeypatch):
    """Same function as a DGL PNA tower (its batch norm removed, graph-size normalization undone)."""
    monkeypatch.setattr(pna_module, "STD_EPS", 1e-30)  # DGL's epsilon inside the std
    graph = random_graph(n=10, seed=3)
    aggs, scalers, hist = ["mean", "max", "min", "std"], ["identity", "amplification", "attenuation"], [0, 2, 4, 4]
    delta = delta_from_histogram(hist)
    ref = dgl.nn.PNAConv(6, 6, aggs, scalers, delta, residual=False).double().eval()
    tower_ref = ref.towers[0]
    tower_ref.batchnorm = torch.nn.Identity()
    ours = make_pna(6, 6, PNAOptions(aggregators=aggs, scalers=scalers, use_edge_features=False),
                    ConvContext(0, hist, 7.0)).double()
    t = ours.towers[0]
    with torch.no_grad():
        t.pre_src.weight.copy_(tower_ref.M.weight[:, :6])
        t.pre_dst.weight.copy_(tower_ref.M.weight[:, 6:12])
        t.pre_dst.bias.copy_(tower_ref.M.bias)
        t.post.weight.copy_(tower_ref.U.weight)
        t.post.bias.copy_(tower_ref.U.bias)
    h = torch.randn(10, 6, dtype=torch.float64)
    snorm = 1 / math.sqrt(graph.num_nodes)
    expected = tower_ref(graph.dgl, h)
    got = t(graph, h, None, graph.in_degrees().double(), ours.delta) * snorm
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_sage_matches_reference():
    graph = random_graph()
    conv = make_sage(5, 4, SAGEOptions(aggregator="mean"), ConvContext(0, None, 7.0)).double()
    h = torch.randn(graph.num_nodes, 5, dtype=torch.float64)
    rows = []
    for i in range(graph.num_nodes):
        nbrs, _ = incoming(graph, i)
        rows.append(conv.fc_self(h[i]) + conv.fc_neigh(h[nbrs].mean(0)))
    torch.testing.assert_close(run(conv, graph, h), torch.stack(rows))


def test_cgcnn_matches_reference():
    graph = random_graph()
    conv = make_cgcnn(5, 5, CGCNNOptions(), ConvContext(3, None, 7.0)).double()
    h = torch.randn(graph.num_nodes, 5, dtype=torch.float64)
    e = torch.randn(graph.num_edges, 3, dtype=torch.float64)
    W = torch.cat([conv.dst.weight, conv.src.weight, conv.edge.weight], dim=1)
    rows = []
    for i in range(graph.num_nodes):
        nbrs, eids = incoming(graph, i)
        z = torch.cat([h[i].expand(len(nbrs), -1), h[nbrs], e[eids]], dim=1) @ W.T + conv.dst.bias
        rows.append(h[i] + (torch.sigmoid(z[:, :5]) * F.softplus(z[:, 5:])).sum(0))
    torch.testing.assert_close(run(conv, graph, h, e), torch.stack(rows), atol=1e-10, rtol=1e-10)


def test_cgcnn_needs_edge_features_and_equal_widths():
    from hydradgl.errors import ConfigError

    with pytest.raises(ConfigError, match="needs edge features"):
        make_cgcnn(4, 4, CGCNNOptions(), ConvContext(0, None, 7.0))
    with pytest.raises(ConfigError, match="widths must match"):
        make_cgcnn(4, 8, CGCNNOptions(), ConvContext(2, None, 7.0))


def test_pna_bad_options_are_named():
    from pydantic import ValidationError

    from hydradgl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model.conv_options.towers = 3 must divide the layer widths \(20, 20\)"):
        make_pna(20, 20, PNAOptions(towers=3, use_edge_features=False), ConvContext(0, None, 7.0))
    with pytest.raises(ValidationError, match="aggregators has repeated entries"):
        PNAOptions(aggregators=["mean", "mean"])
    with pytest.raises(ValidationError, match="pre_layers"):
        PNAOptions(pre_layers=0)
    with pytest.raises(ValidationError, match=r"envelope needs aggregators without min and max.*\[mean, std, sum\]"):
        PNAOptions(envelope=True)  # the default aggregators include min and max
