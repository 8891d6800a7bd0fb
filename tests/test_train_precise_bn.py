"""Exact batch-norm statistics before evaluation: the running buffers become the average batch statistics
of a fixed sample of training graphs, computed with the current weights."""

from __future__ import annotations

import torch

from hydradgl.data.loader import BatchLoader
from hydradgl.model.assembler import build_model
from hydradgl.train.precise_bn import recompute_batch_norm
from hydradgl.train.runtime import setup_runtime
from tests.conftest import small_config


def test_running_statistics_become_the_sample_average(small_prepared):
    cfg = small_config()
    torch.manual_seed(0)
    model = build_model(cfg, small_prepared.info).eval()
    norm = model.convs[0].norm
    norm.running_mean.fill_(5.0)
    norm.running_var.fill_(7.0)
    inputs = []
    hook = norm.register_forward_hook(lambda module, args, out: inputs.append(args[0].detach()))
    recompute_batch_norm(model, small_prepared.train, 40, 16, setup_runtime(cfg.training))
    hook.remove()
    assert not model.training  # mode restored
    assert norm.momentum == 0.1
    # independently: the same fixed sample, batch means and unbiased variances averaged over batches
    batches = list(BatchLoader(small_prepared.train, 16, shuffle=True, seed=0))[:3]  # 48 >= 40 graphs
    assert len(inputs) == 3 and [len(b.species) for b in batches] == [len(x) for x in inputs]
    torch.testing.assert_close(norm.running_mean, torch.stack([x.mean(0) for x in inputs]).mean(0))
    torch.testing.assert_close(norm.running_var, torch.stack([x.var(0) for x in inputs]).mean(0))
