"""Dense optical flow: computation, uint8 storage and resumable extraction over many videos.

Conventions (the TSN / denseflow / CoCLR "rawframes" layout, see ``data/README.md``):

* Flow is computed on **greyscale** frames, in **pixels** of the frame it was computed on;
  channel 0 is x (horizontal, + to the right), channel 1 is y (vertical, + downwards).
* **Frame-aligned**: for N decoded frames there are N flow fields. Field ``t`` (0-based) is
  the motion from frame ``t`` to frame ``t + 1``; the last field duplicates field ``N - 2``
  (a video of a single frame gets one zero field). So ``flow[t]`` sits beside ``rgb[t]`` and a
  clip of frames ``[s, s + T)`` reads flow ``[s, s + T)``.
* Storage: ``uint8 = clip((f + bound) * 255 / (2 * bound))`` with ``bound = 20`` px, written as
  two grey JPEGs per frame, ``<out>/<video_id>/x_00001.jpg`` and ``y_00001.jpg`` (1-based).
  ``video_id`` is the video's file stem.
* TV-L1 (``cv2.optflow.DualTVL1OpticalFlow_create()`` with OpenCV's default parameters, as
  denseflow and TSN's dense_flow use them) is the paper's method; DIS (medium preset, refined to
  full resolution on frames whose short side is under 128 px) and Farneback (OpenCV's sample
  parameters) are the fast alternatives.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np

from .rawframes import FLOW_BOUND, dequantize_flow, quantize_flow   # the TSN/CoCLR storage convention

log = logging.getLogger(__name__)

FLOW_METHODS = ("tvl1", "dis", "farneback")
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov")
COMPLETE_MARKER = ".complete"     # JSON file written inside a finished flow folder
_TMP_TAG = ".tmp-"

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


# --------------------------------------------------------------------------- computation
def make_flow_estimator(method: str = "tvl1", short_side: int | None = None) -> FlowFn:
    """A function ``(prev_grey, next_grey) uint8 (H, W) -> float32 (H, W, 2)`` flow in px.

    ``short_side``: the frames' short side (px). DIS's medium preset stops at half resolution
    (finest scale 1); below 128 px that loses 2-px-wide limbs, so small frames are refined down
    to full resolution (finest scale 0).
    """
    if method == "tvl1":
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
        return lambda a, b: tvl1.calc(a, b, None)
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        if short_side is not None and short_side < 128:
            dis.setFinestScale(0)
        return lambda a, b: dis.calc(a, b, None)
    if method == "farneback":
        # OpenCV's sample parameters: pyr_scale, levels, winsize, iterations, poly_n, poly_sigma
        return lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    raise ValueError(f"unknown flow method {method!r}; choose one of {', '.join(FLOW_METHODS)}")


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


def compute_flow(frames: np.ndarray, method: str = "tvl1") -> np.ndarray:
    """Frame-aligned dense flow of a video.

    frames: uint8 (N, H, W, 3) RGB (or (N, H, W) grey), N >= 1.
    Returns float32 (N, H, W, 2) in px: ``flow[t]`` = motion t -> t+1, last one duplicated.
    """
    grey = to_grey(frames)
    if len(grey) == 0:
        raise ValueError("compute_flow needs at least one frame, got 0")
    n, h, w = grey.shape
    out = np.zeros((n, h, w, 2), np.float32)
    if n == 1:
        return out
    estimate = make_flow_estimator(method, short_side=min(h, w))
    for t in range(n - 1):
        out[t] = estimate(grey[t], grey[t + 1])
    out[n - 1] = out[n - 2]
    return out


# --------------------------------------------------------------------------- storage
def write_flow_frames(flow_uint8: np.ndarray, folder: str | Path) -> int:
    """Write uint8 (N, H, W, 2) as ``x_00001.jpg`` / ``y_00001.jpg`` ... into ``folder``.

    Returns N. The folder is created; existing files of the same names are overwritten.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if flow_uint8.dtype != np.uint8 or flow_uint8.ndim != 4 or flow_uint8.shape[-1] != 2:
        raise ValueError(f"expected uint8 (N, H, W, 2), got {flow_uint8.dtype} {flow_uint8.shape}")
    for t, f in enumerate(flow_uint8, start=1):
        for c, axis in enumerate("xy"):
            path = folder / f"{axis}_{t:05d}.jpg"
            if not cv2.imwrite(str(path), np.ascontiguousarray(f[..., c])):
                raise OSError(f"could not write {path}")
    return len(flow_uint8)


