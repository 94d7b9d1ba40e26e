"""The training step's throughput: :func:`bench_step` times exactly
:func:`cmmc_lib.train.train_step` per method, amp and layout on a random batch already on the
device (:class:`StepRunner`, :func:`time_steps`), with CMMC's extra time broken down, and
:func:`step_ratios` compares the methods (over MoCo) and the precisions (bf16 over fp32)."""
from __future__ import annotations

import contextlib
import copy
import functools
import logging
import statistics
import time
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..config import Config
from ..data.transforms import Augment, plan_views, sample_view_params
from ..devices import resolve_device
from ..registry import METHODS, MODALITIES, available, skeleton_layout
from ..ssl.factory import build_method, random_source
from ..train import (Env, Position, device_settings, make_optimizer, modalities_for, prepare_method, train_step,
                     use_channels_last)
from .common import bench_config, device_name, sync
from .memory import PeakMemory, cpu_peak_memory

log = logging.getLogger(__name__)


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
    c = MODALITIES[modality].channels
    if MODALITIES[modality].network == "skeleton":
        layout = skeleton_layout(cfg.data.dataset)
        return (c, cfg.data.skeleton_frames, layout.num_joints, 2 if layout.name == "ntu25" else 1)
    return (c, cfg.data.clip_len, cfg.data.size, cfg.data.size)


def synthetic_batch(cfg: Config, modalities: Sequence[str], device: torch.device, seed: int = 0) -> dict:
    """Random inputs of the config's shape, two views per sample, on ``device``, and ``source``
    (B,): every clip from its own video (what CoCLR's positives are keyed on).

    Video clips come as the training loop receives them from a deferring dataset: uint8 crops
    (B, 2, T, S, S, C) with each view's photometric parameters drawn with the config's
    augmentation (``aug``, ``aug_grey``), so that a timed step includes the batched jitter, grey,
    blur and normalisation; skeleton streams as float (B, 2, C, T, V, M)."""
    g = torch.Generator().manual_seed(seed)
    b = cfg.optim.batch_size
    batch = {}
    for m in modalities:
        shape = input_shape(cfg, m)
        if MODALITIES[m].network == "video" and m in ("rgb", "flow"):
            c, t, s, _ = shape
            batch[m] = torch.randint(0, 256, (b, 2, t, s, s, c), generator=g, dtype=torch.uint8).to(device)
        else:
            batch[m] = torch.randn(b, 2, *shape, generator=g).to(device)
    if any(batch[m].dtype == torch.uint8 for m in batch):
        rng, aug = np.random.default_rng(seed), Augment.of(cfg.data)
        views = [[sample_view_params(rng, (cfg.data.short_side, cfg.data.short_side), aug, strong, cfg.data.clip_len)
                  for strong in plan_views(rng, np.zeros((2, cfg.data.clip_len), int), aug)[1]] for _ in range(b)]
        batch["aug"] = torch.stack([torch.stack([v.photometric() for v in pair]) for pair in views]).to(device)
        batch["aug_grey"] = torch.tensor([[v.grey_channels or (0,) * cfg.data.clip_len for v in pair] for pair in views],
                                         dtype=torch.uint8, device=device)
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
        sync(self.device)
        t0 = self.clock()
        out = self.fn(*args, **kwargs)
        sync(self.device)
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


class StepRunner:
    """One method ready to step: built, on its device, with its optimiser and a random batch;
    ``warm(n)`` runs n untimed steps (cuDNN autotuning, compilation) while measuring the peak
    memory of building and stepping; calling it runs one training step."""

    def __init__(self, cfg: Config, device: torch.device, seed: int = 0):
        self.cfg, self.device, self.seed = cfg, device, seed
        self.env = Env(0, 1, device, use_channels_last(device, cfg.run.channels_last))
        self.pos = Position()
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.error: str | None = None

    def warm(self, n: int) -> None:
        torch.manual_seed(self.seed)
        self.peak = PeakMemory(self.device)
        with self.peak:
            self.method = prepare_method(build_bench_method(self.cfg), self.cfg, self.env).train()
            self.optimizer = make_optimizer(self.method, self.cfg, self.env)
            self.batch = synthetic_batch(self.cfg, modalities_for(self.cfg), self.device, self.seed)
            t0 = time.perf_counter()
            for _ in range(n):
                self.loss = self()
            sync(self.device)
            self.warmup_seconds = time.perf_counter() - t0

    def __call__(self) -> torch.Tensor:
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
                sync(self.device)
                t = clock()
                self()
                sync(self.device)
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
