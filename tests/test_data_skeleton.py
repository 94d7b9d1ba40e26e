"""NTU skeletons: parsing the raw format, body selection, preprocessing, streams, ST-GCN arrays."""
from __future__ import annotations

import csv
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmmc_lib.data.skeleton import (CENTER_JOINT, NTU_PARENTS, center_skeleton,
                                    load_stgcn_arrays, normalize_2d_pose, preprocess_skeleton,
                                    read_ntu_colour_pose, read_ntu_skeleton, read_ntu_xyz,
                                    resize_frames, select_bodies, shear, skeleton_stream,
                                    temporal_crop)
from cmmc_lib.registry import SKELETON_LAYOUTS
from tests._gen_fixtures import require_realdata

REAL_FILES = ("S001C001P001R001A001", "S001C001P001R001A011", "S002C001P003R001A003",
              "S004C002P003R001A017")


def format_skeleton(frames: list[list[tuple[int, np.ndarray]]], newline: str = "\r\n") -> str:
    """Write frames of (body_id, xyz (25, 3)) bodies in the NTU text format."""
    out = [str(len(frames))]
    for bodies in frames:
        out.append(str(len(bodies)))
        for body_id, xyz in bodies:
            out += [f"{body_id} 0 1 1 1 1 0 0.01 0.02 2", "25"]
            out += [f"{x:.6f} {y:.6f} {z:.6f} 250 180 1000 500 0 0 0 0 2" for x, y, z in xyz]
    return newline.join(out) + newline


def _body(rng, offset=0.0):
    return rng.normal(0, 0.3, (25, 3)) + offset


# ----------------------------------------------------------------------------- real files
@pytest.mark.realdata
@pytest.mark.parametrize("name", REAL_FILES)
def test_real_skeleton_files_parse_to_their_declared_frame_count(name):
    path = require_realdata("ntu60", "skeletons", f"{name}.skeleton")
    declared = int(path.read_bytes().split(b"\r\n", 1)[0])
    seq = read_ntu_skeleton(path)
    assert seq.num_frames == declared > 0
    assert all(b.joints.shape == (25, 12) for bodies in seq.frames for b in bodies)
    xyz = select_bodies(seq)
    assert xyz.shape == (3, declared, 25, 2) and xyz.dtype == np.float32
    assert np.all(xyz[..., 1] == 0)                      # one actor: the second slot stays empty
    assert 1.0 < np.median(xyz[2, :, :, 0]) < 5.0        # z: metres from the Kinect


@pytest.mark.realdata
def test_real_skeleton_has_as_many_frames_as_its_rgb_video():
    skel = require_realdata("ntu60", "skeletons", "S001C001P001R001A001.skeleton")
    with open(skel.parents[2] / "decoded_frames.csv") as fh:
        rgb = {r["path"]: int(r["decoded_frames"]) for r in csv.DictReader(fh)}
    frames = read_ntu_skeleton(skel).num_frames
    assert frames == rgb["ntu60/rgb/S001C001P001R001A001_rgb.avi"] == 103


@pytest.mark.realdata
def test_real_pkl_needs_trust_and_matches_our_parse_up_to_rotation():
    pkl = require_realdata("ntu60", "preprocessed", "xview_tiny_data.pkl")
    with pytest.raises(ValueError, match="trust_pickle=True"):
        load_stgcn_arrays(pkl)
    arrays = load_stgcn_arrays(pkl, trust_pickle=True)
    assert arrays.data.shape == (10, 3, 300, 25, 2) and len(arrays) == 10
    assert arrays.labels.tolist() == list(range(10))
    assert arrays.sample_names[0] == "S001C001P001R001A001.skeleton"
    # the .pkl was centred and rotated by 2s-AGCN: bone lengths must be ours exactly
    ours = read_ntu_xyz(require_realdata("ntu60", "skeletons", "S001C001P001R001A001.skeleton"))

    def bone_lengths(d):
        return np.linalg.norm(d[:, :, :, 0] - d[:, :, NTU_PARENTS, 0], axis=0)

    np.testing.assert_allclose(bone_lengths(arrays.data[0][:, :103]), bone_lengths(ours),
                               atol=1e-5)


