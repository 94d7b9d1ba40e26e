"""TV-L1 in PyTorch (cmmc_lib.flow.tvl1): the iteration's two forms, batch independence, the
compiled path and its fallback, accuracy against ground truth and OpenCV."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from cmmc_lib.flow import tvl1 as tv
from cmmc_lib.flow.frames import grey_frames
from cmmc_lib.flow.ground_truth import endpoint_error, smooth_flow_field, valid_mask, warp_pair
from cmmc_lib.flow.tvl1 import TVL1Params, tvl1_flow, tvl1_flow_pairs
from cmmc_lib.flow.tvl1_ops import pyramid_sizes
from tests._gen_fixtures import grey_texture, require_realdata, textured_frames


pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_in_place_and_the_functional_iteration_agree_and_frozen_pairs_stay_put():
    gen = torch.Generator().manual_seed(0)
    b, h, w = 3, 12, 14
    u = torch.randn(b, 2, h, w, generator=gen)
    p = torch.randn(b, 2, 2, h, w, generator=gen) * 0.3
    p[:, :, 0, :, -1] = 0
    p[:, :, 1, -1, :] = 0
    gi = torch.randn(b, 2, h, w, generator=gen) * 20
    rho_c = torch.randn(b, 1, h, w, generator=gen) * 5
    ninv = -1 / gi.square().sum(1, keepdim=True).clamp_min(tv.FLT_EPSILON)
    active = torch.tensor([1.0, 0.0, 1.0]).view(b, 1, 1, 1)
    u2, p2, flags, err2 = tv._step_functional(u, p, gi, rho_c, ninv, active, 0.045, 0.3, 0.25 / 0.3,
                                              tol=1e-3)
    u1, p1 = u.clone(), p.clone()
    err1 = tv._step_inplace(u1, p1, gi, rho_c, ninv, torch.empty_like(u), torch.zeros_like(p),
                            0.045, 0.3, 0.25 / 0.3, active)
    assert torch.allclose(u1, u2, atol=1e-5) and torch.allclose(p1, p2, atol=1e-5)
    assert torch.allclose(err1, err2, rtol=1e-4)
    assert torch.equal(u1[1], u[1]) and torch.equal(p1[1], p[1])    # frozen: untouched
    assert err1[1] == 0 and flags.view(-1).tolist() == [1.0, 0.0, 1.0]


def test_params_are_checked():
    assert TVL1Params().as_dict()["lambda_"] == 0.15
    for bad in ({"tau": 0.3}, {"nscales": 0}, {"scale_step": 1.0}, {"median_filtering": 4},
                {"inner_iterations": 0}):
        with pytest.raises(ValueError, match="TVL1Params"):
            TVL1Params(**bad)
    with pytest.raises(ValueError, match="differ in shape"):
        tvl1_flow(torch.zeros(1, 8, 8), torch.zeros(1, 8, 9))
    with pytest.raises(ValueError, match="at least 3x3"):
        tvl1_flow(torch.zeros(1, 2, 8), torch.zeros(1, 2, 8))
    with pytest.raises(ValueError, match="batch_size"):
        tvl1_flow_pairs(np.zeros((1, 8, 8), np.uint8), np.zeros((1, 8, 8), np.uint8), batch_size=0)


def _pairs(n=3, h=48, w=64):
    """n frame pairs of translated textures (dx, dy differ per pair), uint8 (n, h, w) x 2."""
    prev, nxt = [], []
    for i in range(n):
        clip = textured_frames(n=2, height=h, width=w, dx=1.5 - i, dy=0.5 * i, seed=i)
        grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in clip])
        prev.append(grey[0]), nxt.append(grey[1])
    return np.stack(prev), np.stack(nxt)


def test_flow_convention_i1_at_x_plus_u_is_i0():
    prev, nxt = _pairs(1)
    flow = tvl1_flow_pairs(prev, nxt)[0]
    assert flow.shape == (48, 64, 2) and flow.dtype == np.float32
    inner = flow[10:-10, 10:-10]
    assert np.median(inner[..., 0]) == pytest.approx(1.5, abs=0.1)   # the texture moves right
    assert np.median(inner[..., 1]) == pytest.approx(0.0, abs=0.1)


def test_a_pair_gets_the_same_flow_in_any_batch_and_at_any_check_interval():
    prev, nxt = _pairs(3)
    alone = np.stack([tvl1_flow_pairs(prev[i:i + 1], nxt[i:i + 1])[0] for i in range(3)])
    stats: dict = {}
    together = tvl1_flow_pairs(prev, nxt, batch_size=3, stats=stats)
    np.testing.assert_array_equal(together, alone)
    assert stats["warps"] == 3 * 5 * len(pyramid_sizes(48, 64)) and stats["iterations"] > 0
    np.testing.assert_array_equal(tvl1_flow_pairs(prev, nxt, batch_size=2, check_every=7), alone)


def test_the_compiled_code_path_gives_the_same_flow(monkeypatch):
    # the branch that torch.compile would run, with the uncompiled functions (compiling takes
    # tens of seconds on a CPU; the GPU check times the compiled kernels)
    monkeypatch.setattr(tv, "_compiled", lambda name: {"steps": tv._steps_functional,
                                                       "median": tv.median_filter}[name])
    prev, nxt = _pairs(2)
    eager = tvl1_flow_pairs(prev, nxt, batch_size=2)
    functional = tvl1_flow_pairs(prev, nxt, batch_size=2, compile=True)
    assert np.abs(functional - eager).mean() < 0.01


def test_median_filtering_off_and_other_parameters_run():
    prev, nxt = _pairs(1)
    a = tvl1_flow_pairs(prev, nxt, params=TVL1Params(median_filtering=1, nscales=3, warps=2))
    assert np.isfinite(a).all() and np.median(a[0, 10:-10, 10:-10, 0]) == pytest.approx(1.5, abs=0.2)


def test_a_machine_that_cannot_compile_falls_back_to_eager(monkeypatch):
    def broken(name):
        def fail(*args, **kwargs):
            raise RuntimeError("no C++ compiler")
        return fail
    monkeypatch.setattr(tv, "_compiled", broken)
    monkeypatch.setattr(tv, "_COMPILE_STATE", {"worked": False, "failed": False})
    prev, nxt = _pairs(1)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        flow = tvl1_flow_pairs(prev, nxt, compile=True)
    np.testing.assert_array_equal(flow, tvl1_flow_pairs(prev, nxt))
    assert tv._COMPILE_STATE["failed"]
    tvl1_flow_pairs(prev, nxt, compile=True)               # no second attempt, no warning


def _ground_truth_epe(frames: list[np.ndarray], max_px=3.0):
    """Mean EPE of (tvl1-torch, OpenCV tvl1) on frames warped with known smooth flow."""
    cv_tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    ours, theirs = [], []
    for k, frame in enumerate(frames):
        truth = smooth_flow_field(*frame.shape, kind=("sinusoids", "affine")[k % 2],
                                  max_px=max_px, seed=k)
        i0, i1 = warp_pair(frame, truth)
        mask = valid_mask(truth)
        ours.append(endpoint_error(tvl1_flow_pairs(i0[None], i1[None])[0], truth, mask))
        theirs.append(endpoint_error(cv_tvl1.calc(i0, i1, None), truth, mask))
    return float(np.mean(ours)), float(np.mean(theirs))


def test_ground_truth_error_within_10_percent_of_opencv_on_textures():
    ours, theirs = _ground_truth_epe([grey_texture(64, 80, seed=s) for s in range(3)])
    assert ours <= 1.10 * theirs and ours < 0.5


@pytest.mark.realdata
def test_ground_truth_error_within_10_percent_of_opencv_on_real_frames():
    videos = require_realdata("ucf101", "videos")
    names = ["v_Punch_g03_c01.avi", "v_Biking_g05_c02.avi", "v_SoccerJuggling_g24_c01.avi"]
    frames = [grey_frames(videos / n, (120, 160), count=1, start=40)[0] for n in names]
    ours, theirs = _ground_truth_epe(frames)
    assert ours <= 1.10 * theirs, (ours, theirs)


@pytest.mark.realdata
def test_close_to_opencv_on_real_consecutive_frames():
    video = require_realdata("ucf101", "videos", "v_Basketball_g01_c01.avi")
    grey = grey_frames(video, (120, 160), count=3, start=20)
    cv_tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    ours = tvl1_flow_pairs(grey[:-1], grey[1:])
    for t in range(2):
        assert endpoint_error(ours[t], cv_tvl1.calc(grey[t], grey[t + 1], None)) < 0.1
