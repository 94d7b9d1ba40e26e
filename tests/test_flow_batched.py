"""tvl1-torch extraction batched across videos in one process (cmmc_lib.flow.batched): batches
that span videos, videos of other sizes, single frames and broken files, and Ctrl-C."""
from __future__ import annotations

import json
import os
import signal

import cv2
import numpy as np
import pytest

from cmmc_lib.data.rawframes import quantize_flow
from cmmc_lib.flow import batched
from cmmc_lib.flow.estimators import compute_flow
from cmmc_lib.flow.extract import ExtractionInterrupted, extract_flow
from cmmc_lib.flow.folders import COMPLETE_MARKER, is_flow_complete
from tests._gen_fixtures import decode, make_videos, read_flow_pairs, textured_frames, write_video


def test_batched_tvl1_torch_extraction_spans_videos_and_matches_compute_flow(tmp_path):
    paths = make_videos(tmp_path, n=3, frames=7)          # 6 pairs each: batches of 4 span videos
    summary = extract_flow(tmp_path / "videos", tmp_path / "flow", method="tvl1-torch",
                           batch_size=4, progress=False)
    json.dumps(summary)
    assert (summary["done"], summary["frames"], summary["device"]) == (3, 21, "cpu")
    for path in paths:
        folder = tmp_path / "flow" / path.stem
        assert is_flow_complete(folder, video_frames=7)
        assert json.loads((folder / COMPLETE_MARKER).read_text())["method"] == "tvl1-torch"
        stored = read_flow_pairs(folder).astype(int)
        expected = quantize_flow(compute_flow(decode(path), "tvl1-torch")).astype(int)
        assert np.abs(stored - expected).mean() < 1.5      # JPEG loss only
        np.testing.assert_array_equal(stored[-1], stored[-2])
    again = extract_flow(tmp_path / "videos", tmp_path / "flow", method="tvl1-torch", progress=False)
    assert (again["done"], again["skipped_existing"]) == (0, 3)


def test_batched_extraction_handles_other_sizes_one_frame_and_broken_videos(tmp_path):
    videos = tmp_path / "videos"
    write_video(videos / "big.avi", textured_frames(n=4, height=48, width=64))
    write_video(videos / "small.avi", textured_frames(n=3, height=32, width=48, seed=3))
    write_video(videos / "single.avi", textured_frames(n=1, seed=4))
    (videos / "broken.avi").write_bytes(b"not a video" * 40)
    summary = extract_flow(videos, tmp_path / "flow", method="tvl1-torch", batch_size=8,
                           progress=False)
    assert (summary["done"], summary["frames"]) == (3, 8)
    assert [p for p, _ in summary["failed"]] == [str(videos / "broken.avi")]
    assert cv2.imread(str(tmp_path / "flow" / "small" / "x_00003.jpg"), 0).shape == (32, 48)
    single = read_flow_pairs(tmp_path / "flow" / "single")
    assert single.shape == (1, 48, 64, 2) and np.abs(single.astype(int) - 128).max() <= 1


def test_ctrl_c_stops_a_batched_extraction_keeping_the_finished_videos(tmp_path, monkeypatch):
    make_videos(tmp_path, n=3, frames=4)
    real, calls = batched.tvl1_flow_pairs, []

    def ctrl_c_during_the_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)
    monkeypatch.setattr(batched, "tvl1_flow_pairs", ctrl_c_during_the_second_batch)
    flow_dir = tmp_path / "flow"
    with pytest.raises(ExtractionInterrupted) as stop:     # a batch is one video's 3 pairs
        extract_flow(tmp_path / "videos", flow_dir, method="tvl1-torch", batch_size=3,
                     progress=False)
    summary = stop.value.summary
    assert summary["interrupted"] is True
    assert (summary["done"], summary["remaining"], summary["frames"]) == (1, 2, 4)
    assert sorted(p.name for p in flow_dir.iterdir()) == ["v_0"]
    monkeypatch.setattr(batched, "tvl1_flow_pairs", real)
    resumed = extract_flow(tmp_path / "videos", flow_dir, method="tvl1-torch", progress=False)
    assert (resumed["done"], resumed["skipped_existing"]) == (2, 1)
