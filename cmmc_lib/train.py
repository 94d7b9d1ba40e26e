"""One training loop for every method, on CPU, one GPU or many (``torchrun``).

    result = pretrain(preset("tiny", ["ssl.method=cmmc"]))

:func:`pretrain` reads top to bottom: set-up in a few named calls (devices, the run folder,
data, the method step, the optimiser, the checkpoint to continue from), then one loop:
batch -> loss -> optimiser step -> metrics row -> checkpoint, and at the end of each epoch the
kNN monitor and an epoch row. The learning rate follows :func:`lr_at` (``optim.schedule``: step
decay at ``optim.milestones``, or cosine with ``optim.warmup_steps`` of linear warm-up), set
before every step from the position alone.

Exact resume. A checkpoint stores the method (networks, momentum encoder, queue), the optimiser
and the position (epoch, batch, step). Every random draw is a function of (seed, epoch, video)
for the data and (seed, step, rank) for the method, so the resumed run replays the same batches
and the same mixing and reaches the same losses as an uninterrupted one.

Speed (GPU). bf16 autocast with float32 logits and loss (``run.amp``), the channels-last 3-D
memory format (``run.channels_last``), optionally ``torch.compile`` on every backbone block and
head (``run.compile``), fused Adam and cuDNN's autotuner on CUDA. The loop itself never waits
for the device inside a step: the step's loss and stats stay where they are and are fetched
once every ``run.log_every`` steps, before a checkpoint and at the end of an epoch (one
synchronisation for all of them), when the metrics rows are written and a non-finite loss is
caught. One DataLoader serves every epoch, so its workers persist (``data.persistent_workers``),
prefetch (``data.prefetch``) and pin memory on CUDA.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from contextlib import closing, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .config import Config, DataConfig, OptimConfig, apply_overrides, validate
from .data.augment import finish_clips
from .data.datasets import build_dataset, worker_options
from .devices import resolve_device
from .evaluate.features import split_features
from .evaluate.retrieval import retrieval_hit_rate
from .models.base import Backbone
from .models.heads import Encoder
from .registry import METHODS
from .runs import METRIC_FIELDS, RunFolder
from .ssl.factory import build_method, build_source, initialise

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Raised when a step's loss is NaN or infinite; the last checkpoint is left intact."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run inside a longer job (a pipeline, a table, a study): the job stops there,
    never uses the stopped run, and says what it had done (``result``); the same command again
    continues it. A KeyboardInterrupt, so that nothing between here and the command line mistakes
    it for an error to recover from."""

    def __init__(self, message: str, result: dict | None = None):
        super().__init__(message)
        self.result = result or {}


class GracefulInterrupt:
    """Ctrl-C (SIGINT) during training: finish the current step, write a checkpoint, stop.

    A second Ctrl-C aborts at once (the last checkpoint stays intact). Only in a single
    process on the main thread: under torchrun the ranks could stop at different steps.
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("interrupted: finishing this step and writing a checkpoint (Ctrl-C again to abort)")

    def __enter__(self):
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous)
        return False


# --------------------------------------------------------------------------- environment
@dataclass
class Env:
    """Where this process trains: its rank among ``world`` processes and its device."""
    rank: int
    world: int
    device: torch.device
    channels_last: bool = False

    @property
    def main(self) -> bool:
        """Rank 0 writes files and reports."""
        return self.rank == 0


def autocast_for(device: torch.device, amp: str):
    """bf16 autocast on CUDA (``amp=auto``) or wherever ``amp=bf16`` asks; else nothing.
    Logits and the loss are computed in float32 inside it (see ``MoCo.contrast``)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def exact_kernels(device: torch.device, amp: str):
    """Around a whole step (forward *and* backward): oneDNN off for bf16 on CPU.

    oneDNN's bf16 conv3d weight gradient reads uninitialised memory when the feature map is
    smaller than the kernel's reach (a 3x3x3 convolution on 2x2x2 maps: the small 3-D CNN's
    last block): the gradient then changes from call to call and can be NaN, depending on what
    ran before. PyTorch's own CPU kernels are exact there. CUDA and float32 are untouched.
    """
    if device.type != "cpu" or amp != "bf16":
        return nullcontext()
    return torch.backends.mkldnn.flags(enabled=False, deterministic=None, allow_tf32=None, fp32_precision=None)


