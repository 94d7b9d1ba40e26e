"""Flow for many videos: :func:`extract_flow` over a video, a folder or a list of them into the
rawframes layout (:mod:`cmmc_lib.flow.folders`): resumable, parallel, Ctrl-C-safe.

OpenCV's methods (and ``tvl1-torch`` with several workers) run one video per job, serially or
on a pool of worker processes (:func:`cmmc_lib.jobs.run_jobs`); ``tvl1-torch`` in one process
batches frame pairs across videos (:mod:`cmmc_lib.flow.batched`, imported on use: it needs
torch, about 3 s to import, which the OpenCV methods need not pay).
"""
from __future__ import annotations

import logging
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from ..data.rawframes import FLOW_BOUND, quantize_flow
from ..data.video import VIDEO_EXTENSIONS
from ..jobs import run_jobs
from .estimators import FLOW_METHODS, TORCH_FLOW_METHODS, check_flow_options, compute_flow
from .folders import Outcome, check_bound, is_flow_complete, read_marker, remove_temp_folders, write_flow_folder
from .frames import decode_rgb

log = logging.getLogger(__name__)



class ExtractionInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`extract_flow` cleanly; ``summary`` is its report of what was done
    (``interrupted`` True, ``remaining`` videos left). A KeyboardInterrupt, so callers that do
    not look for it stop as they would on any Ctrl-C."""

    def __init__(self, summary: dict):
        super().__init__(f"flow extraction interrupted: {summary['done']} videos done, "
                         f"{summary['remaining']} left")
        self.summary = summary


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

    ``tvl1-torch`` takes ``device`` ("cpu", "cuda", "cuda:1", "auto": CUDA, else MPS, else
    CPU, see :func:`cmmc_lib.devices.resolve_device`; None: "auto" with one worker, the CPU with
    more) and ``batch_size`` (frame pairs per call; None:
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
    device = _check_extraction_args(method, workers, bound, short_side, device, batch_size)
    start = time.perf_counter()
    videos = find_videos(inputs)
    if not videos:
        raise FileNotFoundError(f"no video files ({', '.join(sorted(VIDEO_EXTENSIONS))}) in {inputs}: nothing to "
                                f"extract")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = uuid.uuid4().hex[:12]                 # recorded in the markers this call writes
    todo, skipped = _plan_extraction(videos, out_dir, method, bound, short_side, overwrite, run,
                                     device, batch_size)
    summary = {"done": 0, "skipped_existing": skipped, "failed": [], "frames": 0,
               "seconds": 0.0, "method": method, "out_dir": str(out_dir),
               "interrupted": False, "remaining": 0}
    if device is not None:
        summary["device"] = device
    reported: set[str] = set()
    interrupted = run_jobs(
        _extract_one, todo, partial(_record, summary, reported), workers=workers,
        progress=progress, desc=f"flow {method}",
        postfix=lambda: {"frames": summary["frames"], "failed": len(summary["failed"])},
        worker_setup=_one_thread_each, worker_setup_args=(method in TORCH_FLOW_METHODS,),
        serial=partial(_extract_batched, device=device, batch_size=batch_size)
        if method in TORCH_FLOW_METHODS else None)
    if interrupted:
        _settle_unreported(summary, todo, reported, run)
    return _finish(summary, start)


# --------------------------------------------------------------------------- before the run
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


def _check_extraction_args(method: str, workers: int, bound: float, short_side: int | None,
                           device: str | None = None, batch_size: int | None = None) -> str | None:
    """Refuse settings that would fail on every video, before any video is read. Returns the
    device the PyTorch methods will use (e.g. "cpu", "cuda:0"), None for OpenCV's."""
    if method not in FLOW_METHODS:
        raise ValueError(f"unknown flow method {method!r}; choose one of {', '.join(FLOW_METHODS)}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    check_bound(bound)
    if short_side is not None and short_side < 1:
        raise ValueError(f"short_side must be >= 1 px (or None to keep the videos' size), "
                         f"got {short_side}")
    check_flow_options(method, device, batch_size)
    if method not in TORCH_FLOW_METHODS:
        return None
    from ..devices import resolve_device       # torch: ~3 s to import, for tvl1-torch only
    resolved = resolve_device("cpu" if device is None and workers > 1 else device)
    if resolved.type != "cpu" and workers > 1:
        raise ValueError(f"workers={workers}: on {resolved.type} one process drives the device "
                         f"(use batch_size for throughput); workers > 1 is for the CPU")
    return str(resolved)


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
            made = read_marker(out_dir / vid)
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


# --------------------------------------------------------------------------- one video
def write_video_flow(frames: np.ndarray, folder: str | Path, method: str = "tvl1",
                     bound: float = FLOW_BOUND, source: str = "", run: str = "",
                     device: str | None = None, batch_size: int | None = None) -> int:
    """Compute, quantize and write the flow of one decoded video **atomically**
    (:func:`cmmc_lib.flow.folders.write_flow_folder`: ``folder`` is either absent or
    complete). ``run`` (optional) is recorded in the marker: which extraction wrote the folder.
    ``device``, ``batch_size``: for ``tvl1-torch`` (see :func:`compute_flow`).
    Returns the number of pairs written (= N frames).
    """
    check_bound(bound)
    torch_options = {k: v for k, v in (("device", device), ("batch_size", batch_size)) if v is not None}
    flow_q = quantize_flow(compute_flow(frames, method, **torch_options), bound)
    return write_flow_folder(flow_q, folder, method, bound, source, run)


def _extract_one(path: str, folder: str, method: str, bound: float, short_side: int | None,
                 keep_finished: bool = True, run: str = "", device: str | None = None,
                 batch_size: int | None = None) -> Outcome:
    """Worker: decode ``path`` and write its flow to ``folder``, unless ``keep_finished`` and
    the folder already holds it (another tool's folder, judged against the decoded frame
    count). Never raises for a bad video."""
    try:
        remove_temp_folders(Path(folder))                   # leftovers of a killed run
        frames = decode_rgb(path, short_side)
        if keep_finished and is_flow_complete(folder, video_frames=len(frames)):
            return Outcome(path, 0, kept=True)
        n = write_video_flow(frames, folder, method, bound, source=Path(path).name, run=run,
                             device=device, batch_size=batch_size)
        return Outcome(path, n)
    except Exception as exc:                                # a bad video must not stop the run
        return Outcome(path, 0, f"{type(exc).__name__}: {exc}")


def _one_thread_each(torch_too: bool) -> None:
    """Pool worker set-up: one OpenCV thread each (and one PyTorch thread for the PyTorch
    methods)."""
    cv2.setNumThreads(1)
    if torch_too:
        import torch                            # ~3 s to import: only the tvl1-torch workers
        torch.set_num_threads(1)


def _extract_batched(jobs: list[tuple], report, device: str, batch_size: int | None) -> None:
    """``tvl1-torch`` in this process, batched across videos (see :mod:`cmmc_lib.flow.batched`)."""
    from .batched import extract_batched       # torch: ~3 s to import, for tvl1-torch only
    extract_batched(jobs, device, batch_size, report)


# --------------------------------------------------------------------------- the results
def _record(summary: dict, reported: set[str], result: Outcome) -> None:
    """Count one video's outcome into ``summary`` (and its path into ``reported``)."""
    reported.add(result.path)
    if result.error is not None:
        log.warning("flow: skipping unreadable video %s (%s)", result.path, result.error)
        summary["failed"].append((result.path, result.error))
    elif result.kept:
        summary["skipped_existing"] += 1
    else:
        summary["done"] += 1
        summary["frames"] += result.frames


def _settle_unreported(summary: dict, jobs: list[tuple], reported: set[str], run: str) -> None:
    """After an interruption: for each job whose result never arrived, remove its temporary
    folders and tell whether this run finished it anyway; count those into ``summary``
    (``done``, ``frames``) with the videos left to do (``remaining``), marked ``interrupted``."""
    done = frames = left = 0
    for path, folder, *_ in jobs:
        if path in reported:
            continue
        remove_temp_folders(Path(folder))
        marker = read_marker(Path(folder))
        if marker is not None and marker.get("run") == run and is_flow_complete(folder):
            done, frames = done + 1, frames + int(marker["frames"])
        else:
            left += 1
    summary["interrupted"] = True
    summary["done"] += done
    summary["frames"] += frames
    summary["remaining"] = left


def _finish(summary: dict, start: float) -> dict:
    """The summary with its failures sorted and the time taken; raises
    :class:`ExtractionInterrupted` carrying it when the run was interrupted."""
    summary["failed"].sort()
    summary["seconds"] = round(time.perf_counter() - start, 3)
    if summary["interrupted"]:
        log.warning("interrupted: %d videos done, %d left; run the same extraction again to "
                    "resume", summary["done"], summary["remaining"])
        raise ExtractionInterrupted(summary)
    return summary
