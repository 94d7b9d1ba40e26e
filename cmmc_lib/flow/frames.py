"""The frames flow is computed on: a video decoded with the loaders' own decoder (so the flow
matches the frames a dataset reads), in grey levels."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..data.video import decode_video


def to_grey(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB (N, H, W, 3) -> uint8 grey (N, H, W); grey input (N, H, W) passes through."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if frames.ndim == 3:
        return frames
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (N, H, W, 3) RGB or (N, H, W) grey, got {frames.shape}")
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]) if len(frames) \
        else np.zeros(frames.shape[:3], np.uint8)


def decode_rgb(path: str | Path, short_side: int | None = None) -> np.ndarray:
    """Every frame of a video as uint8 RGB (N, H, W, 3), with the loaders' own decoder,
    optionally resized to a short side (px)."""
    return np.asarray(decode_video(path, short_side=short_side))


def grey_frames(video: str | Path, size: tuple[int, int] | None = None, count: int | None = None,
                start: int = 0) -> np.ndarray:
    """uint8 grey (N, H, W) frames ``start, start+1, ...`` of ``video`` (``count`` of them, or
    all), resized to ``size`` (H, W) if given and different."""
    grey = to_grey(decode_rgb(video))
    grey = grey[start:start + count] if count is not None else grey[start:]
    if size is not None and grey.shape[1:] != tuple(size):
        grey = np.stack([cv2.resize(g, (size[1], size[0]), interpolation=cv2.INTER_AREA)
                         for g in grey])
    return grey
