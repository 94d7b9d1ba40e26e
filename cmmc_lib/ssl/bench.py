"""Training-step throughput of the MoCo baseline, for ``cmmc bench step``.

One step = query forward + backward, momentum update, key forward, contrast, loss, enqueue and
an Adam step: everything the training loop does per batch except loading data (the batch is
random and fixed).
"""
from __future__ import annotations

import statistics
import time

import torch

from ..models import build_encoder
from .moco import MoCo
from .methods import MoCoStep


def bench_step(backbone: str, width: int, batch: int, clip_shape: tuple[int, ...], steps: int = 10,
               warmup: int = 2, *, proj_hidden: int | None = None, proj_dim: int = 128,
               queue_size: int = 256, device: str = "cpu", threads: int | None = None,
               seed: int = 0) -> dict:
    """Time ``steps`` MoCo training steps after ``warmup`` untimed ones.

    Args:
        backbone: ``"small3d"`` | ``"s3d"`` | ``"stgcn"``.
        width: backbone width (ignored by S3D).
        batch: clips per step.
        clip_shape: one clip, (C, T, H, W) (stgcn: (C, T, V, M)); C sets the input channels.
        steps, warmup: timed and untimed steps.
        proj_hidden, proj_dim: projection head (hidden defaults to the backbone's feat_dim).
        queue_size: MoCo queue length.
        device: torch device string.
        threads: if given, ``torch.set_num_threads(threads)`` first.

    Returns:
        dict with ``seconds_per_step`` (the median over the timed steps: robust to a busy
        machine), ``steps_per_s`` and ``clips_per_s`` (query clips) derived from it,
        ``mean_seconds_per_step``, ``min_seconds_per_step``, the arguments, ``threads`` (in effect), ``params``
        (trainable, millions) and ``last_loss``.
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    dev = torch.device(device)
    encoder = build_encoder(backbone, clip_shape[0], width, proj_hidden, proj_dim)
    step = MoCoStep(MoCo(encoder, queue_size, 0.99, 0.07), "x").to(dev).train()
    params = [p for p in step.parameters() if p.requires_grad]
    optim = torch.optim.Adam(params, lr=1e-3)
    data = {"x": torch.randn(batch, 2, *clip_shape, device=dev)}

    def one_step() -> float:
        loss, _ = step.loss(data)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        step.after_step()
        return float(loss.detach())

    for _ in range(warmup):
        one_step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        last = one_step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"backbone": backbone, "width": width, "batch": batch, "clip_shape": tuple(clip_shape),
            "device": str(dev), "threads": torch.get_num_threads(), "steps": steps,
            "params": sum(p.numel() for p in params) / 1e6,
            "seconds_per_step": median, "steps_per_s": 1.0 / median,
            "clips_per_s": batch / median, "mean_seconds_per_step": sum(times) / steps,
            "min_seconds_per_step": min(times),
            "last_loss": last}
