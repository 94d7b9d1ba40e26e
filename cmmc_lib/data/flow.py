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

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
import uuid
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import cv2
import numpy as np

from .rawframes import FLOW_BOUND, dequantize_flow, quantize_flow   # the TSN/CoCLR storage convention

log = logging.getLogger(__name__)

FLOW_METHODS = ("tvl1", "dis", "farneback")
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov")
COMPLETE_MARKER = ".complete"     # JSON file written inside a finished flow folder
_TMP_TAG = ".tmp-"

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class ExtractionInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`extract_flow` cleanly; ``summary`` is its report of what was done
    (``interrupted`` True, ``remaining`` videos left). A KeyboardInterrupt, so callers that do
    not look for it stop as they would on any Ctrl-C."""

    def __init__(self, summary: dict):
        super().__init__(f"flow extraction interrupted: {summary['done']} videos done, "
                         f"{summary['remaining']} left")
        self.summary = summary


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


def is_flow_complete(folder: str | Path, video_frames: int | None = None) -> bool:
    """True when ``folder`` holds the finished flow of a video of ``video_frames`` decoded
    frames (None: unknown).

    * With our completion marker: its pair count is there (and equals ``video_frames`` when
      known). Our folders are written atomically, so the marker is the proof.
    * Without it (another tool, e.g. denseflow, or a copy that lost it) only the video can tell
      a finished folder from an interrupted one: complete when the x/y pairs form one run 1..K
      with no stray file and K is ``video_frames`` (our frame-aligned layout) or
      ``video_frames - 1`` (one field per consecutive frame pair, as denseflow writes). With
      ``video_frames`` unknown such a folder is never taken as complete.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return False
    pairs = flow_pair_count(folder)
    marker = _read_marker(folder)
    if marker is not None:
        frames = marker.get("frames")
        return frames == pairs and (video_frames is None or frames == video_frames)
    if video_frames is None or pairs == 0:
        return False
    nx = sum(1 for _ in folder.glob("x_*.jpg"))
    ny = sum(1 for _ in folder.glob("y_*.jpg"))
    return nx == ny == pairs and pairs in (video_frames, video_frames - 1)


