"""Where a run executes: device choice, torch.distributed (torchrun) setup, cross-rank reductions."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hydradgl.config import TrainingConfig
from hydradgl.dglcompat import dgl_has_cuda
from hydradgl.errors import TrainingError

CUDA_DGL_HELP = (
    "The installed DGL has no CUDA support (the PyPI wheels are CPU-only). Install a CUDA build of DGL "
    "from DGL's own wheel host with a matching torch <= 2.4 (steps in docs/install.md, 'GPU'), "
    "or run with --device cpu."
)


@dataclass(frozen=True)
class Runtime:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """``auto``: this process's GPU when torch and DGL both have CUDA, else the CPU; ``cuda`` is checked."""
    if requested == "cpu":
        return torch.device("cpu")
    cuda_ok = torch.cuda.is_available() and dgl_has_cuda()
    if requested == "auto":
        return torch.device(f"cuda:{local_rank}") if cuda_ok else torch.device("cpu")
    if not torch.cuda.is_available():
        raise TrainingError(f"device {requested!r} requested but this torch build sees no CUDA device "
                            f"(torch {torch.__version__}). " + CUDA_DGL_HELP)
    if not dgl_has_cuda():
        raise TrainingError(f"device {requested!r} requested. " + CUDA_DGL_HELP)
    return torch.device(requested if ":" in requested else f"cuda:{local_rank}")


def setup_runtime(training: TrainingConfig) -> Runtime:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA."""
    if training.threads:
        torch.set_num_threads(training.threads)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(training.device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return Runtime(rank, world_size, local_rank, device)


def teardown_runtime(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Sum over ranks (in place); a no-op in a single process."""
    if runtime.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_flag(flag: bool, runtime: Runtime) -> bool:
    """Rank 0's decision, seen by every rank (e.g. early stopping)."""
    if not runtime.distributed:
        return flag
    t = torch.tensor([1 if flag else 0], device=runtime.device)
    dist.broadcast(t, src=0)
    return bool(t.item())
