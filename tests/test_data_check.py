"""check_dataset: a prepared root against its split (what `cmmc data check` prints)."""
import json
import shutil

import av
import pytest

from _data_fixtures import corrupt_copy, write_ucf_like_root
from cmmc_lib.data.check import check_dataset


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    # 2 classes x 3 groups x 2 clips; group 1 is test: 8 train, 4 test; flow, no pose
    return write_ucf_like_root(tmp_path_factory.mktemp("ucf") / "ucf101", pose=False,
                               num_frames=6)


def test_complete_root_is_ok_and_json_serialisable(root):
    report = check_dataset("ucf101", root, split=1, decode=True)
    assert report["ok"] is True and report["classes"] == 2
    train, test = report["subsets"]["train"], report["subsets"]["test"]
    assert (train["expected"], train["found"], train["missing"], train["unreadable"]) == \
        (8, 8, 0, 0)
    assert (test["expected"], test["found"], test["with_flow"]) == (4, 4, 4)
    assert json.loads(json.dumps(report)) == report


def test_missing_and_unreadable_videos_are_counted_and_named(root, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("flow"))
    (copy / "videos" / "Alpha" / "v_Alpha_g02_c01.avi").unlink()
    bad = copy / "videos" / "HandstandPushups" / "v_HandStandPushups_g01_c02.avi"
    corrupt_copy(root / "videos" / "HandstandPushups" / bad.name, bad, "garbage")
    quick = check_dataset("ucf101", copy)
    assert quick["ok"] is False
    assert quick["subsets"]["train"]["missing"] == 1
    assert quick["subsets"]["train"]["missing_examples"] == ["Alpha/v_Alpha_g02_c01.avi"]
    assert quick["subsets"]["test"]["unreadable"] is None            # not decoded
    assert quick["subsets"]["test"]["with_flow"] == 0
    assert any("cmmc flow extract" in n for n in quick["notes"])
    full = check_dataset("ucf101", copy, decode=True)
    assert full["subsets"]["test"]["unreadable"] == 1
    assert full["subsets"]["test"]["unreadable_examples"][0].startswith(
        "HandstandPushups/v_HandStandPushups_g01_c02.avi")
    assert full["subsets"]["train"]["unreadable"] == 0


def test_a_truncated_video_counts_as_unreadable(root, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("flow"))
    video = copy / "videos" / "Alpha" / "v_Alpha_g02_c01.avi"
    with av.open(str(video)) as c:
        third_frame_at = [p.pos for p in c.demux(video=0) if p.size][2]
    video.write_bytes(video.read_bytes()[:third_frame_at])      # a copy that stopped midway
    report = check_dataset("ucf101", copy, decode=True)
    assert report["ok"] is False and report["subsets"]["train"]["unreadable"] == 1
    assert "decoding ended early" in report["subsets"]["train"]["unreadable_examples"][0]


def test_unusable_roots_raise_file_not_found(tmp_path, root):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_dataset("ucf101", tmp_path / "nowhere")
    (tmp_path / "videos").mkdir()
    with pytest.raises(FileNotFoundError, match="split files"):
        check_dataset("ucf101", tmp_path)
    with pytest.raises(FileNotFoundError, match="trainlist02.txt"):
        check_dataset("ucf101", root, split=2)
    with pytest.raises(ValueError, match="unknown dataset"):
        check_dataset("kinetics", root)


def test_split_files_shorter_than_the_official_ones_get_a_note(root):
    report = check_dataset("ucf101", root)
    assert any("official ucf101 split 1 has 9537 / 3783" in n for n in report["notes"])


def test_ntu60_counts_per_protocol(tmp_path):
    skel = tmp_path / "skeletons"
    skel.mkdir()
    body = "72057594037931101 0 1 1 1 1 0 0.1 0.2 2\r\n1\r\n" + " ".join(["0.5"] * 12) + "\r\n"
    for name in ("S001C001P001R001A001", "S001C002P001R001A001"):
        (skel / f"{name}.skeleton").write_bytes(f"1\r\n1\r\n{body}".encode())
    (skel / "S001C003P003R001A005.skeleton").write_bytes(b"2\r\n0\r\n0\r\n")   # no bodies
    (skel / "S001C001P003R001A009.skeleton").write_bytes(b"garbage\r\n")
    (skel / "notes.skeleton").write_bytes(b"1\r\n")
    report = check_dataset("ntu60", tmp_path, decode=True)
    s = report["subsets"]
    assert s["xsub/train"]["found"] == 2 and s["xsub/test"]["found"] == 2
    assert s["xview/train"]["found"] == 2 and s["xview/test"]["found"] == 2
    assert s["xsub/train"]["missing"] == s["xsub/train"]["expected"] - 2
    assert s["xsub/test"]["unreadable"] == 1 and s["xview/test"]["unreadable"] == 1
    assert "S001C001P003R001A009" in s["xsub/test"]["unreadable_examples"][0]
    assert s["xsub/test"]["no_bodies"] == 1 and s["xview/train"]["no_bodies"] == 1
    assert s["xsub/train"]["unreadable"] == 0 and s["xsub/train"]["no_bodies"] == 0
    assert any("notes.skeleton" in n for n in report["notes"])
    assert json.dumps(report)
    quick = check_dataset("ntu60", tmp_path)
    assert quick["subsets"]["xsub/test"]["unreadable"] is None
    with pytest.raises(FileNotFoundError, match="skeleton"):
        check_dataset("ntu60", tmp_path / "skeletons")
