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
* ``tvl1-torch`` is the same TV-L1 (OpenCV's algorithm and defaults) in PyTorch
  (:mod:`cmmc_lib.data.tvl1`): batched over frame pairs, on CPU or CUDA (``device``,
  ``batch_size``), about 4x OpenCV's speed per CPU core at the same accuracy.
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
from typing import Callable, Iterable, NamedTuple, Sequence

import cv2
import numpy as np

from .rawframes import FLOW_BOUND, dequantize_flow, quantize_flow   # the TSN/CoCLR storage convention

log = logging.getLogger(__name__)

FLOW_METHODS = ("tvl1", "dis", "farneback", "tvl1-torch")
TORCH_FLOW_METHODS = ("tvl1-torch",)   # the methods that take a device and a batch size
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
def make_flow_estimator(method: str = "tvl1", short_side: int | None = None,
                        device: str | None = None) -> FlowFn:
    """A function ``(prev_grey, next_grey) uint8 (H, W) -> float32 (H, W, 2)`` flow in px.

    ``short_side``: the frames' short side (px). DIS's medium preset stops at half resolution
    (finest scale 1); below 128 px that loses 2-px-wide limbs, so small frames are refined down
    to full resolution (finest scale 0). ``device``: for ``tvl1-torch`` only (None: CPU). One
    pair per call; :func:`compute_flow` batches ``tvl1-torch`` over a video's pairs.
    """
    _check_device(method, device, None)
    if method == "tvl1-torch":
        from .tvl1 import tvl1_flow_pairs
        return lambda a, b: tvl1_flow_pairs(a[None], b[None], device=device or "cpu")[0]
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


def compute_flow(frames: np.ndarray, method: str = "tvl1", device: str | None = None,
                 batch_size: int | None = None) -> np.ndarray:
    """Frame-aligned dense flow of a video.

    frames: uint8 (N, H, W, 3) RGB (or (N, H, W) grey), N >= 1.
    device, batch_size: ``tvl1-torch`` only: where it runs (None: CPU; "auto": CUDA if
    available) and how many frame pairs go through it at once (None: 1 on CPU, 32 on CUDA).
    Returns float32 (N, H, W, 2) in px: ``flow[t]`` = motion t -> t+1, last one duplicated.
    """
    _check_device(method, device, batch_size)
    grey = to_grey(frames)
    if len(grey) == 0:
        raise ValueError("compute_flow needs at least one frame, got 0")
    n, h, w = grey.shape
    out = np.zeros((n, h, w, 2), np.float32)
    if n == 1:
        return out
    if method in TORCH_FLOW_METHODS:
        from .tvl1 import tvl1_flow_pairs
        out[:n - 1] = tvl1_flow_pairs(grey[:-1], grey[1:], device=device or "cpu",
                                      batch_size=batch_size)
    else:
        estimate = make_flow_estimator(method, short_side=min(h, w))
        for t in range(n - 1):
            out[t] = estimate(grey[t], grey[t + 1])
    out[n - 1] = out[n - 2]
    return out


def _check_device(method: str, device, batch_size) -> None:
    """``device`` and ``batch_size`` are for the PyTorch methods; OpenCV's run on the CPU."""
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
                     bound: float = FLOW_BOUND, source: str = "", run: str = "",
                     device: str | None = None, batch_size: int | None = None) -> int:
    """Compute, quantize and write the flow of one decoded video **atomically**.

    The pairs and a completion marker are written into a temporary sibling folder which is then
    renamed onto ``folder`` (``os.replace``), so ``folder`` is either absent or complete.
    ``run`` (optional) is recorded in the marker: which extraction wrote the folder.
    ``device``, ``batch_size``: for ``tvl1-torch`` (see :func:`compute_flow`).
    Returns the number of pairs written (= N frames).
    """
    _check_bound(bound)
    torch_options = {k: v for k, v in (("device", device), ("batch_size", batch_size)) if v is not None}
    flow_q = quantize_flow(compute_flow(frames, method, **torch_options), bound)
    return _write_flow_folder(flow_q, folder, method, bound, source, run)


