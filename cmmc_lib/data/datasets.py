"""Map-style multimodal clip datasets: aligned RGB / flow / pose views of one video.

:func:`build_dataset` reads a prepared root (layout in ``data/README.md``) and returns a
:class:`MultiModalClips`. Item ``i`` is a dict::

    "rgb":  float32 (V, 3, T, S, S) in [-1, 1]      "flow": float32 (V, 2, T, S, S) = px / 20
    "pose": float32 (V, 3, T, J) (x, y in the crop in [-1, 1], confidence; (V, 3, T, J, M) for
            several persons, as NTU's)
    "heatmap": float32 (V, P, T, S, S) in [0, 1]: the pose as one heatmap channel per body part
    "label": int (0-based)  "index": int  "video": str  "group": int (-1 if none)

Skeleton streams (``joint``, ``motion``, ``bone``) are not clips: :func:`build_dataset` hands them
to :mod:`cmmc_lib.data.skeleton_clips`. NTU-60 as video: RGB in ``<root>/rgb/<sample>_rgb.avi``,
its 2-D pose from ``<root>/skeletons/<sample>.skeleton`` (colour-image coordinates).

V = ``views`` random windows with random crops when ``train`` (every modality of one view
shares its window, crop and flip), else ``eval_windows`` evenly spaced windows with the
centre crop (``eval_windows=0``: dense, half-overlapping windows, CoCLR's test protocol).

**Reproducibility.** Item i in epoch e depends only on (seed, e, i): its random numbers come
from ``numpy.random.default_rng([seed, e, i])``, never from global state or the worker id.
Call :meth:`MultiModalClips.set_epoch` before iterating an epoch (with a DataLoader, before
``iter(loader)``; the epoch lives in shared memory, so persistent workers see it too).

**Bad videos.** A video that cannot be decoded (or flow frames that cannot be read) is logged
once, counted in ``num_skipped`` (shared with DataLoader workers), and item i becomes the next
readable item (i + 1, i + 2, ... wrapping), exactly as that item would be, its own ``index``
included.

**Cache.** ``cache=True`` keeps each decoded video (uint8, resized to ``short_side``) and its
flow in memory, per process: for small data. Each DataLoader worker holds its own copy, which
outlives an epoch only with ``persistent_workers=True`` (or ``num_workers=0``).
Without cache, frame counts are still remembered, and later visits decode only up to the
last frame needed.

**Frame cache.** A pre-decoded copy of the videos and flow on disk (``cmmc data cache``, see
:mod:`cmmc_lib.data.frame_cache`): ``data.frame_cache=auto`` reads ``<root>/frames_s<short_side>``
when it has been built, ``off`` never, a folder that one. Clips are then memory-mapped slices
instead of decodes, and exactly the frames a decode gives; videos the cache lacks are decoded.
``data.in_memory=true`` loads each cached array whole into RAM once and keeps it (small data).
"""
from __future__ import annotations

import dataclasses
import logging
import random
import signal
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .. import registry
from ..config import DataConfig, data_root
from .frame_cache import open_frame_cache
from .items import SeededItems
from .skeleton import read_ntu_colour_pose, simulate_pose_estimator
from .skeleton_clips import build_skeleton_dataset, pose_seed
from .synthetic import ensure_synthetic
from .rawframes import FrameReadError, count_frames, read_flow_frames
from .splits import (Split, VideoEntry, VideoIndex, load_split, ntu60_split, ntu_sample_names,
                     parse_ntu_name, source_of)
from .augment import finish_clips
from .transforms import Augment, ClipTransform, ViewParams, plan_views, ten_crop_params
from .video import (VIDEO_EXTENSIONS, VideoReadError, decode_video, eval_windows, read_clip, resized_hw,
                    sample_train_windows, video_frame_size)

log = logging.getLogger(__name__)

MODALITIES = tuple(registry.MODALITIES)
#: Modalities read by a skeleton network (the streams); ``pose`` (keypoints of a video) is a clip item.
SKELETON_STREAMS = tuple(m for m, spec in registry.MODALITIES.items() if spec.network == "skeleton" and m != "pose")
_CORRUPT = (VideoReadError, FrameReadError)


