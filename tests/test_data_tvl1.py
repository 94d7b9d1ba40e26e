"""TV-L1 in PyTorch (cmmc_lib.data.tvl1): the building blocks against OpenCV, the iteration's two
forms, batch independence, accuracy against ground truth and OpenCV, and the GPU check's script
(run on the CPU at a tiny size)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmmc_lib.data import tvl1 as tv
from cmmc_lib.data.tvl1 import (TVL1Params, centered_gradient, divergence, endpoint_error,
                                forward_gradient, median_filter, pyramid_sizes, select_ranks,
                                smooth_flow_field, tvl1_flow, tvl1_flow_pairs, valid_mask,
                                warp_bicubic, warp_pair)
from tests._gen_fixtures import require_realdata, textured_frames


def _grey_texture(h=60, w=80, seed=0) -> np.ndarray:
    """uint8 (h, w): a smooth random texture (enough structure for flow everywhere)."""
    return cv2.cvtColor(textured_frames(n=1, height=h, width=w, seed=seed)[0], cv2.COLOR_RGB2GRAY)


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# --------------------------------------------------------------------------- building blocks
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
    img = torch.from_numpy(_grey_texture(9, 11).astype(np.float32))[None, None]
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
    img = _grey_texture(40, 50).astype(np.float32)
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


# --------------------------------------------------------------------------- the method
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


# --------------------------------------------------------------------------- accuracy
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
    ours, theirs = _ground_truth_epe([_grey_texture(64, 80, seed=s) for s in range(3)])
    assert ours <= 1.10 * theirs and ours < 0.5


@pytest.mark.realdata
def test_ground_truth_error_within_10_percent_of_opencv_on_real_frames():
    from cmmc_lib.data.flow import _frames_at
    videos = require_realdata("ucf101", "videos")
    names = ["v_Punch_g03_c01.avi", "v_Biking_g05_c02.avi", "v_SoccerJuggling_g24_c01.avi"]
    frames = [_frames_at(videos / n, (120, 160), count=1, start=40)[0] for n in names]
    ours, theirs = _ground_truth_epe(frames)
    assert ours <= 1.10 * theirs, (ours, theirs)


@pytest.mark.realdata
def test_close_to_opencv_on_real_consecutive_frames():
    from cmmc_lib.data.flow import _frames_at
    video = require_realdata("ucf101", "videos", "v_Basketball_g01_c01.avi")
    grey = _frames_at(video, (120, 160), count=3, start=20)
    cv_tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    ours = tvl1_flow_pairs(grey[:-1], grey[1:])
    for t in range(2):
        assert endpoint_error(ours[t], cv_tvl1.calc(grey[t], grey[t + 1], None)) < 0.1


def test_ground_truth_helpers():
    f = smooth_flow_field(30, 40, "affine", max_px=2.5, seed=3)
    assert f.shape == (30, 40, 2) and np.linalg.norm(f, axis=-1).max() == pytest.approx(2.5, rel=1e-4)
    frame = _grey_texture(30, 40)
    i0, i1 = warp_pair(frame, np.zeros_like(f))
    np.testing.assert_array_equal(i0, frame)
    assert i1 is frame
    mask = valid_mask(f)
    assert not mask[:5].any() and mask[15, 20]
    assert endpoint_error(f, f) == 0.0
    with pytest.raises(ValueError, match="kind"):
        smooth_flow_field(8, 8, "swirl")


# --------------------------------------------------------------------------- the GPU check
def test_gpu_check_prepares_and_runs_at_a_tiny_size_on_the_cpu(tmp_path):
    from cmmc_lib.data.tvl1_gpu_check import main
    from tests._gen_fixtures import write_video
    videos = [str(write_video(tmp_path / f"v{i}.avi", textured_frames(n=5, height=48, width=64,
                                                                        dx=1.0 + i, seed=i)))
              for i in range(2)]
    data = tmp_path / "pairs.npz"
    assert main(["prepare", "--videos", *videos, "--out", str(data), "--frames-per-video", "3",
                 "--reference-pairs", "1", "--size", "40", "48"]) == 0
    assert main(["run", "--data", str(data), "--out", str(tmp_path / "out"), "--device", "cpu",
                 "--batch-sizes", "1", "2", "--modes", "eager"]) == 0
    report = json.loads((tmp_path / "out" / "tvl1_gpu_check.json").read_text())
    eager = report["modes"]["eager"]
    assert set(eager["by_batch_size"]) == {"1", "2"} and "error" not in eager
    assert eager["by_batch_size"]["2"]["fps"] > 0 and report["target_fps"] == 300
    assert eager["epe_vs_opencv_real"] < 0.25 and eager["gt_epe"] <= 1.10 * eager["gt_epe_opencv"] + 0.02
    assert report["size"] == [40, 48] and report["speed_pairs"] == 4


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
