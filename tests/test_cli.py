"""The `cmmc` command: one JSON object with --json, a human summary without, one-line errors."""
import csv
import json
import math
import re
import os
import shlex
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from _data_fixtures import moving_square_frames, write_ucf_like_root, write_video

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
    proc = cmmc("data", "check", "--dataset", "ucf101", "--root", realdata / "ucf101", "--json")
    assert proc.returncode == 1, proc.stderr[-2000:]     # a handful of UCF101's 13320 videos: incomplete
    r = json.loads(proc.stdout)
    assert r["ok"] is False and r["subsets"]["train"]["expected"] == 9537
    assert r["subsets"]["test"]["expected"] == 3783      # split 1 expects 9537 train / 3783 test videos
    assert one_line_error(cmmc("data", "check", "--dataset", "ucf101", "--root", "/nonexistent/root"))


def test_data_check_exits_1_when_videos_are_missing_or_unreadable(tmp_path):
    root = write_ucf_like_root(tmp_path / "ucf101", num_frames=4, flow=False, pose=False)
    complete = cmmc("data", "check", "--dataset", "ucf101", "--root", root)
    assert complete.returncode == 0, complete.stderr[-2000:]
    assert "complete" in complete.stdout and "INCOMPLETE" not in complete.stdout
    (root / "videos" / "Alpha" / "v_Alpha_g02_c01.avi").unlink()
    (root / "videos" / "Alpha" / "v_Alpha_g01_c01.avi").write_bytes(b"not a video")
    quick = cmmc("data", "check", "--dataset", "ucf101", "--root", root)
    assert quick.returncode == 1
    assert quick.stdout.strip().splitlines()[-1] == "INCOMPLETE (exit status 1): train 1 missing"
    decoded = cmmc("data", "check", "--dataset", "ucf101", "--root", root, "--decode", "--json")
    assert decoded.returncode == 1 and json.loads(decoded.stdout)["subsets"]["test"]["unreadable"] == 1


def test_data_probe_exits_1_for_a_truncated_video(tmp_path):
    good = write_video(tmp_path / "good.avi", moving_square_frames(60))
    cut = tmp_path / "cut.avi"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])      # a copy that stopped midway
    proc = cmmc("data", "probe", good, cut)
    assert proc.returncode == 1
    lines = proc.stdout.strip().splitlines()
    assert "ERROR" not in lines[0]
    assert "ERROR: " in lines[1] and "decoding ended early: " in lines[1] and "of the 60 promised" in lines[1]
    assert lines[-1] == "1 decoded, 1 with errors"
    assert ok_json("data", "probe", good)["failed"] == 0


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


def test_tvl1_torch_from_the_command_line(tmp_path, realdata):
    video = realdata / "ucf101/videos/v_Punch_g03_c01.avi"
    r = ok_json("flow", "extract", video, "--out", tmp_path / "flow", "--method", "tvl1-torch", "--device", "cpu",
                "--batch-size", "2", "--short-side", "32")
    assert r["done"] == 1 and len(list((tmp_path / "flow" / "v_Punch_g03_c01").glob("y_*.jpg"))) == 108
    assert "batch" in one_line_error(cmmc("flow", "extract", video, "--out", tmp_path / "f2", "--method", "dis",
                                          "--batch-size", "4"))
    bench = ok_json("bench", "flow", "--videos", video, "--pairs", "1", "--methods", "dis", "tvl1-torch",
                    "--device", "cpu", "--batch-sizes", "1")
    assert bench["methods"]["dis"]["fps"] > 0 and bench["tvl1_torch"]["by_batch_size"]["1"]["fps"] > 0


@pytest.mark.parametrize("option, value", [("--bound", "0"), ("--bound", "-5"),
                                           ("--short-side", "0"), ("--short-side", "-1")])
def test_flow_extract_refuses_impossible_settings_up_front(tmp_path, option, value):
    video = write_video(tmp_path / "v.avi", moving_square_frames(3))
    line = one_line_error(cmmc("flow", "extract", video, "--out", tmp_path / "flow", option, value))
    assert f"{option[2:].replace('-', '_')} must be" in line and f"got {value}" in line
    assert not (tmp_path / "flow").exists()


def finished_flow_folders(out: Path) -> list[str]:
    """Names of the video folders in ``out`` that carry the completion marker."""
    return sorted(p.parent.name for p in out.glob("*/.complete") if not p.parent.name.startswith("."))