class MultiModalClips(SeededItems):
    """Clips of the videos in ``entries`` under ``root`` (see the module docstring).

    root/videos/<relpath> are the videos (``videos_dir``: another folder, NTU's ``rgb``),
    root/flow/<video>/ the flow rawframes, root/pose/<video>.npy the (T, J, 3) keypoints (NTU:
    root/skeletons/<video>.skeleton). ``data`` says how clips are cut (its ``root`` and ``split``
    are not read here: ``entries`` already name the videos; its ``dataset`` names the skeleton layout).
    """

    unreadable, noun = _CORRUPT, "video"

    def __init__(self, root: Path | str, entries: Sequence[VideoEntry], classes: Sequence[str],
                 modalities: Sequence[str] = ("rgb",), train: bool = True,
                 data: DataConfig | None = None, seed: int = 0, videos_dir: str = "videos"):
        data = data or DataConfig()
        self.root = Path(root)
        self.videos_dir = videos_dir
        self.modalities = tuple(modalities)
        bad = [m for m in self.modalities if m not in MODALITIES]
        if not self.modalities or bad:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, "
                             f"got {tuple(modalities)}")
        self.train, self.data = train, data
        self.clip_len, self.stride, self.short_side = data.clip_len, data.stride, data.short_side
        self.num_views = data.views if train else data.eval_windows      # 0: dense windows (eval)
        if self.num_views < (1 if train else 0):
            raise ValueError(f"need at least one view per item, got {self.num_views}")
        self.cache = data.cache
        self.classes = list(classes)
        layout_name = registry.DATASETS[data.dataset].skeleton_layout if data.dataset in registry.DATASETS else None
        self.layout = registry.SKELETON_LAYOUTS[layout_name] if layout_name else None
        if "heatmap" in self.modalities and self.layout is None:
            raise ValueError(f"dataset {data.dataset!r} has no skeleton layout: no pose heatmaps")
        self.aug = Augment.of(data)
        self.transform = ClipTransform(data.size, train, self.aug, data.flip_flow, layout=self.layout,
                                       heatmap_sigma=data.heatmap_sigma, heatmap_limbs=data.heatmap_limbs,
                                       eval_crop=data.eval_crop)
        self.eval_crops = 1
        self.defer_photometric = False      # the training loop finishes clips on its device, batched
        self.entries, self.paths = self._locate(list(entries))
        self.labels = [e.label for e in self.entries]
        self.videos = [e.video for e in self.entries]
        self.groups = [e.group for e in self.entries]
        names = [source_of(e.video) for e in self.entries]         # CoCLR's "same source video"
        ids = {n: i for i, n in enumerate(sorted(set(names)))}
        self.sources = [ids[n] for n in names]
        self._init_items(len(self.entries), seed, substitute=train)
        self._frames: dict[tuple[str, int], np.ndarray] = {}     # (modality, j) -> cached
        self._counts: dict[tuple[str, int], int] = {}            # (modality, j) -> frames
        self._pose_hw: dict[int, tuple[int, int]] = {}
        self._scratch: tuple[tuple[str, int], np.ndarray] | None = None
        self.frame_cache = open_frame_cache(data.frame_cache, self.root, data.short_side, data.in_memory)
        self._on_disk: dict[tuple[str, int], bool] = {}          # (modality, j) -> in the frame cache
        if self.frame_cache is not None:
            log.info("reading pre-decoded frames from %s where present", self.frame_cache.path)

    # ------------------------------------------------------------------ construction
    def _locate(self, entries: list[VideoEntry]) -> tuple[list[VideoEntry], list[Path | None]]:
        """Entries whose files exist, with their video paths; clear errors for missing
        flow/pose, a warning for videos listed but absent."""
        if not entries:
            raise ValueError(f"no videos in this split of {self.root}")
        self.missing: list[str] = []                  # listed by the split, absent from the folder
        needs_video = bool({"rgb", "pose", "heatmap"} & set(self.modalities))
        paths: list[Path | None] = [None] * len(entries)
        if needs_video:
            index = VideoIndex(self.root / self.videos_dir)
            paths = [index.find(e.relpath) for e in entries]
            missing = [e.relpath for e, p in zip(entries, paths) if p is None]
            if len(missing) == len(entries):
                raise FileNotFoundError(f"none of the {len(entries)} videos of the split is "
                                        f"under {self.root / self.videos_dir} (e.g. {missing[0]}); "
                                        "see data/README.md and `cmmc data check`")
            if missing:
                log.warning("%d of %d videos of the split are missing under %s and left out "
                            "(first: %s); run `cmmc data check` for the list", len(missing),
                            len(entries), self.root / self.videos_dir, missing[0])
                kept = [(e, p) for e, p in zip(entries, paths) if p is not None]
                entries, paths = [e for e, _ in kept], [p for _, p in kept]
            self.missing = missing
        if "flow" in self.modalities:
            no_flow = [e.video for e in entries if not (self.root / "flow" / e.video).is_dir()]
            if no_flow:
                raise FileNotFoundError(
                    f"no optical flow for {len(no_flow)} of {len(entries)} videos under "
                    f"{self.root / 'flow'} (first: {no_flow[0]}); extract it with "
                    f"`cmmc flow extract {self.root / 'videos'} --out {self.root / 'flow'} "
                    "--method tvl1`")
        if {"pose", "heatmap"} & set(self.modalities):
            no_pose = [e.video for e in entries if self._pose_path(e) is None]
            if no_pose:
                raise FileNotFoundError(
                    f"no pose for {len(no_pose)} of {len(entries)} videos under "
                    f"{self.root / 'pose'} (first: {no_pose[0]}.npy); pose keypoints exist "
                    "for the synthetic dataset (`cmmc data synth`) and NTU-60 (<root>/skeletons)")
        return entries, paths

    # ------------------------------------------------------------------ public API
    def __len__(self) -> int:
        return len(self.entries)

    def frame_counts(self, indices: Sequence[int] | None = None) -> list[int]:
        """Count (and remember) the frames of videos ``indices`` (default: all) now, e.g. before
        DataLoader workers are spawned: they inherit the counts and never decode a whole video
        just to count it. Unreadable videos count 0 (and are skipped as usual)."""
        counts = []
        for j in range(len(self)) if indices is None else indices:
            try:
                counts.append(self._num_frames(int(j)))
            except _CORRUPT as e:
                self._skip(int(j), e)
                counts.append(0)
        self._scratch = None                     # no decoded video travels to the workers
        return counts

    # ------------------------------------------------------------------ loading
    def _name(self, j: int) -> str:
        return self.entries[j].video

    def _origin(self) -> str:
        return str(self.root)

    def _item(self, j: int) -> dict:
        e = self.entries[j]
        rng = self.item_rng(j)
        n = self._num_frames(j)
        if self.train:
            windows, strong = plan_views(rng, sample_train_windows(n, self.clip_len, self.stride, self.num_views, rng),
                                         self.aug)
        else:
            windows = eval_windows(n, self.clip_len, self.stride, self.num_views)
        clips = {m: self._read(m, j, windows) for m in self.modalities}
        ref = clips["rgb"] if "rgb" in clips else clips.get("flow")
        frame_hw = (ref.shape[2:4] if ref is not None       # (H, W) at short_side
                    else resized_hw(*self._pose_frame_hw(j), self.short_side))
        keypoints = "pose" in clips or "heatmap" in clips
        views, params = [], []
        for v in range(len(windows)):
            for p in (self._eval_views(frame_hw) if not self.train else
                      [self.transform.sample(rng, frame_hw, strong[v], self.clip_len)]):
                params.append(p)
                views.append(self.transform(
                    p, rgb=clips["rgb"][v] if "rgb" in clips else None,
                    flow=clips["flow"][v] if "flow" in clips else None,
                    pose=clips["pose"][v] if "pose" in clips else None,
                    pose_frame_hw=self._pose_frame_hw(j) if keypoints else None,
                    heatmap=clips["heatmap"][v] if "heatmap" in clips else None))
        item = {m: torch.stack([view[m] for view in views]) for m in self.modalities}
        item.update(self._finish(item, params))
        item.update(label=e.label, index=j, video=e.video, group=e.group, source=self.sources[j])
        return item

    def _eval_views(self, frame_hw: tuple[int, int]) -> list[ViewParams]:
        """The deterministic views of one evaluation window: the centre crop, or CoCLR's ten crops."""
        if self.eval_crops == 10:
            return ten_crop_params(frame_hw, self.transform.eval_crop)
        return [self.transform.sample(None, frame_hw)]

    def _finish(self, item: dict, params: list[ViewParams]) -> dict:
        """The photometric half: here, per item ((V, C, T, S, S) float clips), or, when the training
        loop defers it, the uint8 crops stay and each view's parameters go along (``aug``: (V, P)
        rows, ``aug_grey``: (V, T) the channel each frame's grey copies)."""
        rows = torch.stack([p.photometric() for p in params])
        grey = torch.tensor([p.grey_channels or (0,) * self.clip_len for p in params], dtype=torch.uint8)
        d, out = self.data, {}
        if self.defer_photometric:
            return {"aug": rows, "aug_grey": grey}
        for m in ("rgb", "flow"):
            if m in item:
                out[m] = finish_clips(item[m], m, rows, grey, grey_mode=d.grey_mode, normalize=d.normalize,
                                      photometric_flow=d.photometric_flow)
        return out

    def _num_frames(self, j: int) -> int:
        """Frames of video j: of the video (RGB asked), else of the flow, else of the pose."""
        for m in ("rgb", "flow", "pose", "heatmap"):
            if m in self.modalities:
                return self._count(m, j)
        raise AssertionError("unreachable")

    def _cache_id(self, m: str, j: int) -> str:
        """The key of video j in the frame cache: the file's stem (RGB), the flow folder (flow)."""
        return self.paths[j].stem if m == "rgb" else self.entries[j].video

    def _in_frame_cache(self, m: str, j: int) -> bool:
        if self.frame_cache is None or m in ("pose", "heatmap"):
            return False
        if (m, j) not in self._on_disk:
            self._on_disk[m, j] = self.frame_cache.has(m, self._cache_id(m, j))
        return self._on_disk[m, j]

    def _count(self, m: str, j: int) -> int:
        if (m, j) not in self._counts:
            if self._in_frame_cache(m, j):
                self._counts[m, j] = self.frame_cache.count(m, self._cache_id(m, j))
            elif m == "rgb":
                self._load_all(m, j)              # one full decode gives the true count
            elif m == "flow":
                n = count_frames(self.root / "flow" / self.entries[j].video, "flow")
                if n == 0:
                    raise FrameReadError(f"{self.root / 'flow' / self.entries[j].video} "
                                         "holds no flow frames")
                self._counts[m, j] = n
            else:
                self._counts[m, j] = self._pose(j).shape[1]
        return self._counts[m, j]

    def _load_all(self, m: str, j: int) -> np.ndarray:
        """Every frame of modality m of video j (uint8 at short_side). Kept in the cache if
        asked, else in a one-video scratch slot so that a first visit decodes once."""
        if (m, j) in self._frames:
            return self._frames[m, j]
        if self._scratch is not None and self._scratch[0] == (m, j):
            return self._scratch[1]
        if m == "rgb":
            arr = decode_video(self.paths[j], self.short_side)
        else:
            arr = read_flow_frames(self.root / "flow" / self.entries[j].video,
                                   range(self._count(m, j)), self.short_side)
        self._counts[m, j] = len(arr)
        if self.cache:
            self._frames[m, j] = arr
        else:
            self._scratch = ((m, j), arr)
        return arr

    def _read(self, m: str, j: int, windows: np.ndarray) -> np.ndarray:
        """Frames of ``windows`` (V, T) as (V, T, ...) for modality m; indices past this
        modality's last frame repeat it."""
        if m in ("pose", "heatmap"):
            pose = self._pose(j)                               # (M, T, J, 3)
            out = pose[:, np.minimum(windows, pose.shape[1] - 1)].swapaxes(0, 1)   # (V, M, Tw, J, 3)
            return out[:, 0] if pose.shape[0] == 1 else out
        n = self._count(m, j)
        idx = np.minimum(windows, n - 1)
        if self._in_frame_cache(m, j):
            return self.frame_cache.read(m, self._cache_id(m, j), idx)
        full_at_hand = (m, j) in self._frames or (
            self._scratch is not None and self._scratch[0] == (m, j))
        if self.cache or full_at_hand:
            return self._load_all(m, j)[idx]
        flat, inverse = np.unique(idx, return_inverse=True)
        if m == "rgb":
            frames = read_clip(self.paths[j], flat, self.short_side)
        else:
            frames = read_flow_frames(self.root / "flow" / self.entries[j].video, flat,
                                      self.short_side)
        return frames[inverse.reshape(idx.shape)]

    def _pose_path(self, e: VideoEntry) -> Path | None:
        """The keypoints of a video: ``<root>/pose/<video>.npy``, else (NTU) its ``.skeleton`` file."""
        npy = self.root / "pose" / f"{e.video}.npy"
        if npy.is_file():
            return npy
        for folder in ("skeletons", "nturgb+d_skeletons"):
            skel = self.root / folder / f"{e.video}.skeleton"
            if skel.is_file():
                return skel
        return None

    def _pose(self, j: int) -> np.ndarray:
        """The keypoints of video j as float32 (M, T, J, 3) (x, y px of the video frame, confidence)."""
        key = ("pose", j)
        if key not in self._frames:
            path = self._pose_path(self.entries[j])
            if path is None:
                raise FrameReadError(f"no pose for {self.entries[j].video}")
            if path.suffix == ".skeleton":
                try:
                    pose = read_ntu_colour_pose(path)
                except ValueError as e:
                    raise FrameReadError(str(e)) from None
            else:
                pose = np.load(path, allow_pickle=False)
                if self.data.pose_noise > 0 or self.data.pose_drop > 0:     # as a pose estimator reports it
                    pose = simulate_pose_estimator(pose, self.data.pose_noise, self.data.pose_drop,
                                                   pose_seed(self.entries[j].video), self.layout or "synthetic15")
                if pose.ndim == 3:
                    pose = pose[None]
            if pose.ndim != 4 or pose.shape[-1] != 3 or pose.shape[1] == 0:
                raise FrameReadError(f"{path}: pose must be (T, J, 3) or (M, T, J, 3), got {pose.shape}")
            if self.layout is not None and pose.shape[2] != self.layout.num_joints:
                raise FrameReadError(f"{path}: {pose.shape[2]} joints, but the {self.layout.name} layout has "
                                     f"{self.layout.num_joints}")
            self._frames[key] = pose.astype(np.float32)
        return self._frames[key]

    def _pose_frame_hw(self, j: int) -> tuple[int, int]:
        """(H, W) of the source video frames that the pose pixels refer to."""
        if j not in self._pose_hw:
            self._pose_hw[j] = video_frame_size(self.paths[j])
        return self._pose_hw[j]


