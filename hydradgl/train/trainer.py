"""The training loop: optimizer, schedule, early stopping, checkpoints each epoch, NaN guard, DDP."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from hydradgl.config import RunConfig, TrainingConfig
from hydradgl.data.graphset import GraphSet, GraphView
from hydradgl.data.loader import BatchLoader
from hydradgl.data.normalize import Normalizer
from hydradgl.data.pipeline import PreparedData
from hydradgl.errors import DataError, TrainingError
from hydradgl.model.assembler import HydraModel
from hydradgl.model.heads import HeadDescription
from hydradgl.model.loss import MultiTaskLoss, head_target
from hydradgl.train.checkpoint import save_checkpoint
from hydradgl.train.ema import WeightAverage
from hydradgl.train.metrics import ErrorSums
from hydradgl.train.precise_bn import recompute_batch_norm
from hydradgl.train.runtime import Runtime, all_reduce_sum, broadcast_flag, broadcast_number
from hydradgl.train.seeding import rng_state, set_rng_state


@dataclass
class EarlyStopping:
    """Stops when the validation loss has not improved for ``patience`` epochs (None: never)."""

    patience: int | None
    best: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record an epoch's validation loss; True when it is the best so far."""
        if value < self.best:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience


def training_minutes(history: list[dict[str, float]]) -> float:
    """Minutes the epochs of ``history`` took (what ``training.max_minutes`` counts)."""
    return sum(row["seconds"] for row in history) / 60.0


def make_optimizer(training: TrainingConfig, params) -> torch.optim.Optimizer:
    """The optimizer of ``training.optimizer``, as torch's fused implementation where it has one for the
    parameters' device (the same update in one kernel over all parameters, several times faster than a
    loop over them); otherwise the default one."""
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    params = list(params)
    make = functools.partial(kinds[training.optimizer], params, lr=training.lr, weight_decay=training.weight_decay)
    try:
        return make(fused=True)
    except RuntimeError:  # torch without a fused kernel for this device (CPU: torch < 2.4)
        return make()


def make_scheduler(training: TrainingConfig, optimizer: torch.optim.Optimizer,
                   minutes: Callable[[], float] = lambda: 0.0):
    """The learning-rate schedule of ``training.lr_schedule`` (None for none), stepped once per epoch;
    ``minutes()``: the training minutes so far, for a cosine over the ``max_minutes`` budget."""
    if training.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=training.plateau_factor,
                                                          patience=training.plateau_patience)
    if training.lr_schedule == "cosine":
        final = training.cosine_final_factor

        def factor(epoch: int) -> float:  # reads training.epochs each call: a resume may extend it
            progress = epoch / training.epochs
            if training.max_minutes:
                progress = max(progress, minutes() / training.max_minutes)
            return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return None


