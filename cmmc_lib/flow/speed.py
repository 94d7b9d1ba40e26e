"""How fast each flow method is: fields per second at 320x240 per method (OpenCV's on the CPU,
``tvl1-torch`` per batch size on a CPU or a GPU), what ``cmmc bench flow`` prints."""
from __future__ import annotations

import math
import platform
import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from ..devices import resolve_device
from .estimators import FLOW_METHODS, TORCH_FLOW_METHODS, check_flow_options, make_flow_estimator
from .frames import grey_frames, to_grey
from .tvl1 import default_batch_size, tvl1_flow_pairs


def measure_flow_fps(frames: np.ndarray, method: str = "tvl1", pairs: int = 10,
                     threads: int = 1, device: str | None = None,
                     batch_size: int | None = None) -> dict:
    """Flow fields per second for ``method`` on ``frames`` (uint8 (N, H, W, 3), N >= 2), with
    OpenCV (and PyTorch, on the CPU) limited to ``threads`` threads (restored afterwards).
    Returns a JSON-able dict with ``fps`` (wall clock) and ``fps_per_cpu_second`` (fields per
    second of this process's CPU time: the per-core figure, robust to other processes sharing
    the machine; None on CUDA).

    ``tvl1-torch`` also takes ``device`` and ``batch_size``: it times ``max(pairs, batch_size)``
    pairs rounded up to whole batches, taking the video's consecutive pairs in turn (cycling
    if the video is short), after one warm-up batch (which compiles, on CUDA), and adds
    ``iterations_per_field`` (TV-L1 iterations summed over the pyramid levels).
    """
    grey = to_grey(frames)
    if len(grey) < 2:
        raise ValueError("measure_flow_fps needs at least 2 frames")
    check_flow_options(method, device, batch_size)
    if method in TORCH_FLOW_METHODS:
        return _measure_torch_fps(grey, method, pairs, threads, device, batch_size)
    pairs = min(pairs, len(grey) - 1)
    old = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        estimate = make_flow_estimator(method, short_side=min(grey.shape[1:]))
        estimate(grey[0], grey[1])                     # warm-up (allocations)
        t0, c0 = time.perf_counter(), time.process_time()
        for t in range(pairs):
            estimate(grey[t], grey[t + 1])
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        cv2.setNumThreads(old)
    return {"method": method, "pairs": pairs, "height": int(grey.shape[1]),
            "width": int(grey.shape[2]), "threads": threads, "seconds": round(seconds, 4),
            "cpu_seconds": round(cpu, 4), "fps": round(pairs / seconds, 3),
            "fps_per_cpu_second": round(pairs / max(cpu, 1e-9), 3)}


def _measure_torch_fps(grey: np.ndarray, method: str, pairs: int, threads: int,
                       device: str | None, batch_size: int | None) -> dict:
    dev = resolve_device(device)
    b = default_batch_size(dev) if batch_size is None else batch_size
    batches = max(1, math.ceil(pairs / b))
    available = len(grey) - 1
    index = [np.arange(k * b, (k + 1) * b) % available for k in range(batches + 1)]
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    stats: dict = {}
    tvl1_flow_pairs(grey[index[0]], grey[index[0] + 1], device=dev, batch_size=b,
                    threads=threads)                                             # warm-up
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    for k in range(1, batches + 1):
        tvl1_flow_pairs(grey[index[k]], grey[index[k] + 1], device=dev, batch_size=b,
                        stats=stats, threads=threads)
    sync()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    fields = batches * b
    return {"method": method, "pairs": fields, "height": int(grey.shape[1]),
            "width": int(grey.shape[2]), "threads": threads if dev.type == "cpu" else None,
            "device": str(dev), "batch_size": b, "seconds": round(seconds, 4),
            "cpu_seconds": round(cpu, 4), "fps": round(fields / seconds, 3),
            "fps_per_cpu_second": round(fields / max(cpu, 1e-9), 3) if dev.type == "cpu" else None,
            "iterations_per_field": round(stats.get("iterations", 0) / fields, 1)}

def _device_name(device) -> str:
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return platform.processor() or platform.machine()


def bench_flow(videos: Sequence[str | Path], methods: Sequence[str] | None = None,
               device: str | None = None, batch_sizes: Sequence[int] | None = None,
               pairs: int = 8, threads: int = 1, size: tuple[int, int] = (240, 320)) -> dict:
    """Fields per second of each flow method at ``size`` (H, W; default 320x240) on consecutive
    frames of ``videos[0]`` (resized if needed): what ``cmmc bench flow`` prints.

    OpenCV's methods run on the CPU with ``threads`` threads (1: the per-core figure);
    ``tvl1-torch`` runs on ``device`` (None/"auto": CUDA, else MPS, else CPU) once per batch size in
    ``batch_sizes`` (default 1, 2, 4, 8 on CPU; 1 to 64 in powers of two on CUDA), with
    ``threads`` PyTorch threads on the CPU. Returns a JSON-able dict: ``methods`` (one
    :func:`measure_flow_fps` dict per OpenCV method), ``tvl1_torch`` (``by_batch_size``:
    str(batch size) -> dict, ``best_batch_size``, ``best_fps``, ``best_fps_per_cpu_second``),
    ``speedup_per_core_vs_opencv_tvl1`` (CPU only, when both ran) and the set-up (device and
    its name, versions, size, video).
    """
    if not videos:
        raise ValueError("bench_flow needs at least one video")
    methods = list(methods or FLOW_METHODS)
    for m in methods:
        check_flow_options(m, None, None)
    dev = resolve_device(device)
    if batch_sizes is None:
        batch_sizes = (1, 2, 4, 8) if dev.type == "cpu" else (1, 2, 4, 8, 16, 32, 64)
    need = max([pairs, *batch_sizes]) + 1
    grey = grey_frames(videos[0], size, count=need)
    if len(grey) < 2:
        raise ValueError(f"{videos[0]} has fewer than 2 frames")
    result = {"video": str(videos[0]), "height": int(grey.shape[1]), "width": int(grey.shape[2]),
              "pairs": pairs, "threads": threads, "device": str(dev),
              "device_name": _device_name(dev), "torch": torch.__version__,
              "opencv": cv2.__version__, "methods": {}}
    for m in methods:
        if m in TORCH_FLOW_METHODS:
            runs = {str(b): measure_flow_fps(grey, m, pairs=pairs, threads=threads, device=str(dev),
                                             batch_size=b) for b in batch_sizes}
            best = max(runs, key=lambda b: runs[b]["fps"])
            result["tvl1_torch"] = {"by_batch_size": runs, "best_batch_size": int(best),
                                    "best_fps": runs[best]["fps"],
                                    "best_fps_per_cpu_second": max(
                                        (r["fps_per_cpu_second"] or 0) for r in runs.values()) or None}
        else:
            result["methods"][m] = measure_flow_fps(grey, m, pairs=pairs, threads=threads)
    if dev.type == "cpu" and "tvl1" in result["methods"] and "tvl1_torch" in result:
        result["speedup_per_core_vs_opencv_tvl1"] = round(
            result["tvl1_torch"]["best_fps_per_cpu_second"]
            / result["methods"]["tvl1"]["fps_per_cpu_second"], 2)
    return result
