"""Skeleton samples for the training loop and evaluation: the joint, motion and bone streams of
NTU RGB+D 60 and of the synthetic data's 2-D poses (SkeletonCLR's data pipeline).

:func:`build_skeleton_dataset` (what :func:`cmmc_lib.data.datasets.build_dataset` calls when the
requested modalities are skeleton streams) returns a :class:`SkeletonClips`. Item ``i`` is a dict::

    "joint" | "motion" | "bone": float32 (V, C, T, J, M)   (the streams asked for)
    "label": int (0-based)  "index": int  "video": str  "group": int  "source": int

C = 3 channels (NTU: x, y, z in metres; synthetic: x, y, confidence), T = ``data.skeleton_frames``,
J joints of the dataset's layout (:data:`cmmc_lib.registry.SKELETON_LAYOUTS`: NTU 25, synthetic
15), M persons (NTU 2, zeros where absent; synthetic 1). V = ``data.views`` augmented views when
``train`` (SkeletonCLR's shear and temporal crop, drawn independently per view, and **the same
view for every stream**: motion and bone are computed from the augmented joints), else one view,
the whole sample unchanged.

**Reproducibility**, as :class:`~cmmc_lib.data.datasets.MultiModalClips`: item i in epoch e draws
its augmentations from ``numpy.random.default_rng([seed, e, i])`` only; call :meth:`set_epoch`.

**Sources** (``data.ntu_source``; the layout of a root is in ``data/README.md``):

* ``arrays``: ST-GCN / SkeletonCLR's preprocessed arrays ``<root>/<xsub|xview>/<train|val>_data[_joint].npy``
  (memory-mapped) with ``<train|val>_label.npy`` or ``.pkl`` (pickles only when the command allows them:
  ``--trust-pickle`` or ``CMMC_TRUST_PICKLE=1``, :func:`~cmmc_lib.data.skeleton.pickles_trusted`);
* ``pickle``: combined dicts ``{"data", "label", "sample_name"}`` in ``<root>/preprocessed/*.pkl``
  (trusted only), split by their sample names;
* ``skeletons``: the raw ``<root>/skeletons/*.skeleton`` files, parsed on first use (and kept
  in memory with ``data.cache``), the two most active bodies, SkeletonCLR's preprocessing;
* ``auto``: the first of arrays, skeletons, pickle that the root holds.

Every source is resampled to ``data.skeleton_frames`` frames from its valid (non-zero) frames, as
SkeletonCLR's ``valid_crop_resize`` does at test time; the raw files are also centred on the
spine (:func:`~cmmc_lib.data.skeleton.preprocess_skeleton`). The synthetic poses
(``<root>/pose/<video>.npy``) are normalised by :func:`~cmmc_lib.data.skeleton.normalize_2d_pose`.
A sample that cannot be read, or holds no body, is logged once and replaced by the next one.
"""
from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .. import registry
from ..config import DataConfig, data_root
from .skeleton import (STREAMS, load_stgcn_arrays, pickles_trusted, normalize_2d_pose, preprocess_skeleton, read_ntu_xyz,
                       resize_frames, shear, simulate_pose_estimator, skeleton_stream, temporal_crop)
from .items import SeededItems
from .synthetic import ensure_synthetic
from .splits import (NTU60_NUM_CLASSES, load_split, ntu60_split, ntu_sample_names, parse_ntu_name,
                     source_of)

log = logging.getLogger(__name__)

NTU_PROTOCOLS = {1: "xsub", 2: "xview"}            # data.split -> protocol
NTU_SOURCES = ("auto", "arrays", "skeletons", "pickle")
SKELETON_FOLDERS = ("skeletons", "nturgb+d_skeletons", "nturgbd_skeletons_s001_to_s017")
_ARRAY_SUBSETS = {"train": ("train",), "test": ("val", "test")}
_DATA_NAMES = ("{s}_data_joint.npy", "{s}_data.npy")
_LABEL_NAMES = ("{s}_label.npy", "{s}_label.pkl")


class SkeletonReadError(ValueError):
    """A skeleton sample that cannot be used (unparsable file, no body)."""


