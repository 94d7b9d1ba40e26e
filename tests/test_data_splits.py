"""Split parsers: UCF101 / synthetic, HMDB51, NTU-60 names; bad lines; finding video files."""
import logging

import pytest

from cmmc_lib.data.splits import (VideoIndex, find_split_dir, load_hmdb51_split, load_split,
                                  load_ucf101_split, ntu60_split, parse_group, parse_ntu_name,
                                  read_ucf101_classes, safe_relpath)


def write_crlf(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return path


@pytest.fixture
def ucf_splits(tmp_path):
    d = tmp_path / "splits"
    write_crlf(d / "classInd.txt", ["1 ApplyEyeMakeup", "2 HandstandPushups", "3 Punch"])
    write_crlf(d / "trainlist01.txt", [
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1",
        "HandstandPushups/v_HandStandPushups_g09_c02.avi 2",
        "Punch/v_Punch_g10_c03.avi 3"])
    write_crlf(d / "testlist01.txt", [
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
        "HandStandPushups/v_HandStandPushups_g02_c01.avi",     # folder spelt like the file
        "Punch/v_Punch_g07_c04.avi", ""])
    return d


def test_ucf101_labels_are_zero_based_and_test_labels_come_from_the_folder(ucf_splits):
    split = load_ucf101_split(ucf_splits, 1)
    assert split.classes == ["ApplyEyeMakeup", "HandstandPushups", "Punch"]
    assert [e.label for e in split.train] == [0, 1, 2]
    assert [e.label for e in split.test] == [0, 1, 2]
    hs = split.test[1]
    assert hs.relpath == "HandStandPushups/v_HandStandPushups_g02_c01.avi"
    assert hs.video == "v_HandStandPushups_g02_c01"
    assert [e.group for e in split.train] == [8, 9, 10]
    assert [e.group for e in split.test] == [1, 2, 7]
    assert not any("\r" in e.relpath for e in split.train + split.test)


def test_synthetic_root_reads_with_the_ucf_parser(ucf_splits):
    split = load_split("synthetic", ucf_splits.parent, 1)
    assert split.dataset == "synthetic" and len(split.train) == 3


def test_train_label_that_contradicts_its_folder_is_an_error(ucf_splits):
    write_crlf(ucf_splits / "trainlist01.txt", ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1",
                                               "Punch/v_Punch_g10_c03.avi 1"])
    with pytest.raises(ValueError, match=r"trainlist01.txt:2: .*disagrees"):
        load_ucf101_split(ucf_splits, 1)


@pytest.mark.parametrize("line, message", [
    ("Punch/v_Punch_g10_c03.avi 4", "not in 1..3"),
    ("Punch/v_Punch_g10_c03.avi one", "not in 1..3"),
    ("Punch/v_Punch_g10_c03.avi 1 extra", "expected"),
    ("../../etc/passwd 1", "outside the dataset root"),
    ("/etc/passwd 1", "relative"),
    ("C:\\videos\\x.avi 1", "relative"),
])
def test_malformed_or_escaping_lines_name_file_and_line(ucf_splits, line, message):
    write_crlf(ucf_splits / "trainlist01.txt", ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1",
                                               line])
    with pytest.raises(ValueError, match=rf"trainlist01.txt:2: .*{message}"):
        load_ucf101_split(ucf_splits, 1)


def test_test_line_with_unknown_folder_is_an_error(ucf_splits):
    write_crlf(ucf_splits / "testlist01.txt", ["Dance/v_Dance_g01_c01.avi"])
    with pytest.raises(ValueError, match=r"testlist01.txt:1: no label"):
        load_ucf101_split(ucf_splits, 1)


def test_class_index_with_gap_is_rejected(tmp_path):
    path = write_crlf(tmp_path / "classInd.txt", ["1 A", "3 B"])
    with pytest.raises(ValueError, match="without gaps"):
        read_ucf101_classes(path)


def test_missing_split_file_is_file_not_found(ucf_splits):
    with pytest.raises(FileNotFoundError, match="trainlist02.txt"):
        load_ucf101_split(ucf_splits, 2)


def test_split_dir_found_inside_the_official_archive_folder(tmp_path):
    nested = tmp_path / "splits" / "ucfTrainTestlist"
    write_crlf(nested / "classInd.txt", ["1 A"])
    assert find_split_dir(tmp_path, "ucf101") == nested
    with pytest.raises(FileNotFoundError, match="no hmdb51 split files"):
        find_split_dir(tmp_path, "hmdb51")


def test_safe_relpath_normalises_separators():
    assert safe_relpath("A\\./b.avi") == "A/b.avi"
    with pytest.raises(ValueError, match="outside"):
        safe_relpath("A/../../b.avi")


def test_parse_group():
    assert parse_group("v_Biking_g05_c02") == 5
    assert parse_group("some_hmdb_clip_0") == -1


