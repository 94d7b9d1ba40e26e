"""Transforms share one set of random parameters across RGB, flow and pose of a view."""
import numpy as np
import pytest
import torch

from cmmc_lib.data.transforms import (ClipTransform, ViewParams, color_jitter,
                                      eval_view_params, random_resized_box,
                                      sample_view_params, transform_flow, transform_pose,
                                      transform_rgb)


def random_clip(seed=0, t=4, h=40, w=56):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def flow_mirroring(rgb):
    """Flow whose x image is the R channel and y image the G channel of ``rgb``."""
    return np.ascontiguousarray(rgb[..., :2])


@pytest.mark.parametrize("seed", range(6))
def test_rgb_and_flow_get_the_same_crop_and_flip(seed):
    rgb = random_clip(seed)
    t = ClipTransform(size=24, train=True, color_jitter=0.0, grayscale=0.0)
    params = t.sample(np.random.default_rng(seed), rgb.shape[1:3])
    out = t(params, rgb=rgb, flow=flow_mirroring(rgb))
    r, f = out["rgb"], out["flow"]
    assert r.shape == (3, 4, 24, 24) and f.shape == (2, 4, 24, 24)
    sign = -1.0 if params.flip else 1.0
    torch.testing.assert_close(f[0], sign * r[0])        # x flow negated on a flip
    torch.testing.assert_close(f[1], r[1])


def test_flip_negates_x_flow_only_when_asked():
    rgb = random_clip(1)
    flipped = ViewParams(box=(0.1, 0.2, 0.5, 0.6), flip=True)
    on = transform_flow(flow_mirroring(rgb), flipped, 16, flip_flow=True)
    off = transform_flow(flow_mirroring(rgb), flipped, 16, flip_flow=False)
    torch.testing.assert_close(on[0], -off[0])
    torch.testing.assert_close(on[1], off[1])
    not_flipped = transform_flow(flow_mirroring(rgb), ViewParams((0.1, 0.2, 0.5, 0.6)), 16)
    torch.testing.assert_close(off[0], not_flipped[0].flip(-1))


def test_flow_scale_is_px_over_20():
    flow = np.full((2, 10, 10, 2), 255, dtype=np.uint8)     # +20 px
    flow[..., 1] = 0                                         # -20 px
    out = transform_flow(flow, eval_view_params((10, 10), 10), 10)
    assert torch.all(out[0] == 1.0) and torch.all(out[1] == -1.0)