def use_channels_last(device: torch.device, setting: str) -> bool:
    """``run.channels_last``: ``auto`` is on for CUDA (cuDNN's 3-D convolutions run on tensor
    cores in NDHWC) and off elsewhere (on CPU the default layout is as fast, and the CPU runs
    stay bit-identical to earlier versions); ``on`` / ``off`` force it."""
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"run.channels_last must be one of auto, on, off, got {setting!r}")
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def device_settings(device: torch.device) -> None:
    """On CUDA: make ``device`` current and let cuDNN autotune its kernels (the clip shapes are
    fixed, so the search is paid once per shape). Nothing elsewhere."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True


def setup_env(cfg: Config) -> Env:
    """Join the process group when launched by ``torchrun`` and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = 0, 0
    if world > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            use_cuda = torch.cuda.is_available() and cfg.run.device in ("auto",) or cfg.run.device.startswith("cuda")
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    device = resolve_device(cfg.run.device, local_rank)
    device_settings(device)
    if cfg.run.log_every < 1:
        raise ValueError(f"run.log_every must be >= 1, got {cfg.run.log_every}")
    return Env(rank, world, device, use_channels_last(device, cfg.run.channels_last))


# --------------------------------------------------------------------------- schedule and order
def lr_at(optim: OptimConfig, epoch: int, batch: int = 0, steps_per_epoch: int = 1) -> float:
    """The learning rate of batch ``batch`` of ``epoch`` (both 0-based) in a run of
    ``steps_per_epoch`` steps per epoch: a pure function of the position, so a resumed run sets
    exactly the lrs of an uninterrupted one.

    ``optim.schedule``: ``step``: ``lr * gamma ** #{milestones <= epoch}`` (the same for the whole
    epoch); ``cosine``: ``lr * (1 + cos(pi * (s - w) / (S - w))) / 2`` at global step ``s`` of
    ``S = optim.epochs * steps_per_epoch`` after the ``w = optim.warmup_steps`` warm-up steps
    (``lr`` at the end of the warm-up, near 0 at the last step; milestones are not used).
    ``optim.warmup_steps`` scales either schedule by ``(s + 1) / w`` during the first ``w`` steps.
    A cosine schedule depends on ``optim.epochs``: resuming with more epochs stretches its rest.
    """
    step = epoch * steps_per_epoch + batch
    warm = optim.warmup_steps
    if optim.schedule == "cosine":
        total = optim.epochs * steps_per_epoch
        progress = min(max(step - warm, 0) / max(total - warm, 1), 1.0)
        lr = optim.lr * 0.5 * (1 + math.cos(math.pi * progress))
    elif optim.schedule == "step":
        lr = optim.lr * optim.gamma ** sum(epoch >= m for m in optim.milestones)
    else:
        raise ValueError(f"optim.schedule={optim.schedule!r} is unknown: choose from step, cosine")
    return lr * (step + 1) / warm if step < warm else lr


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + step * 7919 + rank * 104_729) % (2**62)


