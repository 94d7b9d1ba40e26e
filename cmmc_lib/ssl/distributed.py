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


@torch.no_grad()
def shuffle_across_ranks(x: Tensor) -> tuple[Tensor, Tensor]:
    """MoCo's shuffle-BN across processes: this rank's share of the whole batch, shuffled.

    ``x`` (B, ...) is this rank's batch. Every rank gathers the whole batch (world * B, ...),
    rank 0 draws one permutation and broadcasts it, and each rank keeps its B rows of the
    shuffled batch, so BatchNorm in the key encoder normalises a key with samples of other ranks
    (its query's statistics never meet its own key). Returns ``(x_shuffled_local, unshuffle)``;
    give the keys and ``unshuffle`` to :func:`unshuffle_across_ranks`.

    Single process: ``(x, arange(B))``.
    """
    if world_size() == 1:
        return x, torch.arange(x.shape[0], device=x.device)
    x_all = concat_all_gather(x)
    order = torch.randperm(x_all.shape[0], device=x.device)
    dist.broadcast(order, src=0)
    b = x.shape[0]
    return x_all[order[rank() * b:(rank() + 1) * b]], torch.argsort(order)


@torch.no_grad()
def unshuffle_across_ranks(y: Tensor, unshuffle: Tensor) -> Tensor:
    """Undo :func:`shuffle_across_ranks` on its outputs: gather every rank's (B, ...) rows and
    keep this rank's original B samples, in their original order."""
    if world_size() == 1:
        return y[unshuffle]
    y_all = concat_all_gather(y)
    b = y.shape[0]
    return y_all[unshuffle[rank() * b:(rank() + 1) * b]]
