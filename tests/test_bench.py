"""cmmc_lib.bench and `cmmc bench ...`: the step and loader benchmarks, FLOPs, the recipe's cost,
the inline lesson runner (cmmc_lib.course), and the GPU check end to end at its reduced (CPU) size."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from cmmc_lib import bench
from cmmc_lib.config import preset
from cmmc_lib.course import run_notebook_inline

REPO = Path(__file__).resolve().parents[1]
PAPER_REDUCED = ["optim.batch_size=2", "data.clip_len=8", "data.size=64", "data.short_side=64", "data.eval_crop=0",
                 "ssl.queue_size=16"]


def cmmc(*args):
    return subprocess.run([sys.executable, "-m", "cmmc_lib.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO)


def test_bench_step_times_each_method_and_breaks_down_cmmcs_extra_time():
    r = bench.bench_step("tiny", ["moco", "cmmc"], amps=["off"], device="cpu", steps=2, warmup=1)
    rows = {x["method"]: x for x in r["results"]}
    assert set(rows) == {"moco", "cmmc"} and not any(x["error"] for x in rows.values())
    for x in rows.values():
        assert x["clips_per_s"] == pytest.approx(x["batch"] / x["seconds_per_step"])
        assert x["steps_per_s"] == pytest.approx(1 / x["seconds_per_step"]) and math.isfinite(x["last_loss"])
        assert x["amp"] == "off" and x["channels_last"] is False and x["syncs_per_step"] is None   # CPU: no CUDA syncs
        assert x["peak_memory_mib"] is None and x["memory_measure"].startswith("n/a")
    assert rows["moco"]["breakdown"] is None
    parts = rows["cmmc"]["breakdown"]
    assert parts["source_forward_ms"] > 0 and parts["mixing_ms"] > 0
    extra = r["ratios"]["extra_time"]["cmmc/moco@off"]
    assert extra["other_ms"] == pytest.approx(extra["extra_ms"] - extra["source_forward_ms"] - extra["mixing_ms"])
    assert r["ratios"]["over_moco"]["cmmc/moco@off"] == pytest.approx(          # CPU: of process CPU time
        rows["cmmc"]["cpu_seconds_per_step"] / rows["moco"]["cpu_seconds_per_step"])
    assert r["steps_per_s"] == rows["moco"]["steps_per_s"]                 # the headline: the first row


def test_bench_step_at_explicit_shapes_reports_throughput():
    overrides = bench.shape_overrides("small3d", width=4, batch=2, clip=(3, 4, 16, 16)) + ["ssl.queue_size=8"]
    r = bench.bench_step("tiny", ["moco"], amps=["off"], device="cpu", steps=2, warmup=1, overrides=overrides,
                         breakdown=False)
    (row,) = r["results"]
    assert not row["error"] and row["batch"] == 2 and r["backbone"] == "small3d" and r["clip"] == [4, 16, 16]
    assert row["steps_per_s"] > 0 and row["seconds_per_step"] == pytest.approx(1 / row["steps_per_s"])
    assert math.isfinite(row["last_loss"])


def test_bf16_rows_give_the_bf16_over_fp32_ratio_and_cpu_memory_is_measured_in_a_fresh_process():
    r = bench.bench_step("tiny", ["moco"], amps=["off", "bf16"], device="cpu", steps=1, warmup=1,
                         overrides=["optim.batch_size=2", "data.clip_len=4", "data.size=16", "data.short_side=16"],
                         cpu_memory=True)
    off, bf16 = r["results"]
    assert (off["amp"], bf16["amp"]) == ("off", "bf16")
    assert r["ratios"]["bf16_over_fp32"]["moco"] == pytest.approx(off["cpu_seconds_per_step"]
                                                                   / bf16["cpu_seconds_per_step"])
    assert off["peak_memory_mib"] > 0 and off["memory_measure"] == "peak RSS growth in a fresh process"


def test_paper_preset_builds_and_a_reduced_step_runs_on_cpu():
    cfg = preset("paper")
    cfg.ssl.method = "cmmc"
    method = bench.build_bench_method(cfg)
    backbone = method.query_backbone()
    assert type(backbone).__name__ == "S3D" and backbone.feat_dim == 1024 and method.moco.queue_size == 2048
    assert method.source.in_channels == 2 and not any(p.requires_grad for p in method.source.parameters())
    assert (cfg.run.log_every, cfg.data.prefetch, cfg.data.persistent_workers) == (50, 4, True)
    r = bench.bench_step("paper", ["moco", "cmmc"], amps=["off"], device="cpu", steps=1, warmup=0,
                         overrides=PAPER_REDUCED)
    assert r["backbone"] == "s3d" and r["clip"] == [8, 64, 64]
    assert all(not x["error"] and math.isfinite(x["last_loss"]) for x in r["results"])


def test_step_flops_count_the_source_networks_partial_forward():
    f = bench.step_flops(preset("paper"))
    assert f["layer_k"] == 3 and len(f["block_forward_gflops"]) == 5
    per = f["per_clip_gflops"]
    assert per["key_forward"] == pytest.approx(sum(f["block_forward_gflops"]), rel=0.01)   # + the head's few
    assert 2 * per["key_forward"] < per["query_forward_backward"] < 3 * per["key_forward"]
    assert f["cmmc_over_moco"] == pytest.approx(1 + per["source_forward"] / (per["query_forward_backward"]
                                                                              + per["key_forward"]))
    assert 1.15 < f["cmmc_over_moco"] < 1.25                                 # block 3 of S3D: ~80% of a forward
    assert bench.step_flops(preset("paper", ["ssl.layer_k=1"]))["cmmc_over_moco"] < 1.1


def test_recipe_cost_counts_methods_schedule():
    cost = bench.recipe_cost({"moco": 0.5, "cmmc": 0.6})
    assert cost["steps_per_epoch"] == 9537 // 64 == 149
    s1, s2 = cost["stages"]
    assert s1["steps"] == 2 * 300 * 149 and s2["steps"] == 2 * 2 * 100 * 149
    assert cost["gpu_hours"] == pytest.approx((s1["steps"] * 0.5 + s2["steps"] * 0.6) / 3600)
    assert cost["wall_hours_on"]["1"] == pytest.approx(cost["gpu_hours"])
    assert cost["wall_hours_on"]["8"] < cost["wall_hours_on"]["4"] < cost["gpu_hours"]
    with pytest.raises(ValueError, match="needs step times"):
        bench.recipe_cost({"moco": 0.5})


def test_bench_loader_measures_per_worker_count_with_and_without_the_frame_cache(tiny_root, tmp_path):
    from cmmc_lib.data.frame_cache import build_frame_cache
    plain = bench.bench_loader(tiny_root, "tiny", workers=[0], batches=2, warmup=1, batch=4, method="cmmc")
    assert plain["modalities"] == ["rgb", "flow"] and plain["frame_cache"] is None and plain["clip"] == [8, 32, 32]
    (row,) = plain["results"]
    assert row["workers"] == 0 and row["clips_per_s"] > 0 and row["batches"] == 2 and not row["error"]
    cache = build_frame_cache(tiny_root, tmp_path / "cache", short_side=40, progress=False)
    assert cache["done"] == 2 * 72 and not cache["failed"]
    cached = bench.bench_loader(tiny_root, "tiny", workers=[0], batches=2, warmup=1, batch=4, method="moco",
                                frame_cache=str(tmp_path / "cache"))
    assert cached["frame_cache"] == str(tmp_path / "cache") and cached["modalities"] == ["rgb"]
    assert cached["results"][0]["clips_per_s"] > 0


def test_run_notebook_inline_puts_the_parameters_after_the_parameters_cell(tmp_path):
    cell = lambda src, tags=None: {"cell_type": "code", "metadata": {"tags": tags or []}, "source": src,  # noqa: E731
                                   "outputs": [], "execution_count": None}
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# t"},
                    cell("X = 1\nOUT = None", ["parameters"]), cell("%matplotlib inline\nY = X + 1"),
                    cell(f"open({str(tmp_path / 'y.txt')!r}, 'w').write(str(Y) + OUT)")],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "nb.ipynb").write_text(json.dumps(nb))
    r = run_notebook_inline(tmp_path / "nb.ipynb", {"X": 41, "OUT": "!"})
    assert r["ok"] and r["cells"] == 3 and (tmp_path / "y.txt").read_text() == "42!"
    nb["cells"].append(cell("raise RuntimeError('boom')"))
    (tmp_path / "nb.ipynb").write_text(json.dumps(nb))
    bad = run_notebook_inline(tmp_path / "nb.ipynb", {"OUT": "?"})
    assert not bad["ok"] and "cell 4: RuntimeError: boom" in bad["error"]


def test_each_bench_verb_has_its_own_options():
    helps = {v: cmmc("bench", v, "--help").stdout for v in ("step", "loader", "flow", "retrieval", "gpu-check")}
    assert "--methods" in helps["step"] and "--amp" in helps["step"] and "--queries" not in helps["step"]
    assert "--workers" in helps["loader"] and "--frame-cache" in helps["loader"] and "--amp" not in helps["loader"]
    assert "--queries" in helps["retrieval"] and "--workers" not in helps["retrieval"]
    assert "--pairs" in helps["flow"] and "--methods" in helps["flow"] and "--preset" not in helps["flow"]
    assert "--out" in helps["gpu-check"] and "--budget" in helps["gpu-check"]
    bad = cmmc("bench", "step", "--amp", "fp16", "--steps", "1")
    assert bad.returncode == 2 and "--amp must be off or bf16" in bad.stderr.strip().splitlines()[-1]
    bad = cmmc("bench", "step", "--methods", "mocco")
    assert bad.returncode == 2 and "unknown method(s) mocco" in bad.stderr


def test_cli_bench_step_with_a_preset_and_explicit_shapes():
    proc = cmmc("bench", "step", "--preset", "tiny", "--methods", "moco,cmmc", "--steps", "1", "--warmup", "0",
                "--clip", "2,4,16,16", "--batch", "2", "--width", "4", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout)
    assert r["batch"] == 2 and r["clip"] == [4, 16, 16] and [x["method"] for x in r["results"]] == ["moco", "cmmc"]
    assert r["steps_per_s"] > 0 and "cmmc/moco@off" in r["ratios"]["over_moco"]
    text = cmmc("bench", "step", "--steps", "1", "--warmup", "0", "--batch", "2", "--clip", "3,4,16,16")
    assert text.returncode == 0 and "steps/s" in text.stdout and "moco" in text.stdout


def test_cli_data_cache_writes_resumably_and_the_loader_bench_reads_it(tiny_root, tmp_path):
    out = tmp_path / "cache"
    first = cmmc("data", "cache", "--root", tiny_root, "--out", out, "--short-side", "40", "--modalities", "rgb",
                 "--json")
    assert first.returncode == 0, first.stderr[-2000:]
    r = json.loads(first.stdout)
    assert r["done"] == 72 and r["skipped_existing"] == 0 and not (out / "flow").exists()
    (out / "rgb" / "v_Clap_g01_c01.npy").unlink()                        # as if interrupted
    again = json.loads(cmmc("data", "cache", "--root", tiny_root, "--out", out, "--short-side", "40",
                            "--modalities", "rgb", "--json").stdout)
    assert (again["done"], again["skipped_existing"]) == (1, 71)
    wrong = cmmc("data", "cache", "--root", tiny_root, "--out", out, "--short-side", "64")
    assert wrong.returncode == 2 and "short side 40" in wrong.stderr
    proc = cmmc("bench", "loader", "--root", tiny_root, "--workers", "0", "--batches", "2", "--warmup-batches", "1",
                "--batch", "2", "--frame-cache", out, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["results"][0]["clips_per_s"] > 0


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_cpu_at_its_reduced_size(tiny_root, tmp_path):
    report = bench.gpu_check(tmp_path / "out", budget_s=600, work=tmp_path / "work", synthetic_root=tiny_root,
                             progress=False)
    saved = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert saved["reduced"] is True and saved["machine"]["cpu_count"] >= 1 and saved["machine"]["gpu"] is None
    assert set(saved["phases"]) == {"step", "loader", "lesson06", "ddp", "compiled"}
    methods = {(x["method"], x["amp"]) for x in saved["step"]["results"] if not x.get("error")}
    assert methods == {("moco", "off"), ("cmmc", "off"), ("moco", "bf16"), ("cmmc", "bf16")}
    assert saved["loader"]["synthetic"]["results"][0]["clips_per_s"] > 0
    assert saved["loader"]["synthetic_cached"]["frame_cache"]
    assert saved["lesson06"]["ok"], saved["lesson06"]["error"]
    assert saved["ddp"]["ran"] is False and "needs two" in saved["ddp"]["reason"]
    assert "skipped" in saved["compiled"] and "skipped" in saved["cost"]
    assert saved["goals"]["cmmc_over_moco"]["met"].startswith("pending")
    assert report["seconds"] < 600


def test_bench_step_times_every_registered_method_and_skeleton_streams():
    from cmmc_lib.registry import METHODS
    names = [n for n, m in METHODS.items() if m.available]
    r = bench.bench_step("tiny", names, amps=["off"], device="cpu", steps=1, warmup=1, breakdown=False)
    rows = {x["method"]: x for x in r["results"]}
    assert set(rows) == set(names) and not [x["error"] for x in rows.values() if x["error"]]
    assert {f"{n}/moco@off" for n in names if n != "moco"} <= set(r["ratios"]["over_moco"])
    skel = bench.bench_step("tiny", ["moco", "cmmc"], amps=["off"], device="cpu", steps=1, warmup=1,
                            overrides=["schedule.modalities=joint,motion", "ssl.modality=joint",
                                       "ssl.other_modality=motion"], breakdown=False)
    assert skel["backbone"] == "stgcn" and not any(x["error"] for x in skel["results"])
