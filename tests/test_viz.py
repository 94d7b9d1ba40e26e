"""Figures of the lessons: each draws what it is given (the widget's function included)."""
import numpy as np
import pytest
import torch

from cmmc_lib import mixing, viz
from cmmc_lib.course import lesson_setup


def test_tesseract_figure_draws_the_described_box():
    fig, d = viz.tesseract_figure((64, 16, 32, 32), alpha=1.0, dims="cthw", seed=3)
    assert d == mixing.describe_tesseract((64, 16, 32, 32), 1.0, "cthw", 3)
    ax = fig.axes[0]
    c0, c1 = d["box"]["c"]
    assert f"channels [{c0}, {c1}) of 64" in ax.get_title() and f"{d['lam']:.3f}" in ax.get_title()
    assert len(ax.collections) == (2 if d["box_volume"] else 1)       # the map, and the pasted cuboid


def test_frame_strip_marks_the_box_only_on_frames_inside_it():
    clip = torch.zeros(3, 8, 16, 16)
    box = (slice(2, 5), slice(0, 8), slice(0, 8))
    fig = viz.frame_strip([clip, clip], titles=["a", "b"], n=8, boxes=[None, box])
    axes = np.array(fig.axes).reshape(2, 8)
    assert all(len(ax.patches) == 0 for ax in axes[0])
    assert [len(ax.patches) for ax in axes[1]] == [0, 0, 1, 1, 1, 0, 0, 0]


def test_to_frames_maps_the_value_range_and_shows_flow():
    frames = viz.to_frames(torch.full((3, 2, 4, 4), -1.0))
    assert frames.dtype == np.uint8 and frames.shape == (2, 4, 4, 3) and frames.max() == 0
    assert viz.to_frames(torch.ones(2, 2, 4, 4)).shape == (2, 4, 4, 3)
    with pytest.raises(ValueError):
        viz.to_frames(np.zeros((4, 4, 3), np.uint8))


def test_feature_slices_outline_the_pasted_region():
    h1, h2 = torch.zeros(4, 6, 5, 5), torch.ones(4, 6, 5, 5)
    out = mixing.cross_modal_cutmix(h1[None], h2[None], perm=torch.tensor([0]), generator=torch.Generator().manual_seed(0))
    box = out.box.box
    fig = viz.feature_slices(h1, h2, out.mixed[0], box)
    axes = np.array(fig.axes).reshape(3, -1)
    inside = [box[1].start <= t < box[1].stop for t in range(6)]
    assert [len(ax.patches) > 0 for ax in axes[2]] == inside


def test_curves_recall_and_confusion_figures():
    rows = [{"kind": "step", "step": 1, "loss": 3.0, "knn_r1": None},
            {"kind": "epoch", "step": 1, "loss": 3.0, "knn_r1": 0.2}]
    fig = viz.training_curves({"rgb": rows})
    assert [len(ax.lines) for ax in fig.axes] == [2, 1]      # loss: steps and epochs; kNN: epochs
    fig = viz.recall_at_k({"rgb": {1: 0.2, 5: 0.5}, "flow": {"1": 0.3, "5": 0.6}})
    assert len(fig.axes[0].lines) == 2
    fig = viz.confusion([[2, 0], [1, 1]], ["a", "b"])
    assert fig.axes[0].get_xlabel() == "predicted"


def test_lam_distributions_and_diagram():
    fig = viz.lam_distributions({"alpha=1": mixing.lam_samples((8, 4, 8, 8), 1.0, n=50)})
    assert fig.axes[0].get_xlim() == (0, 1)
    assert viz.moco_diagram().axes


def test_lesson_setup_resolves_folders_and_refuses_unknown_profiles(tmp_path):
    lesson = lesson_setup("tiny", data_root=str(tmp_path / "d"), runs_dir=str(tmp_path / "r"),
                          fig_dir=str(tmp_path / "f"), make_data=False)
    assert lesson.cfg.data.root == str(tmp_path / "d") and lesson.cfg.run.out_root == str(tmp_path / "r")
    assert lesson.run_dir("x") == tmp_path / "r" / "x"
    path = lesson.savefig(viz.moco_diagram(), "m")
    assert path.is_file() and path.parent == tmp_path / "f"
    with pytest.raises(ValueError, match="unknown profile"):
        lesson_setup("paper", make_data=False)
