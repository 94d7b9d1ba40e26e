"""The mixing and the methods as pictures: the tesseract (and its widget), feature slices before
and after the paste, the distribution of lam, the soft targets, the CMMC step and MoCo."""
from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle
from mpl_toolkits.mplot3d.art3d import Poly3DCollection

from ..mixing import describe_tesseract


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
    d = describe_tesseract(shape, alpha, dims, seed)
    box = [slice(a, b) for a, b in d["box"].values()]
    fig = draw_tesseract(d["shape"], box, d["lam"])
    return fig, d


def tesseract_panel(shapes: dict, seed: int = 0):
    """The widget panel of lesson 01: sliders and menus over :func:`tesseract_figure`'s
    arguments (``shapes`` maps a menu label to a (C, T, H, W) shape). Returns the
    ``ipywidgets.interactive`` (display it in a notebook). A thin wrapper: needs a front end, so
    the lessons build it only when ``INTERACTIVE`` (``cmmc course`` runs them headless)."""
    import ipywidgets as widgets                    # optional: the notebooks extra

    def show(shape, alpha, dims, seed):
        fig, d = tesseract_figure(shape, alpha, dims, seed)
        plt.show()
        print(f"lam0 = {d['lam0']:.3f}  ->  lam = {d['lam']:.3f}")

    return widgets.interactive(show, shape=list(shapes.items()),
                               alpha=widgets.FloatLogSlider(value=1.0, base=10, min=-1, max=1),
                               dims=["cthw", "thw", "hw", "t"],
                               seed=widgets.IntSlider(value=seed, min=0, max=50))