def _write_flow_folder(flow_q: np.ndarray, folder: str | Path, method: str, bound: float,
                       source: str, run: str) -> int:
    """Write quantized flow uint8 (N, H, W, 2) and our marker atomically (see
    :func:`write_video_flow`). Returns N."""
    folder = Path(folder)
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


def _init_worker(torch_single_thread: bool = False) -> None:
    """Pool worker set-up: one OpenCV thread each (and one PyTorch thread for the PyTorch
    methods); Ctrl-C belongs to the main process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)
    if torch_single_thread:
        import torch
        torch.set_num_threads(1)


def _extract_one(path: str, folder: str, method: str, bound: float, short_side: int | None,
                 keep_finished: bool = True, run: str = "", device: str | None = None,
                 batch_size: int | None = None) -> _Outcome:
    """Worker: decode ``path`` and write its flow to ``folder``, unless ``keep_finished`` and
    the folder already holds it (another tool's folder, judged against the decoded frame
    count). Never raises for a bad video."""
    try:
        _remove_temp_folders(Path(folder))                  # leftovers of a killed run
        frames = _decode_rgb(path, short_side)
        if keep_finished and is_flow_complete(folder, video_frames=len(frames)):
            return _Outcome(path, 0, kept=True)
        n = write_video_flow(frames, folder, method, bound, source=Path(path).name, run=run,
                             device=device, batch_size=batch_size)
        return _Outcome(path, n)
    except Exception as exc:                                # a bad video must not stop the run
        return _Outcome(path, 0, f"{type(exc).__name__}: {exc}")


def _prepare_video(path: str, folder: str, short_side: int | None,
                   keep_finished: bool) -> tuple[np.ndarray | None, _Outcome | None]:
    """The batched path's first half of :func:`_extract_one`: (grey frames (N, H, W), None),
    or (None, outcome) when the folder is kept or the video is unreadable. Never raises."""
    try:
        _remove_temp_folders(Path(folder))
        frames = _decode_rgb(path, short_side)
        if keep_finished and is_flow_complete(folder, video_frames=len(frames)):
            return None, _Outcome(path, 0, kept=True)
        if len(frames) == 0:
            raise ValueError("compute_flow needs at least one frame, got 0")
        return to_grey(frames), None
    except Exception as exc:
        return None, _Outcome(path, 0, f"{type(exc).__name__}: {exc}")


def _check_bound(bound: float) -> None:
    if not (math.isfinite(bound) and bound > 0):
        raise ValueError(f"bound must be a finite number of px > 0 (flow is stored clipped to "
                         f"[-bound, bound]), got {bound}")


def _check_extraction_args(method: str, workers: int, bound: float, short_side: int | None,
                           device: str | None = None, batch_size: int | None = None) -> str | None:
    """Refuse settings that would fail on every video, before any video is read. Returns the
    device the PyTorch methods will use (e.g. "cpu", "cuda"), None for OpenCV's."""
    if method not in FLOW_METHODS:
        raise ValueError(f"unknown flow method {method!r}; choose one of {', '.join(FLOW_METHODS)}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    _check_bound(bound)
    if short_side is not None and short_side < 1:
        raise ValueError(f"short_side must be >= 1 px (or None to keep the videos' size), "
                         f"got {short_side}")
    _check_device(method, device, batch_size)
    if method not in TORCH_FLOW_METHODS:
        return None
    from .tvl1 import resolve_device
    resolved = resolve_device("cpu" if device is None and workers > 1 else device)
    if resolved.type != "cpu" and workers > 1:
        raise ValueError(f"workers={workers}: on {resolved.type} one process drives the device "
                         f"(use batch_size for throughput); workers > 1 is for the CPU")
    return str(resolved)


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


def _run_in_pool(jobs: list[tuple], workers: int, on_result: Callable[[_Outcome], None],
                 torch_single_thread: bool = False) -> None:
    """:func:`_extract_one` over ``jobs`` in ``workers`` spawned processes; ``on_result`` runs
    here as each video finishes. Ctrl-C (KeyboardInterrupt in this process): the queued videos
    are cancelled, the running ones killed (their folders stay absent or complete: writes are
    atomic), and KeyboardInterrupt is re-raised once the pool is down."""
    # spawn: safe under Jupyter and with threads (torch, tqdm) alive in the parent
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)),
                               mp_context=get_context("spawn"), initializer=_init_worker,
                               initargs=(torch_single_thread,))
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