def flow_pair_count(folder: str | Path) -> int:
    """Number of complete consecutive ``x_/y_`` pairs 1..K in ``folder`` (0 if none)."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    names = {p.name for p in folder.iterdir()}
    k = 0
    while f"x_{k + 1:05d}.jpg" in names and f"y_{k + 1:05d}.jpg" in names:
        k += 1
    return k


def is_flow_complete(folder: str | Path) -> bool:
    """True when ``folder`` holds a finished flow video: our completion marker, or (for folders
    made by other tools, e.g. denseflow) at least one pair and equal numbers of x and y files
    that form a consecutive run 1..K."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    if (folder / COMPLETE_MARKER).is_file():
        return True
    k = flow_pair_count(folder)
    nx = sum(1 for _ in folder.glob("x_*.jpg"))
    ny = sum(1 for _ in folder.glob("y_*.jpg"))
    return k > 0 and nx == ny == k


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return None


def write_video_flow(frames: np.ndarray, folder: str | Path, method: str = "tvl1",
                     bound: float = FLOW_BOUND, source: str = "") -> int:
    """Compute, quantize and write the flow of one decoded video **atomically**.

    The pairs and a completion marker are written into a temporary sibling folder which is then
    renamed onto ``folder`` (``os.replace``), so ``folder`` is either absent or complete.
    Returns the number of pairs written (= N frames).
    """
    folder = Path(folder)
    flow_q = quantize_flow(compute_flow(frames, method), bound)
    tmp = folder.parent / f".{folder.name}{_TMP_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        n = write_flow_frames(flow_q, tmp)
        marker = {"frames": n, "method": method, "bound": bound, "source": source}
        (tmp / COMPLETE_MARKER).write_text(json.dumps(marker))
        if folder.exists():                    # overwrite=True, or a partial folder of another tool
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return n


# --------------------------------------------------------------------------- decoding
def _decode_rgb(path: str | Path, short_side: int | None = None) -> np.ndarray:
    """Every frame of a video as uint8 RGB (N, H, W, 3), with the loaders' own decoder (so the
    flow matches the frames a dataset reads), optionally resized to a short side (px)."""
    from cmmc_lib.data.video import decode_video
    return np.asarray(decode_video(path, short_side=short_side))


# --------------------------------------------------------------------------- extraction
def find_videos(inputs: str | Path | Iterable[str | Path]) -> list[Path]:
    """Videos named by ``inputs``: a file (any extension), or a directory searched recursively
    for :data:`VIDEO_EXTENSIONS` (case-insensitive; hidden files such as macOS ``._x.avi`` and
    our own unfinished ``.x.tmp-*`` files are skipped); or a list of those. Sorted, unique."""
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    found: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(q for q in sorted(p.rglob("*"))
                         if q.is_file() and q.suffix.lower() in VIDEO_EXTENSIONS
                         and not q.name.startswith("."))
        else:
            raise FileNotFoundError(f"no such video or directory: {p}")
    return sorted(set(found))


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _extract_one(path: str, folder: str, method: str, bound: float,
                 short_side: int | None) -> tuple[str, int, str | None]:
    """Worker: (path, frames written, error or None). Never raises."""
    try:
        for stale in Path(folder).parent.glob(f".{Path(folder).name}{_TMP_TAG}*"):
            shutil.rmtree(stale, ignore_errors=True)        # leftovers of a killed run
        frames = _decode_rgb(path, short_side)
        return path, write_video_flow(frames, folder, method, bound, source=Path(path).name), None
    except Exception as exc:                                # a bad video must not stop the run
        return path, 0, f"{type(exc).__name__}: {exc}"


