"""The GPU check of ``tvl1-torch``: fields per second at 320x240 per batch size (eager and
``torch.compile``d) and its accuracy against OpenCV's TV-L1, in one short script.

Two steps, because the GPU machine has neither PyAV nor OpenCV's contrib module (no
``cv2.optflow``) and cannot see ``../shared/realdata``:

1. here, on a CPU machine with the project installed::

       python -m cmmc_lib.flow.gpu_check prepare \\
           --videos ../shared/realdata/ucf101/videos/*.avi --out outputs/tvl1_gpu_check/pairs.npz

   decodes runs of consecutive real frames (the speed test's pairs), computes OpenCV TV-L1 on a
   few of them (the reference) and makes ground-truth pairs (real frames warped with known
   smooth flow, see :func:`cmmc_lib.flow.ground_truth.warp_pair`) with OpenCV's error on them
   (about 10 MB, a minute or two of CPU);

2. on the GPU machine, from the repository root (``outputs/`` travels as a carried path)::

       python -m cmmc_lib.flow.gpu_check run --data outputs/tvl1_gpu_check/pairs.npz \\
           --out "$OUT" --max-seconds 170

   imports only torch, numpy and :mod:`cmmc_lib.flow.tvl1`, times batch sizes 1..64 in eager
   mode, then compiled, and writes ``tvl1_gpu_check.json`` after every measurement (a run
   cut short still leaves what it measured). Stops starting new measurements after
   ``--max-seconds``.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .tvl1 import TVL1Params, tvl1_flow_pairs

TARGET_FPS = 300.0          # issue 14: fields per second at 320x240 on one H100/H200


# --------------------------------------------------------------------------- prepare (CPU)
def prepare(videos: list[str], out: str | Path, frames_per_video: int = 12,
            reference_pairs: int = 2, size: tuple[int, int] = (240, 320),
            max_px: float = 4.0) -> dict:
    """Write the check's data file (npz) from real videos; returns a summary dict.

    Per video: ``frames_per_video`` consecutive grey frames from the middle (the speed pairs),
    OpenCV TV-L1 on the first ``reference_pairs`` of their pairs, and two ground-truth pairs
    (fields "sinusoids" and "affine", up to ``max_px`` px) with OpenCV TV-L1's end-point error.
    """
    # PyAV and OpenCV's contrib module: here on the CPU machine, perhaps not on the GPU one
    import cv2

    from .estimators import make_flow_estimator
    from .frames import grey_frames
    from .ground_truth import endpoint_error, smooth_flow_field, valid_mask, warp_pair
    tvl1 = make_flow_estimator("tvl1")
    runs, ref_index, ref_flow, ref_seconds = [], [], [], []
    gt_i0, gt_i1, gt_flow, gt_band, gt_cv_epe = [], [], [], [], []
    for v, video in enumerate(videos):
        grey = grey_frames(video, size)
        if len(grey) < frames_per_video:
            raise ValueError(f"{video}: {len(grey)} frames, fewer than {frames_per_video}")
        s = (len(grey) - frames_per_video) // 2
        runs.append(grey[s:s + frames_per_video])
        for t in range(min(reference_pairs, frames_per_video - 1)):
            t0 = time.process_time()
            ref_flow.append(tvl1(runs[-1][t], runs[-1][t + 1]).astype(np.float16))
            ref_seconds.append(time.process_time() - t0)
            ref_index.append((v, t))
        for k, kind in enumerate(("sinusoids", "affine")):
            truth = smooth_flow_field(*grey.shape[1:], kind=kind, max_px=max_px, seed=100 * v + k)
            i0, i1 = warp_pair(grey[len(grey) // 2], truth)
            mask = valid_mask(truth)
            gt_i0.append(i0), gt_i1.append(i1), gt_flow.append(truth.astype(np.float16))
            gt_band.append(int(np.argmax(mask.any(1))))
            gt_cv_epe.append(endpoint_error(tvl1(i0, i1), truth, mask))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"videos": [Path(v).name for v in videos], "size": list(size),
            "opencv": cv2.__version__, "opencv_tvl1_cpu_seconds_per_field": float(np.mean(ref_seconds)),
            "opencv_tvl1_gt_epe": float(np.mean(gt_cv_epe)), "max_px": max_px}
    np.savez_compressed(out, runs=np.stack(runs), ref_index=np.array(ref_index, np.int64),
                        ref_flow=np.stack(ref_flow), gt_i0=np.stack(gt_i0), gt_i1=np.stack(gt_i1),
                        gt_flow=np.stack(gt_flow), gt_band=np.array(gt_band),
                        gt_cv_epe=np.array(gt_cv_epe), meta=json.dumps(meta))
    return {**meta, "out": str(out), "speed_pairs": len(runs) * (frames_per_video - 1),
            "reference_pairs": len(ref_flow), "ground_truth_pairs": len(gt_flow)}


# --------------------------------------------------------------------------- run (GPU)
def _epe(a: np.ndarray, b: np.ndarray, band: int = 0) -> float:
    err = np.linalg.norm(a.astype(np.float64) - b.astype(np.float64), axis=-1)
    if band:
        err = err[band:-band, band:-band]
    return float(err.mean())


def run(data: str | Path, out: str | Path, device: str = "cuda",
        batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64),
        modes: tuple[str, ...] = ("eager", "compiled"), max_seconds: float = 170.0,
        repeats: int = 2) -> dict:
    """Measure on ``device`` and write ``<out>/tvl1_gpu_check.json`` (rewritten after each
    measurement). Returns the report dict.

    Speed: for each mode and batch size, one warm-up batch (compiles, in "compiled" mode), then
    ``repeats`` timed batches of real consecutive pairs (synchronised wall clock). Accuracy
    (each mode, at batch size 8 or the largest below): end-point error to OpenCV's TV-L1 on the
    reference pairs, and to the truth on the ground-truth pairs (beside OpenCV's own).
    """
    check = _Check(data, out, torch.device(device), max_seconds)
    for mode in modes:
        entry = check.report["modes"].setdefault(mode, {"by_batch_size": {}})
        try:
            if mode == "compiled":
                check.time_the_compile(entry)
            check.time_batch_sizes(mode, entry, batch_sizes, repeats)
            check.measure_accuracy(mode, entry, batch_sizes)
        except Exception as exc:                            # report, and go on with the next mode
            entry["error"] = f"{type(exc).__name__}: {exc}"
            print(f"{mode}: {entry['error']}", file=sys.stderr, flush=True)
        check.save()
    check.save()
    return check.report


class _Check:
    """One run of the check: the data file's frames, the device, the report and its file."""

    def __init__(self, data: str | Path, out: str | Path, dev: torch.device, max_seconds: float):
        self.start, self.dev, self.max_seconds = time.perf_counter(), dev, max_seconds
        self.z = np.load(data)
        self.runs = self.z["runs"]                                 # (V, F, H, W) uint8
        self.prev = self.runs[:, :-1].reshape(-1, *self.runs.shape[2:])
        self.nxt = self.runs[:, 1:].reshape(-1, *self.runs.shape[2:])
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.report = {
            "device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda"
            else platform.processor() or platform.machine(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "size": list(self.runs.shape[2:]), "speed_pairs": len(self.prev),
            "params": TVL1Params().as_dict(), "target_fps": TARGET_FPS,
            "data": json.loads(str(self.z["meta"])), "modes": {}, "notes": []}

    def save(self) -> None:
        report = self.report
        report["seconds"] = round(time.perf_counter() - self.start, 1)
        fps = [r["fps"] for m in report["modes"].values() for r in m.get("by_batch_size", {}).values()]
        report["best_fps"] = max(fps) if fps else None
        report["meets_target"] = bool(fps) and max(fps) >= TARGET_FPS
        (self.out / "tvl1_gpu_check.json").write_text(json.dumps(report, indent=2))

    def batch(self, b: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k``-th batch of ``b`` consecutive-frame pairs (cycling through them)."""
        idx = (np.arange(b) + k * b) % len(self.prev)
        return self.prev[idx], self.nxt[idx]

    def sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)

    def time_the_compile(self, entry: dict) -> None:
        """The first compiled call, on a small batch: how long compiling takes."""
        t0 = time.perf_counter()
        tvl1_flow_pairs(*self.batch(2, 0), device=self.dev, batch_size=2, compile=True)
        self.sync()
        entry["first_call_seconds"] = round(time.perf_counter() - t0, 1)
        self.save()

    def time_batch_sizes(self, mode: str, entry: dict, batch_sizes: tuple[int, ...], repeats: int) -> None:
        """Fields per second at each batch size (until ``max_seconds`` have passed)."""
        compiled = mode == "compiled"
        for b in batch_sizes:
            if time.perf_counter() - self.start > self.max_seconds:
                self.report["notes"].append(f"{mode} batch {b} and later skipped: over {self.max_seconds} s")
                break
            tvl1_flow_pairs(*self.batch(b, 0), device=self.dev, batch_size=b, compile=compiled)   # warm-up
            self.sync()
            stats: dict = {}
            t0 = time.perf_counter()
            for k in range(1, repeats + 1):
                tvl1_flow_pairs(*self.batch(b, k), device=self.dev, batch_size=b, compile=compiled,
                                stats=stats)
            self.sync()
            seconds = time.perf_counter() - t0
            entry["by_batch_size"][str(b)] = {
                "fps": round(repeats * b / seconds, 2), "seconds": round(seconds, 3),
                "fields": repeats * b,
                "iterations_per_field": round(stats["iterations"] / (repeats * b), 1),
                "peak_memory_gib": round(torch.cuda.max_memory_allocated(self.dev) / 2 ** 30, 2)
                if self.dev.type == "cuda" else None}
            print(f"{mode} batch {b}: {entry['by_batch_size'][str(b)]['fps']} fields/s", flush=True)
            self.save()

    def measure_accuracy(self, mode: str, entry: dict, batch_sizes: tuple[int, ...]) -> None:
        """End-point error to OpenCV's TV-L1 on the reference pairs and to the truth on the
        ground-truth pairs, at batch size 8 or the largest below."""
        compiled, z, dev = mode == "compiled", self.z, self.dev
        b = max([x for x in batch_sizes if x <= 8] or [1])
        a_prev = np.stack([self.runs[v, t] for v, t in z["ref_index"]])
        a_next = np.stack([self.runs[v, t + 1] for v, t in z["ref_index"]])
        flows = tvl1_flow_pairs(a_prev, a_next, device=dev, batch_size=b, compile=compiled)
        gt = tvl1_flow_pairs(z["gt_i0"], z["gt_i1"], device=dev, batch_size=b, compile=compiled)
        entry["epe_vs_opencv_real"] = round(float(np.mean(
            [_epe(f, r) for f, r in zip(flows, z["ref_flow"])])), 4)
        entry["gt_epe"] = round(float(np.mean(
            [_epe(f, t, int(band)) for f, t, band in zip(gt, z["gt_flow"], z["gt_band"])])), 4)
        entry["gt_epe_opencv"] = round(float(np.mean(z["gt_cv_epe"])), 4)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cmmc_lib.flow.gpu_check",
                                description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("prepare", help="on a CPU machine: write the data file")
    sp.add_argument("--videos", nargs="+", required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--frames-per-video", type=int, default=12)
    sp.add_argument("--reference-pairs", type=int, default=2)
    sp.add_argument("--size", type=int, nargs=2, default=[240, 320], metavar=("H", "W"))
    sp = sub.add_parser("run", help="on the GPU machine: measure, write JSON")
    sp.add_argument("--data", required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--device", default="cuda")
    sp.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    sp.add_argument("--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    sp.add_argument("--max-seconds", type=float, default=170.0)
    sp.add_argument("--repeats", type=int, default=2)
    a = p.parse_args(argv)
    if a.cmd == "prepare":
        result = prepare(a.videos, a.out, a.frames_per_video, a.reference_pairs, tuple(a.size))
    else:
        result = run(a.data, a.out, a.device, tuple(a.batch_sizes), tuple(a.modes), a.max_seconds,
                     a.repeats)
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
