"""Deprecated: the step benchmark moved to :mod:`cmmc_lib.bench` (``cmmc bench step``).

This shim keeps the old call ``bench_step(backbone, width, batch, clip_shape, ...)`` working for
its last caller (``tests/test_ssl.py``) by delegating to :func:`cmmc_lib.bench.bench_step` with
the shapes as config overrides (MoCo, float32). It imports the top-level ``bench`` lazily, against
the package's direction of dependency: delete this file once that test moves to ``tests/test_bench.py``.
"""
from __future__ import annotations


def bench_step(backbone: str, width: int, batch: int, clip_shape: tuple[int, ...], steps: int = 10,
               warmup: int = 2, *, proj_hidden: int | None = None, proj_dim: int = 128,
               queue_size: int = 256, device: str = "cpu", threads: int | None = None,
               seed: int = 0) -> dict:
    """MoCo training-step throughput at explicit shapes (see :func:`cmmc_lib.bench.bench_step`).
    Returns the one result row, with ``backbone``, ``width``, ``clip_shape``, ``device`` and
    ``threads`` added."""
    from ..bench import bench_step as run, shape_overrides
    overrides = shape_overrides(backbone, width, batch, clip_shape) + [f"ssl.queue_size={queue_size}",
                                                                       f"model.proj_dim={proj_dim}"]
    if proj_hidden:
        overrides.append(f"model.proj_hidden={proj_hidden}")
    r = run("tiny", ["moco"], amps=["off"], device=device, steps=steps, warmup=warmup, overrides=overrides,
            threads=threads, seed=seed, breakdown=False)
    row = r["results"][0]
    if row.get("error"):
        raise RuntimeError(row["error"])
    return {**row, "backbone": backbone, "width": width, "clip_shape": tuple(clip_shape), "device": r["device"],
            "threads": r["threads"]}
