"""Figures of the lessons: each draws what it is given (the widget's function included)."""
import math

import numpy as np
import pytest
import torch

from cmmc_lib import mixing, viz
from cmmc_lib.course import lesson_setup


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    viz.plt.close("all")


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
    flow = torch.zeros(2, 2, 4, 4)
    flow[0] = 0.5                                                  # moving right, every frame
    assert np.array_equal(viz.to_frames(flow), viz.flow_to_rgb(flow))   # flow is drawn with the wheel
    with pytest.raises(ValueError):
        viz.to_frames(np.zeros((4, 4, 3), np.uint8))


def _field(u, v, frames=1):
    f = torch.zeros(2, frames, 2, 2)
    f[0], f[1] = u, v
    return f


def test_flow_coding_maps_known_directions_to_the_wheel_colours():
    """Standard Middlebury wheel: right = red, left = cyan-blue, down = yellow, up = violet-blue;
    no motion = white."""
    colour = {name: viz.flow_to_rgb(_field(u, v))[0, 0, 0].tolist()
              for name, (u, v) in {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}.items()}
    assert colour["right"] == [255, 0, 0]
    assert colour["left"] == [0, 209, 255]
    assert colour["down"] == [255, 229, 0]
    assert colour["up"] == [88, 0, 255]
    still = torch.zeros(2, 1, 2, 2)
    still[0, 0, 0, 0] = 1.0                                        # one moving pixel sets the scale
    assert viz.flow_to_rgb(still)[0, 1, 1].tolist() == [255, 255, 255]


def test_flow_coding_is_scaled_per_clip_not_per_frame():
    clip = torch.zeros(2, 2, 2, 2)
    clip[0, 0] = 1.0                                               # frame 0: fast
    clip[0, 1] = 0.5                                               # frame 1: half as fast, same direction
    img = viz.flow_to_rgb(clip).astype(int)
    assert img[0, 0, 0].tolist() == [255, 0, 0]
    assert img[1, 0, 0, 0] == 255 and 100 < img[1, 0, 0, 1] < 160   # paler red: the clip's scale
    per_frame = viz.flow_to_rgb(clip[:, 1:])                      # alone, the slow frame is saturated
    assert per_frame[0, 0, 0].tolist() == [255, 0, 0]
    assert viz.flow_speed_px(clip) == pytest.approx(20.0)          # clips hold px / 20


def test_flow_wheel_shows_the_colour_of_each_direction_at_its_rim():
    wheel = viz.flow_wheel_image(65)
    c = 32
    assert wheel[c, 64].tolist() == viz.flow_to_rgb(_field(1, 0))[0, 0, 0].tolist()    # right of centre
    assert wheel[64, c].tolist() == viz.flow_to_rgb(_field(0, 1))[0, 0, 0].tolist()    # below: moving down
    assert wheel[c, 0].tolist() == viz.flow_to_rgb(_field(-1, 0))[0, 0, 0].tolist()
    assert wheel[c, c].tolist() == [255, 255, 255] and wheel[0, 0].tolist() == [255, 255, 255]
    with pytest.raises(ValueError):
        viz.flow_wheel_image(64)


def test_frame_strip_adds_a_wheel_legend_to_flow_rows_only():
    rgb = torch.zeros(3, 8, 16, 16)
    flow = torch.zeros(2, 8, 16, 16)
    flow[0, :, 4:8, 4:8] = 0.1                                     # 2 px / frame to the right
    fig = viz.frame_strip([rgb, flow], titles=["rgb", "flow"], n=4)
    legends = [ax for ax in fig.axes if ax.get_label() == "flow-legend"]
    assert len(legends) == 1 and "2.0 px/frame" in legends[0].get_title()
    assert legends[0] in np.array(fig.axes).reshape(2, 5)[1]       # at the end of the flow row
    shown = np.array(fig.axes).reshape(2, 5)[1, 0].get_images()[0].get_array()
    assert np.array_equal(np.asarray(shown), viz.flow_to_rgb(flow)[0])
    fig = viz.frame_strip([rgb], n=4)
    assert not [ax for ax in fig.axes if ax.get_label() == "flow-legend"] and len(fig.axes) == 4


