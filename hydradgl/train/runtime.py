"""Where a run executes: device choice, torch.distributed (torchrun) setup, cross-rank reductions."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.distributed as dist

from hydradgl.allocator import keep_freed_memory
from hydradgl.config import TrainingConfig
from hydradgl.dglcompat import dgl_has_cuda
from hydradgl.errors import PluginError, TrainingError

if TYPE_CHECKING:
    from hydradgl.ops import Backend

CUDA_TORCH_HELP = (
    "Install a CUDA build of torch (https://pytorch.org/get-started/locally/; steps in docs/install.md, 'GPU'), "
    "or run with --device cpu."
)
CUDA_DGL_HELP = (
    "The installed DGL has no CUDA support (the PyPI wheels are CPU-only): install a CUDA build of DGL from "
    "DGL's own wheel host with a matching torch <= 2.4 (docs/install.md, 'GPU'), or train on the torch kernels "
    "(training.kernels: torch or auto), or run with --device cpu."
)
#: The kernel paths of hydradgl.ops (repeated here so this module does not import DGL's ops).
KERNEL_PATHS: tuple[Backend, ...] = ("dgl", "torch")


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


def dgl_serves(device: torch.device) -> bool:
    """Whether the installed DGL can run its kernels on ``device`` (the CPU always; CUDA with a CUDA DGL)."""
    return device.type == "cpu" or (device.type == "cuda" and dgl_has_cuda())


def resolve_device(requested: str, local_rank: int = 0, kernels: str = "auto") -> torch.device:
    """``auto``: this process's GPU when torch sees one (and the kernels can run there), else the CPU;
    ``cuda``/``cuda:N`` is checked against the torch build."""
    if requested == "cpu":
        return torch.device("cpu")
    gpu = torch.device(f"cuda:{local_rank}")
    if requested == "auto":
        if not (torch.cuda.is_available() and (kernels != "dgl" or dgl_serves(gpu))):
            return torch.device("cpu")
    elif not torch.cuda.is_available():
        raise TrainingError(f"device {requested!r} requested but this torch build sees no CUDA device "
                            f"(torch {torch.__version__}). " + CUDA_TORCH_HELP)
    device = torch.device(requested) if ":" in requested else gpu
    count = torch.cuda.device_count()
    if device.index >= count:
        if ":" in requested:
            why, fix = f"device {requested!r} names {device}", f"name one of cuda:0 .. cuda:{count - 1}"
        else:
            why = f"device {requested!r} in the process with LOCAL_RANK {local_rank} means {device}"
            fix = f"start at most {count} process(es) per node (torchrun --nproc-per-node {count})"
        raise TrainingError(f"{why}, but torch sees {count} CUDA device(s) here: {fix}, or use --device cpu.")
    return device


def resolve_kernels(requested: Literal["auto", "dgl", "torch"], device: torch.device,
                    plugins: Mapping[str, Sequence[str]] | None = None) -> Backend:
    """The kernel path a model runs on ``device``: ``requested`` (``auto``, ``dgl`` or ``torch``) checked
    against what DGL can serve there and against the paths each plugin declares (``plugins``: label,
    e.g. ``conv plugin 'pna'``, to its ``kernels``). ``auto`` prefers dgl, else torch, so that every
    plugin is served."""
    plugins = plugins or {}
    for label, paths in plugins.items():
        unknown = [p for p in paths if p not in KERNEL_PATHS]
        if unknown or not paths:
            raise PluginError(f"{label} declares kernels={tuple(paths)!r}; expected a non-empty tuple of "
                              f"{', '.join(map(repr, KERNEL_PATHS))}")
    if requested == "dgl" and not dgl_serves(device):
        raise TrainingError(f"training.kernels is 'dgl' but DGL cannot run on {device}. " + CUDA_DGL_HELP)
    if requested == "auto":
        candidates = [p for p in KERNEL_PATHS if p != "dgl" or dgl_serves(device)]
        usable = [p for p in candidates if all(p in paths for paths in plugins.values())]
        path = usable[0] if usable else candidates[0]
    else:
        path = requested
    for label, paths in plugins.items():
        if path not in paths:
            if path == "dgl":
                fix = "set training.kernels to auto (or torch)"
            elif dgl_serves(device):
                fix = "set training.kernels to auto (or dgl)"
            else:
                fix = (f"install a CUDA build of DGL (torch <= 2.4, docs/install.md 'GPU') so the dgl kernels "
                       f"run on {device}, or train on the CPU (--device cpu)")
            raise PluginError(f"{label} does not support the {path} kernel path used on {device} (it declares "
                              f"kernels={tuple(paths)!r}): {fix}; or ask the plugin's author to support both "
                              "paths (docs/plugins.md, 'Kernel paths').")
    return path


def setup_runtime(training: TrainingConfig) -> Runtime:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA.
    Also keeps freed memory in the process (:mod:`hydradgl.allocator`)."""
    keep_freed_memory()
    if training.threads:
        torch.set_num_threads(training.threads)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(training.device, local_rank, training.kernels)
    resolve_kernels(training.kernels, device)  # fail now, not after data preparation
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


def broadcast_number(value: float, runtime: Runtime) -> float:
    """Rank 0's value, seen by every rank (e.g. an epoch's seconds, which each rank's clock measures
    differently: a schedule over the time budget must set the same learning rate on every rank)."""
    if not runtime.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=runtime.device)
    dist.broadcast(t, src=0)
    return float(t.item())


def broadcast_flag(flag: bool, runtime: Runtime) -> bool:
    """Rank 0's decision, seen by every rank (e.g. early stopping)."""
    return bool(broadcast_number(1.0 if flag else 0.0, runtime))
