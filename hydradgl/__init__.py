"""hydradgl: multi-task graph neural networks for atomistic data, built on DGL."""

from importlib.metadata import PackageNotFoundError, version

import pluggy

try:
    __version__ = version("hydradgl")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

#: Decorator plugins use to implement the hooks in :mod:`hydradgl.hookspecs`.
hookimpl = pluggy.HookimplMarker("hydradgl")

__all__ = ["__version__", "hookimpl"]
