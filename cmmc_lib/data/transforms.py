"""Clip transforms whose random parameters are drawn ONCE per view and shared by modalities.

A view of a clip is cut the same way in RGB, flow and pose: :func:`sample_view_params` draws
a random resized crop (area fraction in ``scale``, aspect in 3/4..4/3), a horizontal flip,
and, for RGB only, colour jitter and grey; :func:`eval_view_params` is the deterministic
centre crop. The crop box is stored as fractions of the frame so that a modality stored at
another resolution is cut at the same place.

Inputs are uint8 ``(T, H, W, C)`` numpy arrays or tensors (frames already resized to the
short side); outputs are float32 tensors ``(C, T, S, S)`` in [-1, 1]:

* RGB: ``pixel / 127.5 - 1``.
* Flow: the uint8 storage (bound 20 px) maps to ``flow_px / 20`` (the same ``/127.5 - 1``);
  on a flip the x channel (0) is negated when ``flip_flow`` (a mirrored video moves the other
  way). Values stay in source-resolution pixels / 20 (crops do not rescale them, as in CoCLR).
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

import numpy as np
import torch

from .pose import part_heatmaps
from .video import resize_frame

#: Colour jitter strengths (brightness, contrast, saturation, hue), as MoCo v2 / CoCLR.
JITTER_STRENGTH = (0.4, 0.4, 0.4, 0.1)
_GREY_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class ViewParams:
    """How one view is cut, shared by all of its modalities.

    box:    (top, left, height, width) as fractions of the frame, in [0, 1].
    flip:   horizontal flip.
    jitter: (brightness, contrast, saturation, hue) factors for RGB, or None.
    grey:   convert RGB to grey (after jitter).
    """
    box: tuple[float, float, float, float]
    flip: bool = False
    jitter: tuple[float, float, float, float] | None = None
    grey: bool = False


# ----------------------------------------------------------------------------- parameters
def random_resized_box(rng: np.random.Generator, frame_hw: tuple[int, int],
                       scale: tuple[float, float] = (0.3, 1.0),
                       ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) in pixels of a random crop: area fraction ~ U(scale), log aspect
    (w / h) ~ U(log ratio); 10 tries, then the centre crop with the aspect clamped to ratio
    (torchvision's RandomResizedCrop rule)."""
    height, width = frame_hw
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"crop scale must satisfy 0 < lo <= hi <= 1, got {scale}")
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def sample_view_params(rng: np.random.Generator, frame_hw: tuple[int, int],
                       scale: tuple[float, float] = (0.3, 1.0),
                       ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_p: float = 0.5,
                       jitter_p: float = 0.8, grey_p: float = 0.2,
                       jitter_strength: tuple[float, float, float, float] = JITTER_STRENGTH
                       ) -> ViewParams:
    """Random parameters of one training view of a frame of ``frame_hw`` = (H, W) pixels.

    Draws, in this order: crop box, flip, jitter (with probability ``jitter_p``), grey (with
    probability ``grey_p``). Same ``rng`` state -> same view.
    """
    top, left, h, w = random_resized_box(rng, frame_hw, scale, ratio)
    flip = bool(rng.random() < flip_p)
    jitter = None
    if rng.random() < jitter_p:
        b, c, s, hue = jitter_strength
        jitter = (float(rng.uniform(max(0.0, 1 - b), 1 + b)),
                  float(rng.uniform(max(0.0, 1 - c), 1 + c)),
                  float(rng.uniform(max(0.0, 1 - s), 1 + s)),
                  float(rng.uniform(-hue, hue)))
    grey = bool(rng.random() < grey_p)
    H, W = frame_hw
    return ViewParams((top / H, left / W, h / H, w / W), flip, jitter, grey)


def eval_view_params(frame_hw: tuple[int, int], size: int) -> ViewParams:
    """The deterministic view: a centred ``size`` x ``size`` pixel square of the frame (the
    largest centred square when the frame is smaller), no flip, no colour change."""
    H, W = frame_hw
    side = min(size, H, W)
    top, left = (H - side) // 2, (W - side) // 2
    return ViewParams((top / H, left / W, side / H, side / W))


# ----------------------------------------------------------------------------- applying
def _as_thwc(frames) -> np.ndarray:
    """uint8 (T, H, W, C) numpy array (a tensor is viewed, not copied)."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4:
        raise ValueError(f"expected uint8 frames (T, H, W, C), got {frames.dtype} "
                         f"{tuple(frames.shape)}")
    return frames


def pixel_box(params: ViewParams, frame_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """The view's box (top, left, h, w) in pixels of a frame of ``frame_hw``."""
    H, W = frame_hw
    t, l, h, w = params.box
    top, left = int(round(t * H)), int(round(l * W))
    return top, left, max(1, min(int(round(h * H)), H - top)), max(1, min(int(round(w * W)),
                                                                        W - left))


def crop_resize_flip(frames, params: ViewParams, size: int) -> torch.Tensor:
    """uint8 (T, H, W, C) -> float32 (T, C, size, size) in [-1, 1]: crop the box, resize it
    (cv2.INTER_AREA, on uint8: fast, and the same arithmetic for every modality), flip."""
    x = _as_thwc(frames)
    top, left, h, w = pixel_box(params, x.shape[1:3])
    x = x[:, top:top + h, left:left + w]
    if (h, w) != (size, size):
        x = np.stack([resize_frame(f, (size, size)) for f in x])
    if params.flip:
        x = x[:, :, ::-1]
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() \
        .div_(127.5).sub_(1.0)


