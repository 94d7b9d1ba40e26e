"""A view's random parameters are drawn once and shared by RGB, flow and pose; the geometric half
is cut per item on uint8 pixels, the photometric half (jitter, grey, blur, normalisation) on
batches; CoCLR's crop, view plan, grey, blur and flow images are there to switch on."""
import numpy as np
import pytest
import torch

from cmmc_lib.data.augment import PARAMS, finish_clips, gaussian_kernels, no_change
from cmmc_lib.data.transforms import (Augment, ClipTransform, ViewParams, crop_clip, eval_view_params, plan_views,
                                      random_resized_box, sample_view_params, ten_crop_params, transform_pose)


def random_clip(seed=0, t=4, h=40, w=56):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def flow_mirroring(rgb):
    """Flow whose x image is the R channel and y image the G channel of ``rgb``."""
    return np.ascontiguousarray(rgb[..., :2])


def finish(clip, modality="rgb", view=None, **kw):
    """One view (T, S, S, C) uint8 -> (C, T, S, S) float, as the dataset finishes it."""
    row = (view or ViewParams((0, 0, 1, 1), strong=False)).photometric()[None]
    grey = torch.tensor([view.grey_channels], dtype=torch.uint8) if view and view.grey_channels else None
    return finish_clips(clip[None], modality, row, grey, **kw)[0]


# ----------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("seed", range(6))
def test_rgb_and_flow_get_the_same_crop_and_flip(seed):
    rgb = random_clip(seed)
    t = ClipTransform(size=24, train=True)
    params = t.sample(np.random.default_rng(seed), rgb.shape[1:3])
    out = t(params, rgb=rgb, flow=flow_mirroring(rgb))
    r, f = out["rgb"], out["flow"]
    assert r.shape == (4, 24, 24, 3) and f.shape == (4, 24, 24, 2) and r.dtype == f.dtype == torch.uint8
    assert torch.equal(f[..., 0], 255 - r[..., 0] if params.flip else r[..., 0])    # x flow negated on a flip
    assert torch.equal(f[..., 1], r[..., 1])


def test_flip_negates_x_flow_only_when_asked_and_the_scale_is_px_over_20():
    rgb = random_clip(1)
    flipped = ViewParams(box=(0.1, 0.2, 0.5, 0.6), flip=True)
    on = finish(crop_clip(flow_mirroring(rgb), flipped, 16, flow=True, flip_flow=True), "flow")
    off = finish(crop_clip(flow_mirroring(rgb), flipped, 16, flow=True, flip_flow=False), "flow")
    torch.testing.assert_close(on[0], -off[0])                      # q -> 255 - q is exactly f -> -f
    torch.testing.assert_close(on[1], off[1])
    not_flipped = finish(crop_clip(flow_mirroring(rgb), ViewParams((0.1, 0.2, 0.5, 0.6)), 16, flow=True), "flow")
    torch.testing.assert_close(off[0], not_flipped[0].flip(-1))
    flow = np.full((2, 10, 10, 2), 255, dtype=np.uint8)            # +20 px
    flow[..., 1] = 0                                                # -20 px
    out = finish(crop_clip(flow, eval_view_params((10, 10), 10), 10, flow=True), "flow")
    assert torch.all(out[0] == 1.0) and torch.all(out[1] == -1.0)


