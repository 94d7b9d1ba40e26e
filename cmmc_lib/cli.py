"""The ``cmmc`` command. Each verb prints a human summary, or exactly one JSON object on stdout
with ``--json``; bad input exits non-zero with a one-line error on stderr.

The verbs are thin: each calls one library function and formats what it returns.

Each verb imports the library module it calls when it runs, not at the top of this module (the
one place in the package that does so, for a measured start-up cost): ``cmmc --help`` or a
mistyped option answers in about 1.5 s, where importing the whole library first (torch, OpenCV,
PyAV, matplotlib, papermill) took 11 s on the project's 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from .console import BarSafeHandler, say, strict_json, write_stdout
from .files import first_line

log = logging.getLogger("cmmc")


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


# ----------------------------------------------------------------------------- verbs
def cmd_mask(a) -> dict:
    from .mixing import describe_tesseract
    try:
        shape = tuple(int(s) for s in a.shape.split(","))
    except ValueError:
        raise CLIError(f"--shape must be comma-separated integers like 64,16,32,32, got {a.shape!r}")
    return describe_tesseract(shape, a.alpha, a.dims, a.seed)


def fmt_mask(r: dict) -> str:
    sides = "  ".join(f"{k.upper()}[{a}:{b})" for k, (a, b) in r["box"].items())
    return (f"tesseract in {'x'.join(map(str, r['shape']))} (cut {r['dims']}): {sides}\n"
            f"lam0 = {r['lam0']:.4f} (Beta({r['alpha']}, {r['alpha']}))  ->  kept fraction lam = {r['lam']:.4f}")


def cmd_data_probe(a) -> dict:
    from .data.video import probe_videos
    paths = [Path(p) for p in a.paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise CLIError(f"no such file: {missing[0]}")
    odd = [str(p) for p in paths if not p.is_file()]
    if odd:                              # a pipe would block the decoder for ever, a folder is no video
        raise CLIError(f"not a regular file (a folder, a pipe or a device): {odd[0]}")
    results = probe_videos(paths, progress=not a.json)
    failed = sum(1 for r in results if r.get("errors"))
    return {"videos": results, "ok": len(results) - failed, "failed": failed, "failed_run": failed > 0}


def fmt_probe(r: dict) -> str:
    lines = []
    for v in r["videos"]:
        fps = f"{v['fps']:.2f}" if v.get("fps") else "?"
        err = f"  ERROR: {'; '.join(map(str, v['errors']))}" if v.get("errors") else ""
        lines.append(f"{v['path']}: {v.get('frames')} frames, {v.get('width')}x{v.get('height')}, {fps} fps{err}")
    lines.append(f"{r['ok']} decoded, {r['failed']} with errors")
    return "\n".join(lines)


def cmd_data_check(a) -> dict:
    from .data.check import check_dataset
    from .data.skeleton import pickles_trusted
    result = check_dataset(a.dataset, Path(a.root), split=a.split, decode=a.decode, trust_pickle=pickles_trusted())
    empty = [name for name, c in result["subsets"].items() if not c["found"]]
    if empty:
        result.setdefault("notes", []).append(f"no video found for: {', '.join(empty)}")
    result["failed_run"] = not result["ok"]          # exit 1: videos missing or unreadable
    return result


def fmt_check(r: dict) -> str:
    lines = [f"{r['dataset']} split {r['split']} at {r['root']}: {r['classes']} classes, "
             f"{'complete' if r['ok'] else 'INCOMPLETE'}",
             f"{'subset':<12}{'expected':>9}{'found':>9}{'missing':>9}{'unreadable':>11}{'with flow':>10}"]
    for name, c in r["subsets"].items():
        unreadable = "-" if c.get("unreadable") is None else c["unreadable"]
        flow = c.get("with_flow", "-")
        lines.append(f"{name:<12}{c['expected']:>9}{c['found']:>9}{c['missing']:>9}{unreadable:>11}{flow:>10}")
        for ex in c.get("missing_examples", [])[:3]:
            lines.append(f"    missing: {ex}")
        for ex in c.get("unreadable_examples", [])[:3]:
            lines.append(f"    unreadable: {ex}")
    lines += [f"note: {n}" for n in r.get("notes", [])]
    if not r["ok"]:
        lines.append(f"INCOMPLETE (exit status 1): {_check_problems(r)}")
    return "\n".join(lines)


def _check_problems(r: dict) -> str:
    """'train 7 missing; test 1 missing, 2 unreadable': the subsets of a check report that
    have problems."""
    problems = []
    for name, c in r["subsets"].items():
        counts = [f"{c[k]} {k}" for k in ("missing", "unreadable") if c.get(k)]
        if not c.get("expected"):
            counts.append("the list is empty")
        if counts:
            problems.append(f"{name} {', '.join(counts)}")
    return "; ".join(problems)


def cmd_data_synth(a) -> dict:
    from .data.synthetic import write_synthetic_dataset
    out = Path(a.out) if a.out else Path("data/synthetic") / a.size
    return write_synthetic_dataset(out, size=a.size, seed=a.seed, videos=a.videos,
                                   flow_method=a.flow_method, workers=a.workers, progress=not a.json)


def fmt_synth(r: dict) -> str:
    split1 = r["splits"].get(1) or r["splits"].get("1") or {}
    how = "reused" if r.get("reused") else f"written in {r['seconds']:.1f} s"
    return (f"synthetic-{r['size']} (seed {r['seed']}): {r['videos']} videos, {r['classes']} classes, "
            f"{how} -> {r['path']}\nsplit 1: {split1.get('train')} train / {split1.get('test')} test videos")


def cmd_flow_extract(a) -> dict:
    from .flow.extract import ExtractionInterrupted, extract_flow
    if not Path(a.input).exists():
        raise CLIError(f"no such video or folder: {a.input}")
    try:
        result = extract_flow(Path(a.input), Path(a.out), method=a.method, workers=a.workers, bound=a.bound,
                              short_side=a.short_side, overwrite=a.overwrite, progress=not a.json,
                              device=a.device, batch_size=a.batch_size)
    except ExtractionInterrupted as stop:               # Ctrl-C: report what was done, exit status 130
        result = stop.summary
    result["failed_run"] = bool(result["failed"])      # exit status 1: some videos could not be read
    return result


def fmt_flow(r: dict) -> str:
    lines = [f"{r['method']} flow -> {r['out_dir']}: {r['done']} videos done, {r['skipped_existing']} already "
             f"there, {len(r['failed'])} failed ({r['frames']} frames in {r['seconds']:.1f} s)"]
    lines += [f"failed: {path}: {err}" for path, err in r["failed"]]
    if r.get("interrupted"):
        lines.append(f"interrupted: {r['remaining']} videos left undone; run the same command "
                     f"again to resume")
    return "\n".join(lines)


def cmd_pretrain(a) -> dict:
    from .config import preset
    from .train import pretrain, resume_config
    overrides = list(a.overrides)
    if a.method:
        overrides.append(f"ssl.method={a.method}")
    if a.modality:
        overrides.append(f"ssl.modality={a.modality}")
    if a.resume and not a.run_dir:
        raise CLIError("--resume needs --run-dir, the run folder to continue")
    if a.resume and (Path(a.run_dir) / "config.json").is_file():
        cfg = resume_config(a.run_dir, overrides)          # the run's own settings, plus what was typed
    else:
        cfg = preset(a.preset, overrides)
    if a.json:
        cfg.run.progress = False
    result = pretrain(cfg, run_dir=a.run_dir, resume=a.resume)
    result["failed_run"] = bool(result["skipped_videos"] or result["missing_videos"])   # exit 1: inputs failed
    return result


def fmt_pretrain(r: dict) -> str:
    knn = f", kNN R@1 {r['knn_r1']:.3f}" if r.get("knn_r1") is not None else ""
    text = (f"run folder: {r['run_dir']}\n{r['steps']} steps in {r['seconds']:.1f} s, "
            f"final loss {r['final_loss']:.4f}{knn}")
    for what, videos in (("unreadable", r.get("skipped_videos")), ("missing", r.get("missing_videos"))):
        if videos:
            text += (f"\n{len(videos)} {what} training video(s) left out (others drawn in their place): "
                     + ", ".join(videos[:5]) + (" ..." if len(videos) > 5 else ""))
    if not r.get("finished"):
        text += f"\nnot finished: continue with cmmc pretrain --resume --run-dir {r['run_dir']}"
    return text


def cmd_eval(a) -> dict:
    from .evaluate.runner import evaluate_run
    if not (Path(a.run) / "config.json").is_file():
        raise CLIError(f"{a.run} is not a run folder (no config.json)")
    kw: dict[str, Any] = {}
    if a.epochs is not None:
        kw["epochs"] = a.epochs
    data = {k: v for k, v in (("dataset", a.dataset), ("split", a.split), ("root", a.data_root),
                              ("synthetic_seed", a.data_seed)) if v is not None}
    if a.dataset and a.data_root is None:
        data["root"] = None                             # another dataset: its default root
    return evaluate_run(Path(a.run), a.protocol, other_run=Path(a.other_run) if a.other_run else None,
                        which=a.checkpoint, device=a.device, progress=not a.json, data=data or None,
                        modality=a.modality, other_modality=a.other_modality, **kw)


def cmd_pipeline(a) -> dict:
    from .config import preset
    from .pipeline import pipeline_config, plan_pipeline, run_pipeline
    # the stage-2 method is set without its source network: each stage's config is validated with it
    cfg = pipeline_config(preset(a.preset), [*a.overrides, *([f"ssl.method={a.method}"] if a.method else [])])
    if a.json:
        cfg.run.progress = False
    root = Path(a.run_dir or Path(cfg.run.out_root) / f"{a.preset}-{cfg.ssl.method}-pipeline")
    if a.plan:
        stages = plan_pipeline(cfg, root)
        return {"root": str(root), "method": cfg.ssl.method, "plan": [
            {"name": s.name, "run_dir": str(s.run_dir), "describe": s.describe(), "method": s.cfg.ssl.method,
             "modality": s.modality, "epochs": s.cfg.optim.epochs, "init_run": s.cfg.ssl.init_run,
             "source_run": s.cfg.ssl.source_run} for s in stages]}
    return run_pipeline(cfg, root)


def fmt_pipeline(r: dict) -> str:
    if "plan" in r:
        return "\n".join(f"[{i}/{len(r['plan'])}] {s['describe']} -> {s['run_dir']}" for i, s in enumerate(r["plan"], 1))
    lines = [f"{s['name']:<14} {'reused' if s['reused'] else 'trained'}  kNN R@1 "
             f"{s['knn_r1'] if s['knn_r1'] is None else format(s['knn_r1'], '.3f')}  -> {s['run_dir']}"
             for s in r["stages"]]
    if r.get("finished"):
        lines.append("final networks: " + ", ".join(f"{m} {d}" for m, d in r["final"].items()))
    else:
        lines.append(f"stopped: {r.get('stopped_at')} did not finish its schedule; run the same command again "
                     f"to continue")
    return "\n".join(lines)


def cmd_ablate(a) -> dict:
    from .ablation import ablate
    out = Path(a.out or f"runs/ablation-{a.preset}")
    variants = _csv(a.variants, "--variants") if a.variants else None
    return ablate(a.preset, a.seeds, out, a.overrides, table=a.table, curves=not a.no_curves, device=a.device,
                  progress=not a.json, variants=variants)


def fmt_ablate(r: dict) -> str:
    return Path(r["files"]["markdown"]).read_text() + f"\n{len(r['seeds'])} seed(s) in {r['seconds'] / 60:.1f} min; " \
        f"files: {', '.join(r['files'].values())}"


def fmt_eval(r: dict) -> str:
    from .evaluate.runner import format_result
    return format_result(r)


def _csv(text: str, what: str, cast=str) -> list:
    try:
        items = [cast(t.strip()) for t in text.split(",") if t.strip()]
    except ValueError:
        raise CLIError(f"{what} must be a comma-separated list, got {text!r}") from None
    if not items:
        raise CLIError(f"{what} is empty")
    return items


def cmd_bench_step(a) -> dict:
    from .bench import bench_step, shape_overrides
    overrides = shape_overrides(a.backbone, a.width, a.batch, a.clip) + list(a.overrides)
    amps = _csv(a.amp, "--amp") if a.amp else None
    layouts = _csv(a.channels_last, "--channels-last") if a.channels_last else None
    return bench_step(a.preset, _csv(a.methods, "--methods"), amps=amps, device=a.device, steps=a.steps,
                      warmup=a.warmup, overrides=overrides, channels_last=layouts, compile=a.compile,
                      breakdown=not a.no_breakdown, threads=a.threads, cpu_memory=a.cpu_memory,
                      progress=not a.json)


def fmt_bench_step(r: dict) -> str:
    lines = [f"{r['preset']} preset on {r['device']} ({r['device_name']}, {r['threads']} threads): "
             f"{r['backbone']}, batch {r['batch']}, clips {'x'.join(map(str, r['clip']))}",
             f"{'method':<16}{'amp':<6}{'layout':<8}{'steps/s':>9}{'clips/s':>9}{'ms/step':>9}{'cpu ms':>8}"
             f"{'peak MiB':>10}"]
    for x in r["results"]:
        layout = "cl" if x.get("channels_last") else "ncdhw"
        name = x["method"] + (" (compiled)" if x.get("compiled") else "")
        if x.get("error"):
            lines.append(f"{name:<16}{x['amp']:<6}{layout:<8}  error: {x['error']}")
            continue
        mem = "n/a" if x["peak_memory_mib"] is None else f"{x['peak_memory_mib']:.0f}"
        cpu = "-" if not x.get("cpu_seconds_per_step") else f"{1000 * x['cpu_seconds_per_step']:.1f}"
        lines.append(f"{name:<16}{x['amp']:<6}{layout:<8}{x['steps_per_s']:>9.2f}{x['clips_per_s']:>9.1f}"
                     f"{1000 * x['seconds_per_step']:>9.1f}{cpu:>8}{mem:>10}")
    basis = "process CPU time" if r["device"] == "cpu" else "wall clock"
    for tag, v in r["ratios"]["over_moco"].items():
        lines.append(f"{tag} step time ({basis}): {v:.3f}")
    for tag, e in r["ratios"]["extra_time"].items():
        lines.append(f"  extra {e['extra_ms']:.1f} ms = source forward {e['source_forward_ms']:.1f} + mixing "
                     f"{e['mixing_ms']:.1f} + other {e['other_ms']:.1f}")
    for m, v in r["ratios"]["bf16_over_fp32"].items():
        lines.append(f"{m}: bf16 / fp32 throughput ({basis}) {v:.2f}")
    return "\n".join(lines)


def cmd_bench_loader(a) -> dict:
    if a.videos:                                     # per-core decoding of given files (no dataset)
        paths = [Path(p) for p in a.videos]
        if any(not p.is_file() for p in paths):
            raise CLIError(f"bench loader --videos needs existing video files, e.g. {paths[0]}")
        import cv2
        import torch
        cv2.setNumThreads(1)
        torch.set_num_threads(1)
        from .data.video import decode_throughput
        return decode_throughput(paths, clip_len=a.clip_len or 32, short_side=a.short_side or 128,
                                 clips=a.clips)
    from .bench import bench_loader
    if a.root and not Path(a.root).is_dir():
        raise CLIError(f"--root {a.root} is not a folder")
    overrides = list(a.overrides) + [f"data.{k}={v}" for k, v in (("clip_len", a.clip_len),
                                                                   ("short_side", a.short_side)) if v]
    return bench_loader(a.root, a.preset, _csv(a.workers, "--workers", int), batches=a.batches, warmup=a.warmup_batches,
                        batch=a.batch, modalities=_csv(a.modalities, "--modalities") if a.modalities else None,
                        method=a.method, frame_cache=a.frame_cache, dataset=a.dataset, subset=a.subset,
                        overrides=overrides, progress=not a.json)


def fmt_bench_loader(r: dict) -> str:
    if "results" not in r:                            # --videos
        return (f"decoding {r['clips']} clips of {r['clip_len']} frames at short side {r['short_side']} "
                f"from {r['videos']} videos: {r['clips_per_s']} clips/s per core")
    cache = f", frame cache {r['frame_cache']}" if r["frame_cache"] else ", decoding"
    cache += f", {r['mib_per_clip']:.1f} MiB per clip" + (", pinned" if r["pin_memory"] else "")
    lines = [f"{r['dataset']} at {r['root']} ({r['videos']} videos, {'+'.join(r['modalities'])}, clips "
             f"{'x'.join(map(str, r['clip']))} at short side {r['short_side']}{cache}; {r['cpu_count']} CPUs)"]
    for x in r["results"]:
        if x.get("error"):
            lines.append(f"{x['workers']:>3} workers: error: {x['error']}")
        else:
            lines.append(f"{x['workers']:>3} workers: {x['clips_per_s']:8.1f} clips/s  (start-up {x['startup_s']:.1f} s)")
    return "\n".join(lines)


def cmd_bench_flow(a) -> dict:
    paths = [Path(p) for p in a.videos]
    if not paths or any(not p.is_file() for p in paths):
        raise CLIError("bench flow needs --videos FILE... (existing video files)")
    import cv2
    cv2.setNumThreads(a.threads)
    from .flow.speed import bench_flow
    return bench_flow(paths, methods=a.methods, device=a.device, batch_sizes=a.batch_sizes, pairs=a.pairs,
                      threads=a.threads)


def fmt_bench_flow(r: dict) -> str:
    lines = [f"flow fields/s at {r['width']}x{r['height']}, {r['threads']} thread(s); tvl1-torch on "
             f"{r['device']} ({r['device_name']})"]
    for m, x in r["methods"].items():
        lines.append(f"{m:>11}: {x['fps']:8.2f} fields/s, {x['fps_per_cpu_second']:8.2f} per CPU-second")
    for b, x in r.get("tvl1_torch", {}).get("by_batch_size", {}).items():
        per_cpu = f", {x['fps_per_cpu_second']:8.2f} per CPU-second" if x["fps_per_cpu_second"] else ""
        lines.append(f" tvl1-torch: {x['fps']:8.2f} fields/s{per_cpu} (batch {b}, "
                     f"{x['iterations_per_field']:.0f} iterations per field)")
    if "speedup_per_core_vs_opencv_tvl1" in r:
        lines.append(f"tvl1-torch per core: {r['speedup_per_core_vs_opencv_tvl1']}x OpenCV's tvl1")
    return "\n".join(lines)


def cmd_bench_flow_accuracy(a) -> dict:
    paths = [Path(p) for p in a.videos]
    if not paths or any(not p.is_file() for p in paths):
        raise CLIError("bench flow-accuracy needs --videos FILE... (existing video files)")
    from .flow.accuracy import flow_accuracy
    result = flow_accuracy(paths, methods=a.methods, device=a.device)
    for x in result["methods"].values():          # the per-pair errors stay out of a one-line summary
        x.pop("per_pair", None)
    return result


def fmt_bench_flow_accuracy(r: dict) -> str:
    lines = [f"end-point error (px) on {len(r['pairs'])} real frame pairs warped by known smooth flow "
             f"(up to {r['max_px']} px)"]
    lines += [f"{m:>11}: {x['epe']:.4f} px ({x['seconds']:.1f} s)" for m, x in r["methods"].items()]
    return "\n".join(lines)


def cmd_bench_retrieval(a) -> dict:
    from .evaluate.retrieval import bench_retrieval
    return bench_retrieval(a.queries, a.gallery, a.dim)


def cmd_bench_gpu_check(a) -> dict:
    from .bench import gpu_check
    reduced = True if a.reduced else None
    return gpu_check(Path(a.out), reduced=reduced, budget_s=a.budget, work=a.work, realdata=a.realdata,
                     device=a.device, progress=not a.json)


def fmt_gpu_check(r: dict) -> str:
    m = r["machine"]
    lines = [f"gpu-check on {m.get('gpu') or m.get('cpu')} ({'reduced size' if r['reduced'] else 'paper preset'}), "
             f"{r['seconds']:.0f} s -> {r.get('path', '')}"]
    step = r.get("step") or {}
    if step.get("results"):
        lines.append(fmt_bench_step(step))
    for name, res in (r.get("loader") or {}).items():
        if isinstance(res, dict) and res.get("results"):
            lines.append(f"loader {name}: " + ", ".join(
                f"{x['workers']} workers {x['clips_per_s']:.1f} clips/s" for x in res["results"] if not x.get("error")))
    for name in ("lesson06", "ddp", "compiled"):
        res = r.get(name) or {}
        state = res.get("skipped") or res.get("error") or ("ok" if res.get("ok", res.get("ran", True)) else res)
        lines.append(f"{name}: {state if isinstance(state, str) else json.dumps(state, default=str)[:200]}")
    if isinstance(r.get("cost"), dict) and "gpu_hours" in r["cost"]:
        lines.append(f"full recipe: {r['cost']['gpu_hours']:.0f} GPU-hours")
    return "\n".join(lines)


def cmd_data_cache(a) -> dict:
    from .data.frame_cache import build_frame_cache
    if not Path(a.root).is_dir():
        raise CLIError(f"--root {a.root} is not a folder")
    result = build_frame_cache(Path(a.root), Path(a.out) if a.out else None, a.short_side,
                               _csv(a.modalities, "--modalities"), a.workers, progress=not a.json)
    result["failed_run"] = bool(result["failed"])
    return result


def fmt_data_cache(r: dict) -> str:
    text = (f"frame cache at short side {r['short_side']} -> {r['out']}: {r['done']} videos written, "
            f"{r['skipped_existing']} already there, {len(r['failed'])} failed ({r['gib']:.2f} GiB, "
            f"{r['seconds']:.1f} s)")
    for path, err in r["failed"][:5]:
        text += f"\nfailed: {path}: {err}"
    if r.get("interrupted"):
        text += f"\ninterrupted: {r['remaining']} left; run the same command again to resume"
    return text


def cmd_course(a) -> dict:
    from .course import run_course
    return run_course(profile=a.profile, out=Path(a.out), only=a.only, timeout=a.timeout,
                      notebooks_dir=Path(a.notebooks) if a.notebooks else None, progress=not a.quiet)


def fmt_course(r: dict) -> str:
    lines = [f"{n['notebook']}: {n['status']} in {n['seconds']:.0f} s -> {n['output']}" for n in r["notebooks"]]
    lines.append(f"course ({r['profile']}): {r['ok']}/{len(r['notebooks'])} notebooks ran, "
                 f"{r['seconds']:.0f} s; executed notebooks and figures in {r['out']}")
    return "\n".join(lines)


def cmd_study_gates(a) -> dict:
    from .study import run_gates
    seeds = _csv(a.seeds, "--seeds", int)
    parts = _csv(a.gates, "--gates")
    transfer = None if a.transfer_seed < 0 else a.transfer_seed
    command = " ".join(["cmmc study gates", f"--preset {a.preset}", f"--seeds {a.seeds}", f"--gates {a.gates}",
                        f"--transfer-seed {a.transfer_seed}", f"--out {a.out}", f"--runs {a.runs}", *a.overrides])
    return run_gates(a.preset, seeds, list(a.overrides), out=a.out, runs=a.runs, transfer_seed=transfer,
                     parts=parts, progress=not a.json, command=command)


def fmt_study_gates(r: dict) -> str:
    from .study.report import gates_text
    return gates_text(r["rows"]) + f"\nrows appended to {r['out']}"


def cmd_study_ablate(a) -> dict:
    from .study.ablate import run_study
    seeds = list(range(int(a.seeds))) if a.seeds.isdigit() else _csv(a.seeds, "--seeds", int)
    command = " ".join(["cmmc study ablate", f"--preset {a.preset}", f"--seeds {a.seeds}", f"--workers {a.workers}",
                        f"--threads {a.threads}", f"--transfer-seed {a.transfer_seed}", f"--out {a.out}",
                        f"--runs {a.runs}", *a.overrides])
    return run_study(a.preset, seeds, a.out, a.runs, a.transfer_seed, a.workers, a.threads, list(a.overrides),
                     progress=not a.json, command=command)


def fmt_study_ablate(r: dict) -> str:
    from .study.report import study_text
    return study_text(r)


def _fmt_generic(r: dict) -> str:
    return json.dumps(r, indent=2, default=str)


# ----------------------------------------------------------------------------- parser
def _verb(parent, name, fn: Callable, fmt: Callable = _fmt_generic, **kw):
    """A sub-command that calls ``fn(args)``, prints with ``fmt`` (or one JSON object with --json)."""
    sp = parent.add_parser(name, **kw)
    sp.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    sp.set_defaults(fn=fn, fmt=fmt)
    return sp


def _trust_pickle_option(sp) -> None:
    """``--trust-pickle``: this invocation may unpickle .pkl inputs (never a run folder's setting)."""
    sp.add_argument("--trust-pickle", action="store_true",
                    help="ntu60: read .pkl inputs for this command (unpickling can run code: only files you "
                         "trust; the same as CMMC_TRUST_PICKLE=1)")


def _add_mask(sub) -> None:
    """cmmc mask."""
    sp = _verb(sub, "mask", cmd_mask, fmt_mask, help="sample one tesseract and print it")
    sp.add_argument("--shape", required=True, help="per-sample map shape C,T,H,W (or C,T,V)")
    sp.add_argument("--alpha", type=float, default=1.0)
    sp.add_argument("--dims", default="cthw")
    sp.add_argument("--seed", type=int, default=0)


def _add_data(sub) -> None:
    """cmmc data probe|check|synth|cache."""
    from .flow.estimators import FLOW_METHODS
    from .data.synthetic import SYNTHETIC_SIZES
    from .registry import DATASETS
    data = sub.add_parser("data", help="inspect, check and generate datasets").add_subparsers(dest="what", required=True)
    sp = _verb(data, "probe", cmd_data_probe, fmt_probe, help="decode videos fully: frames, size, fps, errors")
    sp.add_argument("paths", nargs="+")
    sp = _verb(data, "check", cmd_data_check, fmt_check, help="what a prepared root holds against the official split")
    sp.add_argument("--dataset", required=True, choices=list(DATASETS))
    sp.add_argument("--root", required=True)
    sp.add_argument("--split", type=int, default=1)
    sp.add_argument("--decode", action="store_true", help="also decode every video to find unreadable ones")
    _trust_pickle_option(sp)
    sp = _verb(data, "synth", cmd_data_synth, fmt_synth, help="write the synthetic dataset")
    sp.add_argument("--out", default=None, help="default: data/synthetic/<size>")
    sp.add_argument("--size", default="tiny", choices=list(SYNTHETIC_SIZES))
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--videos", type=int, default=None, help="override the number of videos")
    sp.add_argument("--flow-method", default="dis", choices=list(FLOW_METHODS))
    sp.add_argument("--workers", type=int, default=1)
    sp = _verb(data, "cache", cmd_data_cache, fmt_data_cache,
               help="pre-decode videos and flow to uint8 arrays at the short side (resumable)",
               description="Decode every video (and flow folder) of a dataset root once into "
                           "OUT/{rgb,flow}/<video>.npy at the short side; the dataset then memory-maps "
                           "clips instead of decoding (data.frame_cache=auto reads ROOT/frames_s<short side>).")
    sp.add_argument("--root", required=True, help="dataset root (videos/, flow/)")
    sp.add_argument("--out", default=None, help="default: ROOT/frames_s<short side> (what data.frame_cache=auto reads)")
    sp.add_argument("--short-side", type=int, default=128)
    sp.add_argument("--modalities", default="rgb,flow", help="rgb, flow or rgb,flow")
    sp.add_argument("--workers", type=int, default=1)


def _add_flow(sub) -> None:
    """cmmc flow extract."""
    from .flow.estimators import FLOW_METHODS
    flow = sub.add_parser("flow", help="optical flow").add_subparsers(dest="what", required=True)
    sp = _verb(flow, "extract", cmd_flow_extract, fmt_flow, help="extract flow to the rawframes layout (resumable)")
    sp.add_argument("input", help="a video or a folder of videos")
    sp.add_argument("--out", required=True)
    sp.add_argument("--method", default="tvl1", choices=list(FLOW_METHODS))
    sp.add_argument("--workers", type=int, default=1)
    sp.add_argument("--bound", type=float, default=20.0)
    sp.add_argument("--short-side", type=int, default=None)
    sp.add_argument("--overwrite", action="store_true")
    sp.add_argument("--device", default=None, help="tvl1-torch: cpu, cuda, cuda:N or auto (default: CUDA if any)")
    sp.add_argument("--batch-size", type=int, default=None, help="tvl1-torch: frame pairs per call (1 on CPU, 32 on CUDA)")


def _add_training(sub) -> None:
    """cmmc pretrain, eval, pipeline, ablate."""
    from .config import PRESETS
    from .registry import DATASETS, METHODS, MODALITIES, available
    sp = _verb(sub, "pretrain", cmd_pretrain, fmt_pretrain, help="self-supervised pre-training; writes a run folder")
    sp.add_argument("--preset", default="tiny", choices=list(PRESETS))
    sp.add_argument("--method", default=None, choices=available(METHODS))
    sp.add_argument("--modality", default=None, choices=available(MODALITIES))
    sp.add_argument("--run-dir", default=None, help="default: <run.out_root>/<preset>-<method>-<modality>-s<seed>")
    sp.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    _trust_pickle_option(sp)
    sp.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. lr=3e-4 ssl.layer_k=3")

    sp = _verb(sub, "eval", cmd_eval, fmt_eval, help="downstream evaluation of a run")
    sp.add_argument("protocol", choices=["retrieval", "linear", "finetune"])
    sp.add_argument("--run", required=True)
    sp.add_argument("--other-run", default=None, help="second stream for two-stream fusion")
    sp.add_argument("--checkpoint", default="last", help="last, a step number, or a checkpoint file")
    sp.add_argument("--device", default="auto")
    sp.add_argument("--epochs", type=int, default=None)
    sp.add_argument("--dataset", default=None, choices=list(DATASETS),
                    help="evaluate on another dataset than the run's (transfer, e.g. hmdb51)")
    sp.add_argument("--split", type=int, default=None, help="official split of the evaluation dataset")
    sp.add_argument("--data-root", default=None, help="root of the evaluation dataset")
    sp.add_argument("--data-seed", type=int, default=None, help="synthetic data: the generator seed (transfer set)")
    sp.add_argument("--modality", default=None, help="which network of a run that trained two (joint)")
    sp.add_argument("--other-modality", default=None, help="which network of --other-run")
    _trust_pickle_option(sp)

    sp = _verb(sub, "pipeline", cmd_pipeline, fmt_pipeline,
               help="the recipe: stage 1 (each modality alone), then alternate cycles of the method")
    sp.add_argument("--preset", default="tiny", choices=list(PRESETS))
    sp.add_argument("--method", default=None, choices=available(METHODS), help="the stage-2 method")
    sp.add_argument("--run-dir", default=None, help="default: <run.out_root>/<preset>-<method>-pipeline")
    sp.add_argument("--plan", action="store_true", help="print the stages and where they go; train nothing")
    _trust_pickle_option(sp)
    sp.add_argument("overrides", nargs="*", help="key=value, e.g. schedule.cycles=2 schedule.alternate=false")

    sp = _verb(sub, "ablate", cmd_ablate, fmt_ablate,
               help="the poster's tables: the mixing ablation, or the comparison with CoCLR")
    sp.add_argument("--preset", default="tiny", choices=list(PRESETS))
    sp.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1")
    sp.add_argument("--table", default="ablation", choices=["ablation", "comparison"],
                    help="ablation: the mixing strategies; comparison: MoCo, CMMC, CoCLR, CoCLR + CMMC")
    sp.add_argument("--out", default=None, help="default: runs/ablation-<preset>")
    sp.add_argument("--device", default="auto")
    sp.add_argument("--no-curves", action="store_true", help="skip CMMC w/o alternate training (the curves)")
    sp.add_argument("--variants", default=None, help="only these rows of the table, e.g. moco,cmmc")
    _trust_pickle_option(sp)
    sp.add_argument("overrides", nargs="*", help="key=value config overrides")


def _add_bench_step_loader(sub) -> None:
    """cmmc bench step|loader (``sub``: the bench sub-parsers)."""
    from .config import PRESETS
    from .registry import DATASETS, METHODS, available
    sp = _verb(sub, "step", cmd_bench_step, fmt_bench_step,
               help="training-step throughput per method (steps/s, clips/s, peak memory, ratios)",
               description="Times cmmc_lib.train.train_step on random clips already on the device, at a "
                           "preset's shapes: steps/s, clips/s (rows of the batch), peak memory, the method / "
                           "MoCo step-time ratio at equal batch with CMMC's breakdown, bf16 / fp32.")
    sp.add_argument("--preset", default="tiny", choices=list(PRESETS))
    sp.add_argument("--methods", default="moco", help="comma-separated, e.g. moco,cmmc (default: moco)")
    sp.add_argument("--amp", default=None, help="off (float32), bf16, or both: off,bf16 (default: the preset's "
                                                "run.amp on this device)")
    sp.add_argument("--channels-last", default=None, help="auto, on, off, or a list: on,off")
    sp.add_argument("--compile", action="store_true", help="torch.compile the blocks and heads (run.compile)")
    sp.add_argument("--device", default="auto")
    sp.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported)")
    sp.add_argument("--warmup", type=int, default=3, help="untimed steps first (cuDNN autotuning, compilation)")
    sp.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    sp.add_argument("--no-breakdown", action="store_true", help="skip the instrumented pass of cross-modal methods")
    sp.add_argument("--cpu-memory", action="store_true",
                    help="on CPU, measure each method's peak RSS growth in a fresh process (slower)")
    sp.add_argument("--backbone", default=None, help="override model.backbone")
    sp.add_argument("--width", type=int, default=None, help="override model.width")
    sp.add_argument("--batch", type=int, default=None, help="override optim.batch_size (the global batch)")
    sp.add_argument("--clip", default=None, help="C,T,H,W: override the clip shape (C: 3 rgb, 2 flow)")
    sp.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. data.clip_len=16")

    sp = _verb(sub, "loader", cmd_bench_loader, fmt_bench_loader,
               help="clips/s of the training DataLoader per worker count",
               description="Clips/s of the training DataLoader (decode, crop, transforms, collation through "
                           "worker processes) at the preset's clip size, for each worker count; with --videos, "
                           "the per-core decoding rate of the given files instead.")
    sp.add_argument("--root", default=None, help="dataset root (default: the preset's)")
    sp.add_argument("--preset", default="tiny", choices=list(PRESETS))
    sp.add_argument("--dataset", default=None, choices=list(DATASETS), help="default: the preset's")
    sp.add_argument("--workers", default="0", help="worker counts, comma-separated, e.g. 1,4,16")
    sp.add_argument("--method", default="moco", choices=available(METHODS),
                    help="the modalities it reads (cross-modal methods: rgb and flow)")
    sp.add_argument("--modalities", default=None, help="override, e.g. rgb or rgb,flow")
    sp.add_argument("--frame-cache", default="off", help="off, auto or a cache folder (cmmc data cache)")
    sp.add_argument("--subset", default="train", choices=["train", "test", "all"])
    sp.add_argument("--batch", type=int, default=None, help="clips per batch (default: min(preset batch, 16))")
    sp.add_argument("--batches", type=int, default=None, help="timed batches (default: max(4, 3 x workers))")
    sp.add_argument("--warmup-batches", type=int, default=None, help="untimed first batches (default: workers)")
    sp.add_argument("--clip-len", type=int, default=None, help="override data.clip_len")
    sp.add_argument("--short-side", type=int, default=None, help="override data.short_side")
    sp.add_argument("--videos", nargs="*", default=[], help="per-core decoding of these files instead")
    sp.add_argument("--clips", type=int, default=50, help="--videos: clips to decode")
    sp.add_argument("overrides", nargs="*", help="key=value config overrides")


