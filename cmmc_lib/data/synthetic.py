"""The synthetic action dataset: the project's embedded default, generated in seconds on a CPU.

The clips come from :mod:`cmmc_lib.data.render` (a stick figure whose **class is its motion**,
while its appearance is a nuisance); this module decides which clips a dataset holds and
writes them in the layout of a real one.

Clips come in sibling **groups** like UCF101's ``gXX`` (one actor/scene): the clips of one
(class, group) share their appearance and differ in motion jitter. Test groups are disjoint from
training groups, so an RGB network that learns "this background means Wave" (a shortcut that
flow cannot take) does not generalise, as on real action data.

The dataset is written in the layout of a real one (``data/README.md``)::

    <out>/videos/<Class>/v_<Class>_gXX_cYY.mp4    lossless h264 via PyAV (mpeg4 .avi without x264)
    <out>/splits/classInd.txt, trainlist0k.txt, testlist0k.txt   UCF101 format, CRLF, k = 1..3
    <out>/flow/<video_id>/x_00001.jpg, y_...     flow of the *decoded* video (cmmc_lib.flow)
    <out>/pose/<video_id>.npy                    float32 (T, J, 3): x, y px, confidence in [0, 1]
    <out>/meta.json                              parameters, class/joint names, bones (written last)

Videos are encoded by :func:`cmmc_lib.data.video.encode_video`; every file is written through
:func:`cmmc_lib.files.atomic_write`. Everything is a function of ``seed``: the same seed gives
identical decoded frames, flow, pose and split files.
"""
from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from ..flow.estimators import FLOW_METHODS
from ..flow.extract import extract_flow
from ..flow.folders import is_flow_complete
from ..config import DataConfig, data_root, synthetic_folder_name
from ..files import atomic_write
from .rawframes import FLOW_BOUND
from .render import (BONES, CLASS_NAMES, JOINT_NAMES, FigureGeometry, class_scene, render_frames,
                     sample_appearance, sample_motion)
from .splits import parse_group
from .video import encode_video, video_codec

log = logging.getLogger(__name__)

GENERATOR_VERSION = 3          # 2: scene options (appearance, context, ...); 3: figure geometry, group_clip
APPEARANCES = ("class_group", "group", "group_clip")
FPS = 25                   # frame rate written into the videos


@dataclass(frozen=True)
class SyntheticSize:
    """One dataset size: ``classes`` first names of CLASS_NAMES x ``groups`` x
    ``clips_per_group`` videos of ``frames`` frames at ``width`` x ``height`` px; split k puts
    groups ``(k-1)*test_groups+1 .. k*test_groups`` of every class in the test list.

    The scene (defaults: generator v1, every look a per-(class, group) nuisance):
    ``appearance`` ``"class_group"`` gives each (class, group) its own look; ``"group"`` one look
    per group shared by all its classes (the same actor in the same room does every action).
    ``figure_scale`` multiplies the figure's height and limb width, ``background_contrast`` the
    texture's contrast (0: flat), ``scene_motion`` the camera pan, shake and distractor drift
    (0: a static camera, as NTU-60). ``context``: the fraction of each class's groups filmed in
    the class's typical scene (seed-independent colours and texture, so the context holds in
    a transfer set too, as scene goes with action in UCF101 and HMDB51).

    Generator v3 (all ``None`` / v2 choices by default, so ``tiny`` and ``cpu`` render as
    before, bit for bit): ``appearance="group_clip"`` gives one look per (group, clip) shared by
    all classes (no look can tell a class, and a clip's look cannot be memorised as its label);
    ``figure_height`` (fraction of the frame height), ``figure_x`` (centre, fraction of the
    width), ``feet_line`` (fraction of the height) and ``limb_width`` (px) are (low, high)
    ranges for the figure (:class:`~cmmc_lib.data.render.FigureGeometry`), which then also
    scales the distractor shapes by ``height / 64``. Setting any of them makes the set v3.
    """
    classes: int
    groups: int
    clips_per_group: int
    frames: int
    height: int = 64
    width: int = 80
    test_groups: int = 1
    appearance: str = "class_group"
    figure_scale: float = 1.0
    background_contrast: float = 1.0
    scene_motion: float = 1.0
    context: float = 0.0
    figure_height: tuple[float, float] | None = None
    figure_x: tuple[float, float] | None = None
    feet_line: tuple[float, float] | None = None
    limb_width: tuple[float, float] | None = None

    def __post_init__(self):
        if self.appearance not in APPEARANCES:
            raise ValueError(f"appearance must be one of {', '.join(APPEARANCES)}, got {self.appearance!r}")
        if not 0 <= self.context <= 1 or self.figure_scale <= 0 or self.background_contrast < 0:
            raise ValueError("need 0 <= context <= 1, figure_scale > 0 and background_contrast >= 0")
        for name in ("figure_height", "figure_x", "feet_line", "limb_width"):
            r = getattr(self, name)
            if r is not None and not (len(r) == 2 and 0 < r[0] <= r[1]):
                raise ValueError(f"{name} must be None or (low, high) with 0 < low <= high, got {r}")

    @property
    def version(self) -> int:
        """The generator version this size needs: 3 when it uses a v3 setting, else 2."""
        v3 = self.appearance == "group_clip" or any(
            getattr(self, n) is not None for n in ("figure_height", "figure_x", "feet_line", "limb_width"))
        return 3 if v3 else 2

    def geometry(self) -> FigureGeometry | None:
        """The v3 figure geometry (v2's ranges for any range left unset), or None for a v2 size."""
        if self.version < 3:
            return None
        return FigureGeometry(figure_height=self.figure_height or (0.5 * self.figure_scale, 0.72 * self.figure_scale),
                              figure_x=self.figure_x or (0.38, 0.62), feet_line=self.feet_line or (0.88, 0.97),
                              limb_width=self.limb_width or (1.5 * self.figure_scale, 3.0 * self.figure_scale),
                              distractor_scale=self.height / 64)

    @property
    def num_videos(self) -> int:
        return self.classes * self.groups * self.clips_per_group


