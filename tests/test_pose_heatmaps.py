"""Pose, RGB + Pose route: keypoints rendered as heatmap volumes in the view's crop (one channel
per body part), on the synthetic data and on NTU's aligned RGB + skeleton pair; the heatmap
modality trains with CMMC against RGB; the CLI reads skeleton data."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cmmc_lib.cli import main
from cmmc_lib.config import DataConfig, preset
from cmmc_lib.data.datasets import build_dataset
from cmmc_lib.data.transforms import ViewParams, transform_heatmap
from cmmc_lib.registry import MODALITIES, SKELETON_LAYOUTS
from tests._gen_fixtures import require_realdata


def _part_of(layout):
    return {j: p for p, members in enumerate(layout.parts) for j in members}


def _assert_peaks_on_joints(heat: torch.Tensor, pose: torch.Tensor, layout, sigma: float = 1.0,
                            flipped: bool = False) -> int:
    """Every visible joint's pixel (from the pose item, [-1, 1] crop coordinates) carries at least
    the Gaussian's value half a pixel off in x and y, in its part's channel (``flipped``: the
    mirrored part's, as a flipped view swaps left and right). heat (P, T, S, S); pose (3, T, J[, M])."""
    size = heat.shape[-1]
    part = _part_of(layout)
    floor = math.exp(-(0.5 ** 2 + 0.5 ** 2) / (2 * sigma ** 2)) - 1e-4
    pose = pose if pose.ndim == 4 else pose[..., None]
    checked = 0
    for t in range(pose.shape[1]):
        for j in range(pose.shape[2]):
            for m in range(pose.shape[3]):
                x, y, conf = pose[:, t, j, m].tolist()
                if conf < 1:                                  # hidden, outside the crop, or inferred
                    continue
                col, row = round((x + 1) / 2 * size - 0.5), round((y + 1) / 2 * size - 0.5)
                channel = layout.mirror[part[j]] if flipped else part[j]
                assert heat[channel, t, row, col] >= floor, (t, j, m, float(heat[channel, t, row, col]))
                checked += 1
    return checked


def test_heatmaps_land_on_the_joints_pixels(tiny_root):
    cfg = preset("tiny", [f"data.root={tiny_root}"])
    layout = SKELETON_LAYOUTS["synthetic15"]
    test = build_dataset(cfg.data, "test", False, ("rgb", "heatmap", "pose"))
    train = build_dataset(cfg.data, "train", True, ("heatmap", "pose"), seed=1)
    for item in (test[0], test[7]):                          # evaluation views: centre crop, no flip
        heat = item["heatmap"]
        assert heat.shape[1] == MODALITIES["heatmap"].channels == len(layout.parts) == 5
        assert heat.dtype == torch.float32 and 0 <= float(heat.min()) and float(heat.max()) <= 1
        checked = sum(_assert_peaks_on_joints(heat[v], item["pose"][v], layout) for v in range(heat.shape[0]))
        assert checked > 50
    flips = 0
    for i in range(12):                                        # training views: random crops and flips
        item = train[i]
        for v in range(2):
            try:
                _assert_peaks_on_joints(item["heatmap"][v], item["pose"][v], layout)
            except AssertionError:
                _assert_peaks_on_joints(item["heatmap"][v], item["pose"][v], layout, flipped=True)
                flips += 1
    assert 0 < flips < 24
    assert float(test[0]["heatmap"].mean()) < 0.1                # Gaussians, not a wash


def test_a_flipped_view_mirrors_the_maps_and_swaps_left_and_right():
    layout = SKELETON_LAYOUTS["synthetic15"]
    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(5, 55, (3, 15, 2)), np.ones((3, 15, 1))], axis=-1).astype(np.float32)
    box = (0.1, 0.05, 0.8, 0.9)
    plain = transform_heatmap(kp, ViewParams(box), (60, 80), 24, layout)
    flipped = transform_heatmap(kp, ViewParams(box, flip=True), (60, 80), 24, layout)
    for p in range(5):
        torch.testing.assert_close(flipped[p], plain[layout.mirror[p]].flip(-1), atol=1e-5, rtol=0)
    assert not torch.allclose(flipped[1], plain[1].flip(-1))     # the left arm channel now shows the other arm
    limbs = transform_heatmap(kp, ViewParams(box), (60, 80), 24, layout, limbs=True)
    assert torch.all(limbs >= plain - 1e-6) and float(limbs.sum()) > float(plain.sum())


