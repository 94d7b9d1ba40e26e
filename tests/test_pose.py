"""Pose, skeleton route: the skeleton datasets (synthetic poses, NTU-60 raw files, preprocessed
arrays and trusted pickles), ST-GCN on the synthetic graph, the skeleton face of the presets,
skeleton CMMC (persons never mixed across samples), SkeletonCLR training and evaluation."""
from __future__ import annotations

import json
import pathlib
import pickle

import numpy as np
import pytest
import torch

from cmmc_lib import mixing
from cmmc_lib.config import SKELETON_SETTINGS, DataConfig, preset
from cmmc_lib.data.datasets import build_dataset
from cmmc_lib.data.render import BONES, JOINT_NAMES
from cmmc_lib.data.skeleton import resize_frames, skeleton_stream
from cmmc_lib.data.skeleton_clips import SkeletonClips
from cmmc_lib.models import build_backbone, build_encoder
from cmmc_lib.models.stgcn import spatial_adjacency
from cmmc_lib.registry import SKELETON_LAYOUTS, skeleton_layout
from cmmc_lib.ssl.factory import build_method, layout_for, mix_dims
from tests._gen_fixtures import require_realdata
from tests.test_data_skeleton import format_skeleton


def _cfg(root, *overrides, profile="tiny"):
    return preset(profile, ["ssl.modality=joint", f"data.root={root}", *overrides])


# ----------------------------------------------------------------------------- layouts and graph
def test_the_synthetic_layout_is_the_renderers_skeleton():
    spec = SKELETON_LAYOUTS["synthetic15"]
    assert spec.num_joints == len(JOINT_NAMES)
    assert {frozenset(b) for b in spec.bones} == {frozenset(b) for b in BONES}
    assert sorted(j for part in spec.parts for j in part) == list(range(15))
    ntu = SKELETON_LAYOUTS["ntu25"]
    assert sorted(j for part in ntu.parts for j in part) == list(range(25))
    for s in (spec, ntu):                                    # mirroring twice is the identity
        assert [s.mirror[s.mirror[p]] for p in range(len(s.parts))] == list(range(len(s.parts)))
    assert skeleton_layout("synthetic") is spec and skeleton_layout("ntu60") is ntu
    with pytest.raises(ValueError, match="no skeletons"):
        skeleton_layout("ucf101")


def test_stgcn_builds_the_graph_of_the_dataset_layout():
    a = spatial_adjacency("synthetic15")
    assert a.shape == (3, 15, 15)
    assert torch.allclose(a.sum(0).sum(0), torch.ones(15))
    assert int((a.sum(0) > 0).sum()) == 15 + 2 * 14
    net = build_backbone("stgcn", 3, width=4, layout="synthetic15")
    assert net.block_shapes((3, 24, 15, 1))[-1] == (64, 6, 15, 1)
    with pytest.raises(ValueError, match="15 joints but the input has 25"):
        net(torch.randn(1, 3, 8, 25, 1))
    enc = build_encoder("stgcn", 3, 4, 32, 16, layout="ntu25")
    w = enc.head.net[0].weight.detach()                      # SkeletonCLR's N(0, 0.02) initialisation
    assert abs(float(w.std()) - 0.02) < 0.005 and float(enc.head.net[0].bias.detach().abs().max()) == 0


# ----------------------------------------------------------------------------- the presets' skeleton face
def test_naming_a_skeleton_stream_selects_the_presets_skeleton_settings():
    for name in ("tiny", "cpu", "paper"):
        cfg = preset(name, ["ssl.modality=motion"])
        assert (cfg.model.backbone, cfg.optim.optimizer, cfg.ssl.modality, cfg.ssl.other_modality) == \
            ("stgcn", "sgd", "motion", "joint")
        assert cfg.preset == name and cfg.eval.probe_features == "raw" and cfg.eval.probe_lr == 3.0
    paper = preset("paper", ["schedule.modalities=joint,motion"])
    assert paper.data.dataset == "ntu60" and paper.data.skeleton_frames == 50
    assert (paper.ssl.queue_size, paper.ssl.momentum, paper.ssl.temperature) == (32768, 0.999, 0.07)
    assert (paper.optim.lr, paper.optim.weight_decay, paper.optim.batch_size, paper.optim.epochs,
            paper.optim.milestones) == (0.1, 1e-4, 128, 300, (250,))
    assert (paper.model.width, paper.model.proj_hidden, paper.model.proj_dim) == (16, 256, 128)
    assert preset("cpu").model.backbone == "small3d"                        # the video face is untouched
    assert preset("cpu", ["ssl.modality=joint", "model.width=8"]).model.width == 8   # overrides win
    assert set(SKELETON_SETTINGS) == {"tiny", "cpu", "paper"}