class _PendingVideo:
    """A decoded video in the batched path: its grey frames, the flow filled in batch by batch,
    and how many of its N - 1 frame pairs have gone to the device."""

    def __init__(self, job: tuple, grey: np.ndarray):
        self.job, self.grey = job, grey
        self.flow = np.zeros((*grey.shape, 2), np.float32)
        self.pairs, self.sent = len(grey) - 1, 0


def _extract_batched(jobs: list[tuple], device: str, batch_size: int | None,
                     on_result: Callable[[_Outcome], None], prefetch: int = 2) -> None:
    """``tvl1-torch`` over ``jobs`` in this process, with the device kept busy: frame pairs of
    consecutive videos (of one frame size) share batches of ``batch_size`` (a video's last
    pairs ride with the next video's first), videos are decoded ``prefetch`` ahead in a
    thread, and each is written atomically in another thread once all its fields are done.
    ``on_result`` runs here for each video, as with :func:`_run_in_pool`.

    Ctrl-C (KeyboardInterrupt here): nothing new starts, the writes already queued finish
    (their folders end complete) and KeyboardInterrupt is re-raised.
    """
    from concurrent.futures import ThreadPoolExecutor
    from collections import deque

    from .tvl1 import default_batch_size, tvl1_flow_pairs

    batch_size = default_batch_size(device) if batch_size is None else batch_size
    decoder, writer = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
    upcoming = iter(jobs)
    decoding: deque = deque()                   # (job, future of _prepare_video) in job order
    queue: deque[_PendingVideo] = deque()       # decoded videos with pairs still to compute
    writes: list[tuple[str, Future]] = []

    def decode_next() -> None:
        job = next(upcoming, None)
        if job is not None:
            path, folder, _method, _bound, short_side, keep_finished = job[:6]
            decoding.append((job, decoder.submit(_prepare_video, path, folder, short_side,
                                                 keep_finished)))

    def write(video: _PendingVideo) -> None:
        path, folder, method, bound, _s, _k, run = video.job[:7]
        video.flow[-1] = video.flow[-2] if len(video.flow) > 1 else 0.0   # frame-aligned
        flow_q = quantize_flow(video.flow, bound)
        video.grey = video.flow = None
        writes.append((path, writer.submit(_write_flow_folder, flow_q, folder, method, bound,
                                           Path(path).name, run)))

    def report_writes(wait: bool) -> None:
        while writes and (wait or writes[0][1].done() or len(writes) > 4):
            path, future = writes.pop(0)
            try:
                on_result(_Outcome(path, future.result()))
            except Exception as exc:                        # a failed write fails one video
                on_result(_Outcome(path, 0, f"{type(exc).__name__}: {exc}"))

    for _ in range(prefetch):
        decode_next()
    try:
        while decoding or queue:
            # decode until a batch is full, or the videos run out
            while decoding and sum(v.pairs - v.sent for v in queue) < batch_size:
                job, future = decoding.popleft()
                decode_next()
                grey, outcome = future.result()
                if outcome is not None:
                    on_result(outcome)
                elif len(grey) == 1:
                    write(_PendingVideo(job, grey))         # one frame: one zero field
                else:
                    queue.append(_PendingVideo(job, grey))
            if not queue:
                continue
            # one batch: pairs from the front videos that share the first one's frame size
            size, parts, taken = queue[0].grey.shape[1:], [], 0
            for video in queue:
                if video.grey.shape[1:] != size or taken == batch_size:
                    break
                n = min(video.pairs - video.sent, batch_size - taken)
                parts.append((video, video.sent, video.sent + n))
                video.sent, taken = video.sent + n, taken + n
            prev = np.concatenate([v.grey[a:b] for v, a, b in parts])
            nxt = np.concatenate([v.grey[a + 1:b + 1] for v, a, b in parts])
            try:
                flow = tvl1_flow_pairs(prev, nxt, device=device, batch_size=len(prev))
            except Exception as exc:                        # e.g. out of device memory
                failed = {id(v) for v, _, _ in parts}
                for video in [v for v in queue if id(v) in failed]:
                    queue.remove(video)
                    on_result(_Outcome(video.job[0], 0, f"{type(exc).__name__}: {exc}"))
                continue
            offset = 0
            for video, a, b in parts:
                video.flow[a:b] = flow[offset:offset + b - a]
                offset += b - a
            while queue and queue[0].sent == queue[0].pairs:
                write(queue.popleft())
            report_writes(wait=False)
        report_writes(wait=True)
    finally:
        for _job, future in decoding:
            future.cancel()
        decoder.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True)                          # queued writes finish: complete folders


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