# ----------------------------------------------------------------------------- HMDB51
def write_hmdb(d, with_class_list=True):
    write_crlf(d / "wave_test_split1.txt", ["w1.avi 1 ", "w2.avi 2 ", "w3.avi 0 "])
    write_crlf(d / "brush_hair_test_split1.txt", ["b1.avi 2 ", "b2.avi 1 "])
    write_crlf(d / "clap_test_split1.txt", ["c1.avi 1 "])
    if with_class_list:
        write_crlf(d / "class_list.txt", ["wave", "brush_hair", "clap"])


def test_hmdb51_markers_and_class_order_from_class_list(tmp_path):
    write_hmdb(tmp_path)
    split = load_hmdb51_split(tmp_path, 1)
    assert split.classes == ["wave", "brush_hair", "clap"]
    assert [(e.relpath, e.label) for e in split.train] == [
        ("wave/w1.avi", 0), ("brush_hair/b2.avi", 1), ("clap/c1.avi", 2)]
    assert [(e.video, e.label, e.group) for e in split.test] == [("w2", 0, -1), ("b1", 1, -1)]


def test_hmdb51_classes_sorted_without_class_list(tmp_path):
    write_hmdb(tmp_path, with_class_list=False)
    split = load_hmdb51_split(tmp_path, 1)
    assert split.classes == ["brush_hair", "clap", "wave"]
    assert {e.video: e.label for e in split.train} == {"b2": 0, "c1": 1, "w1": 2}


def test_hmdb51_partial_split_files_warn_and_keep_labels(tmp_path, caplog):
    write_hmdb(tmp_path)
    (tmp_path / "brush_hair_test_split1.txt").unlink()
    with caplog.at_level(logging.WARNING):
        split = load_hmdb51_split(tmp_path, 1)
    assert "no split file" in caplog.text
    assert [e.label for e in split.train] == [0, 2]          # clap keeps label 2


def test_hmdb51_bad_marker_names_the_line(tmp_path):
    write_hmdb(tmp_path)
    write_crlf(tmp_path / "clap_test_split1.txt", ["c1.avi 1 ", "c2.avi 3 "])
    with pytest.raises(ValueError, match=r"clap_test_split1.txt:2"):
        load_hmdb51_split(tmp_path, 1)


def test_hmdb51_missing_split_index_is_file_not_found(tmp_path):
    write_hmdb(tmp_path)
    with pytest.raises(FileNotFoundError, match="_test_split2"):
        load_hmdb51_split(tmp_path, 2)


# ----------------------------------------------------------------------------- NTU-60
def test_ntu_name_fields():
    f = parse_ntu_name("S004C002P003R001A017.skeleton")
    assert (f.setup, f.camera, f.performer, f.replication, f.action) == (4, 2, 3, 1, 17)
    assert f.label == 16
    with pytest.raises(ValueError, match="not an NTU"):
        parse_ntu_name("video.avi")


def test_ntu60_cross_subject_and_cross_view():
    names = ["S001C001P001R001A001.skeleton",   # performer 1 train, camera 1 test
             "S001C002P003R001A002.skeleton",   # performer 3 test, camera 2 train
             "S002C003P038R002A060.skeleton",   # performer 38 train, camera 3 train
             "S002C001P040R002A010.skeleton",   # performer 40 test, camera 1 test
             "S018C001P041R001A061.skeleton"]   # NTU-120 action: left out
    xsub = ntu60_split(names, "xsub")
    assert [e.video for e in xsub.train] == ["S001C001P001R001A001", "S002C003P038R002A060"]
    assert [e.label for e in xsub.train] == [0, 59]
    assert [e.video for e in xsub.test] == ["S001C002P003R001A002", "S002C001P040R002A010"]
    xview = ntu60_split(names, "xview")
    assert [e.video for e in xview.train] == ["S001C002P003R001A002", "S002C003P038R002A060"]
    assert [e.video for e in xview.test] == ["S001C001P001R001A001", "S002C001P040R002A010"]
    assert len(xsub.classes) == 60
    with pytest.raises(ValueError, match="protocol"):
        ntu60_split(names, "xset")


# ----------------------------------------------------------------------------- files
def test_video_index_tolerates_case_flat_layout_and_extension(tmp_path):
    videos = tmp_path / "videos"
    (videos / "HandstandPushups").mkdir(parents=True)
    (videos / "HandstandPushups" / "v_HandStandPushups_g01_c01.avi").write_bytes(b"x")
    (videos / "v_Punch_g01_c01.avi").write_bytes(b"x")                 # flat
    (videos / "Biking").mkdir()
    (videos / "Biking" / "v_Biking_g01_c01.mp4").write_bytes(b"x")     # other extension
    index = VideoIndex(videos)
    assert index.find("HandstandPushups/v_HandStandPushups_g01_c01.avi").name == \
        "v_HandStandPushups_g01_c01.avi"
    assert index.find("HandStandPushups/v_HandStandPushups_g01_c01.avi") is not None
    assert index.find("Punch/v_Punch_g01_c01.avi") == videos / "v_Punch_g01_c01.avi"
    assert index.find("Biking/v_Biking_g01_c01.avi").suffix == ".mp4"
    assert index.find("Punch/v_Punch_g02_c01.avi") is None
