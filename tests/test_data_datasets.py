"""MultiModalClips / build_dataset: the item contract, reproducibility, bad input."""
import logging
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from _data_fixtures import corrupt_copy, write_ucf_like_root, write_video, moving_square_frames
from cmmc_lib.config import DataConfig
from cmmc_lib.data.datasets import MultiModalClips, build_dataset, worker_options
from cmmc_lib.data.splits import VideoEntry
from cmmc_lib.data.items import SeededItems

MODS = ("rgb", "flow", "pose")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_ucf_like_root(tmp_path_factory.mktemp("ds") / "ucf101")


@pytest.fixture
def cfg(root):
    return DataConfig(dataset="ucf101", root=str(root), clip_len=4, stride=2, short_side=24,
                      size=16, views=2, eval_windows=3)


def same_item(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if torch.is_tensor(a[k]):
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
        else:
            assert a[k] == b[k]


def test_train_item_matches_the_contract(cfg):
    ds = build_dataset(cfg, "train", True, MODS)
    assert len(ds) == 8 and ds.classes == ["Alpha", "HandstandPushups"]
    assert ds.labels == [0, 0, 0, 0, 1, 1, 1, 1] and ds.groups == [2, 2, 3, 3] * 2
    item = ds[5]
    assert item["rgb"].shape == (2, 3, 4, 16, 16) and item["rgb"].dtype == torch.float32
    assert item["flow"].shape == (2, 2, 4, 16, 16)
    assert item["pose"].shape == (2, 3, 4, 2)
    for m in ("rgb", "flow"):
        assert item[m].min() >= -1 and item[m].max() <= 1
    assert (item["label"], item["index"], item["group"]) == (1, 5, 2)
    assert item["video"] == ds.videos[5] == "v_HandStandPushups_g02_c02"
    assert not torch.equal(item["rgb"][0], item["rgb"][1])        # two different views


def test_eval_item_has_eval_windows_views_and_is_deterministic(cfg):
    ds = build_dataset(cfg, "test", False, ("rgb", "flow"))
    assert len(ds) == 4
    a = ds[2]
    assert a["rgb"].shape == (3, 3, 4, 16, 16) and a["flow"].shape == (3, 2, 4, 16, 16)
    ds.set_epoch(7)
    same_item(a, ds[2])
    one = build_dataset(cfg, "test", False, ("rgb",), eval_windows=1)
    assert one[0]["rgb"].shape == (1, 3, 4, 16, 16)


def test_same_seed_epoch_index_same_tensors_regardless_of_history(cfg):
    a = build_dataset(cfg, "train", True, MODS, seed=3)
    b = build_dataset(cfg, "train", True, MODS, seed=3, cache=False)
    a.set_epoch(2)
    b.set_epoch(2)
    _ = [b[i] for i in (4, 1, 6)]                       # other items first, cache warm
    np.random.seed(123)
    torch.manual_seed(123)                               # global RNG must not matter
    same_item(a[3], b[3])
    same_item(a[3], b[3])                                # second visit: partial decode path
    first = a[3]
    a.set_epoch(3)
    assert not torch.equal(first["rgb"], a[3]["rgb"])    # new epoch, new clips
    c = build_dataset(cfg, "train", True, MODS, seed=4)
    c.set_epoch(2)
    assert not torch.equal(first["rgb"], c[3]["rgb"])    # new seed, new clips


def test_rgb_flow_and_pose_of_a_view_are_aligned(cfg):
    # the fixture's flow is the decoded video's R and G channels: the same crop gives
    # flow x == R (or -R on a flip) and flow y == G; pose joint 0 sits on the white square
    ds = build_dataset(cfg, "train", True, MODS, color_jitter=0.0, grayscale=0.0)
    flips = 0
    for i in range(len(ds)):
        item = ds[i]
        for v in range(2):
            rgb, flow, pose = item["rgb"][v], item["flow"][v], item["pose"][v]
            assert (flow[1] - rgb[1]).abs().mean() < 0.03
            direct = (flow[0] - rgb[0]).abs().mean()
            mirrored = (flow[0] + rgb[0]).abs().mean()
            assert min(direct, mirrored) < 0.03
            flips += bool(mirrored < direct)
            for t in range(4):
                if pose[2, t, 0] > 0:
                    col = int(((pose[0, t, 0] + 1) / 2 * 16).clamp(0, 15))
                    row = int(((pose[1, t, 0] + 1) / 2 * 16).clamp(0, 15))
                    assert rgb[:, t, row, col].mean() > 0.5           # on the white square
    assert 0 < flips < 2 * len(ds)                                    # both cases seen


def test_pose_alone_uses_the_short_side_geometry(cfg):
    both = build_dataset(cfg, "test", False, ("rgb", "pose"))
    alone = build_dataset(cfg, "test", False, ("pose",))
    torch.testing.assert_close(both[1]["pose"], alone[1]["pose"], rtol=0, atol=0)
    assert alone[1]["pose"].shape == (3, 3, 4, 2)


def test_corrupt_video_is_skipped_counted_and_substituted(root, cfg, tmp_path, caplog):
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("flow", "pose"))
    victim = copy / "videos" / "Alpha" / "v_Alpha_g02_c02.avi"       # train index 1
    corrupt_copy(root / "videos" / "Alpha" / victim.name, victim, "truncate")
    cfg.root = str(copy)
    ds = build_dataset(cfg, "train", True, ("rgb",))
    with caplog.at_level(logging.WARNING):
        item = ds[1]
        again = ds[1]
    assert ds.num_skipped == 1
    assert item["index"] == 2 and item["video"] == ds.videos[2]
    same_item(item, again)
    same_item(item, ds[2])                       # exactly the substitute item
    assert caplog.text.count("skipping unreadable video v_Alpha_g02_c02") == 1
    assert len([ds[i] for i in range(len(ds))]) == 8                 # an epoch survives