def feature_slices(h1: torch.Tensor, h2: torch.Tensor, mixed: torch.Tensor, box: Sequence[slice] | None,
                   channel: int | None = None, max_frames: int = 10,
                   names: Sequence[str] = ("g1k: RGB, video i", "g2l: flow, video perm(i)", "g_mix")):
    """Per-frame heatmaps of one channel of (C, T, H, W) maps: modality 1, modality 2, mixed.

    ``box``: the pasted tesseract (its region is outlined in red where a frame crosses it), or None
    for a blend (mixup: every position holds both maps). ``channel`` defaults to the channel, among
    the box's (all, for a blend), where modality 2 varies most inside the box: a channel that
    carries signal, so what is pasted is visible (many channels of a ReLU map are all zeros). At
    most ``max_frames`` evenly spaced time steps are drawn. All three rows share **one** colour
    scale (one colour bar), so a value looks the same wherever it sits.
    """
    region = tuple(box) if box is not None else tuple(slice(0, n) for n in h1.shape)
    if channel is None:
        channel = _signal_channel(h2.detach().float().cpu(), region)
    maps = [m.detach().float().cpu()[channel] for m in (h1, h2, mixed)]
    t_all = maps[0].shape[0]
    steps = np.unique(np.linspace(0, t_all - 1, min(max_frames, t_all)).round().astype(int))
    lo = min(float(m.min()) for m in maps)
    hi = max(float(m.max()) for m in maps)
    if hi <= lo:
        hi = lo + 1e-6
    fig, axes = plt.subplots(3, len(steps), figsize=(1.4 * len(steps) + 1.0, 4.4), squeeze=False)
    image = None
    for r, (name, m) in enumerate(zip(names, maps)):
        for c, k in enumerate(steps):
            ax = axes[r, c]
            image = ax.imshow(m[k].numpy(), vmin=lo, vmax=hi, cmap="viridis")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t={k}", fontsize=8)
            if box is not None and box[1].start <= k < box[1].stop and box[0].start <= channel < box[0].stop:
                ax.add_patch(Rectangle((box[3].start - 0.5, box[2].start - 0.5), box[3].stop - box[3].start,
                                       box[2].stop - box[2].start, fill=False, edgecolor="red", linewidth=1.2))
        axes[r, 0].set_ylabel(name, fontsize=8)
    what = ("inside the red box the mixed map holds modality 2's features" if box is not None
            else "every position of the mixed map blends both")
    fig.suptitle(f"channel {channel} (modality 2's most varied), one colour scale: {what}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    cax = fig.add_axes((0.94, 0.15, 0.015, 0.7))
    fig.colorbar(image, cax=cax).set_label("activation", fontsize=8)
    return fig


def _signal_channel(h: torch.Tensor, region: Sequence[slice]) -> int:
    """The channel of (C, T, H, W) ``h`` in ``region``'s channel range whose values inside the
    region have the largest standard deviation (the first one when all are flat)."""
    channels = range(region[0].start, max(region[0].stop, region[0].start + 1))
    inside = h[(slice(region[0].start, channels[-1] + 1), *region[1:])]
    spread = inside.flatten(1).std(dim=1, unbiased=False) if inside[0].numel() > 1 else torch.zeros(len(channels))
    return channels[int(torch.argmax(spread))]


def _beta_pdf(x: np.ndarray, alpha: float) -> np.ndarray:
    """Density of Beta(alpha, alpha) on (0, 1) (for drawing only)."""
    log_norm = 2 * math.lgamma(alpha) - math.lgamma(2 * alpha)
    return np.exp((alpha - 1) * (np.log(x) + np.log1p(-x)) - log_norm)


def lam_distributions(samples: dict, title: str = "distribution of lam", alphas: dict | None = None):
    """Histograms of lam samples keyed by a label (e.g. 'alpha=0.5'), each with its mean marked.

    With ``alphas`` (label -> alpha), a left panel draws the Beta(alpha, alpha) density of the
    *drawn* ``lam0`` beside the histograms of the *kept* fraction ``lam``: the comparison shows
    what clipping the box at the borders does to the distribution.
    """
    import pandas as pd                             # here: seaborn + pandas cost ~0.5 s at start-up
    import seaborn as sns

    panels = 2 if alphas else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.4), squeeze=False)
    axes = axes[0]
    if alphas:
        ax = axes[0]
        x = np.linspace(0.002, 0.998, 400)
        for i, (label, a) in enumerate(alphas.items()):
            ax.plot(x, _beta_pdf(x, float(a)), color=f"C{i}", label=f"{label}: mean 0.5")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 4)
        ax.set_xlabel("lam0 (drawn)")
        ax.set_ylabel("density")
        ax.set_title("lam0 ~ Beta(alpha, alpha)", fontsize=10)
        ax.legend(fontsize=7)
    ax = axes[-1]
    df = pd.DataFrame([(k, v) for k, vals in samples.items() for v in vals], columns=["setting", "lam"])
    sns.histplot(df, x="lam", hue="setting", stat="density", common_norm=False, bins=40, element="step",
                 fill=False, ax=ax, hue_order=list(samples))
    for i, vals in enumerate(samples.values()):
        ax.axvline(float(np.mean(vals)), color=f"C{i}", ls="--", lw=1)
    ax.set_xlim(0, 1)
    ax.set_xlabel("lam (kept fraction, after clipping); dashed: means")
    ax.set_title(title, fontsize=10)
    if ax.get_legend() is not None:                 # beside the axes, never over the histograms
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, title_fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def soft_targets_heatmap(targets, queue_cols: int = 0, lam: float | None = None, perm=None,
                         title: str = "soft targets of the InfoNCE", layout: str = "moco",
                         queue_label: str = "queue (negatives)"):
    """A soft-target matrix as a heatmap, values written in the cells. ``layout="moco"`` (the
    library's, :func:`cmmc_lib.ssl.moco_targets`): (B, 2 + Q) columns ``[own key ; partner's key ;
    queue]``, row i puts ``lam`` on column 0 and ``1 - lam`` on column 1. ``layout="batch"``
    (i-Mix's, :func:`cmmc_lib.ssl.soft_targets`): (B, B + Q), own key column i, partner's perm[i].
    ``queue_label`` names the queue's columns (CoCLR's hold mined positives too)."""
    if layout not in ("moco", "batch"):
        raise ValueError(f"layout must be 'moco' or 'batch', got {layout!r}")
    t = torch.as_tensor(targets).detach().float().cpu().numpy()
    b, n = t.shape
    fig, ax = plt.subplots(figsize=(0.42 * n + 2.2, 0.42 * b + 1.6))
    image = ax.imshow(t, cmap="Purples", vmin=0, vmax=1, aspect="auto")
    for i in range(b):
        for j in range(n):
            if t[i, j] > 0:
                ax.text(j, i, f"{t[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if t[i, j] > 0.5 else "black")
    keys = n - queue_cols
    names = ["own", "partner"] if layout == "moco" else [f"k{j}" for j in range(keys)]
    ax.set_xticks(range(n))
    ax.set_xticklabels(names + [f"q{j}" for j in range(queue_cols)], fontsize=7)
    ax.set_yticks(range(b))
    rows = [f"z1 of {i}" + (f" (partner {int(perm[i])})" if perm is not None else "") for i in range(b)]
    ax.set_yticklabels(rows, fontsize=7)
    if queue_cols:
        ax.axvline(keys - 0.5, color="black", lw=1)
        ax.text(keys + queue_cols / 2 - 0.5, -0.65, queue_label, ha="center", va="bottom", fontsize=8)
        ax.text(keys / 2 - 0.5, -0.65, "keys" if layout == "moco" else "keys of this batch", ha="center",
                va="bottom", fontsize=8)
    ax.set_xlabel("column of the logits " + ("[own key ; partner's key ; queue]" if layout == "moco"
                                             else "[batch keys ; queue]"))
    sub = f" (lam = {lam:.2f})" if lam is not None else ""
    ax.set_title(title + sub, fontsize=10, pad=24)
    fig.colorbar(image, ax=ax, fraction=0.04).set_label("target weight", fontsize=8)
    fig.tight_layout()
    return fig


def cmmc_pipeline(k: int, l: int, shape_k: Sequence[int], shape_l: Sequence[int], num_blocks: int,
                  lam: float | None = None):
    """The CMMC step as a picture (docs/method.md section 2), each step labelled with the library
    call that does it. ``shape_k`` / ``shape_l``: the per-sample (C, T, H, W) maps after ``k``
    blocks of the RGB network and ``l`` blocks of the flow network (``Backbone.block_shapes``)."""
    fig, ax = plt.subplots(figsize=(13, 5.2))
    ax.axis("off")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    shape = "x".join

    def node(x, y, text, colour, call=None):
        ax.text(x, y, text, ha="center", va="center", fontsize=8.5,
                bbox=dict(boxstyle="round,pad=0.45", facecolor=colour, edgecolor="gray"))
        if call:
            ax.text(x, y - 0.115, call, ha="center", va="center", fontsize=7, color="#444444", family="monospace")

    def arrow(x0, y0, x1, y1):
        ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="->", color="gray", lw=1.2))

    top, mid, bot = 0.8, 0.5, 0.17
    node(0.05, top, "x1\nRGB clip\nof video i", "#e8f0fe")
    node(0.05, mid, "x2\nflow clip of\nvideo perm(i)", "#e6f4ea")
    node(0.05, bot, "x1'\nanother clip\nof video i", "#e8f0fe")
    node(0.2, top, f"f1 blocks 1..{k}\n(RGB, trained)", "#d2e3fc", "f1.forward_until(x1, k)")
    node(0.2, mid, f"f2 blocks 1..{l}\n(flow, frozen)", "#ceead6", "f2.forward_until(x2, l)")
    node(0.35, top, f"g1k\n{shape(map(str, shape_k))}", "#ffffff")
    node(0.35, mid, f"g2l\n{shape(map(str, shape_l))}", "#ffffff")
    lam_txt = f"lam = {lam:.2f} of g1k kept" if lam is not None else "lam = kept fraction of g1k"
    node(0.5, 0.65, "g_mix: a tesseract of g2l\npasted into g1k\n" + lam_txt, "#fde7c8",
         "mixing.cross_modal_cutmix(g1k, g2l)")
    node(0.67, top, f"f1 blocks {k}..{num_blocks - 1}\n+ pool + projection", "#d2e3fc",
         "f1.forward_from(g_mix, k)")
    node(0.84, top, "z1 = query of i\n(L2-normalised)", "#ffffff")
    node(0.3, bot, "momentum encoder f1_k\n(slow copy of f1)", "#fce8b2", "moco.keys(x1')")
    node(0.5, bot, "z2 = key of i\n(queued afterwards)", "#ffffff")
    node(0.8, 0.4, "logits = z1 . [own key ; partner key ; queue] / tau\n"
                   "loss = lam * CE(key of i)\n + (1 - lam) * CE(key of perm(i))", "#fad2cf",
         "moco.contrast -> ssl.soft_targets -> ssl.soft_info_nce")
    arrow(0.09, top, 0.14, top)
    arrow(0.09, mid, 0.14, mid)
    arrow(0.26, top, 0.31, top)
    arrow(0.26, mid, 0.31, mid)
    arrow(0.39, top - 0.02, 0.43, 0.7)
    arrow(0.39, mid + 0.02, 0.43, 0.6)
    arrow(0.57, 0.69, 0.61, top - 0.03)
    arrow(0.73, top, 0.79, top)
    arrow(0.84, top - 0.07, 0.82, 0.49)
    arrow(0.09, bot, 0.22, bot)
    arrow(0.38, bot, 0.45, bot)
    arrow(0.55, bot + 0.02, 0.7, 0.32)
    ax.text(0.5, -0.04, "gradient reaches f1 only (and g1k only where it is kept); the flow network f2 and the "
                       "key encoder get none", ha="center", fontsize=8, color="dimgray")
    ax.set_title("one CMMC step, row i of a batch", fontsize=11)
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

