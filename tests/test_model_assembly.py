"""The assembled model: shapes, permutation symmetry, batch independence, gradients, saved statistics, loss."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from hydradgl.data.batch import Batch
from hydradgl.data.loader import collate
from hydradgl.ops import MessageGraph
from hydradgl.errors import ConfigError
from hydradgl.model.assembler import build_model
from hydradgl.model.loss import MultiTaskLoss
from hydradgl.plugins import get_registry
from tests.conftest import small_config

CONVS = get_registry().names("conv")  # every installed conv layer, built-in or not


def model_for(conv, prepared, **overrides):
    torch.manual_seed(0)
    cfg = small_config(**{"model.conv": conv, "heads": ["H", "C", "M"], **overrides})
    return cfg, build_model(cfg, prepared.info)


@pytest.mark.parametrize("conv", CONVS)
def test_output_shapes(conv, small_prepared):
    _, model = model_for(conv, small_prepared)
    batch = collate(small_prepared.train, np.arange(5))
    out = model(batch)
    assert out["H"].shape == (5, 1)
    assert out["C"].shape == out["M"].shape == (batch.graph.num_nodes, 1)
    assert model.head_levels == {"H": "graph", "C": "node", "M": "node"}


def permuted(batch: Batch, perm: torch.Tensor) -> Batch:
    """The same single graph with node k renamed inverse[k] (edges and per-node data consistent)."""
    inverse = torch.argsort(perm)
    graph = MessageGraph.from_edges(inverse[batch.graph.src], inverse[batch.graph.dst], batch.graph.num_nodes)
    return replace(batch, graph=graph, species=batch.species[perm], node_inputs=batch.node_inputs[perm],
                   node_targets={k: v[perm] for k, v in batch.node_targets.items()})


@pytest.mark.parametrize("conv", CONVS)
def test_graph_heads_invariant_node_heads_equivariant(conv, small_prepared):
    _, model = model_for(conv, small_prepared)
    model.eval()
    batch = collate(small_prepared.train, np.array([40]))
    perm = torch.randperm(batch.graph.num_nodes, generator=torch.Generator().manual_seed(1))
    a, b = model(batch), model(permuted(batch, perm))
    torch.testing.assert_close(a["H"], b["H"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a["C"][perm], b["C"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a["M"][perm], b["M"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("conv", CONVS)
def test_graph_alone_equals_graph_in_batch(conv, small_prepared):
    _, model = model_for(conv, small_prepared)
    model.eval()
    together = model(collate(small_prepared.train, np.array([2, 9, 30])))
    alone = model(collate(small_prepared.train, np.array([9])))
    n = int(small_prepared.train.num_nodes[2])
    torch.testing.assert_close(alone["H"][0], together["H"][1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone["C"], together["C"][n:n + alone["C"].shape[0]], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("conv", CONVS)
def test_every_parameter_gets_a_gradient(conv, small_prepared):
    cfg, model = model_for(conv, small_prepared)
    batch = collate(small_prepared.train, np.arange(8))
    total, _ = MultiTaskLoss(model.head_descriptions)(model(batch), batch)
    total.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())


def test_pna_degree_statistics_saved_and_restored(small_prepared):
    cfg, model = model_for("pna", small_prepared)
    other_info = small_prepared.info.model_copy(update={"degree_histogram": [0, 100]})
    other = build_model(cfg, other_info)
    assert float(other.convs[0].delta) != float(model.convs[0].delta)
    other.load_state_dict(model.state_dict())
    assert float(other.convs[0].delta) == float(model.convs[0].delta)
    model.eval(), other.eval()
    batch = collate(small_prepared.val, np.arange(4))
    torch.testing.assert_close(model(batch)["H"], other(batch)["H"])


def test_loss_weights_by_hand(small_prepared):
    cfg = small_config(heads=[{"name": "H", "alpha": 2.0}, {"name": "C", "alpha": 0.5, "loss": "mae"}])
    model = build_model(cfg, small_prepared.info)
    batch = collate(small_prepared.train, np.arange(6))
    preds = model(batch)
    total, parts = MultiTaskLoss(model.head_descriptions)(preds, batch)
    mse_h = ((preds["H"] - batch.graph_targets["H"]) ** 2).mean()
    mae_c = (preds["C"] - batch.node_targets["C"]).abs().mean()
    torch.testing.assert_close(parts["H"], mse_h)
    torch.testing.assert_close(parts["C"], mae_c)
    torch.testing.assert_close(total, 2.0 * mse_h + 0.5 * mae_c)


def test_single_task_and_vector_targets(small_prepared):
    _, model = model_for("pna", small_prepared, heads=["M"])
    assert list(model.heads) == ["M"]
    info = small_prepared.info.model_copy(deep=True)
    info.targets["M"] = info.targets["M"].model_copy(update={"dim": 2})  # not 3: no vector heads (test_stress.py)
    cfg = small_config(heads=["M"])
    wide = build_model(cfg, info)
    assert wide(collate(small_prepared.train, np.arange(2)))["M"].shape[1] == 2


def test_head_errors_name_the_head(small_prepared):
    with pytest.raises(ConfigError, match=r"heads\[0\] \('X'\): target 'X' is not in the dataset; available targets: C, H, M"):
        build_model(small_config(heads=["X"]), small_prepared.info)
    with pytest.raises(ConfigError, match=r"heads\[0\].kind: 'node-head' is a node-level head but target 'H' is graph-level"):
        build_model(small_config(heads=[{"name": "H", "kind": "node-head"}]), small_prepared.info)
    with pytest.raises(ConfigError, match=r"heads\[0\].options.readout"):
        build_model(small_config(heads=[{"name": "H", "options": {"readout": "median"}}]), small_prepared.info)


@pytest.mark.parametrize("readout, per_atom", [("sum", None), ("sum", True), ("mean", True), ("mean", False)])
def test_graph_head_pools_atomic_outputs_or_features(readout, per_atom, small_prepared):
    """per_atom: y_g = readout_i MLP(h_i); else (the default) y_g = MLP(readout_i h_i)."""
    options = {"readout": readout} if per_atom is None else {"readout": readout, "per_atom": per_atom}
    cfg, model = model_for("pna", small_prepared, heads=[{"name": "H", "options": options}])
    head = model.heads["H"]
    batch = collate(small_prepared.train, np.arange(3))
    graph = batch.graph
    h = torch.randn(graph.num_nodes, cfg.model.hidden)
    rows = h.split(graph.batch_num_nodes.tolist())
    reduce = (lambda t: t.sum(0)) if readout == "sum" else (lambda t: t.mean(0))
    atomic = bool(per_atom)
    expected = torch.stack([reduce(head.mlp(r)) if atomic else head.mlp(reduce(r)) for r in rows])
    torch.testing.assert_close(head(graph, h), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match=r"heads\[0\].options.*per_atom needs a sum or mean readout"):
        build_model(small_config(heads=[{"name": "H", "options": {"readout": "max", "per_atom": True}}]),
                    small_prepared.info)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (and a CUDA build of DGL)")
def test_model_on_cuda_matches_cpu(small_prepared):
    from hydradgl.dglcompat import dgl_has_cuda

    if not dgl_has_cuda():
        pytest.skip("DGL here is a CPU build")
    _, model = model_for("pna", small_prepared)
    batch = collate(small_prepared.train, np.arange(3))
    expected = model.eval()(batch)
    moved = model.to("cuda")(batch.to("cuda"))
    assert model.convs[0].delta.device.type == "cuda"
    for name, value in expected.items():
        torch.testing.assert_close(moved[name].cpu(), value, atol=1e-4, rtol=1e-4)


def test_graph_head_readout_follows_the_target_unless_set():
    from types import SimpleNamespace

    from hydradgl.plugins import HeadContext
    from hydradgl_plugins.heads.graph import GraphHeadOptions, make_graph_head

    def readout(options, target):
        return make_graph_head(4, 1, [3], GraphHeadOptions(**options), HeadContext("relu", target)).readout

    assert readout({}, None) == "mean"  # nothing known: mean, as before
    assert readout({}, SimpleNamespace(readout="sum")) == "sum"  # an extensive target (total energy)
    assert readout({"readout": "max"}, SimpleNamespace(readout="sum")) == "max"  # the config wins
