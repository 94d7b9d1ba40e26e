"""The mixing maths: properties that a wrong implementation would break."""
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cmmc_lib import mixing
from cmmc_lib.mixing import (cross_modal_cutmix, cross_modal_mixup, cutmix, mixup, resample_like,
                             sample_lam, sample_tesseract)

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

video_shapes = st.tuples(st.integers(1, 6), st.integers(1, 5), st.integers(1, 6), st.integers(1, 6))
skeleton_shapes = st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 25))
alphas = st.floats(0.05, 8.0)
seeds = st.integers(0, 2**31 - 1)


@st.composite
def map_and_dims(draw):
    shape = draw(st.one_of(video_shapes, skeleton_shapes))
    letters = mixing.dim_letters(len(shape))
    dims = "".join(draw(st.lists(st.sampled_from(letters), min_size=1, max_size=len(letters), unique=True)))
    return shape, dims


def gen(seed):
    return torch.Generator().manual_seed(seed)


@PROPS
@given(map_and_dims(), st.floats(0.0, 1.0), seeds)
def test_box_lies_inside_the_map_and_lam_is_the_exact_kept_fraction(sd, lam0, seed):
    shape, dims = sd
    tess = sample_tesseract(shape, lam0, dims, gen(seed))
    letters = mixing.dim_letters(len(shape))
    for letter, size, s in zip(letters, shape, tess.box):
        assert 0 <= s.start <= s.stop <= size
        if letter not in dims:
            assert (s.start, s.stop) == (0, size)          # uncut dimensions are taken whole
    kept = tess.mask(shape).sum().item()
    assert tess.lam == pytest.approx(kept / np.prod(shape), abs=1e-12)


huge_sizes = st.integers(1, 2**53)                 # 2**53: the largest size sample_tesseract accepts
huge_shapes = st.one_of(st.tuples(*[huge_sizes] * 4), st.tuples(*[huge_sizes] * 3))


@PROPS
@given(huge_shapes, alphas, seeds)
@example((100_000,) * 4, 1.0, 0)                    # 10**20 elements: beyond int64
def test_lam_stays_the_exact_kept_fraction_in_0_1_for_huge_maps(shape, alpha, seed):
    d = mixing.describe_tesseract(shape, alpha, mixing.dim_letters(len(shape)), seed)
    volume = math.prod(stop - start for start, stop in d["box"].values())
    total = math.prod(shape)
    assert d["box_volume"] == volume
    assert 0.0 <= d["lam"] <= 1.0 and d["lam"] == float(Fraction(total - volume, total))


def test_sizes_beyond_float_precision_are_refused():
    with pytest.raises(ValueError, match=r"at most 2\*\*53"):
        sample_tesseract((1, 1, 1, 2**53 + 1), 0.5)
    with pytest.raises(ValueError, match="positive"):
        sample_tesseract((1, 0, 1, 1), 0.5)


@PROPS
@given(map_and_dims(), alphas, seeds, st.integers(1, 5))
def test_cross_modal_cutmix_keeps_lam_of_h1_and_pastes_from_h2_perm(sd, alpha, seed, batch):
    shape, dims = sd
    h1 = torch.rand(batch, *shape) + 10.0                  # h1 values in [10, 11)
    h2 = -torch.arange(1, batch + 1, dtype=torch.float32).view(-1, *[1] * len(shape)) * torch.ones(batch, *shape)
    out = cross_modal_cutmix(h1, h2, alpha=alpha, dims=dims, generator=gen(seed))
    from_h1 = (out.mixed == h1)
    # the measured kept fraction equals lam exactly
    assert from_h1.float().mean().item() == pytest.approx(out.lam, abs=1e-6)
    # every pasted value is h2 of the partner video perm[i], at the same position
    for i in range(batch):
        pasted = out.mixed[i][~from_h1[i]]
        assert torch.all(pasted == -(out.perm[i] + 1).float())
    assert sorted(out.perm.tolist()) == list(range(batch))
    assert out.box is not None and out.box.lam == out.lam