def _add_bench_others(sub) -> None:
    """cmmc bench flow|flow-accuracy|retrieval|gpu-check (``sub``: the bench sub-parsers)."""
    from .flow.estimators import FLOW_METHODS
    sp = _verb(sub, "flow", cmd_bench_flow, fmt_bench_flow,
               help="optical flow fields/s at 320x240 per method (TV-L1, tvl1-torch per batch size, DIS, Farneback)")
    sp.add_argument("--videos", nargs="+", required=True, help="video files (the first one is used)")
    sp.add_argument("--pairs", type=int, default=8)
    sp.add_argument("--methods", nargs="*", default=list(FLOW_METHODS))
    sp.add_argument("--device", default="auto", help="tvl1-torch: cpu, cuda, cuda:N or auto")
    sp.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="tvl1-torch: frame pairs per call")
    sp.add_argument("--threads", type=int, default=1, help="CPU threads (1: the per-core figure)")

    sp = _verb(sub, "flow-accuracy", cmd_bench_flow_accuracy, fmt_bench_flow_accuracy,
               help="end-point error of each flow method on real frames warped by a known smooth flow")
    sp.add_argument("--videos", nargs="+", required=True, help="video files (one frame pair per field kind each)")
    sp.add_argument("--methods", nargs="*", default=list(FLOW_METHODS))
    sp.add_argument("--device", default="cpu", help="tvl1-torch: cpu, cuda, cuda:N or auto")

    sp = _verb(sub, "retrieval", cmd_bench_retrieval, help="time and memory of retrieval R@k")
    sp.add_argument("--queries", type=int, default=3783)
    sp.add_argument("--gallery", type=int, default=9537)
    sp.add_argument("--dim", type=int, default=1024)

    sp = _verb(sub, "gpu-check", cmd_bench_gpu_check, fmt_gpu_check,
               help="the GPU check: step, loader, lesson 06, DDP, compile; one JSON in under 8 minutes",
               description="On a machine with a GPU: bench step at the paper preset (MoCo, CMMC; fp32, bf16; "
                           "channels-last on/off; compiled if time allows), bench loader on synthetic and real "
                           "videos, lesson 06 at a smoke size, a 2-process NCCL run when two GPUs exist. Writes "
                           "OUT/gpu_check.json after every phase. Without a GPU: the same at a reduced size.")
    sp.add_argument("--out", required=True, help="folder for gpu_check.json")
    sp.add_argument("--work", default=None, help="folder for generated data and caches (default: OUT/work)")
    sp.add_argument("--budget", type=float, default=450.0, help="seconds the whole check may take")
    sp.add_argument("--realdata", default=None, help="default: $CMMC_REALDATA or ../shared/realdata")
    sp.add_argument("--device", default="auto")
    sp.add_argument("--reduced", action="store_true", help="the reduced (CPU) size even on a GPU")