# ----------------------------------------------------------------------------- made files
def test_lf_and_crlf_files_parse_identically(tmp_path):
    rng = np.random.default_rng(0)
    frames = [[(7, _body(rng))] for _ in range(3)]
    (tmp_path / "a.skeleton").write_text(format_skeleton(frames, "\r\n"), newline="")
    (tmp_path / "b.skeleton").write_text(format_skeleton(frames, "\n"), newline="")
    a, b = read_ntu_xyz(tmp_path / "a.skeleton"), read_ntu_xyz(tmp_path / "b.skeleton")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a[:, 1, :, 0].T, frames[1][0][1], atol=1e-6)


def test_the_two_most_active_bodies_are_kept_with_zeros_when_absent(tmp_path):
    rng = np.random.default_rng(1)
    chair = _body(rng, 2.0)                              # a static false detection
    frames = []
    for t in range(6):
        bodies = [(111, chair), (222, _body(rng) * 0.5)]  # moves a little
        if t >= 2:
            bodies.append((333, _body(rng) * 3.0))        # moves a lot, enters at frame 3
        frames.append(bodies)
    path = tmp_path / "S001C001P001R001A050.skeleton"
    path.write_text(format_skeleton(frames), newline="")
    seq = read_ntu_skeleton(path)
    assert [len(b) for b in seq.frames] == [2, 2, 3, 3, 3, 3]
    assert seq.body_ids() == [111, 222, 333]
    xyz = select_bodies(seq)
    assert xyz.shape == (3, 6, 25, 2)
    assert np.all(xyz[:, :2, :, 0] == 0)                 # the most active body enters late
    np.testing.assert_allclose(xyz[:, 4, :, 0].T, frames[4][2][1], atol=1e-5)
    np.testing.assert_allclose(xyz[:, 0, :, 1].T, frames[0][1][1], atol=1e-5)
    assert not any(np.allclose(xyz[:, t, :, m].T, chair, atol=1e-4)   # the chair is dropped
                   for t in range(6) for m in range(2))


@pytest.mark.parametrize("broken, message", [
    (lambda s: s.replace("\r\n25\r\n", "\r\n25\r\nabc\r\n", 1), r":5: expected a joint line"),
    (lambda s: "\r\n".join(s.split("\r\n")[:20]), "unexpected end of file"),
    (lambda s: s.replace("0 0 0 0 2", "0 0 0 2", 1), r":5: expected a joint line \(12"),
    (lambda s: "two\r\n" + s.split("\r\n", 1)[1], r":1: expected the frame count"),
    (lambda s: s + "1\r\n", "unexpected content after the last of 2 frames"),
])
def test_malformed_files_raise_a_value_error_with_the_line(tmp_path, broken, message):
    rng = np.random.default_rng(2)
    good = format_skeleton([[(5, _body(rng))], [(5, _body(rng))]])
    path = tmp_path / "bad.skeleton"
    path.write_text(broken(good), newline="")
    with pytest.raises(ValueError, match=message):
        read_ntu_skeleton(path)


# ----------------------------------------------------------------------------- preprocessing
def test_centering_puts_the_spine_of_the_first_person_at_the_origin():
    rng = np.random.default_rng(3)
    data = rng.normal(size=(3, 10, 25, 2)).astype(np.float32)
    data[:, 7:, :, 1] = 0                                # person 2 leaves
    data[:, 9] = 0                                       # an empty frame
    c = center_skeleton(data)
    assert np.allclose(c[:, :9, CENTER_JOINT, 0], 0)
    np.testing.assert_allclose(c[:, 3, :, 1], data[:, 3, :, 1] - data[:, 3, CENTER_JOINT, 0:1],
                               atol=1e-6)
    assert np.all(c[:, 7:, :, 1] == 0) and np.all(c[:, 9] == 0)


def test_resize_uses_only_valid_frames_like_torch_linear_interpolation():
    rng = np.random.default_rng(4)
    data = np.zeros((3, 300, 25, 2), np.float32)
    data[:, :103] = rng.normal(size=(3, 103, 25, 2))    # ST-GCN arrays are zero-padded to 300
    out = resize_frames(data, 50)
    assert out.shape == (3, 50, 25, 2)
    ref = F.interpolate(torch.from_numpy(data[:, :103]).permute(0, 2, 3, 1).reshape(1, -1, 103),
                        size=50, mode="linear", align_corners=False)
    ref = ref.reshape(3, 25, 2, 50).permute(0, 3, 1, 2).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-4)   # torch weights are float32
    assert np.all(resize_frames(np.zeros((3, 5, 25, 2)), 50) == 0)