def live_processes_in_group(pgid: int) -> list[int]:
    """PIDs of the processes of group ``pgid`` still running (zombies aside); Linux /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue                                 # the process ended while we looked
        if int(group) == pgid and state not in ("Z", "X"):
            pids.append(int(stat.parent.name))
    return pids


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still waiting after {timeout} s for {what}"
        time.sleep(0.02)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux process groups and /proc")
def test_ctrl_c_stops_a_parallel_flow_extraction_and_reports_what_was_done(tmp_path):
    from cmmc_lib.cli import fmt_flow
    videos = tmp_path / "videos"
    write_video(videos / "a_long.avi", moving_square_frames(20, 240, 320))   # TV-L1: tens of seconds
    for i in range(3):
        write_video(videos / f"b_short{i}.avi", moving_square_frames(3, 32, 32, seed=i))
    out = tmp_path / "flow"
    proc = subprocess.Popen([sys.executable, "-m", "cmmc_lib.cli", "flow", "extract", str(videos), "--out",
                             str(out), "--workers", "2", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True)
    try:
        wait_until(lambda: finished_flow_folders(out) or proc.poll() is not None, 120, "a first video")
        assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, signal.SIGINT)           # Ctrl-C: a terminal signals the whole group
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr[-2000:]
    report = json.loads(stdout)                      # still exactly one JSON object
    finished = finished_flow_folders(out)
    assert report["interrupted"] is True and "a_long" not in finished
    assert report["done"] == len(finished) >= 1 and report["done"] + report["remaining"] == 4
    assert sorted(p.name for p in out.iterdir()) == finished        # no partial, no temporary folder
    wait_until(lambda: not live_processes_in_group(proc.pid), 10, "the workers to stop")
    assert "run the same command again to resume" in fmt_flow(report)


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


def test_mask_of_a_huge_map_keeps_lam_exact_and_refuses_absurd_sizes():
    r = ok_json("mask", "--shape", "100000,100000,100000,100000", "--seed", "0")
    volume = math.prod(b - a for a, b in r["box"].values())
    assert r["box_volume"] == volume                     # exact, beyond int64
    assert 0 <= r["lam"] <= 1 and r["lam"] == float(Fraction(10**20 - volume, 10**20))
    assert "at most 2**53" in one_line_error(cmmc("mask", "--shape", f"1,1,1,{2**53 + 1}"))


def test_json_output_is_strict_json_even_for_non_finite_numbers(monkeypatch, capsys):
    from cmmc_lib import cli
    monkeypatch.setattr(cli, "cmd_mask", lambda a: {
        "loss": float("nan"), "R@k": [float("inf"), 0.5], "run": {"lr": -float("inf"), "ok": True},
        "acc": np.float32("nan"), "steps": np.int64(3)})
    assert cli.main(["mask", "--shape", "1,1,1,1", "--json"]) == 0

    def reject(word):
        raise ValueError(f"not JSON: {word}")
    out = json.loads(capsys.readouterr().out, parse_constant=reject)
    assert out == {"loss": None, "R@k": [None, 0.5], "run": {"lr": None, "ok": True}, "acc": None, "steps": 3}


def test_a_closed_stdout_exits_non_zero_without_a_traceback():
    read_end, write_end = os.pipe()
    os.close(read_end)                                   # the reader has gone, as `| head -c 10` does
    try:
        gone = subprocess.run([sys.executable, "-m", "cmmc_lib.cli", "mask", "--shape", "8,8,8,8", "--json"],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, cwd=REPO)
    finally:
        os.close(write_end)
    assert gone.returncode == 1 and gone.stderr == ""
    closed = subprocess.run(f"{shlex.quote(sys.executable)} -m cmmc_lib.cli mask --shape 8,8,8,8 >&-",
                            shell=True, stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert closed.returncode == 1 and closed.stderr.strip() == "cmmc: error: stdout is closed: the result cannot be printed"


# ----------------------------------------------------------------------------- bad input, clear answers
def test_mask_refuses_an_infinite_alpha_in_its_own_words():
    assert "alpha must be a finite number > 0" in one_line_error(cmmc("mask", "--shape", "4,4,4,4", "--alpha", "inf"))


def test_probe_refuses_a_pipe_instead_of_waiting_for_it(tmp_path):
    fifo = tmp_path / "clip.avi"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "cmmc_lib.cli", "data", "probe", str(fifo)], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert "not a regular file" in one_line_error(proc)


def test_flow_extract_on_a_folder_without_videos_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "no video files" in one_line_error(cmmc("flow", "extract", tmp_path / "empty", "--out", tmp_path / "f"))


def test_data_check_calls_an_empty_training_list_incomplete(tmp_path):
    root = write_ucf_like_root(tmp_path / "ucf101")
    (root / "splits" / "trainlist01.txt").write_text("")
    proc = cmmc("data", "check", "--dataset", "ucf101", "--root", root)
    assert proc.returncode == 1 and "INCOMPLETE" in proc.stdout and "the list is empty" in proc.stdout


def test_an_error_is_printed_on_a_line_of_its_own_after_a_progress_bar(capfd):
    from tqdm.auto import tqdm

    from cmmc_lib.cli import say
    bar = tqdm(total=10, file=sys.stderr, desc="working", leave=False)
    bar.update(3)
    say("cmmc: error: something went wrong")
    bar.close()
    err = capfd.readouterr().err
    # the bar's line is wiped (carriage return) and the error starts a line: never "...it/s]cmmc: error"
    assert re.search(r"(^|[\r\n])cmmc: error: something went wrong\n", err), err


def test_pretrain_with_unreadable_training_videos_finishes_says_so_and_exits_1(tiny_root, tmp_path):
    import shutil
    root = tmp_path / "tiny"
    # without the frame cache that pipelines build in the shared root: a cached video is read from
    # the cache (authoritative once built), so only an uncached one can be found unreadable
    shutil.copytree(tiny_root, root, ignore=shutil.ignore_patterns("frames_s*"))
    bad = sorted((root / "videos").rglob("*.mp4"))[5]
    bad.write_bytes(bad.read_bytes()[:300])                     # a video cut short
    proc = cmmc("pretrain", "--preset", "tiny", "--run-dir", tmp_path / "run", f"data.root={root}",
                "run.max_steps=3", "run.knn_every=0")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "1 unreadable training video(s) left out" in proc.stdout and bad.stem in proc.stdout


def test_a_log_warning_during_a_progress_bar_starts_a_line_of_its_own(capfd):
    import logging

    from tqdm.auto import tqdm

    from cmmc_lib.console import BarSafeHandler
    logger = logging.getLogger("cmmc_lib.test_bar")
    handler = BarSafeHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    try:
        bar = tqdm(total=10, file=sys.stderr, desc="epoch 1/3", leave=False)
        bar.update(3)
        logger.warning("skipping unreadable video v_Squat_g04_c03")
        bar.close()
    finally:
        logger.removeHandler(handler)
    err = capfd.readouterr().err
    assert re.search(r"(^|[\r\n])WARNING cmmc_lib.test_bar: skipping unreadable video v_Squat_g04_c03\n", err), err