def test_feature_slices_outline_the_pasted_region():
    h1, h2 = torch.zeros(4, 6, 5, 5), torch.ones(4, 6, 5, 5)
    out = mixing.cross_modal_cutmix(h1[None], h2[None], perm=torch.tensor([0]), generator=torch.Generator().manual_seed(0))
    box = out.box.box
    fig = viz.feature_slices(h1, h2, out.mixed[0], box)
    axes = np.array(fig.axes[:-1]).reshape(3, -1)                  # the last axes is the colour bar
    inside = [box[1].start <= t < box[1].stop for t in range(6)]
    assert [len(ax.patches) > 0 for ax in axes[2]] == inside


def test_feature_slices_show_a_channel_that_carries_signal_and_no_box_for_a_blend():
    h1 = torch.zeros(4, 6, 5, 5)
    h2 = torch.zeros(4, 6, 5, 5)
    h2[2] = torch.randn(6, 5, 5)                                   # one channel of a ReLU map carries signal
    box = (slice(0, 4), slice(1, 4), slice(0, 3), slice(0, 3))
    fig = viz.feature_slices(h1, h2, h2, box)
    assert fig._suptitle.get_text().startswith("channel 2 ")
    blend = viz.feature_slices(h1, h2, 0.5 * h1 + 0.5 * h2, None)
    assert not any(ax.patches for ax in blend.axes) and "red box" not in blend._suptitle.get_text()
    assert blend._suptitle.get_text().startswith("channel 2 ")


def test_feature_slices_share_one_colour_scale():
    h1, h2 = torch.zeros(4, 6, 5, 5), torch.full((4, 6, 5, 5), 10.0)
    out = mixing.cross_modal_cutmix(h1[None], h2[None], perm=torch.tensor([0]), generator=torch.Generator().manual_seed(0))
    fig = viz.feature_slices(h1, h2, out.mixed[0], out.box.box)
    limits = {ax.get_images()[0].get_clim() for ax in fig.axes[:-1]}
    assert limits == {(0.0, 10.0)}                                  # every row, every frame
    assert fig.axes[-1].get_ylabel() == "activation"                # one colour bar


def test_curves_recall_and_confusion_figures():
    rows = [{"kind": "step", "step": 1, "loss": 3.0, "knn_r1": None},
            {"kind": "epoch", "step": 1, "loss": 3.0, "knn_r1": 0.2}]
    fig = viz.training_curves({"rgb": rows})
    assert [len(ax.lines) for ax in fig.axes] == [2, 1]      # loss: steps and epochs; kNN: epochs
    fig = viz.recall_at_k({"rgb": {1: 0.2, 5: 0.5}, "flow": {"1": 0.3, "5": 0.6}})
    assert len(fig.axes[0].lines) == 2
    fig = viz.confusion([[2, 0], [1, 1]], ["a", "b"])
    assert fig.axes[0].get_xlabel() == "predicted"


def test_training_curves_draw_their_reference_lines():
    rows = [{"kind": "epoch", "step": 1, "loss": 3.0, "knn_r1": 0.2}]
    fig = viz.training_curves({"rgb": rows}, loss_reference=math.log(24), knn_chance=0.1, knn_n=80)
    loss_ax, knn_ax = fig.axes
    assert any(np.allclose(line.get_ydata(), math.log(24)) for line in loss_ax.lines)
    assert any(np.allclose(line.get_ydata(), 0.1) for line in knn_ax.lines)
    band = [p for p in knn_ax.patches]
    assert band and band[0].get_extents() is not None
    labels = knn_ax.get_legend_handles_labels()[1]
    assert any("chance 0.10" in label for label in labels) and any("2 SE" in label for label in labels)


def test_recall_plot_has_chance_curve_error_bars_and_ticks():
    fig = viz.recall_at_k({"rgb": {1: 0.2, 5: 0.5, 10: 0.6, 20: 0.8}}, chance={1: 0.1, 5: 0.41, 10: 0.65, 20: 0.88},
                          errors={"rgb": {1: 0.04, 5: 0.05, 10: 0.05, 20: 0.04}})
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == [1, 5, 10, 20]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "5", "10", "20"]
    chance_line = [line for line in ax.lines if line.get_label() == "chance (random ranking)"]
    assert chance_line and list(chance_line[0].get_ydata()) == [0.1, 0.41, 0.65, 0.88]
    assert ax.containers and ax.containers[0].has_yerr               # the error bars of the rgb curve


