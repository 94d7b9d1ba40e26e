"""Backbone features of a split: mean over windows, eval mode, and the on-disk cache."""
import os

import pytest
import torch

from _eval_fixtures import ChannelMeanBackbone, constant_window_dataset
from cmmc_lib.evaluate import Features, extract_features, feature_cache_key


def test_feature_is_the_mean_over_windows_in_dataset_order():
    ds = constant_window_dataset([[1.0, 3.0], [2.0], [0.0, 4.0, 8.0]], labels=[2, 0, 1])
    backbone = ChannelMeanBackbone()
    f = extract_features(backbone, ds, "rgb", batch_size=2, progress=False)
    assert isinstance(f, Features) and f.feats.dtype == torch.float32 and f.labels.dtype == torch.int64
    torch.testing.assert_close(f.feats, torch.tensor([[2.0] * 3, [2.0] * 3, [4.0] * 3]))
    assert f.labels.tolist() == [2, 0, 1] and f.videos == ["v000", "v001", "v002"]
    assert backbone.calls == 2 and backbone.clips == 6                # 2 batches, every window once


def test_batch_size_does_not_change_features():
    g = torch.Generator().manual_seed(0)
    ds = constant_window_dataset(torch.randn(7, 3, generator=g).tolist())
    a = extract_features(ChannelMeanBackbone(), ds, "rgb", batch_size=1, progress=False)
    b = extract_features(ChannelMeanBackbone(), ds, "rgb", batch_size=5, progress=False)
    torch.testing.assert_close(a.feats, b.feats)


def test_backbone_runs_in_eval_mode_without_grad_and_mode_is_restored():
    backbone = ChannelMeanBackbone().train()
    f = extract_features(backbone, constant_window_dataset([[1.0], [2.0]]), "rgb", progress=False)
    assert backbone.modes == [False] and backbone.training
    assert not f.feats.requires_grad


def test_second_call_loads_the_cache_instead_of_running_the_backbone(tmp_path):
    ds = constant_window_dataset([[1.0, 2.0], [5.0], [7.0]])
    backbone = ChannelMeanBackbone()
    first = extract_features(backbone, ds, "rgb", cache_dir=tmp_path, cache_key="k1", progress=False)
    calls = backbone.calls
    assert calls > 0 and (tmp_path / "k1.pt").is_file()
    again = extract_features(backbone, ds, "rgb", cache_dir=tmp_path, cache_key="k1", progress=False)
    assert backbone.calls == calls                                      # nothing recomputed
    torch.testing.assert_close(again.feats, first.feats)
    assert again.videos == first.videos and torch.equal(again.labels, first.labels)
    # another key (another checkpoint or transform) computes afresh
    extract_features(backbone, ds, "rgb", cache_dir=tmp_path, cache_key="k2", progress=False)
    assert backbone.calls > calls
    assert not list(tmp_path.glob(".*tmp"))                             # atomic write left no temp file


def test_stale_or_corrupt_cache_is_recomputed(tmp_path):
    backbone = ChannelMeanBackbone()
    small = constant_window_dataset([[1.0], [2.0]])
    extract_features(backbone, small, "rgb", cache_dir=tmp_path, cache_key="k", progress=False)
    bigger = constant_window_dataset([[1.0], [2.0], [3.0]])
    f = extract_features(backbone, bigger, "rgb", cache_dir=tmp_path, cache_key="k", progress=False)
    assert len(f) == 3 and f.feats[2, 0] == 3.0
    (tmp_path / "k.pt").write_bytes(b"not a torch file")
    calls = backbone.calls
    f = extract_features(backbone, bigger, "rgb", cache_dir=tmp_path, cache_key="k", progress=False)
    assert backbone.calls > calls and len(f) == 3


def test_cache_key_follows_checkpoint_content_and_data_config(tmp_path):
    ckpt = tmp_path / "last.pt"
    torch.save({"backbone": {"w": torch.ones(3)}}, ckpt)
    data = {"clip_len": 8, "size": 32, "eval_windows": 4}
    key = feature_cache_key(ckpt, data, "test", "rgb")
    assert key == feature_cache_key(ckpt, dict(data), "test", "rgb")
    assert key.startswith("test-rgb-") and "/" not in key
    os.utime(ckpt, (1, 1))                                              # touching keeps the key
    assert feature_cache_key(ckpt, data, "test", "rgb") == key
    others = {feature_cache_key(ckpt, {**data, "eval_windows": 1}, "test", "rgb"),
              feature_cache_key(ckpt, data, "train", "rgb"),
              feature_cache_key(ckpt, data, "test", "flow")}
    torch.save({"backbone": {"w": torch.zeros(3)}}, ckpt)               # retrained
    others.add(feature_cache_key(ckpt, data, "test", "rgb"))
    assert key not in others and len(others) == 4
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        feature_cache_key(tmp_path / "missing.pt", data, "test", "rgb")


def test_bad_items_and_arguments_raise_clear_errors(tmp_path):
    ds = constant_window_dataset([[1.0]])
    with pytest.raises(ValueError, match="no 'flow' entry"):
        extract_features(ChannelMeanBackbone(), ds, "flow", progress=False)
    ds[0]["rgb"] = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"\(W, C, T, H, W\)"):
        extract_features(ChannelMeanBackbone(), ds, "rgb", progress=False)
    with pytest.raises(ValueError, match="cache_key"):
        extract_features(ChannelMeanBackbone(), ds, "rgb", cache_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="empty"):
        extract_features(ChannelMeanBackbone(), [], "rgb", progress=False)
