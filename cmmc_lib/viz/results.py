"""Results with their chance levels and spreads: R@k curves, retrieved examples, confusion,
measured rates, neighbour agreement, the fusion sweep and the ablation's bars."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FixedLocator, NullLocator

from ..tables import row_label
from .colours import method_colour
from .flow import to_frames


def recall_at_k(results: dict, title: str = "retrieval: R@k", chance: dict | None = None,
                errors: dict | None = None, ticks: Sequence[int] = (1, 5, 10, 20)):
    """R@k curves: ``results`` maps a label to ``{k: value}``; ``errors`` the same labels to
    ``{k: standard error}`` (drawn as bars); ``chance`` ``{k: value}`` of a random ranking (a
    dashed curve). The k axis is logarithmic with ticks at ``ticks``."""
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
    import seaborn as sns                           # here: seaborn costs ~0.5 s at start-up

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


def ablation_bars(rows: Sequence[dict], metric: str = "linear", datasets: Sequence[str] = ("pretrain", "transfer"),
                  chance: dict | None = None, title: str = ""):
    """Grouped bars of an ablation table (:func:`cmmc_lib.ablation.aggregate` rows): one panel per
    dataset, one group per stream, one bar per method (in its registry colour) with its mean over
    seeds, its spread as an error bar (std over seeds; one seed: its binomial SE; the y label says
    which) and each seed as a dot; ``chance`` ``{"<metric>/<dataset>": c}`` draws a dashed line."""
    streams = list(dict.fromkeys(r["stream"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    names = {r["method"]: r["name"] for r in rows}
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 3.6), squeeze=False, sharey=True)
    width = 0.8 / max(len(methods), 1)
    for ax, dataset in zip(axes[0], datasets):
        cell = f"{metric}/{dataset}"
        for j, method in enumerate(methods):
            for i, stream in enumerate(streams):
                row = next((r for r in rows if r["stream"] == stream and r["method"] == method), None)
                if row is None or not row.get(cell):
                    continue
                x = i + (j - (len(methods) - 1) / 2) * width
                ax.bar(x, row[cell]["mean"], width, yerr=row[cell]["spread"], color=method_colour(method),
                       capsize=2, label=names[method] if i == 0 else None)
                ax.plot([x] * len(row[cell]["values"]), row[cell]["values"], "k.", markersize=3)
        if chance and cell in chance:
            ax.axhline(chance[cell], color="gray", ls="--", lw=1, label="chance")
        ax.set_xticks(range(len(streams)), streams)
        ax.set_title(f"{metric}, {dataset}")
        ax.set_ylim(0, 1)
    spreads = row_label(r.get(f"{metric}/{d}") for r in rows for d in datasets)
    axes[0][0].set_ylabel(f"{metric} (error bars: {spreads})", fontsize=8)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
