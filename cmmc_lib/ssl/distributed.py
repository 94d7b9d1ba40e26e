"""The few ``torch.distributed`` calls MoCo needs, as no-ops in a single process.

Nothing here initialises a process group; under ``torchrun`` the training loop does, and
these functions then see it.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a process group is initialised (and has more than zero members)."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the default group; 1 without torch.distributed."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank in the default group; 0 without torch.distributed."""
    return dist.get_rank() if is_distributed() else 0


@torch.no_grad()
def concat_all_gather(t: Tensor) -> Tensor:
    """Concatenate ``t`` (B, ...) from every rank along dim 0 -> (world_size * B, ...),
    in rank order, WITHOUT gradient (for keys). Every rank must pass the same shape.

    Single process: returns ``t.detach()``.
    """
    if world_size() == 1:
        return t.detach()
    gathered = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(gathered, t.contiguous())
    return torch.cat(gathered, dim=0)