def _add_course(sub) -> None:
    """cmmc course."""
    from .config import COURSE_PROFILES
    sp = _verb(sub, "course", cmd_course, fmt_course, help="execute every notebook with papermill")
    sp.add_argument("--profile", default="tiny", choices=list(COURSE_PROFILES))
    sp.add_argument("--out", default="outputs/course")
    sp.add_argument("--only", nargs="*", default=None, help="notebook name prefixes, e.g. 01 02")
    sp.add_argument("--timeout", type=int, default=None,
                    help="seconds per cell; default: the profile's (600 tiny, 14400 cpu)")
    sp.add_argument("--notebooks", default=None, help="folder of the lessons (default: the repo's notebooks/)")
    sp.add_argument("--quiet", action="store_true", help="no per-lesson lines or cell progress bars")


def _add_study(sub) -> None:
    """cmmc study gates | ablate."""
    from .config import PRESETS
    study = sub.add_parser("study", help="when CMMC helps: the gates, the ablation over seeds").add_subparsers(dest="what", required=True)
    sp = _verb(study, "gates", cmd_study_gates, fmt_study_gates,
               help="G1 supervised ceiling, G2 flow teacher, G3 RGB MoCo gap, the premise diagnostic")
    sp.add_argument("--preset", default="gates", choices=list(PRESETS))
    sp.add_argument("--seeds", default="0", help="training seeds, comma-separated (default: 0)")
    sp.add_argument("--gates", default="g1,g2,g3,premise", help="which: g1,g2,g3,premise")
    sp.add_argument("--transfer-seed", type=int, default=1234, help="data seed of the transfer set (-1: none)")
    sp.add_argument("--out", default="docs/results/study", help="folder of gates.jsonl (rows are appended)")
    sp.add_argument("--runs", default="runs/study", help="folder of the run folders (reused when finished)")
    sp.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. data.synthetic_seed=1")
    sp = _verb(study, "ablate", cmd_study_ablate, fmt_study_ablate,
               help="the gates and the ablation (MoCo, mixup, CM mixup, CMMC, w/o alternate) over seeds")
    sp.add_argument("--preset", default="gates", choices=list(PRESETS))
    sp.add_argument("--seeds", default="5", help="N (seeds 0..N-1) or a comma-separated list (default: 5)")
    sp.add_argument("--workers", type=int, default=2, help="seeds trained at once, one process each (default: 2)")
    sp.add_argument("--threads", type=int, default=1, help="torch threads per process (default: 1)")
    sp.add_argument("--transfer-seed", type=int, default=1234, help="data seed of the transfer set")
    sp.add_argument("--out", default="docs/results/study", help="folder of gates.jsonl and ablation/ (rows are appended)")
    sp.add_argument("--runs", default="runs/study-ablate", help="folder of the run folders (reused when finished)")
    sp.add_argument("overrides", nargs="*", help="key=value config overrides")


