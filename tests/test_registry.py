"""Plugin registry: entry points, duplicate names, broken plugins, unknown names."""

from __future__ import annotations

import sys
import types
from importlib.metadata import EntryPoint

import pytest

from hydradgl import hookimpl
from hydradgl.errors import PluginError
from hydradgl.nn import ConvTraits, ScalarConv
from hydradgl.plugins import ConvSpec, load_registry


class FakeDist:
    def __init__(self, name: str, version: str = "1.0"):
        self.metadata = {"Name": name}
        self.version = version


def plugin_module(name: str, body) -> str:
    module = types.ModuleType(name)
    for attr, value in body.items():
        setattr(module, attr, value)
    sys.modules[name] = module
    return name


def entry_point(name: str, module: str, dist: str) -> EntryPoint:
    return EntryPoint(name, module, "hydradgl")._for(FakeDist(dist))


class IdentityConv(ScalarConv):
    traits = ConvTraits(kernels=("dgl", "torch"))

    def update(self, graph, h, edges):
        return h


def conv_plugin(module_name: str, conv_name: str, module: type | None = IdentityConv) -> str:
    @hookimpl
    def register_convs(register):
        register(ConvSpec(name=conv_name, description="test conv", factory=lambda *a: None, module=module))

    return plugin_module(module_name, {"register_convs": register_convs})


def test_registers_and_reports_distribution():
    mod = conv_plugin("hd_test_ok", "alpha")
    reg = load_registry([entry_point("alpha", mod, "pkg-a")])
    assert reg.conv("alpha").description == "test conv"
    assert reg.distributions["pkg-a"].provides["conv"] == ["alpha"]
    assert not reg.distributions["pkg-a"].broken


def test_duplicate_name_names_both_distributions():
    a, b = conv_plugin("hd_test_dup_a", "same"), conv_plugin("hd_test_dup_b", "same")
    reg = load_registry([entry_point("a", a, "pkg-one"), entry_point("b", b, "pkg-two")])
    with pytest.raises(PluginError, match="pkg-one and pkg-two"):
        reg.conv("same")
    assert "same" not in reg.names("conv")


def test_broken_import_is_listed_and_only_its_users_fail():
    ok = conv_plugin("hd_test_fine", "fine")
    reg = load_registry([entry_point("fine", ok, "pkg-fine"),
                         entry_point("gone", "hd_test_module_that_does_not_exist", "pkg-broken")])
    assert reg.conv("fine")  # other plugins keep working
    dist = reg.distributions["pkg-broken"]
    assert dist.broken and "ModuleNotFoundError" in dist.errors[0]
    with pytest.raises(PluginError, match="pkg-broken.*ModuleNotFoundError"):
        reg.conv("gone")


def test_hook_that_raises_marks_plugin_broken():
    @hookimpl
    def register_convs(register):
        raise RuntimeError("boom in hook")

    mod = plugin_module("hd_test_raises", {"register_convs": register_convs})
    reg = load_registry([entry_point("bad", mod, "pkg-raises")])
    assert "boom in hook" in reg.distributions["pkg-raises"].errors[0]


def test_wrong_spec_type_is_an_error():
    @hookimpl
    def register_heads(register):
        register(ConvSpec(name="x", description="a conv registered as head", factory=lambda: None))

    mod = plugin_module("hd_test_wrongtype", {"register_heads": register_heads})
    reg = load_registry([entry_point("w", mod, "pkg-w")])
    assert "must register HeadSpec" in reg.distributions["pkg-w"].errors[0]


def test_unknown_name_suggests_closest(registry):
    with pytest.raises(PluginError, match="Did you mean 'schnet'"):
        registry.conv("shnet")


def test_builtins_come_through_entry_points(registry):
    builtin = registry.distributions["hydradgl"]
    assert builtin.builtin and not builtin.broken
    from importlib.metadata import distribution

    entry_points = {ep.name for ep in distribution("hydradgl").entry_points if ep.group == "hydradgl"}
    provided = {name for names in builtin.provides.values() for name in names}
    assert provided == entry_points  # each built-in module registers the plugin its entry point is named after
    assert registry.head("graph-head").level == "graph" and registry.head("node-head").level == "node"


def test_misspelled_hook_marks_its_distribution_broken():
    @hookimpl
    def register_conv(register):  # the hook is register_convs
        register(ConvSpec(name="typo", description="never registered", factory=lambda *a: None, module=IdentityConv))

    mod = plugin_module("hd_test_typo", {"register_conv": register_conv})
    ok = conv_plugin("hd_test_typo_ok", "fine2")
    reg = load_registry([entry_point("typo", mod, "pkg-typo"), entry_point("ok", ok, "pkg-ok")])
    dist = reg.distributions["pkg-typo"]
    assert dist.broken and "register_conv" in dist.errors[0] and not any(dist.provides.values())
    assert reg.conv("fine2") and not reg.distributions["pkg-ok"].broken


def test_hook_without_hookimpl_marker_is_reported():
    def register_convs(register):  # no @hookimpl: pluggy does not see it
        register(ConvSpec(name="unmarked", description="x", factory=lambda *a: None, module=IdentityConv))

    mod = plugin_module("hd_test_unmarked", {"register_convs": register_convs})
    reg = load_registry([entry_point("u", mod, "pkg-unmarked")])
    assert "register_convs lacks @hydradgl.hookimpl" in reg.distributions["pkg-unmarked"].errors[0]
    assert "unmarked" not in reg.names("conv")


def test_name_registered_twice_by_one_distribution_is_refused():
    @hookimpl
    def register_convs(register):
        register(ConvSpec(name="twice", description="first", factory=lambda *a: None, module=IdentityConv))
        register(ConvSpec(name="twice", description="second", factory=lambda *a: None, module=IdentityConv))

    mod = plugin_module("hd_test_twice", {"register_convs": register_convs})
    reg = load_registry([entry_point("t", mod, "pkg-twice")])
    dist = reg.distributions["pkg-twice"]
    assert dist.provides["conv"] == ["twice"] and reg.conv("twice").description == "first"
    assert dist.broken and "registered twice" in dist.errors[0]


def test_builtin_readers_can_predict(registry):
    for name in registry.names("dataset"):
        assert registry.dataset(name).read_structures is not None, name  # every built-in reader can predict


class VectorsWithoutGeometry(ScalarConv):
    traits = ConvTraits(equivariant=True, returns=frozenset({"scalars", "vectors"}))


@pytest.mark.parametrize("module,problem", [
    (None, "module must be the layer's class, a subclass of hydradgl.nn.Conv"),
    (int, "a subclass of hydradgl.nn.Conv"),
    (VectorsWithoutGeometry, "VectorsWithoutGeometry.traits: a layer with vector or spherical features needs the "
                             "geometry"),
])
def test_conv_without_a_conv_class_or_with_inconsistent_traits_is_refused(module, problem):
    mod = conv_plugin(f"hd_test_traits_{getattr(module, '__name__', 'none')}", "odd", module)
    reg = load_registry([entry_point("odd", mod, "pkg-odd")])
    dist = reg.distributions["pkg-odd"]
    assert dist.broken and "conv 'odd'" in dist.errors[0] and problem in dist.errors[0]
    with pytest.raises(PluginError, match="pkg-odd"):
        reg.conv("odd")