@PROPS
@given(map_and_dims(), alphas, seeds, st.integers(1, 4))
def test_gradient_reaches_h1_only_where_kept_and_never_h2(sd, alpha, seed, batch):
    shape, dims = sd
    h1 = torch.randn(batch, *shape, requires_grad=True)
    h2 = torch.randn(batch, *shape, requires_grad=True)
    out = cross_modal_cutmix(h1, h2, alpha=alpha, dims=dims, generator=gen(seed))
    out.mixed.sum().backward()
    expected = out.box.mask(shape).float().expand(batch, *shape)
    assert torch.equal(h1.grad, expected)
    assert h2.grad is None
    assert h1.grad is not None and out.mixed.data_ptr() != h1.data_ptr()   # out of place


@PROPS
@given(map_and_dims(), alphas, seeds)
def test_same_generator_state_gives_the_same_mix(sd, alpha, seed):
    shape, dims = sd
    h1, h2 = torch.randn(3, *shape), torch.randn(3, *shape)
    a = cross_modal_cutmix(h1, h2, alpha, dims, generator=gen(seed))
    b = cross_modal_cutmix(h1, h2, alpha, dims, generator=gen(seed))
    assert torch.equal(a.mixed, b.mixed) and a.lam == b.lam and torch.equal(a.perm, b.perm)


@PROPS
@given(alphas, seeds, st.integers(2, 6))
def test_cross_modal_mixup_is_a_convex_combination_with_no_gradient_into_h2(alpha, seed, batch):
    h1 = torch.randn(batch, 2, 3, 4, 4, requires_grad=True)
    h2 = torch.randn(batch, 2, 3, 4, 4, requires_grad=True)
    out = cross_modal_mixup(h1, h2, alpha=alpha, generator=gen(seed))
    ref = out.lam * h1 + (1 - out.lam) * h2[out.perm]
    assert torch.allclose(out.mixed, ref)
    out.mixed.sum().backward()
    assert torch.allclose(h1.grad, torch.full_like(h1, out.lam)) and h2.grad is None


def test_mean_kept_fraction_tracks_expected_lam0_when_boxes_cannot_clip():
    g = gen(0)
    for alpha in (0.5, 1.0, 4.0):
        lams = [cutmix(torch.zeros(1, 1, 40, 40, 40), alpha, dims="thw", generator=g, centre="inside").lam
                for _ in range(3000)]
        # E[lam0] = 1/2 for Beta(alpha, alpha); the rounding of each side is the only bias
        assert np.mean(lams) == pytest.approx(0.5, abs=0.02), alpha


def test_clipped_boxes_keep_more_than_lam0_on_average():
    g = gen(1)
    lams = [cutmix(torch.zeros(1, 1, 40, 40, 40), 1.0, dims="thw", generator=g).lam for _ in range(2000)]
    assert np.mean(lams) > 0.55       # clipping at borders only ever removes box volume


def test_lam0_follows_beta_alpha_alpha():
    g = gen(2)
    draws = np.array([sample_lam(0.4, g) for _ in range(4000)])
    assert draws.mean() == pytest.approx(0.5, abs=0.03)
    assert draws.var() == pytest.approx(1 / (4 * (2 * 0.4 + 1)), abs=0.02)   # Beta(a,a) variance


def test_input_cutmix_variants_cut_only_their_dimensions():
    x = torch.arange(2 * 3 * 8 * 6 * 6, dtype=torch.float32).view(2, 3, 8, 6, 6)
    spatial = cutmix(x, 1.0, dims="hw", generator=gen(3))
    temporal = cutmix(x, 1.0, dims="t", generator=gen(3))
    assert spatial.box.box[1] == slice(0, 8) and spatial.box.box[0] == slice(0, 3)
    assert temporal.box.box[2:] == (slice(0, 6), slice(0, 6))
    mix = mixup(x, 1.0, generator=gen(3))
    assert torch.allclose(mix.mixed, mix.lam * x + (1 - mix.lam) * x[mix.perm])


