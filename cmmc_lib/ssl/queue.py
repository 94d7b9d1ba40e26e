"""The queue every contrastive method keeps: aligned ring buffers written at one pointer.

MoCo keeps its past keys (Q, dim); CoCLR keeps, row for row beside them, the other modality's
embedding of each key's clip, its source video and its label. :func:`ring_write` writes a batch
into any number of such buffers at the same rows and returns where the next batch goes.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


@torch.no_grad()
def ring_write(buffers: Sequence[Tensor], values: Sequence[Tensor], ptr: int) -> int:
    """Write ``values[i]`` (N, ...) into ``buffers[i]`` (Q, ...) from row ``ptr`` on, wrapping
    around the end; returns the next pointer ``(ptr + N) % Q``.

    Any Q works (not only multiples of N). When N > Q only the last Q rows survive, exactly as if
    the batch had been written row by row. Q = 0: nothing is written and 0 is returned.
    """
    if len(buffers) != len(values) or not buffers:
        raise ValueError(f"need one value tensor per buffer, got {len(values)} for {len(buffers)}")
    q_len, n = buffers[0].shape[0], values[0].shape[0]
    if any(b.shape[0] != q_len for b in buffers) or any(v.shape[0] != n for v in values):
        raise ValueError("the buffers must share their length and the values their batch size")
    if q_len == 0:
        return 0
    if n > q_len:                              # older rows would be overwritten anyway
        ptr = (ptr + n - q_len) % q_len
        values, n = [v[n - q_len:] for v in values], q_len
    rows = (ptr + torch.arange(n, device=buffers[0].device)) % q_len
    for buffer, value in zip(buffers, values):
        buffer.index_copy_(0, rows.to(buffer.device), value.detach().to(buffer.device, buffer.dtype))
    return (ptr + n) % q_len
