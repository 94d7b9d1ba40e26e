"""The poster's NTU-60 tables as one function: SkeletonCLR vs CMMC on skeletons, and MoCo RGB vs
CMMC RGB vs CMMC RGB + Pose, on whatever pose data a preset reads (NTU-60 at ``paper``, the
synthetic figures' poses at ``tiny`` / ``cpu``).

    result = pose_study("cpu", "skeleton", seeds=(0, 1, 2), out="runs/pose-cpu")

For each training seed, stage 1 (MoCo on each of the route's two modalities: the joint and motion
streams, or RGB and the pose heatmaps) is trained once and shared by the stage-2 variants
(:func:`cmmc_lib.pipeline.run_pipeline` with ``stage1_root``):

* ``moco``: stage 2 continues MoCo (SkeletonCLR on skeletons) for the same number of epochs;
* ``cmmc``: stage 2 is CMMC with alternate training (each network mixes in the other's frozen
  features: joint from motion and motion from joint; RGB from pose and pose from RGB).

Every final network is evaluated with its route's protocol (:data:`ROUTE_PROTOCOL`): skeletons
by SkeletonCLR's linear evaluation (``cmmc eval linear``, the two streams fused by averaging
logits), RGB and RGB + Pose by fine-tuning (``cmmc eval finetune``, CoCLR's protocol, fused by
averaging probabilities): the poster's NTU-60 RGB rows (87.5 / 88.1 / 91.4) sit among supervised
numbers, above its own supervised I3D row, which a linear probe on NTU-60 alone does not reach.
Accuracy after the last epoch. Each evaluation is appended to
``<out>/results.jsonl`` as it finishes, so a stopped study resumes; ``<out>/table.md`` holds mean
± spread (std over seeds; one seed: its binomial SE) beside the poster's NTU-60 rows (cross-subject /
cross-view), with chance. Logs, spreads and markdown are :mod:`cmmc_lib.tables`'s.
"""
from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from .config import SKELETON_SETTINGS, Config, preset
from .evaluate.chance import below_chance_note
from .evaluate.runner import evaluate_run
from .pipeline import final_networks, plan_pipeline, run_pipeline
from .runs import FolderLock
from .files import append_jsonl, atomic_write, read_jsonl
from .provenance import stamp
from .tables import (Summary, Variant, collect, dataset_note, fmt_cell, markdown_table as render_markdown,
                     paired_difference, spread_note, verdict)

log = logging.getLogger(__name__)

#: route -> (its two modalities, the name of the fused pair)
ROUTES = {"skeleton": ("joint", "motion"), "rgb+pose": ("rgb", "heatmap")}
#: route -> the evaluation protocol of its poster rows (``cmmc_lib.evaluate.runner.PROTOCOLS``)
ROUTE_PROTOCOL = {"skeleton": "linear", "rgb+pose": "finetune"}
#: The rows of a study: the stage-1 networks (evaluated for free), then the stage-2 variants. On
#: skeletons MoCo is SkeletonCLR, so the baseline's label names both; colours are the registry's.
STAGE1 = Variant("stage1", "moco", label="stage 1 only (MoCo, half the epochs)")
VARIANT_ROWS = {v.name: v for v in (STAGE1, Variant("moco", "moco", label="MoCo / SkeletonCLR"),
                                    Variant("cmmc", "cmmc", label="CMMC"))}
VARIANTS = ("moco", "cmmc")
NAMES = {name: v.label for name, v in VARIANT_ROWS.items()}
#: The poster's NTU-60 rows (cross-subject, cross-view), by (route, stream, variant).
#: Skeleton: "SkeletonCLR (baseline), J + M" and "CMMC (Skeleton)" for one network, "2s-CrosSCLR" and
#: "CMMC (2s-Skeleton)" for two streams. RGB + Pose: "MoCo (S3D) R", "CMMC R", "CMMC R+P" (the
#: cross-view decimals are cut off in our copy of the poster text).
POSTER = {
    ("skeleton", "joint", "moco"): ("SkeletonCLR (baseline), J+M", "70.1", "77.2"),
    ("skeleton", "joint", "cmmc"): ("CMMC (Skeleton), J+M", "72.5", "79.1"),
    ("skeleton", "two-stream", "moco"): ("2s-CrosSCLR", "74.5", "82.1"),
    ("skeleton", "two-stream", "cmmc"): ("CMMC (2s-Skeleton)", "75.2", "83.1"),
    ("rgb+pose", "rgb", "moco"): ("MoCo (S3D), R", "87.5", "91.x"),
    ("rgb+pose", "rgb", "cmmc"): ("CMMC, R", "88.1", "92.x"),
    ("rgb+pose", "two-stream", "cmmc"): ("CMMC, R+P", "91.4", "95.x"),
}

