"""The flow of one frame pair by each method side by side, with each method's time per field:
for a lesson's figure (``notebooks/01_cutmix_volumes.ipynb``)."""
from __future__ import annotations

import time
from typing import Sequence

import cv2
import numpy as np

from ..devices import resolve_device
from .estimators import FLOW_METHODS, TORCH_FLOW_METHODS, make_flow_estimator
from .frames import to_grey
from .tvl1 import tvl1_flow_pairs


def compare_flow_methods(frames: np.ndarray, methods: Sequence[str] | None = None,
                         pair: int = 0, repeats: int = 3, device: str | None = "cpu",
                         size: tuple[int, int] | None = None, threads: int = 1) -> dict:
    """The flow of one frame pair by each method, and each method's time per field: for a
    lesson's side-by-side figure.

    frames: uint8 (N, H, W, 3) RGB or (N, H, W) grey, N >= 2, resized to ``size`` (H, W) if
    given (e.g. (240, 320), UCF101's size: timings on tiny frames measure overheads);
    ``pair``: the pair ``(pair, pair + 1)`` shown. Time: CPU seconds per field with ``threads``
    threads for OpenCV and PyTorch (restored after; 1: per core, robust to other load), or
    wall-clock seconds for ``tvl1-torch`` on CUDA; the mean over ``repeats`` consecutive pairs
    from ``pair``, after one warm-up call. Returns ``{"pair": pair, "size": [H, W], "frame":
    uint8 RGB or grey of frame ``pair`` (resized), "methods": {m: {"flow": float32 (H, W, 2) px,
    "seconds_per_field": s}}}``. Draw the fields with :func:`cmmc_lib.viz.flow_to_rgb` (stacked
    as one clip, they share one colour scale) and its legend :func:`cmmc_lib.viz.draw_flow_wheel`.
    """
    frames = np.asarray(frames)
    if size is not None and frames.shape[1:3] != tuple(size):
        frames = np.stack([cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_AREA)
                           for f in frames])
    grey = to_grey(frames)
    if len(grey) < 2 or not 0 <= pair < len(grey) - 1:
        raise ValueError(f"need frames and a pair index in [0, {len(grey) - 2}], got {pair}")
    methods = list(methods or FLOW_METHODS)
    out = {"pair": pair, "size": list(grey.shape[1:]), "frame": frames[pair], "methods": {}}
    stop = min(len(grey) - 1, pair + max(repeats, 1))
    old = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        for m in methods:
            on_gpu = m in TORCH_FLOW_METHODS and resolve_device(device).type == "cuda"
            if m in TORCH_FLOW_METHODS:
                run = lambda a, b: tvl1_flow_pairs(a[None], b[None], device=device,  # noqa: E731
                                                   threads=threads)[0]
            else:
                run = make_flow_estimator(m, short_side=min(grey.shape[1:]))
            run(grey[pair], grey[pair + 1])                                   # warm-up
            clock = time.perf_counter if on_gpu else time.process_time
            t0 = clock()
            flows = [run(grey[t], grey[t + 1]) for t in range(pair, stop)]
            out["methods"][m] = {"flow": flows[0], "seconds_per_field": (clock() - t0) / len(flows)}
    finally:
        cv2.setNumThreads(old)
    return out
