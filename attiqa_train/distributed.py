"""Single-process and ``torchrun`` (DDP) execution with one code path (docs/method.md, section 11).

Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is initialised with NCCL on
GPU and gloo on CPU; without a launcher everything runs in one process. Rank 0 alone
writes logs and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from attiqa_loss.checks import check_device

__all__ = ["DistInfo", "env_rank", "env_local_rank", "env_world_size", "single_process", "init_distributed", "cleanup_distributed", "barrier", "all_reduce_mean", "agree_across_ranks", "resolve_device"]


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``.

    Any other name must be a device this machine has: an unknown name, ``cuda``
    without CUDA or a GPU index beyond those present raises a one-line ``ValueError``
    (:func:`attiqa_loss.checks.check_device`)."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = check_device(name)
    if device.type == "cuda" and device.index is None:
        device = check_device(f"cuda:{local_rank}")
    return device


def env_rank() -> int:
    """This process's global rank as ``torchrun`` sets it (``RANK``; 0 without a launcher)."""
    return int(os.environ.get("RANK", "0"))


def env_local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``; 0 without a launcher)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def env_world_size() -> int:
    """The number of processes of the job (``WORLD_SIZE``; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def single_process(device: str = "auto") -> DistInfo:
    """A :class:`DistInfo` for work that one process does alone, even under ``torchrun``."""
    return DistInfo(rank=0, world_size=1, local_rank=0, device=resolve_device(device))


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise the process group if launched by torchrun; return rank, world size and device."""
    world_size, rank, local_rank = env_world_size(), env_rank(), env_local_rank()
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of ``value`` over ranks (identity in a single process)."""
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= dist.get_world_size()
    return value


def agree_across_ranks(ok: bool, device: Any = "cpu") -> bool:
    """True on every rank iff ``ok`` is true on every rank (identity in one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return ok
    flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())
