"""Throughput on this machine: the training step, the loader, the cost of the recipe, and the
one-script GPU check. Sits on top of ``train``, ``ssl`` and ``data``; the CLI's ``cmmc bench``.

    bench_step("paper", ["moco", "cmmc"], amps=["off", "bf16"])   # steps/s, clips/s, memory, ratios
    bench_loader(root, "paper", workers=[1, 8, 16])                # clips/s of the real DataLoader
    recipe_cost({"moco": 0.31, "cmmc": 0.34})                      # GPU-hours of METHOD.md's recipe
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
"""
from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .config import Config, preset
from .registry import METHODS, MODALITIES, available
from .ssl.factory import build_method, random_source

log = logging.getLogger(__name__)

PAPER_TRAIN_VIDEOS = 9537                 # UCF101 split 1 training videos (data/README.md)
GOALS = {"cmmc_over_moco_max": 1.10, "bf16_over_fp32_min": 1.8}


# --------------------------------------------------------------------------- small helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    """The GPU's name (``NVIDIA H200``), else the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _rss_bytes() -> int | None:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PeakMemory:
    """Peak memory while the block runs, above what was allocated when it began. CUDA:
    ``torch.cuda.max_memory_allocated`` (model, optimiser, activations, batch of this block).
    CPU: the peak resident set size of this process above its size when the block began,
    sampled every 5 ms (Linux ``/proc``; elsewhere None: "n/a"). In a process that already
    freed memory the CPU figure is too low (the allocator reuses it): :func:`cpu_peak_memory`
    measures a method in a fresh process instead."""

    def __init__(self, device: torch.device):
        self.device = device
        self.mib: float | None = None
        self.measure = ("cuda max_memory_allocated" if device.type == "cuda" else "peak RSS growth (sampled)")
        self._stop = threading.Event()
        self._peak = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = _rss_bytes()
            if self._base is None:
                self.measure = "n/a"
                return self
            self._peak = self._base
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, _rss_bytes() or 0)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif self._base is not None:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes() or 0)
            self.mib = (self._peak - self._base) / 2**20
        return False


def _count_syncs(fn: Callable[[], Any], device: torch.device) -> int | None:
    """How many times ``fn`` makes the host wait for the GPU (CUDA's sync debug mode; None on CPU)."""
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)


# --------------------------------------------------------------------------- the step
def bench_config(preset_name: str = "tiny", overrides: Sequence[str] = ()) -> Config:
    """The preset with overrides (validated as a MoCo run: the bench sets the method itself)."""
    return preset(preset_name, list(overrides))


def shape_overrides(backbone: str | None = None, width: int | None = None, batch: int | None = None,
                    clip: str | Sequence[int] | None = None) -> list[str]:
    """``key=value`` overrides for the explicit-shape options of ``cmmc bench step``: ``--clip
    C,T,H,W`` (H = W; C picks the modality: 3 rgb, 2 flow), ``--backbone``, ``--width``, ``--batch``."""
    out = []
    if backbone:
        out.append(f"model.backbone={backbone}")
    if width:
        out.append(f"model.width={width}")
    if batch:
        out.append(f"optim.batch_size={batch}")
    if clip:
        dims = [int(s) for s in clip.split(",")] if isinstance(clip, str) else [int(s) for s in clip]
        if len(dims) != 4 or dims[2] != dims[3]:
            raise ValueError(f"--clip must be C,T,H,W with H == W (square crops), got {clip}")
        modality = {m.channels: name for name, m in MODALITIES.items() if m.network == "video"}.get(dims[0])
        if modality is None:
            raise ValueError(f"--clip: {dims[0]} channels is no video modality (rgb 3, flow 2)")
        out += [f"ssl.modality={modality}", f"ssl.other_modality={'flow' if modality == 'rgb' else 'rgb'}",
                f"data.clip_len={dims[1]}", "data.stride=1", f"data.size={dims[2]}",
                f"data.short_side={dims[2]}"]
    return out


