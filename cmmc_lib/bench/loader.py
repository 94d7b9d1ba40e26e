"""The loader's throughput: :func:`bench_loader` times the training DataLoader (decode, crop,
transforms, collation in worker processes, the copy into pinned memory) per worker count, from
the videos or from a frame cache, on the dataset :func:`bench_dataset` builds."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..config import Config, data_root
from ..data.datasets import MultiModalClips, build_dataset, worker_options
from ..data.synthetic import ensure_synthetic
from ..data.splits import load_split
from ..train import modalities_for
from .common import bench_config

log = logging.getLogger(__name__)


def bench_dataset(cfg: Config, modalities: Sequence[str], subset: str = "train", seed: int = 0):
    """The training dataset of ``cfg`` (``subset``: train, test or all = both) with random views."""
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
