"""Fault injection: `cmmc pipeline` and `cmmc ablate` at the tiny preset are stopped with Ctrl-C
(SIGINT) and killed outright (SIGKILL) at several points, each time run again, and must end exactly
where an uninterrupted run ends: the same final weights, the same results rows."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cmmc_lib.files import read_jsonl
from cmmc_lib.runs import RunFolder, read_metrics

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# every run-time setting the same in all runs; log_every=1 so that each step's row marks where we are
TINY = ["optim.epochs=1", "schedule.cycles=1", "schedule.cycle_epochs=1", "run.knn_every=0", "run.ckpt_every=2",
        "run.log_every=1"]


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cmmc_lib.cli", *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def steps_done(run_dir: Path) -> int:
    try:
        return sum(r["kind"] == "step" for r in read_metrics(run_dir))
    except (OSError, ValueError):
        return 0


def stop_when(proc: subprocess.Popen, reached, sig: int, what: str) -> int:
    """Send ``sig`` to ``proc`` as soon as ``reached()`` holds; its exit status."""
    deadline = time.monotonic() + 300
    while not reached():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"finished before the kill point ({what}): {err[-1500:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"never reached the kill point ({what})")
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err[-1500:]
        assert "interrupted" in err
    return proc.returncode


def finish(*args) -> dict:
    proc = start(*args, "--json")
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out)


def final_states(root: Path) -> dict[str, dict]:
    return {p.name: RunFolder(p).load_checkpoint(needs=("method",)) for p in sorted(root.iterdir())
            if (p / "config.json").is_file()}


def assert_same_weights(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert a.keys() == b.keys()
    for stage in a:
        assert a[stage]["step"] == b[stage]["step"], stage
        for key in ("backbone", "method"):
            for name, tensor in a[stage][key].items():
                assert torch.equal(tensor, b[stage][key][name]), (stage, key, name)


def test_a_pipeline_stopped_and_killed_at_four_points_ends_as_an_uninterrupted_one(tiny_root, tmp_path):
    args = ["pipeline", "--preset", "tiny", "--method", "cmmc", f"data.root={tiny_root}", *TINY]
    reference = finish(*args, "--run-dir", tmp_path / "ref")
    assert reference["finished"]
    run = tmp_path / "cut"
    kill_points = [("stage1-rgb", 3, signal.SIGINT), ("stage1-flow", 1, signal.SIGKILL),
                   ("cycle1-rgb", 2, signal.SIGINT), ("cycle1-flow", 3, signal.SIGKILL)]
    for stage, steps, sig in kill_points:
        proc = start(*args, "--run-dir", run)
        stop_when(proc, lambda: steps_done(run / stage) >= steps, sig, f"{stage} after {steps} steps")
        assert not RunFolder(run / stage).is_finished()
    rerun = finish(*args, "--run-dir", run)
    assert rerun["finished"] and [s["reused"] for s in rerun["stages"]] == [True, True, True, False]
    assert_same_weights(final_states(run), final_states(tmp_path / "ref"))


def test_an_ablation_stopped_and_killed_in_training_and_in_evaluation_writes_the_same_rows(tiny_root, tmp_path):
    def ablate(out: Path) -> subprocess.Popen:
        return start("ablate", "--preset", "tiny", "--seeds", "1", "--variants", "moco,cmmc", "--no-curves", "--out",
                     out, "--json", f"data.root={tiny_root}", "eval.probe_epochs=5", *TINY)

    def rows(out: Path) -> list[dict]:
        # the measurement, without where and how long it was made (the command names its --out)
        where = {"seconds", "wall_s", "train_s", "command", "commit", "machine"}
        return sorted((json.dumps({k: v for k, v in r.items() if k not in where}, sort_keys=True)
                       for r in read_jsonl(out / "results.jsonl")))

    ref = ablate(tmp_path / "ref")
    assert ref.wait(timeout=900) == 0, ref.stderr.read()[-2000:]
    out = tmp_path / "cut"
    stop_when(ablate(out), lambda: steps_done(out / "seed0" / "cmmc" / "cycle1-rgb") >= 2, signal.SIGINT,
              "CMMC's cycle 1 after 2 steps")
    assert not (out / "results.jsonl").exists()                   # nothing evaluated from a half-trained run
    stop_when(ablate(out), lambda: len(read_jsonl(out / "results.jsonl")) >= 1, signal.SIGKILL,
              "after the first evaluation")
    stop_when(ablate(out), lambda: len(read_jsonl(out / "results.jsonl")) >= 3, signal.SIGINT,
              "after the third evaluation")
    last = ablate(out)
    assert last.wait(timeout=900) == 0, last.stderr.read()[-2000:]
    assert rows(out) == rows(tmp_path / "ref") and len(rows(out)) == 2 * 2 * 2     # variants x protocols x sets
