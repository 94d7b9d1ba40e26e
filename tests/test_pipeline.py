"""The recipe around the loop: stage 1, alternate cycles, joint training, and the ablation driver."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cmmc_lib.ablation import rebuild_table
from cmmc_lib.config import preset
from cmmc_lib.files import read_jsonl
from cmmc_lib.pipeline import final_networks, plan_pipeline, run_pipeline
from cmmc_lib.runs import RunFolder
from cmmc_lib.ssl.factory import load_backbone

REPO = Path(__file__).resolve().parents[1]


def tiny(root, *extra):
    return preset("tiny", [f"data.root={root}", "run.progress=false", "knn_every=0", "optim.epochs=1", *extra])


def test_the_plan_chains_each_network_to_its_own_latest_weights_and_the_others_latest(tmp_path):
    cfg = preset("tiny", ["ssl.method=cmmc", "schedule.cycles=2", "schedule.cycle_epochs=3",
                          "schedule.cycle_milestones=2", "optim.epochs=5"])
    stages = plan_pipeline(cfg, tmp_path / "p", stage1_root=tmp_path / "shared")
    assert [s.name for s in stages] == ["stage1-rgb", "stage1-flow", "cycle1-rgb", "cycle1-flow", "cycle2-rgb",
                                        "cycle2-flow"]
    by = {s.name: s for s in stages}
    assert by["stage1-rgb"].run_dir == tmp_path / "shared" / "stage1-rgb"
    assert by["stage1-rgb"].cfg.ssl.method == "moco" and by["stage1-rgb"].cfg.optim.epochs == 5
    chain = {name: (Path(s.cfg.ssl.init_run).name, Path(s.cfg.ssl.source_run).name)
             for name, s in by.items() if name.startswith("cycle")}
    assert chain == {"cycle1-rgb": ("stage1-rgb", "stage1-flow"), "cycle1-flow": ("stage1-flow", "cycle1-rgb"),
                     "cycle2-rgb": ("cycle1-rgb", "cycle1-flow"), "cycle2-flow": ("cycle1-flow", "cycle2-rgb")}
    assert all(s.cfg.optim.epochs == 3 and s.cfg.optim.milestones == (2,) for n, s in by.items() if "cycle" in n)
    assert {m: d.name for m, (d, _) in final_networks(stages).items()} == {"rgb": "cycle2-rgb",
                                                                          "flow": "cycle2-flow"}
    moco = plan_pipeline(preset("tiny", ["ssl.method=moco"]), tmp_path / "m")
    assert all(s.cfg.ssl.source_run is None for s in moco)        # nothing to mix in: no source
    cfg.schedule.alternate = False
    joint = plan_pipeline(cfg, tmp_path / "j", stage1_root=tmp_path / "shared")
    assert [s.name for s in joint] == ["stage1-rgb", "stage1-flow", "joint"]
    assert joint[2].cfg.ssl.joint and joint[2].cfg.optim.epochs == 6
    assert joint[0].cfg.to_dict() == stages[0].cfg.to_dict()       # stage 1 is shared by both schedules


def test_alternate_training_swaps_roles_and_the_frozen_network_never_moves(tiny_root, tmp_path):
    cfg = tiny(tiny_root, "ssl.method=cmmc", "schedule.cycles=2")
    result = run_pipeline(cfg, tmp_path / "p")
    assert [s["name"] for s in result["stages"]] == ["stage1-rgb", "stage1-flow", "cycle1-rgb", "cycle1-flow",
                                                     "cycle2-rgb", "cycle2-flow"]
    ckpt = {s["name"]: RunFolder(s["run_dir"]).load_checkpoint() for s in result["stages"]}
    for name, source in [("cycle1-rgb", "stage1-flow"), ("cycle1-flow", "cycle1-rgb"),
                         ("cycle2-rgb", "cycle1-flow"), ("cycle2-flow", "cycle2-rgb")]:
        frozen = {k[len("mixer.source."):]: v for k, v in ckpt[name]["method"].items() if k.startswith("mixer.source.")}
        # after a whole cycle of training beside it, the source holds exactly the other network's
        # latest weights, BatchNorm statistics included
        assert frozen.keys() == ckpt[source]["backbone"].keys()
        assert all(torch.equal(frozen[k], ckpt[source]["backbone"][k]) for k in frozen), (name, source)
        assert not all(torch.equal(ckpt[name]["backbone"][k], ckpt[source]["backbone"][k])
                       for k in ckpt[name]["backbone"] if k in ckpt[source]["backbone"])
    again = run_pipeline(cfg, tmp_path / "p")                     # a second call reuses every stage
    assert all(s["reused"] for s in again["stages"])


def test_joint_training_trains_both_networks_from_their_stage1_weights(tiny_root, tmp_path):
    cfg = tiny(tiny_root, "ssl.method=cmmc", "schedule.alternate=false")
    result = run_pipeline(cfg, tmp_path / "p")
    assert result["final"] == {"rgb": str(tmp_path / "p" / "joint"), "flow": str(tmp_path / "p" / "joint")}
    joint = RunFolder(tmp_path / "p" / "joint")
    flow, flow_cfg = load_backbone(joint, modality="flow")
    stage1, _ = load_backbone(tmp_path / "p" / "stage1-flow")
    assert flow_cfg.ssl.modality == "flow" and flow.in_channels == 2
    moved = [not torch.equal(a, b) for a, b in zip(flow.state_dict().values(), stage1.state_dict().values())
             if a.is_floating_point()]
    assert any(moved)                                                # the flow network trained too


def test_a_folder_with_another_runs_settings_is_not_reused(tiny_root, tmp_path):
    run_pipeline(tiny(tiny_root, "ssl.method=moco"), tmp_path / "p")
    with pytest.raises(ValueError, match="holds a run with other settings .*ssl.temperature"):
        run_pipeline(tiny(tiny_root, "ssl.method=moco", "ssl.temperature=0.2"), tmp_path / "p")


@pytest.mark.slow
def test_cmmc_ablate_tiny_writes_every_row(tiny_root, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cmmc_lib.cli", "ablate", "--preset", "tiny", "--seeds", "1",
                           "--out", str(tmp_path / "abl"), "--no-curves", "--json", f"data.root={tiny_root}",
                           "optim.epochs=1", "knn_every=0"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    rows = {(r["stream"], r["method"]) for r in out["table"]}
    assert rows == {(s, m) for s in ("rgb", "flow", "two-stream") for m in ("moco", "mixup", "cm-mixup", "cmmc")}
    for row in out["table"]:
        for cell in ("linear/pretrain", "linear/transfer", "R@1/pretrain", "R@1/transfer", "R@5/transfer"):
            values = row[cell]["values"]
            assert len(values) == 1 and 0 <= values[0] <= 1 and row[cell]["label"] == "binomial SE, one seed"
    md = (tmp_path / "abl" / "ablation.md").read_text()
    table, differences = md.split("| stream | difference |")
    assert table.count("| rgb |") == 4 and "| 55.8 | 28.3 | 42.8 | 19.1 |" in table and "chance: linear 16.7" in table
    assert differences.count("| rgb |") == 3 and "CM cutmix - MoCo (baseline)" in differences
    assert "± 0.0" not in md and "nan" not in md and "One training seed" in md and "binomial standard error" in md
    assert len((tmp_path / "abl" / "ablation.csv").read_text().splitlines()) == 1 + 4 * 2 * 2
    # every row says where it came from, and the table is rebuilt from the files alone
    run = json.loads((tmp_path / "abl" / "ablation.run.json").read_text())
    assert run["command"].startswith("cmmc ablate --preset tiny --seeds 1 --out"), run["command"]
    assert run["seeds"] == [0] and run["variants"] == ["moco", "mixup", "cm-mixup", "cmmc"] and run["wall_s"] > 0
    assert run["machine"]["cores"] >= 1 and "linear/pretrain" in run["chance"]
    for row in read_jsonl(tmp_path / "abl" / "results.jsonl"):
        assert row["command"] == run["command"] and row["wall_s"] > 0 and "train_s" in row and row["machine"]
    assert sum(r["train_s"] for r in read_jsonl(tmp_path / "abl" / "results.jsonl")) > 0
    assert rebuild_table(tmp_path / "abl", "ablation", tmp_path / "again").read_text() == md


def test_cmmc_pipeline_plans_the_paper_recipe_without_training():
    proc = subprocess.run([sys.executable, "-m", "cmmc_lib.cli", "pipeline", "--preset", "paper", "--method", "cmmc",
                           "--plan", "--json", "--run-dir", "runs/paper-cmmc"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    plan = json.loads(proc.stdout)["plan"]
    assert [(s["name"], s["method"], s["epochs"]) for s in plan] == [
        ("stage1-rgb", "moco", 300), ("stage1-flow", "moco", 300), ("cycle1-rgb", "cmmc", 100),
        ("cycle1-flow", "cmmc", 100), ("cycle2-rgb", "cmmc", 100), ("cycle2-flow", "cmmc", 100)]
    assert plan[3]["source_run"].endswith("cycle1-rgb") and plan[3]["init_run"].endswith("stage1-flow")
    assert not (REPO / "runs" / "paper-cmmc").exists()


@pytest.mark.slow
def test_a_pipeline_runs_its_stages_under_torchrun(tiny_root, tmp_path):
    # one process group for every stage: a stage must not leave it before the next one starts
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           "29541", "-m", "cmmc_lib.cli", "pipeline", "--preset", "tiny", "--method", "cmmc", "--json",
                           "--run-dir", str(tmp_path / "p"), f"data.root={tiny_root}", "optim.epochs=1",
                           "knn_every=0", "run.device=cpu"], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [s["name"] for s in out["stages"]] == ["stage1-rgb", "stage1-flow", "cycle1-rgb", "cycle1-flow"]
    assert RunFolder(tmp_path / "p" / "cycle1-flow").is_finished()


def test_ablation_table_gives_spread_over_seeds_and_the_binomial_se_for_one_seed():
    from cmmc_lib.ablation import TABLES, aggregate, markdown_table
    spec = TABLES["ablation"]
    def record(seed, value):
        r = {"seed": seed, "method": "moco", "protocol": "linear", "dataset": "pretrain", "num_test": 100}
        r.update({f"{s}/linear": value for s in spec.streams})
        return r
    sizes = {"pretrain": {"num_test": 100, "num_train": 200, "num_classes": 10}}
    two = markdown_table(aggregate([record(0, 0.40), record(1, 0.50)], spec), spec, sizes, {"linear/pretrain": 0.1})
    assert "| rgb | MoCo (baseline) | 45.0 ± 7.1 | - |" in two and "sample std over 2 training seeds" in two
    assert "| std over 2 seeds | 46.8 |" in two and "chance: linear 10.0" in two
    assert "| rgb | + mixup | - | - |" in two                                 # not run yet
    one = markdown_table(aggregate([record(0, 0.40)], spec), spec, sizes, {})
    assert "| rgb | MoCo (baseline) | 40.0 ± 4.9 | - |" in one and "| binomial SE, one seed |" in one
    assert "at most 5.0 points" in one and "One training seed" in one
    for md in (one, two):
        assert "± 0.0" not in md and "nan" not in md


def test_paired_differences_of_the_ablation_rows_pair_seeds():
    from cmmc_lib.ablation import TABLES, aggregate, paired_difference
    from cmmc_lib.tables import verdict
    spec = TABLES["ablation"]
    records = [{"seed": s, "method": m, "protocol": "linear", "dataset": "transfer", "num_test": 100,
                **{f"{st}/linear": v for st in spec.streams}}
               for s, m, v in ((0, "moco", 0.40), (1, "moco", 0.50), (2, "moco", 0.45),
                               (2, "cmmc", 0.55), (0, "cmmc", 0.52), (1, "cmmc", 0.60))]
    d = paired_difference(aggregate(records, spec), "cmmc", "moco", "linear/transfer", "flow")
    assert d.seeds == (0, 1, 2) and d.diffs == pytest.approx((0.12, 0.10, 0.10))
    assert verdict(d, "MoCo").startswith("above MoCo by 10.7 points (95 % CI ")
    assert paired_difference(aggregate(records, spec), "mixup", "moco", "linear/transfer") is None


def test_a_conclusion_is_computed_from_the_rows_in_the_words_of_each_interval():
    from cmmc_lib.ablation import TABLES, aggregate, conclusion_lines
    spec = TABLES["ablation"]
    records = [{"seed": s, "method": m, "protocol": "linear", "dataset": "transfer", "num_test": 100,
                **{f"{st}/linear": v for st in spec.streams}}
               for s, m, v in ((0, "moco", 0.40), (1, "moco", 0.50), (2, "moco", 0.45),
                               (2, "cmmc", 0.55), (0, "cmmc", 0.52), (1, "cmmc", 0.60),
                               (0, "mixup", 0.41), (1, "mixup", 0.49), (2, "mixup", 0.47))]
    lines = conclusion_lines(aggregate(records, spec), {"linear/transfer": 0.1}, ["linear/transfer"], streams=["rgb"])
    assert lines[0] == "rgb, linear transfer (chance 0.100):"
    assert lines[1] == "  MoCo (baseline): 0.450 ± 0.050 (std over 3 seeds)"
    assert lines[2].startswith("  + mixup: 0.457 ± 0.042 (std over 3 seeds); within the noise of MoCo (baseline): +0.007 (95 % CI")
    assert lines[3].startswith("  + CM cutmix: 0.557 ± 0.040 (std over 3 seeds); above MoCo (baseline) by 0.107 (95 % CI 0.")
    assert len(lines) == 4                                            # cm-mixup was not measured: left out
    low = conclusion_lines(aggregate(records, spec), {"linear/transfer": 0.5}, ["linear/transfer"], streams=["rgb"])
    assert "(below chance: 45 of 100 right; at chance a score this low happens with p = " in low[1]


def test_a_two_stream_mean_below_one_of_its_streams_says_why():
    # the long course's fusion: RGB's probe is confident where it is wrong and outvotes a right flow probe
    from cmmc_lib.ablation import TABLES, aggregate, conclusion_lines
    spec = TABLES["ablation"]
    records = [{"seed": s, "method": "moco", "protocol": "linear", "dataset": "transfer", "num_test": 100,
                "rgb/linear": 0.4, "flow/linear": 0.9, "two-stream/linear": fused}
               for s, fused in ((0, 0.62), (1, 0.46), (2, 0.92))]
    lines = conclusion_lines(aggregate(records, spec), {"linear/transfer": 0.1}, ["linear/transfer"])
    assert lines[-1] == ("  MoCo (baseline): 0.667 ± 0.234 (std over 3 seeds) (below flow alone, 0.900: the fusion "
                         "weighs both streams equally (the mean of their probes' class probabilities), so rgb "
                         "can outvote flow where rgb is confident and wrong)")
    records = [{**r, "two-stream/linear": 0.95} for r in records]
    assert conclusion_lines(aggregate(records, spec), {}, ["linear/transfer"])[-1].endswith("(std over 3 seeds)")


def test_an_ablation_plans_each_variant_and_cmmc_without_alternate_training():
    from cmmc_lib.ablation import CURVES, JOINT, plan_ablation
    plans = plan_ablation(preset("tiny"), [0, 1], "/nowhere", variants=["moco", "cmmc"])
    assert [(p.seed, p.variant.name) for p in plans] == [(0, "moco"), (0, "cmmc"), (0, "cmmc-joint"), (1, "moco"),
                                                          (1, "cmmc"), (1, "cmmc-joint")]
    joint = plans[2]
    assert joint.variant == JOINT and (joint.cfg.ssl.method, joint.cfg.schedule.alternate) == ("cmmc", False)
    assert plans[1].cfg.schedule.alternate and str(joint.root) == "/nowhere/seed0/cmmc-joint"
    assert str(joint.stage1_root) == "/nowhere/seed0" and [s.name for s in joint.stages()][-1] == "joint"
    assert CURVES["cmmc-joint"].label == "w/o alternate training" and CURVES["moco"].label == "w/o mix"
    with pytest.raises(ValueError, match="no variant"):
        plan_ablation(preset("tiny"), [0], "/nowhere", variants=["cmmc-joint"])


def test_a_stage_cut_short_ends_the_pipeline_there_and_is_never_used(tiny_root, tmp_path):
    cut = run_pipeline(tiny(tiny_root, "ssl.method=cmmc", "run.max_steps=3"), tmp_path / "p")
    assert not cut["finished"] and cut["stopped_at"] == "stage1-rgb" and cut["final"] == {}
    assert [s["name"] for s in cut["stages"]] == ["stage1-rgb"] and not (tmp_path / "p" / "stage1-flow").exists()


def test_ctrl_c_in_a_stage_stops_the_pipeline_and_the_rerun_continues_it(tiny_root, tmp_path, monkeypatch):
    import cmmc_lib.pipeline as pipeline
    from cmmc_lib.train import Interrupted
    real = pipeline.train_or_load

    def ctrl_c_in_cycle1_rgb(cfg, run_dir):
        if Path(run_dir).name == "cycle1-rgb":
            cfg.run.max_steps = 2                   # as if Ctrl-C came after step 2: checkpoint, then stop
            return {**real(cfg, run_dir), "interrupted": True}
        return real(cfg, run_dir)
    monkeypatch.setattr(pipeline, "train_or_load", ctrl_c_in_cycle1_rgb)
    cfg = tiny(tiny_root, "ssl.method=cmmc")
    with pytest.raises(Interrupted, match="stopped in cycle1-rgb") as stop:
        run_pipeline(cfg, tmp_path / "p")
    assert [s["name"] for s in stop.value.result["stages"]] == ["stage1-rgb", "stage1-flow", "cycle1-rgb"]
    assert not (tmp_path / "p" / "cycle1-flow").exists()          # the half-trained RGB was never a source
    monkeypatch.setattr(pipeline, "train_or_load", real)
    again = run_pipeline(cfg, tmp_path / "p")
    assert again["finished"] and [s["reused"] for s in again["stages"]] == [True, True, False, False]
    assert RunFolder(tmp_path / "p" / "cycle1-rgb").load_checkpoint()["step"] == 6     # resumed, then finished


def test_an_unfinished_run_is_refused_as_a_source_or_a_start(tiny_root, tmp_path):
    from cmmc_lib.train import pretrain
    pretrain(tiny(tiny_root, "ssl.modality=flow", "run.max_steps=2"), tmp_path / "half-flow")
    with pytest.raises(ValueError, match="ssl.source_run=.*half-flow has not finished its schedule"):
        pretrain(tiny(tiny_root, "ssl.method=cmmc", f"ssl.source_run={tmp_path / 'half-flow'}"), tmp_path / "c")
    with pytest.raises(ValueError, match="ssl.init_run=.*has not finished"):
        pretrain(tiny(tiny_root, "ssl.modality=flow", f"ssl.init_run={tmp_path / 'half-flow'}"), tmp_path / "d")


def test_the_ablation_trains_stage1_with_the_schedules_stage1_method(tmp_path):
    # STC-mix: input mixing first, then CMMC; every variant of a seed shares that stage 1
    from cmmc_lib.ablation import plan_ablation
    base = preset("tiny", ["schedule.stage1_method=mixup"])
    plans = plan_ablation(base, [0], tmp_path / "abl", variants=("moco", "cmmc"), curves=False)
    for p in plans:
        stages = p.stages()
        assert [(s.name, s.cfg.ssl.method) for s in stages[:2]] == [("stage1-rgb", "mixup"), ("stage1-flow", "mixup")]
        assert {s.cfg.ssl.method for s in stages[2:]} == {p.variant.method}
        assert stages[0].run_dir == tmp_path / "abl" / "seed0" / "stage1-rgb"
    assert preset("paper").schedule.stage1_method == "moco"     # the paper preset's choice (docs/fidelity.md)


def test_a_lesson_plans_a_cross_modal_pipeline_at_a_preset_that_needs_its_source_network(tmp_path):
    # at cpu a cross-modal method alone is refused (no source network); a pipeline sets it per stage
    from cmmc_lib.pipeline import pipeline_config
    cfg = pipeline_config(preset("cpu"), ["ssl.method=cmmc", "optim.epochs=2"])
    assert cfg.ssl.method == "cmmc" and cfg.ssl.source_run is None and cfg.optim.epochs == 2
    stages = plan_pipeline(cfg, tmp_path / "cmmc", tmp_path)
    assert stages[2].cfg.ssl.source_run == str(tmp_path / "stage1-flow")      # then each the other's latest
    assert all(s.cfg.ssl.source_run for s in stages[2:])
    with pytest.raises(ValueError, match="unknown method"):
        pipeline_config(preset("cpu"), ["ssl.method=nope"])
    with pytest.raises(ValueError, match="needs the frozen flow network"):
        preset("cpu", ["ssl.method=cmmc"])                  # a single run still needs it


def test_a_pipeline_config_takes_its_overrides_in_any_order():
    # lesson 05's joint variant: alternate=false is only valid once the method is cross-modal
    from cmmc_lib.pipeline import pipeline_config
    for overrides in (["ssl.method=cmmc", "schedule.alternate=false"], ["schedule.alternate=false", "ssl.method=cmmc"]):
        cfg = pipeline_config(preset("cpu"), overrides)
        assert (cfg.ssl.method, cfg.schedule.alternate) == ("cmmc", False)
    with pytest.raises(ValueError, match="only cross-modal mixing methods can"):
        pipeline_config(preset("cpu"), ["schedule.alternate=false"])
