"""``evaluate_run`` end to end: fabricated run folders (tiny preset, untrained small3d backbones)
on a small synthetic dataset written on the fly."""
import json

import pytest
import torch

from cmmc_lib import runs
from cmmc_lib.config import preset
from cmmc_lib.ssl.factory import load_backbone
from cmmc_lib.data.datasets import build_dataset
from cmmc_lib.data.synthetic import write_synthetic_dataset
from cmmc_lib.evaluate import evaluate_run, extract_features, format_result, retrieval_hit_rate
from cmmc_lib.evaluate import features as features_module
from cmmc_lib.models import build_backbone
from cmmc_lib.registry import MODALITIES


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """24 tiny synthetic videos: every class, 3 train groups (18 videos), 1 test group (6)."""
    root = tmp_path_factory.mktemp("synthetic") / "tiny"
    write_synthetic_dataset(root, "tiny", videos=24, progress=False)
    return root


def make_run(run_dir, data_root, modality, seed=0, extra=()):
    other = "flow" if modality == "rgb" else "rgb"
    cfg = preset("tiny", [f"data.root={data_root}", f"ssl.modality={modality}",
                          f"ssl.other_modality={other}", *extra])
    run = runs.RunFolder(run_dir)
    run.write_config(cfg)
    torch.manual_seed(seed)
    backbone = build_backbone(cfg.model.backbone, MODALITIES[modality].channels, width=cfg.model.width)
    run.save_checkpoint({"config": cfg.to_dict(), "backbone": backbone.state_dict()})
    return run_dir


@pytest.fixture(scope="module")
def rgb_and_flow_runs(tmp_path_factory, data_root):
    base = tmp_path_factory.mktemp("runs")
    return make_run(base / "rgb", data_root, "rgb"), make_run(base / "flow", data_root, "flow", seed=1)


def test_two_stream_retrieval_reports_each_stream_and_the_fusion(rgb_and_flow_runs):
    rgb, flow = rgb_and_flow_runs
    r = evaluate_run(rgb, "retrieval", other_run=flow, device="cpu", progress=False)
    assert r["protocol"] == "retrieval" and r["run"] == str(rgb) and r["other_run"] == str(flow)
    assert (r["num_queries"], r["num_gallery"]) == (6, 18)
    assert r["ks"] == [1, 5, 10] and r["ks_skipped"] == [20, 50]            # gallery of 18
    assert [s["modality"] for s in r["streams"]] == ["rgb", "flow"]
    for metrics in (*r["streams"], r["fused"]):
        values = [metrics[f"R@{k}"] for k in (1, 5, 10)]
        assert values == sorted(values) and all(0 <= v <= 1 for v in values)
    logged = [json.loads(line) for line in (rgb / runs.EVAL_FILE).read_text().splitlines()]
    assert logged[-1] == json.loads(json.dumps(r))                           # appended, JSON-clean
    assert len(list((rgb / "features").glob("*.pt"))) == 2                   # test + train, cached
    assert len(list((flow / "features").glob("*.pt"))) == 2
    summary = format_result(r).splitlines()
    fused = next(line for line in summary if line.startswith("two-stream"))
    assert f"R@1 {r['fused']['R@1']:.3f}" in fused and summary[-1] == "6 test videos evaluated, 18 train videos"


def test_retrieval_follows_the_protocol_and_reuses_cached_features(rgb_and_flow_runs, monkeypatch):
    rgb, _ = rgb_and_flow_runs
    first = evaluate_run(rgb, "retrieval", device="cpu", ks=(1, 5), progress=False, append=False)
    # the protocol by hand: gallery = train split, one window; queries = test split, eval windows
    backbone, cfg = load_backbone(rgb)
    gallery = extract_features(backbone, build_dataset(cfg.data, "train", False, ("rgb",), eval_windows=1),
                               "rgb", progress=False)
    queries = extract_features(backbone, build_dataset(cfg.data, "test", False, ("rgb",)), "rgb", progress=False)
    expected = retrieval_hit_rate(queries.feats, queries.labels, gallery.feats, gallery.labels, ks=(1, 5))
    assert first["streams"][0]["R@1"] == expected[1] and first["streams"][0]["R@5"] == expected[5]
    assert first["fused"] is None and first["other_run"] is None

    def no_recompute(*args, **kwargs):
        raise AssertionError("features should have come from the cache")

    monkeypatch.setattr(features_module, "compute_features", no_recompute)
    again = evaluate_run(rgb, "retrieval", device="cpu", ks=(1, 5), progress=False, append=False)
    assert again["streams"] == first["streams"]


def test_linear_probe_with_fusion(rgb_and_flow_runs):
    rgb, flow = rgb_and_flow_runs
    r = evaluate_run(rgb, "linear", other_run=flow, device="cpu", epochs=10, progress=False, append=False)
    assert r["epochs"] == 10 and r["milestones"] == [6, 8] and len(r["classes"]) == 6
    for metrics in (*r["streams"], r["fused"]):
        assert 0 <= metrics["top1"] <= metrics["top5"] <= 1
        confusion = torch.tensor(metrics["confusion"])
        assert confusion.shape == (6, 6) and confusion.sum() == 6
        assert confusion.diag().sum() / 6 == pytest.approx(metrics["top1"])
    assert r["streams"][0]["train_top1"] > 0.5                              # 18 videos, 64-d: it fits