def test_partner_same_video_control():
    h1, h2 = torch.ones(4, 2, 2, 3, 3), torch.arange(4.).view(4, 1, 1, 1, 1).expand(4, 2, 2, 3, 3)
    out = cross_modal_cutmix(h1, h2, perm=torch.arange(4), generator=gen(4))
    assert torch.equal(out.perm, torch.arange(4))
    for i in range(4):
        assert torch.all(out.mixed[i][~out.box.mask((2, 2, 3, 3))] == i)


def test_resampling_when_layers_differ_and_error_when_off():
    h1 = torch.randn(2, 8, 4, 6, 6)
    h2 = torch.randn(2, 16, 8, 12, 12)
    out = cross_modal_cutmix(h1, h2, generator=gen(5))
    assert out.mixed.shape == h1.shape
    src = resample_like(h2, (8, 4, 6, 6))
    inside = ~out.box.mask((8, 4, 6, 6))
    assert torch.allclose(out.mixed[0][inside], src[out.perm[0]][inside])
    # channel resampling is an adaptive average: a constant map stays constant
    assert torch.allclose(resample_like(torch.full((1, 16, 8, 12, 12), 3.0), (8, 4, 6, 6)), torch.tensor(3.0))
    with pytest.raises(ValueError, match="resample=True"):
        cross_modal_cutmix(h1, h2, resample=False)


def test_skeleton_maps_and_persons_last_stgcn_maps():
    h1, h2 = torch.randn(3, 16, 10, 25), torch.randn(3, 16, 10, 25)
    out = cross_modal_cutmix(h1, h2, dims="ctv", generator=gen(6))
    assert out.mixed.shape == h1.shape
    # ST-GCN maps (B, C, T, V, M): cutting c, t, h (= V) gives both persons the same box
    g1, g2 = torch.zeros(3, 8, 6, 25, 2), torch.ones(3, 8, 6, 25, 2)
    out = cross_modal_cutmix(g1, g2, dims="cth", generator=gen(7))
    assert torch.equal(out.mixed[..., 0], out.mixed[..., 1])


@pytest.mark.parametrize("call, message", [
    (lambda: cross_modal_cutmix(torch.randn(2, 3, 4, 4, 4), torch.randn(3, 3, 4, 4, 4)), "batch sizes differ"),
    (lambda: cross_modal_cutmix(torch.randn(2, 3, 4), torch.randn(2, 3, 4)), "must be"),
    (lambda: cross_modal_cutmix(torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 4, 4, 4), alpha=0), "alpha must be a finite number > 0"),
    (lambda: cross_modal_mixup(torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 4, 4, 4), alpha=-1), "alpha must be a finite number > 0"),
    (lambda: cross_modal_cutmix(torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 4, 4, 4), dims="cxz"), "unknown: xz"),
    (lambda: cross_modal_cutmix(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), dims="cthw"), "unknown: hw"),
    (lambda: cutmix(torch.randn(2, 3, 4, 4, 4), perm=torch.tensor([0, 0])), "permutation"),
    (lambda: sample_tesseract((2, 3, 4, 4), 1.5), "lam must be in"),
])
def test_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_lam_samples_place_the_box_as_asked():
    shape = (64, 8, 16, 16)
    uniform = mixing.lam_samples(shape, 1.0, n=300, seed=0)
    inside = mixing.lam_samples(shape, 1.0, n=300, seed=0, centre="inside")
    # clipped boxes keep more of the map: the paper's uniform centre pushes the mean kept fraction up
    assert uniform.mean() > inside.mean() + 0.2 and abs(inside.mean() - 0.5) < 0.06