def test_preprocess_gives_the_skeletonclr_input_shape():
    rng = np.random.default_rng(5)
    x = preprocess_skeleton(rng.normal(size=(3, 77, 25, 2)))
    assert x.shape == (3, 50, 25, 2) and x.dtype == np.float32
    assert np.allclose(x[:, :, CENTER_JOINT, 0], 0, atol=1e-6)


def test_streams_joint_motion_bone():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(4, 3, 50, 25, 2)).astype(np.float32)     # a batch (N, C, T, V, M)
    np.testing.assert_array_equal(skeleton_stream(x, "joint"), x)
    m = skeleton_stream(x, "motion")
    np.testing.assert_allclose(m[:, :, 10], x[:, :, 11] - x[:, :, 10])
    assert np.all(m[:, :, -1] == 0)
    b = skeleton_stream(x[0], "bone")
    np.testing.assert_allclose(b[:, :, 3], x[0][:, :, 3] - x[0][:, :, 2])   # head - neck
    np.testing.assert_allclose(b[:, :, 0], x[0][:, :, 0] - x[0][:, :, 1])   # base - mid spine
    assert np.all(b[:, :, 20] == 0)                                        # spine shoulder root
    with pytest.raises(ValueError, match="unknown skeleton stream"):
        skeleton_stream(x, "velocity")


# ----------------------------------------------------------------------------- ST-GCN arrays
def test_npy_arrays_are_memory_mapped_and_label_pickles_need_trust(tmp_path):
    data = np.random.default_rng(7).normal(size=(4, 3, 20, 25, 2)).astype(np.float32)
    np.save(tmp_path / "train_data.npy", data)
    np.save(tmp_path / "labels.npy", np.array([3, 1, 0, 2]))
    arrays = load_stgcn_arrays(tmp_path / "train_data.npy", tmp_path / "labels.npy")
    assert isinstance(arrays.data, np.memmap) and not arrays.data.flags.writeable
    np.testing.assert_array_equal(arrays.data, data)
    assert arrays.labels.tolist() == [3, 1, 0, 2] and arrays.sample_names is None

    with open(tmp_path / "train_label.pkl", "wb") as fh:           # ST-GCN's (names, labels)
        pickle.dump((["a", "b", "c", "d"], [0, 1, 2, 3]), fh)
    with pytest.raises(ValueError, match="arbitrary code"):
        load_stgcn_arrays(tmp_path / "train_data.npy", tmp_path / "train_label.pkl")
    trusted = load_stgcn_arrays(tmp_path / "train_data.npy", tmp_path / "train_label.pkl",
                                trust_pickle=True)
    assert trusted.sample_names == ["a", "b", "c", "d"] and trusted.labels.tolist() == [0, 1, 2, 3]

    np.save(tmp_path / "few.npy", np.array([1, 2]))
    with pytest.raises(ValueError, match="4 samples but 2 labels"):
        load_stgcn_arrays(tmp_path / "train_data.npy", tmp_path / "few.npy")
    np.save(tmp_path / "flat.npy", data[0])
    with pytest.raises(ValueError, match=r"\(N, C, T, V, M\)"):
        load_stgcn_arrays(tmp_path / "flat.npy", tmp_path / "labels.npy")


# ----------------------------------------------------------------------------- colour pose
@pytest.mark.realdata
def test_real_colour_pose_lies_in_the_rgb_frame_of_its_video():
    path = require_realdata("ntu60", "skeletons", "S001C001P001R001A001.skeleton")
    pose = read_ntu_colour_pose(path)
    assert pose.shape == (2, 103, 25, 3) and pose.dtype == np.float32
    assert np.all(pose[1] == 0)                                  # one actor: no second body
    xy, conf = pose[0, ..., :2], pose[0, ..., 2]
    assert np.all((xy[..., 0] > 0) & (xy[..., 0] < 1920) & (xy[..., 1] > 0) & (xy[..., 1] < 1080))
    assert set(np.unique(conf)) <= {0.0, 0.5, 1.0} and conf.mean() > 0.8
    assert np.all(xy[:, 3, 1] < xy[:, 0, 1])                     # the head is above the base of the spine


