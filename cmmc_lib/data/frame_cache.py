"""A pre-decoded frame cache: every video's frames (and flow) once, uint8, at the short side.

Decoding is what a video loader spends its time on: PyAV decodes a clip from the start of its
video up to the last frame asked for, and flow rawframes cost two JPEG decodes and a resize per
frame. When the GPU waits for the loader, decode everything once (``cmmc data cache``) and let
the dataset read clips by memory-mapping::

    <cache>/cache.json              {"format": "cmmc-frame-cache", "version": 1, "short_side": 128}
    <cache>/rgb/<video_id>.npy      uint8 (N, H, W, 3): decode_video(video, short_side)
    <cache>/flow/<video_id>.npy     uint8 (N, H, W, 2): the quantised flow, read_flow_frames(...)

``<cache>`` is ``<root>/frames_s<short_side>`` unless given (``data.frame_cache=DIR``, e.g. when
the dataset root is read-only). ``<video_id>`` is the video file's stem (RGB) and the flow
folder's name (flow). The arrays are exactly what the dataset would decode, so a run reads the
same clips, bit for bit, with or without the cache; a video missing from the cache (a cache
still being built, a video that failed to decode) is decoded as before.

Why plain ``.npy``: a clip is a contiguous slice of its video's array, so a read is one copy out
of the page cache, shared by every loader worker, with no decoder at all. The price is size:
UCF101 at short side 128 is about 12 MB of RGB and 8 MB of flow per video (about 270 GB for
the 13320 videos), against 6.5 GB of compressed video. Build only what is read, e.g.
``--modalities rgb`` when flow is already fast enough, on a local disk.
"""
from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from ..jobs import run_jobs
from ..files import atomic_write
from .rawframes import FrameReadError, count_frames, read_flow_frames
from .video import VIDEO_EXTENSIONS, decode_video

log = logging.getLogger(__name__)

CACHE_FORMAT = "cmmc-frame-cache"
CACHE_VERSION = 1
CACHE_MODALITIES = ("rgb", "flow")
_CHANNELS = {"rgb": 3, "flow": 2}


def default_cache_dir(root: str | Path, short_side: int) -> Path:
    """Where ``data.frame_cache=auto`` looks: ``<root>/frames_s<short_side>``."""
    return Path(root) / f"frames_s{int(short_side)}"


def read_cache_meta(path: str | Path) -> dict | None:
    """The ``cache.json`` of a cache folder, or None when there is none."""
    meta = Path(path) / "cache.json"
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{meta} is not a frame-cache description: {e}") from None
    if data.get("format") != CACHE_FORMAT:
        raise ValueError(f"{meta} is not a frame cache (format {data.get('format')!r})")
    return data


class FrameCache:
    """Read side of a cache folder built at ``short_side`` (see the module docstring).

    Pickles as its path (to DataLoader workers); each process keeps the last ``keep_open``
    arrays memory-mapped (opening one costs about half a millisecond) and copies the frames
    asked for out of them. ``in_memory``: every array read is loaded whole into RAM and kept
    (``data.in_memory``, for small data: no reopening when a random order visits more videos than
    ``keep_open``, the same frames bit for bit).
    """

    keep_open = 32

    def __init__(self, path: str | Path, short_side: int, in_memory: bool = False):
        self.path = Path(path)
        meta = read_cache_meta(self.path)
        if meta is None:
            raise FileNotFoundError(f"no frame cache at {self.path} (no cache.json): build it with "
                                    f"`cmmc data cache --root ROOT --out {self.path} --short-side {short_side}`")
        if int(meta.get("short_side", -1)) != int(short_side):
            raise ValueError(f"the frame cache {self.path} holds frames at short side {meta.get('short_side')}, "
                             f"but data.short_side is {short_side}: build one at {short_side} "
                             f"(`cmmc data cache --short-side {short_side}`) or set data.frame_cache=off")
        self.short_side = int(short_side)
        self.in_memory = bool(in_memory)
        self._open_maps: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open_maps": OrderedDict()}

    def file(self, modality: str, video_id: str) -> Path:
        return self.path / modality / f"{video_id}.npy"

    def has(self, modality: str, video_id: str) -> bool:
        return modality in CACHE_MODALITIES and self.file(modality, video_id).is_file()

    def _open(self, modality: str, video_id: str) -> np.ndarray:
        key = (modality, video_id)
        if key in self._open_maps:
            self._open_maps.move_to_end(key)
            return self._open_maps[key]
        path = self.file(modality, video_id)
        try:
            arr = np.load(path, mmap_mode=None if self.in_memory else "r", allow_pickle=False)
        except (OSError, ValueError) as exc:        # e.g. a truncated file: "mmap length is greater than ..."
            raise FrameReadError(f"{path}: unreadable frame-cache file ({exc}); rebuild it with `cmmc data "
                                 f"cache`") from None
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != _CHANNELS[modality] or not len(arr):
            raise FrameReadError(f"{path}: expected uint8 (N, H, W, {_CHANNELS[modality]}), got {arr.dtype} "
                                 f"{arr.shape}; rebuild it with `cmmc data cache`")
        self._open_maps[key] = arr
        if len(self._open_maps) > self.keep_open and not self.in_memory:
            self._open_maps.popitem(last=False)
        return arr

    def count(self, modality: str, video_id: str) -> int:
        """Frames of the cached video (read from the file's header)."""
        return int(self._open(modality, video_id).shape[0])

    def read(self, modality: str, video_id: str, indices: np.ndarray) -> np.ndarray:
        """uint8 (*indices.shape, H, W, C): the frames at ``indices`` (all < count)."""
        return np.asarray(self._open(modality, video_id)[np.asarray(indices)])

    def __repr__(self) -> str:
        return f"FrameCache({str(self.path)!r}, short_side={self.short_side})"


