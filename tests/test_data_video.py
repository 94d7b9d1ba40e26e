"""PyAV decoding (probe, full decode, clips by index) and clip-window sampling."""
import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _data_fixtures import corrupt_copy, moving_square_frames, write_video
from cmmc_lib.data.video import (VideoReadError, clip_span, decode_video, eval_windows,
                                 probe_video, probe_videos, read_clip, resized_hw,
                                 sample_train_windows)


@pytest.fixture(scope="module")
def avi(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("v") / "clip.avi", moving_square_frames(20))


def test_probe_reports_decoded_frames_size_and_fps(avi):
    info = probe_video(avi)
    assert (info["frames"], info["width"], info["height"]) == (20, 64, 48)
    assert info["fps"] == 25.0 and info["duration"] == pytest.approx(0.8)
    assert info["errors"] == []


def test_raw_stream_without_container_counts_frames_and_fps_from_timestamps(tmp_path):
    path = write_video(tmp_path / "raw.mp4", moving_square_frames(18), fps=30, fmt="m4v")
    with av.open(str(path)) as c:                 # what the "container" claims
        assert c.streams.video[0].frames == 0
    info = probe_video(path)
    assert info["frames"] == 18 and info["fps"] == 30.0 and info["errors"] == []


def test_non_utf8_metadata_does_not_crash(tmp_path):
    path = tmp_path / "latin1.avi"
    frames = moving_square_frames(12)
    with av.open(str(path), "w", metadata_encoding="latin-1") as c:
        c.metadata["title"] = "caf\u00e9 cr\u00e8me"                # 0xE9: not UTF-8
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    with pytest.raises(UnicodeDecodeError):
        av.open(str(path))                         # the quirk this guards against
    assert probe_video(path)["frames"] == 12
    assert decode_video(path).shape == (12, 48, 64, 3)


def test_audio_stream_is_ignored(tmp_path):
    path = write_video(tmp_path / "with_audio.mp4", moving_square_frames(15), audio=True)
    with av.open(str(path)) as c:
        assert len(c.streams.audio) == 1
    assert probe_video(path)["frames"] == 15
    assert decode_video(path).shape[0] == 15


@pytest.mark.parametrize("mode", ["truncate", "garbage", "empty"])
def test_corrupt_files_are_reported_not_raised(avi, tmp_path, mode):
    bad = corrupt_copy(avi, tmp_path / f"{mode}.avi", mode)
    info = probe_video(bad)
    assert info["errors"] and info["frames"] == 0
    with pytest.raises(VideoReadError, match=mode):
        decode_video(bad)


