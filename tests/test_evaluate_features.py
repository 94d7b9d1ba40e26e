"""Backbone features of a split: mean over windows, eval mode, the on-disk cache (and what it
refuses to load), and ``split_features`` on a small synthetic dataset."""
import logging
import os
import pathlib

import pytest
import torch

from _eval_fixtures import ChannelMeanBackbone, constant_window_dataset
from cmmc_lib.config import DataConfig
from cmmc_lib.data import datasets as datasets_module
from cmmc_lib.data.datasets import build_dataset
from cmmc_lib.data.synthetic import write_synthetic_dataset
from cmmc_lib.evaluate import FeatureCache, Features, extract_features, feature_cache_key, split_features
from cmmc_lib.files import UnsafeFileError, load_state, save_state


def test_feature_is_the_mean_over_windows_in_dataset_order():
    ds = constant_window_dataset([[1.0, 3.0], [2.0], [0.0, 4.0, 8.0]], labels=[2, 0, 1])
    backbone = ChannelMeanBackbone()
    f = extract_features(backbone, ds, "rgb", batch_size=2, progress=False, window_l2=False)
    assert isinstance(f, Features) and f.feats.dtype == torch.float32 and f.labels.dtype == torch.int64
    torch.testing.assert_close(f.feats, torch.tensor([[2.0] * 3, [2.0] * 3, [4.0] * 3]))
    assert f.labels.tolist() == [2, 0, 1] and f.videos == ["v000", "v001", "v002"]
    assert backbone.calls == 2 and backbone.clips == 6                # 2 batches, every window once
    # CoCLR's: each window L2-normalised before the mean (a zero window stays zero)
    unit = extract_features(ChannelMeanBackbone(), ds, "rgb", batch_size=2, progress=False)
    third = 3 ** -0.5
    torch.testing.assert_close(unit.feats, torch.tensor([[third] * 3, [third] * 3, [2 * third / 3] * 3]))


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
    assert not list(tmp_path.glob(".*tmp*"))                            # atomic write left no temp file


