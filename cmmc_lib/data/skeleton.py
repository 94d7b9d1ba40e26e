"""NTU RGB+D skeletons: the raw ``.skeleton`` text format, body selection, SkeletonCLR-style
preprocessing, the joint / motion / bone streams, and the ST-GCN preprocessed arrays.

Shapes follow ST-GCN: one sample is ``(C, T, V, M)`` = (xyz, frames, 25 joints, 2 persons);
a batch is ``(N, C, T, V, M)``. Coordinates are the Kinect camera-space metres.
Joint indices in code are 0-based; NTU documents them 1-based (joint 2 = "middle of spine" is
index 1 here).
"""
from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..registry import SKELETON_LAYOUTS, SkeletonLayout

log = logging.getLogger(__name__)

NUM_JOINTS = 25
NTU_JOINT_NAMES = (
    "base_of_spine", "middle_of_spine", "neck", "head",
    "left_shoulder", "left_elbow", "left_wrist", "left_hand",
    "right_shoulder", "right_elbow", "right_wrist", "right_hand",
    "left_hip", "left_knee", "left_ankle", "left_foot",
    "right_hip", "right_knee", "right_ankle", "right_foot",
    "spine_shoulder", "left_hand_tip", "left_thumb", "right_hand_tip", "right_thumb",
)
# (child, parent), 1-based, as in ST-GCN's NTU graph (and 2s-AGCN's bone data); 21 is the root.
# The table lives in cmmc_lib.registry.SKELETON_LAYOUTS["ntu25"] (0-based), listed once.
NTU_BONES = tuple((c + 1, p + 1) for c, p in SKELETON_LAYOUTS["ntu25"].bones)
NTU_PARENTS = np.array(SKELETON_LAYOUTS["ntu25"].parents)   # 0-based parent of each joint; the root is its own
CENTER_JOINT = SKELETON_LAYOUTS["ntu25"].root                # "middle of spine" (NTU joint 2)
BODY_FIELDS = ("clipped_edges", "hand_left_confidence", "hand_left_state",
               "hand_right_confidence", "hand_right_state", "is_restricted", "lean_x", "lean_y",
               "tracking_state")
JOINT_FIELDS = ("x", "y", "z", "depth_x", "depth_y", "color_x", "color_y", "orientation_w",
                "orientation_x", "orientation_y", "orientation_z", "tracking_state")
STREAMS = ("joint", "motion", "bone")


@dataclass
class NTUBody:
    """One tracked body in one frame: ``info`` float64 (9,) per :data:`BODY_FIELDS`,
    ``joints`` float32 (V, 12) per :data:`JOINT_FIELDS` (x, y, z in metres; depth/colour in px)."""
    body_id: int
    info: np.ndarray
    joints: np.ndarray

    @property
    def xyz(self) -> np.ndarray:
        return self.joints[:, :3]


@dataclass
class NTUSkeleton:
    """A parsed ``.skeleton`` file: ``frames[t]`` is the list of bodies seen in frame ``t``."""
    name: str
    frames: list[list[NTUBody]] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def body_ids(self) -> list[int]:
        """Distinct body ids in order of first appearance."""
        seen: dict[int, None] = {}
        for bodies in self.frames:
            for b in bodies:
                seen.setdefault(b.body_id, None)
        return list(seen)


# --------------------------------------------------------------------------- parsing
class _Lines:
    """Non-empty lines with 1-based line numbers, for error messages."""

    def __init__(self, path: Path):
        self.path = path
        text = path.read_bytes().decode("ascii", errors="replace")
        self.lines = text.splitlines()          # \n, \r\n and \r all end a line
        self.i = 0

    def next(self, what: str) -> tuple[list[str], int]:
        while self.i < len(self.lines) and not self.lines[self.i].strip():
            self.i += 1
        if self.i >= len(self.lines):
            raise ValueError(f"{self.path}: unexpected end of file after line {self.i} "
                             f"(expected {what})")
        self.i += 1
        return self.lines[self.i - 1].split(), self.i

    def rest_is_empty(self) -> int | None:
        for j in range(self.i, len(self.lines)):
            if self.lines[j].strip():
                return j + 1
        return None

    def error(self, lineno: int, msg: str) -> ValueError:
        return ValueError(f"{self.path}:{lineno}: {msg}")


