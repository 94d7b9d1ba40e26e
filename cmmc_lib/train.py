"""One training loop for every method, on CPU, one GPU or many (``torchrun``).

    result = pretrain(preset("tiny", ["ssl.method=cmmc"]))

What it does, in order: resolve the device (CUDA > MPS > CPU unless told), join the process
group when started by ``torchrun``, build the datasets and the method step
(:func:`cmmc_lib.ssl.factory.build_method`), then for each epoch: a fixed, seeded order of
videos, one optimiser step per batch (bf16 autocast on CUDA), a row in ``metrics.csv`` per
step, a checkpoint every ``run.ckpt_every`` steps, and at the end of the epoch the learning
rate schedule and a kNN retrieval monitor (R@1 of test clips against train clips).

Exact resume. A checkpoint stores the method (networks, momentum encoder, queue), optimiser,
scheduler and the position (epoch, batch). Every random draw is a function of
(seed, epoch, video) for the data and (seed, step, rank) for the method, so the resumed run
replays the same batches and the same mixing and reaches the same losses as an
uninterrupted one.
"""
from __future__ import annotations

import csv
import logging
import math
import os
import signal
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from . import runs
from .config import Config, validate
from .data.datasets import worker_options

log = logging.getLogger(__name__)

METRIC_FIELDS = ["kind", "epoch", "step", "loss", "acc", "lam", "pos_sim", "neg_sim", "lr", "knn_r1",
                 "seconds"]
CROSS_MODAL = ("cm-mixup", "cmmc", "coclr", "coclr-cmmc")


class NonFiniteLossError(RuntimeError):
    """Raised when a step's loss is NaN or infinite; the last checkpoint is left intact."""


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
def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"run.device={name} but CUDA is not available on this machine")
    return dev