def test_all_videos_unreadable_raises(tmp_path):
    bad = tmp_path / "videos" / "A" / "v_A_g01_c01.avi"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"junk")
    ds = MultiModalClips(tmp_path, [VideoEntry("A/v_A_g01_c01.avi", 0, "v_A_g01_c01")], ["A"])
    with pytest.raises(RuntimeError, match="no readable video"):
        ds[0]


def test_workers_give_the_same_batches_and_share_the_skip_count(root, cfg, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("flow", "pose"))
    corrupt_copy(root / "videos" / "Alpha" / "v_Alpha_g03_c01.avi",
                 copy / "videos" / "Alpha" / "v_Alpha_g03_c01.avi", "garbage")
    cfg.root = str(copy)
    batches = []
    for workers in (0, 2):
        ds = build_dataset(cfg, "train", True, ("rgb",), seed=1)
        ds.set_epoch(4)
        loader = DataLoader(ds, batch_size=4, **worker_options(workers))
        batches.append([b["rgb"] for b in loader])
        assert ds.num_skipped == 1
    for a, b in zip(*batches):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_missing_flow_names_the_extract_command(root, cfg, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("pose"))
    shutil.rmtree(copy / "flow" / "v_Alpha_g02_c01")
    cfg.root = str(copy)
    with pytest.raises(FileNotFoundError, match="cmmc flow extract"):
        build_dataset(cfg, "train", True, ("rgb", "flow"))
    with pytest.raises(FileNotFoundError, match="pose"):
        build_dataset(cfg, "train", True, ("pose",))
    assert len(build_dataset(cfg, "test", True, ("flow",))) == 4      # flow alone, no video


def test_missing_videos_are_left_out_with_a_warning(root, cfg, tmp_path, caplog):
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("flow", "pose"))
    (copy / "videos" / "Alpha" / "v_Alpha_g03_c02.avi").unlink()
    cfg.root = str(copy)
    with caplog.at_level(logging.WARNING):
        ds = build_dataset(cfg, "train", True, ("rgb",))
    assert len(ds) == 7 and "v_Alpha_g03_c02" not in ds.videos
    assert "1 of 8 videos" in caplog.text