def _int(lines: _Lines, what: str) -> int:
    tokens, n = lines.next(what)
    if len(tokens) != 1:
        raise lines.error(n, f"expected {what} (one integer), got {len(tokens)} values")
    try:
        value = int(tokens[0])
    except ValueError:
        raise lines.error(n, f"expected {what} (an integer), got {tokens[0]!r}") from None
    if value < 0:
        raise lines.error(n, f"{what} must be >= 0, got {value}")
    return value


def _floats(lines: _Lines, count: int, what: str) -> tuple[list[str], int, np.ndarray]:
    tokens, n = lines.next(what)
    if len(tokens) != count:
        raise lines.error(n, f"expected {what} ({count} values), got {len(tokens)}")
    try:
        return tokens, n, np.array([float(t) for t in tokens])
    except ValueError:
        raise lines.error(n, f"expected {what} (numbers), got {' '.join(tokens)!r}") from None


def read_ntu_skeleton(path: str | Path) -> NTUSkeleton:
    """Parse an NTU RGB+D ``.skeleton`` file (LF or CRLF).

    Format: the frame count; then per frame a body count; per body a line of 10 fields (body id
    first, then :data:`BODY_FIELDS`), a joint count and one line of 12 values per joint
    (:data:`JOINT_FIELDS`). Raises ValueError naming the file and line on malformed input.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such skeleton file: {path}")
    lines = _Lines(path)
    num_frames = _int(lines, "the frame count")
    seq = NTUSkeleton(name=path.stem)
    for t in range(num_frames):
        bodies = []
        for _ in range(_int(lines, f"the body count of frame {t + 1}")):
            tokens, n, values = _floats(lines, 10, "a body line")
            try:
                body_id = int(tokens[0])
            except ValueError:
                raise lines.error(n, f"body id must be an integer, got {tokens[0]!r}") from None
            num_joints = _int(lines, "the joint count")
            joints = np.stack([_floats(lines, len(JOINT_FIELDS), "a joint line")[2]
                               for _ in range(num_joints)]) if num_joints else \
                np.zeros((0, len(JOINT_FIELDS)))
            bodies.append(NTUBody(body_id, values[1:], joints.astype(np.float32)))
        seq.frames.append(bodies)
    extra = lines.rest_is_empty()
    if extra is not None:
        raise lines.error(extra, f"unexpected content after the last of {num_frames} frames")
    return seq


# --------------------------------------------------------------------------- body selection
def body_activity(xyz: np.ndarray) -> float:
    """How much a body moves: the sum over joints and axes of the temporal variance of its
    coordinates, float (xyz: (T_present, V, 3)). The NTU denoising rule used by VA-NN /
    CTR-GCN's ``get_raw_denoised_data``; static false detections (furniture) score ~0."""
    return float(np.var(xyz, axis=0).sum()) if len(xyz) > 1 else 0.0