def build_parser() -> argparse.ArgumentParser:
    """The ``cmmc`` command line: one sub-command per verb, each with ``--json``."""
    p = argparse.ArgumentParser(prog="cmmc", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="verb", required=True)
    for add in (_add_mask, _add_data, _add_flow, _add_training):
        add(sub)
    bench = sub.add_parser("bench", help="throughput on this machine: step, loader, flow, retrieval, gpu-check")
    bench = bench.add_subparsers(dest="what", required=True)
    _add_bench_step_loader(bench)
    _add_bench_others(bench)
    _add_course(sub)
    _add_study(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:     # key=value overrides may stand between options: argparse leaves them over
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[BarSafeHandler()],
                        format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "trust_pickle", False):       # for this invocation and the processes it starts
        from .data.skeleton import TRUST_PICKLE_ENV
        os.environ[TRUST_PICKLE_ENV] = "1"
    try:
        result = args.fn(args)
        _leave_process_group()
    except (CLIError, ValueError, OSError, KeyError, RuntimeError) as exc:
        say(f"cmmc: error: {first_line(exc)}")
        return 2
    except Exception as exc:                        # an unforeseen failure: still one line, details on -v
        log.debug("traceback", exc_info=True)
        say(f"cmmc: error: {type(exc).__name__}: {first_line(exc)} (run with -v for the traceback)")
        return 2
    except KeyboardInterrupt as exc:                # Ctrl-C: what was done is kept; the same command continues
        done = getattr(exc, "result", None) or {}
        say(f"cmmc: interrupted: {exc}" if str(exc) else "cmmc: interrupted: run the same command again to continue")
        if args.json:
            write_stdout(strict_json({**done, "interrupted": True}))
        return 130
    if os.environ.get("RANK", "0") != "0":          # under torchrun only rank 0 reports
        return 0
    if not write_stdout(strict_json(result) if args.json else args.fmt(result)):
        return 1                                    # nobody reads stdout any more
    if isinstance(result, dict) and result.get("interrupted"):
        return 130
    return 0 if not (isinstance(result, dict) and result.get("failed_run")) else 1



def _leave_process_group() -> None:
    """Under torchrun, leave the process group the training joined (once, after every stage)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
