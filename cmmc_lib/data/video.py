"""Video decoding with PyAV, and clip sampling by frame index.

What a container says is not trusted: the frame count is what a full decode returns, the
frame rate comes from the decoded timestamps (container rates can be guesses: raw MPEG-4
streams report 25 fps for 29.97 fps content). Metadata that is not UTF-8 is ignored, files
without a container (raw ``.m4v``/``.mp4`` elementary streams) are opened by probing, and
audio streams are never decoded.

Frames are addressed by their 0-based index in decode order; reading a clip decodes from
the start of the file (frame-accurate; seeking in AVI and raw streams is not) and converts
only the frames asked for.

Clip sampling is pure (numpy ``Generator`` in, indices out). **Short videos**: a window that
runs past the last frame is padded by repeating the last frame (index clamped to N - 1), so a
clip always has ``clip_len`` frames.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterable, Sequence

import av
import cv2
import numpy as np

log = logging.getLogger(__name__)

_AV_ERRORS = (av.error.FFmpegError, OSError, ValueError, EOFError, RuntimeError)


class VideoReadError(RuntimeError):
    """A video that cannot be opened or decoded (the message names the file)."""


# ----------------------------------------------------------------------------- opening
def open_video(path: Path | str, threads: int = 1):
    """(container, video stream) of ``path``; raises VideoReadError if there is no video.

    ``threads``: decoder threads (1 for DataLoader workers; 0 lets FFmpeg choose).
    """
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except _AV_ERRORS as e:
        raise VideoReadError(f"cannot open {path}: {e}") from None
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{path} has no video stream")
    stream = container.streams.video[0]
    if threads != 1:
        stream.thread_type = "AUTO"
    stream.codec_context.thread_count = threads
    return container, stream


def resized_hw(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """(h, w) after scaling so that min(h, w) == short_side (aspect kept, rounded)."""
    if short_side is None:
        return height, width
    if short_side < 1:
        raise ValueError(f"short_side must be >= 1, got {short_side}")
    scale = short_side / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_frame(frame: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """One (H, W, C) uint8 frame resized to ``hw`` with cv2.INTER_AREA (identity if equal)."""
    if frame.shape[:2] == tuple(hw):
        return frame
    out = cv2.resize(frame, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
    return out if out.ndim == frame.ndim else out[..., None]


def _fps_from(pts: list[int], time_base, stream) -> float | None:
    """Frame rate from decoded timestamps (median step), else the stream's rates, else None."""
    ticks = np.unique(np.asarray([p for p in pts if p is not None], dtype=np.int64))
    if len(ticks) >= 2 and time_base:
        step = float(np.median(np.diff(ticks))) * float(time_base)
        if step > 0:
            return round(1.0 / step, 3)
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate:
            return round(float(rate), 3)
    return None


# ----------------------------------------------------------------------------- probing
def probe_video(path: Path | str, threads: int = 0) -> dict:
    """Decode ``path`` fully and report what it really holds; never raises for a bad file.

    Returns ``{"path", "frames", "width", "height", "fps", "duration", "errors"}``: frames
    decoded (int), size of the first frame (px, None if none), fps (float or None), duration
    (s = frames / fps, or None), errors (list of strings; empty for a good file; a file that
    decodes zero frames always has one).
    """
    info = {"path": str(path), "frames": 0, "width": None, "height": None, "fps": None,
            "duration": None, "errors": []}
    try:
        container, stream = open_video(path, threads)
    except VideoReadError as e:
        info["errors"].append(str(e))
        return info
    pts: list[int] = []
    with container:
        try:
            for frame in container.decode(stream):
                if info["width"] is None:
                    info["width"], info["height"] = frame.width, frame.height
                pts.append(frame.pts)
        except _AV_ERRORS as e:
            info["errors"].append(f"decode error after {len(pts)} frames: {e}")
        info["frames"] = len(pts)
        info["fps"] = _fps_from(pts, stream.time_base, stream)
    if info["frames"] == 0 and not info["errors"]:
        info["errors"].append("no video frames decoded")
    if info["fps"] and info["frames"]:
        info["duration"] = round(info["frames"] / info["fps"], 3)
    return info


def probe_videos(paths: Iterable[Path | str], progress: bool = True,
                 threads: int = 0) -> list[dict]:
    """:func:`probe_video` for each path (a tqdm bar when ``progress``); never raises."""
    paths = list(paths)
    if progress:
        from tqdm.auto import tqdm
        paths_iter = tqdm(paths, desc="probe", unit="video")
    else:
        paths_iter = paths
    return [probe_video(p, threads) for p in paths_iter]


# ----------------------------------------------------------------------------- decoding
def _decode(path, wanted: Sequence[int] | None, short_side: int | None, threads: int,
            strict: bool) -> tuple[dict[int, np.ndarray], int, tuple[int, int]]:
    """Decode from the start; convert the frames in ``wanted`` (all if None).

    Returns ({index: (h, w, 3) uint8}, frames decoded N, (H, W) of the source). Stops after
    the last wanted index; wanted indices >= N are served by frame N - 1 (stored under N - 1).
    strict: any decode error raises VideoReadError.
    """
    container, stream = open_video(path, threads)
    last = None if wanted is None else max(wanted)
    wanted_set = None if wanted is None else set(wanted)
    out: dict[int, np.ndarray] = {}
    src_hw = hw = None
    prev = None
    n = 0
    with container:
        try:
            for frame in container.decode(stream):
                if src_hw is None:
                    src_hw = (frame.height, frame.width)
                    hw = resized_hw(frame.height, frame.width, short_side)
                if wanted_set is None or n in wanted_set:
                    out[n] = resize_frame(frame.to_ndarray(format="rgb24"), hw)
                prev = frame
                n += 1
                if last is not None and n > last:
                    break
        except _AV_ERRORS as e:
            if strict or n == 0:
                raise VideoReadError(f"{path}: decode error after {n} frames: {e}") from None
            log.warning("%s: decode error after %d frames, keeping those: %s", path, n, e)
        if n == 0:
            raise VideoReadError(f"{path}: no video frames decoded")
        if last is not None and last >= n and (n - 1) not in out:
            out[n - 1] = resize_frame(prev.to_ndarray(format="rgb24"), hw)
    return out, n, src_hw


