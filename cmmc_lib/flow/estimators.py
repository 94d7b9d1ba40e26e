"""Dense optical flow of a video's frames, by one of :data:`FLOW_METHODS`.

Conventions (the TSN / denseflow / CoCLR ones, see ``data/README.md``):

* Flow is computed on **greyscale** frames, in **pixels** of the frame it was computed on;
  channel 0 is x (horizontal, + to the right), channel 1 is y (vertical, + downwards).
* **Frame-aligned**: for N decoded frames there are N flow fields. Field ``t`` (0-based) is
  the motion from frame ``t`` to frame ``t + 1``; the last field duplicates field ``N - 2``
  (a video of a single frame gets one zero field). So ``flow[t]`` sits beside ``rgb[t]`` and a
  clip of frames ``[s, s + T)`` reads flow ``[s, s + T)``.
* TV-L1 (``cv2.optflow.DualTVL1OpticalFlow_create()`` with OpenCV's default parameters, as
  denseflow and TSN's dense_flow use them) is the paper's method; DIS (medium preset, refined to
  full resolution on frames whose short side is under 128 px) and Farneback (OpenCV's sample
  parameters) are the fast alternatives.
* ``tvl1-torch`` is the same TV-L1 (OpenCV's algorithm and defaults) in PyTorch
  (:mod:`cmmc_lib.flow.tvl1`): batched over frame pairs, on CPU or CUDA (``device``,
  ``batch_size``), about 4x OpenCV's speed per CPU core at the same accuracy. It is imported on
  first use: torch takes about 3 s to import, which the OpenCV methods (and each of their
  worker processes) need not pay.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from .frames import to_grey

FLOW_METHODS = ("tvl1", "dis", "farneback", "tvl1-torch")
TORCH_FLOW_METHODS = ("tvl1-torch",)   # the methods that take a device and a batch size

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def make_flow_estimator(method: str = "tvl1", short_side: int | None = None,
                        device: str | None = None) -> FlowFn:
    """A function ``(prev_grey, next_grey) uint8 (H, W) -> float32 (H, W, 2)`` flow in px.

    ``short_side``: the frames' short side (px). DIS's medium preset stops at half resolution
    (finest scale 1); below 128 px that loses 2-px-wide limbs, so small frames are refined down
    to full resolution (finest scale 0). ``device``: for ``tvl1-torch`` only (None: CPU). One
    pair per call; :func:`compute_flow` batches ``tvl1-torch`` over a video's pairs.
    """
    check_flow_options(method, device, None)
    if method == "tvl1-torch":
        tvl1_flow_pairs = torch_tvl1()
        return lambda a, b: tvl1_flow_pairs(a[None], b[None], device=device or "cpu")[0]
    if method == "tvl1":
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
        return lambda a, b: tvl1.calc(a, b, None)
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        if short_side is not None and short_side < 128:
            dis.setFinestScale(0)
        return lambda a, b: dis.calc(a, b, None)
    # farneback, OpenCV's sample parameters: pyr_scale, levels, winsize, iterations, poly_n, poly_sigma
    return lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def compute_flow(frames: np.ndarray, method: str = "tvl1", device: str | None = None,
                 batch_size: int | None = None) -> np.ndarray:
    """Frame-aligned dense flow of a video.

    frames: uint8 (N, H, W, 3) RGB (or (N, H, W) grey), N >= 1.
    device, batch_size: ``tvl1-torch`` only: where it runs (None: CPU; "auto": CUDA, else MPS,
    else CPU: :func:`cmmc_lib.devices.resolve_device`) and how many frame pairs go through it at once (None: 1 on CPU, 32 on CUDA).
    Returns float32 (N, H, W, 2) in px: ``flow[t]`` = motion t -> t+1, last one duplicated.
    """
    check_flow_options(method, device, batch_size)
    grey = to_grey(frames)
    if len(grey) == 0:
        raise ValueError("compute_flow needs at least one frame, got 0")
    n, h, w = grey.shape
    out = np.zeros((n, h, w, 2), np.float32)
    if n == 1:
        return out
    if method in TORCH_FLOW_METHODS:
        out[:n - 1] = torch_tvl1()(grey[:-1], grey[1:], device=device or "cpu", batch_size=batch_size)
    else:
        estimate = make_flow_estimator(method, short_side=min(h, w))
        for t in range(n - 1):
            out[t] = estimate(grey[t], grey[t + 1])
    out[n - 1] = out[n - 2]
    return out


def torch_tvl1():
    """:func:`cmmc_lib.flow.tvl1.tvl1_flow_pairs`, imported on first use (see the module
    docstring: torch's import time)."""
    from .tvl1 import tvl1_flow_pairs          # torch: ~3 s to import, for tvl1-torch only
    return tvl1_flow_pairs


def check_flow_options(method: str, device, batch_size) -> None:
    """A known method; ``device`` and ``batch_size`` only for the PyTorch methods (OpenCV's run
    on the CPU, one pair at a time). ValueError otherwise."""
    if method not in FLOW_METHODS:
        raise ValueError(f"unknown flow method {method!r}; choose one of {', '.join(FLOW_METHODS)}")
    if method in TORCH_FLOW_METHODS:
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ValueError(f"batch_size must be an integer >= 1 (or None), got {batch_size!r}")
        return
    if device not in (None, "auto", "cpu") and str(device) != "cpu":
        raise ValueError(f"flow method {method!r} runs on the CPU (OpenCV); device={device!r} "
                         f"is for {', '.join(TORCH_FLOW_METHODS)}")
    if batch_size is not None:
        raise ValueError(f"batch_size is for {', '.join(TORCH_FLOW_METHODS)}; {method!r} computes "
                         f"one frame pair at a time")
