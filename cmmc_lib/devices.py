"""Which torch device a setting names: the one ``resolve_device`` of training, evaluation and
optical flow (``run.device``, ``--device``)."""
from __future__ import annotations

import os

import torch


def resolve_device(name: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` (or None): CUDA (device ``local_rank``) if available, else Apple's MPS, else the
    CPU; anything else as ``torch.device(name)``. A CUDA device on a machine without CUDA is a
    ValueError with a one-line message."""
    if name is None or str(name) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(name)!r} asked for, but CUDA is not available on this machine")
    return dev


def launch_rank() -> int:
    """This process's rank as ``torchrun`` sets it (``RANK``; 0 when not launched by it), readable
    before the process group exists: folder locks are taken by rank 0 alone."""
    return int(os.environ.get("RANK", "0"))
