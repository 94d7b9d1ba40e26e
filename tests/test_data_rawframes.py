"""The TSN / denseflow rawframes layout: counting, reading RGB and flow, (de)quantising."""
import cv2
import numpy as np
import pytest

from _data_fixtures import write_flow_dir
from cmmc_lib.data.rawframes import (FrameReadError, count_frames, dequantize_flow,
                                     quantize_flow, read_flow_frames, read_rgb_frames)


def test_flow_round_trip_keeps_channel_order_and_values(tmp_path):
    flow = np.zeros((3, 24, 32, 2), dtype=np.uint8)
    flow[..., 0] = 200                                   # x
    flow[..., 1] = 50                                    # y
    flow[1, :, :16, 0] = 10
    write_flow_dir(tmp_path / "v", flow)
    assert count_frames(tmp_path / "v") == 3
    got = read_flow_frames(tmp_path / "v", [1, 0])
    assert got.shape == (2, 24, 32, 2) and got.dtype == np.uint8
    assert np.abs(got[1].astype(int) - flow[0]).max() <= 2           # JPEG, quality 100
    assert np.abs(got[0, 4:20, 2:12, 0].astype(int) - 10).max() <= 2
    small = read_flow_frames(tmp_path / "v", [0], short_side=12)
    assert small.shape == (1, 12, 16, 2)


def test_rgb_frames_are_rgb_not_bgr(tmp_path):
    red = np.zeros((20, 30, 3), dtype=np.uint8)
    red[..., 0] = 255                                    # R in RGB order
    cv2.imwrite(str(tmp_path / "img_00001.jpg"), cv2.cvtColor(red, cv2.COLOR_RGB2BGR))
    got = read_rgb_frames(tmp_path, [0])
    assert got.shape == (1, 20, 30, 3)
    assert got[0, ..., 0].mean() > 240 and got[0, ..., 2].mean() < 15
    assert count_frames(tmp_path) == 1 and count_frames(tmp_path, "flow") == 0


def test_count_frames_finds_gaps_and_missing_pairs(tmp_path):
    write_flow_dir(tmp_path / "v", np.full((4, 8, 8, 2), 128, dtype=np.uint8))
    (tmp_path / "v" / "x_00003.jpg").unlink()
    with pytest.raises(FrameReadError, match="x_00003.jpg is missing"):
        count_frames(tmp_path / "v", "flow")
    write_flow_dir(tmp_path / "w", np.full((2, 8, 8, 2), 128, dtype=np.uint8))
    (tmp_path / "w" / "y_00002.jpg").unlink()
    with pytest.raises(FrameReadError, match="y_00002.jpg"):
        count_frames(tmp_path / "w", "flow")
    with pytest.raises(FileNotFoundError):
        count_frames(tmp_path / "absent")


def test_unreadable_or_missing_frame_files(tmp_path):
    (tmp_path / "x_00001.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "y_00001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(FrameReadError, match="cannot decode"):
        read_flow_frames(tmp_path, [0])
    with pytest.raises(FileNotFoundError, match="x_00002.jpg"):
        read_flow_frames(tmp_path, [1])


def test_quantisation_convention_bound_20():
    u8 = np.array([0, 128, 255], dtype=np.uint8)
    np.testing.assert_allclose(dequantize_flow(u8), [-20.0, 0.0784, 20.0], atol=1e-3)
    px = np.array([-30.0, -20.0, -3.3, 0.0, 7.25, 20.0, 55.0])
    q = quantize_flow(px)
    np.testing.assert_array_equal(q[[0, 1, -2, -1]], [0, 0, 255, 255])      # clipped at +-20
    inside = slice(1, 6)
    assert np.abs(dequantize_flow(q)[inside] - px[inside]).max() <= 20 / 255 + 1e-6
    assert dequantize_flow(u8).dtype == np.float32


def test_quantize_follows_the_tsn_convention_and_round_trips():
    f = np.array([-20.0, 0.0, 20.0, -50.0, 50.0, 3.3], np.float32)
    q = quantize_flow(f)
    assert q.dtype == np.uint8
    assert q.tolist()[:5] == [0, 128, 255, 0, 255]       # 127.5 rounds to 128; clipped at +-20
    x = np.linspace(-20, 20, 1001, dtype=np.float32)
    err = np.abs(dequantize_flow(quantize_flow(x)) - x)
    assert err.max() <= 20 / 255 + 1e-5                    # half a step of 40/255
    assert dequantize_flow(quantize_flow(f, bound=5), bound=5)[3] == pytest.approx(-5)
