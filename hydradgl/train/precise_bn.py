"""Exact batch-norm statistics before evaluation ("precise BN", Wu & Johnson, arXiv:2105.07576, 2021).

In training mode batch norm normalizes with each batch's own statistics and keeps running averages
(momentum 0.1: effectively the last ~10 batches, computed with weights that have moved since) for
evaluation. On small or composition-heterogeneous batches those averages are noisy, and validation
losses computed with them jump from epoch to epoch. Recomputing the statistics once per evaluation,
over a fixed sample of training graphs with the current weights, removes that noise.
"""

from __future__ import annotations

import torch
from torch import nn

from hydradgl.data.graphset import GraphSet, GraphView
from hydradgl.data.loader import BatchLoader
from hydradgl.train.runtime import Runtime, all_reduce_sum


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def _running_stats(m: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``num_batches_tracked``, ``running_mean`` and ``running_var``: set wherever ``track_running_stats`` is."""
    tracked, mean, var = m.num_batches_tracked, m.running_mean, m.running_var
    if tracked is None or mean is None or var is None:
        raise ValueError(f"{type(m).__name__} keeps no running statistics")
    return tracked, mean, var


@torch.no_grad()
def recompute_batch_norm(model: nn.Module, graphs: GraphSet | GraphView, max_graphs: int, batch_size: int,
                         runtime: Runtime) -> None:
    """Set every batch norm's running mean and variance to their average over batches of about
    ``max_graphs`` training graphs (a fixed random sample of this rank's shard), averaged over ranks;
    the model's train/eval mode is restored."""
    norms = batch_norms(model)
    if not norms or len(graphs) == 0:
        return
    was_training = model.training
    saved = [(m.momentum, _running_stats(m)[0].clone()) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    # a fixed random sample (the training split may be ordered, e.g. by composition)
    loader = BatchLoader(graphs, batch_size, shuffle=True, seed=0, rank=runtime.rank, world_size=runtime.world_size)
    model.train()
    seen = 0
    for batch in loader:
        if seen >= max_graphs:
            break
        model(batch.to(runtime.device))
        seen += batch.num_graphs
    for m, (momentum, tracked) in zip(norms, saved):
        m.momentum = momentum
        num_batches_tracked, mean, var = _running_stats(m)
        num_batches_tracked.copy_(tracked)
        if runtime.distributed:
            for buffer in (mean, var):
                buffer.copy_(all_reduce_sum(buffer.clone(), runtime) / runtime.world_size)
    model.train(was_training)
