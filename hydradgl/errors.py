"""Errors that describe a user's mistake; the CLI prints them without a traceback (``--debug`` shows it)."""

from __future__ import annotations


class HydraError(Exception):
    """Base class: a problem the user can fix (bad input, bad config, missing plugin, ...)."""


class ConfigError(HydraError):
    """A configuration key or value is wrong; the message names the key path."""


class PluginError(HydraError):
    """A plugin is unknown, broken, or registered twice; the message names the distribution(s)."""


class DataError(HydraError):
    """An input file or record is malformed; the message names the file and line."""


class TrainingError(HydraError):
    """Training cannot start or had to stop (NaN loss, unwritable output, missing CUDA build, ...)."""
