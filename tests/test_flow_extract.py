"""Flow extraction over many videos (cmmc_lib.flow.extract): frame-aligned pairs that match
compute_flow, resumable, parallel, Ctrl-C-safe, refusing impossible settings up front."""
from __future__ import annotations

import csv
import json
import os
import signal

import cv2
import numpy as np
import pytest

from cmmc_lib.data.rawframes import quantize_flow
from cmmc_lib.flow import extract as extract_module
from cmmc_lib.flow.estimators import compute_flow
from cmmc_lib.flow.extract import ExtractionInterrupted, extract_flow
from cmmc_lib.flow.folders import COMPLETE_MARKER, flow_pair_count, is_flow_complete
from tests._gen_fixtures import (decode, make_videos, read_flow_pairs, require_realdata,
                                 textured_frames, write_flat_flow_pairs, write_video)


def test_extract_flow_writes_frame_aligned_pairs_that_match_compute_flow(tmp_path):
    (video,) = make_videos(tmp_path, n=1)
    summary = extract_flow(video, tmp_path / "flow", method="dis", progress=False)
    json.dumps(summary)                                   # the CLI prints it
    decoded = decode(video)
    assert summary["done"] == 1 and summary["frames"] == len(decoded) == 7
    folder = tmp_path / "flow" / "v_0"
    assert flow_pair_count(folder) == 7 and is_flow_complete(folder)
    stored = read_flow_pairs(folder).astype(int)
    expected = quantize_flow(compute_flow(decoded, "dis")).astype(int)
    assert np.abs(stored - expected).mean() < 1.5          # JPEG loss only
    np.testing.assert_array_equal(stored[-1], stored[-2])
    assert not [p for p in (tmp_path / "flow").iterdir() if p.name.startswith(".")]


def test_extract_flow_resumes_skips_finished_and_survives_a_corrupt_video(tmp_path):
    make_videos(tmp_path, n=2)
    bad = tmp_path / "videos" / "Cls9" / "broken.mp4"
    bad.parent.mkdir()
    bad.write_bytes(b"\x00\x00\x01\xb3 not really a video" * 50)
    flow_dir = tmp_path / "flow"
    first = extract_flow(tmp_path / "videos", flow_dir, method="farneback", progress=False)
    assert first["done"] == 2 and first["skipped_existing"] == 0
    assert [p for p, _ in first["failed"]] == [str(bad)]

    # a partial folder (interrupted by another tool) and a leftover temp folder of a killed run
    (flow_dir / "v_1" / COMPLETE_MARKER).unlink()
    (flow_dir / "v_1" / "y_00007.jpg").unlink()
    (flow_dir / ".v_1.tmp-123-abc").mkdir()
    marker_before = (flow_dir / "v_0" / COMPLETE_MARKER).stat().st_mtime_ns
    second = extract_flow(tmp_path / "videos", flow_dir, method="farneback", progress=False)
    assert second["done"] == 1 and second["skipped_existing"] == 1 and len(second["failed"]) == 1
    assert flow_pair_count(flow_dir / "v_1") == 7
    assert (flow_dir / "v_0" / COMPLETE_MARKER).stat().st_mtime_ns == marker_before
    assert not (flow_dir / ".v_1.tmp-123-abc").exists()

    third = extract_flow(tmp_path / "videos", flow_dir, method="farneback", overwrite=True,
                         progress=False)
    assert third["done"] == 2 and third["skipped_existing"] == 0


def test_finished_flow_of_another_method_is_kept_with_a_warning(tmp_path, caplog):
    make_videos(tmp_path, n=1, frames=3)
    extract_flow(tmp_path / "videos", tmp_path / "flow", method="dis", progress=False)
    with caplog.at_level("WARNING", logger="cmmc_lib.flow.extract"):
        again = extract_flow(tmp_path / "videos", tmp_path / "flow", method="farneback",
                             progress=False)
    assert again["skipped_existing"] == 1 and again["done"] == 0
    assert "another method" in caplog.text and "overwrite=True" in caplog.text


def test_resume_redoes_a_partial_folder_and_keeps_a_finished_one_of_another_tool(tmp_path):
    videos = tmp_path / "videos"
    write_video(videos / "v_partial.avi", textured_frames(n=24, seed=1))
    write_video(videos / "v_denseflow.avi", textured_frames(n=5, seed=2))
    flow_dir = tmp_path / "flow"
    write_flat_flow_pairs(flow_dir / "v_partial", 3)                # 3 of 24 fields, no marker
    write_flat_flow_pairs(flow_dir / "v_denseflow", 4)              # N - 1 fields: what denseflow writes
    summary = extract_flow(videos, flow_dir, method="farneback", progress=False)
    assert summary["done"] == 1 and summary["skipped_existing"] == 1
    assert flow_pair_count(flow_dir / "v_partial") == 24
    assert (flow_dir / "v_partial" / COMPLETE_MARKER).is_file()
    assert flow_pair_count(flow_dir / "v_denseflow") == 4  # left as it was
    assert not (flow_dir / "v_denseflow" / COMPLETE_MARKER).exists()