def _plan_extraction(videos: list[Path], out_dir: Path, method: str, bound: float, short_side: int | None,
                     overwrite: bool, run: str, device: str | None, batch_size: int | None) -> tuple[list, int]:
    """The jobs of an extraction (one tuple of :func:`_extract_one`'s arguments per video to do)
    and how many videos are finished already (ValueError when two videos share an id)."""
    by_id: dict[str, Path] = {}
    for v in videos:
        if v.stem in by_id:
            raise ValueError(f"two videos share the id {v.stem!r}: {by_id[v.stem]} and {v}")
        by_id[v.stem] = v
    todo, skipped, other_method = [], 0, []
    for vid, path in by_id.items():
        if not overwrite and is_flow_complete(out_dir / vid):      # our marker: no decoding needed
            skipped += 1
            made = _read_marker(out_dir / vid)
            if made and (made.get("method"), made.get("bound")) != (method, bound):
                other_method.append(vid)
        else:
            todo.append((str(path), str(out_dir / vid), method, bound, short_side, not overwrite, run,
                         device, batch_size))
    if other_method:
        log.warning("%d finished videos in %s were made with another method or bound (e.g. %s);"
                    " kept as they are: pass overwrite=True to recompute them",
                    len(other_method), out_dir, other_method[0])
    return todo, skipped