def select_bodies(seq: NTUSkeleton, max_bodies: int = 2, num_joints: int = NUM_JOINTS,
                  fields: tuple[int, ...] = (0, 1, 2)) -> np.ndarray:
    """The ``max_bodies`` most active bodies as float32 ``(3, T, V, M)`` xyz (zeros where a
    person is absent).

    Bodies are identified by their Kinect body id across frames (not by their position in a
    frame's list), ranked by :func:`body_activity`, most active in slot 0; ties keep the order
    of first appearance. ``fields``: the joint values kept (indices of :data:`JOINT_FIELDS`;
    default x, y, z), always ranked by the xyz activity; the output has ``len(fields)`` channels.
    """
    tracks: dict[int, list[tuple[int, np.ndarray]]] = {}
    for t, bodies in enumerate(seq.frames):
        for b in bodies:
            if b.joints.shape[0] != num_joints:
                raise ValueError(f"{seq.name}: frame {t + 1} body {b.body_id} has "
                                 f"{b.joints.shape[0]} joints, expected {num_joints}")
            tracks.setdefault(b.body_id, []).append((t, b.joints))
    ranked = sorted(tracks, key=lambda bid: -body_activity(np.stack([x[:, :3] for _, x in tracks[bid]])))
    out = np.zeros((len(fields), seq.num_frames, num_joints, max_bodies), np.float32)
    for m, bid in enumerate(ranked[:max_bodies]):
        for t, joints in tracks[bid]:
            out[:, t, :, m] = joints[:, list(fields)].T
    if len(ranked) > max_bodies:
        log.debug("%s: kept %d of %d bodies", seq.name, max_bodies, len(ranked))
    return out


def read_ntu_xyz(path: str | Path, max_bodies: int = 2) -> np.ndarray:
    """``select_bodies(read_ntu_skeleton(path))``: float32 (3, T, 25, max_bodies)."""
    return select_bodies(read_ntu_skeleton(path), max_bodies)


def read_ntu_colour_pose(path: str | Path, max_bodies: int = 2) -> np.ndarray:
    """The 2-D pose of an NTU ``.skeleton`` file in the pixels of its RGB video (1920 x 1080):
    float32 ``(M, T, 25, 3)`` = (colour x, colour y, confidence) per body, the bodies chosen and
    ordered as :func:`select_bodies` does. Confidence: Kinect tracking state / 2 (tracked 1,
    inferred 0.5, not tracked or absent 0). Frame t is frame t of the RGB video (same count)."""
    data = select_bodies(read_ntu_skeleton(path), max_bodies,
                         fields=(JOINT_FIELDS.index("color_x"), JOINT_FIELDS.index("color_y"),
                                 JOINT_FIELDS.index("tracking_state")))
    data[2] = np.clip(data[2] / 2.0, 0.0, 1.0)
    return np.ascontiguousarray(data.transpose(3, 1, 2, 0))


# --------------------------------------------------------------------------- preprocessing
def _check_ctvm(data: np.ndarray) -> np.ndarray:
    data = np.asarray(data, np.float32)
    if data.ndim != 4:
        raise ValueError(f"expected a skeleton (C, T, V, M), got shape {data.shape}")
    return data


def valid_frames(data: np.ndarray) -> np.ndarray:
    """bool (T,): frames where any person has a non-zero joint (data: (C, T, V, M))."""
    return np.any(_check_ctvm(data) != 0, axis=(0, 2, 3))


def center_skeleton(data: np.ndarray, center_joint: int = CENTER_JOINT) -> np.ndarray:
    """Subtract, per frame, the ``center_joint`` of the first present person (slot 0, else the
    next slot) from every present person's joints; absent persons stay zero (2s-AGCN's
    ``pre_normalization`` centring, which SkeletonCLR's data pipeline uses).
    data: (C, T, V, M) -> float32 (C, T, V, M)."""
    data = _check_ctvm(data).copy()
    present = np.any(data != 0, axis=(0, 2))                        # (T, M)
    first = np.argmax(present, axis=1)                               # (T,) first present slot
    t_idx = np.arange(data.shape[1])
    center = data[:, t_idx, center_joint, first]                     # (C, T)
    center[:, ~present.any(axis=1)] = 0
    data -= center[:, :, None, None] * present[None, :, None, :]
    return data