def test_eval_view_is_the_exact_centre_crop_or_a_resized_larger_one():
    rgb = random_clip(2, h=40, w=56)
    params = eval_view_params((40, 56), 32)
    out = finish(crop_clip(rgb, params, 32))
    expected = torch.from_numpy(rgb[:, 4:36, 12:44]).permute(3, 0, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(out, expected)
    assert eval_view_params((40, 56), 32) == params                # deterministic
    whole = eval_view_params((20, 30), 32)                          # frame smaller than the crop
    assert whole.box == (0.0, 5 / 30, 1.0, 20 / 30)
    t = ClipTransform(size=16, train=False, eval_crop=32)           # CoCLR: a 224 centre crop, then 128
    p = t.sample(None, (40, 56))
    assert p == params and t(p, rgb=rgb)["rgb"].shape == (4, 16, 16, 3)


def test_ten_crops_are_the_centre_and_the_corners_then_the_same_flipped():
    crops = ten_crop_params((40, 56), 32)
    assert len(crops) == 10 and [c.flip for c in crops] == [False] * 5 + [True] * 5
    tops_lefts = {(round(c.box[0] * 40), round(c.box[1] * 56)) for c in crops}
    assert tops_lefts == {(4, 12), (0, 0), (0, 24), (8, 0), (8, 24)}
    rgb = random_clip(5, h=40, w=56)
    corner = crop_clip(rgb, crops[1], 32)
    assert torch.equal(corner, torch.from_numpy(rgb[:, :32, :32]))
    assert torch.equal(crop_clip(rgb, crops[6], 32), corner.flip(2))


@pytest.mark.parametrize("seed", range(8))
def test_pose_follows_the_pixels_it_marks(seed):
    rng = np.random.default_rng(100 + seed)
    rgb = np.zeros((3, 60, 80, 3), dtype=np.uint8)
    joints = np.zeros((3, 2, 3), dtype=np.float32)
    for t in range(3):
        x, y = rng.integers(20, 60), rng.integers(15, 45)
        rgb[t, y - 1:y + 2, x - 1:x + 2] = 255                      # a 3x3 dot centred on (x, y)
        joints[t, 0] = (x, y, 1.0)
        joints[t, 1] = (0.0, 0.0, 1.0)                               # the top-left pixel
    params = sample_view_params(np.random.default_rng(seed), (60, 80), Augment(crop_scale=(0.5, 1.0), jitter_p=0,
                                                                            grey_p=0))
    img = finish(crop_clip(rgb, params, 48))
    pose = transform_pose(joints, params, (60, 80))
    assert pose.shape == (3, 3, 2)
    for t in range(3):
        if pose[2, t, 0] == 0:                                       # dot cropped away
            assert pose[0, t, 0].abs() > 1 or pose[1, t, 0].abs() > 1
            continue
        row, col = divmod(int(img[0, t].argmax()), 48)
        x_px = (pose[0, t, 0] + 1) / 2 * 48 - 0.5                    # back to output pixels
        y_px = (pose[1, t, 0] + 1) / 2 * 48 - 0.5
        assert abs(x_px - col) <= 1.5 and abs(y_px - row) <= 1.5


def test_pose_outside_the_crop_loses_its_confidence():
    joints = np.array([[[5.0, 5.0, 0.9], [50.0, 30.0, 0.8]]], dtype=np.float32)
    params = ViewParams(box=(0.25, 0.25, 0.5, 0.5))                  # rows 15..45, cols 20..60
    pose = transform_pose(joints, params, (60, 80))
    assert pose[2, 0, 0] == 0 and pose[0, 0, 0] < -1
    assert pose[2, 0, 1] == pytest.approx(0.8)
    assert pose[0, 0, 1] == pytest.approx(2 * (50.5 / 80 - 0.25) / 0.5 - 1)


# ----------------------------------------------------------------------------- drawing views
@pytest.mark.parametrize("seed", range(20))
def test_random_resized_box_respects_scale_and_aspect(seed):
    top, left, h, w = random_resized_box(np.random.default_rng(seed), (120, 160), (0.3, 0.6))
    assert 0 <= top and top + h <= 120 and 0 <= left and left + w <= 160
    assert 0.3 - 0.02 <= h * w / (120 * 160) <= 0.6 + 0.02
    assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05


def test_coclr_s_crop_tries_once_and_else_takes_the_whole_frame():
    """CoCLR's RandomSizedCrop on 320 x 240 frames, area 0.2-1: a box that does not fit is not
    drawn again: the whole frame goes through (and is squashed to the square output)."""
    rng = np.random.default_rng(0)
    boxes = [random_resized_box(rng, (240, 320), (0.2, 1.0), mode="coclr") for _ in range(4000)]
    whole = np.mean([b == (0, 0, 240, 320) for b in boxes])
    assert 0.25 < whole < 0.35                                     # about 30 % of the clips
    fitted = [b for b in boxes if b != (0, 0, 240, 320)]
    ratios = np.array([w / h for _, _, h, w in fitted])
    assert ((ratios > 0.74) & (ratios < 1.35)).all() and 0.4 < np.mean(ratios < 1) < 0.6     # swapped half the time
    tv = np.mean([random_resized_box(rng, (240, 320), (0.2, 1.0)) == (0, 0, 240, 320) for _ in range(500)])
    assert tv < 0.02                                                # torchvision tries ten times


def test_coclr_s_view_plan_shares_a_window_half_the_time_with_exactly_one_strong_view():
    aug = Augment(view_mode="coclr")
    rng = np.random.default_rng(1)
    shared, strong_when_shared, strong_otherwise = 0, [], []
    for _ in range(2000):
        windows = np.array([[0, 1, 2], [10, 11, 12]])
        planned, strong = plan_views(rng, windows, aug)
        if np.array_equal(planned[0], planned[1]):
            shared += 1
            strong_when_shared.append(sum(strong))
        else:
            strong_otherwise += strong
    assert 0.46 < shared / 2000 < 0.54 and set(strong_when_shared) == {1}
    assert 0.26 < np.mean(strong_otherwise) < 0.34                  # each view strong with p 0.3
    same = plan_views(np.random.default_rng(1), np.array([[0, 1], [5, 6]]), Augment())
    assert same[1] == [True, True] and same[0].tolist() == [[0, 1], [5, 6]]      # symmetric: as drawn
    with pytest.raises(ValueError, match="two views"):
        plan_views(rng, np.zeros((3, 2)), aug)


def test_same_generator_state_same_view_and_a_weak_view_draws_the_same_numbers():
    a = sample_view_params(np.random.default_rng(7), (40, 56))
    b = sample_view_params(np.random.default_rng(7), (40, 56))
    rng = np.random.default_rng(7)
    c, d = sample_view_params(rng, (40, 56)), sample_view_params(rng, (40, 56))
    assert a == b == c and c != d
    weak_rng, strong_rng = np.random.default_rng(3), np.random.default_rng(3)
    weak = sample_view_params(weak_rng, (40, 56), Augment(blur_p=1.0), strong=False)
    strong = sample_view_params(strong_rng, (40, 56), Augment(blur_p=1.0), strong=True)
    assert weak.box == strong.box and weak.jitter is None and weak.blur == 0 and strong.blur > 0
    assert weak_rng.random() == strong_rng.random()                 # later views unaffected


# ----------------------------------------------------------------------------- the photometric half
def test_a_weak_view_is_only_normalised_and_a_strong_one_is_jittered_within_range():
    clip = torch.from_numpy(random_clip(3))
    weak = ViewParams((0, 0, 1, 1), strong=False, jitter=None)
    torch.testing.assert_close(finish(clip, view=weak), clip.permute(3, 0, 1, 2).float() / 127.5 - 1)
    strong = ViewParams((0, 0, 1, 1), jitter=(1.3, 0.7, 1.4, 0.05))
    out = finish(clip, view=strong)
    assert not torch.allclose(out, finish(clip, view=weak)) and out.min() >= -1 and out.max() <= 1


def test_grey_is_luma_or_one_channel_per_frame_as_coclr():
    clip = torch.from_numpy(random_clip(4))
    luma = finish(clip, view=ViewParams((0, 0, 1, 1), grey=True))
    assert torch.equal(luma[0], luma[1]) and torch.equal(luma[1], luma[2])
    channels = (2, 0, 1, 1)
    coclr = finish(clip, view=ViewParams((0, 0, 1, 1), grey=True, grey_channels=channels), grey_mode="channel")
    for t, ch in enumerate(channels):
        expected = clip[t, ..., ch].float() / 127.5 - 1
        assert all(torch.allclose(coclr[c, t], expected) for c in range(3))


def test_blur_smooths_keeps_a_flat_clip_flat_and_its_kernels_sum_to_one():
    k = gaussian_kernels(torch.tensor([0.5, 2.0]))
    torch.testing.assert_close(k.sum(1), torch.ones(2))
    assert k.shape[1] == 2 * 6 + 1 and k[0, 6] > k[1, 6]            # 3 sigma of the widest
    clip = torch.from_numpy(random_clip(5, h=24, w=24))
    blurred = finish(clip, view=ViewParams((0, 0, 1, 1), blur=1.5))
    plain = finish(clip, view=ViewParams((0, 0, 1, 1)))
    assert blurred.var() < 0.5 * plain.var()
    flat = torch.full((2, 12, 12, 3), 200, dtype=torch.uint8)
    torch.testing.assert_close(finish(flat, view=ViewParams((0, 0, 1, 1), blur=2.0)), finish(flat), atol=1e-6, rtol=0)


def test_hue_full_turn_is_identity_and_neutral_jitter_changes_nothing():
    clip = torch.from_numpy(random_clip(6))
    plain = finish(clip, view=ViewParams((0, 0, 1, 1)))
    torch.testing.assert_close(finish(clip, view=ViewParams((0, 0, 1, 1), jitter=(1, 1, 1, 1.0))), plain,
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(finish(clip, view=ViewParams((0, 0, 1, 1), jitter=(1, 1, 1, 0.0))), plain)
    assert (finish(clip, view=ViewParams((0, 0, 1, 1), jitter=(1, 1, 1, 0.25))) - plain).abs().mean() > 0.05


def test_flow_is_jittered_as_coclr_s_flow_images_only_when_asked():
    flow = torch.full((2, 6, 6, 2), 191, dtype=torch.uint8)                   # +10 px in x and y
    dark = ViewParams((0, 0, 1, 1), jitter=(0.5, 1.0, 1.0, 0.0))              # brightness 0.5
    torch.testing.assert_close(finish(flow, "flow", dark), finish(flow, "flow"))   # ours: motion untouched
    coclr = finish(flow, "flow", dark, photometric_flow=True)
    # CoCLR's flow image (128, dy, dx) at half brightness: 191 -> 95.5, i.e. 10 px becomes -5 px
    torch.testing.assert_close(coclr, torch.full_like(coclr, 2 * (191 / 255 * 0.5) - 1), atol=1e-5, rtol=0)


def test_imagenet_normalisation_of_rgb_and_flow():
    clip = torch.full((1, 2, 2, 3), 255, dtype=torch.uint8)
    out = finish(clip, normalize="imagenet")
    torch.testing.assert_close(out[:, 0, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224,
                                                              (1 - 0.406) / 0.225]))
    flow = finish(torch.zeros((1, 2, 2, 2), dtype=torch.uint8), "flow", normalize="imagenet")
    torch.testing.assert_close(flow[:, 0, 0, 0], torch.tensor([-0.406 / 0.225, -0.456 / 0.224]))   # x blue, y green


def test_a_batch_is_finished_as_its_items_are_one_by_one():
    rng = np.random.default_rng(9)
    aug = Augment(blur_p=0.5, grey_mode="channel")
    views = [sample_view_params(rng, (40, 56), aug, frames=4) for _ in range(6)]
    clips = torch.stack([crop_clip(random_clip(i), v, 24) for i, v in enumerate(views)])
    rows = torch.stack([v.photometric() for v in views])
    grey = torch.tensor([v.grey_channels for v in views], dtype=torch.uint8)
    batched = finish_clips(clips, "rgb", rows, grey, grey_mode="channel")
    one_by_one = torch.stack([finish_clips(clips[i:i + 1], "rgb", rows[i:i + 1], grey[i:i + 1], grey_mode="channel")[0]
                              for i in range(6)])
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=0)
    assert rows.shape == (6, len(PARAMS)) and no_change(3).abs().sum() == 0


def test_bad_input_is_rejected_in_one_line():
    rgb = random_clip(4)
    params = ViewParams(box=(0.1, 0.1, 0.8, 0.7), flip=True)
    assert torch.equal(crop_clip(rgb, params, 16), crop_clip(torch.from_numpy(rgb), params, 16))
    with pytest.raises(ValueError, match="uint8"):
        crop_clip(rgb.astype(np.float32), params, 16)
    with pytest.raises(ValueError, match="2 channels"):
        ClipTransform(16, True)(params, flow=rgb)
    with pytest.raises(ValueError, match="pose_frame_hw"):
        ClipTransform(16, True)(params, pose=np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="uint8 clips"):
        finish_clips(torch.zeros(1, 2, 4, 4, 3), "rgb")
