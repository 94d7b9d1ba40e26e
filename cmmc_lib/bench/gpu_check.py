"""The one-script GPU check (:func:`gpu_check`, ``cmmc bench gpu-check``): the machine, the step
and the loader benchmarks, lesson 06 executed inline, a two-GPU DDP run, the compiled step, then
the issue's goals judged (:func:`_goals`) and the recipe's cost, in one JSON written after every
phase and within a time budget."""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import av
import torch

from ..course import run_notebook_inline
from ..data.frame_cache import build_frame_cache
from ..data.synthetic import write_synthetic_dataset
from ..files import atomic_write
from ..runs import RunFolder
from ..devices import resolve_device
from .common import REPO, bench_config, device_name
from .cost import recipe_cost
from .loader import bench_loader
from .step import bench_step, step_ratios

log = logging.getLogger(__name__)

GOALS = {"cmmc_over_moco_max": 1.10, "bf16_over_fp32_min": 1.8}


def _machine(device: torch.device) -> dict:
    info = {"gpu": device_name(device) if device.type == "cuda" else None,
            "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
            "cpu": device_name(torch.device("cpu")), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
            "python": platform.python_version(), "platform": platform.platform()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu_memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
                    multiprocessors=p.multi_processor_count)
    try:
        st = os.statvfs("/dev/shm")
        info["dev_shm_gib"] = round(st.f_bavail * st.f_frsize / 2**30, 1)
    except OSError:
        info["dev_shm_gib"] = None
    try:
        mem = {l.split(":")[0]: l.split()[1] for l in Path("/proc/meminfo").read_text().splitlines()}
        info["ram_gib"] = round(int(mem["MemTotal"]) / 2**20, 1)
    except (OSError, KeyError, ValueError):
        pass
    info["pyav"] = av.__version__
    return info


def _check_sizes(reduced: bool, cpus: int) -> dict:
    """What the check measures: the paper preset on a GPU, a reduced one on a CPU."""
    if not reduced:
        return {"preset": "paper", "overrides": [], "steps": 8, "warmup": 3, "layouts": ["auto", "off"],
                "loader_preset": "paper", "loader_workers": sorted({1, min(4, cpus), cpus}), "loader_batch": 8,
                "lesson_profile": "tiny"}
    return {"preset": "tiny", "overrides": [], "steps": 2, "warmup": 1, "layouts": ["auto"],
            "loader_preset": "tiny", "loader_workers": [0, 1], "loader_batch": 4, "lesson_profile": "tiny"}


def _goals(report: dict) -> dict:
    """The issue's goals against the figures (``pending`` on a reduced CPU run)."""
    step = report.get("step") or {}
    ratios = step.get("ratios", {})
    rows = [r for r in step.get("results", []) if not r.get("error")]
    out: dict[str, Any] = {}
    tag = next((t for t in ratios.get("over_moco", {}) if t.startswith("cmmc/moco@bf16")), None)
    r = ratios.get("over_moco", {}).get(tag) if tag else None
    out["cmmc_over_moco"] = {"value": r, "goal": f"<= {GOALS['cmmc_over_moco_max']}", "at": tag,
                             "met": None if r is None else r <= GOALS["cmmc_over_moco_max"]}
    b = ratios.get("bf16_over_fp32", {})
    out["bf16_over_fp32"] = {"value": b, "goal": f">= {GOALS['bf16_over_fp32_min']}",
                             "met": None if not b else all(v >= GOALS["bf16_over_fp32_min"] for v in b.values())}
    need = {m: max((x["clips_per_s"] for x in rows if x["method"] == m), default=None) for m in ("moco", "cmmc")}
    loader = report.get("loader") or {}
    have = {}
    for name, res in loader.items():
        if isinstance(res, dict) and res.get("results"):
            best = [x for x in res["results"] if not x.get("error")]
            if best:
                top = max(best, key=lambda x: x["workers"])
                have[name] = {"workers": top["workers"], "clips_per_s": top["clips_per_s"],
                              "modalities": res["modalities"]}
    verdict = {}
    for name, h in have.items():
        m = "cmmc" if "flow" in h["modalities"] else "moco"
        if need.get(m):
            verdict[name] = {"loader_clips_per_s": h["clips_per_s"], "step_clips_per_s": need[m], "method": m,
                             "workers": h["workers"], "ratio": h["clips_per_s"] / need[m],
                             "met": h["clips_per_s"] >= need[m]}
    out["loader_keeps_up"] = verdict
    if report.get("reduced"):
        for v in [out["cmmc_over_moco"], out["bf16_over_fp32"], *verdict.values()]:
            v["met"] = "pending (reduced CPU run)"
        out["note"] = "reduced run on a CPU: the goals are judged on the GPU run"
    return out