@dataclass
class SkeletonSource:
    """Where the samples of one subset come from: ``load(j)`` gives sample j as float32
    (C, T, J, M), not yet resampled; the lists describe every sample."""
    load: Callable[[int], np.ndarray]
    labels: list[int]
    videos: list[str]
    groups: list[int]
    source_names: list[str]
    classes: list[str]
    layout: str
    kind: str
    origin: str
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)


class SkeletonClips(SeededItems):
    """Skeleton streams of the samples of ``source`` (see the module docstring)."""

    unreadable, noun = (SkeletonReadError, OSError), "skeleton sample"

    def __init__(self, source: SkeletonSource, streams: Sequence[str] = ("joint",), train: bool = True,
                 data: DataConfig | None = None, seed: int = 0):
        data = data or DataConfig()
        self.modalities = tuple(streams)
        bad = [s for s in self.modalities if s not in STREAMS]
        if not self.modalities or bad:
            raise ValueError(f"skeleton streams must be a non-empty subset of {STREAMS}, got {tuple(streams)}")
        if len(source) == 0:
            raise ValueError(f"no skeleton samples in this subset of {source.origin}")
        self.src, self.data, self.train = source, data, train
        self.layout = registry.SKELETON_LAYOUTS[source.layout]
        self.parents = np.array(self.layout.parents)
        self.num_views = data.views if train else 1
        self.frames = data.skeleton_frames
        self.classes = list(source.classes)
        self.labels, self.videos, self.groups = list(source.labels), list(source.videos), list(source.groups)
        ids = {n: i for i, n in enumerate(sorted(set(source.source_names)))}
        self.sources = [ids[n] for n in source.source_names]
        self.cache = data.cache
        self._init_items(len(self.labels), seed, substitute=train)
        self._samples: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------------ public API
    def __len__(self) -> int:
        return len(self.labels)

    def frame_counts(self, indices: Sequence[int] | None = None) -> list[int]:
        """Frames per sample after resampling (``data.skeleton_frames``; 0 for unreadable ones)."""
        out = []
        for j in range(len(self)) if indices is None else indices:
            try:
                out.append(self.sample(int(j)).shape[1])
            except SkeletonReadError as e:
                self._skip(int(j), e)
                out.append(0)
        return out

    def sample(self, j: int) -> np.ndarray:
        """Sample j as the network reads it before augmentation: float32 (C, T, J, M) at
        ``data.skeleton_frames`` frames (cached in memory with ``data.cache``)."""
        if j in self._samples:
            return self._samples[j]
        raw = np.asarray(self.src.load(j), np.float32)
        if raw.ndim != 4 or raw.shape[2] != self.layout.num_joints:
            raise SkeletonReadError(f"{self.videos[j]}: expected (C, T, {self.layout.num_joints}, M), got {raw.shape}")
        if not np.any(raw):
            raise SkeletonReadError(f"{self.videos[j]}: no body in any frame")
        x = resize_frames(raw, self.frames)
        if self.cache:
            self._samples[j] = x
        return x

    def views(self, j: int, rng: np.random.Generator | None) -> list[np.ndarray]:
        """The joint data of item j's views: augmented (train) or the sample itself (eval)."""
        x = self.sample(j)
        if not self.train:
            return [x]
        return [self.augment(x, rng) for _ in range(self.num_views)]

    def augment(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """SkeletonCLR's augmentation of one view: shear, then temporal crop (they commute)."""
        if self.data.shear > 0:
            x = shear(x, rng, self.data.shear, self.layout.coords)
        if self.data.temporal_pad > 0:
            x = temporal_crop(x, rng, self.data.temporal_pad)
        return x

    # ------------------------------------------------------------------ internals
    def _item(self, j: int) -> dict:
        rng = self.item_rng(j) if self.train else None
        views = self.views(j, rng)
        item = {s: torch.from_numpy(np.stack([skeleton_stream(v, s, self.parents) for v in views]))
                for s in self.modalities}
        item.update(label=self.labels[j], index=j, video=self.videos[j], group=self.groups[j],
                    source=self.sources[j])
        return item

    def _name(self, j: int) -> str:
        return self.videos[j]

    def _origin(self) -> str:
        return str(self.src.origin)


# --------------------------------------------------------------------------- sources
def pose_seed(video: str) -> int:
    """The seed of a video's simulated pose estimate (``data.pose_noise``): from its name alone."""
    return zlib.crc32(video.encode())


def synthetic_source(root: Path, split: int, subset: str, noise: float = 0.0, drop: float = 0.0) -> SkeletonSource:
    """The synthetic data's 2-D poses of one subset of an official split (UCF101 format), as
    exact keypoints or (``noise``, ``drop``) as a pose estimator would report them."""
    sp = load_split("synthetic", root, split)
    entries = sp.subset(subset)
    paths = [root / "pose" / f"{e.video}.npy" for e in entries]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no pose for {len(missing)} of {len(paths)} videos under {root / 'pose'} "
                                f"(first: {missing[0].name}); regenerate the data with `cmmc data synth`")
    layout = registry.skeleton_layout("synthetic")

    def load(j: int) -> np.ndarray:
        pose = np.load(paths[j], allow_pickle=False)
        if noise > 0 or drop > 0:
            pose = simulate_pose_estimator(pose, noise, drop, pose_seed(entries[j].video), layout)
        return normalize_2d_pose(pose, layout)

    return SkeletonSource(load, [e.label for e in entries], [e.video for e in entries],
                          [e.group for e in entries], [source_of(e.video) for e in entries], sp.classes,
                          layout.name, "pose", str(root / "pose"))


