"""Video IO with PyAV: decoding, probing, clip sampling by frame index, and encoding.

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

import contextlib
import io
import logging
import math
import threading
import time
from pathlib import Path
from typing import Iterable, Sequence

import av
import cv2
import numpy as np
from tqdm.auto import tqdm

#: The file endings taken for videos when a folder is searched (case-insensitive).
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")

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
class _FFmpegErrorLogging:
    """While at least one block holds it, PyAV passes on every FFmpeg message of level ERROR
    (PyAV drops FFmpeg's log by default, and merges repeated lines); the previous settings come
    back when the last block ends. Thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._users = 0
        self._saved: tuple = (None, True)

    def __enter__(self):
        with self._lock:
            if self._users == 0:
                level = av.logging.get_level()
                self._saved = (level, av.logging.get_skip_repeated())
                if level is None or level < av.logging.ERROR:
                    av.logging.set_level(av.logging.ERROR)
                av.logging.set_skip_repeated(False)
            self._users += 1
        return self

    def __exit__(self, *exc):
        with self._lock:
            self._users -= 1
            if self._users == 0:
                av.logging.set_level(self._saved[0])
                av.logging.set_skip_repeated(self._saved[1])
        return False


_FFMPEG_ERRORS = _FFmpegErrorLogging()


@contextlib.contextmanager
def _decoder_errors_logged():
    """A list that receives the FFmpeg messages of level ERROR (or worse) logged on this thread
    while the block runs: what a decoder reports when it conceals damage instead of failing."""
    errors: list[str] = []
    with _FFMPEG_ERRORS, av.logging.Capture(local=True) as logs:
        try:
            yield errors
        finally:
            errors.extend(m.strip() for level, _, m in logs if level <= av.logging.ERROR)


def _promised_frames(container, stream) -> tuple[int | None, str]:
    """(frames the container announces for ``stream``, where that figure comes from): its frame
    count, else its duration x average frame rate; (None, "") when it says neither (raw MPEG-4
    elementary streams)."""
    if stream.frames:
        return int(stream.frames), "frame count"
    rate = stream.average_rate
    if stream.duration and stream.time_base and rate:
        return round(float(stream.duration * stream.time_base * rate)), "duration x frame rate"
    if container.duration and rate:                 # microseconds (AV_TIME_BASE)
        return round(container.duration / 1e6 * float(rate)), "duration x frame rate"
    return None, ""


def _ended_early(decoded: int, promised: int | None) -> bool:
    """More frames missing than a sound file may lack: containers often promise a frame or two
    that never decodes (HMDB51's AVIs promise 73 and hold 72), and duration x rate is an
    estimate, so up to max(2, 2 %) of the promise may be missing."""
    return promised is not None and promised - decoded > max(2, math.ceil(0.02 * promised))


def probe_video(path: Path | str, threads: int = 1) -> dict:
    """Decode ``path`` fully and report what it really holds; never raises for a bad file.

    Returns ``{"path", "frames", "expected_frames", "width", "height", "fps", "duration",
    "errors"}``: frames decoded (int); frames the container promises (its frame count, else
    duration x frame rate; None when it says neither); size of the first frame (px, None if
    none); fps (float or None); duration (s = frames / fps, or None); errors (list of strings,
    empty for a good file). A file has errors when it cannot be opened, decodes no frame, the
    decoder raises, the decoder *logs* errors (FFmpeg conceals damaged frames and only says so
    in its log), or decoding ends early (fewer frames than promised: see :func:`_ended_early`).

    threads: decoder threads. With 1 (the default) FFmpeg logs on this thread, where its
    messages are captured; with more, errors logged by FFmpeg's own threads may go unseen.
    """
    info = {"path": str(path), "frames": 0, "expected_frames": None, "width": None,
            "height": None, "fps": None, "duration": None, "errors": []}
    try:
        container, stream = open_video(path, threads)
    except VideoReadError as e:
        info["errors"].append(str(e))
        return info
    pts: list[int] = []
    with container, _decoder_errors_logged() as logged:
        info["expected_frames"], promise = _promised_frames(container, stream)
        try:
            for frame in container.decode(stream):
                if info["width"] is None:
                    info["width"], info["height"] = frame.width, frame.height
                pts.append(frame.pts)
        except _AV_ERRORS as e:
            info["errors"].append(f"decode error after {len(pts)} frames: {e}")
        info["frames"] = len(pts)
        info["fps"] = _fps_from(pts, stream.time_base, stream)
    if logged:
        info["errors"].append(f"the decoder logged {len(logged)} error message(s), the first: "
                              f"{logged[0]}")
    if _ended_early(info["frames"], info["expected_frames"]):
        info["errors"].append(f"decoding ended early: {info['frames']} frames of the "
                              f"{info['expected_frames']} promised by the container's {promise}")
    if info["frames"] == 0 and not info["errors"]:
        info["errors"].append("no video frames decoded")
    if info["fps"] and info["frames"]:
        info["duration"] = round(info["frames"] / info["fps"], 3)
    return info


def probe_videos(paths: Iterable[Path | str], progress: bool = True,
                 threads: int = 1) -> list[dict]:
    """:func:`probe_video` for each path (a tqdm bar when ``progress``); never raises."""
    paths = list(paths)
    if progress:
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
    ending on the last frame (n = 1: the centre window). ``n = 0``: dense, half-overlapping
    windows, one starting every ``(span - 1) // 2`` frames (CoCLR's test protocol: every 15
    frames for 32-frame clips), at least one. Deterministic."""
    span = clip_span(clip_len, stride)
    if n < 0:
        raise ValueError(f"number of windows must be >= 1 (or 0: dense), got {n}")
    room = max(num_frames - span, 0)
    if n == 0:
        starts = np.arange(0, room + 1, max((span - 1) // 2, 1))
    else:
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


# ----------------------------------------------------------------------------- encoding
def video_codec() -> tuple[str, str]:
    """(codec, file extension) to write videos with: ``("libx264", ".mp4")`` when PyAV's FFmpeg
    can use it, else ``("mpeg4", ".avi")``. Each is tried on two blank frames, since a build
    may list a codec it cannot use. RuntimeError when neither works."""
    for codec, ext in (("libx264", ".mp4"), ("mpeg4", ".avi")):
        if codec not in av.codecs_available:
            continue
        try:
            encode_video(io.BytesIO(), np.zeros((2, 16, 16, 3), np.uint8), codec, container_format=ext[1:])
            return codec, ext
        except Exception as exc:                     # listed, but not usable in this build
            log.debug("codec %s unusable: %s", codec, exc)
    raise RuntimeError("PyAV can encode neither libx264 nor mpeg4 video")


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3), even H and W -> the planar I420 buffer (Y, then U, then V) shaped
    (3H/2, W) as PyAV's ``yuv420p`` frames take it: BT.601 limited range (what decoders assume
    for untagged SD video), chroma averaged over 2x2 blocks. Done here, exactly, so the encoder
    input does not depend on the FFmpeg build's swscale."""
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"yuv420p needs an even frame size, got {w}x{h}")
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    cb = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    cr = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255

    def plane(c, sub):
        if sub:
            c = c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
        return np.clip(np.rint(c), 0, 255).astype(np.uint8)

    planes = (plane(y, False), plane(cb, True), plane(cr, True))
    return np.concatenate([p.ravel() for p in planes]).reshape(h * 3 // 2, w)


def encode_video(path, frames: np.ndarray, codec: str, fps: int = 25,
                 container_format: str | None = None) -> None:
    """Write uint8 RGB frames (T, H, W, 3), H and W even, as a video of ``fps`` frames per
    second to ``path`` (a file path, or a writable binary file object such as ``io.BytesIO``
    together with ``container_format``, e.g. ``"mp4"``). ``codec``: see :func:`video_codec`.

    libx264 is run **lossless** (qp 0) on our own yuv420p conversion (:func:`rgb_to_yuv420p`):
    the decoded frames are then the same whatever x264 build wrote them (only the 4:2:0 chroma
    is lost, as in every consumer video). mpeg4 (the fallback) is lossy (qscale 2). One encoder
    thread, so the output does not depend on the machine. Not atomic: write to a temporary
    file (``cmmc_lib.files.atomic_write``) when a reader may look.
    """
    target = str(path) if isinstance(path, (str, Path)) else path
    with av.open(target, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {"qp": "0", "preset": "medium"} if codec == "libx264" else {"qscale": "2"}
        for t, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(f), format="yuv420p")
            frame.pts = t
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