def input_shape(cfg: Config, modality: str) -> tuple[int, ...]:
    """One sample's input shape: (C, T, S, S) clips, or (C, T, J, M) skeletons (the dataset's
    layout; NTU: 25 joints, 2 persons)."""
    from .registry import skeleton_layout
    c = MODALITIES[modality].channels
    if MODALITIES[modality].network == "skeleton":
        layout = skeleton_layout(cfg.data.dataset)
        return (c, cfg.data.skeleton_frames, layout.num_joints, 2 if layout.name == "ntu25" else 1)
    return (c, cfg.data.clip_len, cfg.data.size, cfg.data.size)


def synthetic_batch(cfg: Config, modalities: Sequence[str], device: torch.device, seed: int = 0) -> dict:
    """Random inputs of the config's shape, (B, 2, *input_shape) per modality, on ``device``, and
    ``source`` (B,): every clip from its own video (what CoCLR's positives are keyed on)."""
    g = torch.Generator().manual_seed(seed)
    b = cfg.optim.batch_size
    batch = {m: torch.randn(b, 2, *input_shape(cfg, m), generator=g).to(device) for m in modalities}
    batch["source"] = torch.arange(b, device=device)
    return batch


def build_bench_method(cfg: Config):
    """The method of ``cfg`` with a randomly initialised source network when it mixes across
    modalities (the benchmark times the computation, not what the weights know)."""
    return build_method(cfg, random_source(cfg))


def _clock(device: torch.device) -> Callable[[], float]:
    """Wall clock on a GPU; this process's CPU time on a CPU (robust to other processes on a
    shared machine, which stretch the wall clock of every step)."""
    return time.perf_counter if device.type == "cuda" else time.process_time


class _Timed:
    """Wraps a callable: synchronise, time, synchronise (benchmark only); keeps the durations."""

    def __init__(self, fn: Callable, device: torch.device):
        self.fn, self.device, self.seconds, self.clock = fn, device, [], _clock(device)

    def __call__(self, *args, **kwargs):
        _sync(self.device)
        t0 = self.clock()
        out = self.fn(*args, **kwargs)
        _sync(self.device)
        self.seconds.append(self.clock() - t0)
        return out


@contextlib.contextmanager
def _instrumented(method, device: torch.device):
    """Time the source network's partial forward and the cross-modal mixing of ``method``'s mixer."""
    mixer = method.mixer
    timers = {"source": _Timed(mixer.source_features, device), "mix": _Timed(mixer.mix, device)}
    mixer.source_features, mixer.mix = timers["source"], functools.wraps(mixer.mix)(timers["mix"])
    try:
        yield timers
    finally:
        del mixer.source_features
        mixer.mix = timers["mix"].fn


def cpu_peak_memory(cfg: Config, warmup: int = 2) -> float | None:
    """Peak RSS growth (MiB) of building ``cfg``'s method and running ``warmup`` steps on the
    CPU, in a fresh Python process (so that no memory freed earlier is reused); None if it fails."""
    code = ("import json, sys, torch; from cmmc_lib.bench import StepRunner; from cmmc_lib.config import Config; "
            "torch.set_num_threads(%d); r = StepRunner(Config.from_dict(json.loads(sys.argv[1])), torch.device('cpu')); "
            "r.warm(%d); print(json.dumps(r.peak.mib))" % (torch.get_num_threads(), max(warmup, 1)))
    try:
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(cfg.to_dict())], capture_output=True, text=True,
                              timeout=600, cwd=Path(__file__).resolve().parents[1])
        return round(float(json.loads(proc.stdout.strip().splitlines()[-1])), 1) if proc.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        return None


