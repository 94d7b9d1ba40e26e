"""The `cmmc` command: one JSON object with --json, a human summary without, one-line errors."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def cmmc(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "cmmc_lib.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def ok_json(*args):
    proc = cmmc(*args, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)            # exactly one JSON object on stdout


def one_line_error(proc):
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("cmmc: error:") or "error:" in last
    return last


def test_mask_prints_a_tesseract():
    r = ok_json("mask", "--shape", "64,16,32,32", "--alpha", "1", "--seed", "3")
    vol = 1
    for a, b in r["box"].values():
        assert 0 <= a <= b
        vol *= b - a
    assert r["box_volume"] == vol and r["lam"] == pytest.approx(1 - vol / (64 * 16 * 32 * 32))
    human = cmmc("mask", "--shape", "480,16,16,16", "--dims", "thw")
    assert human.returncode == 0 and "kept fraction lam" in human.stdout and "C[0:480)" in human.stdout
    assert "rank" in one_line_error(cmmc("mask", "--shape", "4,4"))
    assert "unknown: q" in one_line_error(cmmc("mask", "--shape", "4,4,4,4", "--dims", "tq"))
    assert "alpha" in one_line_error(cmmc("mask", "--shape", "4,4,4,4", "--alpha", "0"))
    assert "comma-separated" in one_line_error(cmmc("mask", "--shape", "a,b"))


def test_data_probe_counts_real_frames(realdata):
    expected = {r["path"]: int(r["decoded_frames"]) for r in csv.DictReader(open(realdata / "decoded_frames.csv"))}
    rel = "ucf101/videos_reencoded/v_CliffDiving_g03_c01.mp4"          # raw MPEG-4: no container counts
    r = ok_json("data", "probe", realdata / rel)
    assert r["videos"][0]["frames"] == expected[rel] and r["ok"] == 1
    assert "no such file" in one_line_error(cmmc("data", "probe", "nope.avi"))


def test_data_check_against_the_official_ucf101_split(realdata):
    r = ok_json("data", "check", "--dataset", "ucf101", "--root", realdata / "ucf101")
    text = json.dumps(r)
    assert "9537" in text and "3783" in text            # split 1 expects 9537 train / 3783 test videos
    assert one_line_error(cmmc("data", "check", "--dataset", "ucf101", "--root", "/nonexistent/root"))


def test_data_synth_and_flow_extract(tmp_path, realdata):
    r = ok_json("data", "synth", "--out", tmp_path / "syn", "--size", "tiny", "--videos", "6")
    assert r["videos"] == 6 and (tmp_path / "syn" / "splits" / "classInd.txt").is_file()
    video = realdata / "ucf101/videos/v_Punch_g03_c01.avi"
    first = ok_json("flow", "extract", video, "--out", tmp_path / "flow", "--method", "dis", "--short-side", "64")
    assert first["done"] == 1 and len(list((tmp_path / "flow" / "v_Punch_g03_c01").glob("x_*.jpg"))) == 108
    again = ok_json("flow", "extract", video, "--out", tmp_path / "flow", "--method", "dis", "--short-side", "64")
    assert again["done"] == 0 and again["skipped_existing"] == 1          # resumable
    assert "no such video" in one_line_error(cmmc("flow", "extract", tmp_path / "missing", "--out", tmp_path))
    (tmp_path / "bad.avi").write_bytes(b"not a video")
    bad = cmmc("flow", "extract", tmp_path / "bad.avi", "--out", tmp_path / "flow", "--method", "dis")
    assert bad.returncode == 1 and "failed: " in bad.stdout and "bad.avi" in bad.stdout


def test_pretrain_then_eval_retrieval(tmp_path):
    from cmmc_lib.data.synthetic import write_synthetic_dataset
    root = REPO / "data" / "synthetic" / "tiny"
    write_synthetic_dataset(root, size="tiny", progress=False)
    run = tmp_path / "run"
    ok_json("pretrain", "--preset", "tiny", "--run-dir", run, f"data.root={root}", "run.max_steps=2", "knn_every=0")
    r = ok_json("eval", "retrieval", "--run", run)
    assert r["streams"][0]["modality"] == "rgb" and 0 <= r["streams"][0]["R@1"] <= 1
    assert (run / "eval.jsonl").is_file()
    assert "not a run folder" in one_line_error(cmmc("eval", "retrieval", "--run", tmp_path))


def test_bad_training_settings_fail_with_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    for args, words in [(["run.ckpt_every=0"], "ckpt_every must be >= 1"), (["data.size=0"], "data.size must be"),
                        (["run.amp=fp16"], "run.amp"), (["--run-dir", tmp_path / "file"], "error"),
                        (["--resume"], "--resume needs --run-dir")]:
        assert words in one_line_error(cmmc("pretrain", "--preset", "tiny", *args))


def test_bench_step_reports_throughput():
    r = ok_json("bench", "step", "--backbone", "small3d", "--width", "4", "--batch", "2", "--clip", "3,4,16,16",
                "--steps", "2", "--warmup", "1")
    assert r["steps_per_s"] > 0