SYNTHETIC_SIZES = {
    "tiny": SyntheticSize(classes=6, groups=4, clips_per_group=3, frames=24, test_groups=1),
    # the course's experiment:
    # one look per group, a bigger figure on a calmer background, a static camera and half of
    # each class's groups in the class's scene, so that RGB can learn a context that transfers
    # (as on UCF101) while flow learns the motion. 320 train / 160 test videos.
    "cpu": SyntheticSize(classes=10, groups=12, clips_per_group=4, frames=32, test_groups=4,
                         appearance="group", figure_scale=1.25, background_contrast=0.3,
                         scene_motion=0.0, context=0.5),
    # the gates (generator v3, `cmmc study gates`): a big centred actor with thick limbs that the
    # 32-px centre crop of the 40-px frame always holds, one look per (group, clip) shared by the
    # classes, half the groups in the class's scene. 22 groups x 4 clips x 10 classes: 480 train /
    # 400 test videos (200 of them motion-only: outside the scene groups) at 48 x 48 px.
    "gates": SyntheticSize(classes=10, groups=22, clips_per_group=4, frames=32, height=48, width=48,
                           test_groups=10, appearance="group_clip", background_contrast=0.3,
                           scene_motion=0.0, context=0.5, figure_height=(0.68, 0.76), figure_x=(0.45, 0.55),
                           feet_line=(0.86, 0.89), limb_width=(4.3, 6.0)),
}


# --------------------------------------------------------------------------- which clip looks how
def context_groups(size, seed: int, label: int) -> set[int]:
    """The groups (1-based) of class ``label`` filmed in the class's typical scene: a fraction
    ``size.context`` of the test groups of split 1 and the same fraction of the others, chosen
    by the seed (a fixed number per class, so that every class and both sides of the split get
    their share whatever the seed)."""
    if size.context <= 0:
        return set()
    rng = np.random.default_rng([seed, label, 0xD])
    test = list(range(1, size.test_groups + 1))
    rest = list(range(size.test_groups + 1, size.groups + 1))
    chosen = set()
    for block in (test, rest):
        n = int(round(size.context * len(block)))
        chosen |= {int(g) for g in rng.choice(block, size=n, replace=False)} if n else set()
    return chosen


