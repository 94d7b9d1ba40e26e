"""Real files from ../shared/realdata (env CMMC_REALDATA): decoding, splits, rawframes, check.

Skipped with a reason when the folder is absent (a fresh clone); CI has it, so they run there.
"""
import csv

import av
import numpy as np
import pytest

from _data_fixtures import realdata_dir
from cmmc_lib.config import DataConfig
from cmmc_lib.data.check import check_dataset
from cmmc_lib.data.datasets import build_dataset
from cmmc_lib.data.rawframes import (count_frames, dequantize_flow, read_flow_frames,
                                     read_rgb_frames)
from cmmc_lib.data.splits import load_split, ntu60_split, parse_group, parse_ntu_name
from cmmc_lib.data.video import decode_video, probe_video, read_clip, resized_hw

REAL = realdata_dir()
pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (REAL / "decoded_frames.csv").is_file(),
                       reason=f"real test data not found at {REAL} (set CMMC_REALDATA)"),
]


def decoded_rows():
    path = REAL / "decoded_frames.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [(r["path"], int(r["decoded_frames"]), int(r["width"]), int(r["height"]))
                for r in csv.DictReader(f)]


@pytest.mark.parametrize("rel, frames, width, height", decoded_rows(),
                         ids=[r[0] for r in decoded_rows()])
def test_probe_matches_ffmpeg_frame_counts(rel, frames, width, height):
    info = probe_video(REAL / rel)
    assert info["errors"] == []
    assert (info["frames"], info["width"], info["height"]) == (frames, width, height)
    assert info["fps"] is not None and 20 <= info["fps"] <= 31


@pytest.mark.parametrize("rel, frames, width, height",
                         [r for r in decoded_rows() if r[2] < 1000], ids=lambda v: str(v))
def test_decode_at_short_side_128(rel, frames, width, height):
    video = decode_video(REAL / rel, short_side=128)
    assert video.shape == (frames, *resized_hw(height, width, 128), 3)
    assert min(video.shape[1:3]) == 128 and video.dtype == np.uint8
    assert 10 < video.mean() < 245                       # real pictures, not blank frames


def test_ucf101_frame_rates_and_container_quirks():
    fps = {probe_video(p)["fps"] for p in (REAL / "ucf101" / "videos").glob("*.avi")}
    assert fps == {25.0, 29.97}
    raw = sorted((REAL / "ucf101" / "videos_reencoded").glob("*.mp4"))[0]
    with av.open(str(raw)) as c:
        assert c.streams.video[0].frames == 0           # no container frame count
    assert probe_video(raw)["frames"] > 0
    cartwheel = next((REAL / "hmdb51" / "videos").glob("*cartwheel*.avi"))
    with pytest.raises(UnicodeDecodeError):
        av.open(str(cartwheel))                          # metadata is not UTF-8
    kinetics = sorted((REAL / "kinetics").glob("*.mp4"))[0]
    with av.open(str(kinetics)) as c:
        assert len(c.streams.audio) == 1


def test_read_clip_on_a_real_xvid_file():
    path = REAL / "ucf101" / "videos" / "v_Punch_g03_c01.avi"
    full = decode_video(path, short_side=64)
    idx = np.arange(40, 72, 2)
    np.testing.assert_array_equal(read_clip(path, idx, short_side=64), full[idx])


# ----------------------------------------------------------------------------- splits
@pytest.mark.parametrize("split", [1, 2, 3])
def test_ucf101_official_splits(split):
    s = load_split("ucf101", REAL / "ucf101", split)
    expected = {1: (9537, 3783), 2: (9586, 3734), 3: (9624, 3696)}[split]
    assert (len(s.train), len(s.test)) == expected
    assert len(s.classes) == 101
    assert {e.label for e in s.train} == set(range(101)) == {e.label for e in s.test}
    # official rule: split k tests on groups 7k-6 .. 7k
    test_groups = set(range(7 * split - 6, 7 * split + 1))
    assert {e.group for e in s.test} == test_groups
    assert not test_groups & {e.group for e in s.train}
    assert all(e.group == parse_group(e.video) for e in s.test)
    hs = s.classes.index("HandstandPushups")
    hs_test = [e for e in s.test if e.relpath.lower().startswith("handstandpushups/")]
    assert hs_test and all(e.label == hs for e in hs_test)
    assert all("HandStandPushups" in e.video for e in hs_test)