def find_skeleton_folder(root: Path) -> Path | None:
    """The folder of raw ``.skeleton`` files under an NTU root (None when there is none)."""
    for name in SKELETON_FOLDERS:
        if (root / name).is_dir():
            return root / name
    return None


def find_ntu_arrays(root: Path, protocol: str, subset: str, trust_pickle: bool = False
                    ) -> tuple[Path, Path] | None:
    """``(data, labels)`` files of ST-GCN's preprocessed layout for one protocol and subset."""
    folder = root / protocol
    for prefix in _ARRAY_SUBSETS[subset]:
        for dname in _DATA_NAMES:
            data = folder / dname.format(s=prefix)
            if not data.is_file():
                continue
            for lname in _LABEL_NAMES:
                label = folder / lname.format(s=prefix)
                if label.is_file():
                    return data, label
            raise FileNotFoundError(f"{data} has no labels beside it ({prefix}_label.npy or .pkl)")
    return None


def find_ntu_pickles(root: Path) -> list[Path]:
    """Combined preprocessed dicts (``data``, ``label``, ``sample_name``) under ``<root>/preprocessed``."""
    folder = root / "preprocessed"
    return sorted(folder.glob("*.pkl")) if folder.is_dir() else []


def ntu_source_kind(root: Path, setting: str = "auto", protocol: str = "xsub") -> str:
    """Which NTU input ``data.ntu_source`` reads in ``root``: ``arrays``, ``skeletons`` or ``pickle``."""
    if setting not in NTU_SOURCES:
        raise ValueError(f"data.ntu_source must be one of {', '.join(NTU_SOURCES)}, got {setting!r}")
    found = {"arrays": (root / protocol).is_dir() and find_ntu_arrays(root, protocol, "train") is not None,
             "skeletons": find_skeleton_folder(root) is not None,
             "pickle": bool(find_ntu_pickles(root))}
    if setting != "auto":
        if not found[setting]:
            raise FileNotFoundError(f"data.ntu_source={setting}: {root} holds no such input (see data/README.md)")
        return setting
    for kind in ("arrays", "skeletons", "pickle"):
        if found[kind]:
            return kind
    raise FileNotFoundError(f"no NTU-60 skeletons under {root}: expected {root / 'skeletons'}/*.skeleton, "
                            f"{root / protocol}/train_data.npy (+ labels) or {root / 'preprocessed'}/*.pkl "
                            "(see data/README.md; `cmmc data check --dataset ntu60`)")


def _ntu_meta(names: list[str]) -> tuple[list[str], list[int], list[str]]:
    """Video ids, groups (performers) and sources (the performance, seen by 3 cameras) of NTU names."""
    ids, groups, sources = [], [], []
    for n in names:
        f = parse_ntu_name(Path(n).name)
        ids.append(f.sample)
        groups.append(f.performer)
        sources.append(f.performance)
    return ids, groups, sources


