"""The GPU check of tvl1-torch (cmmc_lib.flow.gpu_check), run on the CPU at a tiny size: both
steps, and ``python -m cmmc_lib.flow.gpu_check`` as a command."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cmmc_lib.flow.gpu_check import main
from tests._gen_fixtures import REPO_ROOT, textured_frames, write_video


pytestmark = pytest.mark.usefixtures("one_thread")


def test_gpu_check_prepares_and_runs_at_a_tiny_size_on_the_cpu(tmp_path):
    videos = [str(write_video(tmp_path / f"v{i}.avi", textured_frames(n=5, height=48, width=64,
                                                                        dx=1.0 + i, seed=i)))
              for i in range(2)]
    data = tmp_path / "pairs.npz"
    assert main(["prepare", "--videos", *videos, "--out", str(data), "--frames-per-video", "3",
                 "--reference-pairs", "1", "--size", "40", "48"]) == 0
    assert main(["run", "--data", str(data), "--out", str(tmp_path / "out"), "--device", "cpu",
                 "--batch-sizes", "1", "2", "--modes", "eager"]) == 0
    report = json.loads((tmp_path / "out" / "tvl1_gpu_check.json").read_text())
    eager = report["modes"]["eager"]
    assert set(eager["by_batch_size"]) == {"1", "2"} and "error" not in eager
    assert eager["by_batch_size"]["2"]["fps"] > 0 and report["target_fps"] == 300
    assert eager["epe_vs_opencv_real"] < 0.25 and eager["gt_epe"] <= 1.10 * eager["gt_epe_opencv"] + 0.02
    assert report["size"] == [40, 48] and report["speed_pairs"] == 4


def test_it_runs_as_a_module_without_pyav_or_opencv():
    # the GPU machine has neither PyAV nor OpenCV's contrib module: `run` must not import them
    code = ("import runpy, sys; sys.argv = ['gpu_check', '--help']\n"
            "try:\n    runpy.run_module('cmmc_lib.flow.gpu_check', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print(sorted({'av', 'cv2'} & set(sys.modules)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "prepare" in r.stdout and "run" in r.stdout and r.stdout.strip().endswith("[]")
