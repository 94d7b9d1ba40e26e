"""Pose heatmap volumes (the RGB + Pose route)."""
from __future__ import annotations

import numpy as np
import pytest

from cmmc_lib.data.pose import joint_heatmaps, limb_heatmaps
from cmmc_lib.data.render import BONES, render_clip


def test_joint_heatmaps_peak_at_the_joints_and_scale_with_confidence():
    pose = np.array([[[3.0, 5.0, 1.0], [10.0, 2.0, 0.5]],
                     [[4.0, 5.0, 1.0], [10.0, 2.0, 0.0]]], np.float32)      # (T=2, J=2, 3)
    maps = joint_heatmaps(pose, size=(8, 12), sigma=1.0)
    assert maps.shape == (2, 2, 8, 12) and maps.dtype == np.float32
    assert np.unravel_index(maps[0, 0].argmax(), (8, 12)) == (5, 3)          # (row y, col x)
    assert np.unravel_index(maps[0, 1].argmax(), (8, 12)) == (5, 4)          # joint 0 moved
    assert maps[0, 0].max() == pytest.approx(1.0) and maps[1, 0].max() == pytest.approx(0.5)
    assert np.all(maps[1, 1] == 0)                                           # confidence 0


def test_heatmaps_rescale_from_the_frame_and_merge_persons():
    one = np.array([[[6.5, 2.5, 1.0]]], np.float32)       # between 4 pixels of a 8 x 16 frame
    maps = joint_heatmaps(one, size=(4, 8), frame_size=(8, 16), sigma=0.5)
    assert maps[0, 0, 1, 3] == pytest.approx(1.0)          # = the centre of pixel (1, 3) at 1/2
    one = np.array([[[7.0, 3.0, 1.0]]], np.float32)
    two = np.stack([one, one + np.array([4, 0, 0], np.float32)])            # (M=2, T, J, 3)
    merged = joint_heatmaps(two, size=(8, 16), sigma=0.5)[0, 0]
    assert merged[3, 7] > 0.9 and merged[3, 11] > 0.9


def test_limb_heatmaps_cover_the_segment():
    rgb, pose = render_clip("Wave", seed=0, frames=3)
    limbs = limb_heatmaps(pose, BONES, size=rgb.shape[1:3], sigma=1.0)
    assert limbs.shape == (len(BONES), 3, 64, 80)
    a, b = pose[0, 1, :2], pose[0, 8, :2]                                    # neck - pelvis
    mid = np.rint((a + b) / 2).astype(int)
    assert limbs[BONES.index((1, 8)), 0, mid[1], mid[0]] > 0.6
    assert limbs[BONES.index((1, 8)), 0, :, :].mean() < 0.2
    with pytest.raises(ValueError, match="pose must be"):
        joint_heatmaps(np.zeros((3, 4)), size=(8, 8))