class StepRunner:
    """One method ready to step: built, on its device, with its optimiser and a random batch;
    ``warm(n)`` runs n untimed steps (cuDNN autotuning, compilation) while measuring the peak
    memory of building and stepping; calling it runs one training step."""

    def __init__(self, cfg: Config, device: torch.device, seed: int = 0):
        from .train import Env, Position, use_channels_last
        self.cfg, self.device, self.seed = cfg, device, seed
        self.env = Env(0, 1, device, use_channels_last(device, cfg.run.channels_last))
        self.pos = Position()
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.error: str | None = None

    def warm(self, n: int) -> None:
        from .train import make_optimizer, modalities_for, prepare_method
        torch.manual_seed(self.seed)
        self.peak = PeakMemory(self.device)
        with self.peak:
            self.method = prepare_method(build_bench_method(self.cfg), self.cfg, self.env).train()
            self.optimizer = make_optimizer(self.method, self.cfg, self.env)
            self.batch = synthetic_batch(self.cfg, modalities_for(self.cfg), self.device, self.seed)
            t0 = time.perf_counter()
            for _ in range(n):
                self.loss = self()
            _sync(self.device)
            self.warmup_seconds = time.perf_counter() - t0

    def __call__(self) -> torch.Tensor:
        from .train import train_step
        _, loss = train_step(self.method, self.method, self.optimizer, self.batch, self.cfg, self.pos, self.env)
        self.pos.step += 1
        return loss

    def breakdown(self, steps: int) -> dict | None:
        """Median ms of the step, the source's partial forward and the mixing (instrumented)."""
        if getattr(self.method, "mixer", None) is None:
            return None
        clock = _clock(self.device)
        with _instrumented(self.method, self.device) as timers:
            inst = []
            for _ in range(steps):
                _sync(self.device)
                t = clock()
                self()
                _sync(self.device)
                inst.append(clock() - t)
        return {"step_ms": 1000 * statistics.median(inst),
                "source_forward_ms": 1000 * statistics.median(timers["source"].seconds),
                "mixing_ms": 1000 * statistics.median(timers["mix"].seconds)}

    def result(self, syncs: int | None, parts: dict | None) -> dict:
        cfg, t = self.cfg, self.times
        row = {"method": cfg.ssl.method, "amp": cfg.run.amp, "channels_last": self.env.channels_last,
               "compiled": cfg.run.compile, "batch": cfg.optim.batch_size}
        if self.error:
            return {**row, "error": self.error}
        median = statistics.median(t)
        cpu = statistics.median(self.cpu_times) if self.cpu_times else None
        return {**row, "seconds_per_step": median, "cpu_seconds_per_step": cpu, "steps_per_s": 1.0 / median,
                "clips_per_s": cfg.optim.batch_size / median, "mean_seconds_per_step": sum(t) / len(t),
                "min_seconds_per_step": min(t), "warmup_seconds": self.warmup_seconds, "steps": len(t),
                "peak_memory_mib": None if self.peak.mib is None else round(self.peak.mib, 1),
                "memory_measure": self.peak.measure,
                "params_m": sum(p.numel() for p in self.method.parameters() if p.requires_grad) / 1e6,
                "last_loss": float(self.loss), "syncs_per_step": syncs, "breakdown": parts, "error": None}


