"""Flow of a video's frames (cmmc_lib.flow.estimators): every method recovers a known motion,
frame-aligned, on RGB or grey frames, with clear errors for what it cannot take."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from cmmc_lib.flow.estimators import FLOW_METHODS, compute_flow
from tests._gen_fixtures import textured_frames


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_compute_flow_recovers_a_known_translation(method):
    frames = textured_frames(n=4, dx=2.0, dy=-1.0)
    flow = compute_flow(frames, method)
    assert flow.shape == (4, 48, 64, 2) and flow.dtype == np.float32
    inner = flow[:3, 10:-10, 10:-10]                     # away from the borders
    assert np.median(inner[..., 0]) == pytest.approx(2.0, abs=0.3)
    assert np.median(inner[..., 1]) == pytest.approx(-1.0, abs=0.3)
    np.testing.assert_array_equal(flow[-1], flow[-2])     # frame-aligned: last duplicated


def test_compute_flow_of_one_frame_is_one_zero_field_and_grey_input_works():
    frames = textured_frames(n=3)
    assert np.array_equal(compute_flow(frames[:1], "dis"), np.zeros((1, 48, 64, 2), np.float32))
    grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
    np.testing.assert_array_equal(compute_flow(grey, "dis"), compute_flow(frames, "dis"))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown flow method"):
        compute_flow(textured_frames(n=2), "lucas")
    with pytest.raises(ValueError, match="uint8"):
        compute_flow(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="at least one frame"):
        compute_flow(np.zeros((0, 8, 8, 3), np.uint8))
