"""One frame pair by each method side by side, for lesson 01 (cmmc_lib.flow.compare)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from cmmc_lib.flow.compare import compare_flow_methods
from tests._gen_fixtures import textured_frames


def test_compare_flow_methods_for_the_course():
    frames = textured_frames(n=4, dx=2.0)
    r = compare_flow_methods(frames, methods=["dis", "tvl1-torch"], repeats=2, size=(36, 48))
    assert set(r["methods"]) == {"dis", "tvl1-torch"} and r["size"] == [36, 48]
    assert r["frame"].shape == (36, 48, 3)
    for m in r["methods"].values():
        assert m["flow"].shape == (36, 48, 2) and m["seconds_per_field"] >= 0
        assert np.median(m["flow"][8:-8, 8:-8, 0]) == pytest.approx(1.5, abs=0.3)   # 2 px * 36/48
    assert cv2.getNumThreads() > 0
    with pytest.raises(ValueError, match="pair index"):
        compare_flow_methods(frames, pair=3)
