"""Flow speed (cmmc_lib.flow.speed): fields per second per method and per tvl1-torch batch size."""
from __future__ import annotations

import json

from cmmc_lib.flow.speed import bench_flow, measure_flow_fps
from tests._gen_fixtures import make_videos, textured_frames


def test_measure_flow_fps_reports_a_positive_rate():
    r = measure_flow_fps(textured_frames(n=4), "farneback", pairs=2)
    assert r["fps"] > 0 and r["pairs"] == 2 and r["threads"] == 1


def test_measure_flow_fps_of_tvl1_torch_counts_whole_batches():
    r = measure_flow_fps(textured_frames(n=4), "tvl1-torch", pairs=3, batch_size=2)
    assert (r["pairs"], r["batch_size"], r["device"]) == (4, 2, "cpu")
    assert r["fps"] > 0 and r["fps_per_cpu_second"] > 0 and r["iterations_per_field"] > 0


def test_bench_flow_reports_every_method_and_each_batch_size(tmp_path):
    (video,) = make_videos(tmp_path, n=1, frames=5)
    r = bench_flow([video], methods=["tvl1", "dis", "tvl1-torch"], batch_sizes=[1, 2], pairs=2,
                   size=(48, 64))
    json.dumps(r)
    assert (r["height"], r["width"], r["device"]) == (48, 64, "cpu")
    assert set(r["methods"]) == {"tvl1", "dis"} and set(r["tvl1_torch"]["by_batch_size"]) == {"1", "2"}
    assert r["tvl1_torch"]["best_batch_size"] in (1, 2) and r["speedup_per_core_vs_opencv_tvl1"] > 0
