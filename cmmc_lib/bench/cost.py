"""What the recipe costs: :func:`step_flops` counts a training step's floating-point operations
(MoCo's and CMMC's, on the meta device), :func:`recipe_cost` turns measured step times into the
GPU-hours of docs/method.md's two-stage recipe."""
from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..config import Config, preset
from ..models import build_backbone, build_encoder
from ..registry import MODALITIES

PAPER_TRAIN_VIDEOS = 9537                 # UCF101 split 1 training videos (data/README.md)


def step_flops(cfg: Config) -> dict:
    """Floating-point operations of one training step at ``cfg``'s shapes, counted by PyTorch's
    FlopCounterMode on the meta device (no memory, no arithmetic; convolutions and matrix
    products, which is nearly all of it). MoCo: the query encoder's forward and backward (no
    gradient into the input clip) and the key encoder's forward; CMMC adds the frozen source
    network's forward up to block ``ssl.layer_k`` (the first listed). Per step = per clip x batch."""
    m, d = cfg.model, cfg.data
    ch = MODALITIES[cfg.ssl.modality].channels
    och = MODALITIES[cfg.ssl.other_modality].channels
    with torch.device("meta"):
        enc = build_encoder(m.backbone, ch, m.width, m.proj_hidden, m.proj_dim)
        src = build_backbone(m.backbone, och, m.width)
    x = torch.empty(1, ch, d.clip_len, d.size, d.size, device="meta")
    with FlopCounterMode(display=False) as fc:
        enc(x).sum().backward()
    query = fc.get_total_flops()
    blocks, h = [], x
    with torch.no_grad():
        for block in enc.backbone.blocks:
            with FlopCounterMode(display=False) as fc:
                h = block(h)
            blocks.append(fc.get_total_flops())
        with FlopCounterMode(display=False) as fc:
            enc(x)
        key = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            src.forward_until(torch.empty(1, och, d.clip_len, d.size, d.size, device="meta"), cfg.ssl.layer_k[0])
        source = fc.get_total_flops()
    b = cfg.optim.batch_size
    return {"backbone": m.backbone, "clip": [d.clip_len, d.size, d.size], "batch": b, "layer_k": cfg.ssl.layer_k[0],
            "block_forward_gflops": [f / 1e9 for f in blocks],
            "per_clip_gflops": {"query_forward_backward": query / 1e9, "key_forward": key / 1e9,
                                "source_forward": source / 1e9},
            "moco_tflops_per_step": (query + key) * b / 1e12, "cmmc_tflops_per_step": (query + key + source) * b / 1e12,
            "cmmc_over_moco": (query + key + source) / (query + key)}


def recipe_cost(step_seconds: dict[str, float], train_videos: int = PAPER_TRAIN_VIDEOS, cfg: Config | None = None,
                gpus: Sequence[int] = (1, 4, 8), scaling: float = 0.9) -> dict:
    """GPU-hours of docs/method.md's recipe from measured step times (seconds per step at the
    config's global batch, on one GPU): stage 1 trains RGB and flow with ``schedule.stage1_method``
    for ``optim.epochs`` epochs each; stage 2 runs ``schedule.cycles`` cycles of CMMC, each
    network ``schedule.cycle_epochs`` epochs. ``step_seconds`` maps ``moco`` and ``cmmc`` (the
    stage-1 method falls back to ``moco``). Wall-clock hours on N GPUs assume ``scaling``
    efficiency per extra GPU (the global batch is split; 0.9 is a guess, measure it). The kNN
    monitor and evaluation are not counted."""
    cfg = cfg or preset("paper")
    steps_per_epoch = train_videos // cfg.optim.batch_size
    s1 = cfg.schedule.stage1_method
    t1 = step_seconds.get(s1, step_seconds.get("moco"))
    t2 = step_seconds.get(cfg.ssl.method if cfg.ssl.method != "moco" else "cmmc", step_seconds.get("cmmc"))
    if t1 is None or t2 is None:
        raise ValueError(f"recipe_cost needs step times for {s1} (or moco) and cmmc, got {sorted(step_seconds)}")
    mods = len(cfg.schedule.modalities)
    rows = [{"stage": "stage 1", "method": s1, "networks": mods, "epochs": cfg.optim.epochs,
             "steps": mods * cfg.optim.epochs * steps_per_epoch, "seconds_per_step": t1},
            {"stage": "stage 2", "method": "cmmc", "networks": mods,
             "epochs": cfg.schedule.cycles * cfg.schedule.cycle_epochs,
             "steps": mods * cfg.schedule.cycles * cfg.schedule.cycle_epochs * steps_per_epoch,
             "seconds_per_step": t2}]
    for r in rows:
        r["gpu_hours"] = r["steps"] * r["seconds_per_step"] / 3600
    total = sum(r["gpu_hours"] for r in rows)
    wall = {str(n): total / (1 + (n - 1) * scaling) for n in gpus}
    return {"train_videos": train_videos, "batch": cfg.optim.batch_size, "steps_per_epoch": steps_per_epoch,
            "stages": rows, "gpu_hours": total, "wall_hours_on": wall, "scaling": scaling}
