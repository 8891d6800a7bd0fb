"""Message passing, below data and model: the batched graph and its kernels on two paths (dgl, torch)."""

from hydradgl.ops.graph import BACKENDS, Backend, MessageGraph, Reduce

__all__ = ["BACKENDS", "Backend", "MessageGraph", "Reduce"]