def gpu_check(out: str | Path, reduced: bool | None = None, budget_s: float = 450.0, work: str | Path | None = None,
              realdata: str | Path | None = None, synthetic_root: str | Path | None = None,
              notebook: str | Path | None = None, device: str = "auto", progress: bool = True) -> dict:
    """Everything the issue asks of a GPU machine, in one call that ends within ``budget_s``
    (default 7.5 min) and writes ``<out>/gpu_check.json`` after every phase:

    1. ``machine``: the GPU's name, memory, CUDA/cuDNN, CPU cores, /dev/shm;
    2. ``step``: ``bench_step`` at the paper preset on synthetic clips, MoCo and CMMC, float32
       and bf16, channels-last on (auto) and off; host syncs per step; CMMC's breakdown;
    3. ``loader``: ``bench_loader`` on the synthetic data (generated in ``work``) and on the real
       UCF101 videos of ``realdata`` when present, per worker count up to all cores, decoding and
       from a frame cache built for the purpose;
    4. ``lesson06``: lesson 06 executed at the tiny profile on this device (no Jupyter needed);
    5. ``ddp``: a 2-process torchrun (NCCL) when two GPUs exist, else why not;
    6. ``compiled``: ``bench_step`` with ``run.compile=true`` in a subprocess, if time is left;
    7. ``goals`` (the issue's, judged) and ``cost`` (GPU-hours of the recipe from the step times).

    On a machine without CUDA (or with ``reduced=True``) it runs the same phases at the tiny
    size (minutes on 2 CPU cores): a test of the script, not a measurement of the goals.
    """
    check = _GpuCheck(out, reduced, budget_s, work, realdata, synthetic_root, notebook, device, progress)
    check.phase("step", check.step)
    if len(check.sizes["layouts"]) > 1 and "results" in (check.report.get("step") or {}):
        check.phase("step_layouts", check.other_layouts, need_s=150)
    check.phase("loader", check.loaders, need_s=30)
    check.phase("lesson06", check.lesson, need_s=30)
    check.phase("ddp", check.ddp)
    check.phase("compiled", check.compiled, need_s=90)
    return check.finish()