def build_dataset(data_cfg: DataConfig, subset: str, train: bool,
                  modalities: Sequence[str] = ("rgb",), *, seed: int = 0,
                  **overrides):
    """The dataset of ``data_cfg`` (root from :func:`cmmc_lib.config.data_root`).

    subset: "train" or "test" (the official split ``data_cfg.split``); train: random views
    (else deterministic eval windows); overrides: DataConfig fields to replace
    (``eval_windows=1``); seed: the dataset seed of the reproducibility contract.
    Modalities read by a video network give a :class:`MultiModalClips`; skeleton streams
    (``joint``, ``motion``, ``bone``) a :class:`cmmc_lib.data.skeleton_clips.SkeletonClips`.
    """
    known = {f.name for f in dataclasses.fields(DataConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown DataConfig field(s): {', '.join(unknown)}")
    cfg = dataclasses.replace(data_cfg, **overrides)
    streams = [m for m in modalities if m in SKELETON_STREAMS]
    if streams and len(streams) == len(tuple(modalities)):
        return build_skeleton_dataset(cfg, subset, train, modalities, seed)
    if streams:
        raise ValueError(f"modalities {tuple(modalities)} mix skeleton streams and video clips: one dataset "
                         "holds one or the other")
    if cfg.dataset not in registry.VIDEO_DATASETS:
        raise ValueError(f"dataset {cfg.dataset!r} has no clip dataset; choose one of "
                         f"{', '.join(registry.VIDEO_DATASETS)}")
    root = data_root(cfg)
    if cfg.dataset == "synthetic":
        ensure_synthetic(cfg)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist: see data/README.md, or set "
                                f"data.root=... or CMMC_DATA_ROOT")
    if cfg.dataset == "ntu60":
        split, videos_dir = ntu60_video_split(root, cfg.split)
        return MultiModalClips(root, split.subset(subset), split.classes, modalities, train, cfg, seed, videos_dir)
    split = load_split(cfg.dataset, root, cfg.split)
    return MultiModalClips(root, split.subset(subset), split.classes, modalities, train, cfg, seed)


NTU_RGB_FOLDERS = ("rgb", "nturgb+d_rgb", "videos")


def ntu60_video_split(root: Path, split: int):
    """NTU-60 as videos: ``(Split, videos folder name)`` from the RGB files
    ``<root>/rgb/SsssCcccPpppRrrrAaaa_rgb.avi`` (split 1 cross-subject, 2 cross-view; video id =
    the sample name, so flow and pose are found by it; group = the performer)."""
    folder = next((root / f for f in NTU_RGB_FOLDERS if (root / f).is_dir()), None)
    if folder is None:
        raise FileNotFoundError(f"no NTU RGB videos under {root}: expected {root / 'rgb'}/S001C001P001R001A001_rgb.avi "
                                "... (see data/README.md)")
    names, _ = ntu_sample_names(p.name for p in sorted(folder.iterdir()) if p.suffix.lower() in VIDEO_EXTENSIONS)
    if not names:
        raise ValueError(f"ntu60: {folder} holds no RGB video named as an NTU sample "
                         "(SsssCcccPpppRrrrAaaa_rgb.avi; see data/README.md)")
    protocol = {1: "xsub", 2: "xview"}[split]
    raw = ntu60_split(names, protocol)
    out = Split("ntu60", protocol, raw.classes)
    for subset in ("train", "test"):
        for e in raw.subset(subset):
            f = parse_ntu_name(e.relpath)
            out.subset(subset).append(VideoEntry(e.relpath, e.label, f.sample, f.performer))
    return out, folder.name


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one torch thread per worker, seeded global RNGs (items
    do not use them; third-party code might), and Ctrl-C left to the main process. OpenCV's thread count is left alone: changing it
    in a forked child whose parent ran OpenCV threads deadlocks (see :func:`worker_options`)."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the main process's: it stops cleanly


def worker_options(num_workers: int, prefetch: int | None = None, persistent: bool = False) -> dict:
    """DataLoader keyword arguments for ``num_workers`` workers.

    Workers are *spawned*, not forked: a fork copies OpenCV's and FFmpeg's thread pools in
    whatever state the parent left them, and a worker can then hang forever on their locks.
    Items depend only on (seed, epoch, index), so the batches are the same either way.
    ``prefetch``: batches each worker prepares ahead (PyTorch's default 2 when None);
    ``persistent``: keep the workers between iterations of the loader (spawning costs seconds
    per worker, and a persistent worker keeps the frame counts it has learnt).
    """
    if num_workers <= 0:
        return {"num_workers": 0}
    if prefetch is not None and prefetch < 1:
        raise ValueError(f"data.prefetch must be >= 1, got {prefetch}")
    opts = {"num_workers": num_workers, "worker_init_fn": seed_worker, "multiprocessing_context": "spawn",
            "persistent_workers": bool(persistent)}
    if prefetch is not None:
        opts["prefetch_factor"] = int(prefetch)
    return opts
