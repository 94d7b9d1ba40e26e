"""Figures for the lessons. Functions here draw; they compute nothing the lessons need elsewhere.

Every figure function returns a matplotlib ``Figure`` (so a notebook shows it and a script can
save it). Clips are accepted as uint8 ``(T, H, W, 3)`` arrays or float tensors ``(C, T, H, W)`` in
[-1, 1]; optical flow (C = 2) is drawn in the standard colour-wheel coding, scaled per clip, with
the wheel as its legend.

* clips and masks: :func:`frame_strip`, :func:`flow_to_rgb`, :func:`draw_flow_wheel`,
  :func:`draw_tesseract`, :func:`tesseract_figure` (and its widget :func:`tesseract_panel`),
  :func:`feature_slices`, :func:`lam_distributions`;
* CMMC as a picture: :func:`cmmc_pipeline`, :func:`soft_targets_heatmap`, :func:`moco_diagram`;
* numbers with chance and spread: :func:`training_curves` (reference lines),
  :func:`recall_at_k` (chance curve, error bars), :func:`measured_bars`, :func:`agreement_bars`,
  :func:`fusion_sweep`, :func:`confusion`, :func:`retrieval_grid`.
"""
from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle
from mpl_toolkits.mplot3d.art3d import Poly3DCollection


# ----------------------------------------------------------------------------- optical flow
FLOW_PX_PER_UNIT = 20.0     # flow clips hold px / 20 (METHOD.md section 5: clipped to +-20 px)


def flow_to_rgb(flow) -> np.ndarray:
    """Optical flow (2, T, H, W) (x, y; any unit) -> uint8 (T, H, W, 3) in the standard colour-wheel
    coding (Middlebury / :func:`torchvision.utils.flow_to_image`): the hue is the direction of
    motion, the saturation its speed, white no motion.

    Scaled **per clip**: every frame is divided by the largest speed anywhere in the clip, so a
    slow frame looks paler than a fast one (scaling per frame would hide that).
    """
    from torchvision.utils import flow_to_image

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
    from torchvision.utils import flow_to_image

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


def tesseract_panel(shapes: dict, seed: int = 0):
    """The widget panel of lesson 01: sliders and menus over :func:`tesseract_figure`'s
    arguments (``shapes`` maps a menu label to a (C, T, H, W) shape). Returns the
    ``ipywidgets.interactive`` (display it in a notebook). A thin wrapper: needs a front end, so
    the lessons build it only when ``INTERACTIVE`` (``cmmc course`` runs them headless)."""
    import ipywidgets as widgets

    def show(shape, alpha, dims, seed):
        fig, d = tesseract_figure(shape, alpha, dims, seed)
        plt.show()
        print(f"lam0 = {d['lam0']:.3f}  ->  lam = {d['lam']:.3f}")

    return widgets.interactive(show, shape=list(shapes.items()),
                               alpha=widgets.FloatLogSlider(value=1.0, base=10, min=-1, max=1),
                               dims=["cthw", "thw", "hw", "t"],
                               seed=widgets.IntSlider(value=seed, min=0, max=50))


