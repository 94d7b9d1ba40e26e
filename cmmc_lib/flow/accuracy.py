"""How accurate each flow method is: the end-point error against ground truth on real frames
warped with a known smooth flow (:mod:`cmmc_lib.flow.ground_truth`), and how far one method's
flow is from another's on real consecutive frames."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .estimators import FLOW_METHODS, TORCH_FLOW_METHODS, check_flow_options, compute_flow
from .frames import grey_frames
from .ground_truth import endpoint_error, smooth_flow_field, valid_mask, warp_pair


def flow_accuracy(videos: Sequence[str | Path], methods: Sequence[str] | None = None,
                  kinds: Sequence[str] = ("sinusoids", "affine"), max_px: float = 4.0,
                  frames_per_video: int = 1, size: tuple[int, int] | None = None,
                  device: str | None = "cpu", seed: int = 0) -> dict:
    """End-point error against ground truth on real frames warped with known smooth flow.

    For each video, ``frames_per_video`` frames (evenly spaced) become grey second frames
    ``i1``; for each field kind (:func:`cmmc_lib.flow.ground_truth.smooth_flow_field`, magnitude up to
    ``max_px``) the first frame is ``i0(x) = i1(x + f(x))``, so the true flow of ``(i0, i1)`` is
    ``f``. The EPE (px) is averaged over the pixels away from the border
    (:func:`cmmc_lib.flow.ground_truth.valid_mask`). ``size``: resize the frames to (H, W) first.

    Returns ``{"pairs": [{video, frame, kind}...], "methods": {m: {"epe": mean, "per_pair":
    [...], "seconds": total}}, "max_px", "size"}``.
    """
    methods = list(methods or FLOW_METHODS)
    for m in methods:
        check_flow_options(m, device if m in TORCH_FLOW_METHODS else None, None)
    pairs, cases = [], []
    for v, video in enumerate(videos):
        grey = grey_frames(video, size)
        for k in range(frames_per_video):
            t = int((k + 0.5) * len(grey) / frames_per_video)
            for kind in kinds:
                truth = smooth_flow_field(*grey.shape[1:], kind=kind, max_px=max_px,
                                          seed=seed + 1000 * v + 10 * k + kinds.index(kind))
                i0, i1 = warp_pair(grey[t], truth)
                cases.append((i0, i1, truth, valid_mask(truth)))
                pairs.append({"video": Path(video).name, "frame": t, "kind": kind})
    out = {"pairs": pairs, "max_px": max_px, "size": list(cases[0][0].shape) if cases else None,
           "methods": {}}
    for m in methods:
        opts = {"device": device} if m in TORCH_FLOW_METHODS else {}
        errors, t0 = [], time.perf_counter()
        for i0, i1, truth, mask in cases:
            flow = compute_flow(np.stack([i0, i1]), m, **opts)[0]
            errors.append(round(endpoint_error(flow, truth, mask), 4))
        out["methods"][m] = {"epe": round(float(np.mean(errors)), 4), "per_pair": errors,
                             "seconds": round(time.perf_counter() - t0, 2)}
    return out


def flow_agreement(videos: Sequence[str | Path], method: str = "tvl1-torch",
                   reference: str = "tvl1", pairs_per_video: int = 2,
                   size: tuple[int, int] | None = None, device: str | None = "cpu") -> dict:
    """How far ``method``'s flow is from ``reference``'s on real consecutive frames: the mean
    end-point distance (px) over all pixels, per pair and overall, and the reference's mean
    flow magnitude for scale. Pairs are evenly spaced in each video."""
    rows = []
    for video in videos:
        grey = grey_frames(video, size)
        for k in range(pairs_per_video):
            t = min(int((k + 0.5) * len(grey) / pairs_per_video), len(grey) - 2)
            pair = grey[t:t + 2]
            a = compute_flow(pair, method, **({"device": device} if method in TORCH_FLOW_METHODS else {}))[0]
            r = compute_flow(pair, reference, **({"device": device} if reference in TORCH_FLOW_METHODS else {}))[0]
            rows.append({"video": Path(video).name, "frame": t,
                         "epe": round(endpoint_error(a, r), 4),
                         "reference_magnitude": round(float(np.linalg.norm(r, axis=-1).mean()), 4)})
    return {"method": method, "reference": reference, "pairs": rows,
            "epe": round(float(np.mean([r["epe"] for r in rows])), 4) if rows else None,
            "reference_magnitude": round(float(np.mean([r["reference_magnitude"] for r in rows])), 4)
            if rows else None}