@pytest.mark.realdata
def test_real_rgb_and_pose_pair_gives_aligned_heatmaps():
    root = require_realdata("ntu60", "rgb").parent
    d = DataConfig(dataset="ntu60", root=str(root), split=1, clip_len=4, stride=8, short_side=72, size=64,
                   eval_windows=2)
    ds = build_dataset(d, "train", False, ("rgb", "heatmap", "pose"))
    assert ds.videos == ["S001C001P001R001A001"] and ds.labels == [0]   # the one video with RGB, cross-subject train
    item = ds[0]
    assert item["rgb"].shape == (2, 3, 4, 64, 64) and item["heatmap"].shape == (2, 5, 4, 64, 64)
    assert item["pose"].shape == (2, 3, 4, 25, 2)                 # two person slots, the second empty
    assert torch.all(item["pose"][:, 2, ..., 1] == 0)             # no confidence: no Gaussian
    checked = sum(_assert_peaks_on_joints(item["heatmap"][v], item["pose"][v], SKELETON_LAYOUTS["ntu25"])
                  for v in range(2))
    assert checked > 100
    # the person stands in the middle of the 1920 x 1080 frame: the trunk is in the centre crop
    trunk = item["heatmap"][:, 0].amax(dim=(0, 1))
    rows, cols = torch.nonzero(trunk > 0.5, as_tuple=True)
    assert len(rows) and 8 < float(cols.float().mean()) < 56


def test_heatmap_network_trains_with_cmmc_against_rgb(tiny_root, tmp_path):
    from cmmc_lib.train import pretrain
    for modality, other in (("rgb", "heatmap"), ("heatmap", "rgb")):
        cfg = preset("tiny", [f"data.root={tiny_root}", "ssl.method=cmmc", f"ssl.modality={modality}",
                              f"ssl.other_modality={other}", "run.max_steps=2", "run.knn_every=0", "run.progress=false"])
        out = pretrain(cfg, tmp_path / modality)
        assert out["steps"] == 2 and math.isfinite(out["final_loss"])
    from cmmc_lib.ssl.factory import load_backbone
    backbone, saved = load_backbone(tmp_path / "heatmap")
    assert backbone.in_channels == 5 and saved.ssl.other_modality == "rgb"


def test_cli_pretrains_a_skeleton_stream_and_checks_ntu(tiny_root, tmp_path, capsys):
    rc = main(["pretrain", "--preset", "tiny", "--modality", "motion", "--run-dir", str(tmp_path / "m"), "--json",
               f"data.root={tiny_root}", "run.max_steps=2", "knn_every=0"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["steps"] == 2
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["model"]["backbone"] == "stgcn" and saved["ssl"]["modality"] == "motion"
    assert main(["pretrain", "--preset", "tiny", "--modality", "joint", "model.backbone=small3d"]) == 2
    assert "reads video input, not 'joint'" in capsys.readouterr().err


@pytest.mark.realdata
def test_cli_checks_the_real_ntu_root(capsys):
    root = require_realdata("ntu60", "skeletons").parent
    rc = main(["data", "check", "--dataset", "ntu60", "--root", str(root), "--decode", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 1                                          # four files of 56880: incomplete, by design
    assert report["sources"]["skeletons"] == 4 and report["sources"]["rgb_videos"] == 1
    assert report["sources"]["training_reads"] == "skeletons"
    assert report["subsets"]["xsub/train"]["found"] == 2 and report["subsets"]["xsub/train"]["unreadable"] == 0
