"""Hook specifications: what a hydradgl plugin may implement.

A plugin is any module listed under the ``hydradgl`` entry-point group (the built-in ones too). It
implements one or more hooks with ``@hydradgl.hookimpl``; each hook receives a ``register`` callable
and calls it once per thing it provides::

    from hydradgl import hookimpl
    from hydradgl.plugins import ConvSpec

    @hookimpl
    def register_convs(register):
        register(ConvSpec(name="gin", description="GIN convolution", options=GINOptions, factory=make_gin,
                          module=GINConv))  # GINConv: a hydradgl.nn.Conv subclass declaring its traits

The spec classes (:class:`~hydradgl.plugins.DatasetSpec`, :class:`~hydradgl.plugins.ConvSpec`,
:class:`~hydradgl.plugins.HeadSpec`, :class:`~hydradgl.plugins.LoggerSpec`) document what each factory
receives and returns.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("hydradgl")


@hookspec
def register_datasets(register: Callable) -> None:
    """Register dataset readers/generators by calling ``register(DatasetSpec(...))``."""


@hookspec
def register_convs(register: Callable) -> None:
    """Register graph convolution layers by calling ``register(ConvSpec(...))``."""


@hookspec
def register_heads(register: Callable) -> None:
    """Register output heads by calling ``register(HeadSpec(...))``."""


@hookspec
def register_loggers(register: Callable) -> None:
    """Register experiment trackers (MLflow, W&B, ...) by calling ``register(LoggerSpec(...))``."""
