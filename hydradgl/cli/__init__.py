"""The ``hydradgl`` command line. Each command group lives in its own module of this package."""

from __future__ import annotations

from hydradgl.cli.app import main

__all__ = ["main"]