@pytest.mark.parametrize("setting, message", [
    ({"bound": 0}, "bound must be"), ({"bound": -20.0}, "bound must be"),
    ({"bound": float("nan")}, "bound must be"), ({"bound": float("inf")}, "bound must be"),
    ({"short_side": 0}, "short_side must be >= 1"), ({"short_side": -64}, "short_side must be >= 1"),
])
def test_impossible_settings_are_refused_before_any_video_is_read(tmp_path, setting, message):
    (video,) = make_videos(tmp_path, n=1, frames=2)
    with pytest.raises(ValueError, match=message):
        extract_flow(video, tmp_path / "flow", method="dis", progress=False, **setting)
    assert not (tmp_path / "flow").exists()


def test_ctrl_c_stops_a_serial_extraction_keeping_the_finished_videos(tmp_path, monkeypatch):
    make_videos(tmp_path, n=3, frames=4)
    real_compute, calls = extract_module.compute_flow, []

    def ctrl_c_during_the_second_video(frames, method):
        calls.append(method)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)            # the user presses Ctrl-C
        return real_compute(frames, method)
    monkeypatch.setattr(extract_module, "compute_flow", ctrl_c_during_the_second_video)
    flow_dir = tmp_path / "flow"
    try:
        extract_flow(tmp_path / "videos", flow_dir, method="dis", progress=False)
        pytest.fail("Ctrl-C went unnoticed")
    except ExtractionInterrupted as stop:                  # still a KeyboardInterrupt for callers
        summary = stop.summary
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped extract_flow without its report")
    assert summary["interrupted"] is True
    assert (summary["done"], summary["remaining"], summary["frames"]) == (1, 2, 4)
    assert sorted(p.name for p in flow_dir.iterdir()) == ["v_0"]   # no partial or temp folder
    monkeypatch.setattr(extract_module, "compute_flow", real_compute)
    resumed = extract_flow(tmp_path / "videos", flow_dir, method="dis", progress=False)
    assert (resumed["done"], resumed["skipped_existing"], resumed["interrupted"]) == (2, 1, False)


def test_parallel_extraction_equals_serial(tmp_path):
    make_videos(tmp_path, n=3, frames=5)
    serial = extract_flow(tmp_path / "videos", tmp_path / "a", "dis", workers=1, progress=False)
    parallel = extract_flow(tmp_path / "videos", tmp_path / "b", "dis", workers=2, progress=False)
    assert serial["done"] == parallel["done"] == 3 and serial["frames"] == parallel["frames"] == 15
    for vid in ("v_0", "v_1", "v_2"):
        np.testing.assert_array_equal(read_flow_pairs(tmp_path / "a" / vid),
                                      read_flow_pairs(tmp_path / "b" / vid))


def test_duplicate_video_ids_are_rejected(tmp_path):
    clip = textured_frames(n=2)
    write_video(tmp_path / "A" / "same.avi", clip)
    write_video(tmp_path / "B" / "same.avi", clip)
    with pytest.raises(ValueError, match="same"):
        extract_flow(tmp_path, tmp_path / "flow", "dis", progress=False)


@pytest.mark.realdata
def test_real_ucf101_video_gets_one_pair_per_decoded_frame(tmp_path):
    video = require_realdata("ucf101", "videos", "v_Punch_g03_c01.avi")
    with open(video.parents[2] / "decoded_frames.csv") as fh:
        counts = {r["path"]: int(r["decoded_frames"]) for r in csv.DictReader(fh)}
    summary = extract_flow(video, tmp_path, method="dis", short_side=64, progress=False)
    assert summary["failed"] == []
    folder = tmp_path / "v_Punch_g03_c01"
    assert flow_pair_count(folder) == counts["ucf101/videos/v_Punch_g03_c01.avi"] == 108
    x1 = cv2.imread(str(folder / "x_00001.jpg"), cv2.IMREAD_GRAYSCALE)
    assert x1.shape == (64, 85)                            # 320x240 at short side 64


def test_tvl1_torch_in_a_worker_pool_equals_one_process(tmp_path):
    make_videos(tmp_path, n=2, frames=4)
    one = extract_flow(tmp_path / "videos", tmp_path / "a", "tvl1-torch", progress=False)
    pool = extract_flow(tmp_path / "videos", tmp_path / "b", "tvl1-torch", workers=2, progress=False)
    assert one["done"] == pool["done"] == 2
    for vid in ("v_0", "v_1"):
        np.testing.assert_array_equal(read_flow_pairs(tmp_path / "a" / vid), read_flow_pairs(tmp_path / "b" / vid))


@pytest.mark.parametrize("setting, message", [
    ({"method": "tvl1-torch", "device": "cuda"}, "CUDA is not available"),
    ({"method": "tvl1-torch", "batch_size": 0}, "batch_size must be"),
    ({"method": "dis", "device": "cuda"}, "runs on the CPU"),
    ({"method": "dis", "batch_size": 4}, "batch_size is for tvl1-torch"),
])
def test_device_and_batch_size_are_checked_before_any_video_is_read(tmp_path, setting, message):
    if "CUDA" in message and __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    (video,) = make_videos(tmp_path, n=1, frames=2)
    with pytest.raises(ValueError, match=message):
        extract_flow(video, tmp_path / "flow", progress=False, **setting)
    assert not (tmp_path / "flow").exists()
    with pytest.raises(ValueError, match=message):
        compute_flow(textured_frames(n=2), **setting)


def test_a_missing_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        extract_flow(tmp_path / "nowhere", tmp_path / "out", progress=False)