def test_lam_distributions_and_diagram():
    fig = viz.lam_distributions({"alpha=1": mixing.lam_samples((8, 4, 8, 8), 1.0, n=50)})
    assert fig.axes[0].get_xlim() == (0, 1)
    assert viz.moco_diagram().axes


def test_lam_distributions_draw_the_beta_density_beside():
    alphas = {"alpha=1": 1.0, "alpha=5": 5.0}
    samples = {k: mixing.lam_samples((8, 4, 8, 8), a, n=50) for k, a in alphas.items()}
    fig = viz.lam_distributions(samples, alphas=alphas)
    density_ax, hist_ax = fig.axes
    for line, a in zip(density_ax.lines, alphas.values()):
        x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
        assert np.trapezoid(y, x) == pytest.approx(1.0, abs=0.01)      # a density
        if a == 1.0:
            assert np.allclose(y, 1.0)                                 # Beta(1, 1) is uniform
    means = [line.get_xdata()[0] for line in hist_ax.lines if line.get_linestyle() == "--"]   # mean lines
    assert means == pytest.approx([float(v.mean()) for v in samples.values()])


def test_number_figures_show_chance_and_spread():
    from cmmc_lib.evaluate import chance

    m = {"rgb": chance.measure_rate(0.2, 80, 0.1), "flow": chance.measure_rate(0.5, 80, 0.1)}
    ax = viz.measured_bars(m).axes[0]
    assert [round(b.get_height(), 3) for b in ax.patches] == [0.2, 0.5]
    assert len(ax.collections) >= 2                                    # error bars and chance ticks
    rows = {"MoCo rgb": {"same_class_other_group": 0.1, "same_class": 0.9, "same_group": 0.8}}
    ax = viz.agreement_bars(rows, {"same_class_other_group": 0.1, "same_class": 0.15, "same_group": 0.03}).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()][0] == "same class other group"   # the number that matters first
    ax = viz.fusion_sweep([0, 0.5, 1], [0.5, 0.4, 0.1], chance=0.1, marks={"chosen": 0.0}).axes[0]
    assert any(np.allclose(line.get_xdata(), 0.0) for line in ax.lines[1:])


def test_cmmc_figures_name_shapes_targets_and_library_calls():
    from cmmc_lib.ssl import moco_targets, soft_targets

    fig = viz.cmmc_pipeline(2, 3, (16, 8, 16, 16), (32, 4, 8, 8), 4, lam=0.8)
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    for part in ("16x8x16x16", "32x4x8x8", "mixing.cross_modal_cutmix", "f1.forward_until(x1, k)",
                 "f1.forward_from(g_mix, k)", "moco.keys", "ssl.soft_info_nce", "lam = 0.80", "perm(i)"):
        assert part in texts, part
    perm = torch.tensor([1, 0, 2])
    targets = soft_targets(3, 5, 0, 0.7, perm)
    ax = viz.soft_targets_heatmap(targets, queue_cols=2, lam=0.7, perm=perm, layout="batch").axes[0]
    assert np.allclose(ax.get_images()[0].get_array(), targets.numpy())
    written = sorted(t.get_text() for t in ax.texts if t.get_text()[:1].isdigit())
    assert written == ["0.30", "0.30", "0.70", "0.70", "1.00"]          # row 2 is its own partner: one-hot
    targets = moco_targets(perm, 0.7, queue=2)                           # the library's layout
    ax = viz.soft_targets_heatmap(targets, queue_cols=2, lam=0.7, perm=perm).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["own", "partner", "q0", "q1"]
    assert np.allclose(ax.get_images()[0].get_array(), [[0.7, 0.3, 0, 0], [0.7, 0.3, 0, 0], [1, 0, 0, 0]])


def test_tesseract_panel_wraps_the_plain_function():
    panel = viz.tesseract_panel({"block 3": (480, 16, 16, 16)}, seed=2)
    names = [c.description for c in panel.children[:-1]]
    assert names == ["shape", "alpha", "dims", "seed"] and panel.kwargs["seed"] == 2