def test_stale_or_corrupt_cache_is_recomputed_with_a_warning(tmp_path, caplog):
    backbone = ChannelMeanBackbone()
    small = constant_window_dataset([[1.0], [2.0]])
    extract_features(backbone, small, "rgb", cache_dir=tmp_path, cache_key="k", progress=False)
    bigger = constant_window_dataset([[1.0], [2.0], [3.0]])
    with caplog.at_level(logging.WARNING):
        f = extract_features(backbone, bigger, "rgb", cache_dir=tmp_path, cache_key="k", progress=False)
    assert len(f) == 3 and f.feats[2, 0] == pytest.approx(3 ** -0.5) and "does not match the dataset" in caplog.text
    cache = tmp_path / "k.pt"
    whole = cache.read_bytes()
    good = load_state(cache)
    broken = {"truncated": whole[: len(whole) // 2], "empty": b"",
              "foreign": None}                                          # a torch file of something else
    for what, content in broken.items():
        if content is None:
            save_state({"weights": torch.ones(2)}, cache)
        else:
            cache.write_bytes(content)
        calls = backbone.calls
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            f = extract_features(backbone, bigger, "rgb", cache_dir=tmp_path, cache_key="k", progress=False)
        assert backbone.calls > calls and len(f) == 3, what
        assert "ignoring unreadable feature cache" in caplog.text and str(cache) in caplog.text, what
        assert torch.equal(load_state(cache)["feats"], good["feats"]), what    # rewritten, readable


class RunsCodeWhenUnpickled:
    """An attacker's payload: unpickling it calls ``pathlib.Path(marker).touch()``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def test_a_cache_file_holding_pickled_objects_is_refused_and_never_run(tmp_path):
    ds = constant_window_dataset([[1.0], [2.0]])
    backbone = ChannelMeanBackbone()
    marker = tmp_path / "pwned"
    payload = {"feats": RunsCodeWhenUnpickled(marker), "labels": torch.zeros(2), "videos": ["v000", "v001"],
               "version": 1}
    torch.save(payload, tmp_path / "k.pt")                            # what `torch.load` would execute
    with pytest.raises(UnsafeFileError, match=r"refusing to load .*k\.pt.*delete the file") as err:
        extract_features(backbone, ds, "rgb", cache_dir=tmp_path, cache_key="k", progress=False)
    assert len(str(err.value).splitlines()) == 1                        # one clear line
    assert not marker.exists() and backbone.calls == 0
    assert (tmp_path / "k.pt").read_bytes() != b""                      # left for a person to inspect

    import pickle
    (tmp_path / "raw.pt").write_bytes(pickle.dumps(payload))            # a raw pickle, not torch's zip format
    with pytest.raises(UnsafeFileError, match=r"refusing to load .*raw\.pt: it holds Python objects"):
        extract_features(backbone, ds, "rgb", cache_dir=tmp_path, cache_key="raw", progress=False)
    assert not marker.exists() and backbone.calls == 0
    assert (tmp_path / "raw.pt").read_bytes() == pickle.dumps(payload)                # not overwritten


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


# ----------------------------------------------------------------------------- split_features
@pytest.fixture(scope="module")
def data_cfg(tmp_path_factory):
    """12 tiny synthetic videos: 6 classes, split 1 = 6 train (group 2) and 6 test (group 1)."""
    root = tmp_path_factory.mktemp("synthetic") / "tiny"
    write_synthetic_dataset(root, "tiny", videos=12, progress=False)
    return DataConfig(root=str(root), eval_windows=3)


@pytest.fixture()
def checkpoint(tmp_path):
    return save_state({"backbone": {"w": torch.ones(3)}}, tmp_path / "run" / "checkpoints" / "last.pt")


def test_split_features_are_the_features_of_the_split_s_evaluation_dataset(data_cfg):
    ds, f = split_features(ChannelMeanBackbone(), data_cfg, "rgb", "test", batch_size=4)
    assert len(ds) == len(f) == 6 and not ds.train and ds.num_views == 3     # the config's windows
    assert f.videos == list(ds.videos) and f.labels.tolist() == list(ds.labels)
    by_hand = extract_features(ChannelMeanBackbone(), build_dataset(data_cfg, "test", False, ("rgb",)), "rgb",
                               progress=False)
    torch.testing.assert_close(f.feats, by_hand.feats)
    one_window, g = split_features(ChannelMeanBackbone(), data_cfg, "rgb", "train", eval_windows=1)
    assert one_window.num_views == 1 and len(g) == 6 and not set(g.videos) & set(f.videos)


def test_split_features_cache_is_keyed_by_checkpoint_and_clips(data_cfg, checkpoint, tmp_path):
    cache = FeatureCache(checkpoint, tmp_path / "features")
    backbone = ChannelMeanBackbone()
    _, first = split_features(backbone, data_cfg, "rgb", "test", cache=cache)
    calls = backbone.calls
    _, again = split_features(backbone, data_cfg, "rgb", "test", cache=cache)
    assert backbone.calls == calls and torch.equal(again.feats, first.feats)      # loaded, not run
    split_features(backbone, data_cfg, "rgb", "test", eval_windows=1, cache=cache)  # other clips
    split_features(backbone, data_cfg, "rgb", "train", cache=cache)                # other split
    save_state({"backbone": {"w": torch.zeros(3)}}, checkpoint)                     # retrained
    split_features(backbone, data_cfg, "rgb", "test", cache=cache)
    assert len(list(cache.folder.glob("*.pt"))) == 4 and backbone.calls > calls


def test_split_features_refuses_a_planted_payload_where_the_cache_is_read(data_cfg, checkpoint, tmp_path):
    cache = FeatureCache(checkpoint, tmp_path / "features")
    split_features(ChannelMeanBackbone(), data_cfg, "rgb", "test", cache=cache)
    (cached,) = cache.folder.glob("*.pt")
    marker = tmp_path / "pwned"
    torch.save({"feats": RunsCodeWhenUnpickled(marker)}, cached)
    with pytest.raises(UnsafeFileError, match=cached.name):
        split_features(ChannelMeanBackbone(), data_cfg, "rgb", "test", cache=cache)
    assert not marker.exists()


def test_split_features_reuses_a_dataset_it_returned(data_cfg, monkeypatch):
    ds, first = split_features(ChannelMeanBackbone(), data_cfg, "rgb", "test", eval_windows=1)

    def no_build(*args, **kwargs):
        raise AssertionError("the dataset should have been reused")

    monkeypatch.setattr(datasets_module, "build_dataset", no_build)
    same_ds, again = split_features(ChannelMeanBackbone(), data_cfg, "rgb", "test", eval_windows=1, dataset=ds)
    assert same_ds is ds and torch.equal(again.feats, first.feats)
    with pytest.raises(ValueError, match="built for other arguments"):
        split_features(ChannelMeanBackbone(), data_cfg, "rgb", "test", dataset=ds)    # 3 windows wanted
    with pytest.raises(ValueError, match="built for other arguments"):
        split_features(ChannelMeanBackbone(2), data_cfg, "flow", "test", eval_windows=1, dataset=ds)