def resize_frames(data: np.ndarray, length: int = 50) -> np.ndarray:
    """Drop all-zero frames and linearly resample the valid ones to ``length`` frames
    (``F.interpolate(..., mode='linear', align_corners=False)`` semantics, as SkeletonCLR /
    AimCLR's ``valid_crop_resize`` at eval). (C, T, V, M) -> float32 (C, length, V, M);
    no valid frame gives zeros."""
    data = _check_ctvm(data)
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    clip = data[:, valid_frames(data)]
    n = clip.shape[1]
    if n == 0:
        return np.zeros((data.shape[0], length) + data.shape[2:], np.float32)
    src = np.clip((np.arange(length) + 0.5) * n / length - 0.5, 0, n - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    w = (src - lo).astype(np.float32)[None, :, None, None]
    return (clip[:, lo] * (1 - w) + clip[:, hi] * w).astype(np.float32)


def preprocess_skeleton(data: np.ndarray, length: int = 50,
                        center_joint: int = CENTER_JOINT) -> np.ndarray:
    """SkeletonCLR-style input: centre on the spine, then resize the valid frames to ``length``.
    (3, T, 25, M) -> float32 (3, length, 25, M)."""
    return resize_frames(center_skeleton(data, center_joint), length)


def normalize_2d_pose(pose: np.ndarray, layout: str | SkeletonLayout = "synthetic15") -> np.ndarray:
    """A 2-D keypoint sequence ``(T, J, 3)`` (x, y px, image y down; confidence) as a skeleton
    sample ``(3, T, J, 1)`` (ST-GCN's Kinetics layout: x, y, confidence).

    x and y are centred on the layout's root joint (the pelvis of the synthetic figure) averaged
    over the clip, so the figure's travel (a walk, a jump) stays in the data, and divided by its
    mean trunk length (root to graph centre: pelvis to neck), so the figure's size, a nuisance,
    does not; y points up. Joints with confidence 0 are zero in every channel.
    """
    spec = SKELETON_LAYOUTS[layout] if isinstance(layout, str) else layout
    pose = np.asarray(pose, np.float32)
    if pose.ndim != 3 or pose.shape[1:] != (spec.num_joints, 3):
        raise ValueError(f"expected a ({spec.name}) pose (T, {spec.num_joints}, 3), got shape {pose.shape}")
    xy, conf = pose[..., :2], pose[..., 2]
    seen = conf[:, spec.root] > 0
    if not seen.any():
        seen = np.ones(len(pose), bool)
    centre = xy[seen, spec.root].mean(axis=0)
    trunk = np.linalg.norm(xy[seen, spec.center] - xy[seen, spec.root], axis=-1).mean()
    scale = trunk if trunk > 1e-6 else 1.0
    out = np.empty_like(pose)
    out[..., 0] = (xy[..., 0] - centre[0]) / scale
    out[..., 1] = -(xy[..., 1] - centre[1]) / scale
    out[..., 2] = conf
    out[conf <= 0] = 0
    return np.ascontiguousarray(out.transpose(2, 0, 1)[..., None])


def simulate_pose_estimator(pose: np.ndarray, noise: float = 0.0, drop: float = 0.0, seed: int = 0,
                            layout: str | SkeletonLayout = "synthetic15") -> np.ndarray:
    """Exact 2-D keypoints ``(T, J, 3)`` (or ``(M, T, J, 3)``) as a pose estimator would report
    them: every joint of every frame moves by ``N(0, (noise * trunk)^2)`` pixels (trunk: the clip's
    mean distance from the layout's root to its graph centre, so the jitter scales with the
    figure) and is missed (confidence 0) with probability ``drop``. Deterministic from ``seed``
    (the same video always gets the same "estimate", as a fixed estimator's output would)."""
    spec = SKELETON_LAYOUTS[layout] if isinstance(layout, str) else layout
    pose = np.array(pose, np.float32)
    if noise <= 0 and drop <= 0:
        return pose
    rng = np.random.default_rng(seed)
    xy, conf = pose[..., :2], pose[..., 2]
    seen = (conf[..., spec.root] > 0) & (conf[..., spec.center] > 0)
    d = np.linalg.norm(xy[..., spec.center, :] - xy[..., spec.root, :], axis=-1)
    trunk = float(d[seen].mean()) if seen.any() else 1.0
    xy += rng.normal(0.0, noise * trunk, xy.shape).astype(np.float32)
    conf[rng.random(conf.shape) < drop] = 0
    return pose


# --------------------------------------------------------------------------- augmentations
def temporal_crop(data: np.ndarray, rng: np.random.Generator, pad_ratio: int = 6) -> np.ndarray:
    """SkeletonCLR's temporal crop of ``(C, T, V, M)``: pad ``T // pad_ratio`` frames at both ends
    with the first / last frames in reverse (a mirror), then a window of T frames from a start
    drawn uniformly in ``[0, 2 * pad]``. Same shape out."""
    data = _check_ctvm(data)
    t = data.shape[1]
    pad = t // pad_ratio
    if pad == 0:
        return data.copy()
    padded = np.concatenate([data[:, :pad][:, ::-1], data, data[:, -pad:][:, ::-1]], axis=1)
    start = int(rng.integers(0, 2 * pad + 1))
    return np.ascontiguousarray(padded[:, start:start + t])


def shear(data: np.ndarray, rng: np.random.Generator, amplitude: float = 0.5, coords: int = 3) -> np.ndarray:
    """SkeletonCLR's shear of ``(C, T, V, M)``: ``x' = R x`` on the first ``coords`` channels with
    ``R = [[1, s_a, s_b], [s_c, 1, s_d], [s_e, s_f, 1]]`` (its top-left ``coords x coords`` block
    for 2-D data), every off-diagonal ``s ~ U(-amplitude, amplitude)``; other channels (a
    confidence) are kept. Absent persons stay zero."""
    data = _check_ctvm(data)
    if not 1 <= coords <= data.shape[0]:
        raise ValueError(f"coords must be in 1..{data.shape[0]}, got {coords}")
    r = np.eye(3, dtype=np.float64)
    off = rng.uniform(-amplitude, amplitude, 6)
    r[0, 1], r[0, 2], r[1, 0], r[1, 2], r[2, 0], r[2, 1] = off
    r = r[:coords, :coords]
    out = data.copy()
    out[:coords] = np.einsum("ij,jtvm->itvm", r, data[:coords]).astype(np.float32)
    return out


def skeleton_stream(data: np.ndarray, stream: str = "joint",
                    parents: np.ndarray = NTU_PARENTS) -> np.ndarray:
    """The ``joint`` (identity), ``motion`` (``x[t+1] - x[t]``, last frame zero) or ``bone``
    (``x[v] - x[parent(v)]``, root zero) stream of ``(..., C, T, V, M)`` data (same shape)."""
    data = np.asarray(data, np.float32)
    if data.ndim < 4:
        raise ValueError(f"expected (..., C, T, V, M) data, got shape {data.shape}")
    if stream == "joint":
        return data.copy()
    if stream == "motion":
        out = np.zeros_like(data)
        out[..., :-1, :, :] = data[..., 1:, :, :] - data[..., :-1, :, :]
        return out
    if stream == "bone":
        if len(parents) != data.shape[-2]:
            raise ValueError(f"{len(parents)} parents for {data.shape[-2]} joints")
        return data - data[..., np.asarray(parents), :]
    raise ValueError(f"unknown skeleton stream {stream!r}; choose one of {', '.join(STREAMS)}")


# --------------------------------------------------------------------------- ST-GCN arrays
@dataclass
class SkeletonArrays:
    """ST-GCN's preprocessed layout: ``data`` float32 (N, C, T, V, M) (possibly a read-only
    memory map), ``labels`` int64 (N,) 0-based, ``sample_names`` (N,) or None."""
    data: np.ndarray
    labels: np.ndarray
    sample_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)