def test_lesson_setup_resolves_folders_and_refuses_unknown_profiles(tmp_path):
    lesson = lesson_setup("tiny", data_root=str(tmp_path / "d"), runs_dir=str(tmp_path / "r"),
                          fig_dir=str(tmp_path / "f"), make_data=False)
    assert lesson.cfg.data.root == str(tmp_path / "d") and lesson.cfg.run.out_root == str(tmp_path / "r")
    assert lesson.run_dir("x") == tmp_path / "r" / "x"
    path = lesson.savefig(viz.moco_diagram(), "m")
    assert path.is_file() and path.parent == tmp_path / "f"
    with pytest.raises(ValueError, match="unknown profile"):
        lesson_setup("paper", make_data=False)


def test_flow_methods_share_one_colour_scale_and_a_legend():
    fields = torch.zeros(2, 3, 8, 8)
    fields[0, 0] = 4.0                                     # method 0: 4 px right; method 1: 1 px right
    fields[0, 1] = 1.0
    fig = viz.flow_methods_figure(np.zeros((8, 8), np.uint8), fields, ["a", "b", "still"], [0.5, 0.01, 0.001])
    axes = fig.axes
    a, b, still = (np.asarray(ax.get_images()[0].get_array()) for ax in axes[1:4])
    assert a[0, 0].tolist() != b[0, 0].tolist() and b[0, 0].min() > a[0, 0].min()     # slower: paler
    assert still[0, 0].tolist() == [255, 255, 255]
    assert "500 ms per field" in axes[1].get_title() and axes[-1].get_label() == "flow-legend"
    fig.clf()


def test_the_schedule_draws_each_network_in_its_own_row_with_its_sources():
    from cmmc_lib.config import preset
    from cmmc_lib.pipeline import plan_pipeline
    cfg = preset("tiny", ["ssl.method=cmmc", "schedule.cycles=2", "schedule.cycle_epochs=2", "optim.epochs=4"])
    fig = viz.schedule_figure(plan_pipeline(cfg, "/nowhere"))
    ax = fig.axes[0]
    bars = sorted((round(p.get_x()), round(p.get_y() + p.get_height() / 2)) for p in ax.patches)
    # stage 1 side by side at 0, then rgb, flow, rgb, flow one after the other
    assert bars == [(0, 0), (0, 1), (4, 0), (6, 1), (8, 0), (10, 1)]
    assert len([c for c in ax.get_children() if type(c).__name__ == "Annotation"]) == 4   # one source each
    from matplotlib.colors import to_rgba
    from cmmc_lib.registry import METHODS
    colours = {tuple(p.get_facecolor()) for p in ax.patches}
    assert colours == {to_rgba(METHODS["moco"].colour, 0.3), to_rgba(METHODS["cmmc"].colour, 0.3)}   # the registry's
    fig.clf()