def render_dataset_clip(size, seed: int, label: int, group: int, clip: int) -> tuple[np.ndarray, np.ndarray]:
    """The clip ``v_<Class>_g<group>_c<clip>`` (1-based group/clip) of a dataset of ``size``
    (a :class:`SyntheticSize`). The look comes from (seed, label, group)
    (``size.appearance == "class_group"``) or from (seed, group) (``"group"``: every class of a
    group in one scene, as NTU-60's actors and rooms); in a context group
    (:func:`context_groups`) the background is the class's scene (:func:`class_scene`). The
    motion comes from (seed, label, group, clip), camera and distractor motion scaled by
    ``size.scene_motion``. ``"group_clip"`` (v3): the look comes from (seed, group, clip), shared by
    the classes; the figure's geometry from :meth:`SyntheticSize.geometry`."""
    key = {"class_group": [seed, label, group, 0xA], "group": [seed, group, 0xA, 0xA],
           "group_clip": [seed, group, clip, 0xA, 0xF]}[size.appearance]
    scene = class_scene(label) if group in context_groups(size, seed, label) else None
    look = sample_appearance(np.random.default_rng(key), size.height, size.width, size.figure_scale,
                             size.background_contrast, scene, size.geometry())
    m = sample_motion(np.random.default_rng([seed, label, group, clip, 0xB]), size.frames,
                       len(look.distractors))
    if size.scene_motion != 1.0:
        m.pan, m.shake, m.drift = (v * size.scene_motion for v in (m.pan, m.shake, m.drift))
    return render_frames(CLASS_NAMES[label], look, m, size.frames, size.height, size.width)


# --------------------------------------------------------------------------- the dataset
def video_id(label: int, group: int, clip: int) -> str:
    """UCF101-style id ``v_<Class>_gXX_cYY`` (group, clip 1-based)."""
    return f"v_{CLASS_NAMES[label]}_g{group:02d}_c{clip:02d}"


def dataset_items(size: SyntheticSize, videos: int | None = None) -> list[tuple[int, int, int]]:
    """(label, group, clip) of the dataset's videos, the first ``videos`` of an order that walks
    clips, then groups, then classes, so any prefix covers every class and group 1 (test)."""
    items = [(k, g, c) for c in range(1, size.clips_per_group + 1)
             for g in range(1, size.groups + 1) for k in range(size.classes)]
    if videos is None:
        return items
    if not 1 <= videos <= len(items):
        raise ValueError(f"videos must be in 1..{len(items)} for this size, got {videos}")
    return items[:videos]


def test_groups(size: SyntheticSize, split: int) -> list[int]:
    """1-based groups in the test list of ``split`` (1..3)."""
    first = (split - 1) * size.test_groups + 1
    return list(range(first, first + size.test_groups))


def _write_item(args) -> int:
    """Worker: render, encode and store one video and its pose. Returns its frame count."""
    out, size, seed, label, group, clip, codec, ext = args
    out = Path(out)
    vid = video_id(label, group, clip)
    video = out / "videos" / CLASS_NAMES[label] / f"{vid}{ext}"
    pose_path = out / "pose" / f"{vid}.npy"
    if video.is_file() and pose_path.is_file():      # written by an earlier, interrupted run
        return size.frames
    for folder, stem in ((video.parent, vid), (pose_path.parent, vid)):
        for stale in folder.glob(f".{stem}.tmp-*"):   # left by a killed run
            stale.unlink(missing_ok=True)
    rgb, pose = render_dataset_clip(size, seed, label, group, clip)
    video.parent.mkdir(parents=True, exist_ok=True)
    pose_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(video, lambda p: encode_video(p, rgb, codec, fps=FPS))
    atomic_write(pose_path, lambda p: np.save(p, pose))
    return len(rgb)


def _single_threaded() -> None:
    cv2.setNumThreads(1)                              # one process per core


def _write_splits(out: Path, size: SyntheticSize, items, ext: str) -> dict:
    crlf = "\r\n"
    splits = out / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    names = CLASS_NAMES[:size.classes]
    (splits / "classInd.txt").write_bytes(
        "".join(f"{i + 1} {n}{crlf}" for i, n in enumerate(names)).encode())
    counts = {}
    for k in (1, 2, 3):
        tg = set(test_groups(size, k))
        train, test = [], []
        for label, group, clip in sorted(items):
            rel = f"{names[label]}/{video_id(label, group, clip)}{ext}"
            (test if group in tg else train).append(rel if group in tg else f"{rel} {label + 1}")
        (splits / f"trainlist{k:02d}.txt").write_bytes("".join(l + crlf for l in train).encode())
        (splits / f"testlist{k:02d}.txt").write_bytes("".join(l + crlf for l in test).encode())
        counts[k] = {"train": len(train), "test": len(test)}
    return counts