def extract_flow(inputs: str | Path | Iterable[str | Path], out_dir: str | Path,
                 method: str = "tvl1", workers: int = 1, bound: float = FLOW_BOUND,
                 short_side: int | None = None, overwrite: bool = False,
                 progress: bool = True, device: str | None = None,
                 batch_size: int | None = None) -> dict:
    """Extract frame-aligned flow for every video in ``inputs`` into ``out_dir/<video_id>/``.

    Resumable: a video whose folder carries our completion marker is skipped unless
    ``overwrite``; a folder without it (another tool's, or unfinished) is kept only when its
    pair count matches the video's decoded frame count (:func:`is_flow_complete`), else
    redone. Each video is written atomically. ``workers > 1`` uses a process pool over videos
    (each worker single-threaded OpenCV). An unreadable video is logged and listed in
    ``failed``; the run goes on. ``bound`` (px, > 0) and ``short_side`` (px, >= 1, or None)
    are checked before any video is read (ValueError).

    ``tvl1-torch`` takes ``device`` ("cpu", "cuda", "cuda:1", "auto": CUDA if available; None:
    "auto" with one worker, the CPU with more) and ``batch_size`` (frame pairs per call; None:
    1 on CPU, 32 on CUDA).
    With ``workers == 1`` (always on CUDA: more is refused) one process computes batches that
    may span consecutive videos, decoding ahead and writing behind in threads; on the CPU it
    computes with one PyTorch thread, so use ``workers`` = the number of cores (each worker
    process takes whole videos, one thread each: the fastest use of many cores).

    Ctrl-C (KeyboardInterrupt) stops the run promptly: videos not started are cancelled,
    running ones are killed and their temporary folders removed, finished ones are kept, and
    :class:`ExtractionInterrupted` is raised carrying the summary (``interrupted`` True; run
    again to resume).

    Returns a JSON-serialisable dict: ``done`` (videos written), ``skipped_existing``,
    ``failed`` (sorted list of (path, error)), ``frames`` (flow pairs written), ``seconds``,
    ``method``, ``out_dir``, ``interrupted`` (False: see above), ``remaining`` (0), and for
    ``tvl1-torch`` the ``device`` it ran on.
    """
    from tqdm.auto import tqdm

    device = _check_extraction_args(method, workers, bound, short_side, device, batch_size)
    start = time.perf_counter()
    videos = find_videos(inputs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = uuid.uuid4().hex[:12]                 # recorded in the markers this call writes
    todo, skipped = _plan_extraction(videos, out_dir, method, bound, short_side, overwrite, run, device, batch_size)
    summary = {"done": 0, "skipped_existing": skipped, "failed": [], "frames": 0,
               "seconds": 0.0, "method": method, "out_dir": str(out_dir),
               "interrupted": False, "remaining": 0}
    if device is not None:
        summary["device"] = device
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
        if method in TORCH_FLOW_METHODS and (workers == 1 or len(todo) <= 1):
            _extract_batched(todo, device, batch_size, record)
        elif workers == 1 or len(todo) <= 1:
            for job in todo:
                record(_extract_one(*job))
        else:
            _run_in_pool(todo, workers, record, torch_single_thread=method in TORCH_FLOW_METHODS)
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
                     threads: int = 1, device: str | None = None,
                     batch_size: int | None = None) -> dict:
    """Flow fields per second for ``method`` on ``frames`` (uint8 (N, H, W, 3), N >= 2), with
    OpenCV (and PyTorch, on the CPU) limited to ``threads`` threads (restored afterwards).
    Returns a JSON-able dict with ``fps`` (wall clock) and ``fps_per_cpu_second`` (fields per
    second of this process's CPU time: the per-core figure, robust to other processes sharing
    the machine; None on CUDA).

    ``tvl1-torch`` also takes ``device`` and ``batch_size``: it times ``max(pairs, batch_size)``
    pairs rounded up to whole batches, taking the video's consecutive pairs in turn (cycling
    if the video is short), after one warm-up batch (which compiles, on CUDA), and adds
    ``iterations_per_field`` (TV-L1 iterations summed over the pyramid levels).
    """
    grey = to_grey(frames)
    if len(grey) < 2:
        raise ValueError("measure_flow_fps needs at least 2 frames")
    _check_device(method, device, batch_size)
    if method in TORCH_FLOW_METHODS:
        return _measure_torch_fps(grey, method, pairs, threads, device, batch_size)
    pairs = min(pairs, len(grey) - 1)
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


def _measure_torch_fps(grey: np.ndarray, method: str, pairs: int, threads: int,
                       device: str | None, batch_size: int | None) -> dict:
    import torch

    from .tvl1 import default_batch_size, resolve_device, tvl1_flow_pairs
    dev = resolve_device(device)
    b = default_batch_size(dev) if batch_size is None else batch_size
    batches = max(1, math.ceil(pairs / b))
    available = len(grey) - 1
    index = [np.arange(k * b, (k + 1) * b) % available for k in range(batches + 1)]
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    stats: dict = {}
    tvl1_flow_pairs(grey[index[0]], grey[index[0] + 1], device=dev, batch_size=b,
                    threads=threads)                                             # warm-up
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    for k in range(1, batches + 1):
        tvl1_flow_pairs(grey[index[k]], grey[index[k] + 1], device=dev, batch_size=b,
                        stats=stats, threads=threads)
    sync()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    fields = batches * b
    return {"method": method, "pairs": fields, "height": int(grey.shape[1]),
            "width": int(grey.shape[2]), "threads": threads if dev.type == "cpu" else None,
            "device": str(dev), "batch_size": b, "seconds": round(seconds, 4),
            "cpu_seconds": round(cpu, 4), "fps": round(fields / seconds, 3),
            "fps_per_cpu_second": round(fields / max(cpu, 1e-9), 3) if dev.type == "cpu" else None,
            "iterations_per_field": round(stats.get("iterations", 0) / fields, 1)}