def open_frame_cache(setting: str | None, root: str | Path, short_side: int,
                     in_memory: bool = False) -> FrameCache | None:
    """The cache ``data.frame_cache`` asks for: ``auto`` -> ``<root>/frames_s<short_side>`` when
    it holds a cache (else None); ``off`` (or empty) -> None; anything else is a folder that
    must hold a cache built at ``short_side``. ``in_memory``: see :class:`FrameCache`."""
    value = (setting or "off").strip()
    if value.lower() in ("off", "none", "false", "no", "0", ""):
        return None
    if value.lower() == "auto":
        path = default_cache_dir(root, short_side)
        return FrameCache(path, short_side, in_memory) if read_cache_meta(path) is not None else None
    return FrameCache(Path(value).expanduser(), short_side, in_memory)


# --------------------------------------------------------------------------- building
def _sources(root: Path, modalities: Sequence[str]) -> list[tuple[str, str, Path]]:
    """(modality, video_id, source) for every video file under videos/ and flow folder under flow/."""
    out: list[tuple[str, str, Path]] = []
    if "rgb" in modalities:
        seen: dict[str, Path] = {}
        videos = root / "videos"
        for path in sorted(videos.rglob("*")) if videos.is_dir() else []:
            if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            if path.stem in seen:
                raise ValueError(f"two videos share the id {path.stem!r}: {seen[path.stem]} and {path}")
            seen[path.stem] = path
            out.append(("rgb", path.stem, path))
    if "flow" in modalities:
        flow = root / "flow"
        for folder in sorted(flow.iterdir()) if flow.is_dir() else []:
            if folder.is_dir() and not folder.name.startswith("."):
                out.append(("flow", folder.name, folder))
    return out


def build_frame_cache(root: str | Path, out: str | Path | None = None, short_side: int = 128,
                      modalities: Iterable[str] = CACHE_MODALITIES, workers: int = 1,
                      progress: bool = True) -> dict:
    """Decode every video (and flow folder) of a dataset root into a cache folder; resumable.

    ``out`` defaults to ``<root>/frames_s<short_side>`` (what ``data.frame_cache=auto`` reads).
    Videos whose array is already there are skipped, so running the same command again after an
    interruption finishes the job; each array is written atomically. ``workers`` processes
    decode in parallel (spawned, one OpenCV thread each). Unreadable videos are listed in
    ``failed`` and left to the dataset's own handling. Ctrl-C stops it (``interrupted``: True).
    """
    root, mods = Path(root), tuple(dict.fromkeys(modalities))
    _check_cache_args(root, mods, short_side, workers)
    out = Path(out) if out else default_cache_dir(root, short_side)
    meta = _meta_of_short_side(out, short_side)
    sources = _sources(root, mods)
    if not sources:
        raise FileNotFoundError(f"no videos under {root / 'videos'} and no flow under {root / 'flow'}")
    _open_cache_folder(out, root, short_side, meta)
    start = time.perf_counter()
    todo, skipped = _plan_cache(sources, out, short_side)
    summary = {"out": str(out), "short_side": short_side, "modalities": list(mods), "done": 0,
               "skipped_existing": skipped, "failed": [], "frames": 0, "bytes": 0, "seconds": 0.0,
               "interrupted": False, "remaining": len(todo)}
    summary["interrupted"] = run_jobs(_cache_one, todo, partial(_record, summary), workers=workers,
                                      progress=progress, desc="frame cache",
                                      worker_setup=_one_opencv_thread)
    if summary["interrupted"]:
        log.warning("interrupted: %d videos cached, %d left; run the same command again to resume",
                    summary["done"], summary["remaining"])
    summary["failed"].sort()
    summary["seconds"] = round(time.perf_counter() - start, 3)
    summary["gib"] = round(sum(f.stat().st_size for f in out.glob("*/*.npy")) / 2**30, 3)
    return summary