def _meta(size_name: str, size: SyntheticSize, seed: int, items, flow_method: str,
          codec: str, ext: str) -> dict:
    return {
        "format": "cmmc-synthetic", "generator_version": size.version,
        "size": size_name, "seed": seed, "num_videos": len(items), "params": asdict(size),
        "fps": FPS, "codec": codec, "ext": ext, "flow_method": flow_method,
        "flow_bound": FLOW_BOUND, "classes": list(CLASS_NAMES[:size.classes]),
        "joint_names": list(JOINT_NAMES), "bones": [list(b) for b in BONES],
        "pose": "float32 (T, J, 3): x, y in px of the frame (pixel centres at integers), "
                "confidence (0 when the joint is outside the frame)",
        "test_groups": {str(k): test_groups(size, k) for k in (1, 2, 3)},
        "context_groups": {CLASS_NAMES[k]: sorted(context_groups(size, seed, k)) for k in range(size.classes)},
    }


_PENDING = ".meta.pending.json"      # meta.json while generating
_IDENTITY_KEYS = ("format", "generator_version", "size", "seed", "num_videos", "flow_method")


def _is_complete(out: Path, meta: dict, items) -> bool:
    """Cheap check that every file the meta promises is present."""
    for label, group, clip in items:
        vid = video_id(label, group, clip)
        if not (out / "videos" / CLASS_NAMES[label] / f"{vid}{meta['ext']}").is_file() or \
                not (out / "pose" / f"{vid}.npy").is_file() or \
                not is_flow_complete(out / "flow" / vid):
            return False
    return (out / "splits" / "trainlist01.txt").is_file()


def write_synthetic_dataset(out: str | Path, size: str = "tiny", seed: int = 0,
                            videos: int | None = None, flow_method: str = "dis",
                            workers: int = 1, progress: bool = True) -> dict:
    """Generate (or find already generated) the synthetic dataset in ``out``.

    ``size``: a key of :data:`SYNTHETIC_SIZES`; ``videos``: keep only the first N videos of
    :func:`dataset_items` (a quick subset); ``workers``: processes for rendering and flow.
    Idempotent and resumable: a complete dataset with the same size, seed, videos and flow
    method returns at once; an interrupted one is finished (existing files are kept);
    a different dataset, or a non-empty folder that is no synthetic dataset, raises
    ValueError. ``meta.json`` appears last (``.meta.pending.json`` while generating).

    Returns a JSON-serialisable summary: ``path``, ``size``, ``seed``, ``videos``,
    ``classes``, ``splits`` (train/test counts per split), ``frames``, ``codec``,
    ``seconds``, ``render_seconds``, ``flow_seconds``, ``reused``.
    """
    if size not in SYNTHETIC_SIZES:
        raise ValueError(f"unknown synthetic size {size!r}; choose one of "
                         f"{', '.join(SYNTHETIC_SIZES)}")
    if flow_method not in FLOW_METHODS:
        raise ValueError(f"unknown flow method {flow_method!r}; choose one of "
                         f"{', '.join(FLOW_METHODS)}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    start = time.perf_counter()
    out = Path(out)
    spec = SYNTHETIC_SIZES[size]
    items = dataset_items(spec, videos)
    codec, ext = video_codec()
    meta = _meta(size, spec, seed, items, flow_method, codec, ext)
    summary = {"path": str(out), "size": size, "seed": seed, "videos": len(items),
               "classes": spec.classes, "frames": len(items) * spec.frames, "codec": codec,
               "render_seconds": 0.0, "flow_seconds": 0.0, "reused": False}
    meta_path, pending = out / "meta.json", out / _PENDING
    found = next((p for p in (meta_path, pending) if p.is_file()), None)
    if found is not None:
        old = json.loads(found.read_text())
        if any(old.get(k) != meta[k] for k in _IDENTITY_KEYS):
            theirs = {k: old.get(k) for k in _IDENTITY_KEYS}
            raise ValueError(f"{out} already holds a different synthetic dataset {theirs}; "
                             "choose another output folder or delete it")
        if found == meta_path and _is_complete(out, old, items):
            summary.update(reused=True, codec=old["codec"], splits=_split_counts(out),
                           seconds=round(time.perf_counter() - start, 3))
            return summary
    elif out.is_dir() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no synthetic dataset (no meta.json); "
                         "choose an empty or new output folder")
    out.mkdir(parents=True, exist_ok=True)
    # what is being generated here, so that a resumed run never mixes two datasets
    atomic_write(pending, lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"))
    meta_path.unlink(missing_ok=True)

    t0 = time.perf_counter()
    _render_videos([(str(out), spec, seed, k, g, c, codec, ext) for k, g, c in items], workers,
                   f"synthetic {size}", progress)
    summary["render_seconds"] = round(time.perf_counter() - t0, 3)

    t0 = time.perf_counter()
    flow = extract_flow(out / "videos", out / "flow", method=flow_method, workers=workers,
                        progress=progress)
    if flow["failed"]:
        raise RuntimeError(f"flow failed on generated videos: {flow['failed'][:3]}")
    summary["flow_seconds"] = round(time.perf_counter() - t0, 3)

    summary["splits"] = _write_splits(out, spec, items, ext)
    os.replace(pending, meta_path)                     # the dataset is complete
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return summary


def _render_videos(jobs: list[tuple], workers: int, desc: str, progress: bool) -> None:
    """:func:`_write_item` for each job, in ``workers`` spawned processes when more than one."""
    bar = tqdm(total=len(jobs), desc=desc, unit="video", disable=not progress)
    try:
        if workers == 1:
            for job in jobs:
                _write_item(job)
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                     initializer=_single_threaded) as pool:
                for _ in pool.map(_write_item, jobs, chunksize=4):
                    bar.update(1)
    finally:
        bar.close()


