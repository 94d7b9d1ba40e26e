"""Ground truth for flow (cmmc_lib.flow.ground_truth): smooth fields, warped pairs, the mask
away from the border and the end-point error."""
from __future__ import annotations

import numpy as np
import pytest

from cmmc_lib.flow.ground_truth import endpoint_error, smooth_flow_field, valid_mask, warp_pair
from tests._gen_fixtures import grey_texture


def test_ground_truth_helpers():
    f = smooth_flow_field(30, 40, "affine", max_px=2.5, seed=3)
    assert f.shape == (30, 40, 2) and np.linalg.norm(f, axis=-1).max() == pytest.approx(2.5, rel=1e-4)
    frame = grey_texture(30, 40)
    i0, i1 = warp_pair(frame, np.zeros_like(f))
    np.testing.assert_array_equal(i0, frame)
    assert i1 is frame
    mask = valid_mask(f)
    assert not mask[:5].any() and mask[15, 20]
    assert endpoint_error(f, f) == 0.0
    with pytest.raises(ValueError, match="kind"):
        smooth_flow_field(8, 8, "swirl")