def test_ablation_bars_and_epoch_curves_show_means_spread_and_chance_in_registry_colours():
    from matplotlib.colors import to_rgba

    from cmmc_lib.ablation import CURVES
    from cmmc_lib.registry import METHODS
    from cmmc_lib.tables import summarize
    rows = [{"stream": "rgb", "method": m, "name": METHODS[m].label,
             "linear/pretrain": summarize(v, 100, range(len(v))).to_dict()}
            for m, v in (("moco", [0.2, 0.4]), ("cmmc", [0.6]))]
    fig = viz.ablation_bars(rows, "linear", ("pretrain",), chance={"linear/pretrain": 0.1})
    ax = fig.axes[0]
    bars = sorted(ax.patches, key=lambda p: p.get_height())
    assert [round(p.get_height(), 3) for p in bars] == [0.3, 0.6]
    assert [p.get_facecolor() for p in bars] == [to_rgba(METHODS["moco"].colour), to_rgba(METHODS["cmmc"].colour)]
    caps = [c for c in ax.containers if getattr(c, "has_yerr", False)]
    tops = sorted(float(np.max(seg[:, 1])) for c in caps for seg in c.lines[2][0].get_segments())
    assert tops == pytest.approx([0.3 + float(np.std([0.2, 0.4], ddof=1)), 0.6 + math.sqrt(0.6 * 0.4 / 100)])
    assert any(line.get_ydata()[0] == 0.1 for line in ax.get_lines())          # the chance line
    assert "std over 2 seeds / binomial SE, one seed" in ax.get_ylabel()
    fig.clf()
    curves = {"moco": {0: [(1, 0.2), (2, 0.4)], 1: [(1, 0.4), (2, 0.6)]}, "cmmc-joint": {0: [(1, 0.3), (2, 0.5)]}}
    fig = viz.epoch_curves(curves, CURVES, chance=0.1, stage2_start=1.5)
    ax = fig.axes[0]
    seed0, seed1, moco, joint = ax.get_lines()[:4]                  # each seed, then the mean
    assert list(seed0.get_ydata()) == [0.2, 0.4] and list(seed1.get_ydata()) == [0.4, 0.6]
    assert list(moco.get_ydata()) == pytest.approx([0.3, 0.5]) and "w/o mix (mean of 2 seeds)" == moco.get_label()
    assert to_rgba(moco.get_color()) == to_rgba(METHODS["moco"].colour) and moco.get_marker() != joint.get_marker()
    assert joint.get_label() == "w/o alternate training (mean of 1 seed)" and joint.get_linestyle() == "--"
    assert to_rgba(joint.get_color()) == to_rgba(METHODS["cmmc"].colour)
    assert any(list(line.get_xdata()) == [1.5, 1.5] for line in ax.get_lines())       # the stage-2 marker
    assert all(float(t).is_integer() for t in ax.get_xticks())                       # whole epochs
    assert ax.get_legend().get_bbox_to_anchor().x0 > ax.get_position().x1 * fig.bbox.width - 1  # off the data
    fig.clf()


def test_pose_accuracy_bars_show_each_rows_spread_and_colour():
    from matplotlib.colors import to_rgba

    from cmmc_lib.pose_study import aggregate
    from cmmc_lib.registry import METHODS
    records = [{"seed": s, "variant": v, "joint": j, "motion": 0.5, "two-stream": 0.6, "num_test": 100}
               for s, v, j in ((0, "stage1", 0.3), (0, "moco", 0.4), (1, "moco", 0.6), (0, "cmmc", 0.7))]
    rows = [r for r in aggregate(records, "skeleton") if r["stream"] == "joint"]
    ax = viz.accuracy_bars(rows, 0.1, "joint").axes[0]
    bars = ax.patches
    assert [round(p.get_height(), 1) for p in bars] == [30.0, 50.0, 70.0]
    assert bars[0].get_hatch() == "//" and not bars[1].get_hatch()              # stage 1: not MoCo's own row
    assert to_rgba(bars[2].get_facecolor()[:3]) == to_rgba(METHODS["cmmc"].colour)
    labels = ax.get_legend_handles_labels()[1]
    assert [l for l in labels if not l.startswith("chance")] == ["stage 1 only (MoCo, half the epochs)",
                                                                 "MoCo / SkeletonCLR", "CMMC"]
    assert "std over 2 seeds" in ax.get_ylabel() and "binomial SE, one seed" in ax.get_ylabel()


# ----------------------------------------------------------------------------- the package and its moved modules
def test_viz_is_a_package_of_small_modules_re_exporting_every_public_function():
    import ast
    import importlib
    from pathlib import Path
    folder = Path(viz.__file__).parent
    for path in sorted(folder.glob("*.py")):
        text = path.read_text()
        assert len(text.splitlines()) < 400, f"{path.name} is {len(text.splitlines())} lines"
        tree = ast.parse(text)
        for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
            assert fn.end_lineno - fn.lineno + 1 <= 80, f"{path.name}:{fn.name} is over 80 lines"
            if path.stem != "__init__" and not fn.name.startswith("_"):
                module = importlib.import_module(f"cmmc_lib.viz.{path.stem}")
                assert getattr(viz, fn.name) is getattr(module, fn.name), f"viz.{fn.name} is not re-exported"
                assert fn.name in viz.__all__


def _step():
    rows = [{"method": m, "amp": amp, "channels_last": False, "compiled": False, "clips_per_s": v}
            for m, amp, v in (("moco", "off", 100.0), ("cmmc", "off", 80.0), ("moco", "bf16", 200.0),
                              ("cmmc", "bf16", 150.0))] + [{"method": "cmmc", "error": "out of memory"}]
    extra = {"cmmc/moco@off": {"moco_ms": 10.0, "method_ms": 12.5, "extra_ms": 2.5, "source_forward_ms": 1.5,
                               "mixing_ms": 0.5, "other_ms": 0.5}}
    return {"results": rows, "ratios": {"extra_time": extra}, "device": "cpu", "preset": "tiny", "batch": 8}