def study_config(preset_name: str, route: str, overrides: Sequence[str] = ()) -> Config:
    """The preset with the route's modalities (``schedule.modalities``) and ``overrides``; the RGB +
    Pose route reads the poses the skeleton route reads (``data.pose_noise`` of the skeleton face)."""
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; choose one of {', '.join(ROUTES)}")
    a, b = ROUTES[route]
    # the same pose in both routes: the skeleton face's simulated estimator also feeds the heatmaps
    pose_data = [o for o in SKELETON_SETTINGS[preset_name] if o.startswith("data.pose_")] if route == "rgb+pose" else []
    return preset(preset_name, [f"ssl.modality={a}", f"ssl.other_modality={b}", f"schedule.modalities={a},{b}",
                                *pose_data, *overrides])


def evaluate_pair(run_a: str | Path, run_b: str | Path, device: str = "cpu", epochs: int | None = None,
                  protocol: str = "linear") -> dict:
    """The evaluation (``linear`` or ``finetune``) of two networks and of their fusion:
    ``{modality: top1, ..., "two-stream": top1, "protocol", "num_test", "num_train", "num_classes",
    "fusion"}``."""
    kw = {} if epochs is None else {"epochs": epochs}
    res = evaluate_run(run_a, protocol, other_run=run_b, device=device, progress=False, append=False, **kw)
    out = {s["modality"]: s["top1"] for s in res["streams"]}
    out.update({"two-stream": res["fused"]["top1"], "protocol": protocol, "num_test": res["num_test"],
                "num_train": res["num_train"], "num_classes": len(res["classes"]), "fusion": res["fusion"],
                "seconds": round(res["seconds"], 1)})
    return out


def pose_study(preset_name: str, route: str, seeds: Sequence[int], out: str | Path,
               overrides: Sequence[str] = (), variants: Sequence[str] = VARIANTS, device: str = "cpu",
               stage1: bool = True, epochs: int | None = None, command: str | None = None) -> dict[str, Any]:
    """Train (or reuse) and evaluate every variant of the route for every seed; write the table.
    Each row carries where it came from (:func:`cmmc_lib.provenance.stamp`: ``command``, by default
    this process's, commit, machine) and its seconds (``train_s``, ``wall_s``); ``run.json``
    records the call (command, commit, seeds, machine, wall time), so :func:`rebuild_table` can
    write the table again from the files alone.

    ``stage1``: also evaluate the stage-1 networks (MoCo for half the epochs: free, they are trained
    anyway). ``epochs``: of the route's protocol (default: the preset's). Returns ``records`` (one per
    seed and variant), ``rows`` (aggregated), ``files``, ``seconds``.
    """
    with FolderLock(out, "study folder"):
        return _pose_study(preset_name, route, seeds, Path(out), overrides, variants, device, stage1, epochs,
                           stamp(command))


def _pose_study(preset_name, route, seeds, out: Path, overrides, variants, device, stage1, epochs, where):
    started = time.perf_counter()
    base = study_config(preset_name, route, overrides)
    a, b = ROUTES[route]
    results = out / "results.jsonl"
    done = {(r["seed"], r["variant"]) for r in read_jsonl(results)}
    for seed in seeds:
        for variant in variants:
            cfg = copy.deepcopy(base)
            cfg.run.seed, cfg.ssl.method = int(seed), VARIANT_ROWS[variant].method
            root, stage1_root = out / f"seed{seed}" / variant, out / f"seed{seed}"
            t0 = time.perf_counter()
            if not run_pipeline(cfg, root, stage1_root)["finished"]:        # cut short: nothing to evaluate
                log.warning("seed %d %s: a stage did not finish its schedule: not evaluated", seed, variant)
                continue
            train_s = time.perf_counter() - t0
            nets = final_networks(plan_pipeline(cfg, root, stage1_root))
            todo = [(variant, nets)]
            if stage1:
                todo.append((STAGE1.name, {m: (stage1_root / f"stage1-{m}", m) for m in (a, b)}))
            for name, nets_of in todo:
                if (seed, name) in done:
                    continue
                log.info("seed %d, %s: %s evaluation", seed, name, ROUTE_PROTOCOL[route])
                t0 = time.perf_counter()
                result = evaluate_pair(nets_of[a][0], nets_of[b][0], device, epochs, ROUTE_PROTOCOL[route])
                append_jsonl(results, {"seed": int(seed), "variant": name, "route": route, "preset": preset_name,
                                       **result, **where, "train_s": round(train_s, 1),
                                       "wall_s": round(time.perf_counter() - t0, 1)})
                train_s = 0.0                                   # counted on the variant's first new row
                done.add((seed, name))
    records = [r for r in read_jsonl(results) if r["seed"] in set(int(s) for s in seeds)]
    rows = aggregate(records, route)
    md = out / "table.md"
    md.write_text(markdown_table(rows, route, records, preset_name))
    seconds = time.perf_counter() - started
    rows_s = sum(r.get("train_s", 0) + r.get("wall_s", 0) for r in records)      # over every call
    run = {**where, "preset": preset_name, "route": route, "overrides": list(overrides),
           "seeds": [int(s) for s in seeds], "wall_s": round(seconds, 1), "rows_s": round(rows_s, 1)}
    atomic_write(out / "run.json", lambda tmp: tmp.write_text(json.dumps(run, indent=1) + "\n"))
    return {"out": str(out), "route": route, "seeds": list(seeds), "records": records, "rows": rows,
            "files": {"results": str(results), "markdown": str(md), "run": str(out / "run.json")},
            "seconds": seconds}