def extract_flow(inputs: str | Path | Iterable[str | Path], out_dir: str | Path,
                 method: str = "tvl1", workers: int = 1, bound: float = FLOW_BOUND,
                 short_side: int | None = None, overwrite: bool = False,
                 progress: bool = True) -> dict:
    """Extract frame-aligned flow for every video in ``inputs`` into ``out_dir/<video_id>/``.

    Resumable: a video whose folder is complete (:func:`is_flow_complete`) is skipped unless
    ``overwrite``; each video is written atomically. ``workers > 1`` uses a process pool over
    videos (each worker single-threaded OpenCV). An unreadable video is logged and listed in
    ``failed``; the run goes on.

    Returns a JSON-serialisable dict: ``done`` (videos written), ``skipped_existing``,
    ``failed`` (sorted list of (path, error)), ``frames`` (flow pairs written), ``seconds``,
    ``method``, ``out_dir``.
    """
    from tqdm.auto import tqdm

    if method not in FLOW_METHODS:
        raise ValueError(f"unknown flow method {method!r}; choose one of {', '.join(FLOW_METHODS)}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    start = time.perf_counter()
    videos = find_videos(inputs)
    by_id: dict[str, Path] = {}
    for v in videos:
        if v.stem in by_id:
            raise ValueError(f"two videos share the id {v.stem!r}: {by_id[v.stem]} and {v}")
        by_id[v.stem] = v
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    todo, skipped, other_method = [], 0, []
    for vid, path in by_id.items():
        if not overwrite and is_flow_complete(out_dir / vid):
            skipped += 1
            made = _read_marker(out_dir / vid)
            if made and (made.get("method"), made.get("bound")) != (method, bound):
                other_method.append(vid)
        else:
            todo.append((str(path), str(out_dir / vid), method, bound, short_side))
    if other_method:
        log.warning("%d finished videos in %s were made with another method or bound (e.g. %s);"
                    " kept as they are: pass overwrite=True to recompute them",
                    len(other_method), out_dir, other_method[0])
    summary = {"done": 0, "skipped_existing": skipped, "failed": [], "frames": 0,
               "seconds": 0.0, "method": method, "out_dir": str(out_dir)}
    if not videos:
        log.warning("no videos found in %s", inputs)

    bar = tqdm(total=len(todo), desc=f"flow {method}", unit="video", disable=not progress)

    def record(result: tuple[str, int, str | None]) -> None:
        path, n, err = result
        if err is None:
            summary["done"] += 1
            summary["frames"] += n
        else:
            log.warning("flow: skipping unreadable video %s (%s)", path, err)
            summary["failed"].append((path, err))
        bar.update(1)
        bar.set_postfix(frames=summary["frames"], failed=len(summary["failed"]))

    try:
        if workers == 1 or len(todo) <= 1:
            for job in todo:
                record(_extract_one(*job))
        else:
            # spawn: safe under Jupyter and with threads (torch, tqdm) alive in the parent
            with ProcessPoolExecutor(max_workers=min(workers, len(todo)),
                                     mp_context=get_context("spawn"),
                                     initializer=_init_worker) as pool:
                futures = [pool.submit(_extract_one, *job) for job in todo]
                for future in as_completed(futures):
                    record(future.result())
    finally:
        bar.close()
    summary["failed"].sort()
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return summary


# --------------------------------------------------------------------------- benchmark
def measure_flow_fps(frames: np.ndarray, method: str = "tvl1", pairs: int = 10,
                     threads: int = 1) -> dict:
    """Flow fields per second for ``method`` on ``frames`` (uint8 (N, H, W, 3), N >= 2), with
    OpenCV limited to ``threads`` threads (restored afterwards). Returns a JSON-able dict with
    ``fps`` (wall clock) and ``fps_per_cpu_second`` (fields per second of this process's CPU
    time: the per-core figure, robust to other processes sharing the machine)."""
    grey = to_grey(frames)
    pairs = min(pairs, len(grey) - 1)
    if pairs < 1:
        raise ValueError("measure_flow_fps needs at least 2 frames")
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
