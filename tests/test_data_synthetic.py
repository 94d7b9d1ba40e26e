"""The synthetic dataset: layout, split files, determinism, resumability, that the class lives
in the motion while the appearance is a nuisance (the renderer), and the video encoding it uses."""
from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from cmmc_lib.data.rawframes import dequantize_flow
from cmmc_lib.data.render import BONES, CLASS_NAMES, JOINT_NAMES, render_clip
from cmmc_lib.data.synthetic import (FPS, SYNTHETIC_SIZES, SyntheticSize, _meta, context_groups, dataset_items,
                                     read_meta, render_dataset_clip, video_id, write_synthetic_dataset)
from cmmc_lib.data.video import encode_video, probe_video, rgb_to_yuv420p, video_codec
from cmmc_lib.flow.folders import flow_pair_count
from tests._gen_fixtures import decode

TINY = SYNTHETIC_SIZES["tiny"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "tiny"
    summary = write_synthetic_dataset(out, "tiny", seed=0, progress=False)
    return out, summary


def _read_flow(folder: Path) -> np.ndarray:
    """float32 (N, H, W, 2) px from the x_/y_ JPEG pairs."""
    n = flow_pair_count(folder)
    q = np.stack([np.stack([cv2.imread(str(folder / f"{a}_{t:05d}.jpg"), cv2.IMREAD_GRAYSCALE)
                            for a in "xy"], -1) for t in range(1, n + 1)])
    return dequantize_flow(q)


def _parse_ucf_split(path: Path) -> list[list[str]]:
    raw = path.read_bytes()
    assert raw.endswith(b"\r\n") and raw.count(b"\r\n") == raw.count(b"\n")   # CRLF everywhere
    return [line.split(" ") for line in raw.decode().split("\r\n") if line]


# ----------------------------------------------------------------------------- generation
def test_tiny_generates_quickly_in_the_dataset_layout(tiny):
    out, summary = tiny
    json.dumps(summary)
    assert summary["videos"] == TINY.num_videos == 72 and not summary["reused"]
    assert summary["seconds"] < 60, "tiny should take well under 20 s on 2 cores"
    videos = sorted((out / "videos").rglob("v_*_g*_c*.*"))
    assert len(videos) == 72
    assert {v.parent.name for v in videos} == set(CLASS_NAMES[:TINY.classes])
    meta = read_meta(out)
    assert meta["classes"] == list(CLASS_NAMES[:6]) and meta["seed"] == 0
    assert meta["joint_names"] == list(JOINT_NAMES) and meta["bones"] == [list(b) for b in BONES]
    for v in videos[::9]:
        frames = decode(v)                               # the real decode path: PyAV
        assert frames.shape == (TINY.frames, TINY.height, TINY.width, 3)
        assert flow_pair_count(out / "flow" / v.stem) == len(frames)   # frame-aligned flow
        pose = np.load(out / "pose" / f"{v.stem}.npy")
        assert pose.shape == (TINY.frames, len(JOINT_NAMES), 3) and pose.dtype == np.float32


def test_the_video_holds_the_rendered_clip(tiny):
    out, _ = tiny
    rgb, _ = render_dataset_clip(TINY, 0, 3, 2, 1)
    decoded = decode(next((out / "videos" / "Walk").glob("v_Walk_g02_c01.*")))
    err = np.abs(decoded.astype(int) - rgb).mean()
    assert err < 8                                        # only 4:2:0 chroma is lost
    other, _ = render_dataset_clip(TINY, 0, 3, 2, 2)
    assert np.abs(decoded.astype(int) - other).mean() > 2 * err


def test_split_files_follow_the_ucf101_format(tiny):
    out, _ = tiny
    classes = {int(i): name for i, name in _parse_ucf_split(out / "splits" / "classInd.txt")}
    assert classes == {i + 1: n for i, n in enumerate(CLASS_NAMES[:6])}
    train = _parse_ucf_split(out / "splits" / "trainlist01.txt")
    test = _parse_ucf_split(out / "splits" / "testlist01.txt")
    assert all(len(t) == 2 for t in train) and all(len(t) == 1 for t in test)
    seen = set()
    for rel, label in train:
        folder, name = rel.split("/")
        assert classes[int(label)] == folder == name.split("_")[1]
        assert (out / "videos" / rel).is_file()
        seen.add(name)
    test_names = {rel.split("/")[1] for (rel,) in test}
    assert not seen & test_names and len(seen) + len(test_names) == 72
    assert {n.split("_")[2] for n in test_names} == {"g01"}          # group-based, as UCF101
    assert {n.split("_")[2] for n in seen} == {"g02", "g03", "g04"}
    test2 = _parse_ucf_split(out / "splits" / "testlist02.txt")
    assert {rel.split("_")[2] for (rel,) in test2} == {"g02"}


def test_a_finished_dataset_is_reused_and_a_different_one_refused(tiny):
    out, _ = tiny
    t0 = time.perf_counter()
    again = write_synthetic_dataset(out, "tiny", seed=0, progress=False)
    assert again["reused"] and time.perf_counter() - t0 < 2
    with pytest.raises(ValueError, match="different synthetic dataset"):
        write_synthetic_dataset(out, "tiny", seed=1, progress=False)


def test_same_seed_gives_identical_data_and_interrupted_runs_resume(tmp_path, tiny):
    full, _ = tiny
    a, b = tmp_path / "a", tmp_path / "b"
    write_synthetic_dataset(a, "tiny", seed=0, videos=12, progress=False)
    write_synthetic_dataset(b, "tiny", seed=0, videos=12, workers=2, progress=False)
    ids = [video_id(*item) for item in dataset_items(TINY, 12)]
    assert {i.split("_")[1] for i in ids} == set(CLASS_NAMES[:6])     # a prefix covers classes

    def same(rel):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel

    for k in (1, 2, 3):
        same(f"splits/trainlist0{k}.txt")
        same(f"splits/testlist0{k}.txt")
    for vid in ids:
        same(f"pose/{vid}.npy")
        assert (a / f"pose/{vid}.npy").read_bytes() == (full / f"pose/{vid}.npy").read_bytes()
        for t in (1, 12, 24):
            same(f"flow/{vid}/x_{t:05d}.jpg")
            same(f"flow/{vid}/y_{t:05d}.jpg")
    va, vb = sorted((a / "videos").rglob("*_c*.*")), sorted((b / "videos").rglob("*_c*.*"))
    for x, y in zip(va[:3], vb[:3]):
        np.testing.assert_array_equal(decode(x), decode(y))

    # interrupt: lose a video, a flow folder and the meta; the rerun restores the same bytes
    victim = ids[5]
    pose_before = (a / f"pose/{victim}.npy").read_bytes()
    flow_before = (a / f"flow/{victim}/x_00007.jpg").read_bytes()
    next((a / "videos").rglob(f"{victim}.*")).unlink()
    (a / f"pose/{victim}.npy").unlink()
    for f in (a / "flow" / victim).iterdir():
        f.unlink()
    (a / "flow" / victim).rmdir()
    (a / "meta.json").rename(a / ".meta.pending.json")          # killed before the end
    with pytest.raises(ValueError, match="different synthetic dataset"):
        write_synthetic_dataset(a, "tiny", seed=5, videos=12, progress=False)   # no mixing
    summary = write_synthetic_dataset(a, "tiny", seed=0, videos=12, progress=False)
    assert not summary["reused"] and (a / "meta.json").is_file()
    assert not (a / ".meta.pending.json").exists()
    assert (a / f"pose/{victim}.npy").read_bytes() == pose_before
    assert (a / f"flow/{victim}/x_00007.jpg").read_bytes() == flow_before


def test_bad_arguments_are_rejected(tmp_path):
    (tmp_path / "ucf101").mkdir()
    (tmp_path / "ucf101" / "notes.txt").write_text("someone else's data")
    with pytest.raises(ValueError, match="not empty"):
        write_synthetic_dataset(tmp_path / "ucf101", "tiny", videos=6, progress=False)
    with pytest.raises(ValueError, match="unknown synthetic size"):
        write_synthetic_dataset(tmp_path, "huge", progress=False)
    with pytest.raises(ValueError, match="videos must be in 1..72"):
        write_synthetic_dataset(tmp_path, "tiny", videos=500, progress=False)
    with pytest.raises(ValueError, match="unknown class"):
        render_clip("Dance")


# ----------------------------------------------------------------------------- motion vs look
def _pose_features(pose: np.ndarray) -> np.ndarray:
    """Size- and position-free motion descriptors of a (T, J, 3) pose, mirror-invariant."""
    xy = pose[..., :2]
    scale = np.ptp(xy[..., 1], axis=1).max()
    rel = (xy - xy[:, 8:9]) / scale                      # relative to the pelvis
    rel[..., 0] = np.abs(rel[..., 0])
    vel = np.abs(np.diff(xy, axis=0)) / scale
    return np.concatenate([rel.std(0).ravel(), rel.mean(0).ravel(), vel.mean(0).ravel()])


def _colour_features(rgb: np.ndarray) -> np.ndarray:
    return np.concatenate([np.histogram(rgb[..., c], bins=8, range=(0, 256))[0]
                           for c in range(3)]) / rgb[..., 0].size


def _nearest_centroid_accuracy(x, y, train):
    z = (x - x[train].mean(0)) / (x[train].std(0) + 1e-6)
    centroids = np.stack([z[train & (y == k)].mean(0) for k in np.unique(y)])
    pred = np.argmin(((z[~train][:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    return float((pred == y[~train]).mean())


def test_class_is_in_the_motion_not_in_the_appearance():
    items = dataset_items(TINY)
    clips = [render_dataset_clip(TINY, 0, k, g, c) for k, g, c in items]
    y = np.array([k for k, _, _ in items])
    train = np.array([g > TINY.test_groups for _, g, _ in items])     # unseen test groups
    motion = _nearest_centroid_accuracy(np.stack([_pose_features(p) for _, p in clips]), y, train)
    colour = _nearest_centroid_accuracy(np.stack([_colour_features(r) for r, _ in clips]), y, train)
    chance = 1 / TINY.classes
    assert motion > 0.8, motion
    assert colour < chance + 0.2, colour


def test_siblings_share_their_look_and_classes_differ_in_their_motion():
    rgb_a, pose_a = render_dataset_clip(TINY, 0, 0, 2, 1)
    rgb_b, _ = render_dataset_clip(TINY, 0, 0, 2, 2)                   # a sibling clip
    rgb_c, _ = render_dataset_clip(TINY, 0, 0, 3, 1)                   # another group
    hist = [_colour_features(r) for r in (rgb_a, rgb_b, rgb_c)]
    assert np.abs(hist[0] - hist[1]).sum() < np.abs(hist[0] - hist[2]).sum()
    # one appearance seed, two classes: same scene, different motion
    wave, wave_pose = render_clip("Wave", seed=3, appearance_seed=7)
    squat, squat_pose = render_clip("Squat", seed=3, appearance_seed=7)
    elsewhere, _ = render_clip("Wave", seed=3, appearance_seed=8)
    h_wave, h_squat, h_else = (_colour_features(r) for r in (wave, squat, elsewhere))
    assert np.abs(h_wave - h_squat).sum() < 0.5 * np.abs(h_wave - h_else).sum()
    assert np.abs(_pose_features(wave_pose) - _pose_features(squat_pose)).sum() > 1


def test_render_clip_shapes_and_pose_coordinates():
    rgb, pose = render_clip(2, seed=1, frames=10, size=(48, 60))
    assert rgb.shape == (10, 48, 60, 3) and rgb.dtype == np.uint8
    assert pose.shape == (10, len(JOINT_NAMES), 3) and pose.dtype == np.float32
    assert set(np.unique(pose[..., 2])) <= {0.0, 1.0}
    inside = pose[..., 2] == 1
    assert inside.mean() > 0.8
    assert np.all((pose[..., 0][inside] >= -0.5) & (pose[..., 0][inside] < 59.5))
    head_below_neck = pose[:, 0, 1] < pose[:, 1, 1]                   # y grows downwards
    assert head_below_neck.all()


def test_flow_moves_where_the_pose_moves(tiny):
    out, _ = tiny
    for vid in ("v_Wave_g01_c01", "v_Wave_g03_c02", "v_Kick_g02_c03"):
        flow = _read_flow(out / "flow" / vid)                          # (T, H, W, 2) px
        pose = np.load(out / "pose" / f"{vid}.npy")[..., :2]
        limbs = [(3, 4), (6, 7), (10, 11), (13, 14)]                   # forearms and shins
        mids = np.stack([(pose[:, a] + pose[:, b]) / 2 for a, b in limbs], 1)   # (T, 4, 2)
        true = mids[1:] - mids[:-1]                                    # their motion t -> t+1
        limb = np.argmax(np.linalg.norm(true, axis=-1).sum(0))         # the one that moves
        h, w = flow.shape[1:3]
        xs = np.clip(np.rint(mids[:-1, limb, 0]).astype(int), 0, w - 1)
        ys = np.clip(np.rint(mids[:-1, limb, 1]).astype(int), 0, h - 1)
        measured = flow[np.arange(len(xs)), ys, xs]                    # (T-1, 2)
        fast = np.linalg.norm(true[:, limb], axis=-1) > 1.5
        cos = np.sum(measured[fast] * true[fast, limb], -1) / (
            np.linalg.norm(measured[fast], axis=-1) * np.linalg.norm(true[fast, limb], axis=-1)
            + 1e-6)
        assert fast.sum() >= 4 and np.median(cos) > 0.7, (vid, np.median(cos))


def test_yuv_conversion_is_what_the_decoder_inverts(tmp_path):
    grey = np.full((6, 6, 3), 128, np.uint8)
    yuv = rgb_to_yuv420p(grey)
    assert yuv.shape == (9, 6)
    assert abs(int(yuv[0, 0]) - 126) <= 1 and np.all(yuv.ravel()[36:] == 128)  # neutral chroma
    rgb, _ = render_clip("Clap", seed=2, frames=3, size=(62, 78))             # H % 4 == 2
    frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(rgb[0]), format="yuv420p")
    back = frame.to_ndarray(format="rgb24").astype(int)
    assert np.abs(back - rgb[0]).mean() < 8                                  # 4:2:0 loss only
    with pytest.raises(ValueError, match="even"):
        rgb_to_yuv420p(np.zeros((5, 6, 3), np.uint8))


def test_encode_video_writes_what_the_decoder_reads_back(tmp_path):
    codec, ext = video_codec()
    rgb, _ = render_clip("Kick", seed=4, frames=6)
    path = tmp_path / f"kick{ext}"
    encode_video(path, rgb, codec, fps=FPS)
    info = probe_video(path)
    assert info["frames"] == 6 and (info["height"], info["width"]) == rgb.shape[1:3] and info["fps"] == FPS
    assert np.abs(decode(path).astype(int) - rgb).mean() < 8                 # 4:2:0 loss only
    again = tmp_path / f"again{ext}"
    encode_video(again, rgb, codec, fps=FPS)
    np.testing.assert_array_equal(decode(again), decode(path))              # deterministic


CPU = SYNTHETIC_SIZES["cpu"]


def test_context_puts_a_fixed_share_of_each_classs_groups_in_its_scene_on_both_sides_of_the_split():
    test = set(range(1, CPU.test_groups + 1))
    for seed in (0, 1):
        for label in range(CPU.classes):
            groups = context_groups(CPU, seed, label)
            assert len(groups & test) == round(CPU.context * CPU.test_groups)
            assert len(groups - test) == round(CPU.context * (CPU.groups - CPU.test_groups))
    assert context_groups(CPU, 0, 3) != context_groups(CPU, 1, 3)           # which ones: the seed's draw
    assert context_groups(TINY, 0, 3) == set()                              # v1 data: no context


def test_a_class_scene_is_the_same_in_every_seed_and_a_group_shares_one_look():
    def background(seed, label, group):
        rgb, _ = render_dataset_clip(CPU, seed, label, group, 1)
        return rgb[:, :6, :6].reshape(-1, 3).mean(0)                       # a corner: no figure there
    label = 2
    in_ctx = [sorted(context_groups(CPU, s, label))[0] for s in (0, 1)]
    a, b = background(0, label, in_ctx[0]), background(1, label, in_ctx[1])
    assert np.abs(a - b).max() < 25                                        # the class's scene, any seed
    plain = next(g for g in range(1, CPU.groups + 1)
                 if all(g not in context_groups(CPU, 0, k) for k in (0, 1)))
    c, d = background(0, 0, plain), background(0, 1, plain)                # two classes, one group
    assert np.abs(c - d).max() < 2                                         # appearance="group": one look
    sizes = SYNTHETIC_SIZES["cpu"]
    assert (sizes.appearance, sizes.scene_motion, sizes.context) == ("group", 0.0, 0.5)


# --------------------------------------------------------------------------- generator v3
GATES = SYNTHETIC_SIZES["gates"]

#: sha256 (first 16 hex digits) of rgb + pose bytes of clips rendered by generator v2, computed from
#: the code before generator v3 existed: v3's settings must leave every v2 size as it was, bit for bit
V2_HASHES = {
    ("tiny", 0, 0, 1, 1): "b8cca13bf3674cdc", ("tiny", 0, 5, 4, 3): "6487e3b986602d81",
    ("tiny", 1234, 0, 1, 1): "7c96343585acd2d4", ("tiny", 1234, 5, 4, 3): "11b8ab44480b64c5",
    ("cpu", 0, 0, 1, 1): "97b67337e6e72962", ("cpu", 0, 3, 2, 4): "0dfdebd2d9969102",
    ("cpu", 0, 9, 12, 2): "83f00f1d85a58372", ("cpu", 1234, 0, 1, 1): "8d4c7cde46572360",
    ("cpu", 1234, 3, 2, 4): "fd4d801a8ba87c09", ("cpu", 1234, 9, 12, 2): "87cf098ba627341e",
}


@pytest.mark.parametrize("key", sorted(V2_HASHES))
def test_generator_v2_sizes_render_bit_identically(key):
    size, seed, label, group, clip = key
    rgb, pose = render_dataset_clip(SYNTHETIC_SIZES[size], seed, label, group, clip)
    assert hashlib.sha256(rgb.tobytes() + pose.tobytes()).hexdigest()[:16] == V2_HASHES[key]
    assert SYNTHETIC_SIZES[size].version == 2 and SYNTHETIC_SIZES[size].geometry() is None


def test_the_gates_size_is_generator_v3_with_its_design():
    assert GATES.version == 3 and GATES.appearance == "group_clip"
    assert (GATES.height, GATES.width, GATES.groups, GATES.test_groups, GATES.clips_per_group) == (48, 48, 22, 10, 4)
    geometry = GATES.geometry()
    assert geometry.figure_height == (0.68, 0.76) and geometry.limb_width == (4.3, 6.0)
    assert geometry.distractor_scale == 48 / 64
    with pytest.raises(ValueError, match="appearance"):
        SyntheticSize(classes=2, groups=2, clips_per_group=1, frames=4, appearance="clip")
    with pytest.raises(ValueError, match="figure_height"):
        SyntheticSize(classes=2, groups=2, clips_per_group=1, frames=4, figure_height=(0.8, 0.7))


def test_group_clip_shares_one_look_per_group_and_clip_across_classes():
    def corner(label, group, clip):
        rgb, _ = render_dataset_clip(GATES, 0, label, group, clip)
        return rgb[:, :5, :5].reshape(-1, 3).astype(float).mean(0)        # background only
    plain = next(g for g in range(1, GATES.groups + 1)
                 if all(g not in context_groups(GATES, 0, k) for k in (0, 1)))
    same = np.abs(corner(0, plain, 2) - corner(1, plain, 2)).max()          # two classes, one (group, clip)
    other = np.abs(corner(0, plain, 2) - corner(0, plain, 3)).max()         # the next clip: another look
    assert same < 2 < other


def test_the_v3_actor_stands_inside_the_centre_crop():
    """The gates' data are cut as short side 40, centre crop 32: the crop spans [4.3, 42.7] px of the
    48-px frame (pixel centres at integers). The standing figure (feet line, head top, centre) lies
    inside it in every look, and the rendered keypoints stay inside in nearly every frame (a jump
    or a walk's last steps may leave it by a few px)."""
    lo, hi = 4 * 48 / 40 - 0.5, 36 * 48 / 40 - 0.5         # the crop's edges [4, 36] of 40 px, in 48-px centres
    g = GATES.geometry()
    tallest = 0.925 * g.figure_height[1] * 48 * 1.05        # head top above the feet: 0.925 of the height, x scale
    assert g.feet_line[1] * 48 <= hi + 0.05 and g.feet_line[0] * 48 - tallest >= lo
    assert lo <= g.figure_x[0] * 48 - 3 and g.figure_x[1] * 48 + 3 <= hi       # centre +- the clip's offset
    inside, total = 0, 0
    for label, group, clip in dataset_items(GATES)[::29]:
        _, pose = render_dataset_clip(GATES, 0, label, group, clip)
        xy = pose[..., :2]
        assert (pose[..., 2] == 1).all()                                   # always inside the frame
        inside += int(((xy >= lo) & (xy <= hi)).all(axis=-1).sum())
        total += xy.shape[0] * xy.shape[1]
    assert inside / total > 0.99, inside / total


def test_the_gates_meta_records_generator_v3(tmp_path):
    meta = _meta("gates", GATES, 0, dataset_items(GATES, 10), "dis", "h264", ".mp4")
    assert meta["generator_version"] == 3 and meta["params"]["appearance"] == "group_clip"
    assert _meta("cpu", CPU, 0, dataset_items(CPU, 10), "dis", "h264", ".mp4")["generator_version"] == 2