def _frames_at(video: str | Path, size: tuple[int, int] | None, count: int | None = None,
               start: int = 0) -> np.ndarray:
    """uint8 grey (N, H, W) frames ``start, start+1, ...`` of ``video`` (``count`` of them, or
    all), resized to ``size`` (H, W) if given and different."""
    grey = to_grey(_decode_rgb(video))
    grey = grey[start:start + count] if count is not None else grey[start:]
    if size is not None and grey.shape[1:] != tuple(size):
        grey = np.stack([cv2.resize(g, (size[1], size[0]), interpolation=cv2.INTER_AREA)
                         for g in grey])
    return grey


def _device_name(device) -> str:
    import torch
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    import platform
    return platform.processor() or platform.machine()


def bench_flow(videos: Sequence[str | Path], methods: Sequence[str] | None = None,
               device: str | None = None, batch_sizes: Sequence[int] | None = None,
               pairs: int = 8, threads: int = 1, size: tuple[int, int] = (240, 320)) -> dict:
    """Fields per second of each flow method at ``size`` (H, W; default 320x240) on consecutive
    frames of ``videos[0]`` (resized if needed): what ``cmmc bench flow`` prints.

    OpenCV's methods run on the CPU with ``threads`` threads (1: the per-core figure);
    ``tvl1-torch`` runs on ``device`` (None/"auto": CUDA if available) once per batch size in
    ``batch_sizes`` (default 1, 2, 4, 8 on CPU; 1 to 64 in powers of two on CUDA), with
    ``threads`` PyTorch threads on the CPU. Returns a JSON-able dict: ``methods`` (one
    :func:`measure_flow_fps` dict per OpenCV method), ``tvl1_torch`` (``by_batch_size``:
    str(batch size) -> dict, ``best_batch_size``, ``best_fps``, ``best_fps_per_cpu_second``),
    ``speedup_per_core_vs_opencv_tvl1`` (CPU only, when both ran) and the set-up (device and
    its name, versions, size, video).
    """
    import torch

    from .tvl1 import resolve_device
    if not videos:
        raise ValueError("bench_flow needs at least one video")
    methods = list(methods or FLOW_METHODS)
    for m in methods:
        _check_device(m, None, None)
    dev = resolve_device(device)
    if batch_sizes is None:
        batch_sizes = (1, 2, 4, 8) if dev.type == "cpu" else (1, 2, 4, 8, 16, 32, 64)
    need = max([pairs, *batch_sizes]) + 1
    grey = _frames_at(videos[0], size, count=need)
    if len(grey) < 2:
        raise ValueError(f"{videos[0]} has fewer than 2 frames")
    result = {"video": str(videos[0]), "height": int(grey.shape[1]), "width": int(grey.shape[2]),
              "pairs": pairs, "threads": threads, "device": str(dev),
              "device_name": _device_name(dev), "torch": torch.__version__,
              "opencv": cv2.__version__, "methods": {}}
    for m in methods:
        if m in TORCH_FLOW_METHODS:
            runs = {str(b): measure_flow_fps(grey, m, pairs=pairs, threads=threads, device=str(dev),
                                             batch_size=b) for b in batch_sizes}
            best = max(runs, key=lambda b: runs[b]["fps"])
            result["tvl1_torch"] = {"by_batch_size": runs, "best_batch_size": int(best),
                                    "best_fps": runs[best]["fps"],
                                    "best_fps_per_cpu_second": max(
                                        (r["fps_per_cpu_second"] or 0) for r in runs.values()) or None}
        else:
            result["methods"][m] = measure_flow_fps(grey, m, pairs=pairs, threads=threads)
    if dev.type == "cpu" and "tvl1" in result["methods"] and "tvl1_torch" in result:
        result["speedup_per_core_vs_opencv_tvl1"] = round(
            result["tvl1_torch"]["best_fps_per_cpu_second"]
            / result["methods"]["tvl1"]["fps_per_cpu_second"], 2)
    return result


