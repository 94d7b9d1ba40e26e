"""Clip transforms whose random parameters are drawn ONCE per view and shared by modalities.

A view of a clip is cut the same way in RGB, flow and pose. Per item, from the item's random
numbers, :func:`plan_views` decides each view's window and strength (CoCLR: the two views share
one window half the time, and one of them is weak), :func:`sample_view_params` draws its crop
box, flip and photometric parameters (:class:`Augment` holds the settings, from the config's
``data.*``), :func:`eval_view_params` / :func:`ten_crop_params` give the deterministic views of
evaluation. The crop box is stored as fractions of the frame so that a modality stored at
another resolution is cut at the same place.

The geometric half is done here, per item, on uint8 pixels: :func:`crop_clip` cuts the box out of
every frame, resizes it to ``S x S`` (bilinear, antialiased when it shrinks) and flips it; on a
flip the flow's x component is negated when ``flip_flow`` (a mirrored video moves the other way;
on the uint8 storage ``q -> 255 - q`` is exactly ``f -> -f``). The photometric half (jitter, grey,
blur) and the normalisation are :func:`cmmc_lib.data.augment.finish_clips`, on batches.

* Pose: ``(T, J, 3)`` keypoints (x, y in pixels of the source frame, cv2 convention: pixel
  column i has its centre at x = i; confidence) -> ``(3, T, J)`` with x, y in the crop mapped
  to [-1, 1] (-1 = left/top edge of the crop) and the confidence, set to 0 for joints that fall
  outside the crop (their coordinates are kept, beyond +-1). Several persons ``(M, T, J, 3)``
  give ``(3, T, J, M)``.
* Heatmap (the RGB + Pose route): the same keypoints rendered in the crop as ``(P, T, S, S)``
  in [0, 1], one channel per body part of the skeleton layout (:func:`transform_heatmap`); on a
  flip the left and right parts swap channels, as a mirrored person's left arm is seen as a right one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .augment import PARAMS, finish_clips
from .pose import part_heatmaps

#: Colour jitter strengths (brightness, contrast, saturation, hue), as MoCo v2 / CoCLR.
JITTER_STRENGTH = (0.4, 0.4, 0.4, 0.1)
CROP_MODES = ("torchvision", "coclr")
VIEW_MODES = ("symmetric", "coclr")


@dataclass(frozen=True)
class Augment:
    """How training views are drawn (the config's ``data.*`` augmentation settings).

    crop_mode:  ``torchvision`` (aspect log-uniform in ``ratio``, 10 tries, then the centre crop)
                or ``coclr`` (aspect uniform in ``ratio``, width and height swapped half the time,
                one try, then the whole frame, squashed: CoCLR's RandomSizedCrop).
    view_mode:  ``symmetric`` (independent windows, every view strong) or ``coclr`` (half the
                items put both views on one window with exactly one strong, the others draw two
                windows, each view strong with ``strong_p``: CoCLR's TransformController).
    jitter_p, grey_p, blur_p: probabilities of colour jitter (strengths ``jitter_strength``), of
                grey (``grey_mode``: luma or one channel per frame), of a Gaussian blur with sigma
                uniform in ``blur_sigma`` px of the crop.
    """
    crop_scale: tuple[float, float] = (0.3, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    crop_mode: str = "torchvision"
    flip_p: float = 0.5
    view_mode: str = "symmetric"
    same_window: float = 0.5
    strong_p: float = 0.3
    jitter_p: float = 0.8
    jitter_strength: tuple[float, float, float, float] = JITTER_STRENGTH
    grey_p: float = 0.2
    grey_mode: str = "luma"
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    @classmethod
    def of(cls, data) -> "Augment":
        """The settings of a :class:`~cmmc_lib.config.DataConfig`."""
        return cls(tuple(data.crop_scale), (3 / 4, 4 / 3), data.crop_mode, 0.5, data.view_mode, data.same_window,
                   data.strong_p, data.color_jitter, JITTER_STRENGTH, data.grayscale, data.grey_mode, data.blur,
                   tuple(data.blur_sigma))


@dataclass(frozen=True)
class ViewParams:
    """How one view is cut, shared by all of its modalities.

    box:     (top, left, height, width) as fractions of the frame, in [0, 1].
    flip:    horizontal flip.
    strong:  the photometric part applies (a weak view is the crop and the flip alone).
    jitter:  (brightness, contrast, saturation, hue) factors, or None.
    grey:    turn the view grey (after jitter); ``grey_channels``: the channel each frame copies
             (CoCLR's grey), or None (luma).
    blur:    the Gaussian blur's sigma in px of the crop (0: none).
    """
    box: tuple[float, float, float, float]
    flip: bool = False
    strong: bool = True
    jitter: tuple[float, float, float, float] | None = None
    grey: bool = False
    grey_channels: tuple[int, ...] | None = None
    blur: float = 0.0

    def photometric(self) -> torch.Tensor:
        """The view's row of :data:`cmmc_lib.data.augment.PARAMS`."""
        b, c, s, h = self.jitter or (1.0, 1.0, 1.0, 0.0)
        row = dict(strong=self.strong, jitter=self.jitter is not None, brightness=b, contrast=c, saturation=s,
                   hue=h, grey=self.grey, blur=self.blur)
        return torch.tensor([float(row[name]) for name in PARAMS])


# ----------------------------------------------------------------------------- parameters
def random_resized_box(rng: np.random.Generator, frame_hw: tuple[int, int],
                       scale: tuple[float, float] = (0.3, 1.0),
                       ratio: tuple[float, float] = (3 / 4, 4 / 3), mode: str = "torchvision") -> tuple[int, int, int, int]:
    """(top, left, h, w) in pixels of a random crop of area fraction ~ U(scale).

    ``torchvision``: log aspect (w / h) ~ U(log ratio); 10 tries, then the centre crop with the
    aspect clamped to ratio (torchvision's RandomResizedCrop). ``coclr``: aspect ~ U(ratio), w and
    h swapped with p 0.5, one try, then the whole frame (CoCLR's RandomSizedCrop, which then
    squashes the frame to the square output)."""
    height, width = frame_hw
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"crop scale must satisfy 0 < lo <= hi <= 1, got {scale}")
    if mode not in CROP_MODES:
        raise ValueError(f"crop mode must be one of {', '.join(CROP_MODES)}, got {mode!r}")
    area = height * width
    for _ in range(10 if mode == "torchvision" else 1):
        target = area * rng.uniform(scale[0], scale[1])
        if mode == "torchvision":
            aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        else:
            aspect = rng.uniform(ratio[0], ratio[1])
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if mode == "coclr" and rng.random() < 0.5:
            w, h = h, w
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    if mode == "coclr":
        return 0, 0, height, width
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def plan_views(rng: np.random.Generator, windows: np.ndarray, aug: Augment) -> tuple[np.ndarray, list[bool]]:
    """Each view's window and strength: ``(windows (V, T), strong per view)``. ``symmetric``: the
    windows as drawn, every view strong; ``coclr`` (two views): with ``same_window`` one of the two
    windows (50/50) for both views, exactly one of them strong (50/50); else both windows, each view
    strong with ``strong_p``."""
    if aug.view_mode not in VIEW_MODES:
        raise ValueError(f"view mode must be one of {', '.join(VIEW_MODES)}, got {aug.view_mode!r}")
    if aug.view_mode == "symmetric":
        return windows, [True] * len(windows)
    if len(windows) != 2:
        raise ValueError(f"view_mode=coclr makes two views (a query and a key), got {len(windows)}")
    if rng.random() < aug.same_window:
        keep = int(rng.integers(2))
        first_strong = bool(rng.random() < 0.5)
        return np.stack([windows[keep], windows[keep]]), [first_strong, not first_strong]
    return windows, [bool(rng.random() < aug.strong_p) for _ in range(2)]


def sample_view_params(rng: np.random.Generator, frame_hw: tuple[int, int], aug: Augment = Augment(),
                       strong: bool = True, frames: int = 1) -> ViewParams:
    """Random parameters of one training view of ``frames`` frames of ``frame_hw`` = (H, W) px.

    Draws, in this order and whatever the view's strength (so a weak view leaves the random
    numbers of later views as they are): crop box, flip, jitter (with ``jitter_p``), grey (with
    ``grey_p``), grey channels (``grey_mode="channel"``: one per frame), blur (with ``blur_p``, its
    sigma). Same ``rng`` state -> same view."""
    top, left, h, w = random_resized_box(rng, frame_hw, aug.crop_scale, aug.ratio, aug.crop_mode)
    flip = bool(rng.random() < aug.flip_p)
    jitter = None
    if rng.random() < aug.jitter_p:
        b, c, s, hue = aug.jitter_strength
        jitter = (float(rng.uniform(max(0.0, 1 - b), 1 + b)), float(rng.uniform(max(0.0, 1 - c), 1 + c)),
                  float(rng.uniform(max(0.0, 1 - s), 1 + s)), float(rng.uniform(-hue, hue)))
    grey = bool(rng.random() < aug.grey_p)
    channels = tuple(int(c) for c in rng.integers(0, 3, frames)) if aug.grey_mode == "channel" else None
    blur = float(rng.uniform(*aug.blur_sigma)) if rng.random() < aug.blur_p else 0.0
    H, W = frame_hw
    return ViewParams((top / H, left / W, h / H, w / W), flip, strong, jitter if strong else None,
                      grey and strong, channels, blur if strong else 0.0)


def eval_view_params(frame_hw: tuple[int, int], size: int) -> ViewParams:
    """The deterministic view: a centred ``size`` x ``size`` pixel square of the frame (the
    largest centred square when the frame is smaller), no flip, no colour change."""
    H, W = frame_hw
    side = min(size, H, W)
    top, left = (H - side) // 2, (W - side) // 2
    return ViewParams((top / H, left / W, side / H, side / W), strong=False)


def ten_crop_params(frame_hw: tuple[int, int], size: int) -> list[ViewParams]:
    """CoCLR's ten crops: the centre and the four corners of ``size`` x ``size`` px (at most the
    frame's short side), then the same five flipped."""
    H, W = frame_hw
    side = min(size, H, W)
    corners = [((H - side) // 2, (W - side) // 2), (0, 0), (0, W - side), (H - side, 0), (H - side, W - side)]
    boxes = [(t / H, l / W, side / H, side / W) for t, l in corners]
    return [ViewParams(b, flip, strong=False) for flip in (False, True) for b in boxes]


# ----------------------------------------------------------------------------- the geometric half
def pixel_box(params: ViewParams, frame_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """The view's box (top, left, h, w) in pixels of a frame of ``frame_hw``."""
    H, W = frame_hw
    t, l, h, w = params.box
    top, left = int(round(t * H)), int(round(l * W))
    return top, left, max(1, min(int(round(h * H)), H - top)), max(1, min(int(round(w * W)), W - left))


def crop_clip(frames, params: ViewParams, size: int, flow: bool = False, flip_flow: bool = True) -> torch.Tensor:
    """uint8 (T, H, W, C) -> uint8 (T, size, size, C): the view's box of every frame, resized
    (OpenCV: area averaging where the box shrinks, bilinear where it grows) and flipped; a flipped
    flow clip (``flow``) has its x channel negated when ``flip_flow``."""
    x = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise ValueError(f"expected uint8 frames (T, H, W, C), got {x.dtype} {tuple(x.shape)}")
    top, left, h, w = pixel_box(params, x.shape[1:3])
    x = x[:, top:top + h, left:left + w]
    if (h, w) != (size, size):
        how = cv2.INTER_AREA if h * w > size * size else cv2.INTER_LINEAR
        x = np.stack([cv2.resize(f, (size, size), interpolation=how).reshape(size, size, -1) for f in x])
    if params.flip:
        x = x[:, :, ::-1]
        if flow and flip_flow:
            x = np.concatenate([255 - x[..., :1], x[..., 1:]], axis=-1)
    return torch.from_numpy(np.ascontiguousarray(x))


def transform_rgb(frames, params: ViewParams, size: int) -> torch.Tensor:
    """One RGB view as the network sees it at the default settings: uint8 (T, H, W, 3) -> float32
    (3, T, size, size) in [-1, 1] (:func:`crop_clip`, then :func:`~cmmc_lib.data.augment.finish_clips`)."""
    grey = torch.tensor([params.grey_channels], dtype=torch.uint8) if params.grey_channels else None
    return finish_clips(crop_clip(frames, params, size)[None], "rgb", params.photometric()[None], grey,
                        grey_mode="channel" if params.grey_channels else "luma")[0]


def transform_flow(frames, params: ViewParams, size: int, flip_flow: bool = True) -> torch.Tensor:
    """One flow view: uint8 (T, H, W, 2) quantised flow -> float32 (2, T, size, size) = px / 20."""
    return finish_clips(crop_clip(frames, params, size, flow=True, flip_flow=flip_flow)[None], "flow")[0]


def _crop_keypoints(keypoints, params: ViewParams, frame_hw: tuple[int, int]):
    """(x, y, conf) tensors of (..., T, J) keypoints in crop fractions (0..1 inside the crop,
    flipped with the view)."""
    kp = torch.as_tensor(np.asarray(keypoints, dtype=np.float32))
    if kp.ndim not in (3, 4) or kp.shape[-1] != 3:
        raise ValueError(f"pose must be (T, J, 3) or (M, T, J, 3), got {tuple(kp.shape)}")
    H, W = frame_hw
    top, left, h, w = params.box
    x = ((kp[..., 0] + 0.5) / W - left) / w                       # 0..1 inside the crop
    y = ((kp[..., 1] + 0.5) / H - top) / h
    if params.flip:
        x = 1 - x
    return x, y, kp[..., 2]


def transform_pose(keypoints, params: ViewParams, frame_hw: tuple[int, int]) -> torch.Tensor:
    """float (T, J, 3) keypoints (x, y px of a ``frame_hw`` = (H, W) frame, confidence) ->
    float32 (3, T, J): x, y in crop coordinates in [-1, 1] (flipped with the view), and the
    confidence (0 for joints outside the crop). (M, T, J, 3) -> (3, T, J, M)."""
    x, y, conf = _crop_keypoints(keypoints, params, frame_hw)
    inside = (x >= 0) & (x <= 1) & (y >= 0) & (y <= 1)
    conf = torch.where(inside, conf, torch.zeros_like(conf))
    out = torch.stack([2 * x - 1, 2 * y - 1, conf])
    return out.permute(0, 2, 3, 1).contiguous() if out.ndim == 4 else out


def transform_heatmap(keypoints, params: ViewParams, frame_hw: tuple[int, int], size: int, layout,
                      sigma: float = 1.0, limbs: bool = False) -> torch.Tensor:
    """float (T, J, 3) or (M, T, J, 3) keypoints (x, y px of a ``frame_hw`` frame, confidence) ->
    float32 (P, T, size, size) heatmaps of the view's crop (:func:`cmmc_lib.data.pose.part_heatmaps`:
    one channel per body part of ``layout``, a :class:`cmmc_lib.registry.SkeletonLayout`; persons
    merged by a maximum). A joint's Gaussian peaks at its pixel of the resized crop; ``sigma`` in
    those pixels. On a flip, part p's channel shows the part mirrored into it (``layout.mirror``)."""
    x, y, conf = _crop_keypoints(keypoints, params, frame_hw)
    px = torch.stack([x * size - 0.5, y * size - 0.5, conf], dim=-1).numpy()      # pixel centres at integers
    maps = part_heatmaps(px, layout.parts, (size, size), sigma, bones=layout.bones if limbs else ())
    if params.flip:
        maps = maps[list(layout.mirror)]
    return torch.from_numpy(np.ascontiguousarray(maps))


class ClipTransform:
    """Samples view parameters and applies their geometric half to every modality of a view.

    >>> t = ClipTransform(size=32, train=True)
    >>> p = t.sample(np.random.default_rng(0), (40, 53))
    >>> out = t(p, rgb=rgb_u8, flow=flow_u8)    # {"rgb": uint8 (T,32,32,3), "flow": uint8 (T,32,32,2)}
    """

    def __init__(self, size: int, train: bool, aug: Augment = Augment(), flip_flow: bool = True,
                 layout=None, heatmap_sigma: float = 1.0, heatmap_limbs: bool = False, eval_crop: int = 0):
        self.size, self.train, self.aug, self.flip_flow = size, train, aug, flip_flow
        self.layout, self.heatmap_sigma, self.heatmap_limbs = layout, heatmap_sigma, heatmap_limbs
        self.eval_crop = eval_crop or size

    def sample(self, rng: np.random.Generator | None, frame_hw: tuple[int, int], strong: bool = True,
               frames: int = 1) -> ViewParams:
        """Random view params (train) or the centre crop (eval; ``rng`` unused)."""
        if not self.train:
            return eval_view_params(frame_hw, self.eval_crop)
        return sample_view_params(rng, frame_hw, self.aug, strong, frames)

    def __call__(self, params: ViewParams, rgb=None, flow=None, pose=None,
                 pose_frame_hw: tuple[int, int] | None = None, heatmap=None) -> dict[str, torch.Tensor]:
        out = {}
        if heatmap is not None:
            if pose_frame_hw is None or self.layout is None:
                raise ValueError("heatmaps need pose_frame_hw (the (H, W) the keypoints refer to) and the "
                                 "transform's skeleton layout")
            out["heatmap"] = transform_heatmap(heatmap, params, pose_frame_hw, self.size, self.layout,
                                               self.heatmap_sigma, self.heatmap_limbs)
        if rgb is not None:
            out["rgb"] = crop_clip(rgb, params, self.size)
        if flow is not None:
            if np.shape(flow)[-1] != 2:
                raise ValueError(f"flow must have 2 channels (x, y), got {np.shape(flow)[-1]}")
            out["flow"] = crop_clip(flow, params, self.size, flow=True, flip_flow=self.flip_flow)
        if pose is not None:
            if pose_frame_hw is None:
                raise ValueError("pose needs pose_frame_hw, the (H, W) its pixels refer to")
            out["pose"] = transform_pose(pose, params, pose_frame_hw)
        return out
