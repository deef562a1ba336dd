"""torch.distributed helpers: start-up under torchrun, and sums across processes."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["init_distributed", "is_distributed", "rank_and_world", "all_reduce_sum", "barrier"]


def init_distributed(device: str = "cpu") -> tuple[int, int]:
    """Join the process group when launched by torchrun (NCCL for CUDA devices, else gloo).

    Returns:
        ``(rank, world_size)``; ``(0, 1)`` for a plain single-process run.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if str(device).startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(values: list[float], device: str | torch.device = "cpu") -> list[float]:
    """Sum plain numbers over all processes (identity when not distributed)."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier() -> None:
    if is_distributed():
        dist.barrier()