def time_steps(cfgs: Sequence[Config], device: torch.device, steps: int = 10, warmup: int = 3,
               breakdown: bool = True, seed: int = 0, cpu_memory: bool = False) -> list[dict]:
    """Time ``steps`` training steps of each config after ``warmup`` untimed ones, the methods
    **interleaved** step by step (a busy machine slows them alike, so their ratio holds)."""
    runners = [StepRunner(c, device, seed) for c in cfgs]
    for r in runners:
        try:
            r.warm(warmup)
        except (RuntimeError, ValueError) as e:               # e.g. out of memory: the others still run
            r.error = f"{type(e).__name__}: {str(e)[:300]}"
            r.method = r.optimizer = r.batch = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
    live = [r for r in runners if not r.error]
    if device.type == "cuda":
        events = {id(r): [] for r in live}
        for _ in range(steps):
            for r in live:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                r.loss = r()
                end.record()
                events[id(r)].append((start, end))
        torch.cuda.synchronize(device)
        for r in live:
            r.times = [s.elapsed_time(e) / 1000 for s, e in events[id(r)]]
    else:
        for _ in range(steps):
            for r in live:
                t, c = time.perf_counter(), time.process_time()
                r.loss = r()
                r.times.append(time.perf_counter() - t)
                r.cpu_times.append(time.process_time() - c)
    out = []
    for r in runners:
        if r.error:
            out.append(r.result(None, None))
            continue
        syncs = _count_syncs(r, device)
        parts = r.breakdown(max(steps // 2, 2)) if breakdown else None
        row = r.result(syncs, parts)
        if device.type == "cpu":
            row["peak_memory_mib"] = cpu_peak_memory(r.cfg) if cpu_memory else None
            row["memory_measure"] = ("peak RSS growth in a fresh process" if cpu_memory else
                                     "n/a on CPU in one process (--cpu-memory measures each method in a fresh one)")
        out.append(row)
    del runners, live
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def bench_step(preset_name: str = "tiny", methods: Sequence[str] = ("moco", "cmmc"),
               amps: Sequence[str] | None = None, device: str = "auto", steps: int = 10, warmup: int = 3,
               overrides: Sequence[str] = (), channels_last: Sequence[str] | None = None, compile: bool = False,
               breakdown: bool = True, threads: int | None = None, seed: int = 0,
               cpu_memory: bool = False, progress: bool = False) -> dict:
    """Training-step throughput of ``methods`` at a preset's shapes, for each ``amps`` setting
    (``off`` = float32, ``bf16``; default: the preset's ``run.amp`` as it resolves on the device)
    and each ``channels_last`` setting (``auto``/``on``/``off``; default: the preset's).

    Returns ``results`` (one row per method x amp x layout: seconds per step (median),
    steps/s, clips/s, peak memory, host syncs per step on CUDA, the CMMC breakdown), and
    ``ratios``: CMMC-like / MoCo step time at equal batch and bf16 / fp32 clips/s. ``threads``:
    torch's CPU threads for the measurement (restored afterwards).
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _bench_step(preset_name, methods, amps, device, steps, warmup, overrides, channels_last, compile,
                           breakdown, seed, cpu_memory, progress)
    finally:
        torch.set_num_threads(before)


def _bench_step(preset_name, methods, amps, device, steps, warmup, overrides, channels_last, compile, breakdown,
                seed, cpu_memory, progress) -> dict:
    from .train import device_settings, resolve_device
    dev = resolve_device(device)
    device_settings(dev)                             # as the training loop: cuDNN autotuning on CUDA
    base = bench_config(preset_name, list(overrides) + [f"run.device={device}"])
    ready = available(METHODS)
    unknown = [m for m in methods if m not in ready]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose among {', '.join(ready)}")
    if amps is None:
        amps = ["bf16" if base.run.amp == "bf16" or (base.run.amp == "auto" and dev.type == "cuda") else "off"]
    for a in amps:
        if a not in ("off", "bf16"):
            raise ValueError(f"--amp must be off or bf16 (a list: off,bf16), got {a!r}")
    layouts = list(channels_last or [base.run.channels_last])
    results = []
    for layout in layouts:
        for amp in amps:
            cfgs = []
            for m in methods:
                cfg = copy.deepcopy(base)
                cfg.ssl.method, cfg.run.amp, cfg.run.channels_last, cfg.run.compile = m, amp, layout, compile
                cfgs.append(cfg)
            if progress:
                log.info("bench step: %s, amp %s, channels_last %s%s", ", ".join(methods), amp, layout,
                         ", compiled" if compile else "")
            results += time_steps(cfgs, dev, steps, warmup, breakdown, seed=seed, cpu_memory=cpu_memory)
    out = {"preset": preset_name, "device": str(dev), "device_name": device_name(dev),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "backbone": base.model.backbone,
           "batch": base.optim.batch_size, "clip": list(input_shape(base, base.ssl.modality)[1:]),
           "steps": steps, "warmup": warmup, "overrides": list(overrides), "results": results,
           "ratios": step_ratios(results)}
    ok = [r for r in results if not r.get("error")]
    if ok:                                              # the headline: the first row
        out.update({k: ok[0][k] for k in ("seconds_per_step", "steps_per_s", "clips_per_s")})
        out["last_loss"] = ok[0]["last_loss"]
    return out


def _step_time(r: dict) -> float:
    """The step time ratios use: this process's CPU time on a CPU (see :func:`_clock`), else wall."""
    return r.get("cpu_seconds_per_step") or r["seconds_per_step"]


def step_ratios(results: Sequence[dict]) -> dict:
    """``method/moco`` step-time ratios at equal amp and layout, ``bf16/fp32`` throughput per
    method, and the CMMC breakdown of the extra time (source forward, mixing, other). On a CPU
    they are ratios of process CPU time per step (``cpu_seconds_per_step``: a shared machine's
    load stretches wall-clock times unevenly); on a GPU of wall-clock (CUDA events)."""
    ok = [r for r in results if not r.get("error")]
    key = lambda r: (r["amp"], r["channels_last"], r["compiled"])   # noqa: E731
    moco = {key(r): r for r in ok if r["method"] == "moco"}
    over_moco, extra = {}, {}
    for r in ok:
        ref = moco.get(key(r))
        if r["method"] == "moco" or ref is None:
            continue
        tag = f"{r['method']}/moco@{r['amp']}" + ("" if r["channels_last"] in (False, "off") else "+cl") \
              + ("+compiled" if r["compiled"] else "")
        over_moco[tag] = _step_time(r) / _step_time(ref)
        if r.get("breakdown"):
            diff = 1000 * (_step_time(r) - _step_time(ref))
            b = r["breakdown"]
            extra[tag] = {"moco_ms": 1000 * _step_time(ref), "method_ms": 1000 * _step_time(r),
                          "extra_ms": diff, "source_forward_ms": b["source_forward_ms"], "mixing_ms": b["mixing_ms"],
                          "other_ms": diff - b["source_forward_ms"] - b["mixing_ms"]}
    bf16 = {}
    for r in ok:
        if r["amp"] != "bf16":
            continue
        ref = next((f for f in ok if f["amp"] == "off" and f["method"] == r["method"]
                    and f["channels_last"] == r["channels_last"] and f["compiled"] == r["compiled"]), None)
        if ref is not None:
            bf16[r["method"]] = _step_time(ref) / _step_time(r)
    return {"over_moco": over_moco, "bf16_over_fp32": bf16, "extra_time": extra}


# --------------------------------------------------------------------------- the loader
def bench_dataset(cfg: Config, modalities: Sequence[str], subset: str = "train", seed: int = 0):
    """The training dataset of ``cfg`` (``subset``: train, test or all = both) with random views."""
    from .config import data_root
    from .data.datasets import MultiModalClips, build_dataset, ensure_synthetic
    from .data.splits import load_split
    if subset in ("train", "test"):
        return build_dataset(cfg.data, subset, True, modalities, seed=seed)
    if subset != "all":
        raise ValueError(f"subset must be train, test or all, got {subset!r}")
    if cfg.data.dataset == "synthetic":
        ensure_synthetic(cfg.data)
    root = data_root(cfg.data)
    split = load_split(cfg.data.dataset, root, cfg.data.split)
    return MultiModalClips(root, split.subset("train") + split.subset("test"), split.classes, modalities,
                           True, cfg.data, seed)


def bench_loader(root: str | Path | None = None, preset_name: str = "tiny", workers: Sequence[int] = (0,),
                 batches: int | None = None, warmup: int | None = None, batch: int | None = None,
                 modalities: Sequence[str] | None = None, method: str = "moco", frame_cache: str = "off",
                 dataset: str | None = None, subset: str = "train", overrides: Sequence[str] = (),
                 prefetch: int | None = None, pin_memory: bool | None = None, seed: int = 0,
                 progress: bool = False) -> dict:
    """Clips/s of the training DataLoader (decode, crop, transforms, collation through worker
    processes and, where CUDA is, the copy into pinned memory) at the preset's clip size, for
    each worker count in ``workers``.

    The dataset's in-memory cache is off (every clip is read again, as on UCF101);
    ``frame_cache`` is ``off``, ``auto`` or a cache folder (``cmmc data cache``). Frame counts are
    learnt before the workers start (as persistent workers know them after their first epoch).
    ``batches`` batches of ``batch`` clips are timed after ``warmup`` (worker start-up, the first
    batches), drawn at random with replacement; default: max(8, 4 x workers) after max(1, workers).
    ``modalities``: default from ``method`` (cross-modal methods read rgb and flow).
    """
    from .train import modalities_for
    extra = list(overrides)
    if dataset:
        extra.append(f"data.dataset={dataset}")
    cfg = bench_config(preset_name, extra)
    cfg.ssl.method = method
    if root is not None:
        cfg.data.root = str(root)
    cfg.data.cache, cfg.data.frame_cache = False, frame_cache
    mods = tuple(modalities or modalities_for(cfg))
    ds = bench_dataset(cfg, mods, subset, seed)
    t0 = time.perf_counter()
    counts = ds.frame_counts()
    count_s = time.perf_counter() - t0
    usable = [j for j, n in enumerate(counts) if n > 0]
    if not usable:
        raise ValueError("no readable video in the dataset")
    b = batch or min(cfg.optim.batch_size, 16)
    rows = []
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                 # as in every worker (seed_worker): per-core work, no thread contention
    try:
        rows = _time_loaders(ds, workers, b, batches, warmup, prefetch or cfg.data.prefetch, pin, usable, seed,
                             progress)
    finally:
        torch.set_num_threads(threads)
    fc = getattr(ds, "frame_cache", None)
    return {"root": str(ds.root), "dataset": cfg.data.dataset, "subset": subset, "videos": len(usable),
            "modalities": list(mods), "clip": [cfg.data.clip_len, cfg.data.size, cfg.data.size],
            "stride": cfg.data.stride, "short_side": cfg.data.short_side,
            "frame_cache": None if fc is None else str(fc.path), "count_frames_s": count_s,
            "pin_memory": pin, "mib_per_clip": _clip_mib(ds), "cpu_count": os.cpu_count(), "results": rows}


def _clip_mib(ds) -> float:
    """MiB of one training item's tensors (what the loader hands over per clip)."""
    item = ds[0]
    return sum(v.numel() * v.element_size() for v in item.values() if torch.is_tensor(v)) / 2**20


def _time_loaders(ds, workers: Sequence[int], b: int, batches: int | None, warmup: int | None, prefetch: int,
                  pin: bool, usable: list[int], seed: int, progress: bool) -> list[dict]:
    from .data.datasets import worker_options
    rows = []
    for w in workers:
        if w < 0:
            raise ValueError(f"worker counts must be >= 0, got {w}")
        n_warm = warmup if warmup is not None else max(1, w)
        n_timed = batches if batches is not None else max(8, 4 * w)
        rng = np.random.default_rng(seed + w)
        sampler = [rng.choice(usable, size=b, replace=len(usable) < b).tolist() for _ in range(n_warm + n_timed)]
        loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, pin_memory=pin,
                                             **worker_options(w, prefetch, False))
        if progress:
            log.info("bench loader: %d workers, %d + %d batches of %d", w, n_warm, n_timed, b)
        start = time.perf_counter()
        warm_at, done = None, 0
        try:
            for i, _ in enumerate(loader):
                done = i + 1
                if done == n_warm:
                    warm_at = time.perf_counter()
            end = time.perf_counter()
            seconds = end - (warm_at if warm_at is not None else start)
            rows.append({"workers": w, "clips_per_s": n_timed * b / seconds, "batches": n_timed, "batch": b,
                         "seconds": seconds, "startup_s": (warm_at or end) - start, "error": None})
        except (RuntimeError, OSError) as e:                  # e.g. a /dev/shm too small for the batches
            rows.append({"workers": w, "error": f"{type(e).__name__}: {str(e)[:300]}"})
        finally:
            del loader
    return rows


# --------------------------------------------------------------------------- FLOPs
def step_flops(cfg: Config) -> dict:
    """Floating-point operations of one training step at ``cfg``'s shapes, counted by PyTorch's
    FlopCounterMode on the meta device (no memory, no arithmetic; convolutions and matrix
    products, which is nearly all of it). MoCo: the query encoder's forward and backward (no
    gradient into the input clip) and the key encoder's forward; CMMC adds the frozen source
    network's forward up to block ``ssl.layer_k`` (the first listed). Per step = per clip x batch."""
    from torch.utils.flop_counter import FlopCounterMode
    from .models import build_backbone, build_encoder
    m, d = cfg.model, cfg.data
    ch = MODALITIES[cfg.ssl.modality].channels
    och = MODALITIES[cfg.ssl.other_modality].channels
    with torch.device("meta"):
        enc = build_encoder(m.backbone, ch, m.width, m.proj_hidden, m.proj_dim)
        src = build_backbone(m.backbone, och, m.width)
    x = torch.empty(1, ch, d.clip_len, d.size, d.size, device="meta")
    with FlopCounterMode(display=False) as fc:
        enc(x).sum().backward()
    query = fc.get_total_flops()
    blocks, h = [], x
    with torch.no_grad():
        for block in enc.backbone.blocks:
            with FlopCounterMode(display=False) as fc:
                h = block(h)
            blocks.append(fc.get_total_flops())
        with FlopCounterMode(display=False) as fc:
            enc(x)
        key = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            src.forward_until(torch.empty(1, och, d.clip_len, d.size, d.size, device="meta"), cfg.ssl.layer_k[0])
        source = fc.get_total_flops()
    b = cfg.optim.batch_size
    return {"backbone": m.backbone, "clip": [d.clip_len, d.size, d.size], "batch": b, "layer_k": cfg.ssl.layer_k[0],
            "block_forward_gflops": [f / 1e9 for f in blocks],
            "per_clip_gflops": {"query_forward_backward": query / 1e9, "key_forward": key / 1e9,
                                "source_forward": source / 1e9},
            "moco_tflops_per_step": (query + key) * b / 1e12, "cmmc_tflops_per_step": (query + key + source) * b / 1e12,
            "cmmc_over_moco": (query + key + source) / (query + key)}


# --------------------------------------------------------------------------- the recipe's cost
def recipe_cost(step_seconds: dict[str, float], train_videos: int = PAPER_TRAIN_VIDEOS, cfg: Config | None = None,
                gpus: Sequence[int] = (1, 4, 8), scaling: float = 0.9) -> dict:
    """GPU-hours of METHOD.md's recipe from measured step times (seconds per step at the
    config's global batch, on one GPU): stage 1 trains RGB and flow with ``schedule.stage1_method``
    for ``optim.epochs`` epochs each; stage 2 runs ``schedule.cycles`` cycles of CMMC, each
    network ``schedule.cycle_epochs`` epochs. ``step_seconds`` maps ``moco`` and ``cmmc`` (the
    stage-1 method falls back to ``moco``). Wall-clock hours on N GPUs assume ``scaling``
    efficiency per extra GPU (the global batch is split; 0.9 is a guess, measure it). The kNN
    monitor and evaluation are not counted."""
    cfg = cfg or preset("paper")
    steps_per_epoch = train_videos // cfg.optim.batch_size
    s1 = cfg.schedule.stage1_method
    t1 = step_seconds.get(s1, step_seconds.get("moco"))
    t2 = step_seconds.get(cfg.ssl.method if cfg.ssl.method != "moco" else "cmmc", step_seconds.get("cmmc"))
    if t1 is None or t2 is None:
        raise ValueError(f"recipe_cost needs step times for {s1} (or moco) and cmmc, got {sorted(step_seconds)}")
    mods = len(cfg.schedule.modalities)
    rows = [{"stage": "stage 1", "method": s1, "networks": mods, "epochs": cfg.optim.epochs,
             "steps": mods * cfg.optim.epochs * steps_per_epoch, "seconds_per_step": t1},
            {"stage": "stage 2", "method": "cmmc", "networks": mods,
             "epochs": cfg.schedule.cycles * cfg.schedule.cycle_epochs,
             "steps": mods * cfg.schedule.cycles * cfg.schedule.cycle_epochs * steps_per_epoch,
             "seconds_per_step": t2}]
    for r in rows:
        r["gpu_hours"] = r["steps"] * r["seconds_per_step"] / 3600
    total = sum(r["gpu_hours"] for r in rows)
    wall = {str(n): total / (1 + (n - 1) * scaling) for n in gpus}
    return {"train_videos": train_videos, "batch": cfg.optim.batch_size, "steps_per_epoch": steps_per_epoch,
            "stages": rows, "gpu_hours": total, "wall_hours_on": wall, "scaling": scaling}


# --------------------------------------------------------------------------- lessons
def run_notebook_inline(path: str | Path, parameters: dict | None = None) -> dict:
    """Execute a lesson's code cells in this process, in order, with ``parameters`` replacing
    the values of its ``parameters`` cell (papermill's contract without a Jupyter kernel, for
    machines that have none). Figures go to the Agg backend; what the cells print is captured
    (its end is returned as ``output_tail``). Returns ok, seconds, cells, error, output_tail."""
    import io
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    path = Path(path)
    nb = json.loads(path.read_text())
    ns: dict[str, Any] = {"__name__": "__main__", "display": print}
    cwd, t0, cells, printed = Path.cwd(), time.perf_counter(), 0, io.StringIO()
    os.chdir(path.parent)
    try:
        with contextlib.redirect_stdout(printed):
            _run_cells(nb, path, ns, parameters, plt)
        return {"ok": True, "seconds": time.perf_counter() - t0, "cells": ns["__cells__"], "error": None,
                "output_tail": printed.getvalue()[-3000:]}
    except Exception as e:
        return {"ok": False, "seconds": time.perf_counter() - t0, "cells": ns.get("__cells__", 0),
                "error": f"cell {ns.get('__cells__', 0) + 1}: {type(e).__name__}: {str(e)[:300]}",
                "output_tail": printed.getvalue()[-3000:]}
    finally:
        os.chdir(cwd)


def _run_cells(nb: dict, path: Path, ns: dict, parameters: dict | None, plt) -> None:
    ns["__cells__"] = 0
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        src = "\n".join(line for line in "".join(cell["source"]).splitlines()
                        if not line.lstrip().startswith(("%", "!")))
        exec(compile(src, f"{path.name} cell {i}", "exec"), ns)
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            ns.update(parameters or {})
        plt.close("all")
        ns["__cells__"] += 1


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
    from .data.frame_cache import build_frame_cache
    from .config import data_root
    overrides = [f"data.root={cfg.data.root}"] if cfg.data.root else []
    overrides += [f"run.seed={cfg.run.seed}"]
    from .train import resolve_device
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


# --------------------------------------------------------------------------- the GPU check
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
    try:
        import av
        info["pyav"] = av.__version__
    except ImportError:
        info["pyav"] = None
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
        from .train import resolve_device
        self.t_start = time.perf_counter()
        self.deadline = self.t_start + budget_s
        self.dev = dev = resolve_device(device)
        self.reduced = dev.type != "cuda" if reduced is None else reduced
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(work) if work else self.out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.repo = Path(__file__).resolve().parents[1]
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
        from .runs import atomic_write
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
        from .data.frame_cache import build_frame_cache
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
            from .data.synthetic import write_synthetic_dataset
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
            from .runs import RunFolder
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
