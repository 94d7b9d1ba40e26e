"""Flow on disk: the folders :func:`cmmc_lib.flow.extract_flow` writes and how to tell a finished
one from an interrupted one.

Layout (the TSN / denseflow / CoCLR "rawframes" one, see ``data/README.md``): two grey JPEGs per
frame, ``<out>/<video_id>/x_00001.jpg`` and ``y_00001.jpg`` (1-based; ``video_id`` is the
video's file stem), holding the flow quantised as ``uint8 = clip((f + bound) * 255 / (2 *
bound))`` with ``bound = 20`` px (:func:`cmmc_lib.data.rawframes.quantize_flow`, read back by
:func:`cmmc_lib.data.rawframes.read_flow_frames`). Our folders also hold a completion marker
(:data:`COMPLETE_MARKER`, JSON) and are written atomically: a temporary sibling
``.<video_id>.tmp-*`` renamed into place, so a folder is either absent or complete.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

COMPLETE_MARKER = ".complete"     # JSON file written inside a finished flow folder
TMP_TAG = ".tmp-"



class Outcome(NamedTuple):
    """What a worker did with one video: ``frames`` pairs written (0 if none), ``error`` (None
    if fine), ``kept`` (the folder already held the video's finished flow and was left alone)."""
    path: str
    frames: int
    error: str | None = None
    kept: bool = False

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
    marker = read_marker(folder)
    if marker is not None:
        frames = marker.get("frames")
        return frames == pairs and (video_frames is None or frames == video_frames)
    if video_frames is None or pairs == 0:
        return False
    nx = sum(1 for _ in folder.glob("x_*.jpg"))
    ny = sum(1 for _ in folder.glob("y_*.jpg"))
    return nx == ny == pairs and pairs in (video_frames, video_frames - 1)


def read_marker(folder: Path) -> dict | None:
    """Our completion marker of ``folder`` as a dict, or None (absent or unreadable)."""
    try:
        marker = json.loads((Path(folder) / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def remove_temp_folders(folder: Path) -> None:
    """Delete the unfinished ``.<name>.tmp-*`` siblings of ``folder`` (left by a killed run)."""
    for stale in folder.parent.glob(f".{folder.name}{TMP_TAG}*"):
        shutil.rmtree(stale, ignore_errors=True)


def write_flow_folder(flow_q: np.ndarray, folder: str | Path, method: str, bound: float,
                      source: str = "", run: str = "") -> int:
    """Write quantised flow uint8 (N, H, W, 2) and our marker (``method``, ``bound``, the
    ``source`` video's name, ``run``: which extraction wrote it) into ``folder``
    **atomically**: into a temporary sibling folder, then renamed onto ``folder``
    (``os.replace``), so ``folder`` is either absent or complete. Returns N."""
    folder = Path(folder)
    tmp = folder.parent / f".{folder.name}{TMP_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}"
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


def check_bound(bound: float) -> None:
    """The quantisation bound must be a finite number of px > 0 (ValueError)."""
    if not (math.isfinite(bound) and bound > 0):
        raise ValueError(f"bound must be a finite number of px > 0 (flow is stored clipped to "
                         f"[-bound, bound]), got {bound}")