# --------------------------------------------------------------------------- accuracy
def flow_accuracy(videos: Sequence[str | Path], methods: Sequence[str] | None = None,
                  kinds: Sequence[str] = ("sinusoids", "affine"), max_px: float = 4.0,
                  frames_per_video: int = 1, size: tuple[int, int] | None = None,
                  device: str | None = "cpu", seed: int = 0) -> dict:
    """End-point error against ground truth on real frames warped with known smooth flow.

    For each video, ``frames_per_video`` frames (evenly spaced) become grey second frames
    ``i1``; for each field kind (:func:`cmmc_lib.data.tvl1.smooth_flow_field`, magnitude up to
    ``max_px``) the first frame is ``i0(x) = i1(x + f(x))``, so the true flow of ``(i0, i1)`` is
    ``f``. The EPE (px) is averaged over the pixels away from the border
    (:func:`cmmc_lib.data.tvl1.valid_mask`). ``size``: resize the frames to (H, W) first.

    Returns ``{"pairs": [{video, frame, kind}...], "methods": {m: {"epe": mean, "per_pair":
    [...], "seconds": total}}, "max_px", "size"}``.
    """
    from .tvl1 import endpoint_error, smooth_flow_field, valid_mask, warp_pair
    methods = list(methods or FLOW_METHODS)
    for m in methods:
        _check_device(m, device if m in TORCH_FLOW_METHODS else None, None)
    pairs, cases = [], []
    for v, video in enumerate(videos):
        grey = _frames_at(video, size)
        for k in range(frames_per_video):
            t = int((k + 0.5) * len(grey) / frames_per_video)
            for kind in kinds:
                truth = smooth_flow_field(*grey.shape[1:], kind=kind, max_px=max_px,
                                          seed=seed + 1000 * v + 10 * k + kinds.index(kind))
                i0, i1 = warp_pair(grey[t], truth)
                cases.append((i0, i1, truth, valid_mask(truth)))
                pairs.append({"video": Path(video).name, "frame": t, "kind": kind})
    out = {"pairs": pairs, "max_px": max_px, "size": list(cases[0][0].shape) if cases else None,
           "methods": {}}
    for m in methods:
        opts = {"device": device} if m in TORCH_FLOW_METHODS else {}
        errors, t0 = [], time.perf_counter()
        for i0, i1, truth, mask in cases:
            flow = compute_flow(np.stack([i0, i1]), m, **opts)[0]
            errors.append(round(endpoint_error(flow, truth, mask), 4))
        out["methods"][m] = {"epe": round(float(np.mean(errors)), 4), "per_pair": errors,
                             "seconds": round(time.perf_counter() - t0, 2)}
    return out


def flow_agreement(videos: Sequence[str | Path], method: str = "tvl1-torch",
                   reference: str = "tvl1", pairs_per_video: int = 2,
                   size: tuple[int, int] | None = None, device: str | None = "cpu") -> dict:
    """How far ``method``'s flow is from ``reference``'s on real consecutive frames: the mean
    end-point distance (px) over all pixels, per pair and overall, and the reference's mean
    flow magnitude for scale. Pairs are evenly spaced in each video."""
    from .tvl1 import endpoint_error
    rows = []
    for video in videos:
        grey = _frames_at(video, size)
        for k in range(pairs_per_video):
            t = min(int((k + 0.5) * len(grey) / pairs_per_video), len(grey) - 2)
            pair = grey[t:t + 2]
            a = compute_flow(pair, method, **({"device": device} if method in TORCH_FLOW_METHODS else {}))[0]
            r = compute_flow(pair, reference, **({"device": device} if reference in TORCH_FLOW_METHODS else {}))[0]
            rows.append({"video": Path(video).name, "frame": t,
                         "epe": round(endpoint_error(a, r), 4),
                         "reference_magnitude": round(float(np.linalg.norm(r, axis=-1).mean()), 4)})
    return {"method": method, "reference": reference, "pairs": rows,
            "epe": round(float(np.mean([r["epe"] for r in rows])), 4) if rows else None,
            "reference_magnitude": round(float(np.mean([r["reference_magnitude"] for r in rows])), 4)
            if rows else None}


# --------------------------------------------------------------------------- for the course
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
    from .tvl1 import resolve_device
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
                from .tvl1 import tvl1_flow_pairs
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
