"""Config options that change the model or the training, each checked for its effect (not just that it runs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from hydradgl.data.loader import BatchLoader, collate
from hydradgl.errors import ConfigError
from hydradgl.model.assembler import build_model
from hydradgl.model.loss import MultiTaskLoss
from hydradgl.train.run import train_run
from hydradgl.train.runtime import Runtime
from hydradgl.train.trainer import Trainer
from tests.conftest import small_config


def trainer_for(small_prepared, **overrides) -> Trainer:
    torch.manual_seed(0)
    cfg = small_config(**overrides)
    return Trainer(cfg, small_prepared, build_model(cfg, small_prepared.info), Runtime(0, 1, 0, torch.device("cpu")), None)


@pytest.mark.parametrize("norm,kind", [("batch", nn.BatchNorm1d), ("layer", nn.LayerNorm), ("none", nn.Identity)])
def test_norm_layer_kinds(small_prepared, norm, kind):
    model = build_model(small_config(**{"model.norm": norm}), small_prepared.info)
    assert all(type(conv.norm) is kind for conv in model.convs) and len(model.convs) == 2
    if norm == "layer":  # every atom's features normalized to zero mean over the feature axis
        batch = collate(small_prepared.train, np.arange(3))
        seen = []
        model.convs[0].norm.register_forward_hook(lambda module, args, out: seen.append(out))
        model(batch)
        torch.testing.assert_close(seen[0].mean(1), torch.zeros(len(seen[0])), atol=1e-5, rtol=0)


@pytest.mark.parametrize("edge_features,dim", [("none", 0), ("distance", 1), ("gaussian", 16)])
def test_edge_feature_kinds_reach_the_convs(small_prepared, edge_features, dim):
    cfg = small_config(**{"model.conv": "pna", "model.conv_options": {"use_edge_features": dim > 0},
                          "model.edge_features": edge_features})
    model = build_model(cfg, small_prepared.info)
    assert model.edge_features.dim == dim and model.needs_edges == (dim > 0)
    batch = collate(small_prepared.train, np.arange(2))
    seen = []
    model.convs[0].register_forward_pre_hook(lambda module, args: seen.append(args[2].attr))
    model(batch)
    if dim == 0:
        assert seen == [None]
    elif edge_features == "distance":
        torch.testing.assert_close(seen[0][:, 0], batch.edge_dist)
    else:
        assert seen[0].shape == (batch.graph.num_edges, dim)


def test_conv_that_needs_edge_features_says_so(small_prepared):
    with pytest.raises(ConfigError, match="cgcnn needs edge features"):
        build_model(small_config(**{"model.conv": "cgcnn", "model.edge_features": "none"}), small_prepared.info)


def test_pna_without_edge_features_skips_computing_them(small_prepared):
    cfg = small_config(**{"model.conv_options": {"use_edge_features": False}})
    model = build_model(cfg, small_prepared.info)  # pna, use_edge_features off (the spec says so)
    assert model.edge_features.dim > 0 and not model.needs_edges


@pytest.mark.parametrize("overrides,expected", [
    ({}, True),  # the paper's PNA aggregators: mean, min, max, std
    ({"model.conv_options": {"aggregators": ["mean", "std", "sum"]}}, False),
    ({"model.conv": "sage", "model.conv_options": {"aggregator": "pool"}}, True),
    ({"model.conv": "sage", "model.conv_options": {"aggregator": "mean"}}, False),
    ({"model.conv": "cgcnn"}, False),
    ({"model.conv": "cgcnn", "heads.0.options": {"readout": "max"}}, True),
])
def test_model_says_whether_it_reduces_by_max_or_min(small_prepared, overrides, expected):
    """HydraModel.uses_extrema (the calculator's warning that forces lose a crystal's symmetry)."""
    assert build_model(small_config(**overrides), small_prepared.info).uses_extrema is expected


@pytest.mark.parametrize("overrides,expected", [
    ({}, False),  # pna: messages carry the neighbours' features, aggregates their count
    ({"model.conv": "cgcnn"}, False),
    ({"model.conv": "cgcnn", "model.conv_options": {"envelope": True}}, True),
    ({"model.conv_options": {"envelope": True, "aggregators": ["mean", "std", "sum"]}}, True),
    ({"model.conv": "sage"}, False),
    ({"model.conv": "schnet"}, True),
    ({"model.conv": "egnn"}, True),
    ({"model.conv": "egnn", "model.conv_options": {"envelope": False}}, False),
])
def test_model_says_whether_it_is_smooth_at_the_cutoff(small_prepared, overrides, expected):
    """HydraModel.smooth_at_cutoff (the calculator's warning that MD will not conserve energy)."""
    assert build_model(small_config(**overrides), small_prepared.info).smooth_at_cutoff is expected


@pytest.mark.parametrize("name,kind", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam)])
def test_optimizers(small_prepared, name, kind):
    trainer = trainer_for(small_prepared, **{"training.optimizer": name, "training.weight_decay": 0.01})
    assert type(trainer.optimizer) is kind and trainer.optimizer.param_groups[0]["weight_decay"] == 0.01


