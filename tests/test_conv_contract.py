"""The conv contract (hydradgl.nn): traits checked and narrowed, what the model reads of them, the trunk
handing one NodeState from layer to layer, old weights renamed, the vector head only on equivariant trunks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from hydradgl.data.loader import collate
from hydradgl.data.pipeline import prepare_data
from hydradgl.errors import ConfigError
from hydradgl.model.assembler import build_model, upgrade_state_dict
from hydradgl.nn import ConvTraits
from tests.conftest import small_config
from tests.test_potential import emt_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("traits,problem", [
    (ConvTraits(kernels=()), "kernels"),
    (ConvTraits(kernels=("cuda",)), "kernels"),
    (ConvTraits(returns=frozenset({"vectors"}), equivariant=True, needs_geometry=True), "returns"),
    (ConvTraits(returns=frozenset({"scalars", "vectors"}), needs_geometry=True), "equivariant must be declared"),
    (ConvTraits(equivariant=True), "equivariant must be declared"),
    (ConvTraits(smooth_at_cutoff=True), "smooth_at_cutoff needs distances"),
])
def test_inconsistent_traits_are_named(traits, problem):
    assert any(problem in p for p in traits.problems())


def test_consistent_traits_have_no_problems(registry):
    for name in registry.names("conv"):
        assert registry.conv(name).problems() == [], name
    assert ConvTraits(needs_geometry=True, smooth_at_cutoff=True).problems() == []


def test_an_instance_narrows_only_option_dependent_traits():
    base = ConvTraits(needs_geometry=True, smooth_at_cutoff=True, kernels=("dgl", "torch"))
    assert base.narrowed(smooth_at_cutoff=False) == ConvTraits(needs_geometry=True, kernels=("dgl", "torch"))
    with pytest.raises(ValueError, match="kernels"):
        base.narrowed(kernels=("dgl",))


@pytest.mark.parametrize("overrides,smooth,extrema,distances", [
    ({"model.conv": "pna"}, False, True, True),
    ({"model.conv": "pna", "model.conv_options": {"aggregators": ["mean", "std"], "envelope": True}},
     True, False, True),
    ({"model.conv": "sage", "model.conv_options": {"aggregator": "pool"}}, False, True, False),
    ({"model.conv": "sage"}, False, False, False),
    ({"model.conv": "egnn", "model.conv_options": {"envelope": False}}, False, False, True),
    ({"model.conv": "schnet", "model.edge_features": "gaussian"}, True, False, True),
    ({"model.conv": "painn"}, True, False, True),
])
def test_model_properties_follow_the_layers_traits(small_prepared, overrides, smooth, extrema, distances):
    model = build_model(small_config(**overrides), small_prepared.info)
    assert (model.smooth_at_cutoff, model.uses_extrema, model.depends_on_distances) == (smooth, extrema, distances)


def test_gin_example_with_a_max_aggregator_declares_extrema(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "hydradgl-gin"))
    from hydradgl_gin import GINConv, GINOptions

    assert GINConv(4, 4, GINOptions(aggregator="max")).traits.uses_extrema
    assert not GINConv(4, 4, GINOptions(aggregator="sum")).traits.uses_extrema
    sys.modules.pop("hydradgl_gin", None)


def test_the_trunk_hands_vectors_from_layer_to_layer_and_heads_read_scalars(small_prepared):
    model = build_model(small_config(**{"model.conv": "painn"}), small_prepared.info)
    batch = collate(small_prepared.train, np.arange(2))
    state = model.trunk(batch)
    assert state.scalars.shape == (len(batch.species), 16) and state.vectors.shape == (len(batch.species), 3, 16)
    seen = []
    model.convs[1].register_forward_pre_hook(lambda module, args: seen.append(args[1]))
    model(batch)
    assert seen[0].vectors is not None and seen[0].vectors.abs().sum() > 0  # the first layer's vectors reach the next


def test_weights_saved_with_the_trunks_norms_load_into_the_layers(small_prepared):
    model = build_model(small_config(), small_prepared.info)
    old = {k.replace(".norm.", "~").replace("convs.", "norms.", 1).replace("~", ".") if ".norm." in k else k: v
           for k, v in model.state_dict().items()}
    assert any(k.startswith("norms.0.") for k in old)
    renamed = upgrade_state_dict(old)
    assert renamed.keys() == model.state_dict().keys()
    model.load_state_dict(renamed)


VECTOR_HEAD = [{"name": "F", "target": "forces", "kind": "vector-head", "layers": [8]}]


@pytest.fixture(scope="module")
def emt_prepared(registry):
    return prepare_data(emt_config(), registry)


def test_vector_head_is_refused_on_an_invariant_trunk(emt_prepared):
    with pytest.raises(ConfigError, match=r"heads\[0\]\.kind: 'vector-head' reads the trunk's vector features.*"
                                          r"'schnet'.*invariant"):
        build_model(emt_config(heads=VECTOR_HEAD), emt_prepared.info)


@pytest.mark.parametrize("conv", ["schnet", "painn"])
def test_vector_target_needs_a_vector_head(emt_prepared, conv):
    cfg = emt_config(**{"model.conv": conv}, heads=[{"name": "F", "target": "forces", "layers": [8]}])
    with pytest.raises(ConfigError, match=r"'node-head' predicts it from invariant features.*kind: vector-head"):
        build_model(cfg, emt_prepared.info)
