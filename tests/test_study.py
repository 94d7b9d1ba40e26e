"""The gates (cmmc_lib.study): run end to end on a smoke-sized v3 set, the structure and
invariants of their results (subsets, chance, SE, who uses labels, the gap), resumption, the
premise's regression and comparisons, and the command line."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cmmc_lib.config import preset
from cmmc_lib.data.datasets import MultiModalClips
from cmmc_lib.data.synthetic import SYNTHETIC_SIZES, SyntheticSize, context_groups
from cmmc_lib.study import run_gates, ssl_gate, subset_accuracy, verdict
from cmmc_lib.study.supervised import train_supervised
from cmmc_lib.study.premise import compare, fit_ridge

SMOKE = SyntheticSize(classes=4, groups=4, clips_per_group=2, frames=12, height=32, width=32, test_groups=2,
                      appearance="group_clip", background_contrast=0.3, scene_motion=0.0, context=0.5,
                      figure_height=(0.68, 0.76), figure_x=(0.45, 0.55), feet_line=(0.86, 0.89),
                      limb_width=(3.0, 4.0))
OVERRIDES = ["data.synthetic_size=smoke", "data.clip_len=4", "data.stride=1", "data.short_side=24", "data.size=16",
             "data.eval_windows=2", "model.width=4", "model.proj_hidden=16", "model.proj_dim=8", "ssl.queue_size=8",
             "optim.batch_size=4", "optim.epochs=2", "optim.milestones=1", "eval.probe_epochs=5",
             "eval.probe_batch_size=8", "run.knn_every=0", "run.progress=false"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke set (data seed 0, transfer seed 7) in its own data root, and every gate run once."""
    tmp = tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(SYNTHETIC_SIZES, "smoke", SMOKE)
        mp.setenv("CMMC_DATA_ROOT", str(tmp / "data"))
        out = run_gates("gates", [0], OVERRIDES, out=tmp / "results", runs=tmp / "runs", transfer_seed=7,
                        progress=False, command="test")
        yield {"tmp": tmp, "out": out, "rows": {r["gate"]: r for r in out["rows"]}, "mp": mp}


def motion_only_test_videos(seed: int) -> int:
    """Test clips outside their class's context groups, counted from the generator's own choice."""
    test = range(1, SMOKE.test_groups + 1)
    return sum(SMOKE.clips_per_group for k in range(SMOKE.classes) for g in test
               if g not in context_groups(SMOKE, seed, k))


def test_every_gate_gives_a_row_with_its_provenance(smoke):
    rows = smoke["rows"]
    assert list(rows) == ["g1", "g2", "g3", "premise"]
    lines = (smoke["tmp"] / "results" / "gates.jsonl").read_text().splitlines()
    assert [json.loads(l)["gate"] for l in lines] == ["g1", "g2", "g3", "premise"]
    for row in rows.values():
        assert row["command"] == "test" and row["seed"] == 0 and row["data_seed"] == 0 and row["transfer_seed"] == 7
        assert row["wall_s"] > 0 and row["preset"] == "gates" and "result" in row
    assert rows["g1"]["goal"] == 0.80 and rows["g2"]["goal"] == 0.85 and rows["g3"]["goal"] == 0.20


@pytest.mark.parametrize("gate", ["g1", "g2", "g3"])
@pytest.mark.parametrize("where, seed", [("test", 0), ("transfer", 7)])
def test_subsets_split_the_test_clips_by_the_generators_context_groups(smoke, gate, where, seed):
    res = smoke["rows"][gate]["result"][where]
    n_test = SMOKE.classes * SMOKE.test_groups * SMOKE.clips_per_group
    assert res["all"]["n"] == n_test
    assert res["motion"]["n"] == motion_only_test_videos(seed)
    assert res["scene"]["n"] + res["motion"]["n"] == n_test
    for cell in (res["all"], res["scene"], res["motion"]):
        assert cell["chance"] == 1 / SMOKE.classes
        assert math.isclose(cell["se"], math.sqrt(cell["value"] * (1 - cell["value"]) / cell["n"]))
        assert round(cell["value"] * cell["n"]) == pytest.approx(cell["value"] * cell["n"])    # whole clips
    mixed = (res["scene"]["value"] * res["scene"]["n"] + res["motion"]["value"] * res["motion"]["n"]) / n_test
    assert math.isclose(res["all"]["value"], mixed)