def epoch_order(n: int, batch: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """This rank's share of the batches of one epoch: a seeded shuffle, full batches only.

    ``batch`` is the *global* batch (``optim.batch_size``, docs/method.md's 64 whatever the number
    of processes): each step, rank r takes the r-th of ``world`` equal slices of it.
    """
    if batch % world:
        raise ValueError(f"optim.batch_size={batch} is the global batch: it must divide evenly over "
                         f"{world} processes")
    g = torch.Generator().manual_seed(seed * 10_007 + epoch)
    order = torch.randperm(n, generator=g).tolist()
    per_rank, steps = batch // world, n // batch
    if steps == 0:
        raise ValueError(f"the training set has {n} videos, fewer than one batch of {batch}: "
                         f"lower optim.batch_size")
    return [order[s * batch + rank * per_rank: s * batch + (rank + 1) * per_rank] for s in range(steps)]


@dataclass
class Position:
    """How far a run has come: optimiser steps, epoch, and batches done in that epoch."""
    step: int = 0
    epoch: int = 0
    batch: int = 0


# --------------------------------------------------------------------------- resume
RUNTIME_KEYS = {"run.max_steps", "run.progress", "run.device", "data.num_workers", "run.ckpt_every",
                "run.keep_ckpts", "optim.epochs", "run.log_every", "run.channels_last", "run.compile",
                "data.prefetch", "data.persistent_workers", "data.frame_cache", "data.in_memory"}
LOCATION_KEYS = {"data.root", "run.out_root", "run.name", "ssl.init_run", "ssl.source_run"}   # where, not what


def config_changes(saved: Config, new: Config) -> list[str]:
    """``section.key: old -> new`` for every setting that differs, run-time settings last."""
    a, b = saved.to_dict(), new.to_dict()
    out = [f"{sec}.{k}: {a[sec][k]!r} -> {b[sec][k]!r}" for sec in a if isinstance(a[sec], dict)
           for k in a[sec] if a[sec][k] != b[sec][k]]
    return sorted(out, key=lambda line: line.split(":")[0] in RUNTIME_KEYS)


def resume_config(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The saved config of a run with ``key=value`` overrides on top (``--resume``).

    ``run.max_steps`` is a limit of one invocation, not of the run: it is cleared first.
    """
    cfg = RunFolder(run_dir).read_config()
    cfg.run.max_steps = None
    return apply_overrides(cfg, overrides)


def open_run(run: RunFolder, cfg: Config, resume: bool, env: Env) -> dict | None:
    """Check that ``run`` can train ``cfg`` and return the checkpoint to continue from, or None.
    Writes nothing (:func:`start_run` does, once everything is built), so a start or a resume
    that fails leaves the folder as it was; only what killed writers left half-written goes.

    Without ``resume`` a folder holding checkpoints is refused; with it, a folder holding no run
    is refused.
    """
    if env.main:
        run.remove_stale_files()
    has_ckpt = run.has_checkpoint("last") or bool(run.step_checkpoints())
    if has_ckpt and not resume:
        raise ValueError(f"run folder {run.path} already holds checkpoints: pass --resume to continue "
                         f"it or choose another --run-dir")
    if resume and not run.exists():
        raise FileNotFoundError(f"--resume: {run.path} holds no run (no config.json); leave out --resume "
                                f"to start a new one there")
    ckpt = run.resume_checkpoint(env.device) if resume else None
    if ckpt is not None:
        changed = config_changes(run.read_config(), cfg)
        if changed:
            log.warning("resuming %s with changed settings (the resumed run is no longer exactly the "
                        "uninterrupted one unless these are run-time only): %s", run.path, ", ".join(changed))
    return ckpt


def start_run(run: RunFolder, cfg: Config, ckpt: dict | None, env: Env) -> None:
    """Write the run's config; a fresh start also drops the rows of a run that died before its
    first checkpoint."""
    if env.main:
        if ckpt is None:
            run.metrics.path.unlink(missing_ok=True)
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_config(cfg)


def restore(ckpt: dict, method: torch.nn.Module, optimizer: torch.optim.Optimizer, run: RunFolder) -> Position:
    """Load a checkpoint's method and optimiser state; drop metrics rows written after it."""
    method.load_state_dict(ckpt["method"])
    optimizer.load_state_dict(ckpt["optimizer"])
    pos = Position(ckpt["step"], ckpt["epoch"], ckpt["batch"])
    run.metrics.truncate_after(pos.step, pos.epoch)
    log.info("resuming %s at step %d (epoch %d, batch %d)", run.path, pos.step, pos.epoch, pos.batch)
    return pos


def save(run: RunFolder, cfg: Config, method, optimizer, pos: Position, env: Env, periodic: bool = False) -> None:
    """Write ``last.pt`` (and a step checkpoint when ``periodic``) from rank 0, after checking
    that no parameter went non-finite (then the last good checkpoint stays)."""
    if not env.main:
        return
    if not all(torch.isfinite(p).all() for p in method.parameters()):
        raise NonFiniteLossError(f"parameters became non-finite by step {pos.step} (epoch {pos.epoch}): not "
                                 f"saving; the last good checkpoint in {run.path} is intact - lower the "
                                 f"learning rate and resume")
    state = {"config": cfg.to_dict(), "step": pos.step, "epoch": pos.epoch, "batch": pos.batch,
             "method": method.state_dict(), "backbone": method.query_backbone().state_dict(),
             "optimizer": optimizer.state_dict()}
    if hasattr(method, "backbones"):                 # joint training: every network it trains
        state["backbones"] = {m: b.state_dict() for m, b in method.backbones().items()}
    run.save_checkpoint(state, step=pos.step if periodic else None, keep=cfg.run.keep_ckpts)


# --------------------------------------------------------------------------- building blocks
def modalities_for(cfg: Config) -> tuple[str, ...]:
    if METHODS[cfg.ssl.method].cross_modal:
        return (cfg.ssl.modality, cfg.ssl.other_modality)
    return (cfg.ssl.modality,)


def default_run_name(cfg: Config) -> str:
    return cfg.run.name or f"{cfg.preset}-{cfg.ssl.method}-{cfg.ssl.modality}-s{cfg.run.seed}"


def build_training_data(cfg: Config, env: Env):
    """The training set (every modality the method reads) and the kNN monitor (None when
    ``run.knn_every`` is 0, and on ranks other than 0)."""
    train = build_dataset(cfg.data, "train", True, modalities_for(cfg), seed=cfg.run.seed)
    monitor = KNNMonitor(cfg, env.device) if cfg.run.knn_every > 0 and env.main else None
    return train, monitor


class KNNMonitor:
    """The per-epoch signal of a run: R@1 of the test split's videos (queries) against the train
    split's (gallery), one window each, backbone features centred (the retrieval protocol's
    ranking). The datasets are built on the first call and kept (with their decoded videos)."""

    def __init__(self, cfg: Config, device: str | torch.device = "cpu"):
        self.cfg, self.device = cfg, torch.device(device)
        self.datasets: dict[str, Any] = {"train": None, "test": None}

    def __call__(self, backbone) -> float:
        feats = {}
        for subset in ("train", "test"):
            self.datasets[subset], feats[subset] = split_features(
                backbone, self.cfg.data, self.cfg.ssl.modality, subset, eval_windows=1,
                batch_size=self.cfg.optim.batch_size, device=self.device, dataset=self.datasets[subset],
                window_l2=self.cfg.eval.window_l2)
        q, g = feats["test"], feats["train"]
        return float(retrieval_hit_rate(q.feats, q.labels, g.feats, g.labels, ks=(1,))[1])


def knn_r1(backbone, cfg: Config, device: str | torch.device = "cpu") -> float:
    """The kNN monitor of :func:`pretrain` for any backbone (e.g. a random initialisation)."""
    return KNNMonitor(cfg, device)(backbone)


class EpochBatches:
    """The batch sampler of :class:`TrainLoader`: this rank's batches of one epoch from a given
    batch on, set before each epoch (the loader, and so its workers, stay the same)."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class TrainLoader:
    """One DataLoader for the whole run: seeded batches of each epoch (:func:`epoch_order`), its
    workers kept between epochs (``data.persistent_workers``), ``data.prefetch`` batches ahead per
    worker, pinned memory on CUDA. ``epoch(pos)`` iterates the rest of epoch ``pos.epoch``."""

    def __init__(self, train_ds, cfg: Config, env: Env):
        self.dataset, self.cfg, self.env = train_ds, cfg, env
        if hasattr(train_ds, "defer_photometric"):      # its photometric half runs batched, on the device
            train_ds.defer_photometric = True
        self.sampler = EpochBatches()
        d = cfg.data
        self.loader = DataLoader(train_ds, batch_sampler=self.sampler, pin_memory=env.device.type == "cuda",
                                 **worker_options(d.num_workers, d.prefetch, d.persistent_workers))

    def epoch(self, pos: Position):
        self.sampler.batches = epoch_order(len(self.dataset), self.cfg.optim.batch_size, self.cfg.run.seed,
                                           pos.epoch, self.env.rank, self.env.world)[pos.batch:]
        self.dataset.set_epoch(pos.epoch)                 # before iter(): workers read it at their next item
        return iter(self.loader)

    def close(self) -> None:
        """Stop persistent workers now rather than when the loader is garbage-collected."""
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self.loader._iterator = None


def to_device(batch: dict, env: Env, data: DataConfig | None = None) -> dict:
    """The batch's tensors on this process's device (asynchronously from pinned memory), its
    clips finished there (:func:`finish_batch`) and laid out channels-last when
    ``env.channels_last``, so that every view ``x[:, v]`` is a channels-last 3-D tensor."""
    out = {k: v.to(env.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    out = finish_batch(out, data or DataConfig())
    for k, v in out.items():
        if env.channels_last and torch.is_tensor(v) and v.dim() == 6 and v.is_floating_point():
            out[k] = v.permute(0, 1, 3, 4, 5, 2).contiguous().permute(0, 1, 5, 2, 3, 4)
    return out


def finish_batch(batch: dict, data: DataConfig) -> dict:
    """The photometric half of the training views, batched (:func:`cmmc_lib.data.augment.finish_clips`):
    the uint8 crops (B, V, T, S, S, C) a deferring dataset hands over become float clips
    (B, V, C, T, S, S), with their views' jitter, grey and blur (``aug``, ``aug_grey``)."""
    if "aug" not in batch:
        return batch
    out = dict(batch)
    rows, grey = out.pop("aug"), out.pop("aug_grey")
    b, v = rows.shape[:2]
    for m in ("rgb", "flow"):
        if m in out and out[m].dtype == torch.uint8:
            clips = finish_clips(out[m].flatten(0, 1), m, rows.flatten(0, 1), grey.flatten(0, 1),
                                 grey_mode=data.grey_mode, normalize=data.normalize,
                                 photometric_flow=data.photometric_flow)
            out[m] = clips.unflatten(0, (b, v))
    return out


def prepare_method(method: torch.nn.Module, cfg: Config, env: Env) -> torch.nn.Module:
    """The method on its device, channels-last where ``env`` says, and with ``run.compile`` every
    backbone block and projection head compiled in place (``Module.compile``: parameter names,
    checkpoints and the block API stay as they are; any cut point still works)."""
    method = method.to(env.device)
    if env.channels_last:
        method = method.to(memory_format=torch.channels_last_3d)
    if cfg.run.compile:
        import torch._dynamo.config as dynamo     # on use: only run.compile needs the compiler
        # blocks of one class share their code, so each block x grad mode x batch shape is a
        # recompilation of it: PyTorch's default limit (8) would quietly leave most blocks eager
        limit = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"
        setattr(dynamo, limit, max(getattr(dynamo, limit), 128))
        for module in method.modules():
            if isinstance(module, Backbone):
                for block in module.blocks:
                    block.compile()
            elif isinstance(module, Encoder):
                module.head.compile()
    return method


def make_optimizer(method: torch.nn.Module, cfg: Config, env: Env) -> torch.optim.Optimizer:
    """``optim.optimizer`` over the trainable parameters: Adam (CoCLR) or SGD with momentum
    ``optim.sgd_momentum``, no Nesterov (SkeletonCLR); fused into a few kernels on CUDA."""
    params = [p for p in method.parameters() if p.requires_grad]
    fused = {"fused": True} if env.device.type == "cuda" else {}
    o = cfg.optim
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.sgd_momentum, weight_decay=o.weight_decay, **fused)
    return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay, **fused)