def feature_slices(h1: torch.Tensor, h2: torch.Tensor, mixed: torch.Tensor, box: Sequence[slice],
                   channel: int | None = None, max_frames: int = 10,
                   names: Sequence[str] = ("g1k: RGB, video i", "g2l: flow, video perm(i)", "g_mix")):
    """Per-frame heatmaps of one channel of (C, T, H, W) maps: modality 1, modality 2, mixed.

    ``channel`` defaults to the middle of the box's channel range so the paste is visible; at
    most ``max_frames`` evenly spaced time steps are drawn. All three rows share **one** colour
    scale (one colour bar), so a value looks the same wherever it sits: inside the red box the
    mixed row repeats modality 2's values, outside it modality 1's.
    """
    if channel is None:
        channel = (box[0].start + box[0].stop - 1) // 2 if box[0].stop > box[0].start else 0
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
            in_box = box[1].start <= k < box[1].stop and box[0].start <= channel < box[0].stop
            if in_box:
                ax.add_patch(Rectangle((box[3].start - 0.5, box[2].start - 0.5), box[3].stop - box[3].start,
                                       box[2].stop - box[2].start, fill=False, edgecolor="red", linewidth=1.2))
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.suptitle(f"channel {channel}, one colour scale: inside the red box the mixed map holds modality 2's "
                 "features", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    cax = fig.add_axes((0.94, 0.15, 0.015, 0.7))
    fig.colorbar(image, cax=cax).set_label("activation", fontsize=8)
    return fig


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
    import pandas as pd
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
    fig.tight_layout()
    return fig


def training_curves(histories: dict, keys: Sequence[str] = ("loss", "knn_r1"), loss_reference: float | None = None,
                    knn_chance: float | None = None, knn_n: int | None = None):
    """Curves of several runs: ``histories`` maps a label to rows of ``runs.read_metrics``.

    Step values are drawn faintly, epoch values (the epoch's mean loss, the kNN monitor) with
    markers in the same colour. Reference lines: ``loss_reference`` (``ln`` of the number of
    logits: the loss of a network whose query is equally similar to every key) on the loss
    panel; ``knn_chance`` on the kNN panel, shaded +- 2 binomial standard errors of a chance
    representation on ``knn_n`` queries (values inside the band are indistinguishable from chance).
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
        if key == "loss" and loss_reference is not None:
            ax.axhline(loss_reference, color="gray", ls="--", lw=1,
                       label=f"ln(#logits) = {loss_reference:.2f}: no discrimination")
        if key == "knn_r1" and knn_chance is not None:
            ax.axhline(knn_chance, color="gray", ls="--", lw=1, label=f"chance {knn_chance:.2f}")
            if knn_n:
                band = 2 * math.sqrt(knn_chance * (1 - knn_chance) / knn_n)
                ax.axhspan(max(knn_chance - band, 0), knn_chance + band, color="gray", alpha=0.15,
                           label=f"chance +- 2 SE (n={knn_n})")
            ax.set_ylim(0, 1)
        ax.set_xlabel("step")
        ax.set_ylabel({"loss": "loss (epoch mean)", "knn_r1": "kNN R@1 (test vs train)"}.get(key, key))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def recall_at_k(results: dict, title: str = "retrieval: R@k", chance: dict | None = None,
                errors: dict | None = None, ticks: Sequence[int] = (1, 5, 10, 20)):
    """R@k curves: ``results`` maps a label to ``{k: value}``; ``errors`` the same labels to
    ``{k: standard error}`` (drawn as bars); ``chance`` ``{k: value}`` of a random ranking (a
    dashed curve). The k axis is logarithmic with ticks at ``ticks``."""
    from matplotlib.ticker import FixedLocator, NullLocator

    def at(rk, k):
        return rk[k] if k in rk else rk[str(k)]

    fig, ax = plt.subplots(figsize=(5.4, 3.5))
    for i, (label, rk) in enumerate(results.items()):
        ks = sorted(int(k) for k in rk)
        err = [at(errors[label], k) for k in ks] if errors and label in errors else None
        ax.errorbar(ks, [at(rk, k) for k in ks], yerr=err, marker="o", ms=4, capsize=3, color=f"C{i}", label=label)
    if chance:
        ks = sorted(int(k) for k in chance)
        ax.plot(ks, [at(chance, k) for k in ks], color="gray", ls="--", marker="x", label="chance (random ranking)")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(list(ticks)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(t) for t in ticks])
    ax.set_xlabel("k")
    ax.set_ylabel("R@k (hit rate)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
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


# ----------------------------------------------------------------------------- numbers with chance and spread
def measured_bars(measures: dict, title: str = "", ylabel: str = "accuracy"):
    """Bars of rates with their standard errors and chance levels: ``measures`` maps a label to
    an object with ``value``, ``se`` and ``chance`` (a :class:`~cmmc_lib.evaluate.chance.Measured`).
    Each bar carries +- 1 SE; a grey tick marks its chance level."""
    labels = list(measures)
    fig, ax = plt.subplots(figsize=(1.1 * len(labels) + 2.2, 3.2))
    xs = np.arange(len(labels))
    values = [measures[k].value for k in labels]
    ax.bar(xs, values, yerr=[measures[k].se for k in labels], capsize=4,
           color=[f"C{i}" for i in range(len(labels))], alpha=0.8)
    for x, k in zip(xs, labels):
        ax.hlines(measures[k].chance, x - 0.45, x + 0.45, color="black", ls="--", lw=1.2)
        ax.text(x, measures[k].value + measures[k].se + 0.02, f"{measures[k].value:.2f}", ha="center", fontsize=8)
    ax.plot([], [], color="black", ls="--", label="chance")
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    ax.set_title(title + ("\n" if title else "") + "bars: +- 1 binomial SE on the test set", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def agreement_bars(rows: dict, chance: dict | None = None,
                   keys: Sequence[str] = ("same_class_other_group", "same_class", "same_group"),
                   title: str = "what the nearest neighbour shares"):
    """Grouped bars: ``rows`` maps a network (e.g. 'random init rgb', 'MoCo flow') to the
    neighbour agreement rates of :func:`~cmmc_lib.evaluate.examples.neighbour_agreement`;
    ``chance`` (same keys) is drawn as a dashed line per group."""
    names = list(rows)
    fig, ax = plt.subplots(figsize=(2.2 * len(keys) + 2.5, 3.4))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        xs = np.arange(len(keys)) + (i - (len(names) - 1) / 2) * width
        ax.bar(xs, [rows[name][k] for k in keys], width, label=name, color=f"C{i}", alpha=0.85)
    if chance:
        for j, k in enumerate(keys):
            ax.hlines(chance[k], j - 0.45, j + 0.45, color="black", ls="--", lw=1.2)
        ax.plot([], [], color="black", ls="--", label="random neighbour")
    ax.set_xticks(np.arange(len(keys)))
    ax.set_xticklabels([k.replace("_", " ") for k in keys], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction of clips")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def fusion_sweep(weights: Sequence[float], values: Sequence[float], chance: float | None = None,
                 errors: Sequence[float] | None = None, marks: dict | None = None,
                 ylabel: str = "R@1", title: str = "weighted two-stream fusion"):
    """R@1 (or any rate) against the RGB weight ``w`` of the fused similarity
    ``w * s_rgb + (1 - w) * s_flow`` (w = 0: flow alone, w = 1: RGB alone, 0.5: equal weights).
    ``marks`` maps a label (e.g. 'chosen on train groups') to a weight, drawn as a vertical line."""
    fig, ax = plt.subplots(figsize=(5.4, 3.4))
    ax.errorbar(list(weights), list(values), yerr=None if errors is None else list(errors), marker="o", ms=4,
                capsize=3, color="C2", label="test queries")
    if chance is not None:
        ax.axhline(chance, color="gray", ls="--", lw=1, label=f"chance {chance:.2f}")
    for i, (label, w) in enumerate((marks or {}).items()):
        ax.axvline(w, color=f"C{i + 3}", ls=":", lw=1.5, label=f"{label}: w = {w:.2f}")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("w, the weight of the RGB stream (0: flow only, 1: RGB only)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- CMMC as a picture
def soft_targets_heatmap(targets, queue_cols: int = 0, lam: float | None = None, perm=None,
                         title: str = "soft targets of the InfoNCE"):
    """The (B, B + Q) soft-target matrix (:func:`cmmc_lib.ssl.soft_targets`) as a heatmap: row i
    puts ``lam`` on its own key (column i) and ``1 - lam`` on its partner's key (column perm[i]);
    the queue's columns (negatives only) are zero. Values are written in the cells."""
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
    ax.set_xticks(range(n))
    ax.set_xticklabels([f"k{j}" for j in range(keys)] + [f"q{j}" for j in range(queue_cols)], fontsize=7)
    ax.set_yticks(range(b))
    rows = [f"z1 of {i}" + (f" (partner {int(perm[i])})" if perm is not None else "") for i in range(b)]
    ax.set_yticklabels(rows, fontsize=7)
    if queue_cols:
        ax.axvline(keys - 0.5, color="black", lw=1)
        ax.text(keys + queue_cols / 2 - 0.5, -0.65, "queue (negatives)", ha="center", va="bottom", fontsize=8)
        ax.text(keys / 2 - 0.5, -0.65, "keys of this batch", ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("column of the logits [batch keys ; queue]")
    sub = f" (lam = {lam:.2f})" if lam is not None else ""
    ax.set_title(title + sub, fontsize=10, pad=24)
    fig.colorbar(image, ax=ax, fraction=0.04).set_label("target weight", fontsize=8)
    fig.tight_layout()
    return fig


def cmmc_pipeline(k: int, l: int, shape_k: Sequence[int], shape_l: Sequence[int], num_blocks: int,
                  lam: float | None = None):
    """The CMMC step as a picture (METHOD.md section 2), each step labelled with the library
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
    node(0.8, 0.4, "logits = z1 . [batch keys ; queue] / tau\n"
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


# ----------------------------------------------------------------------------- the recipe and its tables
def schedule_figure(stages: Sequence, title: str = "the training schedule"):
    """The stages of a pipeline (:func:`cmmc_lib.pipeline.plan_pipeline`) on a time axis in
    epochs: one row per network, a bar per stage labelled with its method (stage 1 side by side,
    then stage 2 one run after the other), an arrow from each stage's frozen source to it."""
    rows = list(dict.fromkeys(m for st in stages for m in (st.modality, st.cfg.ssl.other_modality)))
    colours = {"moco": "#c6dbef", "mixup": "#c7e9c0", "cutmix": "#c7e9c0", "cm-mixup": "#fdd0a2",
               "cmmc": "#fdae6b", "coclr": "#dadaeb", "coclr-cmmc": "#bcbddc"}
    fig, ax = plt.subplots(figsize=(9, 1 + 0.8 * len(rows)))
    first = [st for st in stages if st.name.startswith("stage1")]
    clock = max((st.cfg.optim.epochs for st in first), default=0)
    ends = {}
    for st in stages:
        begin = 0 if st in first else clock
        if st not in first:
            clock += st.cfg.optim.epochs
        trained = [st.modality] + ([st.cfg.ssl.other_modality] if st.cfg.ssl.joint else [])
        for m in trained:
            y = rows.index(m)
            ax.barh(y, st.cfg.optim.epochs, left=begin, color=colours.get(st.cfg.ssl.method, "#eeeeee"),
                    edgecolor="gray")
            ax.text(begin + st.cfg.optim.epochs / 2, y, f"{st.name}\n{st.cfg.ssl.method}", ha="center",
                    va="center", fontsize=7)
        ends[str(st.run_dir)] = (begin + st.cfg.optim.epochs, rows.index(st.modality))
        source = None if st.cfg.ssl.joint else st.cfg.ssl.source_run
        if source and str(source) in ends:
            x0, y0 = ends[str(source)]
            ax.annotate("", (begin + 0.3, rows.index(st.modality)), (x0, y0),
                        arrowprops=dict(arrowstyle="->", color="dimgray", lw=1, connectionstyle="arc3,rad=0.2"))
    ax.set_yticks(range(len(rows)), rows)
    ax.invert_yaxis()
    ax.set_xlabel("epochs (a network trains in its own bars; an arrow: the frozen source a stage mixes in)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def ablation_bars(rows: Sequence[dict], metric: str = "linear", datasets: Sequence[str] = ("pretrain", "transfer"),
                  chance: dict | None = None, title: str = ""):
    """Grouped bars of an ablation table (:func:`cmmc_lib.ablation.aggregate` rows): one panel per
    dataset, one group per stream, one bar per method with its mean over seeds, the standard
    deviation as an error bar and each seed as a dot; ``chance`` ``{"<metric>/<dataset>": c}``
    draws a dashed line."""
    streams = list(dict.fromkeys(r["stream"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    names = {r["method"]: r["name"] for r in rows}
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 3.6), squeeze=False, sharey=True)
    width = 0.8 / max(len(methods), 1)
    colours = plt.cm.viridis(np.linspace(0.15, 0.85, max(len(methods), 1)))
    for ax, dataset in zip(axes[0], datasets):
        cell = f"{metric}/{dataset}"
        for j, method in enumerate(methods):
            for i, stream in enumerate(streams):
                row = next((r for r in rows if r["stream"] == stream and r["method"] == method), None)
                if row is None or not row.get(cell):
                    continue
                x = i + (j - (len(methods) - 1) / 2) * width
                ax.bar(x, row[f"{cell}/mean"], width, yerr=row[f"{cell}/std"], color=colours[j], capsize=2,
                       label=names[method] if i == 0 else None)
                ax.plot([x] * len(row[cell]), row[cell], "k.", markersize=3)
        if chance and cell in chance:
            ax.axhline(chance[cell], color="gray", ls="--", lw=1, label="chance")
        ax.set_xticks(range(len(streams)), streams)
        ax.set_title(f"{metric}, {dataset}")
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel(metric)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def epoch_curves(curves: dict, labels: dict | None = None, chance: float | None = None,
                 title: str = "kNN R@1 of the RGB network through its schedule"):
    """The accuracy-vs-epochs figure: ``curves`` maps a variant to ``{seed: [(epoch, value), ...]}``
    (:func:`cmmc_lib.ablation.epoch_curves`); each variant's mean over seeds as a line, the
    spread (min to max over seeds) as a band; ``labels`` names the variants."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for variant, by_seed in curves.items():
        series = [dict(points) for points in by_seed.values() if points]
        if not series:
            continue
        epochs = sorted(set.intersection(*(set(s) for s in series)))
        values = np.array([[s[e] for e in epochs] for s in series])
        label = (labels or {}).get(variant, variant)
        line, = ax.plot(epochs, values.mean(0), label=f"{label} ({len(series)} seed{'s' * (len(series) > 1)})")
        if len(series) > 1:
            ax.fill_between(epochs, values.min(0), values.max(0), color=line.get_color(), alpha=0.15)
    if chance is not None:
        ax.axhline(chance, color="gray", ls="--", lw=1, label="chance")
    ax.set_xlabel("epoch (stage 1, then stage 2)")
    ax.set_ylabel("kNN R@1 (test split)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