def _check_cache_args(root: Path, mods: tuple[str, ...], short_side: int, workers: int) -> None:
    bad = [m for m in mods if m not in CACHE_MODALITIES]
    if bad or not mods:
        raise ValueError(f"modalities must be among {', '.join(CACHE_MODALITIES)}, got {', '.join(mods) or 'none'}")
    if short_side < 1 or workers < 1:
        raise ValueError(f"short_side and workers must be >= 1, got {short_side} and {workers}")
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist")


def _meta_of_short_side(out: Path, short_side: int) -> dict | None:
    """The ``cache.json`` of ``out`` (None if none yet); ValueError if built at another short side."""
    meta = read_cache_meta(out)
    if meta is not None and int(meta.get("short_side", -1)) != short_side:
        raise ValueError(f"{out} holds a cache at short side {meta.get('short_side')}, not {short_side}: "
                         f"choose another --out")
    return meta


def _open_cache_folder(out: Path, root: Path, short_side: int, meta: dict | None) -> None:
    """Create ``out`` and its ``cache.json`` unless there (``meta``), and remove the temporary
    files a killed writer left."""
    out.mkdir(parents=True, exist_ok=True)
    if meta is None:
        atomic_write(out / "cache.json", lambda tmp: tmp.write_text(json.dumps(
            {"format": CACHE_FORMAT, "version": CACHE_VERSION, "short_side": short_side,
             "source": str(root.resolve())}, indent=2) + "\n"))
    for stale in out.glob("*/.*.tmp-*"):              # left by a killed writer
        stale.unlink(missing_ok=True)


def _plan_cache(sources: list[tuple[str, str, Path]], out: Path,
                short_side: int) -> tuple[list[tuple], int]:
    """The jobs (:func:`_cache_one`'s arguments) of the arrays not there yet, and how many are."""
    todo, skipped = [], 0
    for modality, vid, source in sources:
        target = out / modality / f"{vid}.npy"
        if target.is_file():
            skipped += 1
        else:
            todo.append((modality, str(source), str(target), short_side))
    return todo, skipped


def _cache_one(modality: str, source: str, target: str, short_side: int) -> tuple[str, int, int, str | None]:
    """Decode one video (or flow folder) and write its array; (target, frames, bytes, error)."""
    try:
        if modality == "rgb":
            arr = decode_video(source, short_side)
        else:
            arr = read_flow_frames(source, range(count_frames(source, "flow")), short_side)
        arr = np.ascontiguousarray(arr, dtype=np.uint8)
        atomic_write(target, lambda tmp: np.save(tmp, arr, allow_pickle=False))
        return target, int(len(arr)), int(arr.nbytes), None
    except Exception as e:                            # an unreadable video: reported, the rest goes on
        return target, 0, 0, f"{type(e).__name__}: {e}"


def _one_opencv_thread() -> None:
    """Pool worker set-up: one OpenCV thread per worker process."""
    cv2.setNumThreads(1)


def _record(summary: dict, result: tuple[str, int, int, str | None]) -> None:
    """Count one array's outcome into ``summary``."""
    target, frames, nbytes, error = result
    if error:
        log.warning("frame cache: skipping %s (%s)", target, error)
        summary["failed"].append([target, error])
    else:
        summary["done"] += 1
        summary["frames"] += frames
        summary["bytes"] += nbytes
    summary["remaining"] -= 1