def train_step(model, method, optimizer, batch: dict, cfg: Config, pos: Position, env: Env):
    """One optimiser step on one batch; returns ``(stats, loss)``: the step's stats (``loss``,
    ``acc``, ``lam`` ...) and the detached loss, both left where they are (no device sync here:
    :class:`EpochLog` fetches and checks them every ``run.log_every`` steps). The mixing draws
    come from a generator seeded by (seed, step, rank)."""
    seed = step_seed(cfg.run.seed, pos.step, env.rank)
    torch.manual_seed(seed)
    batch = to_device(batch, env, cfg.data)
    learns = method.learning                # CoCLR: not until its queue is full (forward only, no update)
    with exact_kernels(env.device, cfg.run.amp):
        with autocast_for(env.device, cfg.run.amp), nullcontext() if learns else torch.no_grad():
            loss, stats = model(batch, generator=torch.Generator().manual_seed(seed))
        if learns:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
    if learns:
        optimizer.step()
    method.after_step()
    return stats, loss.detach()


def _host_values(values: list) -> list[float]:
    """Python floats of ``values`` (numbers or one-element tensors): the tensors of each device
    in one transfer (one synchronisation)."""
    out = [v if torch.is_tensor(v) else float(v) for v in values]
    by_device: dict[torch.device, list[int]] = {}
    for i, v in enumerate(out):
        if torch.is_tensor(v):
            by_device.setdefault(v.device, []).append(i)
    for idx in by_device.values():
        fetched = torch.stack([out[i].detach().float().reshape(()) for i in idx]).tolist()
        for i, value in zip(idx, fetched):
            out[i] = value
    return out