#: The environment variable that lets this process (and its children) unpickle ``.pkl`` inputs.
TRUST_PICKLE_ENV = "CMMC_TRUST_PICKLE"


def pickles_trusted() -> bool:
    """Whether the person who started this process allowed ``.pkl`` inputs for it: the
    ``--trust-pickle`` option of the command (which sets :data:`TRUST_PICKLE_ENV`) or
    ``CMMC_TRUST_PICKLE=1`` in the environment. Never a setting that travels in a file (a run's
    ``config.json``): permission to run code comes from the keyboard, for one invocation."""
    return os.environ.get(TRUST_PICKLE_ENV, "") == "1"


def _load_pickle(path: Path, trust_pickle: bool):
    if not trust_pickle:
        raise ValueError(
            f"{path} is a pickle, and unpickling a file can run arbitrary code; pass "
            "trust_pickle=True (command line: --trust-pickle, or CMMC_TRUST_PICKLE=1) only if you trust "
            "where it came from, or convert it once to .npy arrays")
    with open(path, "rb") as fh:
        return pickle.load(fh)


def _labels_from(obj, path: Path) -> tuple[np.ndarray, list[str] | None]:
    if isinstance(obj, dict):
        if "label" not in obj:
            raise ValueError(f"{path}: dict without a 'label' key (keys: {sorted(obj)})")
        names = obj.get("sample_name")
        return np.asarray(obj["label"], np.int64), list(names) if names is not None else None
    if isinstance(obj, (tuple, list)) and len(obj) == 2:          # ST-GCN: (names, labels)
        return np.asarray(obj[1], np.int64), [str(n) for n in obj[0]]
    return np.asarray(obj, np.int64), None


