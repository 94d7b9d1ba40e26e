"""Test clips by what can tell their class: all of them, the *scene* clips (their (class, group)
is filmed in the class's typical scene, so RGB can read the class off the background) and the
*motion-only* clips (every other test clip: only the motion tells the class)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.synthetic import in_context
from ..evaluate.chance import measure_accuracy

SUBSETS = ("all", "scene", "motion")


def clip_subsets(root: str | Path, videos: Sequence[str]) -> dict[str, np.ndarray]:
    """Boolean masks (N,) over ``videos`` (ids of a generated synthetic set under ``root``):
    ``all``, ``scene`` (in a context group, :func:`~cmmc_lib.data.synthetic.in_context`) and
    ``motion`` (the rest)."""
    scene = np.array(in_context(root, list(videos)), dtype=bool)
    return {"all": np.ones(len(videos), dtype=bool), "scene": scene, "motion": ~scene}


def subset_accuracy(correct: Sequence[bool], masks: dict[str, np.ndarray], num_classes: int) -> dict:
    """Top-1 accuracy on each subset: ``{name: {"value", "se", "chance", "n", "p_value"}}``
    (:class:`~cmmc_lib.evaluate.chance.Measured`: SE = sqrt(p (1 - p) / n), chance 1 / K); None
    for an empty subset."""
    correct = np.asarray(correct, dtype=bool)
    out = {}
    for name in SUBSETS:
        mask = masks[name]
        if len(mask) != len(correct):
            raise ValueError(f"subset {name!r} has {len(mask)} entries for {len(correct)} predictions")
        n = int(mask.sum())
        out[name] = measure_accuracy(float(correct[mask].mean()), n, num_classes).to_dict() if n else None
    return out
