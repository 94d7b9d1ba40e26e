"""Optical flow: computing it, extracting it for whole datasets, and measuring its speed and
accuracy. One job per module:

``estimators``  OpenCV TV-L1 / DIS / Farneback and ``tvl1-torch``: :func:`compute_flow`
``tvl1``        TV-L1 in PyTorch, batched, on CPU or CUDA (building blocks in ``tvl1_ops``)
``frames``      the grey frames flow is computed on, decoded as the datasets decode them
``folders``     flow on disk: the rawframes folders, their completion marker, atomic writes
``extract``     :func:`extract_flow` over videos or folders: resumable, parallel, Ctrl-C-safe
``batched``     ``tvl1-torch`` extraction batched across videos in one process
``speed``       fields per second per method (``cmmc bench flow``)
``accuracy``    end-point error against ground truth (``ground_truth``) and between methods
``compare``     one frame pair by each method side by side, for lesson 01
``gpu_check``   ``python -m cmmc_lib.flow.gpu_check prepare|run``: tvl1-torch on a GPU

The storage format itself (uint8 quantisation, ``FLOW_BOUND``, reading the JPEGs back) is
:mod:`cmmc_lib.data.rawframes`: it is how data sits on disk and the datasets read it.

The names below are imported from their module on first use, so ``import cmmc_lib.flow`` stays
light: torch (about 3 s to import) only with the PyTorch parts, and the GPU check's ``run``
without PyAV or OpenCV, which its machine may lack.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "estimators": ("FLOW_METHODS", "TORCH_FLOW_METHODS", "compute_flow", "make_flow_estimator"),
    "frames": ("grey_frames", "to_grey"),
    "folders": ("COMPLETE_MARKER", "flow_pair_count", "is_flow_complete", "write_flow_frames"),
    "extract": ("VIDEO_EXTENSIONS", "ExtractionInterrupted", "extract_flow", "find_videos",
                "write_video_flow"),
    "speed": ("bench_flow", "measure_flow_fps"),
    "accuracy": ("flow_accuracy", "flow_agreement"),
    "compare": ("compare_flow_methods",),
    "tvl1": ("TVL1Params", "tvl1_flow", "tvl1_flow_pairs"),
    "ground_truth": ("endpoint_error", "smooth_flow_field", "valid_mask", "warp_pair"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)

if TYPE_CHECKING:                                   # what the names are, for type checkers and IDEs
    from .accuracy import flow_accuracy, flow_agreement
    from .compare import compare_flow_methods
    from .estimators import FLOW_METHODS, TORCH_FLOW_METHODS, compute_flow, make_flow_estimator
    from .extract import (VIDEO_EXTENSIONS, ExtractionInterrupted, extract_flow, find_videos,
                          write_video_flow)
    from .folders import COMPLETE_MARKER, flow_pair_count, is_flow_complete, write_flow_frames
    from .frames import grey_frames, to_grey
    from .ground_truth import endpoint_error, smooth_flow_field, valid_mask, warp_pair
    from .speed import bench_flow, measure_flow_fps
    from .tvl1 import TVL1Params, tvl1_flow, tvl1_flow_pairs


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
