"""Optical flow: computation, uint8 storage, and resumable parallel extraction."""
from __future__ import annotations

import csv
import json
import os
import signal

import cv2
import numpy as np
import pytest

from cmmc_lib.data import flow as flow_module
from cmmc_lib.data.flow import (COMPLETE_MARKER, FLOW_METHODS, ExtractionInterrupted, compute_flow,
                                dequantize_flow, extract_flow, flow_pair_count, is_flow_complete,
                                measure_flow_fps, quantize_flow)
from tests._gen_fixtures import decode, require_realdata, textured_frames, write_video


def _read_pairs(folder) -> np.ndarray:
    n = flow_pair_count(folder)
    return np.stack([np.stack([cv2.imread(str(folder / f"{a}_{t:05d}.jpg"), cv2.IMREAD_GRAYSCALE)
                               for a in "xy"], -1) for t in range(1, n + 1)])


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_compute_flow_recovers_a_known_translation(method):
    frames = textured_frames(n=4, dx=2.0, dy=-1.0)
    flow = compute_flow(frames, method)
    assert flow.shape == (4, 48, 64, 2) and flow.dtype == np.float32
    inner = flow[:3, 10:-10, 10:-10]                     # away from the borders
    assert np.median(inner[..., 0]) == pytest.approx(2.0, abs=0.3)
    assert np.median(inner[..., 1]) == pytest.approx(-1.0, abs=0.3)
    np.testing.assert_array_equal(flow[-1], flow[-2])     # frame-aligned: last duplicated