def test_hmdb51_splits_present():
    splits = REAL / "hmdb51" / "splits"
    for k in (1, 2, 3):
        s = load_split("hmdb51", REAL / "hmdb51", k)
        files = sorted(splits.glob(f"*_test_split{k}.txt"))
        assert len(s.classes) == 51
        classes_with_files = {f.name.rsplit("_test_split", 1)[0] for f in files}
        assert {s.classes[e.label] for e in s.train} == classes_with_files
        # every class contributes 70 training and 30 test clips
        assert (len(s.train), len(s.test)) == (70 * len(files), 30 * len(files))
        if len(files) == 51:
            assert (len(s.train), len(s.test)) == (3570, 1530)


def test_ntu60_names_of_the_real_skeleton_files():
    names = sorted(p.name for p in (REAL / "ntu60" / "skeletons").glob("*.skeleton"))
    assert names
    xsub, xview = ntu60_split(names, "xsub"), ntu60_split(names, "xview")
    for e in xsub.train + xsub.test:
        f = parse_ntu_name(e.relpath)
        assert (e in xsub.train) == (f.performer in {1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18,
                                                     19, 25, 27, 28, 31, 34, 35, 38})
        assert e.label == f.action - 1
    for e in xview.train + xview.test:
        assert (e in xview.train) == (parse_ntu_name(e.relpath).camera in (2, 3))
    assert len(xsub.train) + len(xsub.test) == len(names)


# ----------------------------------------------------------------------------- rawframes
def test_real_rawframes_rgb_and_tvl1_flow():
    d = REAL / "rawframes" / "v_ApplyEyeMakeup_g01_c01"
    assert count_frames(d) == 1 and count_frames(d, "flow") == 1
    rgb = read_rgb_frames(d, [0])
    flow = read_flow_frames(d, [0])
    assert rgb.shape[1:3] == flow.shape[1:3] and flow.shape[-1] == 2
    px = dequantize_flow(flow)
    assert px.min() >= -20 and px.max() <= 20
    assert abs(float(np.median(px))) < 2.0               # mostly still background


# ----------------------------------------------------------------------------- check + dataset
def test_check_real_ucf101_folder():
    report = check_dataset("ucf101", REAL / "ucf101", split=1, decode=True)
    present = {p.stem for p in (REAL / "ucf101" / "videos").glob("*.avi")}
    in_test = {v for v in present if parse_group(v) <= 7}    # split 1 tests groups 1-7
    assert report["subsets"]["test"]["found"] == len(in_test)
    assert report["subsets"]["train"]["found"] == len(present) - len(in_test)
    assert report["subsets"]["train"]["expected"] == 9537
    assert report["subsets"]["test"]["unreadable"] == 0
    assert report["ok"] is False


def test_check_real_ntu60_skeletons():
    report = check_dataset("ntu60", REAL / "ntu60", decode=True)
    files = list((REAL / "ntu60" / "skeletons").glob("*.skeleton"))
    for protocol in ("xsub", "xview"):
        train, test = (report["subsets"][f"{protocol}/{s}"] for s in ("train", "test"))
        assert train["found"] + test["found"] == len(files)
        assert train["unreadable"] == test["unreadable"] == 0
        assert train["no_bodies"] == test["no_bodies"] == 0


def test_dataset_over_the_real_ucf101_clips(tmp_path):
    (tmp_path / "videos").symlink_to(REAL / "ucf101" / "videos", target_is_directory=True)
    (tmp_path / "splits").symlink_to(REAL / "ucf101" / "splits", target_is_directory=True)
    cfg = DataConfig(dataset="ucf101", root=str(tmp_path), clip_len=8, stride=2,
                     short_side=64, size=56, eval_windows=2)
    ds = build_dataset(cfg, "test", False, ("rgb",))
    present = {p.stem for p in (REAL / "ucf101" / "videos").glob("*.avi")}
    assert set(ds.videos) == {v for v in present if parse_group(v) <= 7}
    item = ds[0]
    assert item["rgb"].shape == (2, 3, 8, 56, 56)
    assert ds.classes[item["label"]] in item["video"]
