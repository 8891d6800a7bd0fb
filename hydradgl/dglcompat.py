"""The one place hydradgl imports DGL from: ``from hydradgl.dglcompat import dgl``.

Why this exists: ``dgl==2.1.0``, the newest DGL wheel on PyPI, cannot be imported on recent torch
releases for packaging reasons that have nothing to do with the parts hydradgl uses (DGLGraph,
``dgl.batch``, ``update_all`` with built-in message functions, ``dgl.nn``):

* ``import dgl`` imports ``dgl.graphbolt``, which loads a native library built per torch version
  (``libgraphbolt_pytorch_<torch version>.so``) and raises when none matches the installed torch;
* graphbolt imports ``torchdata.datapipes``, which recent torchdata releases removed;
* ``dgl.utils`` falls back to ``setuptools.extern.packaging`` when ``packaging`` is missing
  (newer setuptools dropped it), and ``dgl.data`` imports pandas without declaring it. hydradgl
  declares ``packaging`` and ``pandas`` as dependencies, which settles those two.

hydradgl never uses graphbolt (DGL's sampling pipeline for huge graphs). When graphbolt cannot be
imported as shipped, a placeholder module takes its place so the rest of DGL imports; touching it
raises an error that says why. On a DGL/torch pair whose graphbolt imports cleanly, this module
only imports DGL.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import types

import torch

GRAPHBOLT = "dgl.graphbolt"

#: True when this module had to stand in a placeholder for ``dgl.graphbolt``.
graphbolt_stubbed = False


def _graphbolt_importable() -> bool:
    """Whether DGL's own graphbolt would import: its native library and torchdata's datapipes exist."""
    spec = importlib.util.find_spec("dgl")
    if spec is None or not spec.submodule_search_locations:
        return True  # no DGL at all: let the real import report it
    torch_version = torch.__version__.split("+", maxsplit=1)[0]
    library = os.path.join(spec.submodule_search_locations[0], "graphbolt",
                           f"libgraphbolt_pytorch_{torch_version}.so")
    if not os.path.exists(library):
        return False
    try:
        return importlib.util.find_spec("torchdata.datapipes") is not None
    except ModuleNotFoundError:
        return False


def _placeholder_graphbolt() -> types.ModuleType:
    module = types.ModuleType(GRAPHBOLT, "Placeholder installed by hydradgl.dglcompat.")

    def __getattr__(name: str):
        raise AttributeError(
            f"dgl.graphbolt.{name} is unavailable: DGL's graphbolt has no native library for torch "
            f"{torch.__version__} (or torchdata lacks datapipes), so hydradgl.dglcompat replaced it "
            "with a placeholder. hydradgl does not use graphbolt."
        )

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    return module


if "dgl" not in sys.modules and not _graphbolt_importable():
    sys.modules[GRAPHBOLT] = _placeholder_graphbolt()
    graphbolt_stubbed = True

import dgl  # noqa: E402  (must follow the placeholder)
import dgl.function as fn  # noqa: E402


@functools.cache
def dgl_has_cuda() -> bool:
    """Whether the installed DGL was built with CUDA (the PyPI wheels are CPU-only); probed once."""
    if not torch.cuda.is_available():
        return False
    try:
        dgl.graph(([0], [0])).to("cuda")
    except Exception:  # noqa: BLE001  (DGL raises DGLError or a plain RuntimeError depending on build)
        return False
    return True


__all__ = ["dgl", "fn", "dgl_has_cuda", "graphbolt_stubbed"]
