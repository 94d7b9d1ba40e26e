"""Ground truth for optical flow: real frames warped with a known smooth flow, and the
end-point error that scores an estimate against it (the accuracy studies of
:mod:`cmmc_lib.flow.accuracy`, the GPU check and the tests)."""
from __future__ import annotations

import math

import cv2
import numpy as np


def smooth_flow_field(height: int, width: int, kind: str = "sinusoids", max_px: float = 4.0,
                      seed: int = 0) -> np.ndarray:
    """A smooth synthetic flow field, float32 (H, W, 2) in px, max magnitude ``max_px``.

    kind: "sinusoids" (a sum of three low-frequency plane waves per component, periods of 0.5
    to 2 frame sizes) or "affine" (translation + rotation + zoom about a random centre).
    """
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    if kind == "sinusoids":
        f = np.zeros((height, width, 2))
        for c in range(2):
            for _ in range(3):
                period = rng.uniform(0.5, 2.0) * max(height, width)
                angle = rng.uniform(0, 2 * np.pi)
                phase = rng.uniform(0, 2 * np.pi)
                f[..., c] += rng.uniform(0.5, 1.0) * np.sin(
                    2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / period + phase)
    elif kind == "affine":
        cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
        rot, zoom = rng.uniform(-1, 1) * 0.02, rng.uniform(-1, 1) * 0.02
        tx, ty = rng.uniform(-1, 1, 2)
        dx, dy = xs - cx, ys - cy
        f = np.stack([tx + zoom * dx - rot * dy, ty + zoom * dy + rot * dx], -1)
    else:
        raise ValueError(f"unknown flow field kind {kind!r}; choose sinusoids or affine")
    f *= max_px / max(np.abs(np.linalg.norm(f, axis=-1)).max(), 1e-9)
    return f.astype(np.float32)


def warp_pair(frame: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A frame pair with known flow: ``(i0, i1)`` uint8 (H, W), ``i1 = frame`` and
    ``i0(x) = frame(x + flow(x))`` (bicubic, rounded), so the true flow of (i0, i1) is ``flow``
    ((H, W, 2) px). Pixels whose ``x + flow(x)`` leaves the frame are not meaningful: see
    :func:`valid_mask`."""
    h, w = frame.shape
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    i0 = cv2.remap(frame.astype(np.float32), xs + flow[..., 0], ys + flow[..., 1],
                   cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return np.clip(np.rint(i0), 0, 255).astype(np.uint8), frame


def valid_mask(flow: np.ndarray, margin: int = 2) -> np.ndarray:
    """bool (H, W): pixels at least ``ceil(max |flow|) + margin`` px away from the border (where
    ``x + flow(x)`` and its neighbourhood stay inside the frame)."""
    h, w = flow.shape[:2]
    band = int(math.ceil(float(np.abs(flow).max()))) + margin
    mask = np.zeros((h, w), bool)
    mask[band:h - band, band:w - band] = True
    return mask


def endpoint_error(estimate: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Average end-point error (px): mean over ``mask`` of ``|estimate - truth|`` (L2 over the
    last axis, size 2)."""
    err = np.linalg.norm(np.asarray(estimate, np.float64) - truth, axis=-1)
    return float(err[mask].mean() if mask is not None else err.mean())
