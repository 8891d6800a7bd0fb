"""CLI: config show / config schema."""

from __future__ import annotations

from hydradgl.cli.app import main  # noqa: F401  (commands attach to it)