def test_compute_flow_of_one_frame_is_one_zero_field_and_grey_input_works():
    frames = textured_frames(n=3)
    assert np.array_equal(compute_flow(frames[:1], "dis"), np.zeros((1, 48, 64, 2), np.float32))
    grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
    np.testing.assert_array_equal(compute_flow(grey, "dis"), compute_flow(frames, "dis"))


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown flow method"):
        compute_flow(textured_frames(n=2), "lucas")
    with pytest.raises(ValueError, match="uint8"):
        compute_flow(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        extract_flow(tmp_path / "nowhere", tmp_path / "out", progress=False)


def test_quantize_follows_the_tsn_convention_and_round_trips():
    f = np.array([-20.0, 0.0, 20.0, -50.0, 50.0, 3.3], np.float32)
    q = quantize_flow(f)
    assert q.dtype == np.uint8
    assert q.tolist()[:5] == [0, 128, 255, 0, 255]       # 127.5 rounds to 128; clipped at +-20
    x = np.linspace(-20, 20, 1001, dtype=np.float32)
    err = np.abs(dequantize_flow(quantize_flow(x)) - x)
    assert err.max() <= 20 / 255 + 1e-5                    # half a step of 40/255
    assert dequantize_flow(quantize_flow(f, bound=5), bound=5)[3] == pytest.approx(-5)


def _make_videos(root, n=2, frames=7):
    paths = []
    for i in range(n):
        clip = textured_frames(n=frames, dx=1.0 + i, seed=i)
        paths.append(write_video(root / "videos" / f"Cls{i}" / f"v_{i}.avi", clip))
    return paths


def test_extract_flow_writes_frame_aligned_pairs_that_match_compute_flow(tmp_path):
    (video,) = _make_videos(tmp_path, n=1)
    summary = extract_flow(video, tmp_path / "flow", method="dis", progress=False)
    json.dumps(summary)                                   # the CLI prints it
    decoded = decode(video)
    assert summary["done"] == 1 and summary["frames"] == len(decoded) == 7
    folder = tmp_path / "flow" / "v_0"
    assert flow_pair_count(folder) == 7 and is_flow_complete(folder)
    stored = _read_pairs(folder).astype(int)
    expected = quantize_flow(compute_flow(decoded, "dis")).astype(int)
    assert np.abs(stored - expected).mean() < 1.5          # JPEG loss only
    np.testing.assert_array_equal(stored[-1], stored[-2])
    assert not [p for p in (tmp_path / "flow").iterdir() if p.name.startswith(".")]


def test_extract_flow_resumes_skips_finished_and_survives_a_corrupt_video(tmp_path):
    _make_videos(tmp_path, n=2)
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
    _make_videos(tmp_path, n=1, frames=3)
    extract_flow(tmp_path / "videos", tmp_path / "flow", method="dis", progress=False)
    with caplog.at_level("WARNING", logger="cmmc_lib.data.flow"):
        again = extract_flow(tmp_path / "videos", tmp_path / "flow", method="farneback",
                             progress=False)
    assert again["skipped_existing"] == 1 and again["done"] == 0
    assert "another method" in caplog.text and "overwrite=True" in caplog.text


def _write_pairs(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(1, n + 1):
        for a in "xy":
            cv2.imwrite(str(folder / f"{a}_{t:05d}.jpg"), np.full((4, 4), 128, np.uint8))


def test_a_folder_without_our_marker_is_judged_against_the_videos_frame_count(tmp_path):
    folder = tmp_path / "v_x"
    _write_pairs(folder, 3)
    assert is_flow_complete(folder, video_frames=3)        # frame-aligned, as we write it
    assert is_flow_complete(folder, video_frames=4)        # one field per frame pair (denseflow)
    assert not is_flow_complete(folder, video_frames=24)   # 3 of 24 fields: interrupted
    assert not is_flow_complete(folder)                    # video unknown: cannot tell
    (folder / "y_00003.jpg").unlink()
    assert not is_flow_complete(folder, video_frames=3)    # an x without its y


def test_our_marker_is_trusted_only_when_its_pairs_are_there(tmp_path):
    (video,) = _make_videos(tmp_path, n=1)
    extract_flow(video, tmp_path / "flow", method="dis", progress=False)
    folder = tmp_path / "flow" / "v_0"
    assert is_flow_complete(folder) and is_flow_complete(folder, video_frames=7)
    assert not is_flow_complete(folder, video_frames=8)    # the video changed since
    (folder / "x_00007.jpg").unlink()
    assert not is_flow_complete(folder)


def test_resume_redoes_a_partial_folder_and_keeps_a_finished_one_of_another_tool(tmp_path):
    videos = tmp_path / "videos"
    write_video(videos / "v_partial.avi", textured_frames(n=24, seed=1))
    write_video(videos / "v_denseflow.avi", textured_frames(n=5, seed=2))
    flow_dir = tmp_path / "flow"
    _write_pairs(flow_dir / "v_partial", 3)                # 3 of 24 fields, no marker
    _write_pairs(flow_dir / "v_denseflow", 4)              # N - 1 fields: what denseflow writes
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
    (video,) = _make_videos(tmp_path, n=1, frames=2)
    with pytest.raises(ValueError, match=message):
        extract_flow(video, tmp_path / "flow", method="dis", progress=False, **setting)
    assert not (tmp_path / "flow").exists()


def test_ctrl_c_stops_a_serial_extraction_keeping_the_finished_videos(tmp_path, monkeypatch):
    _make_videos(tmp_path, n=3, frames=4)
    real_compute, calls = flow_module.compute_flow, []

    def ctrl_c_during_the_second_video(frames, method):
        calls.append(method)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)            # the user presses Ctrl-C
        return real_compute(frames, method)
    monkeypatch.setattr(flow_module, "compute_flow", ctrl_c_during_the_second_video)
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
    monkeypatch.setattr(flow_module, "compute_flow", real_compute)
    resumed = extract_flow(tmp_path / "videos", flow_dir, method="dis", progress=False)
    assert (resumed["done"], resumed["skipped_existing"], resumed["interrupted"]) == (2, 1, False)


def test_parallel_extraction_equals_serial(tmp_path):
    _make_videos(tmp_path, n=3, frames=5)
    serial = extract_flow(tmp_path / "videos", tmp_path / "a", "dis", workers=1, progress=False)
    parallel = extract_flow(tmp_path / "videos", tmp_path / "b", "dis", workers=2, progress=False)
    assert serial["done"] == parallel["done"] == 3 and serial["frames"] == parallel["frames"] == 15
    for vid in ("v_0", "v_1", "v_2"):
        np.testing.assert_array_equal(_read_pairs(tmp_path / "a" / vid),
                                      _read_pairs(tmp_path / "b" / vid))


def test_duplicate_video_ids_are_rejected(tmp_path):
    clip = textured_frames(n=2)
    write_video(tmp_path / "A" / "same.avi", clip)
    write_video(tmp_path / "B" / "same.avi", clip)
    with pytest.raises(ValueError, match="same"):
        extract_flow(tmp_path, tmp_path / "flow", "dis", progress=False)


def test_measure_flow_fps_reports_a_positive_rate():
    r = measure_flow_fps(textured_frames(n=4), "farneback", pairs=2)
    assert r["fps"] > 0 and r["pairs"] == 2 and r["threads"] == 1


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


# --------------------------------------------------------------------------- tvl1-torch (issue 14)
def test_batched_tvl1_torch_extraction_spans_videos_and_matches_compute_flow(tmp_path):
    paths = _make_videos(tmp_path, n=3, frames=7)          # 6 pairs each: batches of 4 span videos
    summary = extract_flow(tmp_path / "videos", tmp_path / "flow", method="tvl1-torch",
                           batch_size=4, progress=False)
    json.dumps(summary)
    assert (summary["done"], summary["frames"], summary["device"]) == (3, 21, "cpu")
    for path in paths:
        folder = tmp_path / "flow" / path.stem
        assert is_flow_complete(folder, video_frames=7)
        assert json.loads((folder / COMPLETE_MARKER).read_text())["method"] == "tvl1-torch"
        stored = _read_pairs(folder).astype(int)
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
    single = _read_pairs(tmp_path / "flow" / "single")
    assert single.shape == (1, 48, 64, 2) and np.abs(single.astype(int) - 128).max() <= 1


def test_ctrl_c_stops_a_batched_extraction_keeping_the_finished_videos(tmp_path, monkeypatch):
    from cmmc_lib.data import tvl1
    _make_videos(tmp_path, n=3, frames=4)
    real, calls = tvl1.tvl1_flow_pairs, []

    def ctrl_c_during_the_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)
    monkeypatch.setattr(tvl1, "tvl1_flow_pairs", ctrl_c_during_the_second_batch)
    flow_dir = tmp_path / "flow"
    with pytest.raises(ExtractionInterrupted) as stop:     # a batch is one video's 3 pairs
        extract_flow(tmp_path / "videos", flow_dir, method="tvl1-torch", batch_size=3,
                     progress=False)
    summary = stop.value.summary
    assert summary["interrupted"] is True
    assert (summary["done"], summary["remaining"], summary["frames"]) == (1, 2, 4)
    assert sorted(p.name for p in flow_dir.iterdir()) == ["v_0"]
    monkeypatch.setattr(tvl1, "tvl1_flow_pairs", real)
    resumed = extract_flow(tmp_path / "videos", flow_dir, method="tvl1-torch", progress=False)
    assert (resumed["done"], resumed["skipped_existing"]) == (2, 1)