def _read_marker(folder: Path) -> dict | None:
    """Our completion marker of ``folder`` as a dict, or None (absent or unreadable)."""
    try:
        marker = json.loads((Path(folder) / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _remove_temp_folders(folder: Path) -> None:
    """Delete the unfinished ``.<name>.tmp-*`` siblings of ``folder`` (left by a killed run)."""
    for stale in folder.parent.glob(f".{folder.name}{_TMP_TAG}*"):
        shutil.rmtree(stale, ignore_errors=True)


def write_video_flow(frames: np.ndarray, folder: str | Path, method: str = "tvl1",
                     bound: float = FLOW_BOUND, source: str = "", run: str = "") -> int:
    """Compute, quantize and write the flow of one decoded video **atomically**.

    The pairs and a completion marker are written into a temporary sibling folder which is then
    renamed onto ``folder`` (``os.replace``), so ``folder`` is either absent or complete.
    ``run`` (optional) is recorded in the marker: which extraction wrote the folder.
    Returns the number of pairs written (= N frames).
    """
    folder = Path(folder)
    _check_bound(bound)
    flow_q = quantize_flow(compute_flow(frames, method), bound)
    tmp = folder.parent / f".{folder.name}{_TMP_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        n = write_flow_frames(flow_q, tmp)
        marker = {"frames": n, "method": method, "bound": bound, "source": source, "run": run}
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


class _Outcome(NamedTuple):
    """What a worker did with one video: ``frames`` pairs written (0 if none), ``error`` (None
    if fine), ``kept`` (the folder already held the video's finished flow and was left alone)."""
    path: str
    frames: int
    error: str | None = None
    kept: bool = False


def _init_worker() -> None:
    """Pool worker set-up: one OpenCV thread each; Ctrl-C belongs to the main process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)


def _extract_one(path: str, folder: str, method: str, bound: float, short_side: int | None,
                 keep_finished: bool = True, run: str = "") -> _Outcome:
    """Worker: decode ``path`` and write its flow to ``folder``, unless ``keep_finished`` and
    the folder already holds it (another tool's folder, judged against the decoded frame
    count). Never raises for a bad video."""
    try:
        _remove_temp_folders(Path(folder))                  # leftovers of a killed run
        frames = _decode_rgb(path, short_side)
        if keep_finished and is_flow_complete(folder, video_frames=len(frames)):
            return _Outcome(path, 0, kept=True)
        n = write_video_flow(frames, folder, method, bound, source=Path(path).name, run=run)
        return _Outcome(path, n)
    except Exception as exc:                                # a bad video must not stop the run
        return _Outcome(path, 0, f"{type(exc).__name__}: {exc}")


def _check_bound(bound: float) -> None:
    if not (math.isfinite(bound) and bound > 0):
        raise ValueError(f"bound must be a finite number of px > 0 (flow is stored clipped to "
                         f"[-bound, bound]), got {bound}")


def _check_extraction_args(method: str, workers: int, bound: float,
                           short_side: int | None) -> None:
    """Refuse settings that would fail on every video, before any video is read."""
    if method not in FLOW_METHODS:
        raise ValueError(f"unknown flow method {method!r}; choose one of {', '.join(FLOW_METHODS)}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    _check_bound(bound)
    if short_side is not None and short_side < 1:
        raise ValueError(f"short_side must be >= 1 px (or None to keep the videos' size), "
                         f"got {short_side}")


@contextlib.contextmanager
def _sigint_ignored():
    """Ignore Ctrl-C while the block runs (main thread only; elsewhere a no-op). Processes
    started meanwhile inherit the ignored signal, so pool workers are deaf to Ctrl-C from the
    moment they start, before their initializer runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def _stop_workers_now(pool: ProcessPoolExecutor, futures: list[Future]) -> None:
    """Cancel the videos not started yet and kill the workers running the others."""
    for future in futures:
        future.cancel()
    if hasattr(pool, "terminate_workers"):                  # Python >= 3.14
        pool.terminate_workers()
        return
    workers = list((pool._processes or {}).values())        # before 3.14 there is no public way
    for process in workers:
        process.terminate()
    for process in workers:
        process.join()


def _run_in_pool(jobs: list[tuple], workers: int, on_result: Callable[[_Outcome], None]) -> None:
    """:func:`_extract_one` over ``jobs`` in ``workers`` spawned processes; ``on_result`` runs
    here as each video finishes. Ctrl-C (KeyboardInterrupt in this process): the queued videos
    are cancelled, the running ones killed (their folders stay absent or complete: writes are
    atomic), and KeyboardInterrupt is re-raised once the pool is down."""
    # spawn: safe under Jupyter and with threads (torch, tqdm) alive in the parent
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)),
                               mp_context=get_context("spawn"), initializer=_init_worker)
    futures: list[Future] = []
    try:
        with _sigint_ignored():                 # submit() starts the workers: born ignoring Ctrl-C
            futures = [pool.submit(_extract_one, *job) for job in jobs]
        for future in as_completed(futures):
            on_result(future.result())
    except KeyboardInterrupt:
        _stop_workers_now(pool, futures)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _settle_unreported(jobs: list[tuple], reported: set[str], run: str) -> tuple[int, int, int]:
    """After an interruption: for each job whose result never arrived, remove its temporary
    folders and tell whether this run finished it anyway. Returns (videos finished, their
    pairs, videos left to do)."""
    done = frames = left = 0
    for path, folder, *_ in jobs:
        if path in reported:
            continue
        _remove_temp_folders(Path(folder))
        marker = _read_marker(Path(folder))
        if marker is not None and marker.get("run") == run and is_flow_complete(folder):
            done, frames = done + 1, frames + int(marker["frames"])
        else:
            left += 1
    return done, frames, left


