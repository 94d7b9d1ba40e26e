"""The synthetic action dataset: the project's embedded default, generated in seconds on a CPU.

Each clip shows a small articulated stick figure (15 joints) whose **class is its motion**
(wave, jump, squat, walk, clap, kick, ...; speed, phase, amplitude and side jittered per clip)
while its **appearance is a nuisance** drawn independently of the class: figure and limb
colours, line thickness, size, position, background colour and texture (smooth noise, stripes,
blobs, checks), distractor shapes that drift, and camera pan + shake.

Clips come in sibling **groups** like UCF101's ``gXX`` (one actor/scene): the clips of one
(class, group) share their appearance and differ in motion jitter. Test groups are disjoint from
training groups, so an RGB network that learns "this background means Wave" (a shortcut that
flow cannot take) does not generalise, as on real action data.

The dataset is written in the layout of a real one (``data/README.md``)::

    <out>/videos/<Class>/v_<Class>_gXX_cYY.mp4    lossless h264 via PyAV (mpeg4 .avi without x264)
    <out>/splits/classInd.txt, trainlist0k.txt, testlist0k.txt   UCF101 format, CRLF, k = 1..3
    <out>/flow/<video_id>/x_00001.jpg, y_...     flow of the *decoded* video (cmmc_lib.data.flow)
    <out>/pose/<video_id>.npy                    float32 (T, J, 3): x, y px, confidence in [0, 1]
    <out>/meta.json                              parameters, class/joint names, bones (written last)

Pixel coordinates put pixel centres at integers (OpenCV's convention); a joint outside the frame
has confidence 0. Everything is a function of ``seed``: the same seed gives identical decoded
frames, flow, pose and split files.
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from cmmc_lib.data.flow import FLOW_BOUND, FLOW_METHODS, extract_flow, is_flow_complete

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
CLASS_NAMES = ("Wave", "Jump", "Squat", "Walk", "Clap", "Kick",          # tiny: the first 6
               "WaveBoth", "Spin", "Punch", "JumpingJack")
JOINT_NAMES = ("head", "neck",
               "right_shoulder", "right_elbow", "right_hand",
               "left_shoulder", "left_elbow", "left_hand",
               "pelvis",
               "right_hip", "right_knee", "right_foot",
               "left_hip", "left_knee", "left_foot")
BONES = ((0, 1), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8),
         (8, 9), (9, 10), (10, 11), (8, 12), (12, 13), (13, 14))     # 0-based (a, b) pairs
NUM_JOINTS = len(JOINT_NAMES)
FPS = 25
_RENDER_SCALE = 2          # draw at 2x and area-downsample: smooth sub-pixel motion
_MARGIN = 16               # background margin (px) that camera pan and shake move into


@dataclass(frozen=True)
class SyntheticSize:
    """One dataset size: ``classes`` first names of CLASS_NAMES x ``groups`` x
    ``clips_per_group`` videos of ``frames`` frames at ``width`` x ``height`` px; split k puts
    groups ``(k-1)*test_groups+1 .. k*test_groups`` of every class in the test list."""
    classes: int
    groups: int
    clips_per_group: int
    frames: int
    height: int = 64
    width: int = 80
    test_groups: int = 1

    @property
    def num_videos(self) -> int:
        return self.classes * self.groups * self.clips_per_group


SYNTHETIC_SIZES = {
    "tiny": SyntheticSize(classes=6, groups=4, clips_per_group=3, frames=24, test_groups=1),
    "cpu": SyntheticSize(classes=10, groups=9, clips_per_group=4, frames=32, test_groups=2),
}


# --------------------------------------------------------------------------- appearance
@dataclass
class _Appearance:
    """What a sibling group shares (everything but the motion). Lengths in output px."""
    background: np.ndarray          # uint8 (S*(H+2M), S*(W+2M), 3) at render scale S
    head_color: tuple
    torso_color: tuple
    limb_colors: tuple              # 4 colours: right arm, left arm, right leg, left leg
    thickness: float                # limb width (px)
    height: float                   # figure height (px)
    x: float                        # figure centre (px)
    ground: float                   # feet line (px)
    distractors: list               # dicts: kind, color, size, x, y


def _color(rng) -> tuple:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _luma(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _background(rng, height: int, width: int) -> np.ndarray:
    """A textured background, uint8 (S*(H+2M), S*(W+2M), 3)."""
    s = _RENDER_SCALE
    h, w = s * (height + 2 * _MARGIN), s * (width + 2 * _MARGIN)
    base, other = np.array(_color(rng), np.float32), np.array(_color(rng), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / s
    kind = rng.choice(["noise", "stripes", "blobs", "checks"])
    if kind == "noise":
        cells = rng.random((int(rng.integers(3, 9)), int(rng.integers(3, 9)), 1), np.float32)
        m = cv2.resize(cells, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
    elif kind == "stripes":
        angle, period = rng.uniform(0, math.pi), rng.uniform(6, 20)
        m = 0.5 + 0.5 * np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle))
                               / period + rng.uniform(0, 2 * math.pi))
        m = m[..., None]
    elif kind == "blobs":
        m = np.zeros((h, w, 1), np.float32)
        for _ in range(int(rng.integers(4, 12))):
            cx, cy = rng.uniform(0, w / s), rng.uniform(0, h / s)
            sd = rng.uniform(3, 10)
            m[..., 0] += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sd ** 2))
        m = np.clip(m, 0, 1)
    else:
        cell = rng.uniform(6, 14)
        m = (((xx // cell) + (yy // cell)) % 2)[..., None]
    img = base * (1 - m) + other * m
    fine = cv2.GaussianBlur(rng.normal(0, 12, (h, w, 1)).astype(np.float32), (0, 0), s * 0.7)
    img = img + fine.reshape(h, w, 1)          # fine grain: something for flow to track
    return np.clip(img, 0, 255).astype(np.uint8)


def _sample_appearance(rng, height: int, width: int) -> _Appearance:
    background = _background(rng, height, width)
    bg_luma = _luma(background.reshape(-1, 3).mean(0))
    colors = []
    while len(colors) < 6:                      # figure colours that stand out of the background
        c = _color(rng)
        if abs(_luma(c) - bg_luma) > 60 or rng.random() < 0.05:
            colors.append(c)
    if rng.random() < 0.5:                      # half the figures wear one limb colour
        colors[2:6] = [colors[2]] * 4
    distractors = [dict(kind=str(rng.choice(["circle", "rect", "triangle"])), color=_color(rng),
                        size=float(rng.uniform(3, 7)), x=float(rng.uniform(0, width)),
                        y=float(rng.uniform(0, height)))
                   for _ in range(int(rng.integers(0, 4)))]
    return _Appearance(background=background, head_color=colors[0], torso_color=colors[1],
                       limb_colors=tuple(colors[2:6]), thickness=float(rng.uniform(1.5, 3.0)),
                       height=float(rng.uniform(0.5, 0.72) * height),
                       x=float(rng.uniform(0.38, 0.62) * width),
                       ground=float(rng.uniform(0.88, 0.97) * height), distractors=distractors)


# --------------------------------------------------------------------------- motion
@dataclass
class _Motion:
    """What makes one clip of a group different: speed, phase, amplitude, side, camera."""
    period: float          # frames per motion cycle
    phase: float           # radians
    amp: float             # amplitude multiplier
    side: int              # +1 / -1: the arm or leg used, or the walking direction
    dx: float              # figure offset from the group position (px)
    scale: float           # figure size multiplier
    pan: np.ndarray        # (2,) camera drift (px / frame)
    shake: np.ndarray      # (T, 2) camera shake (px)
    drift: np.ndarray      # (n_distractors, 2) distractor velocity (px / frame)


def _sample_motion(rng, frames: int, n_distractors: int) -> _Motion:
    return _Motion(period=float(rng.uniform(9, 15)), phase=float(rng.uniform(0, 2 * math.pi)),
                   amp=float(rng.uniform(0.8, 1.2)), side=int(rng.choice([-1, 1])),
                   dx=float(rng.uniform(-3, 3)), scale=float(rng.uniform(0.95, 1.05)),
                   pan=rng.uniform(-0.35, 0.35, 2), shake=rng.normal(0, 0.25, (frames, 2)),
                   drift=rng.uniform(-0.6, 0.6, (n_distractors, 2)))


def _angles(name: str, t: float, m: _Motion) -> dict:
    """Joint angles of class ``name`` at frame ``t``. Arms: outward shoulder angle ``th`` (0 =
    hanging, pi/2 = horizontal, pi = up) and elbow ``ph`` (forearm angle = th + ph); legs:
    outward hip ``al`` and knee bend ``be`` (shin angle = al - be); per side (R, L). ``lift``
    (body heights above the ground), ``walk`` (px from the start), ``spin`` (x scale)."""
    a, s = m.amp, m.side
    p = 2 * math.pi * t / m.period + m.phase
    th, ph = {"R": 0.15, "L": 0.15}, {"R": 0.1, "L": 0.1}
    al, be = {"R": 0.08, "L": 0.08}, {"R": 0.0, "L": 0.0}
    lift, walk, spin, swing = 0.0, 0.0, 1.0, None
    one = "R" if s < 0 else "L"
    if name in ("Wave", "WaveBoth"):
        for k in (("R", "L") if name == "WaveBoth" else (one,)):
            th[k], ph[k] = 2.5 + 0.15 * a * math.sin(p), 0.15 + 0.6 * a * math.sin(p)
    elif name == "Jump":
        up, down = max(0.0, math.sin(p)), max(0.0, -math.sin(p))
        lift = 0.22 * a * up
        for k in "RL":
            al[k], be[k] = 0.08 + 0.3 * down, 1.0 * a * down
            th[k] = 0.2 + 1.8 * a * up
    elif name == "Squat":
        u = min(1.0, a) * (1 - math.cos(p / 1.5)) / 2            # slower than the rest
        for k in "RL":
            al[k], be[k], th[k], ph[k] = 0.1 + 0.7 * u, 1.5 * u, 0.15 + 1.3 * u, 0.2
    elif name == "Walk":
        swing = 0.45 * a * math.sin(p)
        walk = s * 0.02 * a * t                                     # x height per frame
        lift = 0.03 * abs(math.sin(p))
        be["R"], be["L"] = 0.5 * a * max(0.0, math.cos(p)), 0.5 * a * max(0.0, -math.cos(p))
    elif name == "Clap":
        c = (1 - math.cos(p)) / 2
        for k in "RL":
            th[k], ph[k] = 1.45 - 0.85 * c, 0.1 - 2.25 * c
    elif name == "Kick":
        u = min(1.0, a * max(0.0, math.sin(p)) ** 1.5)
        al[one], be[one] = 0.08 + 1.1 * u, 0.8 * math.sin(math.pi * u)
        al["R" if one == "L" else "L"] = 0.05
        th["R"] = th["L"] = 0.6
    elif name == "Spin":
        spin = math.cos(p / 2)                                      # half speed: a slow turn
        for k in "RL":
            th[k], ph[k] = 1.35, 0.1
    elif name == "Punch":
        for k, q in (("R", p), ("L", p + math.pi)):
            ext = min(1.0, a) * max(0.0, math.sin(q)) ** 0.7
            th[k], ph[k] = 0.35 + 1.2 * ext, 2.4 * (1 - ext)
    elif name == "JumpingJack":
        c = min(1.0, a) * (1 - math.cos(p)) / 2
        lift = 0.06 * a * abs(math.sin(p))
        for k in "RL":
            th[k], ph[k], al[k] = 0.15 + 2.55 * c, 0.1 + 0.2 * c, 0.06 + 0.35 * c
    else:
        raise ValueError(f"unknown class {name!r}; choose one of {', '.join(CLASS_NAMES)}")
    return dict(th=th, ph=ph, al=al, be=be, lift=lift, walk=walk, spin=spin, swing=swing, p=p)


def _skeleton(name: str, t: int, look: _Appearance, m: _Motion) -> np.ndarray:
    """World joint positions (J, 2) px of frame ``t`` (before the camera moves)."""
    g = _angles(name, t, m)
    u = look.height * m.scale

    def ray(a):                    # unit vector at signed angle a from straight down, y down
        return np.array([math.sin(a), math.cos(a)])

    j = np.zeros((NUM_JOINTS, 2))
    j[1] = (0, 0)                                      # neck
    j[0] = (0, -0.11 * u)                              # head centre
    j[8] = (0, 0.30 * u)                               # pelvis
    for side, sgn, (sh, el, ha), (hip, kn, ft) in (("R", -1, (2, 3, 4), (9, 10, 11)),
                                                   ("L", 1, (5, 6, 7), (12, 13, 14))):
        j[sh] = (sgn * 0.10 * u, 0.02 * u)
        j[el] = j[sh] + 0.16 * u * ray(sgn * g["th"][side])
        j[ha] = j[el] + 0.15 * u * ray(sgn * (g["th"][side] + g["ph"][side]))
        j[hip] = j[8] + (sgn * 0.06 * u, 0)
        if g["swing"] is not None:                     # walking: legs swing in the image plane
            thigh = g["swing"] * (1 if side == "R" else -1)
            shin = thigh - m.side * g["be"][side]
        else:
            thigh = sgn * g["al"][side]
            shin = sgn * (g["al"][side] - g["be"][side])
        j[kn] = j[hip] + 0.22 * u * ray(thigh)
        j[ft] = j[kn] + 0.22 * u * ray(shin)
    if name == "Walk":                                 # arms swing against the legs
        for sh, el, ha, sgn in ((2, 3, 4, 1), (5, 6, 7, -1)):
            a = -sgn * 0.7 * g["swing"]
            j[el] = j[sh] + 0.16 * u * ray(a)
            j[ha] = j[el] + 0.15 * u * ray(a + 0.3 * m.side)
    j[:, 0] *= g["spin"]
    j[:, 1] += look.ground - g["lift"] * u - j[[11, 14], 1].max()   # lowest foot on the ground
    start = look.x + m.dx
    if name == "Walk":                                 # centre the walk on the group position
        start -= m.side * 0.01 * m.amp * u * (len(m.shake) - 1)
    j[:, 0] += start + g["walk"] * u
    return j


# --------------------------------------------------------------------------- rendering
def _pt(p, offset) -> tuple:
    """Output px -> fixed-point coordinates (4 fractional bits) on the 2x canvas."""
    s = _RENDER_SCALE
    return (int(round((s * (p[0] + offset[0]) + (s - 1) / 2) * 16)),
            int(round((s * (p[1] + offset[1]) + (s - 1) / 2) * 16)))


def _draw_frame(look: _Appearance, joints: np.ndarray, cam: np.ndarray, distractors: np.ndarray,
                height: int, width: int) -> np.ndarray:
    """One uint8 (H, W, 3) frame: background seen from camera offset ``cam`` (px), distractors
    at world (n, 2), the figure at world ``joints`` (J, 2)."""
    s = _RENDER_SCALE
    shift = np.float32([[1, 0, -s * (_MARGIN + cam[0])], [0, 1, -s * (_MARGIN + cam[1])]])
    canvas = cv2.warpAffine(look.background, shift, (s * width, s * height),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    off = -cam
    for d, pos in zip(look.distractors, distractors):
        r = int(round(d["size"] * s * 16))
        c = _pt(pos, off)
        if d["kind"] == "circle":
            cv2.circle(canvas, c, r, d["color"], -1, cv2.LINE_AA, 4)
        elif d["kind"] == "rect":
            cv2.rectangle(canvas, (c[0] - r, c[1] - r), (c[0] + r, c[1] + r), d["color"], -1,
                          cv2.LINE_AA, 4)
        else:
            tri = np.array([[c[0], c[1] - r], [c[0] - r, c[1] + r], [c[0] + r, c[1] + r]],
                           np.int32)
            cv2.fillPoly(canvas, [tri], d["color"], cv2.LINE_AA, 4)
    thick = max(1, int(round(look.thickness * s)))
    limb_of = {2: 0, 3: 0, 4: 0, 5: 1, 6: 1, 7: 1, 9: 2, 10: 2, 11: 2, 12: 3, 13: 3, 14: 3}
    for a, b in sorted(BONES, key=lambda e: e[1] in (2, 3, 4, 5, 6, 7)):   # arms in front
        color = look.limb_colors[limb_of[b]] if b in limb_of else look.torso_color
        width_ = thick + (max(1, thick // 2) if (a, b) == (1, 8) else 0)
        cv2.line(canvas, _pt(joints[a], off), _pt(joints[b], off), color, width_, cv2.LINE_AA, 4)
    r_head = int(round(0.075 * look.height * s * 16))
    cv2.circle(canvas, _pt(joints[0], off), r_head, look.head_color, -1, cv2.LINE_AA, 4)
    return cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA)


def _render(name: str, look: _Appearance, m: _Motion, frames: int, height: int, width: int
            ) -> tuple[np.ndarray, np.ndarray]:
    rgb = np.zeros((frames, height, width, 3), np.uint8)
    pose = np.zeros((frames, NUM_JOINTS, 3), np.float32)
    for t in range(frames):
        cam = m.pan * t + m.shake[t]
        dis = np.array([(d["x"], d["y"]) for d in look.distractors]).reshape(-1, 2) + m.drift * t
        world = _skeleton(name, t, look, m)
        rgb[t] = _draw_frame(look, world, cam, dis, height, width)
        xy = world - cam
        inside = (xy[:, 0] >= -0.5) & (xy[:, 0] < width - 0.5) & (xy[:, 1] >= -0.5) & \
                 (xy[:, 1] < height - 0.5)
        pose[t, :, :2], pose[t, :, 2] = xy, inside
    return rgb, pose


def class_index(class_name_or_index: str | int) -> int:
    """0-based index in :data:`CLASS_NAMES` of a name or an index."""
    if isinstance(class_name_or_index, (int, np.integer)):
        if not 0 <= class_name_or_index < len(CLASS_NAMES):
            raise ValueError(f"class index {class_name_or_index} outside 0..{len(CLASS_NAMES) - 1}")
        return int(class_name_or_index)
    if class_name_or_index not in CLASS_NAMES:
        raise ValueError(f"unknown class {class_name_or_index!r}; "
                         f"choose one of {', '.join(CLASS_NAMES)}")
    return CLASS_NAMES.index(class_name_or_index)


def render_clip(class_name_or_index: str | int, seed: int = 0, frames: int = 24,
                size: tuple[int, int] = (64, 80), appearance_seed: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Render one clip in memory (no file is written).

    ``size`` is (height, width) px. The motion jitter comes from ``seed``; the appearance from
    ``appearance_seed`` (default: ``seed``), so one appearance seed with several classes shows
    the same "actor and scene" doing different actions.
    Returns ``rgb`` uint8 (T, H, W, 3) and ``pose`` float32 (T, J, 3) (x px, y px, confidence).
    """
    k = class_index(class_name_or_index)
    height, width = size
    if frames < 1 or height < 16 or width < 16:
        raise ValueError(f"need frames >= 1 and size >= (16, 16), got {frames}, {size}")
    a_seed = seed if appearance_seed is None else appearance_seed
    look = _sample_appearance(np.random.default_rng([a_seed, 0xA]), height, width)
    m = _sample_motion(np.random.default_rng([seed, k, 0xB]), frames, len(look.distractors))
    return _render(CLASS_NAMES[k], look, m, frames, height, width)


