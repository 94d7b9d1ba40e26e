"""Figures of lesson 09 (pose): a skeleton over its RGB frame, the joint / motion / bone streams,
the skeleton tesseract, pose heatmaps beside their frames, and the accuracy table as bars.

Draws only: every number comes from the library. Functions return a matplotlib Figure and never
save it (the lesson does, ``lesson.savefig``).
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_rgb

from ..tables import row_label
from .colours import method_colour

PART_COLOURS = ("#444444", "#d62728", "#1f77b4", "#ff7f0e", "#2ca02c")   # trunk, left arm, right arm, left leg, right leg
PART_NAMES = ("trunk", "left arm", "right arm", "left leg", "right leg")


def _part_colour(layout, joint: int) -> str:
    for p, members in enumerate(layout.parts):
        if joint in members:
            return PART_COLOURS[p % len(PART_COLOURS)]
    return "k"


def draw_skeleton(ax, pose: np.ndarray, layout, min_conf: float = 0.0, lw: float = 2.0, size: float = 12.0,
                  alpha: float = 1.0) -> None:
    """Draw one or several persons' 2-D joints and bones on ``ax`` (image coordinates: y down).

    pose: (J, 2|3) or (M, J, 2|3) x, y (and confidence: joints at or below ``min_conf`` are not
    drawn, nor their bones; an all-zero person is skipped). Bones are coloured by body part.
    """
    pose = np.asarray(pose, np.float32)
    if pose.ndim == 2:
        pose = pose[None]
    for person in pose:
        if not np.any(person):
            continue
        conf = person[:, 2] if person.shape[1] > 2 else np.ones(len(person))
        seen = conf > min_conf
        for child, parent in layout.bones:
            if seen[child] and seen[parent]:
                ax.plot(person[[child, parent], 0], person[[child, parent], 1], color=_part_colour(layout, child),
                        lw=lw, alpha=alpha, solid_capstyle="round")
        ax.scatter(person[seen, 0], person[seen, 1], s=size, c="white", edgecolors="k", linewidths=0.6,
                   zorder=3, alpha=alpha)


def skeleton_over_frame(frame: np.ndarray, pose: np.ndarray, layout, title: str = "", min_conf: float = 0.0):
    """The RGB frame (H, W, 3) uint8 with the skeleton (J, 3) / (M, J, 3) in its pixels on top."""
    h, w = frame.shape[:2]
    fig, ax = plt.subplots(figsize=(6.4, 6.4 * h / w + 0.4))
    ax.imshow(frame)
    draw_skeleton(ax, pose, layout, min_conf, lw=max(1.5, w / 400), size=max(10, w / 60))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    handles = [plt.Line2D([], [], color=c, lw=2) for c in PART_COLOURS]
    ax.legend(handles, PART_NAMES, loc="lower right", fontsize=7, framealpha=0.8)
    fig.tight_layout()
    return fig


def stream_panels(sample: np.ndarray, streams: dict[str, np.ndarray], layout, frames: Sequence[int] = (0, 4, 8),
                  joint: int | None = None, title: str = ""):
    """Joint vs motion vs bone of one skeleton sample.

    sample: the joint data (C, T, J, M); streams: ``{"joint": ..., "motion": ..., "bone": ...}``
    of the same shape. Top row, in the x-y plane (y up, first person): the skeleton at ``frames``;
    the motion stream as arrows from each joint; the bone stream as vectors from the origin
    (each bone's direction and length, where it sits is gone). Bottom: one joint's x over time in
    each stream (default: a hand, the joint that moves most).
    """
    x = np.asarray(sample)[..., 0]                               # (C, T, J)
    fig, axes = plt.subplots(2, 3, figsize=(11, 6.4), gridspec_kw={"height_ratios": [3, 2]})
    shades = np.linspace(0.35, 1.0, len(frames))
    flip_y = np.array([1.0, -1.0])                                # draw with y up, as the data is
    for a, t in zip(shades, frames):
        pts = np.stack([x[0, t], x[1, t], x[2, t] if x.shape[0] > 2 else np.ones_like(x[0, t])], -1)
        draw_skeleton(axes[0, 0], pts * np.array([1, -1, 1]), layout, alpha=float(a), lw=1.5, size=8)
    axes[0, 0].set_title("joint: the skeleton at frames " + ", ".join(map(str, frames)), fontsize=9)
    t = frames[len(frames) // 2]
    m = np.asarray(streams["motion"])[..., 0]
    pts = np.stack([x[0, t], x[1, t], np.ones_like(x[0, t])], -1) * np.array([1, -1, 1])
    draw_skeleton(axes[0, 1], pts, layout, alpha=0.35, lw=1.2, size=6)
    axes[0, 1].quiver(x[0, t], -x[1, t], m[0, t], -m[1, t], angles="xy", scale_units="xy", scale=0.25, color="C3",
                      width=0.006)
    axes[0, 1].set_title(f"motion: x[t+1] - x[t] at t = {t} (arrows x4)", fontsize=9)
    b = np.asarray(streams["bone"])[..., 0]
    for child, parent in layout.bones:
        axes[0, 2].plot([0, b[0, t, child]], [0, b[1, t, child]], color=_part_colour(layout, child), lw=2)
    axes[0, 2].set_title(f"bone: x[joint] - x[parent] at t = {t}", fontsize=9)
    for ax in axes[0]:
        ax.set_aspect("equal")
        ax.invert_yaxis()
        ax.tick_params(labelsize=7)
    if joint is None:
        joint = int(np.argmax(np.abs(np.diff(x[:2], axis=1)).sum(axis=(0, 1))))
    for ax, (name, data) in zip(axes[1], streams.items()):
        d = np.asarray(data)[..., 0]
        ax.plot(d[0, :, joint], label="x")
        ax.plot(d[1, :, joint], label="y")
        ax.set_title(f"{name} of joint {joint} over time", fontsize=9)
        ax.set_xlabel("frame", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[1, 0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def skeleton_tesseract(shape: Sequence[int], box: Sequence[slice], lam: float, title: str = ""):
    """The tesseract of a skeleton feature map (C, T, V, M): for each person, the fraction of
    channels cut at every (frame, joint). Both panels are the same: one box for both persons."""
    c, t, v, m = shape
    mask = np.zeros(tuple(shape), bool)
    mask[tuple(box)] = True
    fig, axes = plt.subplots(1, m, figsize=(4.2 * m, 3.4), squeeze=False)
    for p in range(m):
        im = axes[0, p].imshow(mask[..., p].mean(axis=0), aspect="auto", cmap="magma", vmin=0, vmax=1,
                               origin="lower")
        axes[0, p].set_title(f"person {p + 1}: channels cut (of {c})", fontsize=9)
        axes[0, p].set_xlabel("joint V", fontsize=8)
        axes[0, p].set_ylabel("time T", fontsize=8)
    fig.colorbar(im, ax=axes[0, -1], fraction=0.05).set_label("fraction of the channels cut", fontsize=8)
    cs, ts, vs = box[0], box[1], box[2]
    fig.suptitle(title or f"box C[{cs.start}:{cs.stop}) T[{ts.start}:{ts.stop}) V[{vs.start}:{vs.stop}), "
                          f"all persons; kept lam = {lam:.3f}", fontsize=9)
    fig.tight_layout()
    return fig


def heatmap_clip(rgb: np.ndarray, heat: np.ndarray, frames: Sequence[int] = (0, 3, 6), title: str = ""):
    """RGB frames beside the pose heatmap volume of the same view: rgb (3, T, S, S) in [-1, 1],
    heat (P, T, S, S) in [0, 1]; each body-part channel in its colour."""
    rgb, heat = np.asarray(rgb), np.asarray(heat)
    cols = np.array([to_rgb(PART_COLOURS[p % len(PART_COLOURS)]) for p in range(heat.shape[0])])
    fig, axes = plt.subplots(2, len(frames), figsize=(2.4 * len(frames), 5), squeeze=False)
    for i, t in enumerate(frames):
        axes[0, i].imshow(((rgb[:, t].transpose(1, 2, 0) + 1) / 2).clip(0, 1))
        coloured = 1 - np.clip(np.einsum("phw,pc->hwc", heat[:, t], 1 - cols), 0, 1)
        axes[1, i].imshow(coloured)
        axes[0, i].set_title(f"frame {t}", fontsize=8)
        for ax in axes[:, i]:
            ax.set_axis_off()
    axes[1, 0].set_title("heatmaps (one channel per part)", fontsize=8, loc="left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def accuracy_bars(rows: list[dict], chance: float, title: str = ""):
    """The pose study's rows (``cmmc_lib.pose_study.aggregate``) as grouped bars: one group per
    stream, one bar per variant in its method's registry colour (hatched when it is not the
    method's own row, e.g. the stage-1 networks), its spread as an error bar (std over seeds; one
    seed: its binomial SE), each seed a dot, chance a dashed line."""
    streams = list(dict.fromkeys(r["stream"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(streams), 3.4))
    width = 0.8 / len(variants)
    for j, variant in enumerate(variants):
        for i, stream in enumerate(streams):
            row = next((r for r in rows if r["stream"] == stream and r["variant"] == variant), None)
            if row is None:
                continue
            x = i + (j - (len(variants) - 1) / 2) * width
            ax.bar(x, 100 * row["mean"], width, color=method_colour(row["method"]), alpha=0.75,
                   hatch=None if row["variant"] == row["method"] else "//", label=row["name"] if i == 0 else None,
                   yerr=100 * row["spread"], capsize=3)
            ax.scatter([x] * len(row["values"]), [100 * v for v in row["values"]], s=10, c="k", zorder=3)
    ax.axhline(100 * chance, ls="--", c="grey", lw=1, label=f"chance {100 * chance:.0f}%")
    ax.set_xticks(range(len(streams)), streams)
    ax.set_ylabel(f"linear top-1 (%), error bars: {row_label(rows)}", fontsize=8)
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