def test_grad_clip_bounds_an_sgd_step(small_prepared):
    """With SGD (lr 1) the parameter change of one step is the clipped gradient: its norm <= grad_clip."""
    trainer = trainer_for(small_prepared, **{"training.optimizer": "sgd", "training.lr": 1.0,
                                             "training.grad_clip": 1e-3, "model.norm": "none"})
    before = torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
    trainer.loader = BatchLoader(small_prepared.train, len(small_prepared.train))  # one batch: exactly one step
    trainer.train_epoch()
    after = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    step = float((after - before).norm())
    assert 0 < step <= 1e-3 * (1 + 1e-4)


def test_huber_loss_matches_torch(small_prepared):
    cfg = small_config(heads=[{"name": "H", "loss": "huber"}, {"name": "M", "loss": "mae", "alpha": 0.5}])
    model = build_model(cfg, small_prepared.info)
    batch = collate(small_prepared.train, np.arange(4))
    preds = {k: v * 40 for k, v in model(batch).items()}  # large errors: huber's linear part matters
    total, parts = MultiTaskLoss(model.head_descriptions)(preds, batch)
    huber = F.huber_loss(preds["H"], batch.graph_targets["H"])
    mae = (preds["M"] - batch.node_targets["M"]).abs().mean()
    torch.testing.assert_close(parts["H"], huber)
    torch.testing.assert_close(total, huber + 0.5 * mae)
    assert float(huber.detach()) < float(((preds["H"] - batch.graph_targets["H"]) ** 2).mean().detach()) / 2


def test_head_whose_target_differs_from_its_name(tmp_path, small_prepared):
    cfg = small_config(tmp_path, heads=[{"name": "enthalpy", "target": "H", "kind": "graph-head"},
                                        {"name": "moment", "target": "M"}], **{"training.epochs": 1})
    result = train_run(cfg, data=small_prepared, quiet=True, plots_enabled=False)
    assert set(result.test) == {"enthalpy", "moment"}
    assert result.test["enthalpy"]["unit"] == "Ry" and result.test["moment"]["level"] == "node"
    model = result.model.eval()
    batch = collate(small_prepared.test, np.arange(len(small_prepared.test)))
    with torch.no_grad():
        pred = model(batch)["enthalpy"]
    rmse = float(torch.sqrt(((pred - batch.graph_targets["H"]) ** 2).mean()))
    assert rmse == pytest.approx(result.test["enthalpy"]["rmse"], rel=1e-4)


def test_explicit_head_kind_is_used_and_checked(small_prepared):
    model = build_model(small_config(heads=[{"name": "H", "kind": "graph-head", "options": {"readout": "sum"}}]),
                        small_prepared.info)
    assert model.head_descriptions[0].kind == "graph-head" and model.heads["H"].readout == "sum"
    with pytest.raises(ConfigError, match=r"heads\[0\].kind: 'graph-head' is a graph-level head but target 'M'"):
        build_model(small_config(heads=[{"name": "M", "kind": "graph-head"}]), small_prepared.info)