class EpochLog:
    """The metrics rows and the progress bar of one epoch (rank 0 writes; others stay silent).

    :meth:`step` only records; :meth:`flush` (every ``run.log_every`` steps, before a checkpoint,
    at the end) fetches the recorded losses and stats in one transfer, stops on a non-finite loss
    (the rows before it are written, the last checkpoint is intact) and writes one row per step,
    exactly as if each had been written at once.
    """

    def __init__(self, run: RunFolder, cfg: Config, pos: Position, env: Env, steps: int, started: float):
        self.run, self.cfg, self.env, self.started = run, cfg, env, started
        self.losses = [r["loss"] for r in run.metrics.read()
                       if r["kind"] == "step" and r["epoch"] == pos.epoch] if pos.batch and env.main else []
        self.pending: list[tuple[int, int, float, float, dict, Any]] = []
        self.last_loss = math.nan
        self.bar = None
        if cfg.run.progress and env.main:
            self.bar = tqdm(total=steps, initial=pos.batch, desc=f"epoch {pos.epoch + 1}/{cfg.optim.epochs}",
                            leave=False, dynamic_ncols=True)

    def seconds(self) -> float:
        return round(time.perf_counter() - self.started, 3)

    def step(self, pos: Position, stats: dict, loss, lr: float) -> None:
        """Record step ``pos.step`` (its stats and detached loss); flush every ``run.log_every``."""
        self.pending.append((pos.epoch, pos.step, lr, self.seconds(), stats, loss))
        if self.bar is not None:
            self.bar.update(1)
        if len(self.pending) >= self.cfg.run.log_every:
            self.flush()

    def flush(self) -> None:
        """Fetch the recorded steps, check their losses and write their rows."""
        if not self.pending:
            return
        logged = [[k for k in METRIC_FIELDS if k in s] for *_, s, _ in self.pending]   # per step: stats
        values = _host_values([loss for *_, loss in self.pending]                     # may come and go
                              + [s[k] for (*_, s, _), keys in zip(self.pending, logged) for k in keys])
        checked, stats = values[:len(self.pending)], values[len(self.pending):]
        pending, self.pending = self.pending, []
        offsets = [0]
        for keys in logged:
            offsets.append(offsets[-1] + len(keys))
        for n, (epoch, step, lr, seconds, _, _) in enumerate(pending):
            if not math.isfinite(checked[n]):
                last = self.run.checkpoint_path("last")
                raise NonFiniteLossError(f"loss is {checked[n]} at step {step} (epoch {epoch}): stopping; "
                                         f"the last good checkpoint {last if last.is_file() else '(none yet)'} is "
                                         f"intact - lower the learning rate and resume")
            row = dict(zip(logged[n], stats[offsets[n]:offsets[n + 1]]))
            self.losses.append(row.get("loss", checked[n]))
            self.last_loss = self.losses[-1]
            if self.env.main:
                self.run.metrics.write({"kind": "step", "epoch": epoch, "step": step, "lr": lr,
                                        "seconds": seconds, **row})
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{self.last_loss:.3f}")

    def end(self, pos: Position, lr: float, knn: float | None) -> None:
        """Close the bar and write the epoch row: the mean loss over every step of the epoch."""
        self.close()
        if not self.env.main:
            return
        mean = sum(self.losses) / len(self.losses) if self.losses else math.nan
        self.epoch_mean = mean
        self.run.metrics.write({"kind": "epoch", "epoch": pos.epoch, "step": pos.step, "loss": mean, "lr": lr,
                                "knn_r1": knn, "seconds": self.seconds()})
        if self.cfg.run.progress:
            extra = f", kNN R@1 {knn:.3f}" if knn is not None else ""
            log.info("epoch %d/%d: mean loss %.4f%s", pos.epoch + 1, self.cfg.optim.epochs, mean, extra)

    def close(self) -> None:
        """Flush what is recorded and close the bar."""
        try:
            self.flush()
        finally:
            if self.bar is not None:
                self.bar.close()
                self.bar = None