def rebuild_table(out: str | Path, into: str | Path) -> Path:
    """Write a finished study's ``table.md`` again into ``into`` from the files of ``out`` alone
    (``run.json`` for its route, preset and seeds, ``results.jsonl`` for its rows). Returns its path."""
    out, into = Path(out), Path(into)
    run = json.loads((out / "run.json").read_text())
    records = [r for r in read_jsonl(out / "results.jsonl") if r["seed"] in set(run["seeds"])]
    into.mkdir(parents=True, exist_ok=True)
    rows = aggregate(records, run["route"])
    (into / "table.md").write_text(markdown_table(rows, run["route"], records, run["preset"]))
    return into / "table.md"


def aggregate(records: list[dict[str, Any]], route: str) -> list[dict[str, Any]]:
    """One row per (stream, variant) measured: ``stream``, ``variant``, ``method`` (the registry's),
    ``name`` (the row's label) and the :meth:`~cmmc_lib.tables.Summary.to_dict` of its accuracy
    over seeds (values, seeds, mean, spread: std over seeds, or one seed's binomial SE)."""
    a, b = ROUTES[route]
    rows = []
    for stream in (a, b, "two-stream"):
        for variant in VARIANT_ROWS.values():
            summary = collect(records, stream, {"variant": variant.name})
            if summary is not None:
                rows.append({"stream": stream, "variant": variant.name, "method": variant.method,
                             "name": variant.label, **summary.to_dict()})
    return rows


def markdown_table(rows: list[dict[str, Any]], route: str, records: list[dict[str, Any]], preset_name: str) -> str:
    """The table in %, mean ± spread (and which spread), the poster's NTU-60 rows beside."""
    protocol = {"linear": "linear", "finetune": "fine-tune"}[ROUTE_PROTOCOL[route]]
    head = ["stream", "method", f"{protocol} top-1 (%)", "spread", "poster NTU-60 row", "CS", "CV"]
    body = [[row["stream"], row["name"], fmt_cell(row), row["label"],
             *POSTER.get((route, row["stream"], row["variant"]), ("-", "-", "-"))] for row in rows]
    notes = [spread_note(rows)]
    if records:
        r = records[0]
        notes.append(dataset_note(f"{preset_name} preset", r["num_test"], r["num_train"], r["num_classes"],
                                  {protocol: 1.0 / r["num_classes"]}, items="samples")
                     + f" {protocol.capitalize()} accuracy after its last epoch; two streams fused by averaging "
                       f"{r['fusion']}.")
    notes.append("The poster's numbers are NTU-60 (S3D / ST-GCN, hundreds of GPU-hours); on the synthetic data "
                 "the table shows the mechanics and the direction of effects, not numbers to match.")
    return render_markdown(head, body, notes)


def conclusion_lines(result: dict[str, Any]) -> list[str]:
    """The study's conclusion, computed: per stream, MoCo (SkeletonCLR on skeletons) against its own
    stage 1 and CMMC against MoCo, paired by seed in the words of the 95 % interval
    (:func:`cmmc_lib.tables.verdict`), and why a score below chance is there when one is."""
    rec = result["records"][0]
    chance, n = 1.0 / rec["num_classes"], rec["num_test"]
    rows = {(r["stream"], r["variant"]): Summary.from_dict(r) for r in result["rows"]}
    names = {r["variant"]: r["name"] for r in result["rows"]}
    lines = [f"{ROUTE_PROTOCOL[result['route']]} top-1 on {n} test samples, chance {chance:.3f}:"]
    for stream in dict.fromkeys(r["stream"] for r in result["rows"]):
        for variant, baseline in (("moco", "stage1"), ("cmmc", "moco")):
            a, b = rows.get((stream, variant)), rows.get((stream, baseline))
            if a is None or b is None:
                continue
            text = (f"  {stream}: {names[variant]} {fmt_cell(a, 1, 3)}, "
                    f"{verdict(paired_difference(a, b), names[baseline], scale=1.0, unit='', digits=3)}")
            note = below_chance_note(a.mean, n, chance)
            lines.append(text + (f" ({note})" if note else ""))
    return lines
