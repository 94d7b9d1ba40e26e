"""Figures for the lessons. Functions here draw; they compute nothing the lessons need elsewhere.

Every function returns a matplotlib ``Figure`` (so a notebook shows it and a script can save it).
Clips are accepted as uint8 ``(T, H, W, 3)`` arrays or float tensors ``(C, T, H, W)`` in [-1, 1].
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle
from mpl_toolkits.mplot3d.art3d import Poly3DCollection


def to_frames(clip) -> np.ndarray:
    """uint8 (T, H, W, 3) from a uint8 (T, H, W, 3) array or a (C, T, H, W) tensor in [-1, 1].

    Flow (C = 2) is shown as an RGB picture: x -> red, y -> green, magnitude -> blue.
    """
    if isinstance(clip, torch.Tensor):
        x = clip.detach().float().cpu()
        if x.shape[0] == 2:
            mag = x.pow(2).sum(0, keepdim=True).sqrt().clamp(max=1) * 2 - 1
            x = torch.cat([x, mag], 0)
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.permute(1, 2, 3, 0).numpy()
    arr = np.asarray(clip)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected frames (T, H, W, 3), got {arr.shape}")
    return arr


def frame_strip(clips: Sequence, titles: Sequence[str] | None = None, n: int = 8,
                boxes: Sequence | None = None, height: float = 1.4):
    """One row of ``n`` evenly spaced frames per clip; optional (t, h, w) box outlines per row."""
    rows = [to_frames(c) for c in clips]
    fig, axes = plt.subplots(len(rows), n, figsize=(n * height, len(rows) * height), squeeze=False)
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
    fig.tight_layout()
    return fig


def _cuboid_faces(t: slice, h: slice, w: slice):
    x0, x1, y0, y1, z0, z1 = t.start, t.stop, w.start, w.stop, h.start, h.stop
    v = np.array([[x, y, z] for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)])
    faces = [[0, 1, 3, 2], [4, 5, 7, 6], [0, 1, 5, 4], [2, 3, 7, 6], [0, 2, 6, 4], [1, 3, 7, 5]]
    return [[v[i] for i in f] for f in faces]


def draw_tesseract(shape: Sequence[int], box: Sequence[slice], lam: float | None = None, ax=None):
    """The box of a (C, T, H, W) tesseract drawn in 3-D over (T, W, H), with its channel range.

    The outer wire frame is the whole map; the orange cuboid is the pasted region (the channel
    range is written in the title, since a fourth axis cannot be drawn).
    """
    c, t, h, w = shape
    fig = None
    if ax is None:
        fig = plt.figure(figsize=(4.6, 4))
        ax = fig.add_subplot(projection="3d")
    outer = Poly3DCollection(_cuboid_faces(slice(0, t), slice(0, h), slice(0, w)), facecolor=(0.3, 0.5, 0.9, 0.05),
                             edgecolor="steelblue", linewidth=0.8)
    ax.add_collection3d(outer)
    if all(s.stop > s.start for s in box):
        inner = Poly3DCollection(_cuboid_faces(box[1], box[2], box[3]), facecolor=(1.0, 0.55, 0.1, 0.55),
                                 edgecolor="darkorange", linewidth=1.0)
        ax.add_collection3d(inner)
    ax.set_xlim(0, t), ax.set_ylim(0, w), ax.set_zlim(h, 0)
    ax.set_xlabel("T"), ax.set_ylabel("W"), ax.set_zlabel("H")
    title = f"channels [{box[0].start}, {box[0].stop}) of {c}"
    if lam is not None:
        title += f"\nkept fraction lam = {lam:.3f}"
    ax.set_title(title, fontsize=9)
    return fig or ax.figure


def tesseract_figure(shape: Sequence[int] = (64, 16, 32, 32), alpha: float = 1.0, dims: str = "cthw",
                     seed: int = 0):
    """Sample one tesseract (:func:`cmmc_lib.mixing.describe_tesseract`) and draw it.

    The plain function behind lesson 01's widget panel. Returns ``(figure, description)``.
    """
    from .mixing import describe_tesseract

    d = describe_tesseract(shape, alpha, dims, seed)
    box = [slice(a, b) for a, b in d["box"].values()]
    fig = draw_tesseract(d["shape"], box, d["lam"])
    return fig, d


def feature_slices(h1: torch.Tensor, h2: torch.Tensor, mixed: torch.Tensor, box: Sequence[slice],
                   channel: int | None = None, max_frames: int = 10):
    """Per-frame heatmaps of one channel of (C, T, H, W) maps: modality 1, modality 2, mixed.

    ``channel`` defaults to the middle of the box's channel range so the paste is visible; at
    most ``max_frames`` evenly spaced time steps are drawn. Modality 1 and the mixed map share
    one colour scale, modality 2 has its own (the two networks' features differ in scale).
    """
    if channel is None:
        channel = (box[0].start + box[0].stop - 1) // 2 if box[0].stop > box[0].start else 0
    maps = [m.detach().float().cpu()[channel] for m in (h1, h2, mixed)]
    t_all = maps[0].shape[0]
    steps = np.unique(np.linspace(0, t_all - 1, min(max_frames, t_all)).round().astype(int))
    scale_1 = (min(float(maps[0].min()), float(maps[2].min())), max(float(maps[0].max()), float(maps[2].max())))
    scales = [scale_1, (float(maps[1].min()), float(maps[1].max())), scale_1]
    fig, axes = plt.subplots(3, len(steps), figsize=(1.4 * len(steps), 4.4), squeeze=False)
    for r, (name, m, (lo, hi)) in enumerate(zip(("modality 1", "modality 2", "mixed"), maps, scales)):
        for c, k in enumerate(steps):
            ax = axes[r, c]
            ax.imshow(m[k].numpy(), vmin=lo, vmax=hi, cmap="viridis")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t={k}", fontsize=8)
            in_box = box[1].start <= k < box[1].stop and box[0].start <= channel < box[0].stop
            if in_box:
                ax.add_patch(Rectangle((box[3].start - 0.5, box[2].start - 0.5), box[3].stop - box[3].start,
                                       box[2].stop - box[2].start, fill=False, edgecolor="red", linewidth=1.2))
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.suptitle(f"channel {channel}: inside the red box, the mixed map holds modality 2's features", fontsize=10)
    fig.tight_layout()
    return fig


def lam_distributions(samples: dict, title: str = "distribution of lam"):
    """Overlaid histograms (seaborn) of lam samples keyed by a label (e.g. 'alpha=0.5')."""
    import pandas as pd
    import seaborn as sns

    df = pd.DataFrame([(k, v) for k, vals in samples.items() for v in vals], columns=["setting", "lam"])
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    sns.histplot(df, x="lam", hue="setting", stat="density", common_norm=False, bins=40, element="step",
                 fill=False, ax=ax)
    ax.set_xlim(0, 1)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def training_curves(histories: dict, keys: Sequence[str] = ("loss", "knn_r1")):
    """Curves of several runs: ``histories`` maps a label to rows of ``train.read_metrics``.

    Step values are drawn faintly, epoch values (the epoch's mean loss, the kNN monitor) with
    markers in the same colour.
    """
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for i, (label, rows) in enumerate(histories.items()):
            colour = f"C{i}"
            steps = [(r["step"], r[key]) for r in rows if r["kind"] == "step" and r.get(key) is not None]
            epochs = [(r["step"], r[key]) for r in rows if r["kind"] == "epoch" and r.get(key) is not None]
            if steps:
                ax.plot(*zip(*steps), color=colour, alpha=0.3, lw=1)
            if epochs:
                ax.plot(*zip(*epochs), color=colour, marker="o", ms=3, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel({"loss": "loss (epoch mean)", "knn_r1": "kNN R@1 (test vs train)"}.get(key, key))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def recall_at_k(results: dict, title: str = "retrieval: R@k"):
    """R@k curves: ``results`` maps a label to ``{k: value}``."""
    fig, ax = plt.subplots(figsize=(5, 3.3))
    for label, rk in results.items():
        ks = sorted(int(k) for k in rk)
        ax.plot(ks, [rk[k] if k in rk else rk[str(k)] for k in ks], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("k")
    ax.set_ylabel("R@k (hit rate)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def retrieval_grid(query_clips: Sequence, neighbour_clips: Sequence[Sequence], correct: Sequence[Sequence[bool]],
                   query_titles: Sequence[str] | None = None, neighbour_titles: Sequence[Sequence[str]] | None = None,
                   frames: int = 3):
    """Each row: a query clip's frames, then its top-k neighbours, green (same class) or red."""
    k = len(neighbour_clips[0])
    fig, axes = plt.subplots(len(query_clips), k + 1, figsize=(1.9 * (k + 1), 1.5 * len(query_clips)),
                             squeeze=False)
    for r, q in enumerate(query_clips):
        cells = [(q, None)] + [(c, ok) for c, ok in zip(neighbour_clips[r], correct[r])]
        for c, (clip, ok) in enumerate(cells):
            fr = to_frames(clip)
            idx = np.linspace(0, len(fr) - 1, frames).round().astype(int)
            ax = axes[r, c]
            ax.imshow(np.concatenate([fr[i] for i in idx], axis=1))
            ax.set_xticks([]), ax.set_yticks([])
            colour = "black" if ok is None else ("green" if ok else "red")
            for s in ax.spines.values():
                s.set_edgecolor(colour)
                s.set_linewidth(3 if ok is not None else 1)
            if c == 0 and query_titles:
                ax.set_title(f"query: {query_titles[r]}", fontsize=8)
            elif c > 0 and neighbour_titles:
                ax.set_title(f"{c}: {neighbour_titles[r][c - 1]}", fontsize=8, color=colour)
    fig.tight_layout()
    return fig


def confusion(matrix, classes: Sequence[str], title: str = "linear probe: confusion"):
    """A row-normalised confusion matrix heatmap (rows: true class)."""
    import seaborn as sns

    m = np.asarray(matrix, dtype=float)
    m = m / np.clip(m.sum(1, keepdims=True), 1, None)
    fig, ax = plt.subplots(figsize=(0.5 * len(classes) + 2.5, 0.5 * len(classes) + 2))
    sns.heatmap(m, annot=len(classes) <= 12, fmt=".2f", cmap="Blues", vmin=0, vmax=1, xticklabels=classes,
                yticklabels=classes, ax=ax, cbar=False)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def moco_diagram():
    """The MoCo picture: query encoder, momentum key encoder, queue, contrastive loss."""
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.axis("off")

    def node(x, y, text, colour):
        ax.text(x, y, text, ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="round,pad=0.4", facecolor=colour, edgecolor="gray"))

    def arrow(x0, y0, x1, y1, text=""):
        ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="->", color="gray"))
        if text:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.05, text, fontsize=8, ha="center", color="dimgray")

    node(0.07, 0.75, "clip 1\n(query view)", "#e8f0fe")
    node(0.07, 0.25, "clip 2\n(key view)", "#e8f0fe")
    node(0.33, 0.75, "encoder f_q\n(trained)", "#d2e3fc")
    node(0.33, 0.25, "momentum encoder f_k\nθk ← m·θk + (1-m)·θq", "#fce8b2")
    node(0.6, 0.75, "q", "#ffffff")
    node(0.6, 0.25, "k", "#ffffff")
    node(0.6, 0.5, "queue of past keys\n(negatives)", "#e6f4ea")
    node(0.88, 0.5, "InfoNCE:\nq·k⁺ high\nq·queue low", "#fad2cf")
    arrow(0.14, 0.75, 0.25, 0.75)
    arrow(0.14, 0.25, 0.22, 0.25)
    arrow(0.41, 0.75, 0.58, 0.75)
    arrow(0.45, 0.25, 0.58, 0.25)
    arrow(0.62, 0.75, 0.8, 0.55)
    arrow(0.62, 0.25, 0.8, 0.45)
    arrow(0.68, 0.5, 0.8, 0.5)
    arrow(0.6, 0.3, 0.6, 0.44, "enqueue")
    ax.text(0.33, 0.05, "no gradient into f_k: it follows f_q slowly", ha="center", fontsize=8, color="dimgray")
    return fig
