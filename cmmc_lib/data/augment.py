"""The photometric half of a clip's augmentation, on batches, on whatever device they sit.

A training view is cut in two halves. The dataset does the geometric half per item (a crop of
the frame, resized, maybe flipped: :mod:`cmmc_lib.data.transforms`) and hands over uint8
pixels; :func:`finish_clips` does the rest on a batch: colour jitter, grey, Gaussian blur and the
normalisation into the network's input. The training loop calls it on the device after the batch
arrived there (one pass for every clip of the batch, on the GPU when there is one), and the
dataset calls it on each item when nothing defers it (evaluation, lessons), so both give the same
numbers.

Each view carries its parameters as one row of :data:`PARAMS` (drawn per item from the item's
random numbers, so runs stay exactly resumable) and, for the per-frame grey of CoCLR, one channel
index per frame.

* **Strong and weak views.** Only a *strong* view is jittered, greyed and blurred; a weak one is
  the crop and the flip alone (CoCLR gives the two views of a clip different strengths).
* **Jitter** (brightness, contrast about the clip's mean grey, saturation, hue): all four are
  linear in RGB, so they are applied as one 3x3 matrix and an offset per view, the same for every
  frame, then clamped to [0, 1]. [choice] torchvision applies them one at a time in a random order
  with a clamp after each, and turns hue in HSV; here hue turns in YIQ (luma kept) and the clamp
  comes once: the same up to the clamps.
* **Grey**: ``luma`` (0.299 R + 0.587 G + 0.114 B) or CoCLR's ``channel`` (each frame copies one
  of R, G, B, drawn per frame, into all three).
* **Blur**: a Gaussian of the view's sigma (in pixels of the crop), truncated at 3 sigma.
  [choice] CoCLR blurs with PIL's box-filter approximation of a Gaussian of that radius.
* **Flow** is not jittered unless ``photometric_flow``: then, as CoCLR's flow images, the two
  motion channels ride in an image whose third channel is the constant 128/255, which gets the
  RGB clip's jitter, grey and blur, and the motion is read back from it (brightness then scales
  the motion, grey can blank a frame's motion: CoCLR's own behaviour).
* **Normalisation**: ``unit`` maps a byte to [-1, 1] (flow: px / 20, its storage bound);
  ``imagenet`` subtracts ImageNet's mean and divides by its standard deviation (CoCLR's, flow
  included: its x rides in the blue channel, its y in the green).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

#: The columns of a view's parameter row.
PARAMS = ("strong", "jitter", "brightness", "contrast", "saturation", "hue", "grey", "blur")
LUMA = (0.299, 0.587, 0.114)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALISATIONS = ("unit", "imagenet")
GREY_MODES = ("luma", "channel")
_FLOW_CONST = 128 / 255                       # CoCLR's flow images: (128, dy, dx)


def no_change(n: int) -> Tensor:
    """Parameter rows (n, len(PARAMS)) of weak views: nothing photometric happens."""
    return torch.zeros(n, len(PARAMS))


def finish_clips(frames: Tensor, modality: str, params: Tensor | None = None, grey_channels: Tensor | None = None,
                 *, grey_mode: str = "luma", normalize: str = "unit", photometric_flow: bool = False) -> Tensor:
    """uint8 clips (N, T, S, S, C) -> float32 (N, C, T, S, S): the views' photometric augmentation
    (``params``: (N, len(PARAMS)) rows; None: none) and the normalisation.

    ``modality``: ``rgb`` (3 channels) or ``flow`` (2 channels, x and y). ``grey_channels``: (N, T)
    the channel each frame copies under ``grey_mode="channel"``.
    """
    if frames.dtype != torch.uint8 or frames.dim() != 5:
        raise ValueError(f"expected uint8 clips (N, T, S, S, C), got {frames.dtype} {tuple(frames.shape)}")
    if normalize not in NORMALISATIONS or grey_mode not in GREY_MODES:
        raise ValueError(f"normalize must be one of {NORMALISATIONS} and grey_mode one of {GREY_MODES}")
    x = frames.permute(0, 4, 1, 2, 3).float().div_(255)                    # (N, C, T, S, S) in [0, 1]
    if params is not None and modality == "rgb":
        x = _photometric(x, params.to(x.device), grey_channels, grey_mode)
    elif params is not None and modality == "flow" and photometric_flow:
        image = torch.cat([torch.full_like(x[:, :1], _FLOW_CONST), x[:, 1:2], x[:, 0:1]], dim=1)   # (128, y, x)
        image = _photometric(image, params.to(x.device), grey_channels, grey_mode)
        x = torch.cat([image[:, 2:3], image[:, 1:2]], dim=1)
    return _normalize(x, modality, normalize)


def _photometric(x: Tensor, params: Tensor, grey_channels: Tensor | None, grey_mode: str) -> Tensor:
    """Jitter, grey and blur of the strong views of (N, 3, T, S, S) in [0, 1]."""
    p = {name: params[:, i] for i, name in enumerate(PARAMS)}
    strong = p["strong"] > 0
    jitter = strong & (p["jitter"] > 0)
    if bool(jitter.any()):
        matrix, offset = _jitter_matrices(x, p, jitter)
        x = (torch.einsum("nij,njthw->nithw", matrix, x) + offset[:, None, None, None, None]).clamp_(0, 1)
    grey = strong & (p["grey"] > 0)
    if bool(grey.any()):
        x = torch.where(grey[:, None, None, None, None], _grey(x, grey_channels, grey_mode), x)
    blur = strong & (p["blur"] > 0)
    if bool(blur.any()):
        x = torch.where(blur[:, None, None, None, None], _blur(x, torch.where(blur, p["blur"], 1.0)), x)
    return x


def _jitter_matrices(x: Tensor, p: dict[str, Tensor], on: Tensor) -> tuple[Tensor, Tensor]:
    """Per view: the 3x3 RGB matrix of brightness x contrast x saturation x hue, and the offset
    that contrast's pull towards the clip's mean grey adds; identity where ``on`` is False."""
    n = x.shape[0]
    b = torch.where(on, p["brightness"], 1.0)
    c = torch.where(on, p["contrast"], 1.0)
    s = torch.where(on, p["saturation"], 1.0)
    h = torch.where(on, p["hue"], 0.0)
    luma = torch.tensor(LUMA, device=x.device)
    eye = torch.eye(3, device=x.device).expand(n, 3, 3)
    saturation = s[:, None, None] * eye + (1 - s)[:, None, None] * luma.expand(n, 3, 3)
    matrix = _hue_matrices(h) @ saturation * (b * c)[:, None, None]
    mean_grey = torch.einsum("c,ncthw->nthw", luma, x).flatten(1).mean(1)        # the clip's mean grey
    return matrix, (1 - c) * b * mean_grey


_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def _hue_matrices(turns: Tensor) -> Tensor:
    """(N, 3, 3) RGB matrices turning hue by ``turns`` (1 = a full turn) in YIQ space: luma kept,
    grey mapped to grey."""
    yiq = torch.tensor(_RGB_TO_YIQ, device=turns.device, dtype=torch.float64)
    a = 2 * math.pi * turns.double()
    rot = torch.zeros(len(turns), 3, 3, device=turns.device, dtype=torch.float64)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = torch.cos(a), -torch.sin(a)
    rot[:, 2, 1], rot[:, 2, 2] = torch.sin(a), torch.cos(a)
    return (torch.linalg.inv(yiq) @ rot @ yiq).float()


def _grey(x: Tensor, channels: Tensor | None, mode: str) -> Tensor:
    """(N, 3, T, S, S) in grey: luma, or per frame the channel ``channels[n, t]``."""
    if mode == "luma":
        luma = torch.tensor(LUMA, device=x.device)
        return torch.einsum("c,ncthw->nthw", luma, x)[:, None].expand_as(x)
    if channels is None:
        raise ValueError("grey_mode='channel' needs each frame's channel (grey_channels)")
    index = channels.to(x.device).long()[:, None, :, None, None].expand(-1, 1, -1, *x.shape[3:])
    return x.gather(1, index).expand_as(x)


def gaussian_kernels(sigma: Tensor) -> Tensor:
    """(N, K) normalised 1-D Gaussian kernels of the given sigmas (px), truncated at 3 sigma of
    the largest, K odd."""
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    offsets = torch.arange(-radius, radius + 1, device=sigma.device, dtype=torch.float32)
    k = torch.exp(-0.5 * (offsets[None, :] / sigma[:, None].float()) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def _blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur of every frame of (N, C, T, S, S), one sigma per view; the border
    reflected."""
    n, c, t, h, w = x.shape
    k = gaussian_kernels(sigma)                                             # (N, K)
    r = k.shape[1] // 2
    planes = x.reshape(1, n * c * t, h, w)
    weights = k.repeat_interleave(c * t, dim=0)                             # one kernel per plane
    planes = F.conv2d(F.pad(planes, (r, r, 0, 0), mode="reflect"), weights[:, None, None, :], groups=n * c * t)
    planes = F.conv2d(F.pad(planes, (0, 0, r, r), mode="reflect"), weights[:, None, :, None], groups=n * c * t)
    return planes.reshape(n, c, t, h, w)


def _normalize(x: Tensor, modality: str, how: str) -> Tensor:
    """[0, 1] -> the network's input: ``unit`` 2x - 1; ``imagenet`` (x - mean) / std per channel
    (flow x with the blue statistics, y with the green: where CoCLR's flow images carry them)."""
    if how == "unit":
        return x.mul_(2).sub_(1)
    stats = [(IMAGENET_MEAN[i], IMAGENET_STD[i]) for i in ((0, 1, 2) if modality == "rgb" else (2, 1))]
    mean = torch.tensor([m for m, _ in stats], device=x.device)[None, :, None, None, None]
    std = torch.tensor([s for _, s in stats], device=x.device)[None, :, None, None, None]
    return (x - mean) / std