def test_eval_view_is_the_exact_centre_crop():
    rgb = random_clip(2, h=40, w=56)
    params = eval_view_params((40, 56), 32)
    out = transform_rgb(rgb, params, 32)
    expected = torch.from_numpy(rgb[:, 4:36, 12:44]).permute(3, 0, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(out, expected)
    assert eval_view_params((40, 56), 32) == params          # deterministic
    whole = eval_view_params((20, 30), 32)                  # frame smaller than the crop
    assert whole.box == (0.0, 5 / 30, 1.0, 20 / 30)


@pytest.mark.parametrize("seed", range(8))
def test_pose_follows_the_pixels_it_marks(seed):
    rng = np.random.default_rng(100 + seed)
    rgb = np.zeros((3, 60, 80, 3), dtype=np.uint8)
    joints = np.zeros((3, 2, 3), dtype=np.float32)
    for t in range(3):
        x, y = rng.integers(20, 60), rng.integers(15, 45)
        rgb[t, y - 1:y + 2, x - 1:x + 2] = 255              # a 3x3 dot centred on (x, y)
        joints[t, 0] = (x, y, 1.0)
        joints[t, 1] = (0.0, 0.0, 1.0)                       # the top-left pixel
    params = sample_view_params(np.random.default_rng(seed), (60, 80), scale=(0.5, 1.0),
                                jitter_p=0, grey_p=0)
    img = transform_rgb(rgb, params, 48)
    pose = transform_pose(joints, params, (60, 80))
    assert pose.shape == (3, 3, 2)
    for t in range(3):
        if pose[2, t, 0] == 0:                               # dot cropped away
            assert pose[0, t, 0].abs() > 1 or pose[1, t, 0].abs() > 1
            continue
        row, col = divmod(int(img[0, t].argmax()), 48)
        x_px = (pose[0, t, 0] + 1) / 2 * 48 - 0.5            # back to output pixels
        y_px = (pose[1, t, 0] + 1) / 2 * 48 - 0.5
        assert abs(x_px - col) <= 1.5 and abs(y_px - row) <= 1.5


def test_pose_outside_the_crop_loses_its_confidence():
    joints = np.array([[[5.0, 5.0, 0.9], [50.0, 30.0, 0.8]]], dtype=np.float32)
    params = ViewParams(box=(0.25, 0.25, 0.5, 0.5))            # rows 15..45, cols 20..60
    pose = transform_pose(joints, params, (60, 80))
    assert pose[2, 0, 0] == 0 and pose[0, 0, 0] < -1
    assert pose[2, 0, 1] == pytest.approx(0.8)
    assert pose[0, 0, 1] == pytest.approx(2 * (50.5 / 80 - 0.25) / 0.5 - 1)


@pytest.mark.parametrize("seed", range(20))
def test_random_resized_box_respects_scale_and_aspect(seed):
    top, left, h, w = random_resized_box(np.random.default_rng(seed), (120, 160), (0.3, 0.6))
    assert 0 <= top and top + h <= 120 and 0 <= left and left + w <= 160
    assert 0.3 - 0.02 <= h * w / (120 * 160) <= 0.6 + 0.02
    assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05


def test_same_generator_state_same_view_and_views_differ():
    a = sample_view_params(np.random.default_rng(7), (40, 56))
    b = sample_view_params(np.random.default_rng(7), (40, 56))
    rng = np.random.default_rng(7)
    c, d = sample_view_params(rng, (40, 56)), sample_view_params(rng, (40, 56))
    assert a == b == c and c != d


def test_colour_changes_rgb_only_and_grey_has_equal_channels():
    rgb = random_clip(3)
    params = ViewParams(box=(0.0, 0.0, 1.0, 1.0), jitter=(1.3, 0.7, 1.4, 0.05), grey=True)
    t = ClipTransform(size=20, train=True)
    out = t(params, rgb=rgb, flow=flow_mirroring(rgb))
    plain = t(ViewParams(box=(0.0, 0.0, 1.0, 1.0)), rgb=rgb, flow=flow_mirroring(rgb))
    torch.testing.assert_close(out["flow"], plain["flow"])         # flow untouched
    torch.testing.assert_close(out["rgb"][0], out["rgb"][1])       # grey
    assert not torch.allclose(out["rgb"], plain["rgb"])
    assert out["rgb"].min() >= -1 and out["rgb"].max() <= 1


def test_hue_full_turn_is_identity_and_neutral_jitter_changes_nothing():
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(color_jitter(x, (1.0, 1.0, 1.0, 1.0)), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(color_jitter(x, (1.0, 1.0, 1.0, 0.0)), x)
    shifted = color_jitter(x, (1.0, 1.0, 1.0, 0.25))
    assert (shifted - x).abs().mean() > 0.05


def test_tensor_and_array_inputs_agree_and_bad_input_is_rejected():
    rgb = random_clip(4)
    params = ViewParams(box=(0.1, 0.1, 0.8, 0.7), flip=True)
    torch.testing.assert_close(transform_rgb(rgb, params, 16),
                               transform_rgb(torch.from_numpy(rgb), params, 16))
    with pytest.raises(ValueError, match="uint8"):
        transform_rgb(rgb.astype(np.float32), params, 16)
    with pytest.raises(ValueError, match="2 channels"):
        transform_flow(rgb, params, 16)
    with pytest.raises(ValueError, match="pose_frame_hw"):
        ClipTransform(16, True)(params, pose=np.zeros((1, 2, 3)))