def _split_counts(out: Path) -> dict:
    counts = {}
    for k in (1, 2, 3):
        files = [out / "splits" / f"{name}{k:02d}.txt" for name in ("trainlist", "testlist")]
        if all(f.is_file() for f in files):
            counts[k] = {n: sum(1 for line in f.read_text().splitlines() if line.strip())
                         for n, f in zip(("train", "test"), files)}
    return counts


def read_meta(root: str | Path) -> dict:
    """The ``meta.json`` of a generated dataset (FileNotFoundError when absent)."""
    path = Path(root) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"no synthetic dataset in {root} (missing {path.name}); "
                                f"run `cmmc data synth --out {root}`")
    return json.loads(path.read_text())


def in_context(root: str | Path, videos: list[str]) -> list[bool]:
    """For each video id of a generated dataset, whether its (class, group) is filmed in the
    class's typical scene (``meta.json``'s ``context_groups``): there RGB can tell the class by
    the scene; elsewhere only the motion tells it."""
    groups = read_meta(root).get("context_groups", {})
    out = []
    for video in videos:
        name = video[2:].rsplit("_g", 1)[0] if video.startswith("v_") else ""
        out.append(parse_group(video) in set(groups.get(name, [])))
    return out


def ensure_synthetic(cfg: DataConfig) -> Path:
    """The synthetic dataset is the embedded default: when its root holds no finished dataset it
    is generated there on first use (``cfg.synthetic_size``, ``cfg.synthetic_seed``; an
    interrupted generation is finished), with a line saying so. A root holding another dataset
    (other size, seed or generator version) is refused with one line.

    Only the set's own place is written to: a folder named as the set (``data/synthetic/tiny``,
    ``.../cpu-seed1``: what ``data.root`` defaults to). Any other folder the user names must already
    hold the data (FileNotFoundError with the command that writes it there), so a mistyped
    ``data.root`` never fills a folder with generated videos."""
    root = data_root(cfg)
    if (root / "meta.json").is_file():                  # finished (perhaps a subset: videos=N)
        meta = read_meta(root)
        found = (meta.get("size"), meta.get("seed"), meta.get("generator_version"))
        wanted = (cfg.synthetic_size, cfg.synthetic_seed, SYNTHETIC_SIZES[cfg.synthetic_size].version)
        if found != wanted:
            raise ValueError(f"{root} holds the synthetic set (size, seed, generator version) = {found}, not "
                             f"{wanted}: delete it or set "
                             f"data.root to another folder")
        return root
    if root.name != synthetic_folder_name(cfg):
        raise FileNotFoundError(f"data.root={root} holds no synthetic dataset (no meta.json); write one there with "
                                f"`cmmc data synth --size {cfg.synthetic_size} --seed {cfg.synthetic_seed} --out {root}`, "
                                f"or leave data.root out to use {synthetic_folder_name(cfg)} in the default place")
    size = SYNTHETIC_SIZES[cfg.synthetic_size]
    log.warning("no synthetic data at %s: generating the %s set (%d videos, seed %d) on first use",
                root, cfg.synthetic_size, size.num_videos, cfg.synthetic_seed)
    write_synthetic_dataset(root, size=cfg.synthetic_size, seed=cfg.synthetic_seed, progress=False)
    return root