def autocast_for(device: torch.device, amp: str):
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def init_distributed(device_name: str) -> tuple[int, int, int]:
    """(rank, world, local_rank). Joins the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device_name in ("auto",) or device_name.startswith("cuda")
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), local_rank


RUNTIME_KEYS = {"run.max_steps", "run.progress", "run.device", "data.num_workers", "run.ckpt_every",
                "run.keep_ckpts", "optim.epochs"}


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
    from .config import apply_overrides
    cfg = runs.load_config(run_dir)
    cfg.run.max_steps = None
    return apply_overrides(cfg, overrides)


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + step * 7919 + rank * 104_729) % (2**62)


def epoch_order(n: int, batch: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """The batches of one epoch for one rank: a seeded shuffle, full batches only."""
    g = torch.Generator().manual_seed(seed * 10_007 + epoch)
    order = torch.randperm(n, generator=g).tolist()
    per_step = batch * world
    steps = n // per_step
    if steps == 0:
        raise ValueError(f"the training set has {n} videos, fewer than one batch of {per_step}: "
                         f"lower optim.batch_size")
    return [order[s * per_step + rank * batch: s * per_step + (rank + 1) * batch] for s in range(steps)]


# --------------------------------------------------------------------------- metrics
class MetricsLog:
    """``metrics.csv``: one row per step (kind=step) and per epoch (kind=epoch)."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled

    def truncate_after(self, step: int, epoch: int) -> None:
        """Drop rows written after a checkpoint so a resumed run does not log them twice."""
        if not (self.enabled and self.path.is_file()):
            return
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        keep = [r for r in rows if (r["kind"] == "step" and int(r["step"]) <= step)
                or (r["kind"] == "epoch" and int(r["epoch"]) < epoch)]
        self._write(keep, "w")

    def write(self, row: dict[str, Any]) -> None:
        if self.enabled:
            self._write([row], "a")

    def _write(self, rows, mode):
        new = mode == "w" or not self.path.is_file()
        with open(self.path, mode, newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRIC_FIELDS, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerows(rows)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of a run's ``metrics.csv`` with numbers parsed (empty cells -> None)."""
    with open(Path(run_dir) / runs.METRICS_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        parsed = {}
        for k, v in r.items():
            if k == "kind":
                parsed[k] = v
            elif v in ("", None):
                parsed[k] = None
            else:
                parsed[k] = int(v) if k in ("epoch", "step") else float(v)
        out.append(parsed)
    return out


# --------------------------------------------------------------------------- building blocks
def modalities_for(cfg: Config) -> tuple[str, ...]:
    if cfg.ssl.method in CROSS_MODAL:
        return (cfg.ssl.modality, cfg.ssl.other_modality)
    return (cfg.ssl.modality,)


def default_run_name(cfg: Config) -> str:
    return cfg.run.name or f"{cfg.preset}-{cfg.ssl.method}-{cfg.ssl.modality}-s{cfg.run.seed}"


def knn_monitor(backbone, gallery_ds, query_ds, modality: str, device, batch_size: int) -> float:
    """R@1 of test clips (queries) against train clips (gallery), backbone features, centred."""
    from .evaluate.features import extract_features
    from .evaluate.retrieval import retrieval_hit_rate
    was_training = backbone.training
    g = extract_features(backbone, gallery_ds, modality, batch_size=batch_size, device=device, progress=False)
    q = extract_features(backbone, query_ds, modality, batch_size=batch_size, device=device, progress=False)
    backbone.train(was_training)
    return float(retrieval_hit_rate(q.feats, q.labels, g.feats, g.labels, ks=(1,))[1])


def knn_r1(backbone, cfg: Config, device: str | torch.device = "cpu") -> float:
    """The kNN monitor of :func:`pretrain` for any backbone (e.g. a random initialisation)."""
    from .data.datasets import build_dataset
    gallery = build_dataset(cfg.data, "train", False, (cfg.ssl.modality,), eval_windows=1)
    query = build_dataset(cfg.data, "test", False, (cfg.ssl.modality,), eval_windows=1)
    return knn_monitor(backbone, gallery, query, cfg.ssl.modality, torch.device(device), cfg.optim.batch_size)


def _batch_to(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


# --------------------------------------------------------------------------- the loop
def pretrain(cfg: Config, run_dir: str | Path | None = None, resume: bool = False) -> dict[str, Any]:
    """Train ``cfg.ssl.method`` on ``cfg.ssl.modality``; returns a summary dict.

    ``resume=True`` continues from ``run_dir/checkpoints/last.pt`` (or starts if there is
    none). Without it, a run folder that already holds checkpoints is refused.
    """
    from .data.datasets import build_dataset
    from .ssl.factory import build_method

    validate(cfg)
    rank, world, local_rank = init_distributed(cfg.run.device)
    device = resolve_device(cfg.run.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    run_dir = Path(run_dir) if run_dir else Path(cfg.run.out_root) / default_run_name(cfg)
    last = runs.checkpoint_path(run_dir, "last")
    if last.is_file() and not resume:
        raise ValueError(f"run folder {run_dir} already holds checkpoints: pass --resume to continue "
                         f"it or choose another --run-dir")
    if resume and last.is_file():
        changed = config_changes(runs.load_config(run_dir), cfg)
        if changed:
            log.warning("resuming %s with changed settings (the resumed run is no longer exactly the "
                        "uninterrupted one unless these are run-time only): %s", run_dir, ", ".join(changed))
    elif rank == 0 and (run_dir / runs.METRICS_FILE).is_file():
        (run_dir / runs.METRICS_FILE).unlink()           # rows of a run that died before its first checkpoint
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        runs.save_config(run_dir, cfg)

    torch.manual_seed(cfg.run.seed)
    mods = modalities_for(cfg)
    train_ds = build_dataset(cfg.data, "train", True, mods, seed=cfg.run.seed)
    monitor = None
    if cfg.run.knn_every > 0:
        monitor = (build_dataset(cfg.data, "train", False, (cfg.ssl.modality,), eval_windows=1),
                   build_dataset(cfg.data, "test", False, (cfg.ssl.modality,), eval_windows=1))
    source = None
    if cfg.ssl.method in CROSS_MODAL and cfg.ssl.source_run:
        source, src_cfg = runs.load_backbone(cfg.ssl.source_run)
        if src_cfg.ssl.modality != cfg.ssl.other_modality:
            raise ValueError(f"ssl.source_run {cfg.ssl.source_run} trained {src_cfg.ssl.modality!r}, but "
                             f"ssl.other_modality is {cfg.ssl.other_modality!r}")
        if (src_cfg.model.backbone, src_cfg.model.width) != (cfg.model.backbone, cfg.model.width):
            log.warning("source network %s (width %d) differs from the trained %s (width %d): feature maps "
                        "are resampled to match", src_cfg.model.backbone, src_cfg.model.width,
                        cfg.model.backbone, cfg.model.width)
    method = build_method(cfg, source_backbone=source).to(device)
    params = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.optim.milestones), cfg.optim.gamma)
    step, epoch, batch_pos = 0, 0, 0
    metrics = MetricsLog(run_dir / runs.METRICS_FILE, enabled=rank == 0)
    resumed_from = None
    if resume and last.is_file():
        ckpt = runs.load_checkpoint(run_dir, "last", map_location=device)
        method.load_state_dict(ckpt["method"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        step, epoch, batch_pos = ckpt["step"], ckpt["epoch"], ckpt["batch"]
        resumed_from = step
        metrics.truncate_after(step, epoch)
        log.info("resuming %s at step %d (epoch %d, batch %d)", run_dir, step, epoch, batch_pos)

    model = method
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            method, device_ids=[device.index] if device.type == "cuda" else None)

    def save(name: str | None = None) -> None:
        if rank != 0:
            return
        if not all(torch.isfinite(p).all() for p in params):
            raise NonFiniteLossError(f"parameters became non-finite by step {step} (epoch {epoch}): not "
                                     f"saving; the last good checkpoint {last} is intact - lower the "
                                     f"learning rate and resume")
        state = {"config": cfg.to_dict(), "step": step, "epoch": epoch, "batch": batch_pos,
                 "method": method.state_dict(), "backbone": method.query_backbone().state_dict(),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        if name:
            runs.save_checkpoint(state, runs.checkpoint_path(run_dir, name))
        runs.save_checkpoint(state, last)
        _prune_checkpoints(run_dir, cfg.run.keep_ckpts)

    t_start, last_loss, last_knn = time.perf_counter(), float("nan"), None
    max_steps = cfg.run.max_steps
    stop = False
    try:
        from tqdm.auto import tqdm
    except ImportError:                                    # pragma: no cover
        tqdm = None
    with GracefulInterrupt(enabled=world == 1) as interrupt:
        while epoch < cfg.optim.epochs and not stop:
            batches = epoch_order(len(train_ds), cfg.optim.batch_size, cfg.run.seed, epoch, rank, world)
            train_ds.set_epoch(epoch)
            loader = DataLoader(train_ds, batch_sampler=batches[batch_pos:], pin_memory=device.type == "cuda",
                                **worker_options(cfg.data.num_workers))
            method.train()
            epoch_losses: list[float] = []
            if batch_pos > 0 and metrics.path.is_file():      # resumed mid-epoch: the mean covers it all
                epoch_losses = [r["loss"] for r in read_metrics(run_dir)
                                if r["kind"] == "step" and r["epoch"] == epoch]
            bar = None
            if cfg.run.progress and rank == 0 and tqdm is not None:
                bar = tqdm(total=len(batches), initial=batch_pos, desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
                           leave=False, dynamic_ncols=True)
            for batch in loader:
                torch.manual_seed(step_seed(cfg.run.seed, step, rank))
                gen = torch.Generator().manual_seed(step_seed(cfg.run.seed, step, rank))
                with autocast_for(device, cfg.run.amp):
                    loss, stats = model(_batch_to(batch, device), generator=gen)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"loss is {loss.item()} at step {step} (epoch {epoch}): stopping; the last good "
                        f"checkpoint {last if last.is_file() else '(none yet)'} is intact - lower the "
                        f"learning rate and resume")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                method.after_step()
                step += 1
                batch_pos += 1
                last_loss = float(loss.detach())
                epoch_losses.append(last_loss)
                metrics.write({"kind": "step", "epoch": epoch, "step": step, "lr": optimizer.param_groups[0]["lr"],
                               "seconds": round(time.perf_counter() - t_start, 3),
                               **{k: float(v) for k, v in stats.items() if k in METRIC_FIELDS}})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last_loss:.3f}")
                if step % cfg.run.ckpt_every == 0:
                    save(f"step_{step:07d}.pt")
                if interrupt.requested or (max_steps is not None and step >= max_steps):
                    stop = True
                    break
            if bar is not None:
                bar.close()
            if stop and batch_pos < len(batches):
                break
            # end of epoch
            epoch_lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            epoch_knn = None
            if monitor is not None and ((epoch + 1) % cfg.run.knn_every == 0 or epoch + 1 == cfg.optim.epochs):
                if rank == 0:
                    epoch_knn = last_knn = knn_monitor(method.query_backbone(), monitor[0], monitor[1],
                                                    cfg.ssl.modality, device, cfg.optim.batch_size)
            mean_loss = sum(epoch_losses) / len(epoch_losses) if epoch_losses else last_loss
            metrics.write({"kind": "epoch", "epoch": epoch, "step": step, "loss": mean_loss,
                           "lr": epoch_lr, "knn_r1": epoch_knn,
                           "seconds": round(time.perf_counter() - t_start, 3)})
            epoch, batch_pos = epoch + 1, 0
            if cfg.run.progress and rank == 0:
                knn = f", kNN R@1 {epoch_knn:.3f}" if epoch_knn is not None else ""
                log.info("epoch %d/%d: mean loss %.4f%s", epoch, cfg.optim.epochs, mean_loss, knn)
    save()
    if interrupt.requested:
        log.warning("stopped at step %d; continue with: cmmc pretrain --resume --run-dir %s", step, run_dir)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    skipped = getattr(train_ds, "num_skipped", 0)
    return {"run_dir": str(run_dir), "steps": step, "epochs": epoch, "seconds": time.perf_counter() - t_start,
            "final_loss": last_loss, "knn_r1": last_knn, "resumed_from": resumed_from,
            "finished": epoch >= cfg.optim.epochs, "interrupted": interrupt.requested,
            "skipped_videos": skipped, "device": str(device)}


def _prune_checkpoints(run_dir: Path, keep: int) -> None:
    steps = sorted((run_dir / runs.CKPT_DIR).glob("step_*.pt"))
    for old in steps[:-keep] if keep > 0 else steps:
        old.unlink(missing_ok=True)


def is_finished(run_dir: str | Path) -> bool:
    """True when ``run_dir`` holds a final checkpoint of a completed run (train-or-load)."""
    try:
        ckpt = runs.load_checkpoint(run_dir, "last")
    except (FileNotFoundError, ValueError):
        return False
    return ckpt["epoch"] >= ckpt["config"]["optim"]["epochs"]


def train_or_load(cfg: Config, run_dir: str | Path) -> dict[str, Any]:
    """Reuse a finished run in ``run_dir``, continue an interrupted one, or train it."""
    run_dir = Path(run_dir)
    if is_finished(run_dir):
        rows = read_metrics(run_dir)
        epochs = [r for r in rows if r["kind"] == "epoch"]
        return {"run_dir": str(run_dir), "reused": True, "steps": rows[-1]["step"] if rows else 0,
                "final_loss": epochs[-1]["loss"] if epochs else math.nan,
                "knn_r1": epochs[-1]["knn_r1"] if epochs else None}
    return {**pretrain(cfg, run_dir, resume=True), "reused": False}
