"""Figures for the lessons. Functions here draw; they compute nothing the lessons need elsewhere.

Every figure function returns a matplotlib ``Figure`` (so a notebook shows it and a script can
save it); none saves it (the lesson does, ``lesson.savefig``). One module per subject, every
public function re-exported here (``from cmmc_lib import viz; viz.frame_strip(...)``):

* :mod:`.flow`      clips and optical flow: :func:`frame_strip`, :func:`to_frames`,
                    :func:`flow_to_rgb` (the colour-wheel coding), :func:`draw_flow_wheel`,
                    :func:`flow_methods_figure`;
* :mod:`.mixing`    the mixing and the methods as pictures: :func:`draw_tesseract`,
                    :func:`tesseract_figure` (and its widget :func:`tesseract_panel`),
                    :func:`feature_slices`, :func:`lam_distributions`, :func:`soft_targets_heatmap`,
                    :func:`cmmc_pipeline`, :func:`moco_diagram`;
* :mod:`.training`  :func:`training_curves` (reference lines), :func:`schedule_figure`,
                    :func:`epoch_curves`;
* :mod:`.results`   numbers with chance and spread: :func:`recall_at_k`, :func:`retrieval_grid`,
                    :func:`confusion`, :func:`measured_bars`, :func:`agreement_bars`,
                    :func:`fusion_sweep`, :func:`ablation_bars`;
* :mod:`.bench`     lesson 06: :func:`step_throughput`, :func:`cmmc_breakdown`,
                    :func:`loader_throughput`, :func:`recipe_cost`;
* :mod:`.pose`      lesson 09: :func:`skeleton_over_frame`, :func:`stream_panels`,
                    :func:`skeleton_tesseract`, :func:`heatmap_clip`, :func:`accuracy_bars`;
* :mod:`.colours`   :func:`method_colour`: a method keeps one colour in every figure, the
                    registry's (:attr:`cmmc_lib.registry.Method.colour`).
"""
import matplotlib.pyplot as plt

from .flow import (FLOW_PX_PER_UNIT, draw_flow_wheel, flow_methods_figure, flow_speed_px,
                   flow_to_rgb, flow_wheel_image, frame_strip, to_frames)
from .mixing import (cmmc_pipeline, draw_tesseract, feature_slices, lam_distributions, moco_diagram,
                     soft_targets_heatmap, tesseract_figure, tesseract_panel)
from .training import epoch_curves, schedule_figure, training_curves
from .colours import method_colour
from .results import (ablation_bars, agreement_bars, confusion, fusion_sweep, measured_bars,
                      recall_at_k, retrieval_grid)
from .bench import cmmc_breakdown, loader_throughput, recipe_cost, step_throughput
from .pose import (PART_COLOURS, PART_NAMES, accuracy_bars, draw_skeleton, heatmap_clip,
                   skeleton_over_frame, skeleton_tesseract, stream_panels)

__all__ = ["plt", "flow_to_rgb", "flow_speed_px", "flow_wheel_image", "draw_flow_wheel",
           "flow_methods_figure", "to_frames", "frame_strip", "FLOW_PX_PER_UNIT", "draw_tesseract",
           "tesseract_figure", "tesseract_panel", "feature_slices", "lam_distributions",
           "soft_targets_heatmap", "cmmc_pipeline", "moco_diagram", "training_curves",
           "schedule_figure", "epoch_curves", "recall_at_k", "retrieval_grid", "confusion",
           "measured_bars", "agreement_bars", "fusion_sweep", "ablation_bars", "method_colour",
           "step_throughput", "cmmc_breakdown", "loader_throughput", "recipe_cost",
           "draw_skeleton", "skeleton_over_frame", "stream_panels", "skeleton_tesseract",
           "heatmap_clip", "accuracy_bars", "PART_COLOURS", "PART_NAMES"]
