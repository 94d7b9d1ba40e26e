"""The building blocks of TV-L1 in PyTorch (cmmc_lib.flow.tvl1_ops) against OpenCV: the exact
median, order statistics, gradients and divergence, bicubic warping, the pyramid."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmmc_lib.flow.ground_truth import smooth_flow_field
from cmmc_lib.flow.tvl1_ops import (centered_gradient, divergence, forward_gradient, median_filter,
                                    pyramid_sizes, select_ranks, warp_bicubic)
from tests._gen_fixtures import grey_texture


pytestmark = pytest.mark.usefixtures("one_thread")


def _unfold_median(u, k):
    n, c, h, w = u.shape
    x = F.pad(u, (k // 2,) * 4, mode="replicate").reshape(n * c, 1, h + k - 1, w + k - 1)
    return F.unfold(x, k).median(1).values.reshape(n, c, h, w)


@pytest.mark.parametrize("size", [3, 5, 7])
def test_median_filter_is_exact_with_ties_and_matches_opencv(size):
    gen = torch.Generator().manual_seed(size)
    for high in (3, 1000):                                  # many ties, then few
        u = torch.randint(0, high, (2, 2, 13, 17), generator=gen).float()
        assert torch.equal(median_filter(u, size), _unfold_median(u, size))
    if size in (3, 5):                                      # OpenCV's float median: 3 and 5
        a = np.random.default_rng(size).normal(size=(24, 31)).astype(np.float32)
        got = median_filter(torch.from_numpy(a)[None, None], size)[0, 0].numpy()
        np.testing.assert_array_equal(got, cv2.medianBlur(a, size))
    assert median_filter(u, 1) is u


def test_select_ranks_returns_order_statistics():
    values = [torch.randn(50, generator=torch.Generator().manual_seed(i)) for i in range(9)]
    stacked = torch.stack(values).sort(0).values
    got = select_ranks(values, [0, 4, 8])
    for r, g in zip([0, 4, 8], got):
        assert torch.equal(g, stacked[r])


def test_gradients_follow_opencv_and_divergence_is_minus_the_adjoint():
    img = torch.from_numpy(grey_texture(9, 11).astype(np.float32))[None, None]
    g = centered_gradient(img)[0]
    a = img[0, 0]
    assert torch.allclose(g[0, :, 1:-1], (a[:, 2:] - a[:, :-2]) / 2)
    assert torch.allclose(g[0, :, 0], (a[:, 1] - a[:, 0]) / 2)       # half one-sided at borders
    assert torch.allclose(g[1, -1], (a[-1] - a[-2]) / 2)
    u = torch.randn(2, 2, 9, 11)
    p = torch.randn(2, 2, 2, 9, 11)
    p[:, :, 0, :, -1] = 0                                   # as the dual variable always is
    p[:, :, 1, -1, :] = 0
    assert float((forward_gradient(u) * p).sum()) == pytest.approx(-float((u * divergence(p)).sum()),
                                                                 rel=1e-5)


def test_bicubic_warp_is_opencvs_remap_inside_the_frame():
    img = grey_texture(40, 50).astype(np.float32)
    flow = smooth_flow_field(40, 50, max_px=3.0, seed=1)
    ours = warp_bicubic(torch.from_numpy(img)[None, None],
                        torch.from_numpy(flow).permute(2, 0, 1)[None])[0, 0].numpy()
    xs, ys = np.meshgrid(np.arange(50, dtype=np.float32), np.arange(40, dtype=np.float32))
    theirs = cv2.remap(img, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_CUBIC,
                       borderMode=cv2.BORDER_CONSTANT)
    inner = (slice(6, -6), slice(6, -6))
    assert np.abs(ours[inner] - theirs[inner]).max() < 2.0   # OpenCV rounds to 1/32 px
    assert np.abs(ours[inner] - theirs[inner]).mean() < 0.3
    zero = warp_bicubic(torch.from_numpy(img)[None, None], torch.zeros(1, 2, 40, 50))
    assert torch.allclose(zero[0, 0], torch.from_numpy(img), atol=1e-3)


def test_pyramid_sizes_follow_opencvs_rule():
    assert pyramid_sizes(240, 320) == [(240, 320), (192, 256), (154, 205), (123, 164), (98, 131)]
    assert pyramid_sizes(24, 32) == [(24, 32), (19, 26)]    # stops before a side under 16 px
    assert pyramid_sizes(240, 320, nscales=1) == [(240, 320)]
