"""Lesson 09's helpers (pose): the skeleton config of a lesson, one frame with its skeleton (NTU's
real aligned RGB + skeleton pair when the real-data fixtures are present, the synthetic data
otherwise), one sample's streams, one skeleton tesseract, and the lesson's runs of the pose study.

Course helpers that only this lesson needs live here (:mod:`cmmc_lib.course` holds the shared ones).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .bench import input_shape
from .config import Config, preset
from .course import ABLATION_SEEDS, project_root
from .data.datasets import build_dataset
from .data.skeleton import read_ntu_colour_pose
from .data.splits import VideoIndex, load_split
from .data.video import read_clip
from .mixing import sample_lam, sample_tesseract
from .models import build_backbone
from .pose_study import ROUTE_PROTOCOL, pose_study
from .registry import SKELETON_LAYOUTS, skeleton_layout
from .ssl.factory import layout_for
from .tables import fmt_cell

REAL_SAMPLE = "S001C001P001R001A001"          # NTU-60's aligned RGB video + skeleton in the fixtures


def skeleton_config(lesson, stream: str = "joint") -> Config:
    """The lesson's profile with its skeleton settings (``ssl.modality=<stream>``: the preset's
    skeleton face), on the lesson's synthetic data, seed, device and runs folder."""
    cfg = lesson.cfg
    return preset(lesson.profile, [f"ssl.modality={stream}", f"data.root={lesson.data_root}",
                                   f"run.seed={cfg.run.seed}", f"run.device={cfg.run.device}",
                                   f"run.out_root={cfg.run.out_root}"])


def realdata_root(realdata: str | Path | None = None) -> Path:
    """``realdata``, else ``$CMMC_REALDATA``, else ``../shared/realdata`` beside the project."""
    if realdata:
        return Path(realdata)
    return Path(os.environ.get("CMMC_REALDATA", project_root().parent / "shared" / "realdata"))


def example_frame(lesson, realdata: str | Path | None = None, t: int = 40) -> dict[str, Any]:
    """A frame and its skeleton in that frame's pixels: ``frame`` uint8 (H, W, 3), ``pose``
    (M, J, 3) x, y px and confidence, ``layout``, ``source`` (a sentence). NTU's real pair
    (frame t of ``S001C001P001R001A001_rgb.avi`` and the colour-image coordinates of its
    ``.skeleton``) when present, else frame t of the first synthetic test video and its pose."""
    root = realdata_root(realdata) / "ntu60"
    video, skel = root / "rgb" / f"{REAL_SAMPLE}_rgb.avi", root / "skeletons" / f"{REAL_SAMPLE}.skeleton"
    if video.is_file() and skel.is_file():
        pose = read_ntu_colour_pose(skel)
        t = min(t, pose.shape[1] - 1)
        return {"frame": read_clip(video, [t])[0], "pose": pose[:, t], "layout": SKELETON_LAYOUTS["ntu25"],
                "source": f"NTU RGB+D {REAL_SAMPLE} (drink water), frame {t}: the real RGB frame and the "
                          "skeleton file's colour-image coordinates"}
    split = load_split("synthetic", lesson.data_root, 1)
    entry = split.test[0]
    pose = np.load(lesson.data_root / "pose" / f"{entry.video}.npy")
    t = min(t, len(pose) - 1)
    path = VideoIndex(lesson.data_root / "videos").find(entry.relpath)
    return {"frame": read_clip(path, [t])[0], "pose": pose[None, t], "layout": skeleton_layout("synthetic"),
            "source": f"synthetic {entry.video}, frame {t} (no NTU fixtures at {root})"}


def sample_streams(cfg: Config, index: int = 0, subset: str = "test") -> dict[str, Any]:
    """One sample of the skeleton dataset of ``cfg`` in its three streams (evaluation view, no
    augmentation): ``{"video", "label", "class", "joint", "motion", "bone"}``, arrays (C, T, J, M)."""
    ds = build_dataset(cfg.data, subset, False, ("joint", "motion", "bone"))
    item = ds[index]
    out = {s: item[s][0].numpy() for s in ("joint", "motion", "bone")}
    out.update(video=item["video"], label=item["label"], **{"class": ds.classes[item["label"]]})
    return out


def skeleton_map_shapes(cfg: Config) -> list[tuple[int, ...]]:
    """The per-sample output shape (C, T, V, M) of every ST-GCN unit at the config's input."""
    net = build_backbone(cfg.model.backbone, 3, cfg.model.width, layout_for(cfg))
    return net.block_shapes(input_shape(cfg, cfg.ssl.modality))


def skeleton_tesseract(shape, alpha: float = 1.0, seed: int = 0):
    """A tesseract over (C, T, V) of a (C, T, V, M) unit output, persons whole (the cut letters
    ``c t h`` of the mixing functions): ``(box, lam)``."""
    g = torch.Generator().manual_seed(seed)
    return sample_tesseract(shape, sample_lam(alpha, g), "cth", g)


def run_study(lesson, route: str, seeds=None) -> dict[str, Any]:
    """The pose study (:func:`cmmc_lib.pose_study.pose_study`) at the lesson's profile, in
    ``<runs>/09-<route>``, over the profile's ablation seeds (:data:`cmmc_lib.course.ABLATION_SEEDS`):
    trained once, then reused (train-or-load)."""
    if seeds is None:        # as the ablation lessons: one seed at tiny (mechanics), three at cpu
        seeds = tuple(lesson.cfg.run.seed + s for s in ABLATION_SEEDS[lesson.profile])
    name = route.replace("+", "-")
    return pose_study(lesson.profile, route, seeds, lesson.run_dir(f"09-{name}"),
                      overrides=[f"data.root={lesson.data_root}", f"run.device={lesson.cfg.run.device}",
                                 "run.progress=false"], device="cpu" if lesson.cfg.run.device == "auto" else
                      lesson.cfg.run.device)


def table_rows(result: dict[str, Any]) -> list[str]:
    """The study's rows as aligned text lines: mean ± spread (%) and which spread (std over seeds, or
    one seed's binomial SE), each seed's value, chance."""
    rec = result["records"][0]
    protocol = {"linear": "linear", "finetune": "fine-tune"}[ROUTE_PROTOCOL[result["route"]]]
    lines = [f"{'stream':<11} {'method':<38} {protocol + ' top-1 (%)':>18}  {'spread':<22} seeds"]
    for r in result["rows"]:
        lines.append(f"{r['stream']:<11} {r['name']:<38} {fmt_cell(r):>18}  {r['label']:<22} "
                     + " ".join(f"{100 * v:.1f}" for v in r["values"]))
    lines.append(f"chance {100 / rec['num_classes']:.1f}% ({rec['num_classes']} classes, {rec['num_test']} test samples)")
    return lines
