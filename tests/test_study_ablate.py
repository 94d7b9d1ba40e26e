"""``cmmc study ablate`` on the gates' smoke-sized set: the gates and the study table for two seeds
in one command, its files and their provenance, the motion-only cells read off per-video hits, the
paired differences, Ctrl-C and resumption (nothing trained twice, no row written twice)."""
from __future__ import annotations

import json

import pytest
import torch

import cmmc_lib.study.ablate as study_ablate
from cmmc_lib.ablation import MOTION_N, TABLES, motion_only_mask
from cmmc_lib.config import preset
from cmmc_lib.data.synthetic import SYNTHETIC_SIZES, in_context
from cmmc_lib.evaluate.fusion import two_stream_ranks, two_stream_retrieval
from cmmc_lib.evaluate.retrieval import hit_rates_from_ranks, retrieval_hit_rate, retrieval_ranks
from cmmc_lib.evaluate.runner import hits, subset_value
from cmmc_lib.files import read_jsonl
from cmmc_lib.study.ablate import run_study
from tests.test_study import OVERRIDES, SMOKE

STUDY = [*OVERRIDES, "schedule.cycles=1", "schedule.cycle_epochs=1"]
ROWS_PER_SEED = len(TABLES["study"].variants) * 2 * 2        # variants x (linear, retrieval) x (pretrain, transfer)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two seeds, first stopped by Ctrl-C in seed 1's evaluations, then run again to the end."""
    tmp = tmp_path_factory.mktemp("study-ablate")
    kw = dict(out=tmp / "results", runs=tmp / "runs", transfer_seed=7, workers=1, threads=1,
              overrides=STUDY, progress=False, command="test")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(SYNTHETIC_SIZES, "smoke", SMOKE)
        mp.setenv("CMMC_DATA_ROOT", str(tmp / "data"))
        real, calls = study_ablate.evaluate_variant, []

        def stopped_in_seed_1(plan, *a):
            calls.append(plan.seed)
            if plan.seed == 1 and calls.count(1) == 3:
                raise KeyboardInterrupt
            return real(plan, *a)

        mp.setattr(study_ablate, "evaluate_variant", stopped_in_seed_1)
        with pytest.raises(KeyboardInterrupt, match="run the same command again"):
            run_study("gates", [0, 1], **kw)
        after_stop = {"results": read_jsonl(tmp / "results" / "ablation" / "results.jsonl"),
                      "gates": read_jsonl(tmp / "results" / "gates.jsonl"),
                      "run": json.loads((tmp / "results" / "ablation" / "run.json").read_text())}
        mp.setattr(study_ablate, "evaluate_variant", real)
        done = run_study("gates", [0, 1], **kw)
        yield {"tmp": tmp, "out": done, "after_stop": after_stop, "kw": kw, "mp": mp}


def test_ranks_give_the_hit_rates_and_the_per_query_hits():
    g = torch.randn(30, 8)
    q = torch.randn(12, 8)
    gl, ql = torch.arange(30) % 3, torch.arange(12) % 3
    ranks = retrieval_ranks(q, ql, g, gl)
    assert hit_rates_from_ranks(ranks, (1, 5)) == retrieval_hit_rate(q, ql, g, gl, ks=(1, 5))
    g2, q2 = torch.randn(30, 4), torch.randn(12, 4)
    fused = two_stream_ranks(q, g, q2, g2, ql, gl)
    assert hit_rates_from_ranks(fused, (1, 3)) == two_stream_retrieval(q, g, q2, g2, ql, gl, ks=(1, 3))


def test_a_subset_s_accuracy_is_read_off_the_hits():
    assert hits(torch.tensor([True, False, True, True])) == "1011"
    assert subset_value("1011", [True, True, False, False]) == (0.5, 2)
    assert subset_value("1011", [False] * 4) == (None, 0)
    with pytest.raises(ValueError):
        subset_value("1011", [True])


def test_ctrl_c_keeps_finished_seeds_and_says_how_to_continue(study):
    stopped = study["after_stop"]
    assert {r["seed"] for r in stopped["results"]} == {0}          # seed 1 was stopped: none of its rows
    assert len(stopped["results"]) == ROWS_PER_SEED
    assert {r["seed"] for r in stopped["gates"]} == {0}
    assert stopped["run"]["interrupted"] is True


def test_the_study_writes_every_row_once_with_its_provenance(study):
    results = read_jsonl(study["tmp"] / "results" / "ablation" / "results.jsonl")
    keys = [(r["seed"], r["method"], r["protocol"], r["dataset"]) for r in results]
    assert len(keys) == len(set(keys)) == 2 * ROWS_PER_SEED
    for r in results:
        assert r["source"] == "study ablate" and r["command"] == "test" and r["preset"] == "gates"
        assert r["transfer_seed"] == 7 and r["machine"]["cores"] >= 1 and r["wall_s"] >= 0
    gates = read_jsonl(study["tmp"] / "results" / "gates.jsonl")
    assert sorted((r["seed"], r["gate"]) for r in gates) == [(s, g) for s in (0, 1)
                                                              for g in ("g1", "g2", "g3", "premise")]
    run = json.loads((study["tmp"] / "results" / "ablation" / "run.json").read_text())
    assert run["interrupted"] is False and run["seeds"] == [0, 1] and run["wall_s"] > 0


