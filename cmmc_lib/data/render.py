"""The renderer of the synthetic action dataset: a stick figure acting in front of a scene.

Each clip shows a small articulated stick figure (15 joints, :data:`JOINT_NAMES`, linked by
:data:`BONES`) whose **class is its motion** (:data:`CLASS_NAMES`: wave, jump, squat, walk,
clap, kick, ...; speed, phase, amplitude and side jittered per clip) while its **appearance is a
nuisance** drawn independently of the class: figure and limb colours, line thickness, size,
position, background colour and texture (smooth noise, stripes, blobs, checks), distractor
shapes that drift, and camera pan + shake.

* appearance (what a sibling group shares) and motion (what makes one clip of a group
  different) are sampled from seeded numpy generators;
* the skeleton of a frame comes from per-class joint angles at that frame;
* drawing happens at 2x scale with OpenCV's anti-aliased primitives and is area-downsampled,
  for smooth sub-pixel motion.

:func:`render_clip` renders one clip in memory; :mod:`cmmc_lib.data.synthetic` decides which
look and motion each clip of a dataset gets (:func:`~cmmc_lib.data.synthetic.render_dataset_clip`)
and writes them to disk. Both return ``rgb`` uint8
(T, H, W, 3) and ``pose`` float32 (T, J, 3): x, y in px (pixel centres at integers, OpenCV's
convention), confidence 1 inside the frame and 0 outside. Everything is a function of the seeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
import cv2
import numpy as np

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
_RENDER_SCALE = 2          # draw at 2x and area-downsample: smooth sub-pixel motion
_MARGIN = 16               # background margin (px) that camera pan and shake move into


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


TEXTURES = ("noise", "stripes", "blobs", "checks")


def class_scene(label: int) -> tuple:
    """(base colour, other colour, texture kind) of a class's typical scene. It depends on the
    class alone, not on the dataset's seed: a context learnt on one set holds on another, as
    swimming pools go with diving in UCF101 and HMDB51 alike."""
    rng = np.random.default_rng([label, 0xC])
    return _color(rng), _color(rng), str(rng.choice(TEXTURES))


def _background(rng, height: int, width: int, contrast: float = 1.0, scene: tuple | None = None) -> np.ndarray:
    """A textured background, uint8 (S*(H+2M), S*(W+2M), 3). ``contrast`` scales the texture
    (0: flat); ``scene`` (base, other, kind) replaces the drawn colours and texture kind (the
    same random numbers are drawn either way)."""
    s = _RENDER_SCALE
    h, w = s * (height + 2 * _MARGIN), s * (width + 2 * _MARGIN)
    base, other = np.array(_color(rng), np.float32), np.array(_color(rng), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / s
    kind = rng.choice(list(TEXTURES))
    if scene is not None:
        base, other, kind = np.array(scene[0], np.float32), np.array(scene[1], np.float32), scene[2]
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
    m = m * contrast
    img = base * (1 - m) + other * m
    fine = cv2.GaussianBlur(rng.normal(0, 12, (h, w, 1)).astype(np.float32), (0, 0), s * 0.7)
    img = img + fine.reshape(h, w, 1)          # fine grain: something for flow to track
    return np.clip(img, 0, 255).astype(np.uint8)


def sample_appearance(rng, height: int, width: int, figure_scale: float = 1.0, contrast: float = 1.0,
                      scene: tuple | None = None, geometry: FigureGeometry | None = None) -> _Appearance:
    """The look of a group (:class:`_Appearance`, lengths in px of the ``height`` x ``width``
    frame). ``geometry`` (generator v3) draws the figure's size, position and limb width from
    its ranges; ``None`` keeps generator v2's draws (limbs 1.5-3 px and a figure 0.5-0.72 of the
    frame height, both times ``figure_scale``), number for number."""
    g = geometry
    background = _background(rng, height, width, contrast, scene)
    bg_luma = _luma(background.reshape(-1, 3).mean(0))
    colors = []
    while len(colors) < 6:                      # figure colours that stand out of the background
        c = _color(rng)
        if abs(_luma(c) - bg_luma) > 60 or rng.random() < 0.05:
            colors.append(c)
    if rng.random() < 0.5:                      # half the figures wear one limb colour
        colors[2:6] = [colors[2]] * 4
    shape_scale = 1.0 if g is None else g.distractor_scale     # x 1.0: v2's numbers exactly
    distractors = [dict(kind=str(rng.choice(["circle", "rect", "triangle"])), color=_color(rng),
                        size=float(rng.uniform(3, 7)) * shape_scale,
                        x=float(rng.uniform(0, width)), y=float(rng.uniform(0, height)))
                   for _ in range(int(rng.integers(0, 4)))]
    if g is None:                               # generator v2
        thickness = float(rng.uniform(1.5, 3.0)) * figure_scale
        fig_height = float(rng.uniform(0.5, 0.72) * height) * figure_scale
        x, ground = float(rng.uniform(0.38, 0.62) * width), float(rng.uniform(0.88, 0.97) * height)
    else:
        thickness = float(rng.uniform(*g.limb_width))
        fig_height = float(rng.uniform(*g.figure_height) * height)
        x, ground = float(rng.uniform(*g.figure_x) * width), float(rng.uniform(*g.feet_line) * height)
    return _Appearance(background=background, head_color=colors[0], torso_color=colors[1],
                       limb_colors=tuple(colors[2:6]), thickness=thickness, height=fig_height, x=x,
                       ground=ground, distractors=distractors)


@dataclass(frozen=True)
class FigureGeometry:
    """Generator v3's figure: where and how big the actor is drawn, as ranges sampled per look.

    ``figure_height``: the figure's height as a fraction of the frame height; ``figure_x``: its
    centre as a fraction of the width; ``feet_line``: the ground line as a fraction of the
    height; ``limb_width``: limb width in px of the output frame; ``distractor_scale``: the
    distractor shapes' size (3-7 px at v2) times this (v3: height / 64, as the frame shrinks).
    """
    figure_height: tuple[float, float]
    figure_x: tuple[float, float]
    feet_line: tuple[float, float]
    limb_width: tuple[float, float]
    distractor_scale: float = 1.0


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


def sample_motion(rng, frames: int, n_distractors: int) -> _Motion:
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


def render_frames(name: str, look: _Appearance, m: _Motion, frames: int, height: int, width: int
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
    look = sample_appearance(np.random.default_rng([a_seed, 0xA]), height, width)
    m = sample_motion(np.random.default_rng([seed, k, 0xB]), frames, len(look.distractors))
    return render_frames(CLASS_NAMES[k], look, m, frames, height, width)