# --------------------------------------------------------------------------- the loop
def pretrain(cfg: Config, run_dir: str | Path | None = None, resume: bool = False) -> dict[str, Any]:
    """Train ``cfg.ssl.method`` on ``cfg.ssl.modality``; returns a summary dict.

    ``resume=True`` continues the run in ``run_dir`` from its last checkpoint (a folder that
    holds no run is refused); without it, a folder that already holds checkpoints is refused.
    ``run.max_steps`` caps the run's total number of optimiser steps. The run folder is locked
    for the whole run (one writer: a second ``pretrain`` on it stops at once, naming this one).
    """
    validate(cfg)
    env = setup_env(cfg)
    run = RunFolder(run_dir or Path(cfg.run.out_root) / default_run_name(cfg))
    with run.lock() if env.main else nullcontext():
        ckpt = open_run(run, cfg, resume, env)
        torch.manual_seed(cfg.run.seed)
        train_ds, monitor = build_training_data(cfg, env)
        method = prepare_method(build_method(cfg, build_source(cfg)), cfg, env)
        optimizer = make_optimizer(method, cfg, env)
        if ckpt is None:
            initialise(method, cfg)
        start_run(run, cfg, ckpt, env)
        pos = restore(ckpt, method, optimizer, run) if ckpt else Position()
        resumed_from = pos.step if ckpt else None
        result = train_loop(run, cfg, env, train_ds, monitor, method, optimizer, pos)
    if result["interrupted"]:
        log.warning("stopped at step %d; continue with: cmmc pretrain --resume --run-dir %s", pos.step, run.path)
    if env.world > 1:          # every rank done with this run; the group lives on for a pipeline's next stage
        dist.barrier()
    return {**result, "resumed_from": resumed_from, "device": str(env.device),
            "skipped_videos": train_ds.skipped_items(), "missing_videos": list(getattr(train_ds, "missing", []))}


