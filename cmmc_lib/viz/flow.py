"""Clips and optical flow: frames in a strip, flow in the colour-wheel coding with its legend.

Clips are uint8 ``(T, H, W, 3)`` arrays or float tensors ``(C, T, H, W)`` in [-1, 1]; optical flow
(C = 2) is drawn in the standard colour-wheel coding, scaled per clip, with the wheel as its legend.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle


FLOW_PX_PER_UNIT = 20.0     # flow clips hold px / 20 (docs/method.md section 5: clipped to +-20 px)


def flow_to_rgb(flow) -> np.ndarray:
    """Optical flow (2, T, H, W) (x, y; any unit) -> uint8 (T, H, W, 3) in the standard colour-wheel
    coding (Middlebury / :func:`torchvision.utils.flow_to_image`): the hue is the direction of
    motion, the saturation its speed, white no motion.

    Scaled **per clip**: every frame is divided by the largest speed anywhere in the clip, so a
    slow frame looks paler than a fast one (scaling per frame would hide that).
    """
    from torchvision.utils import flow_to_image     # here: importing torchvision costs ~2.4 s at start-up

    f = torch.as_tensor(flow).detach().float().cpu()
    if f.ndim == 3:
        f = f[:, None]
    if f.ndim != 4 or f.shape[0] != 2:
        raise ValueError(f"flow must be (2, T, H, W) or (2, H, W), got {tuple(f.shape)}")
    img = flow_to_image(f.permute(1, 0, 2, 3).contiguous())         # (T, 3, H, W): one max per call
    return img.permute(0, 2, 3, 1).numpy()


def flow_speed_px(flow) -> float:
    """The largest speed in a flow clip in pixels per frame (clips hold px / 20)."""
    f = torch.as_tensor(flow).detach().float().cpu()
    return float(f.pow(2).sum(0).sqrt().max()) * FLOW_PX_PER_UNIT


def flow_wheel_image(size: int = 65) -> np.ndarray:
    """The colour-wheel legend as uint8 (size, size, 3): the colour of a pixel is the colour of
    motion from the centre towards it (image axes: x right, y down); white outside the disc."""
    if size % 2 == 0 or size < 3:
        raise ValueError(f"size must be odd and >= 3 (a centre pixel), got {size}")
    from torchvision.utils import flow_to_image     # here: importing torchvision costs ~2.4 s at start-up

    c = (size - 1) / 2
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                          indexing="ij")
    u, v = (x - c) / c, (y - c) / c
    disc = (u ** 2 + v ** 2) <= 1.0
    field = torch.stack([u * disc, v * disc])[None]          # max speed 1: at the rim (odd size)
    img = flow_to_image(field)[0].permute(1, 2, 0).numpy().copy()
    img[~disc.numpy()] = 255
    return img


def draw_flow_wheel(ax, max_speed_px: float | None = None):
    """Draw the flow legend on ``ax`` (labelled ``flow-legend``): the colour wheel, its axes, and
    the speed that the wheel's rim stands for."""
    size = 65
    c = (size - 1) // 2
    ax.imshow(flow_wheel_image(size))
    ax.set_xticks([]), ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    ax.set_label("flow-legend")
    ax.annotate("", (size - 1, c), (c, c), arrowprops=dict(arrowstyle="->", lw=0.8))
    ax.annotate("", (c, size - 1), (c, c), arrowprops=dict(arrowstyle="->", lw=0.8))
    ax.text(size + 1, c, "x", fontsize=7, va="center")
    ax.text(c, size + 5, "y", fontsize=7, ha="center", va="top")
    rim = "rim = fastest\nin the clip" if max_speed_px is None else f"rim = {max_speed_px:.1f} px/frame"
    ax.set_title(f"flow colour\nhue: direction\n{rim}", fontsize=7)
    return ax