def evaluate(model: HydraModel, cfg: RunConfig, graphs: GraphSet | GraphView, normalizer: Normalizer, runtime: Runtime,
             collect: bool = False, heads: list[HeadDescription] | None = None,
             ) -> tuple[dict[str, dict[str, float]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Metrics per head (default: every head of the model) over ``graphs`` (this rank's shard, reduced
    over ranks); optionally the (true, predicted) values in physical units, for plots."""
    if len(graphs) == 0:
        raise DataError(f"no structures to compute metrics on: the split is empty (split.fractions "
                        f"{list(cfg.split.fractions)}); a metric over nothing is not a score")
    heads = model.head_descriptions if heads is None else heads
    sums = ErrorSums(heads, normalizer, runtime.device, model.loss_units())
    loader = BatchLoader(graphs, cfg.training.batch_size, rank=runtime.rank, world_size=runtime.world_size, pad=False)
    pairs: dict[str, tuple[list, list]] = {h.name: ([], []) for h in heads}
    model.eval()
    with torch.no_grad():
        for batch in loader:
            batch = batch.to(runtime.device)
            preds = model(batch)
            sums.add(preds, batch)
            if collect:
                for h in heads:
                    true = head_target(batch, h.level, h.target)
                    pairs[h.name][0].append(normalizer.denormalize(h.target, true).cpu().numpy())
                    pairs[h.name][1].append(normalizer.denormalize(h.target, preds[h.name]).cpu().numpy())
    metrics = sums.reduce(runtime)
    values = {h: (np.concatenate(t), np.concatenate(p)) for h, (t, p) in pairs.items() if t}
    return metrics, values


class Trainer:
    """Trains ``model`` on ``data``; rank 0 writes ``last.pt``/``best.pt`` into ``run_dir`` every epoch."""

    def __init__(self, cfg: RunConfig, data: PreparedData, model: HydraModel, runtime: Runtime,
                 run_dir: Path | None, extra_state: dict[str, Any] | None = None):
        self.cfg, self.data, self.runtime, self.run_dir = cfg, data, runtime, run_dir
        self.model = model.to(runtime.device)
        self.net = DistributedDataParallel(self.model) if runtime.distributed else self.model
        self.loss = MultiTaskLoss(model.head_descriptions, self.model.loss_units)
        self.normalizer = Normalizer.from_info(data.info)
        t = cfg.training
        self.averaged = WeightAverage(self.model, t.ema_decay) if t.ema_decay else None
        self.optimizer = make_optimizer(t, self.model.parameters())
        self.history: list[dict[str, float]] = []
        self.scheduler = make_scheduler(t, self.optimizer, lambda: training_minutes(self.history))
        self.early = EarlyStopping(t.patience)
        self.loader = BatchLoader(data.train, t.batch_size, shuffle=True, seed=t.seed,
                                  rank=runtime.rank, world_size=runtime.world_size)
        self.epoch = 0  # epochs completed
        self.extra_state = extra_state or {}
        self.out_of_time = False  # stopped by training.max_minutes

    @property
    def evaluated(self) -> HydraModel:
        """The model validation, checkpoints' ``model`` and the test see: the weight average when
        ``training.ema_decay`` is set, else the trained model itself."""
        return self.averaged.model if self.averaged else self.model

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        averaging = ({"trained_model": self.model.state_dict(), "ema": self.averaged.state_dict()}
                     if self.averaged else {})
        return {
            "config": self.cfg.model_dump(mode="json"), "info": self.data.info.model_dump(),
            "model": self.evaluated.state_dict(), **averaging, "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "early_stopping": asdict(self.early), "epoch": self.epoch, "history": self.history,
            "rng": rng_state(), **self.extra_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["trained_model"] if self.averaged else state["model"])
        if self.averaged:
            self.averaged.load_state_dict(state["ema"], state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        self.early = EarlyStopping(**state["early_stopping"])
        self.epoch, self.history = state["epoch"], list(state["history"])
        set_rng_state(state["rng"])

    def _save(self, name: str) -> None:
        if self.run_dir is not None and self.runtime.is_main:
            save_checkpoint(self.run_dir / name, self.state_dict())

    # -- loop ------------------------------------------------------------------------------------
    def train_epoch(self, progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, float], int]:
        """One pass over this rank's shard; mean batch loss per head (over all ranks) and graphs seen."""
        names = [h.name for h in self.model.head_descriptions]
        sums = torch.zeros(len(names) + 2, dtype=torch.float64, device=self.runtime.device)
        self.loader.set_epoch(self.epoch)
        self.net.train()
        graphs = 0
        for i, batch in enumerate(self.loader):
            batch = batch.to(self.runtime.device)
            total, parts = self.loss(self.net(batch), batch)
            if not torch.isfinite(total):
                where = f"{self.run_dir / 'last.pt'}" if self.run_dir else "none (no run directory)"
                raise TrainingError(f"non-finite loss ({float(total.detach())}) at epoch {self.epoch + 1}, "
                                    f"batch {i + 1}: training stopped. Last good checkpoint: {where}")
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            if self.cfg.training.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.training.grad_clip)
            self.optimizer.step()
            if self.averaged:
                self.averaged.update(self.model)
            sums += torch.stack([total.detach(), *(parts[n].detach() for n in names),
                                 torch.ones((), device=total.device)]).double()
            graphs += batch.num_graphs
            if progress:
                progress(i + 1, len(self.loader))
        totals = all_reduce_sum(sums, self.runtime).cpu().tolist()
        batches = max(totals[-1], 1.0)
        losses = {"loss": totals[0] / batches, **{n: v / batches for n, v in zip(names, totals[1:-1])}}
        return losses, graphs * self.runtime.world_size

    def fit(self, on_epoch: Callable[[dict[str, float]], None] | None = None,
            progress: Callable[[int, int], None] | None = None) -> None:
        """Train until the configured epochs, early stopping or the time budget; checkpoints after every epoch."""
        budget = self.cfg.training.max_minutes
        while self.epoch < self.cfg.training.epochs and not self.early.should_stop:
            start = time.perf_counter()
            train, graphs = self.train_epoch(progress)
            train_seconds = time.perf_counter() - start
            if self.averaged:
                self.averaged.copy_buffers(self.model)
            if self.cfg.training.precise_bn_graphs:
                recompute_batch_norm(self.evaluated, self.data.train, self.cfg.training.precise_bn_graphs,
                                     self.cfg.training.batch_size, self.runtime)
            val, _ = evaluate(self.evaluated, self.cfg, self.data.val, self.normalizer, self.runtime)
            val_total = sum(h.weight * val[h.name]["loss"] for h in self.model.head_descriptions)
            self.epoch += 1
            improved = self.early.update(val_total, self.epoch)
            seconds = broadcast_number(time.perf_counter() - start, self.runtime)  # one budget clock for all ranks
            row = {"epoch": self.epoch, "train_loss": train["loss"], "val_loss": val_total,
                   **{f"train_{n}_loss": train[n] for n in val}, **{f"val_{n}_loss": val[n]["loss"] for n in val},
                   **{f"val_{n}_rmse": val[n]["rmse"] for n in val},
                   "lr": self.optimizer.param_groups[0]["lr"], "seconds": seconds, "train_seconds": train_seconds,
                   "graphs_per_s": graphs / train_seconds}
            self.history.append(row)
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(val_total)
            elif self.scheduler:  # after the row: a cosine over max_minutes counts this epoch's time
                self.scheduler.step()
            row["lr"] = self.optimizer.param_groups[0]["lr"]  # the next epoch's, as the schedule set it
            if improved:
                self._save("best.pt")
            self._save("last.pt")
            if on_epoch:
                on_epoch(row)
            self.out_of_time = budget is not None and training_minutes(self.history) >= budget
            # Every rank follows rank 0's stopping decision (identical anyway for early stopping: metrics are
            # reduced; the clock may differ).
            stop = broadcast_flag(self.early.should_stop or self.out_of_time, self.runtime)
            self.out_of_time = stop and not self.early.should_stop
            if stop:
                break