@pytest.mark.parametrize("overrides, message", [
    (["ssl.modality=joint", "model.backbone=small3d"], "reads video input, not 'joint'"),
    (["ssl.modality=joint", "data.dataset=ucf101"], "carries no 'joint'"),
    (["ssl.modality=heatmap", "data.dataset=hmdb51"], "carries no 'heatmap'"),
    (["ssl.modality=pose"], "not available"),
    (["model.backbone=stgcn"], "reads skeleton input, not 'rgb'"),
    (["ssl.modality=joint", "ssl.cut_dims=cthw"], "ssl.cut_dims='cthw' must be distinct letters from 'ctv'"),
    (["ssl.modality=joint", "ssl.input_cut_dims=thw"], "from 'tv'"),
    (["ssl.modality=joint", "ssl.layer_k=10"], "choose 1..9"),
    (["schedule.modalities=joint,rgb"], "reads skeleton input, not 'rgb'"),
    (["ssl.modality=joint", "data.split=3", "data.dataset=ntu60"], "splits 1..2"),
    (["optim.optimizer=lamb"], "optim.optimizer must be one of adam, sgd"),
    (["eval.probe_features=l2"], "eval.probe_features"),
    (["ssl.modality=joint", "data.ntu_source=csv"], "data.ntu_source"),
])
def test_validate_refuses_what_cannot_run(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        preset("tiny", overrides)


# ----------------------------------------------------------------------------- synthetic poses
def test_synthetic_skeleton_items_share_one_view_across_streams(tiny_root):
    cfg = _cfg(tiny_root)
    ds = build_dataset(cfg.data, "train", True, ("joint", "motion", "bone"), seed=3)
    assert isinstance(ds, SkeletonClips) and len(ds) == 54 and ds.classes[0] == "Wave"
    item = ds[5]
    assert item["joint"].shape == (2, 3, 24, 15, 1) and item["joint"].dtype == torch.float32
    assert set(item) == {"joint", "motion", "bone", "label", "index", "video", "group", "source"}
    parents = np.array(SKELETON_LAYOUTS["synthetic15"].parents)
    for v in range(2):                    # motion and bone are those of the same augmented joints
        joint = item["joint"][v].numpy()
        np.testing.assert_allclose(item["motion"][v].numpy(), skeleton_stream(joint, "motion"), atol=1e-6)
        np.testing.assert_allclose(item["bone"][v].numpy(), skeleton_stream(joint, "bone", parents), atol=1e-6)
    assert not torch.allclose(item["joint"][0], item["joint"][1])                 # two different views
    again = build_dataset(cfg.data, "train", True, ("joint",), seed=3)[5]
    torch.testing.assert_close(again["joint"], item["joint"], rtol=0, atol=0)      # (seed, epoch, index)
    ds.set_epoch(1)
    assert not torch.allclose(ds[5]["joint"], item["joint"])
    test = build_dataset(cfg.data, "test", False, ("joint",))
    assert len(test) == 18 and test[0]["joint"].shape == (1, 3, 24, 15, 1)
    np.testing.assert_array_equal(test[0]["joint"][0].numpy(), test.sample(0))    # eval: no augmentation
    assert set(test.groups) == {1} and set(ds.groups) == {2, 3, 4}


def test_skeleton_and_video_streams_are_never_one_dataset(tiny_root):
    with pytest.raises(ValueError, match="mix skeleton streams and video clips"):
        build_dataset(_cfg(tiny_root).data, "train", True, ("joint", "rgb"))


# ----------------------------------------------------------------------------- NTU-60
@pytest.mark.realdata
def test_real_ntu_files_give_two_person_samples_by_protocol():
    root = require_realdata("ntu60", "skeletons").parent
    d = DataConfig(dataset="ntu60", root=str(root), split=1)
    train = build_dataset(d, "train", True, ("joint", "motion"), seed=0)
    assert train.videos == ["S001C001P001R001A001", "S001C001P001R001A011"] and train.labels == [0, 10]
    item = train[0]
    assert item["joint"].shape == (2, 3, 50, 25, 2)
    assert torch.all(item["joint"][..., 1] == 0)                 # one actor: the second person is zeros
    assert np.allclose(train.sample(0)[:, :, 1, 0], 0, atol=1e-6)   # centred on the spine (NTU joint 2)
    xview = build_dataset(DataConfig(dataset="ntu60", root=str(root), split=2), "train", False, ("joint",))
    assert xview.videos == ["S004C002P003R001A017"]              # camera 2 trains in cross-view
    assert xview.sources == [0] and xview.groups == [3]


def test_two_bodies_of_a_skeleton_file_become_the_two_persons(tmp_path):
    rng = np.random.default_rng(0)
    frames = [[(1, rng.normal(0, 0.3, (25, 3)) + [0, 0, 3]), (2, rng.normal(0, 0.6, (25, 3)) + [1, 0, 3])]
              for _ in range(30)]
    (tmp_path / "skeletons").mkdir()
    for name in ("S001C001P001R001A050", "S001C002P002R001A050", "S001C001P003R001A051"):
        (tmp_path / "skeletons" / f"{name}.skeleton").write_text(format_skeleton(frames), newline="")
    ds = build_dataset(DataConfig(dataset="ntu60", root=str(tmp_path)), "train", False, ("joint",))
    assert len(ds) == 2 and ds.labels == [49, 49]
    x = ds[0]["joint"][0]
    assert x.shape == (3, 50, 25, 2) and x[..., 0].abs().sum() > 0 and x[..., 1].abs().sum() > 0
    # the more active body (2) is person 0; persons are centred on person 0's spine
    assert torch.allclose(x[:, :, 1, 0], torch.zeros(3, 50), atol=1e-5)
    assert float(x[0, :, :, 1].mean()) < -0.5                    # person 1 stands 1 m to the -x side of it


def test_preprocessed_arrays_layout_and_pickles_only_when_trusted(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    (tmp_path / "xsub").mkdir()
    data = np.zeros((4, 3, 300, 25, 2), np.float32)
    data[:, :, :80] = rng.normal(size=(4, 3, 80, 25, 2))         # ST-GCN pads with zeros to 300
    np.save(tmp_path / "xsub" / "train_data_joint.npy", data)
    np.save(tmp_path / "xsub" / "train_label.npy", np.array([3, 1, 0, 2]))
    np.save(tmp_path / "xsub" / "val_data_joint.npy", data[:2])
    with open(tmp_path / "xsub" / "val_label.pkl", "wb") as fh:  # ST-GCN's (names, labels)
        pickle.dump((["S001C001P003R001A004.skeleton", "S001C002P003R001A002.skeleton"], [3, 1]), fh)
    d = DataConfig(dataset="ntu60", root=str(tmp_path), split=1, skeleton_frames=20)
    monkeypatch.delenv("CMMC_TRUST_PICKLE", raising=False)
    train = build_dataset(d, "train", True, ("joint", "bone"))
    assert train.src.kind == "arrays" and train.labels == [3, 1, 0, 2]
    assert train[0]["bone"].shape == (2, 3, 20, 25, 2)
    with pytest.raises(ValueError, match="trust_pickle"):
        build_dataset(d, "test", False, ("joint",))
    monkeypatch.setenv("CMMC_TRUST_PICKLE", "1")              # what --trust-pickle sets for one command
    test = build_dataset(d, "test", False, ("joint",))
    assert test.videos == ["S001C001P003R001A004", "S001C002P003R001A002"] and test.groups == [3, 3]
    assert test.sources[0] != test.sources[1]
    np.testing.assert_allclose(test.sample(0), resize_frames(data[0], 20), atol=1e-6)   # its 80 valid frames -> 20
    assert test.sample(0).shape == (3, 20, 25, 2)
    from cmmc_lib.data.check import check_dataset
    report = check_dataset("ntu60", tmp_path, trust_pickle=True)
    assert report["sources"]["training_reads"] == "arrays"
    assert report["subsets"]["xsub/train"]["found"] == 4 and report["subsets"]["xsub/test"]["found"] == 2
    assert report["subsets"]["xview/train"]["unreadable"] == 1 and not report["ok"]


@pytest.mark.realdata
def test_real_preprocessed_pickle_splits_by_sample_name(monkeypatch):
    pkl = require_realdata("ntu60", "preprocessed", "xview_tiny_data.pkl")
    root = pkl.parents[1]
    d = DataConfig(dataset="ntu60", root=str(root), split=2, ntu_source="pickle")
    monkeypatch.delenv("CMMC_TRUST_PICKLE", raising=False)
    with pytest.raises(ValueError, match="trust_pickle"):
        build_dataset(d, "test", False, ("joint",))
    monkeypatch.setenv("CMMC_TRUST_PICKLE", "1")
    test = build_dataset(d, "test", False, ("joint", "motion"))
    assert len(test) == 10 and test.labels == list(range(10))      # all filmed by camera 1: the xview test view
    item = test[3]
    assert item["joint"].shape == (1, 3, 50, 25, 2) and item["video"] == "S001C001P001R001A004"
    with pytest.raises(ValueError, match="no skeleton samples"):
        build_dataset(d, "train", False, ("joint",))


# ----------------------------------------------------------------------------- skeleton CMMC
def test_skeleton_cmmc_cuts_one_box_for_both_persons_and_pairs_samples_not_persons(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    (tmp_path / "skeletons").mkdir()
    for k in range(4):
        frames = [[(1, rng.normal(0, 0.3, (25, 3)) + [0, 0, 3]), (2, rng.normal(0, 0.5, (25, 3)) + [1, 0, 3])]
                  for _ in range(20)]
        (tmp_path / "skeletons" / f"S001C001P001R00{k + 1}A050.skeleton").write_text(format_skeleton(frames),
                                                                                     newline="")
    cfg = preset("tiny", ["ssl.method=cmmc", "ssl.modality=joint", f"data.root={tmp_path}", "data.dataset=ntu60",
                          "optim.batch_size=4", "ssl.layer_k=3"])
    assert mix_dims(cfg) == ("cth", "th") and layout_for(cfg) == "ntu25"
    step = build_method(cfg)
    seen = {}
    real = step.mixer.mix
    assert real is mixing.cross_modal_cutmix

    def spy(h1, h2, **kw):
        out = real(h1, h2, **kw)
        seen.update(h1=h1.detach(), h2=h2.detach(), out=out)
        return out

    monkeypatch.setattr(step.mixer, "mix", spy)
    ds = build_dataset(cfg.data, "train", True, ("joint", "motion"))
    batch = {m: torch.stack([ds[i][m] for i in range(4)]) for m in ("joint", "motion")}
    for seed in range(3):
        step.train()
        loss, stats = step.loss(batch, torch.Generator().manual_seed(seed))
        h1, h2, out = seen["h1"], seen["h2"], seen["out"]
        assert h1.shape[-1] == 2 and out.box.box[3] == slice(0, 2)          # persons uncut
        keep = out.box.mask(h1.shape[1:])
        assert torch.equal(keep[..., 0], keep[..., 1])                       # one box for both persons
        for i in range(4):
            for m in range(2):                                               # person m of sample i gets
                torch.testing.assert_close(out.mixed[i, ..., m][keep[..., m]], h1[i, ..., m][keep[..., m]])
                torch.testing.assert_close(out.mixed[i, ..., m][~keep[..., m]],   # person m of perm[i]
                                           h2[out.perm[i], ..., m][~keep[..., m]])
        assert torch.isfinite(loss) and 0 <= stats["lam"] <= 1


# ----------------------------------------------------------------------------- training and evaluation
def test_skeleton_pipeline_trains_alternately_and_two_streams_fuse_logits(tiny_root, tmp_path):
    from cmmc_lib.evaluate.runner import evaluate_run
    from cmmc_lib.pipeline import run_pipeline
    from cmmc_lib.runs import RunFolder
    from cmmc_lib.ssl.factory import load_backbone
    cfg = _cfg(tiny_root, "optim.epochs=1", "schedule.cycles=1", "run.progress=false", "run.knn_every=0")
    cfg.ssl.method = "cmmc"
    result = run_pipeline(cfg, tmp_path / "pipe")
    assert [s["name"] for s in result["stages"]] == ["stage1-joint", "stage1-motion", "cycle1-joint", "cycle1-motion"]
    run = RunFolder(result["final"]["joint"])
    saved = run.read_config()
    assert (saved.ssl.method, saved.ssl.other_modality, saved.optim.optimizer) == ("cmmc", "motion", "sgd")
    assert saved.ssl.source_run.endswith("stage1-motion")
    backbone, _ = load_backbone(run)
    assert backbone.num_joints == 15 and backbone.layout == "synthetic15"
    res = evaluate_run(result["final"]["joint"], "linear", other_run=result["final"]["motion"], device="cpu",
                       progress=False, epochs=3)
    assert res["fusion"] == "logits" and res["num_test"] == 18 and res["milestones"] == [2]
    assert [s["modality"] for s in res["streams"]] == ["joint", "motion"]
    assert all(s["probe"] == "raw" for s in res["streams"]) and 0 <= res["fused"]["top1"] <= 1


def test_pose_table_gives_spread_over_seeds_and_the_binomial_se_for_one_seed():
    from cmmc_lib.pose_study import aggregate, markdown_table
    def rec(seed, joint):
        return {"seed": seed, "variant": "moco", "joint": joint, "motion": 0.5, "two-stream": 0.6,
                "num_test": 100, "num_train": 200, "num_classes": 10, "fusion": "logits"}
    one = markdown_table(aggregate([rec(0, 0.4)], "skeleton"), "skeleton", [rec(0, 0.4)], "cpu")
    assert "| joint | MoCo / SkeletonCLR | 40.0 ± 4.9 | binomial SE, one seed | SkeletonCLR (baseline), J+M | 70.1 " \
           "| 77.2 |" in one
    assert "chance: linear 10.0" in one and "at most 5.0 points" in one and "One training seed" in one
    two = [rec(0, 0.4), rec(1, 0.5)]
    md = markdown_table(aggregate(two, "skeleton"), "skeleton", two, "cpu")
    assert "| joint | MoCo / SkeletonCLR | 45.0 ± 7.1 | std over 2 seeds |" in md
    assert "| motion | MoCo / SkeletonCLR | 50.0 ± <0.1 | std over 2 seeds |" in md    # identical seeds: not "± 0.0"
    for text in (one, md):
        assert "± 0.0" not in text and "nan" not in text


@pytest.mark.parametrize("route, protocol, header", [("skeleton", "linear", "linear top-1 (%)"),
                                                     ("rgb+pose", "finetune", "fine-tune top-1 (%)")])
def test_the_rgb_rows_are_fine_tuned_and_the_skeleton_rows_probed_linearly(route, protocol, header, tmp_path,
                                                                           monkeypatch):
    # the poster's NTU-60 RGB rows sit among supervised numbers: fine-tuning, CoCLR's protocol
    from cmmc_lib import pose_study as study
    asked = []

    def fake_eval(run_a, proto, other_run, **kw):
        asked.append((pathlib.Path(run_a).name, proto))
        return {"streams": [{"modality": m, "top1": 0.5} for m in study.ROUTES[route]],
                "fused": {"top1": 0.6}, "num_test": 10, "num_train": 20, "classes": list(range(6)),
                "fusion": "probabilities", "seconds": 0.0}
    monkeypatch.setattr(study, "run_pipeline", lambda cfg, root, stage1_root: {"finished": True})
    monkeypatch.setattr(study, "evaluate_run", fake_eval)
    result = study.pose_study("tiny", route, seeds=[0], out=tmp_path / "s", variants=("moco",))
    assert sorted(asked) == sorted([("cycle1-" + study.ROUTES[route][0], protocol),
                                    ("stage1-" + study.ROUTES[route][0], protocol)])
    assert {r["protocol"] for r in result["records"]} == {protocol}
    assert header in (tmp_path / "s" / "table.md").read_text()
    run = json.loads((tmp_path / "s" / "run.json").read_text())
    assert run["route"] == route and run["seeds"] == [0] and run["commit"] and run["machine"]["cores"] >= 1
    assert all(r["command"] == run["command"] and "wall_s" in r and "train_s" in r for r in result["records"])
    again = study.rebuild_table(tmp_path / "s", tmp_path / "again")
    assert again.read_text() == (tmp_path / "s" / "table.md").read_text()


def test_the_pose_conclusion_is_computed_in_the_words_of_each_interval():
    from cmmc_lib.pose_study import conclusion_lines
    from cmmc_lib.pose_study import aggregate

    def rec(seed, variant, joint):
        return {"seed": seed, "variant": variant, "joint": joint, "motion": 0.5, "two-stream": 0.6,
                "num_test": 160, "num_train": 320, "num_classes": 10, "fusion": "logits"}
    records = [rec(s, v, x) for s, v, x in ((0, "stage1", 0.60), (1, "stage1", 0.62), (0, "moco", 0.90),
                                            (1, "moco", 0.92), (0, "cmmc", 0.91), (1, "cmmc", 0.92))]
    lines = conclusion_lines({"route": "skeleton", "records": records, "rows": aggregate(records, "skeleton")})
    assert lines[0] == "linear top-1 on 160 test samples, chance 0.100:"
    assert lines[1].startswith("  joint: MoCo / SkeletonCLR 0.910 ± 0.014, above stage 1 only (MoCo, half the "
                               "epochs) by 0.300 (95 % CI")
    assert lines[2].startswith("  joint: CMMC 0.915 ± 0.007, within the noise of MoCo / SkeletonCLR: +0.005")
    low = [rec(0, "moco", 0.0), rec(0, "cmmc", 0.0)]
    lines = conclusion_lines({"route": "rgb+pose", "records": low, "rows": aggregate(low, "skeleton")})
    assert lines[0].startswith("finetune top-1") and "below chance: 0 of 160 right" in lines[1]