def flow_methods_figure(frame, fields, names: Sequence[str], seconds: Sequence[float] | None = None):
    """One frame, then its flow by each method on one colour scale, then the legend.

    ``frame``: uint8 (H, W, 3) or (H, W); ``fields``: (2, M, H, W) in px, method m's field in
    ``fields[:, m]`` (stacked as a clip, so :func:`flow_to_rgb` scales them together);
    ``seconds``: each method's time per field, printed in its title."""
    fields = torch.as_tensor(fields)
    images = flow_to_rgb(fields)
    n = len(names)
    fig, axes = plt.subplots(1, n + 2, figsize=(2.9 * (n + 1) + 1.8, 2.6),
                             gridspec_kw={"width_ratios": [4] * (n + 1) + [2]})
    axes[0].imshow(frame, cmap="gray" if np.asarray(frame).ndim == 2 else None)
    axes[0].set_title("frame")
    for i, (ax, name) in enumerate(zip(axes[1:], names)):
        ax.imshow(images[i])
        ax.set_title(name if seconds is None else f"{name}\n{1000 * seconds[i]:.0f} ms per field", fontsize=9)
    for ax in axes[:-1]:
        ax.set_xticks([]), ax.set_yticks([])
    draw_flow_wheel(axes[-1], float(fields.pow(2).sum(0).sqrt().max()))
    fig.tight_layout()
    return fig


def to_frames(clip) -> np.ndarray:
    """uint8 (T, H, W, 3) from a uint8 (T, H, W, 3) array or a (C, T, H, W) tensor in [-1, 1].

    Flow (C = 2) is drawn with the colour-wheel coding of :func:`flow_to_rgb` (scaled per clip).
    """
    if isinstance(clip, torch.Tensor):
        if clip.shape[0] == 2:
            return flow_to_rgb(clip)
        x = clip.detach().float().cpu()
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.permute(1, 2, 3, 0).numpy()
    arr = np.asarray(clip)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected frames (T, H, W, 3), got {arr.shape}")
    return arr


def _is_flow(clip) -> bool:
    return isinstance(clip, torch.Tensor) and clip.ndim == 4 and clip.shape[0] == 2


def frame_strip(clips: Sequence, titles: Sequence[str] | None = None, n: int = 8,
                boxes: Sequence | None = None, height: float = 1.4):
    """One row of ``n`` evenly spaced frames per clip; optional (t, h, w) box outlines per row.

    Flow clips (C = 2) are drawn in the colour-wheel coding (:func:`flow_to_rgb`, scaled per
    clip) and get the wheel as a legend at the end of their row, its rim labelled with the
    clip's largest speed.
    """
    rows = [to_frames(c) for c in clips]
    flow_rows = [r for r, c in enumerate(clips) if _is_flow(c)]
    cols = n + (1 if flow_rows else 0)
    fig, axes = plt.subplots(len(rows), cols, figsize=(cols * height, len(rows) * height), squeeze=False)
    for r, frames in enumerate(rows):
        idx = np.linspace(0, len(frames) - 1, n).round().astype(int)
        for c, t in enumerate(idx):
            ax = axes[r, c]
            ax.imshow(frames[t])
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0 or titles is None:
                ax.set_title(f"t={t}", fontsize=8)
            box = boxes[r] if boxes is not None else None
            if box is not None and box[0].start <= t < box[0].stop:
                hs, ws = box[1], box[2]
                ax.add_patch(Rectangle((ws.start - 0.5, hs.start - 0.5), ws.stop - ws.start, hs.stop - hs.start,
                                       fill=False, edgecolor="yellow", linewidth=1.5))
        if titles is not None:
            axes[r, 0].set_ylabel(titles[r], fontsize=9, rotation=0, ha="right", va="center")
        if flow_rows:
            if r in flow_rows:
                draw_flow_wheel(axes[r, n], flow_speed_px(clips[r]))
            else:
                axes[r, n].axis("off")
    fig.tight_layout()
    return fig

