"""Throughput on this machine: the training step, the loader, the cost of the recipe, and the
one-script GPU check. Sits on top of ``train``, ``ssl`` and ``data``; the CLI's ``cmmc bench``.

    bench_step("paper", ["moco", "cmmc"], amps=["off", "bf16"])   # steps/s, clips/s, memory, ratios
    bench_loader(root, "paper", workers=[1, 8, 16])                # clips/s of the real DataLoader
    recipe_cost({"moco": 0.31, "cmmc": 0.34})                      # GPU-hours of docs/method.md's recipe
    gpu_check("outputs/gpu-check")                                 # all of it, one JSON, < 8 minutes

**What a step is.** Exactly :func:`cmmc_lib.train.train_step` (autocast, channels-last, compile,
fused Adam on CUDA, the method's loss, backward, optimiser step, momentum update, enqueue) on a
batch of random clips already on the device, at the preset's shapes: the loader is measured
apart. **Clips/s** counts samples, i.e. rows of the batch (one video with its two views and,
for cross-modal methods, both modalities): what the loader must deliver per second. Timings
synchronise the device only here, in the benchmark, never in training.

**Where CMMC's extra time goes.** A second, instrumented pass times the frozen source network's
partial forward (``source_features``) and the mixing (``cross_modal_cutmix``) with a
synchronisation around each; the rest of the difference to MoCo at the same batch is "other"
(the second modality's transfer and layout, the partial forward's own overhead).

The modules, one job each (this package re-exports their public names: ``bench.bench_step``):
``step`` (the step, its breakdown, the ratios), ``memory`` (peak memory), ``loader`` (the
DataLoader), ``cost`` (FLOPs, GPU-hours), ``lesson`` (lesson 06's figures), ``gpu_check`` (the
one-script check), ``common`` (device name and sync, the preset). Lessons run inline with
:func:`cmmc_lib.course.run_notebook_inline`.
"""
from .common import bench_config, device_name
from .cost import PAPER_TRAIN_VIDEOS, recipe_cost, step_flops
from .gpu_check import GOALS, gpu_check
from .lesson import lesson_benchmarks
from .loader import bench_dataset, bench_loader
from .memory import PeakMemory, cpu_peak_memory
from .step import (StepRunner, bench_step, build_bench_method, input_shape, shape_overrides, step_ratios,
                   synthetic_batch, time_steps)

__all__ = ["GOALS", "PAPER_TRAIN_VIDEOS", "PeakMemory", "StepRunner", "bench_config", "bench_dataset", "bench_loader",
           "bench_step", "build_bench_method", "cpu_peak_memory", "device_name", "gpu_check", "input_shape",
           "lesson_benchmarks", "recipe_cost", "shape_overrides", "step_flops", "step_ratios", "synthetic_batch",
           "time_steps"]