def test_build_dataset_rejects_bad_requests(cfg, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown DataConfig field"):
        build_dataset(cfg, "train", True, ("rgb",), clip_length=3)
    with pytest.raises(ValueError, match="modalities"):
        build_dataset(cfg, "train", True, ("depth",))
    with pytest.raises(ValueError, match="subset"):
        build_dataset(cfg, "val", True, ("rgb",))
    with pytest.raises(ValueError, match="ntu60"):
        build_dataset(cfg, "train", True, ("rgb",), dataset="ntu60")
    with pytest.raises(FileNotFoundError, match="does not exist: see data/README.md"):
        build_dataset(DataConfig(dataset="ucf101", root=str(tmp_path / "nowhere")), "train", True, ("rgb",))
    (tmp_path / "not-synthetic").mkdir()
    (tmp_path / "not-synthetic" / "notes.txt").write_text("mine")      # never overwritten by the generator
    with pytest.raises(FileNotFoundError, match="holds no synthetic dataset.*cmmc data synth --size tiny"):
        build_dataset(DataConfig(dataset="synthetic", root=str(tmp_path / "not-synthetic")), "train", True)
    (tmp_path / "empty").mkdir()                # a folder the user named: the generator writes nothing there
    with pytest.raises(FileNotFoundError, match="holds no synthetic dataset"):
        build_dataset(DataConfig(dataset="synthetic", root=str(tmp_path / "empty")), "train", True)
    assert list((tmp_path / "empty").iterdir()) == []


def test_hmdb51_root_and_short_videos(tmp_path):
    for name, marker, frames in (("a1", 1, 3), ("a2", 2, 12), ("b1", 1, 12)):
        cls = "wave" if name.startswith("a") else "clap"
        write_video(tmp_path / "videos" / cls / f"{name}.avi", moving_square_frames(frames))
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "wave_test_split1.txt").write_bytes(b"a1.avi 1 \r\na2.avi 2 \r\n")
    (splits / "clap_test_split1.txt").write_bytes(b"b1.avi 1 \r\n")
    cfg = DataConfig(dataset="hmdb51", root=str(tmp_path), clip_len=4, stride=2, short_side=24,
                     size=16)
    ds = build_dataset(cfg, "train", True, ("rgb",))
    assert ds.classes == ["clap", "wave"] and ds.videos == ["b1", "a1"]
    assert ds.labels == [0, 1] and ds.groups == [-1, -1]
    short = ds[1]["rgb"]                       # 3 frames, clip of 4 at stride 2: padded
    assert short.shape == (2, 3, 4, 16, 16)
    assert torch.equal(short[:, :, 2], short[:, :, 3])      # frames 2 and "4" -> last frame


def test_frame_cache_gives_exactly_the_decoded_items_without_decoding(root, cfg, tmp_path, monkeypatch):
    from cmmc_lib.data import datasets
    from cmmc_lib.data.frame_cache import build_frame_cache
    out = tmp_path / "cache"
    built = build_frame_cache(root, out, short_side=cfg.short_side, progress=False)
    assert built["done"] == 2 * 12 and not built["failed"] and built["short_side"] == 24    # 12 videos, 12 flow folders
    plain = {s: build_dataset(cfg, s, s == "train", MODS, seed=2, frame_cache="off", cache=False)
             for s in ("train", "test")}
    expected = {s: [ds[i] for i in range(len(ds))] for s, ds in plain.items()}

    def no_decoding(*a, **k):
        raise AssertionError("decoded although the frame cache holds this video")
    for name in ("decode_video", "read_clip", "read_flow_frames"):
        monkeypatch.setattr(datasets, name, no_decoding)
    for subset, items in expected.items():
        cached = build_dataset(cfg, subset, subset == "train", MODS, seed=2, frame_cache=str(out), cache=False)
        assert cached.frame_cache is not None and cached.frame_counts() == [len(np.load(
            out / "rgb" / f"{v}.npy", mmap_mode="r")) for v in cached.videos]
        for i, item in enumerate(items):
            same_item(item, cached[i])
        in_ram = build_dataset(cfg, subset, subset == "train", MODS, seed=2, frame_cache=str(out), cache=False,
                               in_memory=True)
        in_ram.frame_cache.keep_open = 2                               # in memory: nothing is ever let go
        for i, item in enumerate(items):
            same_item(item, in_ram[i])
        held = in_ram.frame_cache._open_maps
        assert len(held) == 2 * len(items) and not any(isinstance(a, np.memmap) for a in held.values())
    monkeypatch.undo()
    torn = out / "rgb" / f"{plain['train'].videos[1]}.npy"
    torn.write_bytes(torn.read_bytes()[:200])                          # a cache file cut short
    damaged = build_dataset(cfg, "train", True, MODS, seed=2, frame_cache=str(out), cache=False)
    assert damaged[1]["video"] == plain["train"].videos[2]             # skipped, named, the run goes on
    assert damaged.skipped_items() == [plain["train"].videos[1]]
    torn.unlink()
    (out / "rgb" / "v_Alpha_g02_c02.npy").unlink(missing_ok=True)      # a cache still being built: decoded
    partial = build_dataset(cfg, "train", True, MODS, seed=2, frame_cache=str(out), cache=False)
    for i, item in enumerate(expected["train"]):
        same_item(item, partial[i])