def test_colour_pose_keeps_the_bodies_of_the_xyz_ranking(tmp_path):
    rng = np.random.default_rng(8)
    frames = [[(1, _body(rng) * 0.1), (2, _body(rng) * 2.0)] for _ in range(4)]   # body 2 moves more
    text = format_skeleton(frames)
    lines = text.split("\r\n")
    body = None
    for i, line in enumerate(lines):                      # give each body its own colour pixel
        fields = line.split()
        if len(fields) == 10:
            body = int(fields[0])
        elif len(fields) == 12:
            fields[5:7] = [str(100 * body), str(50 * body)]
            fields[11] = "1" if body == 1 else "2"        # body 1 inferred, body 2 tracked
            lines[i] = " ".join(fields)
    path = tmp_path / "S001C001P001R001A050.skeleton"
    path.write_text("\r\n".join(lines), newline="")
    pose = read_ntu_colour_pose(path)
    assert pose.shape == (2, 4, 25, 3)
    assert np.all(pose[0, ..., :2] == (200, 100)) and np.all(pose[0, ..., 2] == 1.0)    # the active body first
    assert np.all(pose[1, ..., :2] == (100, 50)) and np.all(pose[1, ..., 2] == 0.5)


# ----------------------------------------------------------------------------- 2-D poses
def test_normalized_2d_pose_is_free_of_size_and_place_but_keeps_travel():
    rng = np.random.default_rng(9)
    layout = SKELETON_LAYOUTS["synthetic15"]
    pose = np.concatenate([rng.uniform(10, 50, (6, 15, 2)), np.ones((6, 15, 1))], axis=-1).astype(np.float32)
    pose[:, :, 0] += np.arange(6)[:, None] * 3                 # walks to the right
    moved = pose.copy()
    moved[..., :2] = pose[..., :2] * 2 + 17                    # twice as big, elsewhere
    a, b = normalize_2d_pose(pose, layout), normalize_2d_pose(moved, layout)
    assert a.shape == (3, 6, 15, 1)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.allclose(a[:2, :, layout.root].mean(axis=1), 0, atol=1e-6)     # centred over the clip
    assert a[0, -1, layout.root, 0] > a[0, 0, layout.root, 0]                # the walk is still there
    hidden = pose.copy()
    hidden[2, 4, 2] = 0
    assert np.all(normalize_2d_pose(hidden, layout)[:, 2, 4] == 0)
    with pytest.raises(ValueError, match=r"\(T, 15, 3\)"):
        normalize_2d_pose(np.zeros((6, 25, 3)), layout)


# ----------------------------------------------------------------------------- augmentations
def test_temporal_crop_pads_with_mirrored_frames_and_keeps_the_length():
    data = np.zeros((3, 12, 25, 2), np.float32)
    data[0] = np.arange(12, dtype=np.float32)[:, None, None] + 1
    # pad 12 // 6 = 2: the padded sequence is 2 1 | 1 .. 12 | 12 11; a window starts at 0..4
    padded = [2, 1] + list(range(1, 13)) + [12, 11]
    starts = set()
    for seed in range(40):
        out = temporal_crop(data, np.random.default_rng(seed))
        assert out.shape == data.shape
        window = out[0, :, 0, 0].tolist()
        matches = [s for s in range(5) if padded[s:s + 12] == window]
        assert len(matches) == 1, window
        starts.add(matches[0])
    assert starts == {0, 1, 2, 3, 4}
    assert np.all(out[1:] == 0)


def test_shear_is_one_matrix_on_the_coordinates_only():
    rng = np.random.default_rng(10)
    data = rng.normal(size=(3, 5, 25, 2)).astype(np.float32)
    data[..., 1] = 0                                               # an absent second person
    out = shear(data, np.random.default_rng(3))
    r = np.linalg.lstsq(data[..., 0].reshape(3, -1).T, out[..., 0].reshape(3, -1).T, rcond=None)[0].T
    assert np.allclose(np.diag(r), 1, atol=1e-4) and np.all(np.abs(r - np.eye(3)) <= 0.5 + 1e-4)
    assert np.all(out[..., 1] == 0)
    two_d = shear(data, np.random.default_rng(3), coords=2)        # x, y and a confidence
    np.testing.assert_array_equal(two_d[2], data[2])
    np.testing.assert_allclose(two_d[:2], out[:2] - np.einsum("i,tvm->itvm", r[:2, 2], data[2]), atol=1e-5)
