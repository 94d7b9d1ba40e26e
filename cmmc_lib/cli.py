"""The ``cmmc`` command. Each verb prints a human summary, or exactly one JSON object on stdout
with ``--json``; bad input exits non-zero with a one-line error on stderr.

The verbs are thin: each calls one library function and formats what it returns.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import numbers
import os
import sys
from pathlib import Path
from typing import Any, Callable

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
    result = check_dataset(a.dataset, Path(a.root), split=a.split, decode=a.decode)
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
    from .data.flow import ExtractionInterrupted, extract_flow
    if not Path(a.input).exists():
        raise CLIError(f"no such video or folder: {a.input}")
    try:
        result = extract_flow(Path(a.input), Path(a.out), method=a.method, workers=a.workers, bound=a.bound,
                              short_side=a.short_side, overwrite=a.overwrite, progress=not a.json)
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
    return pretrain(cfg, run_dir=a.run_dir, resume=a.resume)


def fmt_pretrain(r: dict) -> str:
    knn = f", kNN R@1 {r['knn_r1']:.3f}" if r.get("knn_r1") is not None else ""
    text = (f"run folder: {r['run_dir']}\n{r['steps']} steps in {r['seconds']:.1f} s, "
            f"final loss {r['final_loss']:.4f}{knn}")
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
    from .pipeline import run_pipeline
    overrides = list(a.overrides) + ([f"ssl.method={a.method}"] if a.method else [])
    cfg = preset(a.preset, overrides)
    if a.json:
        cfg.run.progress = False
    return run_pipeline(cfg, Path(a.run_dir or Path(cfg.run.out_root) / f"{a.preset}-{cfg.ssl.method}-pipeline"))


def fmt_pipeline(r: dict) -> str:
    lines = [f"{s['name']:<14} {'reused' if s['reused'] else 'trained'}  kNN R@1 "
             f"{s['knn_r1'] if s['knn_r1'] is None else format(s['knn_r1'], '.3f')}  -> {s['run_dir']}"
             for s in r["stages"]]
    lines.append("final networks: " + ", ".join(f"{m} {d}" for m, d in r["final"].items()))
    return "\n".join(lines)


def cmd_ablate(a) -> dict:
    from .ablation import ablate
    out = Path(a.out or f"runs/ablation-{a.preset}")
    return ablate(a.preset, a.seeds, out, a.overrides, curves=not a.no_curves, device=a.device,
                  progress=not a.json)


def fmt_ablate(r: dict) -> str:
    return Path(r["files"]["markdown"]).read_text() + f"\n{len(r['seeds'])} seed(s) in {r['seconds'] / 60:.1f} min; " \
        f"files: {', '.join(r['files'].values())}"


def fmt_eval(r: dict) -> str:
    from .evaluate.runner import format_result
    return format_result(r)


def cmd_bench(a) -> dict:
    if a.what == "step":
        from .ssl.bench import bench_step
        t = tuple(int(s) for s in a.clip.split(","))
        return bench_step(a.backbone, a.width, a.batch, t, a.steps, a.warmup)
    if a.what == "retrieval":
        from .evaluate.retrieval import bench_retrieval
        return bench_retrieval(a.queries, a.gallery, a.dim)
    paths = [Path(p) for p in a.videos]
    if not paths or any(not p.is_file() for p in paths):
        raise CLIError(f"bench {a.what} needs --videos FILE... (existing video files)")
    import cv2
    import torch
    cv2.setNumThreads(1)
    torch.set_num_threads(1)                         # per-core figures
    if a.what == "loader":
        from .data.video import decode_throughput
        return decode_throughput(paths, clip_len=a.clip_len, short_side=a.short_side, clips=a.clips)
    from .data.flow import measure_flow_fps
    from .data.video import decode_video
    frames = decode_video(paths[0])[: a.pairs + 1]
    return {m: measure_flow_fps(frames, m, pairs=a.pairs, threads=1) for m in a.methods}


def cmd_course(a) -> dict:
    from .course import run_course
    return run_course(profile=a.profile, out=Path(a.out), only=a.only, timeout=a.timeout,
                      notebooks_dir=Path(a.notebooks) if a.notebooks else None)


def fmt_course(r: dict) -> str:
    lines = [f"{n['notebook']}: {n['status']} in {n['seconds']:.0f} s -> {n['output']}" for n in r["notebooks"]]
    lines.append(f"course ({r['profile']}): {r['ok']}/{len(r['notebooks'])} notebooks ran, "
                 f"{r['seconds']:.0f} s; executed notebooks and figures in {r['out']}")
    return "\n".join(lines)


def _fmt_generic(r: dict) -> str:
    return json.dumps(r, indent=2, default=str)


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from .config import COURSE_PROFILES, PRESETS
    from .data.flow import FLOW_METHODS
    from .data.synthetic import SYNTHETIC_SIZES
    from .registry import DATASETS, METHODS, MODALITIES, available
    p = argparse.ArgumentParser(prog="cmmc", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="verb", required=True)

    def verb(parent, name, fn: Callable, fmt: Callable = _fmt_generic, **kw):
        sp = parent.add_parser(name, **kw)
        sp.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
        sp.set_defaults(fn=fn, fmt=fmt)
        return sp

    sp = verb(sub, "mask", cmd_mask, fmt_mask, help="sample one tesseract and print it")
    sp.add_argument("--shape", required=True, help="per-sample map shape C,T,H,W (or C,T,V)")
    sp.add_argument("--alpha", type=float, default=1.0)
    sp.add_argument("--dims", default="cthw")
    sp.add_argument("--seed", type=int, default=0)

    data = sub.add_parser("data", help="inspect, check and generate datasets").add_subparsers(dest="what", required=True)
    sp = verb(data, "probe", cmd_data_probe, fmt_probe, help="decode videos fully: frames, size, fps, errors")
    sp.add_argument("paths", nargs="+")
    sp = verb(data, "check", cmd_data_check, fmt_check, help="what a prepared root holds against the official split")
    sp.add_argument("--dataset", required=True, choices=list(DATASETS))
    sp.add_argument("--root", required=True)
    sp.add_argument("--split", type=int, default=1)
    sp.add_argument("--decode", action="store_true", help="also decode every video to find unreadable ones")
    sp = verb(data, "synth", cmd_data_synth, fmt_synth, help="write the synthetic dataset")
    sp.add_argument("--out", default=None, help="default: data/synthetic/<size>")
    sp.add_argument("--size", default="tiny", choices=list(SYNTHETIC_SIZES))
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--videos", type=int, default=None, help="override the number of videos")
    sp.add_argument("--flow-method", default="dis", choices=list(FLOW_METHODS))
    sp.add_argument("--workers", type=int, default=1)

    flow = sub.add_parser("flow", help="optical flow").add_subparsers(dest="what", required=True)
    sp = verb(flow, "extract", cmd_flow_extract, fmt_flow, help="extract flow to the rawframes layout (resumable)")
    sp.add_argument("input", help="a video or a folder of videos")
    sp.add_argument("--out", required=True)
    sp.add_argument("--method", default="tvl1", choices=list(FLOW_METHODS))
    sp.add_argument("--workers", type=int, default=1)
    sp.add_argument("--bound", type=float, default=20.0)
    sp.add_argument("--short-side", type=int, default=None)
    sp.add_argument("--overwrite", action="store_true")

    sp = verb(sub, "pretrain", cmd_pretrain, fmt_pretrain, help="self-supervised pre-training; writes a run folder")
    sp.add_argument("--preset", default="tiny", choices=list(PRESETS))
    sp.add_argument("--method", default=None, choices=available(METHODS))
    sp.add_argument("--modality", default=None, choices=available(MODALITIES))
    sp.add_argument("--run-dir", default=None, help="default: <run.out_root>/<preset>-<method>-<modality>-s<seed>")
    sp.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    sp.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. lr=3e-4 ssl.layer_k=3")

    sp = verb(sub, "eval", cmd_eval, fmt_eval, help="downstream evaluation of a run")
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

    sp = verb(sub, "pipeline", cmd_pipeline, fmt_pipeline,
              help="the recipe: stage 1 (each modality alone), then alternate cycles of the method")
    sp.add_argument("--preset", default="tiny", choices=list(PRESETS))
    sp.add_argument("--method", default=None, choices=available(METHODS), help="the stage-2 method")
    sp.add_argument("--run-dir", default=None, help="default: <run.out_root>/<preset>-<method>-pipeline")
    sp.add_argument("overrides", nargs="*", help="key=value, e.g. schedule.cycles=2 schedule.alternate=false")

    sp = verb(sub, "ablate", cmd_ablate, fmt_ablate,
              help="the poster's ablation table: RGB, flow, two-stream x {MoCo, mixup, CM mixup, CMMC}")
    sp.add_argument("--preset", default="tiny", choices=list(PRESETS))
    sp.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1")
    sp.add_argument("--out", default=None, help="default: runs/ablation-<preset>")
    sp.add_argument("--device", default="auto")
    sp.add_argument("--no-curves", action="store_true", help="skip CMMC w/o alternate training (the curves)")
    sp.add_argument("overrides", nargs="*", help="key=value config overrides")

    sp = verb(sub, "bench", cmd_bench, help="throughput measurements")
    sp.add_argument("what", choices=["step", "loader", "flow", "retrieval"])
    sp.add_argument("--backbone", default="small3d")
    sp.add_argument("--width", type=int, default=16)
    sp.add_argument("--batch", type=int, default=8)
    sp.add_argument("--clip", default="3,8,32,32", help="C,T,H,W")
    sp.add_argument("--steps", type=int, default=10)
    sp.add_argument("--warmup", type=int, default=2)
    sp.add_argument("--queries", type=int, default=3783)
    sp.add_argument("--gallery", type=int, default=9537)
    sp.add_argument("--dim", type=int, default=1024)
    sp.add_argument("--videos", nargs="*", default=[], help="loader / flow: video files")
    sp.add_argument("--clip-len", type=int, default=32)
    sp.add_argument("--short-side", type=int, default=128)
    sp.add_argument("--clips", type=int, default=50)
    sp.add_argument("--pairs", type=int, default=20)
    sp.add_argument("--methods", nargs="*", default=["tvl1", "dis", "farneback"])

    sp = verb(sub, "course", cmd_course, fmt_course, help="execute every notebook with papermill")
    sp.add_argument("--profile", default="tiny", choices=list(COURSE_PROFILES))
    sp.add_argument("--out", default="outputs/course")
    sp.add_argument("--only", nargs="*", default=None, help="notebook name prefixes, e.g. 01 02")
    sp.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    sp.add_argument("--notebooks", default=None, help="folder of the lessons (default: the repo's notebooks/)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:     # key=value overrides may stand between options: argparse leaves them over
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        result = args.fn(args)
    except (CLIError, ValueError, OSError, KeyError, RuntimeError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"cmmc: error: {msg}", file=sys.stderr)
        return 2
    except Exception as exc:                        # an unforeseen failure: still one line, details on -v
        log.debug("traceback", exc_info=True)
        print(f"cmmc: error: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
              f" (run with -v for the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:                       # a verb that does not stop gracefully itself
        print("cmmc: interrupted", file=sys.stderr)
        if args.json:
            write_stdout(strict_json({"interrupted": True}))
        return 130
    if os.environ.get("RANK", "0") != "0":          # under torchrun only rank 0 reports
        return 0
    if not write_stdout(strict_json(result) if args.json else args.fmt(result)):
        return 1                                    # nobody reads stdout any more
    if isinstance(result, dict) and result.get("interrupted"):
        return 130
    return 0 if not (isinstance(result, dict) and result.get("failed_run")) else 1


# ----------------------------------------------------------------------------- output
def strict_json(value: Any) -> str:
    """``value`` as one line of strict JSON (RFC 8259): NaN and +-Infinity, which Python's json
    would write as bare words that other parsers reject, become null; numpy scalars become
    numbers; anything else json cannot write becomes its str()."""
    return json.dumps(_finite_or_none(value), allow_nan=False, default=str)


def _finite_or_none(value: Any) -> Any:
    """A copy of ``value`` (dicts, lists, tuples, scalars) with non-finite floats as None."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def write_stdout(text: str) -> bool:
    """Print ``text`` and flush. False when stdout is closed or its reader has gone (e.g.
    ``cmmc ... | head -c 10``): then, as the Python docs advise for BrokenPipeError (signal
    module, "Note on SIGPIPE"), stdout is pointed at /dev/null so that the flush at exit
    cannot fail again, and the caller exits non-zero without a traceback."""
    if sys.stdout is None:                          # started with stdout closed (>&-)
        print("cmmc: error: stdout is closed: the result cannot be printed", file=sys.stderr)
        return False
    try:
        sys.stdout.write(text + "\n")             # one write: whole lines even unbuffered
        sys.stdout.flush()
        return True
    except BrokenPipeError:
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (AttributeError, OSError, ValueError):  # not a real file (in-process capture)
            pass
        return False


if __name__ == "__main__":
    sys.exit(main())