def test_finetune_one_stream_with_ten_crop(rgb_and_flow_runs):
    rgb, _ = rgb_and_flow_runs
    r = evaluate_run(rgb, "finetune", device="cpu", epochs=1, batch_size=6, ten_crop=True,
                     progress=False, append=False)
    stream = r["streams"][0]
    assert r["ten_crop"] and r["fused"] is None and stream["epochs"] == 1
    assert stream["lr_backbone"] == pytest.approx(stream["lr_head"] / 10)
    assert torch.tensor(stream["confusion"]).sum() == r["num_test"] == 6


def test_two_stream_fine_tuning_says_how_it_fused(rgb_and_flow_runs):
    rgb, flow = rgb_and_flow_runs
    r = evaluate_run(rgb, "finetune", other_run=flow, device="cpu", epochs=1, batch_size=6, ten_crop=False,
                     progress=False, append=False)
    assert r["fusion"] == "probabilities" and 0 <= r["fused"]["top1"] <= 1
    assert [s["modality"] for s in r["streams"]] == ["rgb", "flow"]


def test_finetune_follows_its_own_schedule_not_the_pretraining_epochs(tmp_path, data_root):
    run = make_run(tmp_path / "r", data_root, "rgb", extra=["optim.epochs=7", "eval.finetune_epochs=3",
                                                           "eval.finetune_milestones=2", "eval.finetune_lr=0.01"])
    stream = evaluate_run(run, "finetune", device="cpu", batch_size=6, progress=False, append=False)["streams"][0]
    assert stream["epochs"] == 3 and stream["milestones"] == [2]          # not optim.epochs = 7
    assert stream["lr_per_epoch"] == pytest.approx([0.01, 0.01, 0.001])
    assert stream["lr_head"] == 0.01


def test_a_transfer_dataset_replaces_the_runs_own(rgb_and_flow_runs, tmp_path):
    rgb, _ = rgb_and_flow_runs
    other = tmp_path / "transfer"
    write_synthetic_dataset(other, "tiny", seed=5, videos=12, progress=False)
    r = evaluate_run(rgb, "retrieval", device="cpu", ks=(1,), progress=False, append=False,
                     data={"root": str(other), "synthetic_seed": 5})
    assert r["num_queries"] == 6 and r["num_gallery"] == 6 and r["data"]["synthetic_seed"] == 5
    with pytest.raises(ValueError, match="unknown DataConfig field"):
        evaluate_run(rgb, "retrieval", device="cpu", progress=False, append=False, data={"nope": 1})


def test_bad_requests_fail_with_one_clear_error(rgb_and_flow_runs, tmp_path, data_root):
    rgb, _ = rgb_and_flow_runs
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate_run(rgb, "knn", device="cpu")
    with pytest.raises(ValueError, match="unknown option.*: lr"):
        evaluate_run(rgb, "retrieval", device="cpu", lr=0.1)
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        evaluate_run(tmp_path / "nothing", "retrieval", device="cpu")
    other_split = make_run(tmp_path / "split2", data_root, "flow", extra=["data.split=2"])
    with pytest.raises(ValueError, match="different videos"):
        evaluate_run(rgb, "retrieval", other_run=other_split, device="cpu", progress=False, append=False)


def test_unreadable_test_videos_are_left_out_and_named_never_replaced(rgb_and_flow_runs, data_root, tmp_path):
    import shutil
    copy = tmp_path / "tiny"
    shutil.copytree(data_root, copy)
    test_videos = sorted(v for v in (copy / "videos").rglob("*_g01_*.mp4"))             # group 1 is the test split
    for bad in test_videos[:2]:
        bad.write_bytes(bad.read_bytes()[:200])                                          # cut short
    rgb, flow = rgb_and_flow_runs
    for protocol in ("retrieval", "linear"):
        r = evaluate_run(rgb, protocol, other_run=flow, device="cpu", progress=False, data={"root": str(copy)},
                         append=False, **({"epochs": 2} if protocol == "linear" else {}))
        assert r["num_test"] == 4 and r["skipped"]["test"] == sorted(v.stem for v in test_videos[:2])
        assert "SKIPPED 2 unreadable test video(s), not counted" in format_result(r)
    r = evaluate_run(rgb, "finetune", device="cpu", progress=False, data={"root": str(copy)}, epochs=1,
                     append=False)
    assert r["num_test"] == 4 and len(r["skipped"]["test"]) == 2
    sets = features_module.split_features(build_backbone("small3d", 3, 16), preset(
        "tiny", [f"data.root={copy}"]).data, "rgb", "test")[1]
    assert len(sets) == 4 and len(set(sets.videos)) == 4 and sorted(sets.skipped) == r["skipped"]["test"]