def test_tvl1_torch_in_a_worker_pool_equals_one_process(tmp_path):
    _make_videos(tmp_path, n=2, frames=4)
    one = extract_flow(tmp_path / "videos", tmp_path / "a", "tvl1-torch", progress=False)
    pool = extract_flow(tmp_path / "videos", tmp_path / "b", "tvl1-torch", workers=2, progress=False)
    assert one["done"] == pool["done"] == 2
    for vid in ("v_0", "v_1"):
        np.testing.assert_array_equal(_read_pairs(tmp_path / "a" / vid), _read_pairs(tmp_path / "b" / vid))


@pytest.mark.parametrize("setting, message", [
    ({"method": "tvl1-torch", "device": "cuda"}, "CUDA is not available"),
    ({"method": "tvl1-torch", "batch_size": 0}, "batch_size must be"),
    ({"method": "dis", "device": "cuda"}, "runs on the CPU"),
    ({"method": "dis", "batch_size": 4}, "batch_size is for tvl1-torch"),
])
def test_device_and_batch_size_are_checked_before_any_video_is_read(tmp_path, setting, message):
    if "CUDA" in message and __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    (video,) = _make_videos(tmp_path, n=1, frames=2)
    with pytest.raises(ValueError, match=message):
        extract_flow(video, tmp_path / "flow", progress=False, **setting)
    assert not (tmp_path / "flow").exists()
    with pytest.raises(ValueError, match=message):
        compute_flow(textured_frames(n=2), **setting)


