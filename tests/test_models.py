"""Backbones with a block API (S3D, small3d, ST-GCN), heads and the encoder."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from cmmc_lib.models import (S3D, STGCN, Encoder, LinearClassifier, ProjectionHead, Small3D,
                             build_backbone, build_encoder, ntu_spatial_adjacency)
from cmmc_lib.registry import BACKBONES

S3D_SHAPES_32x128 = [(64, 16, 64, 64), (192, 16, 32, 32), (480, 16, 16, 16), (832, 8, 8, 8),
                     (1024, 4, 4, 4)]


@pytest.fixture(scope="module")
def s3d_rgb():
    torch.manual_seed(0)
    return S3D(in_channels=3).eval()


# --- S3D --------------------------------------------------------------------------------------

def test_s3d_block_shapes_match_coclr_layout_for_32x128x128(s3d_rgb):
    assert s3d_rgb.num_blocks == 5 and s3d_rgb.feat_dim == 1024
    assert s3d_rgb.block_shapes((3, 32, 128, 128)) == S3D_SHAPES_32x128


def test_s3d_for_two_channel_flow_has_the_same_block_shapes():
    flow = S3D(in_channels=2)                # in training mode: block_shapes must not touch BN state
    assert flow.in_channels == 2
    assert flow.block_shapes((2, 32, 128, 128)) == S3D_SHAPES_32x128
    assert all(int(m.num_batches_tracked) == 0 for m in flow.modules() if isinstance(m, torch.nn.BatchNorm3d))


def test_s3d_real_forward_matches_block_shapes_and_composes(s3d_rgb):
    x = torch.randn(2, 3, 8, 64, 64)
    expected = s3d_rgb.block_shapes((3, 8, 64, 64))
    assert expected == [(64, 4, 32, 32), (192, 4, 16, 16), (480, 4, 8, 8), (832, 2, 4, 4), (1024, 1, 2, 2)]
    with torch.no_grad():
        full = s3d_rgb(x)
        h = x
        for k in range(s3d_rgb.num_blocks + 1):
            assert torch.allclose(s3d_rgb.forward_from(h, k), full, atol=1e-5, rtol=1e-4), k
            if k < s3d_rgb.num_blocks:
                h = s3d_rgb.blocks[k](h)
                assert tuple(h.shape[1:]) == expected[k]
    assert full.shape == (2, 1024)


def test_s3d_uses_pytorch_default_batchnorm(s3d_rgb):
    bns = [m for m in s3d_rgb.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert bns and all(m.momentum == 0.1 and m.eps == 1e-5 for m in bns)


def test_block_shapes_reports_too_small_inputs(s3d_rgb):
    with pytest.raises(ValueError, match="too small for block 5"):
        s3d_rgb.block_shapes((3, 4, 64, 64))
    with pytest.raises(ValueError, match="in_channels=3"):
        s3d_rgb.block_shapes((2, 8, 64, 64))


# --- small3d ----------------------------------------------------------------------------------

@pytest.mark.parametrize("width,clip,expected", [
    (16, (3, 8, 32, 32), [(16, 8, 16, 16), (32, 8, 8, 8), (64, 4, 4, 4), (128, 2, 2, 2)]),
    (24, (3, 8, 40, 40), [(24, 8, 20, 20), (48, 8, 10, 10), (96, 4, 5, 5), (192, 2, 3, 3)]),
    (16, (2, 8, 32, 32), [(16, 8, 16, 16), (32, 8, 8, 8), (64, 4, 4, 4), (128, 2, 2, 2)]),
])
def test_small3d_block_shapes(width, clip, expected):
    net = Small3D(in_channels=clip[0], width=width)
    assert net.num_blocks == 4 and net.feat_dim == 8 * width
    assert net.block_shapes(clip) == expected
    h = torch.randn(2, *clip)
    for block, shape in zip(net.blocks, expected):      # the real forward agrees with the meta one
        h = block(h)
        assert tuple(h.shape[1:]) == shape


def assert_blocks_compose(net, x, atol):
    """forward_from(forward_until(x, k), k) == forward(x) for every k. Returns forward(x)."""
    with torch.no_grad():
        full = net(x)
        for k in range(net.num_blocks + 1):
            h = net.forward_until(x, k)
            assert torch.allclose(net.forward_from(h, k), full, atol=atol), k
    return full


def test_small3d_forward_until_then_from_equals_forward_for_every_k():
    torch.manual_seed(0)
    net = Small3D(3, width=8).eval()
    x = torch.randn(3, 3, 8, 32, 32)
    full = assert_blocks_compose(net, x, atol=1e-6)
    assert torch.equal(net.forward_until(x, 0), x)
    assert full.shape == (3, 64)


@pytest.mark.parametrize("k", [-1, 5, 2.0, None])
def test_bad_block_index_raises_value_error_naming_the_range(k):
    net = Small3D(3, width=4)
    x = torch.randn(2, 3, 4, 16, 16)
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        net.forward_until(x, k)
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        net.forward_from(x, k)


def test_build_backbone_by_name():
    assert isinstance(build_backbone("small3d", 2, width=8), Small3D)
    assert build_backbone("small3d", 2, width=8).feat_dim == 64
    assert isinstance(build_backbone("stgcn", 3), STGCN)
    with pytest.raises(ValueError, match="unknown backbone 'resnet'"):
        build_backbone("resnet", 3)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_the_registry_knows_each_backbones_block_count(name):
    # validate() checks ssl.layer_k against these counts without building a network
    assert build_backbone(name, 3, width=4).num_blocks == BACKBONES[name].num_blocks


# --- ST-GCN -----------------------------------------------------------------------------------

def test_stgcn_is_skeletonclr_sized_with_persons_last():
    net = STGCN(in_channels=3, width=16)
    shapes = net.block_shapes((3, 50, 25, 2))
    channels = [s[0] for s in shapes]
    assert channels == [16, 16, 16, 16, 32, 32, 32, 64, 64, 256]
    assert [s[1] for s in shapes] == [50] * 4 + [25] * 3 + [13] * 3
    assert all(s[2:] == (25, 2) for s in shapes)
    assert net.num_blocks == 10 and net.feat_dim == 256


def test_stgcn_real_forward_composes_and_treats_persons_alike():
    torch.manual_seed(0)
    net = STGCN(3, width=4).eval()
    x = torch.randn(2, 3, 12, 25, 2)
    full = assert_blocks_compose(net, x, atol=1e-5)
    with torch.no_grad():
        h = net.forward_until(x, 3)
        h_swapped = net.forward_until(x.flip(-1), 3)     # swap the two persons
    assert full.shape == (2, 64)
    assert h.shape == (2, 4, 12, 25, 2)
    assert torch.allclose(h_swapped, h.flip(-1), atol=1e-6)


def test_ntu_adjacency_spatial_partition():
    a = ntu_spatial_adjacency()
    assert a.shape == (3, 25, 25)
    # every joint's incoming weights sum to 1 (degree-normalised); 25 self links + 2 x 24 bones
    assert torch.allclose(a.sum(0).sum(0), torch.ones(25))
    assert int((a.sum(0) > 0).sum()) == 25 + 2 * 24
    assert torch.equal(a[0], torch.diag(torch.diag(a[0])))   # partition 0 is the root itself


# --- heads and encoder ------------------------------------------------------------------------

def test_projection_head_and_classifier_shapes():
    head = ProjectionHead(1024, 1024, 128)
    assert head(torch.randn(4, 1024)).shape == (4, 128)
    assert [type(m).__name__ for m in head.net] == ["Linear", "ReLU", "Linear"]
    clf = LinearClassifier(64, 10, dropout=0.5, batchnorm=True)
    assert clf(torch.randn(4, 64)).shape == (4, 10)
    assert clf.norm.weight is None                          # BN without learned affine
    with pytest.raises(ValueError, match="dropout"):
        LinearClassifier(64, 10, dropout=1.0)


def test_encoder_outputs_unit_vectors_and_composes():
    torch.manual_seed(0)
    enc = build_encoder("small3d", 3, width=4, proj_hidden=32, proj_dim=16).eval()
    assert isinstance(enc, Encoder) and enc.dim == 16
    x = torch.randn(3, 3, 4, 16, 16)
    with torch.no_grad():
        z = enc(x)
        for k in range(enc.num_blocks + 1):
            assert torch.allclose(enc.forward_from(enc.forward_until(x, k), k), z, atol=1e-6)
    assert z.shape == (3, 16)
    assert torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-5)
    expected = F.normalize(enc.head(enc.backbone(x)), dim=1)
    assert torch.allclose(z, expected)


def test_models_package_does_not_import_data():
    code = "import sys, cmmc_lib.models; print('cmmc_lib.data' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