def test_g1_learns_from_labels_and_g2_g3_do_not_the_gap_is_g1_minus_g3(smoke):
    rows = smoke["rows"]
    assert rows["g1"]["result"]["labels"] is True
    assert rows["g2"]["result"]["labels"] is False and rows["g2"]["result"]["modality"] == "flow"
    assert rows["g3"]["result"]["labels"] is False and rows["g3"]["result"]["modality"] == "rgb"
    g1, g3 = rows["g1"]["result"], rows["g3"]["result"]
    for where in ("test", "transfer"):
        gap = g3["gap"][where]["motion"]
        assert math.isclose(gap["value"], g1[where]["motion"]["value"] - g3[where]["motion"]["value"])
        assert math.isclose(gap["se"], math.hypot(g1[where]["motion"]["se"], g3[where]["motion"]["se"]))
    assert rows["g3"]["value"] == g3["gap"]["test"]["motion"]["value"]
    assert rows["g1"]["pass"] == (rows["g1"]["value"] >= 0.80)
    assert g1["train"]["steps"] == 2 * (SMOKE.classes * 2 * SMOKE.clips_per_group // 4)    # 2 epochs of 4 steps


def test_premise_reports_each_block(smoke):
    blocks = smoke["rows"]["premise"]["result"]["blocks"]
    assert list(blocks) == ["block1", "block2", "block3", "block4"]
    for b in blocks.values():
        assert all(-1 <= b[k] <= 1 for k in ("own", "same_class", "random")) and 0 <= b["own_r1"] <= 1


def test_a_second_run_reuses_every_trained_network(smoke):
    out = run_gates("gates", [0], OVERRIDES, out=smoke["tmp"] / "results", runs=smoke["tmp"] / "runs",
                    transfer_seed=7, parts=["g1", "g3"], progress=False)
    again = {r["gate"]: r for r in out["rows"]}
    assert again["g1"]["result"]["train"]["reused"] and again["g3"]["result"]["train"]["reused"]
    assert again["g1"]["result"]["test"] == smoke["rows"]["g1"]["result"]["test"]
    assert again["g3"]["result"]["gap"] == smoke["rows"]["g3"]["result"]["gap"]
    with pytest.raises(ValueError, match="other settings"):                 # never reused for another config
        run_gates("gates", [0], OVERRIDES + ["optim.lr=0.01"], out=smoke["tmp"] / "results",
                  runs=smoke["tmp"] / "runs", transfer_seed=7, parts=["g1"], progress=False)


def _shift_training_labels(mp):
    original = MultiModalClips._item

    def shifted(self, j):
        item = original(self, j)
        if self.train:
            item["label"] = (item["label"] + 1) % len(self.classes)
        return item
    mp.setattr(MultiModalClips, "_item", shifted)


def test_g1_depends_on_the_training_labels_and_moco_does_not(smoke, monkeypatch):
    cfg = preset("gates", OVERRIDES + ["run.max_steps=3"])
    weights = {}
    for shifted in (False, True):
        if shifted:
            _shift_training_labels(monkeypatch)
        tmp = smoke["tmp"] / f"labels-{shifted}"
        model, _ = train_supervised(cfg, tmp / "g1")
        ssl_gate(cfg, "rgb", tmp / "moco", None)
        moco = torch.load(tmp / "moco" / "checkpoints" / "last.pt", weights_only=True)["backbone"]
        weights[shifted] = (model.state_dict(), moco)
    (sup_a, moco_a), (sup_b, moco_b) = weights[False], weights[True]
    assert any(not torch.equal(sup_a[k], sup_b[k]) for k in sup_a)
    assert all(torch.equal(moco_a[k], moco_b[k]) for k in moco_a)


def test_subset_accuracy_chance_se_and_empty_subsets():
    correct = np.array([1, 1, 0, 1, 0, 0, 0, 0, 1, 1], bool)
    masks = {"all": np.ones(10, bool), "scene": np.zeros(10, bool), "motion": np.ones(10, bool)}
    res = subset_accuracy(correct, masks, num_classes=10)
    assert res["scene"] is None
    assert res["motion"]["value"] == 0.5 and res["motion"]["chance"] == 0.1 and res["motion"]["n"] == 10
    assert math.isclose(res["motion"]["se"], math.sqrt(0.25 / 10))
    with pytest.raises(ValueError, match="entries"):
        subset_accuracy(correct[:5], masks, 10)


def test_verdict_gates_the_motion_only_clips():
    cell = lambda v: {"value": v, "se": 0.0}
    assert verdict({"gate": "g1", "test": {"motion": cell(0.81)}}) == (0.81, True)
    assert verdict({"gate": "g2", "test": {"motion": cell(0.84)}}) == (0.84, False)
    assert verdict({"gate": "g3", "gap": {"test": {"motion": cell(0.25)}}}) == (0.25, True)
    assert verdict({"gate": "premise"}) == (None, None)


def test_ridge_recovers_a_linear_map_and_compare_scores_the_own_key():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g)
    w = torch.randn(6, 3, generator=g)
    f = fit_ridge(x, x @ w + 1.0, lam=1e-6)
    assert torch.allclose(f(x), x @ w + 1.0, atol=1e-3)
    keys = torch.nn.functional.normalize(torch.randn(12, 2, 5, generator=g), dim=-1)
    labels = torch.arange(12) % 3
    scores = compare(keys, keys, labels)
    assert scores["own"] == pytest.approx(1.0) and scores["own_r1"] == 1.0
    assert scores["same_class"] < 1.0 and scores["random"] < 1.0


def test_the_command_prints_the_table_and_one_json_object(smoke, capsys):
    from cmmc_lib.cli import fmt_study_gates, main
    text = fmt_study_gates(smoke["out"])
    assert "g3 gap" in text and "premise" in text and ("PASS" in text or "FAIL" in text)
    code = main(["study", "gates", "--json", "--gates", "g1", "--transfer-seed", "7",
                 "--out", str(smoke["tmp"] / "results"), "--runs", str(smoke["tmp"] / "runs"), *OVERRIDES])
    assert code == 0
    row = json.loads(capsys.readouterr().out)["rows"][0]
    assert row["gate"] == "g1" and row["command"].startswith("cmmc study gates --preset gates --seeds 0")
    assert row["result"]["train"]["reused"]
