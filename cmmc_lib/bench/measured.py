"""The README's figures measured on the build machine, each from a file its command wrote.

    python -m cmmc_lib.bench.measured run                 # every measurement, one after the other
    python -m cmmc_lib.bench.measured run step-cpu bf16   # some of them
    python -m cmmc_lib.bench.measured readme README.md    # the README's table from the files

``run`` executes each measurement's ``cmmc ... --json`` commands in a fresh process (run it on an
idle machine: the figures are times) and writes ``docs/results/bench/<name>.json`` with the
commands, their JSON results, the commit, the machine, the date and the wall time. ``readme``
writes the table between the README's markers from those files only, so no figure in it is typed.
Commands that need real video read ``$CMMC_REALDATA`` (default ``../shared/realdata``); those that
write data write it into a scratch folder that is removed afterwards.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import between_markers, replace_between_markers
from ..provenance import machine, source_commit

ROOT = Path(__file__).resolve().parents[2]
#: where a checkout keeps the measured figures
BENCH = ROOT / "docs" / "results" / "bench"
#: the study's run (its wall time is a row of the table; ``cmmc study ablate`` wrote it)
STUDY_RUN = ROOT / "docs" / "results" / "study" / "ablation" / "run.json"
README_BEGIN = ("<!-- measured:begin (written by `python -m cmmc_lib.bench.measured readme README.md` "
                "from docs/results/bench) -->")
README_END = "<!-- measured:end -->"
NAMES = {"moco": "MoCo", "cmmc": "CMMC", "coclr": "CoCLR", "coclr-cmmc": "CoCLR + CMMC", "tvl1": "OpenCV TV-L1",
         "tvl1-torch": "tvl1-torch", "dis": "DIS", "farneback": "Farneback"}
UCF = "{realdata}/ucf101/videos/"


@dataclass(frozen=True)
class Measurement:
    """One row of the table: ``commands`` (``cmmc`` argv, ``{realdata}`` and ``{scratch}`` filled in
    at run time), run in order; ``figure`` words their JSON results (a list, one per command)."""
    name: str
    what: str
    commands: tuple[tuple[str, ...], ...]
    figure: Callable[[list[dict[str, Any]]], str]


def _step(results: list[dict]) -> str:
    r = results[0]
    speeds = {x["method"]: x["steps_per_s"] for x in r["results"] if not x.get("error")}
    text = ", ".join(f"{NAMES.get(m, m)} {v:.3g}" for m, v in speeds.items()) + " steps/s"
    over = {tag.split("/")[0]: v for tag, v in r["ratios"]["over_moco"].items()}
    if over:
        text += "; CPU time per step over MoCo's: " + ", ".join(f"{NAMES.get(m, m)} {v:.2f}" for m, v in over.items())
    extra = r["ratios"]["extra_time"].get("cmmc/moco@off")
    if extra:
        text += (f"; CMMC's extra {extra['extra_ms']:.1f} ms = frozen source network to block k "
                 f"{extra['source_forward_ms']:.1f} + mixing {extra['mixing_ms']:.1f} + other {extra['other_ms']:.1f}")
    return text


def _bf16(results: list[dict]) -> str:
    r = results[0]
    speeds = {x["amp"]: x["steps_per_s"] for x in r["results"] if not x.get("error")}
    ratio = next(iter(r["ratios"]["bf16_over_fp32"].values()))
    return (f"float32 {speeds['off']:.3g} steps/s, bf16 {speeds['bf16']:.3g}: bf16 has {ratio:.3f}x the throughput "
            "(no bf16 units here), so the loop uses float32 on CPU")


def _decode(results: list[dict]) -> str:
    r = results[0]
    return (f"{r['clips_per_s']:.1f} clips/s per core ({1000 / r['clips_per_s']:.0f} ms a clip), "
            f"{r['clips']} clips from {r['videos']} videos")


def _flow_speed(results: list[dict]) -> str:
    parts = []
    for r in results:
        speeds = [f"{NAMES.get(m, m)} {x['fps']:.3g}" for m, x in r["methods"].items()]
        batches = r.get("tvl1_torch", {}).get("by_batch_size", {})
        if batches:                                  # tvl1-torch: its best batch size
            b, x = max(batches.items(), key=lambda kv: kv[1]["fps"])
            speeds.append(f"tvl1-torch {x['fps']:.3g} (batch {b})")
        parts.append(f"{Path(r['video']).stem}: {', '.join(speeds)}")
    return "; ".join(parts)


def _flow_accuracy(results: list[dict]) -> str:
    r = results[0]
    return (", ".join(f"{NAMES.get(m, m)} {x['epe']:.4f}" for m, x in r["methods"].items())
            + f" (px, mean over {len(r['pairs'])} warped pairs)")


def _synth(results: list[dict]) -> str:
    r = results[0]
    return (f"{r['videos']} videos in {r['seconds']:.0f} s (rendering {r['render_seconds']:.0f} s, "
            f"flow {r['flow_seconds']:.0f} s)")


def _loop(results: list[dict]) -> str:
    r = results[-1]
    return (f"the data: {_synth(results)}; then {r['steps']} training steps in {r['seconds']:.1f} s, start-up "
            f"and frame cache included: {r['steps'] / r['seconds']:.2f} steps/s")


MEASUREMENTS = (
    Measurement("step-cpu", "training step, `cpu` preset (small3d, batch 16, 8 x 40 x 40)",
                (("bench", "step", "--preset", "cpu", "--methods", "moco,cmmc,coclr,coclr-cmmc", "--steps", "30",
                  "--warmup", "5"),), _step),
    Measurement("step-tiny", "training step, `tiny` preset",
                (("bench", "step", "--preset", "tiny", "--methods", "moco,cmmc", "--steps", "30"),), _step),
    Measurement("step-s3d", "S3D step at the paper's clip (32 x 128 x 128), batch 2",
                (("bench", "step", "--preset", "paper", "--methods", "moco,cmmc", "--steps", "5", "--warmup", "1",
                  "optim.batch_size=2"),), _step),
    Measurement("step-stgcn", "ST-GCN at SkeletonCLR's size (50 frames, 25 joints, 2 persons), batch 32",
                (("bench", "step", "--preset", "paper", "--methods", "moco,cmmc", "--amp", "off", "--steps", "5",
                  "--warmup", "1", "ssl.modality=joint", "ssl.other_modality=motion",
                  "schedule.modalities=joint,motion", "optim.batch_size=32"),), _step),
    Measurement("bf16", "bf16 on this CPU, `tiny` preset",
                (("bench", "step", "--preset", "tiny", "--amp", "off,bf16", "--steps", "5", "--warmup", "1"),), _bf16),
    Measurement("decode", "decoding a UCF101 clip (RGB, 32 frames at short side 128), one core",
                (("bench", "loader", "--videos", UCF + "v_Punch_g03_c01.avi", UCF + "v_Biking_g05_c02.avi",
                  "--clips", "40"),), _decode),
    Measurement("flow-speed", "optical flow at 320 x 240, fields per second on one core (two UCF101 videos)",
                (("bench", "flow", "--videos", UCF + "v_Punch_g03_c01.avi", "--device", "cpu"),
                 ("bench", "flow", "--videos", UCF + "v_Biking_g05_c02.avi", "--device", "cpu")), _flow_speed),
    Measurement("flow-accuracy", "optical flow end-point error on real UCF101 frames warped by a known smooth flow",
                (("bench", "flow-accuracy", "--videos", UCF + "v_Punch_g03_c01.avi", UCF + "v_Biking_g05_c02.avi"),),
                _flow_accuracy),
    Measurement("loop", "writing the `cpu` synthetic data, then the training loop on it (`cpu` preset, 120 steps)",
                (("data", "synth", "--size", "cpu", "--out", "{scratch}/cpu"),
                 ("pretrain", "--preset", "cpu", "data.root={scratch}/cpu", "run.max_steps=120", "run.knn_every=0",
                  "--run-dir", "{scratch}/loop")), _loop),
)
BY_NAME = {m.name: m for m in MEASUREMENTS}


def realdata_root() -> Path:
    """``$CMMC_REALDATA``, else ``../shared/realdata`` beside the checkout."""
    return Path(os.environ.get("CMMC_REALDATA", ROOT.parent / "shared" / "realdata"))


def shown(argv: Sequence[str]) -> str:
    """A command as the README shows it (``{realdata}`` as its default, ``{scratch}`` as ``$TMP``)."""
    return "cmmc " + " ".join(argv).replace("{realdata}", "../shared/realdata").replace("{scratch}", "$TMP")


def measure(m: Measurement, into: str | Path = BENCH, realdata: str | Path | None = None) -> Path:
    """Run ``m``'s commands (``python -m cmmc_lib.cli ... --json``, each in a fresh process) and
    write ``into/<name>.json``. A failing command raises with its last line of stderr; nothing is
    written then."""
    realdata = Path(realdata) if realdata else realdata_root()
    results, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cmmc-measure-") as scratch:
        for argv in m.commands:
            args = [a.format(realdata=realdata, scratch=scratch) for a in argv]
            done = subprocess.run([sys.executable, "-m", "cmmc_lib.cli", *args, "--json"], capture_output=True,
                                  text=True, cwd=ROOT)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
                raise RuntimeError(f"{m.name}: `{shown(argv)}` failed (exit {done.returncode}): {last}")
            results.append(json.loads(done.stdout))
        # the results name this machine's folders; they are kept as the README shows the commands
        text = json.dumps(results).replace(str(realdata), "../shared/realdata").replace(scratch, "$TMP")
        results = json.loads(text)
    record = {"name": m.name, "what": m.what, "commands": [shown(a) for a in m.commands], "results": results,
              "commit": source_commit(), "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "wall_s": round(time.perf_counter() - t0, 1)}
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    path = into / f"{m.name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def table(into: str | Path = BENCH, study_run: str | Path = STUDY_RUN) -> str:
    """The README's markdown table from the files under ``into`` (and the study's ``run.json``), with a
    line naming the measurements not made in this checkout."""
    into, lines, missing = Path(into), ["| what | figure | command (commit, date) |", "|---|---|---|"], []
    for m in MEASUREMENTS:
        path = into / f"{m.name}.json"
        if not path.is_file():
            missing.append(m.name)
            continue
        rec = json.loads(path.read_text())
        commands = " then ".join(f"`{c}`" for c in rec["commands"])
        lines.append(f"| {rec['what']} | {m.figure(rec['results'])} | {commands} ({rec['commit']}, {rec['date']}) |")
    study_run = Path(study_run)
    if study_run.is_file():
        run = json.loads(study_run.read_text())
        lines.append(f"| the study: gates + ablation, {len(run['seeds'])} seeds, `{run['preset']}` preset | "
                     f"{run['wall_s']:.0f} s wall end to end, {run['workers']} worker process(es) x {run['threads']} "
                     f"thread(s) (`docs/results/study/ablation/run.json`) | `{run['command']}` ({run['commit']}) |")
    machines = {json.dumps(json.loads(p.read_text())["machine"], sort_keys=True) for p in sorted(into.glob("*.json"))}
    head = ""
    if machines:
        mach = [json.loads(x) for x in machines]
        head = ("Measured on " + "; ".join(f"{x['cores']} cores ({x['cpu']}), torch {x['torch']}" for x in mach)
                + ", one measurement at a time on an otherwise idle machine "
                  "(`python -m cmmc_lib.bench.measured run`).\n\n")
    tail = f"\nNot measured in this checkout: {', '.join(missing)}.\n" if missing else ""
    return head + "\n".join(lines) + "\n" + tail


def write_readme(readme: str | Path, into: str | Path = BENCH) -> bool:
    """Replace the README's table between :data:`README_BEGIN` and :data:`README_END`; True when it changed."""
    return replace_between_markers(readme, README_BEGIN, README_END, table(into))


def readme_block(readme: str | Path) -> str:
    """What the README holds between its markers now."""
    return between_markers(readme, README_BEGIN, README_END)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["readme"] and len(args) == 2:
        print(f"{args[1]}: {'updated' if write_readme(args[1]) else 'already up to date'}")
        return 0
    if args[:1] == ["run"]:
        names = args[1:] or list(BY_NAME)
        unknown = [n for n in names if n not in BY_NAME]
        if unknown:
            print(f"unknown measurement(s) {unknown}; choose from {list(BY_NAME)}", file=sys.stderr)
            return 2
        for i, name in enumerate(names, 1):
            print(f"[{i}/{len(names)}] {name} ...", file=sys.stderr, flush=True)
            path = measure(BY_NAME[name])
            print(f"[{i}/{len(names)}] {name}: {json.loads(path.read_text())['wall_s']} s -> {path}", file=sys.stderr,
                  flush=True)
        return 0
    print("usage: python -m cmmc_lib.bench.measured run [NAME...] | readme README.md", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