def decode_video(path: Path | str, short_side: int | None = None, threads: int = 1,
                 strict: bool = True) -> np.ndarray:
    """All frames of ``path`` as uint8 (N, H, W, 3) RGB.

    short_side: resize so that min(H, W) == short_side (aspect kept, cv2.INTER_AREA).
    strict: a decode error anywhere raises VideoReadError (else the frames before it are kept).
    """
    frames, n, _ = _decode(path, None, short_side, threads, strict)
    return np.stack([frames[i] for i in range(n)])


def read_clip(path: Path | str, indices: Sequence[int] | np.ndarray,
              short_side: int | None = None, threads: int = 1,
              strict: bool = True) -> np.ndarray:
    """Frames ``indices`` (0-based decode order, any order/repeats) as uint8 (len, H, W, 3).

    Decodes from the start up to max(indices). Indices past the end of the video are padded
    with the last frame (the short-video rule of this module).
    """
    idx = np.asarray(indices, dtype=np.int64).ravel()
    if idx.size == 0 or idx.min() < 0:
        raise ValueError(f"frame indices must be non-empty and >= 0, got {idx.tolist()[:8]}")
    frames, n, _ = _decode(path, sorted(set(idx.tolist())), short_side, threads, strict)
    return np.stack([frames[min(int(i), n - 1)] for i in idx])


def video_frame_size(path: Path | str) -> tuple[int, int]:
    """(H, W) of the first decoded frame (pixels of the source video)."""
    _, _, hw = _decode(path, [0], None, 1, strict=False)
    return hw


# ----------------------------------------------------------------------------- sampling
def clip_span(clip_len: int, stride: int) -> int:
    """Frames covered by a clip of ``clip_len`` frames taken every ``stride`` frames."""
    if clip_len < 1 or stride < 1:
        raise ValueError(f"clip_len and stride must be >= 1, got {clip_len}, {stride}")
    return (clip_len - 1) * stride + 1


def window_indices(start: int, num_frames: int, clip_len: int, stride: int) -> np.ndarray:
    """int64 (clip_len,) indices start, start+stride, ...; past the end -> the last frame."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return np.minimum(start + np.arange(clip_len, dtype=np.int64) * stride, num_frames - 1)


def sample_train_windows(num_frames: int, clip_len: int, stride: int, views: int,
                         rng: np.random.Generator) -> np.ndarray:
    """int64 (views, clip_len): ``views`` independent uniformly random windows of a video.

    Start ~ U{0 .. num_frames - span}; videos shorter than a span start at 0 and are padded
    with the last frame.
    """
    span = clip_span(clip_len, stride)
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    starts = rng.integers(0, max(num_frames - span, 0) + 1, size=views)
    return np.stack([window_indices(int(s), num_frames, clip_len, stride) for s in starts])


def eval_windows(num_frames: int, clip_len: int, stride: int, n: int) -> np.ndarray:
    """int64 (n, clip_len): ``n`` evenly spaced windows, the first at frame 0 and the last
    ending on the last frame (n = 1: the centre window). Deterministic."""
    span = clip_span(clip_len, stride)
    if n < 1:
        raise ValueError(f"number of windows must be >= 1, got {n}")
    room = max(num_frames - span, 0)
    starts = [room // 2] if n == 1 else np.round(np.linspace(0, room, n)).astype(np.int64)
    return np.stack([window_indices(int(s), num_frames, clip_len, stride) for s in starts])


# ----------------------------------------------------------------------------- throughput
def decode_throughput(paths: Sequence[Path | str], clip_len: int = 32, stride: int = 1,
                      short_side: int = 128, clips: int = 50, seed: int = 0) -> dict:
    """Clips per second of :func:`read_clip` (one decoder thread) on random windows.

    Frame counts are probed first (not timed), as a dataset caches them after the first
    visit. Set cv2/torch threads to 1 in the caller for a per-core figure. Returns
    ``{"clips_per_s", "frames_per_s", "clips", "clip_len", "short_side", "videos"}``.
    """
    counts = [probe_video(p)["frames"] for p in paths]
    usable = [(p, n) for p, n in zip(paths, counts) if n > 0]
    if not usable:
        raise ValueError("no decodable video among the paths")
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for _ in range(clips):
        path, n = usable[int(rng.integers(len(usable)))]
        idx = sample_train_windows(n, clip_len, stride, 1, rng)[0]
        read_clip(path, idx, short_side=short_side, threads=1)
    dt = time.perf_counter() - t0
    return {"clips_per_s": round(clips / dt, 2), "frames_per_s": round(clips * clip_len / dt, 1),
            "clips": clips, "clip_len": clip_len, "short_side": short_side,
            "videos": len(usable)}
