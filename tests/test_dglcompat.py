"""The DGL import shim: placeholder only when graphbolt cannot load, and DGL's core works through it."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from hydradgl import dglcompat
from hydradgl.dglcompat import dgl, fn


def test_graphbolt_check_follows_native_library(monkeypatch, tmp_path):
    (tmp_path / "graphbolt").mkdir()
    spec = importlib.util.spec_from_loader("dgl", loader=None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: spec if name == "dgl" else real_find_spec(name, *a))
    assert not dglcompat._graphbolt_importable()  # no library for this torch version
    version = torch.__version__.split("+")[0]
    (tmp_path / "graphbolt" / f"libgraphbolt_pytorch_{version}.so").write_bytes(b"")
    has_datapipes = real_find_spec("torchdata") is not None and _datapipes()
    assert dglcompat._graphbolt_importable() == has_datapipes


def _datapipes() -> bool:
    try:
        return importlib.util.find_spec("torchdata.datapipes") is not None
    except ModuleNotFoundError:
        return False


def test_placeholder_only_when_needed():
    assert dglcompat.graphbolt_stubbed == (not dglcompat._graphbolt_importable())


def test_placeholder_explains_itself():
    module = dglcompat._placeholder_graphbolt()
    with pytest.raises(AttributeError, match="hydradgl does not use graphbolt"):
        module.ItemSampler  # noqa: B018
    assert not hasattr(module, "__file__")  # inspect-style probes see a plain missing attribute


def test_dgl_core_message_passing_matches_hand_computation():
    g = dgl.graph((torch.tensor([0, 1, 2, 2]), torch.tensor([1, 2, 0, 1])))
    g.ndata["h"] = torch.tensor([[1.0], [10.0], [100.0]])
    g.update_all(fn.copy_u("h", "m"), fn.sum("m", "s"))
    assert g.ndata["s"].squeeze().tolist() == [100.0, 101.0, 10.0]
    batched = dgl.batch([g, g])
    assert batched.batch_size == 2 and batched.num_nodes() == 6


class _FakeGraph:
    def __init__(self, fails: bool):
        self.fails = fails

    def to(self, device):
        if self.fails:
            raise RuntimeError("Device API cuda is not enabled")
        return self


@pytest.mark.parametrize("torch_cuda,dgl_moves,expected", [(False, True, False), (True, False, False), (True, True, True)])
def test_dgl_has_cuda_needs_both_torch_cuda_and_a_cuda_dgl(monkeypatch, torch_cuda, dgl_moves, expected):
    """Checked with torch's and DGL's answers faked, so every branch runs on any machine."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: torch_cuda)
    monkeypatch.setattr(dglcompat.dgl, "graph", lambda *a, **k: _FakeGraph(fails=not dgl_moves))
    assert dglcompat.dgl_has_cuda() is expected


def test_nothing_else_imports_dgl_directly():
    """The shim is the single entry point: no module of ours imports dgl itself."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = [str(p.relative_to(root)) for folder in ("hydradgl", "plugins", "examples")
                 for p in (root / folder).rglob("*.py")
                 if p.name != "dglcompat.py" and any(line.strip().startswith(("import dgl", "from dgl"))
                                                     for line in p.read_text().splitlines())]
    assert offenders == []
