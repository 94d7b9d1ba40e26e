"""Flow on disk (cmmc_lib.flow.folders): a finished folder is told from an interrupted one, with
our completion marker or, for another tool's folder, against the video's frame count."""
from __future__ import annotations

import numpy as np
import pytest

from cmmc_lib.flow.extract import extract_flow
from cmmc_lib.flow.folders import (check_bound, flow_pair_count, is_flow_complete, read_marker,
                                   write_flow_folder, write_flow_frames)
from tests._gen_fixtures import make_videos, write_flat_flow_pairs


def test_a_folder_without_our_marker_is_judged_against_the_videos_frame_count(tmp_path):
    folder = tmp_path / "v_x"
    write_flat_flow_pairs(folder, 3)
    assert is_flow_complete(folder, video_frames=3)        # frame-aligned, as we write it
    assert is_flow_complete(folder, video_frames=4)        # one field per frame pair (denseflow)
    assert not is_flow_complete(folder, video_frames=24)   # 3 of 24 fields: interrupted
    assert not is_flow_complete(folder)                    # video unknown: cannot tell
    (folder / "y_00003.jpg").unlink()
    assert not is_flow_complete(folder, video_frames=3)    # an x without its y


def test_our_marker_is_trusted_only_when_its_pairs_are_there(tmp_path):
    (video,) = make_videos(tmp_path, n=1)
    extract_flow(video, tmp_path / "flow", method="dis", progress=False)
    folder = tmp_path / "flow" / "v_0"
    assert is_flow_complete(folder) and is_flow_complete(folder, video_frames=7)
    assert not is_flow_complete(folder, video_frames=8)    # the video changed since
    (folder / "x_00007.jpg").unlink()
    assert not is_flow_complete(folder)


def test_a_folder_is_written_whole_with_its_marker_over_a_partial_one(tmp_path):
    folder = tmp_path / "v_1"
    write_flat_flow_pairs(folder, 5)                       # another tool's partial folder
    flow_q = np.full((3, 8, 10, 2), 128, np.uint8)
    assert write_flow_folder(flow_q, folder, "dis", 20.0, source="v_1.avi", run="r1") == 3
    assert flow_pair_count(folder) == 3 and not (folder / "x_00004.jpg").exists()
    assert read_marker(folder) == {"frames": 3, "method": "dis", "bound": 20.0, "source": "v_1.avi",
                                   "run": "r1"}
    assert is_flow_complete(folder, video_frames=3)
    assert [p.name for p in tmp_path.iterdir()] == ["v_1"]  # no temporary sibling left
    with pytest.raises(ValueError, match="uint8"):
        write_flow_frames(flow_q.astype(np.float32), tmp_path / "v_2")
    with pytest.raises(ValueError, match="bound must be"):
        check_bound(0.0)