def test_bench_figures_draw_throughput_breakdown_loader_and_cost():
    ax = viz.step_throughput(_step()).axes[0]
    assert sorted(round(p.get_height()) for p in ax.patches) == [80, 100, 150, 200]   # the failed row is left out
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["fp32", "bf16"]
    ax = viz.cmmc_breakdown(_step()).axes[0]
    assert any(t.get_text() == "x1.25" for t in ax.texts)                             # CMMC's step over MoCo's
    loaders = {"frames": {"modalities": ["rgb"], "results": [{"workers": 0, "clips_per_s": 50.0},
                                                             {"workers": 2, "clips_per_s": 90.0}]}}
    ax = viz.loader_throughput(loaders, {"moco": 82.0, "cmmc": 80.0}).axes[0]
    assert list(ax.lines[0].get_ydata()) == [50.0, 90.0] and any(np.allclose(l.get_ydata(), 80.0) for l in ax.lines)
    assert not ax.texts and [t.get_text() for t in ax.get_legend().get_texts()][1:] == [
        "the moco step consumes 82 clips/s", "the cmmc step consumes 80 clips/s"]      # in the legend, apart
    cost = {"stages": [{"stage": "stage 1", "method": "moco", "gpu_hours": 30.0},
                       {"stage": "stage 2", "method": "cmmc", "gpu_hours": 20.0}],
            "gpu_hours": 50.0, "wall_hours_on": {"1": 50.0, "8": 6.0}, "scaling": 0.9}
    fig = viz.recipe_cost(cost)
    assert [p.get_height() for p in fig.axes[0].patches] == [30.0, 20.0] and "50 GPU-hours" in fig.axes[0].get_title()


def test_pose_figures_draw_skeletons_streams_tesseract_and_heatmaps():
    from cmmc_lib.registry import skeleton_layout
    layout = skeleton_layout("synthetic")
    pose = np.stack([np.linspace(10, 50, 15), np.linspace(5, 60, 15), np.ones(15)], -1)
    fig = viz.skeleton_over_frame(np.zeros((64, 64, 3), np.uint8), pose, layout, "a frame")
    ax = fig.axes[0]
    assert len(ax.lines) == len(layout.bones) and ax.get_title() == "a frame"
    pose[3, 2] = 0.0                                                     # an unseen joint: its bones are not drawn
    ax = viz.skeleton_over_frame(np.zeros((64, 64, 3), np.uint8), pose, layout).axes[0]
    assert len(ax.lines) == len(layout.bones) - sum(3 in b for b in layout.bones)
    x = np.random.default_rng(0).normal(size=(3, 10, 15, 2)).astype(np.float32)
    fig = viz.stream_panels(x, {"joint": x, "motion": np.diff(x, axis=1, append=x[:, -1:]), "bone": x}, layout,
                            frames=(0, 4, 8))
    assert len(fig.axes) == 6 and "motion" in fig.axes[1].get_title()
    box = (slice(0, 4), slice(2, 6), slice(0, 5), slice(0, 2))
    fig = viz.skeleton_tesseract((8, 10, 15, 2), box, 0.8)
    cut = fig.axes[0].get_images()[0].get_array()
    assert cut.shape == (10, 15) and cut[2, 0] == 0.5 and cut[0, 0] == 0 and "lam = 0.800" in fig._suptitle.get_text()
    rgb, heat = np.zeros((3, 4, 8, 8), np.float32), np.zeros((5, 4, 8, 8), np.float32)
    heat[1, :, 2, 2] = 1.0                                               # the left arm's channel
    fig = viz.heatmap_clip(rgb, heat, frames=(0, 3))
    shown = np.asarray(np.array(fig.axes).reshape(2, 2)[1, 0].get_images()[0].get_array())
    assert shown[0, 0].tolist() == [1.0, 1.0, 1.0] and shown[2, 2].tolist() != [1.0, 1.0, 1.0]
