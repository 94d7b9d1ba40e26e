"""The TSN / denseflow "rawframes" layout: one JPEG per frame in a folder per video.

``img_00001.jpg ...`` hold RGB frames; ``x_00001.jpg`` / ``y_00001.jpg`` hold the horizontal
and vertical optical flow as grey images, quantised with bound 20 px:
``u8 = clip(round((f + 20) * 255 / 40), 0, 255)``, so 128 is about zero motion. File numbers
are 1-based; the functions here take 0-based frame indices (index i is file i + 1).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .video import resize_frame, resized_hw

FLOW_BOUND = 20.0


class FrameReadError(ValueError):
    """A rawframes folder with a gap in its numbering or an image that does not decode."""

_PREFIXES = {"rgb": "img_", "flow": "x_"}


def frame_name(prefix: str, index: int) -> str:
    """File name of 0-based frame ``index``: ``frame_name("x_", 0) == "x_00001.jpg"``."""
    return f"{prefix}{index + 1:05d}.jpg"


def count_frames(directory: Path | str, kind: str = "auto") -> int:
    """Number of frames in a rawframes folder (``kind``: "rgb", "flow" or "auto").

    "auto" counts ``img_`` files if there are any, else ``x_`` files. The files must be
    numbered 1..N without gaps (and for flow every ``x_`` needs its ``y_``): else FrameReadError
    naming the first missing file. A missing folder raises FileNotFoundError.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"rawframes folder not found: {directory}")
    names = {p.name for p in directory.iterdir()}
    if kind == "auto":
        kind = "rgb" if any(n.startswith("img_") for n in names) else "flow"
    if kind not in _PREFIXES:
        raise ValueError(f"kind must be 'rgb', 'flow' or 'auto', got {kind!r}")
    prefix = _PREFIXES[kind]
    pattern = re.compile(re.escape(prefix) + r"(\d{5})\.jpg$")
    numbers = sorted(int(m.group(1)) for n in names if (m := pattern.match(n)))
    n = len(numbers)
    if numbers != list(range(1, n + 1)):
        gap = next(i for i in range(1, n + 2) if i not in set(numbers))
        raise FrameReadError(f"{directory}: {prefix}{gap:05d}.jpg is missing "
                         f"({n} {prefix}*.jpg files, not numbered 1..{n})")
    if kind == "flow":
        for i in range(n):
            if frame_name("y_", i) not in names:
                raise FrameReadError(f"{directory}: {frame_name('y_', i)} is missing")
    return n


def _imread(path: Path, flags: int) -> np.ndarray:
    img = cv2.imread(str(path), flags)
    if img is None:
        if not path.is_file():
            raise FileNotFoundError(f"frame not found: {path}")
        raise FrameReadError(f"cannot decode image {path}")
    return img


def read_rgb_frames(directory: Path | str, indices: Sequence[int],
                    short_side: int | None = None) -> np.ndarray:
    """uint8 (N, H, W, 3) RGB from ``img_%05d.jpg`` (0-based ``indices``), optionally
    resized so that min(H, W) == short_side (cv2.INTER_AREA)."""
    directory = Path(directory)
    frames = []
    for i in indices:
        bgr = _imread(directory / frame_name("img_", int(i)), cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        frames.append(resize_frame(rgb, resized_hw(*rgb.shape[:2], short_side)))
    return np.stack(frames)


def read_flow_frames(directory: Path | str, indices: Sequence[int],
                     short_side: int | None = None) -> np.ndarray:
    """uint8 (N, H, W, 2) quantised flow from ``x_`` / ``y_%05d.jpg`` (channel 0 = x).

    Values stay quantised (see :func:`dequantize_flow`); resizing (cv2.INTER_AREA) changes
    the grid, not the values, so flow stays in pixels of the source resolution (the TSN /
    CoCLR convention).
    """
    directory = Path(directory)
    frames = []
    for i in indices:
        x = _imread(directory / frame_name("x_", int(i)), cv2.IMREAD_GRAYSCALE)
        y = _imread(directory / frame_name("y_", int(i)), cv2.IMREAD_GRAYSCALE)
        if x.shape != y.shape:
            raise FrameReadError(f"{directory}: x and y flow of frame {int(i) + 1} differ in size")
        xy = np.stack([x, y], axis=-1)
        frames.append(resize_frame(xy, resized_hw(*xy.shape[:2], short_side)))
    return np.stack(frames)


def dequantize_flow(u8: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """float32 flow in pixels from the uint8 storage: ``u8 * 2 * bound / 255 - bound``."""
    return np.asarray(u8, dtype=np.float32) * np.float32(2 * bound / 255.0) - np.float32(bound)


def quantize_flow(flow: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """uint8 storage of flow in pixels: ``clip(round((f + bound) * 255 / (2 bound)))``."""
    if bound <= 0:
        raise ValueError(f"bound must be > 0, got {bound}")
    q = np.round((np.asarray(flow, dtype=np.float32) + bound) * (255.0 / (2 * bound)))
    return np.clip(q, 0, 255).astype(np.uint8)
