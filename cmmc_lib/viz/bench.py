"""Figures of lesson 06 (GPU training) from :mod:`cmmc_lib.bench` results: step throughput, where
CMMC's extra time goes, the loader, and the cost of a full reproduction. They draw only; each
returns a matplotlib ``Figure``.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np


def _ok(rows: Sequence[dict]) -> list[dict]:
    return [r for r in rows if not r.get("error") and r.get("clips_per_s")]


def _label(r: dict) -> str:
    return r["method"] + (" +compile" if r.get("compiled") else "")


def step_throughput(step: dict, title: str | None = None):
    """Clips/s of every method (bars), grouped by precision and memory layout."""
    rows = _ok(step["results"])
    groups = sorted({(r["amp"], bool(r["channels_last"]), bool(r.get("compiled"))) for r in rows},
                    key=lambda g: (g[0] != "off", g[1], g[2]))           # fp32 first
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(methods) * max(len(groups), 1)), 3.4))
    width = 0.8 / max(len(groups), 1)
    for g, (amp, cl, comp) in enumerate(groups):
        vals = [next((r["clips_per_s"] for r in rows if r["method"] == m and (r["amp"], bool(r["channels_last"]),
                                                                               bool(r.get("compiled"))) == (amp, cl, comp)),
                     np.nan) for m in methods]
        name = {"off": "fp32", "bf16": "bf16"}[amp] + (" channels-last" if cl else "") + (" compiled" if comp else "")
        bars = ax.bar(np.arange(len(methods)) + (g - (len(groups) - 1) / 2) * width, vals, width, label=name)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(np.arange(len(methods)), methods, rotation=20)
    ax.set_ylabel("clips / s (batch rows)")
    ax.set_title(title or f"training step on {step.get('device_name', step.get('device'))}: {step.get('preset')} preset, "
                          f"batch {step.get('batch')}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def cmmc_breakdown(step: dict, title: str = "where CMMC's extra time goes"):
    """Stacked bars: the MoCo step, and CMMC's step split into MoCo-equal work, the source
    network's partial forward, the mixing and the rest (per precision)."""
    extra = step["ratios"]["extra_time"]
    tags = [t for t in extra if t.startswith(("cmmc/", "cm-mixup/"))] or list(extra)
    fig, ax = plt.subplots(figsize=(max(4.5, 2.2 * len(tags)), 3.4))
    x = 0
    ticks, labels = [], []
    for tag in tags:
        e = extra[tag]
        ax.bar(x, e["moco_ms"], color="tab:blue", label="MoCo step" if x == 0 else None)
        base = min(e["moco_ms"], e["method_ms"])
        parts = [("source forward", max(e["source_forward_ms"], 0), "tab:orange"),
                 ("mixing", max(e["mixing_ms"], 0), "tab:green"), ("other", max(e["other_ms"], 0), "tab:gray")]
        ax.bar(x + 1, base, color="tab:blue")
        bottom = base
        for name, v, c in parts:
            ax.bar(x + 1, v, bottom=bottom, color=c, label=name if x == 0 else None)
            bottom += v
        ax.text(x + 1, bottom, f"x{e['method_ms'] / e['moco_ms']:.2f}", ha="center", va="bottom", fontsize=8)
        ticks += [x, x + 1]
        labels += ["moco\n" + tag.split("@")[1], tag.split("/")[0] + "\n" + tag.split("@")[1]]
        x += 3
    ax.set_xticks(ticks, labels, fontsize=8)
    ax.set_ylabel("ms per step")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def loader_throughput(loaders: dict, step_clips_per_s: dict | None = None, title: str = "the loader"):
    """Clips/s per worker count for each loader measurement (lines), against the training
    step's clips/s (dashed lines: what the loader must deliver)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, res in loaders.items():
        rows = [r for r in (res or {}).get("results", []) if not r.get("error")] if isinstance(res, dict) else []
        if rows:
            ax.plot([r["workers"] for r in rows], [r["clips_per_s"] for r in rows], "o-",
                    label=f"{name} ({'+'.join(res['modalities'])})")
    for (name, v), style in zip((step_clips_per_s or {}).items(), ("--", ":", "-.", (0, (1, 3)))):
        ax.axhline(v, ls=style, lw=1, color="k", label=f"the {name} step consumes {v:.0f} clips/s")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("loader workers")
    ax.set_ylabel("clips / s")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)   # labels never overlap
    fig.tight_layout()
    return fig


def recipe_cost(cost: dict, title: str = "a full reproduction"):
    """GPU-hours per stage of the recipe, and wall-clock hours on 1 / 4 / 8 GPUs."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.2))
    stages = cost["stages"]
    a.bar([s["stage"] + "\n" + s["method"] for s in stages], [s["gpu_hours"] for s in stages],
          color=["tab:blue", "tab:orange"])
    a.set_ylabel("GPU-hours")
    a.set_title(f"{cost['gpu_hours']:.0f} GPU-hours in all", fontsize=10)
    wall = cost["wall_hours_on"]
    b.bar([f"{n} GPU" for n in wall], list(wall.values()), color="tab:gray")
    b.set_ylabel("hours")
    b.set_title(f"wall clock (scaling {cost['scaling']:.0%} per extra GPU)", fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
