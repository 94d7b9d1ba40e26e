"""Everything a synthetic dataset needs before a long job trains on it, done once up front: the
videos generated on first use, and their frames decoded into the frame cache at the job's short
side, so that the training loop reads arrays instead of decoding a video per item (the loop then
runs near the speed of its step). The cache's items are exactly the decoded ones
(``tests/test_data_datasets.py``), so a run's numbers do not depend on it."""
from __future__ import annotations

from pathlib import Path

from ..config import DataConfig
from .frame_cache import build_frame_cache
from .synthetic import ensure_synthetic


def prepare_synthetic(data: DataConfig) -> Path | None:
    """Generate the synthetic set of ``data`` on first use and build its frame cache at
    ``data.short_side`` when ``data.frame_cache`` is ``auto`` (resumable; a built cache is kept).
    Returns the root, or None for other datasets (left as they are). Ctrl-C while the cache is
    built raises KeyboardInterrupt (the arrays written so far are kept)."""
    if data.dataset != "synthetic":
        return None
    root = ensure_synthetic(data)
    if data.frame_cache == "auto":
        if build_frame_cache(root, short_side=data.short_side, progress=False).get("interrupted"):
            raise KeyboardInterrupt("stopped while decoding frames into the cache; run the same command again")
    return root