def load_stgcn_arrays(data_path: str | Path, label_path: str | Path | None = None,
                      trust_pickle: bool = False, mmap: bool = True) -> SkeletonArrays:
    """Read ST-GCN preprocessed skeletons.

    * ``data_path`` ``.npy`` (N, C, T, V, M) float32, memory-mapped read-only when ``mmap``
      (so a multi-GB file costs no RAM), with ``label_path`` a ``.npy`` of int labels or
      ST-GCN's ``.pkl`` ``(sample_names, labels)``;
    * or ``data_path`` a combined ``.pkl`` dict with ``data``, ``label`` and ``sample_name``.

    Pickles are loaded only with ``trust_pickle=True``; otherwise a ValueError says why.
    """
    data_path = Path(data_path)
    if not data_path.is_file():
        raise FileNotFoundError(f"no such skeleton data file: {data_path}")
    names = None
    if data_path.suffix == ".pkl":
        obj = _load_pickle(data_path, trust_pickle)
        if not isinstance(obj, dict) or "data" not in obj:
            raise ValueError(f"{data_path}: expected a dict with 'data', 'label', 'sample_name'")
        data = np.asarray(obj["data"])
        labels, names = _labels_from(obj, data_path)
    elif data_path.suffix == ".npy":
        data = np.load(data_path, mmap_mode="r" if mmap else None, allow_pickle=False)
        if label_path is None:
            raise ValueError(f"{data_path}: a .npy data file needs label_path (.npy or .pkl)")
        label_path = Path(label_path)
        if not label_path.is_file():
            raise FileNotFoundError(f"no such label file: {label_path}")
        if label_path.suffix == ".pkl":
            labels, names = _labels_from(_load_pickle(label_path, trust_pickle), label_path)
        else:
            labels = np.load(label_path, allow_pickle=False).astype(np.int64)
    else:
        raise ValueError(f"{data_path}: expected a .npy or .pkl file")
    if data.ndim != 5:
        raise ValueError(f"{data_path}: expected (N, C, T, V, M) data, got shape {data.shape}")
    if len(labels) != len(data):
        raise ValueError(f"{data_path}: {len(data)} samples but {len(labels)} labels")
    if names is not None and len(names) != len(data):
        raise ValueError(f"{data_path}: {len(data)} samples but {len(names)} sample names")
    return SkeletonArrays(data, labels, names)