def test_frame_cache_auto_reads_the_roots_own_cache_and_refuses_another_short_side(root, cfg, tmp_path):
    from cmmc_lib.data.frame_cache import build_frame_cache, default_cache_dir
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("pose"))
    cfg.root = str(copy)
    assert build_dataset(cfg, "test", False, ("rgb",)).frame_cache is None          # auto, nothing built
    build_frame_cache(copy, short_side=cfg.short_side, modalities=("rgb",), progress=False)
    ds = build_dataset(cfg, "test", False, ("rgb", "flow"))
    assert ds.frame_cache.path == default_cache_dir(copy, 24) == copy / "frames_s24"
    assert ds._in_frame_cache("rgb", 0) and not ds._in_frame_cache("flow", 0)       # flow: decoded
    assert build_dataset(cfg, "test", False, ("rgb",), frame_cache="off").frame_cache is None
    assert build_dataset(cfg, "test", False, ("rgb",), short_side=32).frame_cache is None   # auto: frames_s32 absent
    with pytest.raises(ValueError, match="short side 24, but data.short_side is 32"):
        build_dataset(cfg, "test", False, ("rgb",), short_side=32, frame_cache=str(copy / "frames_s24"))
    with pytest.raises(FileNotFoundError, match="cmmc data cache"):
        build_dataset(cfg, "test", False, ("rgb",), frame_cache=str(tmp_path / "nowhere"))


def test_worker_options_prefetch_and_persistent_workers():
    assert worker_options(0, prefetch=4, persistent=True) == {"num_workers": 0}
    opts = worker_options(2, prefetch=4, persistent=True)
    assert opts["prefetch_factor"] == 4 and opts["persistent_workers"] is True
    assert opts["multiprocessing_context"] == "spawn"
    assert "prefetch_factor" not in worker_options(2) and worker_options(2)["persistent_workers"] is False
    with pytest.raises(ValueError, match="data.prefetch must be >= 1"):
        worker_options(2, prefetch=0)


class Items(SeededItems):
    """Four toy items, some unreadable: what every dataset of the loop shares."""
    noun = "clip"

    def __init__(self, bad, train=True):
        self.bad, self.labels = set(bad), [7, 8, 9, 10]
        self._init_items(4, seed=0, substitute=train)

    def __len__(self):
        return 4

    def _item(self, j):
        if j in self.bad:
            raise OSError(f"broken {j}")
        return {"index": j, "draw": float(self.item_rng(j).random())}

    def _name(self, j):
        return f"c{j}"

    def _origin(self):
        return "the toy set"


def test_training_items_skip_to_the_next_readable_one_and_warn_once(caplog):
    ds = Items(bad={1, 2})
    assert [ds[i]["index"] for i in (0, 1, 2, 1, -1)] == [0, 3, 3, 3, 3]
    assert caplog.text.count("skipping unreadable clip c1: broken 1") == 1
    assert ds._skipped.tolist() == [0, 1, 1, 0] and ds.num_skipped == 2 and ds.skipped_items() == ["c1", "c2"]
    with pytest.raises(IndexError, match="out of range for 4 clips"):
        ds[4]
    with pytest.raises(RuntimeError, match="no readable clip among the 4 of the toy set"):
        Items(bad={0, 1, 2, 3})[0]


def test_evaluation_items_are_never_replaced_but_marked_skipped():
    ds = Items(bad={1}, train=False)
    assert [ds[i]["index"] for i in (0, 2, 3)] == [0, 2, 3]
    assert ds[1] == {"skipped": True, "video": "c1", "index": 1, "label": 8}
    assert ds.skipped_items() == ["c1"]


def test_an_items_draws_depend_on_seed_epoch_and_index_only():
    a, b = Items(bad=()), Items(bad=())
    a.set_epoch(3)
    b.set_epoch(3)
    assert a[2]["draw"] == b[2]["draw"] != a[1]["draw"]
    b.set_epoch(4)
    assert b[2]["draw"] != a[2]["draw"]
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        a.set_epoch(-1)
