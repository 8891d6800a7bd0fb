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
    norm = model.norms[0]
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


def test_frozen_norm_epochs_train_with_fixed_statistics(small_prepared):
    """The last ``frozen_norm_epochs`` epochs train with batch norm in evaluation mode: weights still
    move, the statistics stay at their last recomputation (before the frozen epochs)."""
    from hydradgl.train.trainer import Trainer

    cfg = small_config(**{"training.epochs": 3, "training.frozen_norm_epochs": 1, "training.precise_bn_graphs": 40})
    torch.manual_seed(0)
    model = build_model(cfg, small_prepared.info)
    trainer = Trainer(cfg, small_prepared, model, setup_runtime(cfg.training), run_dir=None)
    norm = model.norms[0]
    modes = []  # (epochs completed, batch norm's training flag) at each training-time forward
    norm.register_forward_pre_hook(lambda module, args: modes.append((trainer.epoch, module.training))
                                   if model.training else None)
    snapshots = []
    trainer.fit(on_epoch=lambda row: snapshots.append(
        (norm.running_mean.clone(), norm.running_var.clone(), model.convs[0].towers[0].post.weight.detach().clone())))
    assert {flag for epoch, flag in modes if epoch < 2} == {True}
    assert {flag for epoch, flag in modes if epoch == 2} == {False}
    (mean1, var1, w1), (mean2, var2, w2), (mean3, var3, w3) = snapshots
    assert not torch.equal(mean1, mean2)  # recomputed after epoch 2 (weights moved)
    torch.testing.assert_close(mean3, mean2, rtol=0, atol=0)
    torch.testing.assert_close(var3, var2, rtol=0, atol=0)
    assert not torch.equal(w3, w2)  # the frozen epoch still trains