def extract_flow(inputs: str | Path | Iterable[str | Path], out_dir: str | Path,
                 method: str = "tvl1", workers: int = 1, bound: float = FLOW_BOUND,
                 short_side: int | None = None, overwrite: bool = False,
                 progress: bool = True) -> dict:
    """Extract frame-aligned flow for every video in ``inputs`` into ``out_dir/<video_id>/``.

    Resumable: a video whose folder carries our completion marker is skipped unless
    ``overwrite``; a folder without it (another tool's, or unfinished) is kept only when its
    pair count matches the video's decoded frame count (:func:`is_flow_complete`), else
    redone. Each video is written atomically. ``workers > 1`` uses a process pool over videos
    (each worker single-threaded OpenCV). An unreadable video is logged and listed in
    ``failed``; the run goes on. ``bound`` (px, > 0) and ``short_side`` (px, >= 1, or None)
    are checked before any video is read (ValueError).

    Ctrl-C (KeyboardInterrupt) stops the run promptly: videos not started are cancelled,
    running ones are killed and their temporary folders removed, finished ones are kept, and
    :class:`ExtractionInterrupted` is raised carrying the summary (``interrupted`` True; run
    again to resume).

    Returns a JSON-serialisable dict: ``done`` (videos written), ``skipped_existing``,
    ``failed`` (sorted list of (path, error)), ``frames`` (flow pairs written), ``seconds``,
    ``method``, ``out_dir``, ``interrupted`` (False: see above), ``remaining`` (0).
    """
    from tqdm.auto import tqdm

    _check_extraction_args(method, workers, bound, short_side)
    start = time.perf_counter()
    videos = find_videos(inputs)
    by_id: dict[str, Path] = {}
    for v in videos:
        if v.stem in by_id:
            raise ValueError(f"two videos share the id {v.stem!r}: {by_id[v.stem]} and {v}")
        by_id[v.stem] = v
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    run = uuid.uuid4().hex[:12]                 # recorded in the markers this call writes
    todo, skipped, other_method = [], 0, []
    for vid, path in by_id.items():
        if not overwrite and is_flow_complete(out_dir / vid):      # our marker: no decoding needed
            skipped += 1
            made = _read_marker(out_dir / vid)
            if made and (made.get("method"), made.get("bound")) != (method, bound):
                other_method.append(vid)
        else:
            todo.append((str(path), str(out_dir / vid), method, bound, short_side, not overwrite, run))
    if other_method:
        log.warning("%d finished videos in %s were made with another method or bound (e.g. %s);"
                    " kept as they are: pass overwrite=True to recompute them",
                    len(other_method), out_dir, other_method[0])
    summary = {"done": 0, "skipped_existing": skipped, "failed": [], "frames": 0,
               "seconds": 0.0, "method": method, "out_dir": str(out_dir),
               "interrupted": False, "remaining": 0}
    if not videos:
        log.warning("no videos found in %s", inputs)

    bar = tqdm(total=len(todo), desc=f"flow {method}", unit="video", disable=not progress)
    reported: set[str] = set()

    def record(result: _Outcome) -> None:
        reported.add(result.path)
        if result.error is not None:
            log.warning("flow: skipping unreadable video %s (%s)", result.path, result.error)
            summary["failed"].append((result.path, result.error))
        elif result.kept:
            summary["skipped_existing"] += 1
        else:
            summary["done"] += 1
            summary["frames"] += result.frames
        bar.update(1)
        bar.set_postfix(frames=summary["frames"], failed=len(summary["failed"]))

    try:
        if workers == 1 or len(todo) <= 1:
            for job in todo:
                record(_extract_one(*job))
        else:
            _run_in_pool(todo, workers, record)
    except KeyboardInterrupt:
        summary["interrupted"] = True
        done, frames, summary["remaining"] = _settle_unreported(todo, reported, run)
        summary["done"] += done
        summary["frames"] += frames
    finally:
        bar.close()
    summary["failed"].sort()
    summary["seconds"] = round(time.perf_counter() - start, 3)
    if summary["interrupted"]:
        log.warning("interrupted: %d videos done, %d left; run the same extraction again to "
                    "resume", summary["done"], summary["remaining"])
        raise ExtractionInterrupted(summary)
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