def ntu60_source(root: Path, split: int, subset: str, setting: str = "auto", trust_pickle: bool = False,
                 length: int = 50) -> SkeletonSource:
    """The NTU-60 samples of one protocol (split 1 cross-subject, 2 cross-view) and subset."""
    protocol = NTU_PROTOCOLS[split]
    kind = ntu_source_kind(root, setting, protocol)
    classes = [f"A{a:03d}" for a in range(1, NTU60_NUM_CLASSES + 1)]
    if kind == "arrays":
        files = find_ntu_arrays(root, protocol, subset, trust_pickle)
        if files is None:
            raise FileNotFoundError(f"{root / protocol} has no {'/'.join(_ARRAY_SUBSETS[subset])} arrays")
        arrays = load_stgcn_arrays(*files, trust_pickle=trust_pickle)
        names = arrays.sample_names or [f"{files[0].stem}-{i:06d}" for i in range(len(arrays))]
        try:
            ids, groups, sources = _ntu_meta(names)
        except ValueError:                               # anonymous arrays: no performer, no camera
            ids, groups, sources = list(names), [-1] * len(names), list(names)
        return SkeletonSource(lambda j: np.asarray(arrays.data[j]), arrays.labels.tolist(), ids, groups, sources,
                              classes, "ntu25", kind, str(files[0]))
    if kind == "pickle":
        data, labels, names = [], [], []
        for path in find_ntu_pickles(root):
            arrays = load_stgcn_arrays(path, trust_pickle=trust_pickle)
            if arrays.sample_names is None:
                raise ValueError(f"{path}: a combined pickle needs 'sample_name' to be split into xsub / xview")
            data.append(arrays.data)
            labels += arrays.labels.tolist()
            names += [str(n) for n in arrays.sample_names]
        sp = ntu60_split(names, protocol)
        row_of = {n: i for i, n in enumerate(names)}
        rows = [row_of[e.relpath] for e in sp.subset(subset)]
        stacked = np.concatenate(data) if len(data) > 1 else data[0]
        chosen = [names[r] for r in rows]
        ids, groups, sources = _ntu_meta(chosen)
        return SkeletonSource(lambda j: np.asarray(stacked[rows[j]]), [labels[r] for r in rows], ids, groups,
                              sources, classes, "ntu25", kind, str(root / "preprocessed"))
    folder = find_skeleton_folder(root)
    good, bad = ntu_sample_names(sorted(p.name for p in folder.glob("*.skeleton")))
    for n in bad:
        log.warning("%s: not an NTU sample name, left out", n)
    entries = ntu60_split(good, protocol).subset(subset)
    paths = [folder / e.relpath for e in entries]

    def load(j: int) -> np.ndarray:
        try:
            return preprocess_skeleton(read_ntu_xyz(paths[j]), length)
        except ValueError as e:
            raise SkeletonReadError(str(e)) from None

    ids, groups, sources = _ntu_meta([e.relpath for e in entries])
    return SkeletonSource(load, [e.label for e in entries], ids, groups, sources, classes, "ntu25", kind,
                          str(folder))


def build_skeleton_dataset(cfg: DataConfig, subset: str, train: bool, streams: Sequence[str], seed: int = 0
                           ) -> SkeletonClips:
    """The skeleton dataset of a (validated) :class:`DataConfig`; ``streams`` are skeleton
    modalities (``joint``, ``motion``, ``bone``)."""
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
    root = data_root(cfg)
    if cfg.dataset == "synthetic":
        ensure_synthetic(cfg)
        source = synthetic_source(root, cfg.split, subset, cfg.pose_noise, cfg.pose_drop)
    elif cfg.dataset == "ntu60":
        if not root.is_dir():
            raise FileNotFoundError(f"dataset root {root} does not exist: see data/README.md (NTU RGB+D 60), or set "
                                    f"data.root=... or CMMC_DATA_ROOT")
        source = ntu60_source(root, cfg.split, subset, cfg.ntu_source, pickles_trusted(), cfg.skeleton_frames)
    else:
        raise ValueError(f"dataset {cfg.dataset!r} has no skeletons; choose one of {', '.join(registry.POSE_DATASETS)}")
    return SkeletonClips(source, streams, train, cfg, seed)