def render_dataset_clip(size: SyntheticSize, seed: int, label: int, group: int, clip: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The clip ``v_<Class>_g<group>_c<clip>`` (1-based group/clip) of a dataset: appearance
    from (seed, label, group), motion from (seed, label, group, clip)."""
    look = _sample_appearance(np.random.default_rng([seed, label, group, 0xA]), size.height,
                              size.width)
    m = _sample_motion(np.random.default_rng([seed, label, group, clip, 0xB]), size.frames,
                       len(look.distractors))
    return _render(CLASS_NAMES[label], look, m, size.frames, size.height, size.width)


# --------------------------------------------------------------------------- video files
@lru_cache(maxsize=1)
def video_codec() -> tuple[str, str]:
    """(codec, extension): libx264 in .mp4 when PyAV's FFmpeg has it, else mpeg4 in .avi."""
    import av
    for codec, ext in (("libx264", ".mp4"), ("mpeg4", ".avi")):
        if codec not in av.codecs_available:
            continue
        try:
            _encode(io.BytesIO(), np.zeros((2, 16, 16, 3), np.uint8), codec, ext[1:])
            return codec, ext
        except Exception as exc:                     # listed, but not usable in this build
            log.debug("codec %s unusable: %s", codec, exc)
    raise RuntimeError("PyAV can encode neither libx264 nor mpeg4 video")


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3), even H and W -> the planar I420 buffer (Y, then U, then V) shaped
    (3H/2, W) as PyAV's ``yuv420p`` frames take it: BT.601 limited range (what decoders assume for untagged SD video),
    chroma averaged over 2x2 blocks. Done here, exactly, so the encoder input does not depend on
    the FFmpeg build's swscale."""
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"yuv420p needs an even frame size, got {w}x{h}")
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    cb = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    cr = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255

    def plane(c, sub):
        if sub:
            c = c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
        return np.clip(np.rint(c), 0, 255).astype(np.uint8)

    planes = (plane(y, False), plane(cb, True), plane(cr, True))
    return np.concatenate([p.ravel() for p in planes]).reshape(h * 3 // 2, w)


def _encode(path: Path | io.BytesIO, frames: np.ndarray, codec: str,
            container_format: str | None = None) -> None:
    """Write uint8 RGB (T, H, W, 3) as a video. libx264 is run **lossless** (qp 0) on our own
    yuv420p conversion: the decoded frames are then the same whatever x264 build wrote them
    (only the 4:2:0 chroma is lost, as in every consumer video). mpeg4 (the fallback) is lossy."""
    import av
    target = path if isinstance(path, io.BytesIO) else str(path)
    with av.open(target, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {"qp": "0", "preset": "medium"} if codec == "libx264" \
            else {"qscale": "2"}
        for t, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(f), format="yuv420p")
            frame.pts = t
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    _atomic(video, lambda p: _encode(p, rgb, codec))
    _atomic(pose_path, lambda p: np.save(p, pose))
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
        "format": "cmmc-synthetic", "generator_version": GENERATOR_VERSION,
        "size": size_name, "seed": seed, "num_videos": len(items), "params": asdict(size),
        "fps": FPS, "codec": codec, "ext": ext, "flow_method": flow_method,
        "flow_bound": FLOW_BOUND, "classes": list(CLASS_NAMES[:size.classes]),
        "joint_names": list(JOINT_NAMES), "bones": [list(b) for b in BONES],
        "pose": "float32 (T, J, 3): x, y in px of the frame (pixel centres at integers), "
                "confidence (0 when the joint is outside the frame)",
        "test_groups": {str(k): test_groups(size, k) for k in (1, 2, 3)},
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
    from tqdm.auto import tqdm

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
    _atomic(pending, lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"))
    meta_path.unlink(missing_ok=True)

    jobs = [(str(out), spec, seed, k, g, c, codec, ext) for k, g, c in items]
    t0 = time.perf_counter()
    bar = tqdm(total=len(jobs), desc=f"synthetic {size}", unit="video", disable=not progress)
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