def truncated_copy(src, dst, keep=0.5):
    """The first ``keep`` of the bytes of ``src``: a download or copy that stopped midway."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def damaged_copy(src, dst, packets=range(20, 24)):
    """``src`` with the middle half of the payload of the given video packets overwritten by
    random bytes (the container's structure intact): bit rot in the middle of a file."""
    data = bytearray(src.read_bytes())
    with av.open(str(src)) as c:
        spans = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    rng = np.random.default_rng(0)
    for pos, size in (spans[i] for i in packets):
        lo, hi = pos + 8 + size // 4, pos + 8 + 3 * size // 4       # past the 8-byte AVI chunk header
        data[lo:hi] = rng.integers(0, 256, hi - lo, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture(scope="module")
def long_avi(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("long") / "clip.avi", moving_square_frames(60))


def test_probe_reports_a_file_that_ends_before_the_frames_its_container_promises(long_avi, tmp_path):
    info = probe_video(truncated_copy(long_avi, tmp_path / "half.avi"))
    assert 0 < info["frames"] < 60 and info["expected_frames"] == 60
    assert any(f"decoding ended early: {info['frames']} frames of the 60" in e for e in info["errors"])
    assert probe_video(long_avi)["errors"] == [] and probe_video(long_avi)["expected_frames"] == 60


def test_probe_reports_damage_the_decoder_only_logs(long_avi, tmp_path):
    info = probe_video(damaged_copy(long_avi, tmp_path / "damaged.avi"))
    assert info["frames"] == 60                          # every frame decodes, concealed
    assert len(info["errors"]) == 1 and info["errors"][0].startswith("the decoder logged")
    assert av.logging.get_level() is None                # PyAV's log is off again afterwards


def test_a_raw_stream_has_no_promise_and_a_missing_frame_or_two_is_tolerated(tmp_path):
    raw = probe_video(write_video(tmp_path / "raw.m4v", moving_square_frames(18), fmt="m4v"))
    assert raw["expected_frames"] is None and raw["errors"] == []
    from cmmc_lib.data.video import _ended_early
    assert not _ended_early(72, 73) and not _ended_early(98, 100)   # HMDB51's AVIs: 73 promised, 72 held
    assert _ended_early(49, 108) and _ended_early(97, 100)


def test_probe_videos_mixes_good_bad_and_missing(avi, tmp_path):
    infos = probe_videos([avi, tmp_path / "nope.avi"], progress=False)
    assert infos[0]["frames"] == 20 and infos[0]["errors"] == []
    assert infos[1]["frames"] == 0 and "cannot open" in infos[1]["errors"][0]


def test_decode_video_resizes_short_side_keeping_aspect(avi):
    full = decode_video(avi)
    small = decode_video(avi, short_side=24)
    assert full.dtype == np.uint8 and full.shape == (20, 48, 64, 3)
    assert small.shape == (20, 24, 32, 3)
    # the white square (rows 8..15, cols 4+2t..) survives decoding and resizing
    assert full[5, 10:14, 16:20].mean() > 200
    assert small[5, 5:7, 8:10].mean() > 180
    assert resized_hw(240, 320, 128) == (128, 171)


def test_read_clip_matches_full_decode_and_pads_past_the_end(avi):
    full = decode_video(avi, short_side=24)
    idx = [7, 3, 3, 19, 25, 40]
    clip = read_clip(avi, idx, short_side=24)
    assert clip.shape == (6, 24, 32, 3)
    np.testing.assert_array_equal(clip[:4], full[[7, 3, 3, 19]])
    np.testing.assert_array_equal(clip[4], full[-1])          # padding = last frame
    np.testing.assert_array_equal(clip[5], full[-1])
    with pytest.raises(ValueError, match=">= 0"):
        read_clip(avi, [-1])


# ----------------------------------------------------------------------------- sampling
def test_train_windows_are_strided_in_range_and_reproducible():
    w = sample_train_windows(100, 8, 3, 2, np.random.default_rng(5))
    assert w.shape == (2, 8) and w.dtype == np.int64
    assert (np.diff(w, axis=1) == 3).all() and w.min() >= 0 and w.max() <= 99
    np.testing.assert_array_equal(w, sample_train_windows(100, 8, 3, 2,
                                                          np.random.default_rng(5)))
    starts = {int(sample_train_windows(100, 8, 3, 1, np.random.default_rng(s))[0, 0])
              for s in range(30)}
    assert len(starts) > 10                         # windows really move


def test_short_video_is_padded_with_its_last_frame():
    w = sample_train_windows(5, 4, 2, 3, np.random.default_rng(0))
    np.testing.assert_array_equal(w, [[0, 2, 4, 4]] * 3)
    np.testing.assert_array_equal(eval_windows(1, 3, 1, 2), [[0, 0, 0], [0, 0, 0]])


def test_eval_windows_cover_the_video_evenly():
    w = eval_windows(100, 10, 2, 4)                 # span 19: starts 0, 27, 54, 81
    np.testing.assert_array_equal(w[:, 0], [0, 27, 54, 81])
    assert w[-1, -1] == 99
    np.testing.assert_array_equal(eval_windows(100, 10, 1, 1)[0, 0], 45)   # centre window


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), clip_len=st.integers(1, 40), stride=st.integers(1, 4),
       views=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_windows_property(n, clip_len, stride, views, seed):
    for w in (sample_train_windows(n, clip_len, stride, views, np.random.default_rng(seed)),
              eval_windows(n, clip_len, stride, views)):
        assert w.shape == (views, clip_len)
        assert w.min() >= 0 and w.max() <= n - 1
        # every window is start, start + stride, ... clamped at the last frame
        expected = np.minimum(w[:, :1] + np.arange(clip_len) * stride, n - 1)
        np.testing.assert_array_equal(w, expected)
        if n >= clip_span(clip_len, stride):       # no padding when the video is long enough
            assert (np.diff(w, axis=1) == stride).all()


def test_bad_sampling_arguments():
    with pytest.raises(ValueError, match="clip_len"):
        clip_span(0, 1)
    with pytest.raises(ValueError, match="views"):
        sample_train_windows(10, 2, 1, 0, np.random.default_rng(0))


def test_dense_eval_windows_half_overlap_as_coclrs_test_protocol():
    w = eval_windows(100, 32, 1, 0)                 # span 32: a window every 15 frames, as CoCLR
    np.testing.assert_array_equal(w[:, 0], [0, 15, 30, 45, 60])
    assert w.shape == (5, 32) and w[-1, -1] == 91
    assert eval_windows(20, 32, 1, 0).shape == (1, 32)      # shorter than a clip: one padded window
    np.testing.assert_array_equal(eval_windows(40, 8, 2, 0)[:, 0], [0, 7, 14, 21])   # span 15: every 7