class _GpuCheck:
    """The state of one GPU check: its folders, sizes, deadline and report; one method per phase."""

    def __init__(self, out, reduced, budget_s, work, realdata, synthetic_root, notebook, device, progress):
        self.t_start = time.perf_counter()
        self.deadline = self.t_start + budget_s
        self.dev = dev = resolve_device(device)
        self.reduced = dev.type != "cuda" if reduced is None else reduced
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(work) if work else self.out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.repo = REPO
        self.realdata = Path(realdata) if realdata else Path(os.environ.get("CMMC_REALDATA",
                                                                            self.repo.parent / "shared" / "realdata"))
        self.notebook = Path(notebook) if notebook else self.repo / "notebooks" / "06_gpu_training.ipynb"
        self.synth = Path(synthetic_root) if synthetic_root else self.work / "synthetic-tiny"
        self.cpus = os.cpu_count() or 1
        self.sizes = _check_sizes(self.reduced, self.cpus)
        self.progress = progress
        self.path = self.out / "gpu_check.json"
        self.report: dict[str, Any] = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "path": str(self.path), "reduced": self.reduced,
            "budget_s": budget_s, "sizes": self.sizes, "machine": _machine(dev), "phases": {}}
        self.step_kw = dict(device=str(dev), steps=self.sizes["steps"], warmup=self.sizes["warmup"],
                            overrides=self.sizes["overrides"], threads=1 if dev.type == "cpu" else None,
                            progress=progress)
        self.save()

    def save(self) -> None:
        self.report["seconds"] = round(time.perf_counter() - self.t_start, 1)
        text = json.dumps(_nan_to_none(self.report), indent=1, default=str)
        atomic_write(self.path, lambda tmp: tmp.write_text(text + "\n"))

    def phase(self, name: str, fn: Callable[[], Any], need_s: float = 0.0) -> None:
        """Run one phase if ``need_s`` seconds are left; an error is recorded, never raised."""
        left = self.deadline - time.perf_counter()
        if left < need_s:
            self.report[name] = {"skipped": f"{left:.0f} s left of the budget, this phase needs about {need_s:.0f} s"}
        else:
            if self.progress:
                log.info("gpu-check: %s (%.0f s left)", name, left)
            t0 = time.perf_counter()
            try:
                self.report[name] = fn()
            except Exception as e:                            # one phase failing must not lose the others
                log.warning("gpu-check: %s failed: %s", name, e, exc_info=log.isEnabledFor(logging.DEBUG))
                self.report[name] = {"error": f"{type(e).__name__}: {str(e)[:500]}"}
            self.report["phases"][name] = round(time.perf_counter() - t0, 1)
        self.save()

    def step(self) -> dict:
        return bench_step(self.sizes["preset"], ("moco", "cmmc"), amps=["off", "bf16"],
                          channels_last=self.sizes["layouts"][:1], **self.step_kw)

    def other_layouts(self) -> dict:
        """bf16 in the other layouts, merged into the ``step`` phase's rows."""
        more = bench_step(self.sizes["preset"], ("moco", "cmmc"), amps=["bf16"],
                          channels_last=self.sizes["layouts"][1:], breakdown=False, **self.step_kw)
        self.report["step"]["results"] += more["results"]
        self.report["step"]["ratios"] = step_ratios(self.report["step"]["results"])
        return {"layouts": self.sizes["layouts"][1:], "rows": len(more["results"])}

    def _loader_with_cache(self, root: Path, name: str, cache_kw: dict, kw: dict, workers: list[int]) -> dict:
        """``bench_loader`` decoding (``workers``), then from a frame cache built for the purpose."""
        res = {name: bench_loader(root, workers=workers, **kw)}
        short_side = bench_config(self.sizes["loader_preset"]).data.short_side
        cache = build_frame_cache(root, self.work / f"cache-{root.name}", short_side, workers=min(self.cpus, 8),
                                  progress=False, **cache_kw)
        res[f"{name}_cached"] = bench_loader(root, workers=workers[-1:], frame_cache=cache["out"], **kw)
        res[f"{name}_cached"]["build"] = {k: cache[k] for k in ("done", "seconds", "gib")}
        return res

    def loaders(self) -> dict:
        sizes = self.sizes
        if not (self.synth / "meta.json").is_file():
            write_synthetic_dataset(self.synth, size="tiny", workers=min(self.cpus, 8), progress=False)
        kw = dict(preset_name=sizes["loader_preset"], batch=sizes["loader_batch"], method="cmmc",
                  overrides=[f"data.root={self.synth}", "data.dataset=synthetic"])
        res = self._loader_with_cache(self.synth, "synthetic", {}, kw, sizes["loader_workers"])
        ucf = self.realdata / "ucf101"
        if (ucf / "videos").is_dir() and (ucf / "splits").is_dir():
            kw = dict(preset_name=sizes["loader_preset"], batch=sizes["loader_batch"], modalities=("rgb",),
                      dataset="ucf101", subset="all", overrides=[f"data.root={ucf}"])
            workers = [w for w in sizes["loader_workers"] if w > 0] or [0]
            workers = [workers[0], workers[-1]] if len(workers) > 1 else workers
            res.update(self._loader_with_cache(ucf, "real_ucf101", {"modalities": ("rgb",)}, kw, workers))
        else:
            res["real_ucf101"] = {"skipped": f"no real videos at {ucf}"}
        return res

    def lesson(self) -> dict:
        params = {"PROFILE": self.sizes["lesson_profile"], "DEVICE": str(self.dev),
                  "RUNS_DIR": str(self.work / "lesson06" / "runs"), "FIG_DIR": str(self.work / "lesson06" / "figures"),
                  "BENCH_JSON": str(self.path)}
        return run_notebook_inline(self.notebook, params)

    def ddp(self) -> dict:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n < 2:
            return {"ran": False, "reason": f"{n} GPU(s) on this machine: the 2-process NCCL run needs two "
                                            "(the CPU gloo run is tests/test_train.py)"}
        run_dir = self.work / "ddp"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "cmmc_lib.cli",
               "pretrain", "--preset", "tiny", "--json", "--run-dir", str(run_dir), f"data.root={self.synth}",
               "run.max_steps=3", "ssl.queue_size=1000", "knn_every=0", "run.device=cuda"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=self.repo)
        res = {"ran": True, "returncode": proc.returncode, "seconds": time.perf_counter() - t0,
               "stderr_tail": proc.stderr[-800:] if proc.returncode else None}
        if proc.returncode == 0:
            ck = RunFolder(run_dir).load_checkpoint()
            res["queue_ptr"] = int(ck["method"]["moco.queue_ptr"][0])
            res["queue_ptr_expected"] = 3 * ck["config"]["optim"]["batch_size"]
            res["ok"] = res["queue_ptr"] == res["queue_ptr_expected"]
        return res

    def compiled(self) -> dict:
        if self.reduced:
            return {"skipped": "reduced run on a CPU: torch.compile is measured on the GPU"}
        left = self.deadline - time.perf_counter() - 10
        cmd = [sys.executable, "-m", "cmmc_lib.cli", "bench", "step", "--preset", self.sizes["preset"], "--methods",
               "moco,cmmc", "--amp", "bf16", "--compile", "--steps", str(self.sizes["steps"]), "--warmup",
               str(self.sizes["warmup"]), "--device", str(self.dev), "--json"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=left, cwd=self.repo)
        except subprocess.TimeoutExpired:
            return {"error": f"did not compile and run within the {left:.0f} s left"}
        if proc.returncode:
            return {"error": proc.stderr.strip().splitlines()[-1][:500] if proc.stderr.strip() else "failed"}
        return json.loads(proc.stdout)

    def finish(self) -> dict:
        """The goals judged and the recipe's GPU-hours from the bf16 step times; the report saved."""
        report = self.report
        report["goals"] = _goals(report)
        try:
            t = {}
            for r in (report.get("step") or {}).get("results", []) + ((report.get("compiled") or {}).get("results") or []):
                if not r.get("error") and r["amp"] == "bf16":
                    t[r["method"]] = min(t.get(r["method"], math.inf), r["seconds_per_step"])
            report["cost"] = recipe_cost(t) if {"moco", "cmmc"} <= set(t) and not self.reduced else \
                {"skipped": "reduced run: the cost needs the paper preset's step times on a GPU"}
        except ValueError as e:
            report["cost"] = {"error": str(e)}
        self.save()
        return report


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value