def test_measure_flow_fps_of_tvl1_torch_counts_whole_batches():
    r = measure_flow_fps(textured_frames(n=4), "tvl1-torch", pairs=3, batch_size=2)
    assert (r["pairs"], r["batch_size"], r["device"]) == (4, 2, "cpu")
    assert r["fps"] > 0 and r["fps_per_cpu_second"] > 0 and r["iterations_per_field"] > 0


def test_bench_flow_reports_every_method_and_each_batch_size(tmp_path):
    from cmmc_lib.data.flow import bench_flow
    (video,) = _make_videos(tmp_path, n=1, frames=5)
    r = bench_flow([video], methods=["tvl1", "dis", "tvl1-torch"], batch_sizes=[1, 2], pairs=2,
                   size=(48, 64))
    json.dumps(r)
    assert (r["height"], r["width"], r["device"]) == (48, 64, "cpu")
    assert set(r["methods"]) == {"tvl1", "dis"} and set(r["tvl1_torch"]["by_batch_size"]) == {"1", "2"}
    assert r["tvl1_torch"]["best_batch_size"] in (1, 2) and r["speedup_per_core_vs_opencv_tvl1"] > 0


def test_flow_accuracy_and_agreement_on_written_videos(tmp_path):
    from cmmc_lib.data.flow import flow_accuracy, flow_agreement
    paths = _make_videos(tmp_path, n=2, frames=4)
    acc = flow_accuracy(paths, methods=["tvl1", "tvl1-torch", "farneback"], max_px=2.0)
    json.dumps(acc)
    assert len(acc["pairs"]) == 4 and acc["size"] == [48, 64]
    epe = {m: r["epe"] for m, r in acc["methods"].items()}
    assert epe["tvl1-torch"] <= 1.10 * epe["tvl1"] + 0.01 and all(0 <= e < 2 for e in epe.values())
    agree = flow_agreement(paths, pairs_per_video=1)
    assert len(agree["pairs"]) == 2 and agree["epe"] < 0.1 and agree["reference"] == "tvl1"


def test_compare_flow_methods_for_the_course():
    from cmmc_lib.data.flow import compare_flow_methods
    frames = textured_frames(n=4, dx=2.0)
    r = compare_flow_methods(frames, methods=["dis", "tvl1-torch"], repeats=2, size=(36, 48))
    assert set(r["methods"]) == {"dis", "tvl1-torch"} and r["size"] == [36, 48]
    assert r["frame"].shape == (36, 48, 3)
    for m in r["methods"].values():
        assert m["flow"].shape == (36, 48, 2) and m["seconds_per_field"] >= 0
        assert np.median(m["flow"][8:-8, 8:-8, 0]) == pytest.approx(1.5, abs=0.3)   # 2 px * 36/48
    assert cv2.getNumThreads() > 0
    with pytest.raises(ValueError, match="pair index"):
        compare_flow_methods(frames, pair=3)
