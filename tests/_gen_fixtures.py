"""Helpers shared by the flow, skeleton and synthetic tests: small videos written on the fly
and the location of the read-only real test data."""
from __future__ import annotations

import os
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def realdata_root() -> Path:
    """``$CMMC_REALDATA`` or ``<repo>/../shared/realdata``."""
    return Path(os.environ.get("CMMC_REALDATA", REPO_ROOT.parent / "shared" / "realdata"))


def require_realdata(*parts: str) -> Path:
    """The real-data path ``parts`` below the root, or skip the test saying what is missing."""
    path = realdata_root().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test data not found: {path} (set CMMC_REALDATA)")
    return path


def textured_frames(n: int = 6, height: int = 48, width: int = 64, dx: float = 2.0,
                    dy: float = 0.0, seed: int = 0) -> np.ndarray:
    """uint8 (n, H, W, 3): a smooth random texture translated by (dx, dy) px per frame."""
    rng = np.random.default_rng(seed)
    big = rng.integers(0, 256, (height // 4 + 8, width // 4 + 8, 3), dtype=np.uint8)
    big = cv2.resize(big, ((width // 4 + 8) * 4, (height // 4 + 8) * 4),
                     interpolation=cv2.INTER_CUBIC)
    big = cv2.GaussianBlur(big, (0, 0), 1.5)
    frames = []
    for t in range(n):
        m = np.float32([[1, 0, dx * t - 8], [0, 1, dy * t - 8]])
        frames.append(cv2.warpAffine(big, m, (width, height), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT))
    return np.stack(frames)


def write_video(path: Path, frames: np.ndarray, fps: int = 25, codec: str = "mpeg4") -> Path:
    """Encode uint8 RGB (N, H, W, 3) with PyAV (even sizes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"} if codec == "mpeg4" else {"crf": "18"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decode(path: Path) -> np.ndarray:
    """All frames of a video as uint8 RGB (N, H, W, 3), with PyAV directly."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def make_videos(root: Path, n: int = 2, frames: int = 7) -> list[Path]:
    """``n`` textured videos ``root/videos/Cls<i>/v_<i>.avi`` of ``frames`` frames, moving
    ``1 + i`` px per frame."""
    paths = []
    for i in range(n):
        clip = textured_frames(n=frames, dx=1.0 + i, seed=i)
        paths.append(write_video(root / "videos" / f"Cls{i}" / f"v_{i}.avi", clip))
    return paths


def read_flow_pairs(folder: Path) -> np.ndarray:
    """The stored flow of a rawframes folder, uint8 (K, H, W, 2), read with OpenCV directly."""
    n = len(list(folder.glob("x_*.jpg")))
    return np.stack([np.stack([cv2.imread(str(folder / f"{a}_{t:05d}.jpg"), cv2.IMREAD_GRAYSCALE)
                               for a in "xy"], -1) for t in range(1, n + 1)])


def write_flat_flow_pairs(folder: Path, n: int) -> None:
    """``n`` x/y pairs of zero flow (4x4 px, grey 128), as another tool could leave them."""
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(1, n + 1):
        for a in "xy":
            cv2.imwrite(str(folder / f"{a}_{t:05d}.jpg"), np.full((4, 4), 128, np.uint8))


def grey_texture(h: int = 60, w: int = 80, seed: int = 0) -> np.ndarray:
    """uint8 (h, w): a smooth random texture (enough structure for flow everywhere)."""
    return cv2.cvtColor(textured_frames(n=1, height=h, width=w, seed=seed)[0], cv2.COLOR_RGB2GRAY)