def test_the_gates_probe_the_stage_1_networks_the_variants_continue(study):
    gates = {(r["seed"], r["gate"]): r for r in read_jsonl(study["tmp"] / "results" / "gates.jsonl")}
    runs = study["tmp"] / "runs"
    assert gates[(0, "g2")]["result"]["run_dir"] == str(runs / "seed0" / "stage1-flow")
    assert gates[(0, "g3")]["result"]["run_dir"] == str(runs / "seed0" / "stage1-rgb")
    cycle = json.loads((runs / "seed0" / "cmmc" / "cycle1-rgb" / "config.json").read_text())
    assert cycle["ssl"]["init_run"] == str(runs / "seed0" / "stage1-rgb")


def test_motion_only_cells_count_the_clips_outside_the_class_scene(study):
    cfg = preset("gates", STUDY)
    results = read_jsonl(study["tmp"] / "results" / "ablation" / "results.jsonl")
    row = next(r for r in results if r["protocol"] == "linear" and r["dataset"] == "pretrain")
    from cmmc_lib.data.datasets import build_dataset
    test = build_dataset(cfg.data, "test", False, ("rgb",), eval_windows=1)
    motion = motion_only_mask(cfg, {}, test.videos)
    assert motion == [not c for c in in_context(test.root, test.videos)]
    assert row[MOTION_N] == sum(motion) < row["num_test"]
    for stream in ("rgb", "flow", "two-stream"):
        assert 0.0 <= row[f"{stream}/linear motion-only"] <= 1.0


def test_the_table_pairs_every_variant_with_moco_by_seed(study):
    rows = study["out"]["table"]
    rgb_moco = next(r for r in rows if r["stream"] == "rgb" and r["method"] == "moco")
    assert rgb_moco["linear motion-only/pretrain"]["seeds"] == [0, 1]
    md = (study["tmp"] / "results" / "ablation" / "study.md").read_text()
    assert "CM cutmix - MoCo (baseline)" in md and "w/o alternate training - MoCo (baseline)" in md
    assert "Paired by training seed" in md and "R@1 motion-only transfer" in md
    curves = json.loads((study["tmp"] / "results" / "ablation" / "curves.json").read_text())
    assert set(curves) >= {"moco", "cmmc", "cmmc-joint"} and set(curves["cmmc"]) == {"0", "1"}


def test_the_same_command_again_trains_nothing_and_adds_no_row(study):
    stage = study["tmp"] / "runs" / "seed0" / "stage1-rgb" / "metrics.csv"
    before = stage.read_text()
    out = run_study("gates", [0, 1], **study["kw"])
    assert stage.read_text() == before
    assert len(read_jsonl(study["tmp"] / "results" / "ablation" / "results.jsonl")) == 2 * ROWS_PER_SEED
    assert len(read_jsonl(study["tmp"] / "results" / "gates.jsonl")) == 8
    assert out["table"] == study["out"]["table"]


def test_the_tables_are_rebuilt_from_their_rows_alone(study, tmp_path):
    rebuilt = study_ablate.rebuild_tables(study["tmp"] / "results", tmp_path)
    table_dir = study["tmp"] / "results" / "ablation"
    assert rebuilt["study.md"].read_text() == (table_dir / "study.md").read_text()
    assert rebuilt["gates.md"].read_text() == (table_dir / "gates.md").read_text()
    gates = (table_dir / "gates.md").read_text()
    assert "| G1 supervised RGB | test |" in gates and "| G1 - G3 gap | transfer |" in gates
    assert "Premise" in gates


@pytest.mark.parametrize("seed", [-1, 0])
def test_a_study_without_a_transfer_set_of_its_own_is_refused(tmp_path, seed):
    with pytest.raises(ValueError, match="--transfer-seed must be a data seed"):
        run_study("gates", [0], out=tmp_path / "r", runs=tmp_path / "runs", transfer_seed=seed, workers=1,
                  overrides=STUDY, progress=False)
    assert not (tmp_path / "runs").exists()


def test_the_command_refuses_bad_input_in_one_line_and_prints_the_study(study, capsys):
    from cmmc_lib import cli
    from cmmc_lib.study.report import study_text
    assert cli.main(["study", "ablate", "--seeds", "1", "--transfer-seed", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cmmc: error: the study reports every number on a transfer set")
    text = study_text(study["out"])
    assert "g1 " in text and "| stream | difference |" in text and "gate rows" in text