def train_loop(run: RunFolder, cfg: Config, env: Env, train_ds, monitor, method, optimizer,
               pos: Position) -> dict[str, Any]:
    """The loop: batch -> loss -> optimiser step -> metrics row -> checkpoint; at the end of each
    epoch the kNN monitor and an epoch row; a checkpoint at the end (and when Ctrl-C stops it)."""
    model = method if env.world == 1 else torch.nn.parallel.DistributedDataParallel(
        method, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    steps_per_epoch = len(train_ds) // cfg.optim.batch_size
    started, last_loss, last_knn, stop = time.perf_counter(), math.nan, None, False
    loader = TrainLoader(train_ds, cfg, env)
    with GracefulInterrupt(enabled=env.world == 1) as interrupt, closing(loader):
        while pos.epoch < cfg.optim.epochs and not stop:
            lr = lr_at(cfg.optim, pos.epoch, pos.batch, steps_per_epoch)
            method.train()
            epoch_log = EpochLog(run, cfg, pos, env, steps_per_epoch, started)
            for batch in loader.epoch(pos):
                if cfg.run.max_steps is not None and pos.step >= cfg.run.max_steps:
                    stop = True
                    break
                lr = lr_at(cfg.optim, pos.epoch, pos.batch, steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                stats, loss = train_step(model, method, optimizer, batch, cfg, pos, env)
                pos.step, pos.batch = pos.step + 1, pos.batch + 1
                epoch_log.step(pos, stats, loss, lr)
                if pos.step % cfg.run.ckpt_every == 0:
                    epoch_log.flush()                  # a checkpoint never follows an unchecked loss
                    save(run, cfg, method, optimizer, pos, env, periodic=True)
                if interrupt.requested:
                    stop = True
                    break
            if pos.batch < steps_per_epoch:           # stopped inside the epoch
                epoch_log.close()
                last_loss = last_loss if math.isnan(epoch_log.last_loss) else epoch_log.last_loss
                break
            knn = None
            if monitor is not None and ((pos.epoch + 1) % cfg.run.knn_every == 0
                                        or pos.epoch + 1 == cfg.optim.epochs):
                epoch_log.flush()
                knn = last_knn = monitor(method.query_backbone())
            epoch_log.end(pos, lr, knn)
            last_loss = getattr(epoch_log, "epoch_mean", last_loss)    # as train_or_load reports a reused run
            pos.epoch, pos.batch = pos.epoch + 1, 0
        save(run, cfg, method, optimizer, pos, env)
    return {"run_dir": str(run.path), "steps": pos.step, "epochs": pos.epoch,
            "seconds": time.perf_counter() - started, "final_loss": last_loss, "knn_r1": last_knn,
            "finished": pos.epoch >= cfg.optim.epochs, "interrupted": interrupt.requested}


def train_or_load(cfg: Config, run_dir: str | Path) -> dict[str, Any]:
    """Reuse a finished run in ``run_dir``, continue an interrupted one, or train it.

    A folder holding a run of other settings is refused (only run-time settings and locations
    may differ): a lesson or a pipeline never silently reuses a run it did not ask for.
    """
    run = RunFolder(run_dir)
    if run.exists():
        ignored = (RUNTIME_KEYS - {"optim.epochs"}) | LOCATION_KEYS
        changed = [c for c in config_changes(run.read_config(), cfg) if c.split(":")[0] not in ignored]
        if changed:
            raise ValueError(f"{run.path} holds a run with other settings ({'; '.join(changed[:3])}): delete "
                             f"it or choose another folder")
    if run.is_finished():
        rows = run.metrics.read() if run.metrics.path.is_file() else []
        epochs = [r for r in rows if r["kind"] == "epoch"]
        return {"run_dir": str(run.path), "reused": True, "steps": rows[-1]["step"] if rows else 0,
                "final_loss": epochs[-1]["loss"] if epochs else math.nan,
                "knn_r1": epochs[-1]["knn_r1"] if epochs else None, "finished": True, "interrupted": False}
    return {**pretrain(cfg, run.path, resume=run.exists()), "reused": False}
