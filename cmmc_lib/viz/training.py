"""Training as figures: loss and kNN curves of runs, a pipeline's schedule, accuracy vs epochs."""
from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.ticker import MaxNLocator

from .colours import method_colour


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


def schedule_figure(stages: Sequence, title: str = "the training schedule"):
    """The stages of a pipeline (:func:`cmmc_lib.pipeline.plan_pipeline`) on a time axis in
    epochs: one row per network, a bar per stage labelled with its method (stage 1 side by side,
    then stage 2 one run after the other) in its method's colour, pale (:func:`method_colour`), an
    arrow from each stage's frozen source to it."""
    rows = list(dict.fromkeys(m for st in stages for m in (st.modality, st.cfg.ssl.other_modality)))
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
            ax.barh(y, st.cfg.optim.epochs, left=begin, color=to_rgba(method_colour(st.cfg.ssl.method), 0.3),
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


def epoch_curves(curves: dict, variants: dict | None = None, chance: float | None = None,
                 title: str = "kNN R@1 of the RGB network through its schedule", stage2_start: float | None = None):
    """The accuracy-vs-epochs figure: ``curves`` maps a variant to ``{seed: [(epoch, value), ...]}``
    (:func:`cmmc_lib.ablation.epoch_curves`); each variant's mean over seeds as a line with its own
    marker in its method's colour (dashed without alternate training), every seed as a thin line
    beside it, whole epochs on the x axis, ``stage2_start`` (the epoch stage 2 begins after) marked,
    the legend outside the axes. ``variants`` maps a variant's name to its
    :class:`~cmmc_lib.tables.Variant` (e.g. :data:`cmmc_lib.ablation.CURVES`) or to a label."""
    fig, ax = plt.subplots(figsize=(8.0, 3.8))
    markers = "osD^vP"
    for i, (name, by_seed) in enumerate(curves.items()):
        series = [dict(points) for points in by_seed.values() if points]
        if not series:
            continue
        epochs = sorted(set.intersection(*(set(s) for s in series)))
        values = np.array([[s[e] for e in epochs] for s in series])
        variant = (variants or {}).get(name, name)
        label = getattr(variant, "label", variant)
        colour = method_colour(getattr(variant, "method", name))
        style = "-" if getattr(variant, "alternate", True) else "--"
        if len(series) > 1:
            for row in values:
                ax.plot(epochs, row, color=colour, ls=style, lw=0.6, alpha=0.35)
        ax.plot(epochs, values.mean(0), color=colour, ls=style, marker=markers[i % len(markers)], ms=4,
                label=f"{label} (mean of {len(series)} seed{'s' * (len(series) > 1)})")
    if chance is not None:
        ax.axhline(chance, color="gray", ls=":", lw=1, label="chance")
    if stage2_start is not None:
        ax.axvline(stage2_start, color="black", lw=0.8)
        ax.text(stage2_start, 1.01, " stage 2", transform=ax.get_xaxis_transform(), fontsize=8, va="bottom")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (stage 1, then stage 2)")
    ax.set_ylabel("kNN R@1 (test split)")
    ax.set_title(title, pad=14)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig
