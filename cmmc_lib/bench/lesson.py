"""Lesson 06's figures (:func:`lesson_benchmarks`): a GPU check's report when one is given, else
the step and the loader measured live at the lesson's profile."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ..config import Config, data_root
from ..data.frame_cache import build_frame_cache
from ..devices import resolve_device
from .loader import bench_loader
from .step import bench_step, step_ratios


def lesson_benchmarks(bench_json: str | Path | None, cfg: Config, work_dir: str | Path,
                      methods: Sequence[str] = ("moco", "mixup", "cutmix", "manifold-cutmix", "cm-mixup", "cmmc"),
                      workers: Sequence[int] = (0, 1), steps: int = 6) -> dict:
    """Lesson 06's figures: read from a ``gpu_check`` JSON when ``bench_json`` names one that
    exists, else measured live at the lesson's profile (``cfg``) on its device: every method in
    float32 (and MoCo / CMMC in bf16), and the loader per worker count without and with a
    frame cache built in ``work_dir``. ``source`` says which."""
    if bench_json and Path(bench_json).is_file():
        report = json.loads(Path(bench_json).read_text())
        if report.get("step"):
            return {"source": str(bench_json), "device_name": report.get("machine", {}).get("gpu")
                    or report["step"].get("device_name"), "step": report["step"],
                    "compiled": report.get("compiled"), "loader": report.get("loader") or {},
                    "cost": report.get("cost")}
    overrides = [f"data.root={cfg.data.root}"] if cfg.data.root else []
    overrides += [f"run.seed={cfg.run.seed}"]
    on_cpu = resolve_device(cfg.run.device).type == "cpu"
    threads = 1 if on_cpu else None              # one core: ratios that a busy machine does not distort
    step = bench_step(cfg.preset, methods, amps=["off"], device=cfg.run.device, steps=steps, warmup=2,
                      overrides=overrides, threads=threads)
    # bf16 on a CPU runs PyTorch's exact but slow kernels: one method, two steps
    bf16 = bench_step(cfg.preset, ("moco",) if on_cpu else ("moco", "cmmc"), amps=["bf16"], device=cfg.run.device,
                      steps=2 if on_cpu else steps, warmup=1, overrides=overrides, breakdown=False, threads=threads)
    step["results"] += bf16["results"]
    step["ratios"] = step_ratios(step["results"])
    root = data_root(cfg.data)
    loader = {"decode": bench_loader(root, cfg.preset, workers, method="cmmc", overrides=overrides, batches=4, warmup=1)}
    cache = build_frame_cache(root, Path(work_dir) / "frame-cache", cfg.data.short_side, workers=1, progress=False)
    loader["frame_cache"] = bench_loader(root, cfg.preset, workers, method="cmmc", overrides=overrides, batches=4,
                                         warmup=1, frame_cache=cache["out"])
    loader["frame_cache"]["build"] = {k: cache[k] for k in ("done", "skipped_existing", "seconds", "gib")}
    return {"source": "live", "device_name": step["device_name"], "step": step, "compiled": None, "loader": loader,
            "cost": None}