def _grey(x01: torch.Tensor) -> torch.Tensor:
    """(T, 3, H, W) in [0, 1] -> (T, 1, H, W) luma."""
    r, g, b = _GREY_WEIGHTS
    return r * x01[:, 0:1] + g * x01[:, 1:2] + b * x01[:, 2:3]


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114],
                            [0.596, -0.274, -0.322],
                            [0.211, -0.523, 0.312]], dtype=torch.float64)


def _hue_matrix(turns: float) -> torch.Tensor:
    """3x3 RGB matrix rotating hue by ``turns`` (1 = a full turn) in YIQ space: a linear
    stand-in for the HSV hue shift that keeps luma and maps grey to grey."""
    a = 2 * math.pi * turns
    rot = torch.tensor([[1.0, 0.0, 0.0],
                        [0.0, math.cos(a), -math.sin(a)],
                        [0.0, math.sin(a), math.cos(a)]], dtype=torch.float64)
    return torch.linalg.inv(_RGB_TO_YIQ) @ rot @ _RGB_TO_YIQ


def _saturation_matrix(factor: float) -> torch.Tensor:
    """3x3 RGB matrix blending each colour with its luma: ``factor * x + (1 - factor) * grey``."""
    w = torch.tensor(_GREY_WEIGHTS, dtype=torch.float64)
    return factor * torch.eye(3, dtype=torch.float64) + (1 - factor) * w.expand(3, 3)


def color_jitter(x01: torch.Tensor, jitter: tuple[float, float, float, float]) -> torch.Tensor:
    """Brightness, contrast (about the clip's mean grey), saturation and hue on
    (T, 3, H, W) in [0, 1]; the same factors for every frame, so the clip stays temporally
    consistent. All four are linear, so they are applied as one 3x3 matrix and an offset,
    then clamped to [0, 1]."""
    b, c, s, hue = jitter
    matrix = (_hue_matrix(hue) @ _saturation_matrix(s) * (b * c)).to(x01.dtype)
    offset = (1 - c) * b * _grey(x01).mean()          # grey stays grey under both matrices
    return (torch.einsum("ij,tjhw->tihw", matrix, x01) + offset).clamp_(0, 1)


def transform_rgb(frames, params: ViewParams, size: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float32 (3, T, size, size) in [-1, 1]: crop, flip, colour."""
    x = crop_resize_flip(frames, params, size)
    if params.jitter is not None or params.grey:
        x01 = (x + 1) / 2
        if params.jitter is not None:
            x01 = color_jitter(x01, params.jitter)
        if params.grey:
            x01 = _grey(x01).expand(-1, 3, -1, -1)
        x = x01 * 2 - 1
    return x.clamp_(-1, 1).permute(1, 0, 2, 3).contiguous()


def transform_flow(frames, params: ViewParams, size: int, flip_flow: bool = True
                   ) -> torch.Tensor:
    """uint8 (T, H, W, 2) quantised flow -> float32 (2, T, size, size) = flow px / 20 in
    [-1, 1]; on a flip channel 0 (x) is negated when ``flip_flow``."""
    if _as_thwc(frames).shape[-1] != 2:
        raise ValueError(f"flow must have 2 channels (x, y), got {_as_thwc(frames).shape[-1]}")
    x = crop_resize_flip(frames, params, size)
    if params.flip and flip_flow:
        x[:, 0].neg_()
    return x.permute(1, 0, 2, 3).contiguous()


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
    """Samples view parameters and applies them to every modality of a view.

    >>> t = ClipTransform(size=32, train=True)
    >>> p = t.sample(np.random.default_rng(0), (40, 53))
    >>> out = t(p, rgb=rgb_u8, flow=flow_u8)          # {"rgb": (3,T,32,32), "flow": (2,T,32,32)}
    """

    def __init__(self, size: int, train: bool, crop_scale: tuple[float, float] = (0.3, 1.0),
                 flip_flow: bool = True, color_jitter: float = 0.8, grayscale: float = 0.2,
                 flip_p: float = 0.5, ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 jitter_strength: tuple[float, float, float, float] = JITTER_STRENGTH,
                 layout=None, heatmap_sigma: float = 1.0, heatmap_limbs: bool = False):
        self.size, self.train = size, train
        self.layout, self.heatmap_sigma, self.heatmap_limbs = layout, heatmap_sigma, heatmap_limbs
        self.crop_scale, self.ratio = tuple(crop_scale), tuple(ratio)
        self.flip_flow, self.flip_p = flip_flow, flip_p
        self.color_jitter, self.grayscale = color_jitter, grayscale
        self.jitter_strength = jitter_strength

    def sample(self, rng: np.random.Generator | None, frame_hw: tuple[int, int]) -> ViewParams:
        """Random view params (train) or the centre crop (eval; ``rng`` unused)."""
        if not self.train:
            return eval_view_params(frame_hw, self.size)
        return sample_view_params(rng, frame_hw, self.crop_scale, self.ratio, self.flip_p,
                                  self.color_jitter, self.grayscale, self.jitter_strength)

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
            out["rgb"] = transform_rgb(rgb, params, self.size)
        if flow is not None:
            out["flow"] = transform_flow(flow, params, self.size, self.flip_flow)
        if pose is not None:
            if pose_frame_hw is None:
                raise ValueError("pose needs pose_frame_hw, the (H, W) its pixels refer to")
            out["pose"] = transform_pose(pose, params, pose_frame_hw)
        return out
