"""hydradgl: multi-task graph neural networks for atomistic data, built on DGL."""

from importlib.metadata import PackageNotFoundError, version

import pluggy

try:
    __version__ = version("hydradgl")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

#: Decorator plugins use to implement the hooks in :mod:`hydradgl.hookspecs`.
hookimpl = pluggy.HookimplMarker("hydradgl")



def load(path, device: str = "cpu", registry=None):
    """A trained model (one run, or an ensemble) ready to predict: see :func:`hydradgl.api.load`."""
    from hydradgl.api import load as load_model  # torch and DGL load on first use, not on ``import hydradgl``

    return load_model(path, device=device, registry=registry)


__all__ = ["__version__", "hookimpl", "load"]
