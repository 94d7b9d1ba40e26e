"""``cmmc study ablate``: the gates and the ablation on one setting, for several training seeds,
as one resumable command with one progress bar.

For each training seed (a job; ``workers`` seeds train at once, each in a process of its own with
``threads`` threads):

1. the gates (:mod:`.gates`): G1 (supervised RGB, ``<runs>/seed<S>/supervised-rgb``), G2 and G3
   on the **stage-1 MoCo networks the ablation starts from** (``<runs>/seed<S>/stage1-flow``,
   ``stage1-rgb``: trained once, probed by the gates, continued by every variant), and the
   premise diagnostic;
2. the ``study`` table of :mod:`cmmc_lib.ablation` (MoCo, + mixup, + CM mixup, + CM cutmix, CM
   cutmix w/o alternate training; RGB, flow, two-stream), each variant's stage 2 trained by
   :func:`cmmc_lib.pipeline.run_pipeline` and evaluated (linear probe and retrieval, all test
   clips and the motion-only ones) on the pre-training set and the transfer set.

Files under ``out``: ``gates.jsonl`` (one row per gate and seed, as ``cmmc study gates`` writes
them, marked ``"source": "study ablate"``), ``ablation/results.jsonl`` (one row per variant,
protocol, dataset and seed, each with its command, commit and wall time), ``ablation/study.csv``
and ``study.md`` (mean ± spread over seeds, every variant minus MoCo paired by seed with its 95 %
interval), ``ablation/curves.json`` (kNN R@1 per epoch, per variant and seed) and
``ablation/run.json`` (the command, commit, seeds, machine and wall time of the last call).
Training lives in run folders under ``runs`` and is reused, resumed or continued by the same
command; rows already written are not computed again.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Sequence

import torch

from ..ablation import (TABLES, aggregate, chance_levels, epoch_curves, evaluate_variant, plan_ablation,
                        write_tables)
from ..config import preset
from ..files import append_jsonl, atomic_write, read_jsonl
from ..jobs import run_jobs
from ..pipeline import run_pipeline, stage1_stages
from ..provenance import machine, source_commit
from ..runs import FolderLock
from .gates import (gate_gap, gate_supervised, gate_teacher, premise_diagnostic, prepare_data,
                    transfer_overrides)
from .report import gates_markdown
from .run import ROWS, _row

TABLE = "study"
SOURCE = "study ablate"
PROTOCOLS = ("linear", "retrieval")
DATASETS = ("pretrain", "transfer")


def run_study(preset_name: str = "gates", seeds: Sequence[int] = range(5), out: str | Path = "docs/results/study",
              runs: str | Path = "runs/study-ablate", transfer_seed: int = 1234, workers: int = 2,
              threads: int = 1, overrides: Sequence[str] = (), progress: bool = True,
              command: str | None = None) -> dict:
    """The gates and the study table for ``seeds`` (see the module docstring). Returns ``table``
    (the aggregated rows), ``gates`` (this call's seeds' gate rows), ``files``, ``seconds`` and
    ``interrupted``; Ctrl-C stops the workers, keeps what finished and raises KeyboardInterrupt."""
    seeds, out, runs = [int(s) for s in seeds], Path(out), Path(runs)
    if not seeds:
        raise ValueError("--seeds must name at least one training seed")
    base = preset(preset_name, list(overrides))
    if transfer_seed is None or transfer_seed < 0 or transfer_seed == base.data.synthetic_seed:
        raise ValueError(f"the study reports every number on a transfer set too: --transfer-seed must be a data seed "
                         f">= 0 other than the pre-training's ({base.data.synthetic_seed}), got {transfer_seed}")
    transfer = transfer_overrides(base.data, transfer_seed)
    started = time.perf_counter()
    with FolderLock(runs, "study folder"):
        prepare_data(base.data)
        prepare_data(dataclasses.replace(base.data, **transfer))
        table_dir = out / "ablation"
        results, gates_path = table_dir / "results.jsonl", out / ROWS
        setting = (preset_name, overrides, transfer_seed)
        records, gate_rows = study_rows(out, seeds, *setting)
        gates_done = {(r["seed"], r["gate"]) for r in gate_rows}
        evals_done = {(r["seed"], r["method"], r["protocol"], r["dataset"]) for r in records}
        jobs = [(preset_name, tuple(overrides), seed, str(runs), transfer_seed, threads, command,
                 sorted(g for s, g in gates_done if s == seed),
                 sorted((m, p, d) for s, m, p, d in evals_done if s == seed)) for seed in seeds]
        unfinished: list = []

        def keep(result: dict) -> None:            # here, in this process, as each seed finishes
            for row in result["gates"]:
                append_jsonl(gates_path, row)
            for record in result["records"]:
                append_jsonl(results, record)
            unfinished.extend(result["unfinished"])

        interrupted = run_jobs(study_seed, jobs, keep, workers=workers, progress=progress, desc="study",
                               unit="seed")
        records, gate_rows = study_rows(out, seeds, *setting)
        spec = TABLES[TABLE]
        rows = aggregate(records, spec)
        chance = chance_levels(base, transfer)
        files = write_tables(rows, records, spec, table_dir, base, transfer, chance) if records else {}
        if gate_rows:
            atomic_write(table_dir / "gates.md", lambda tmp: tmp.write_text(gates_markdown(gate_rows)))
            files["gates_markdown"] = str(table_dir / "gates.md")
        plans = plan_ablation(base, seeds, runs, TABLE, curves=False)
        curves = {name: {str(s): pts for s, pts in by_seed.items()} for name, by_seed in epoch_curves(plans).items()}
        _write_json(table_dir / "curves.json", curves)
        seconds = time.perf_counter() - started
        summary = {"command": command, "commit": source_commit(), "preset": preset_name, "overrides": list(overrides),
                   "seeds": seeds, "transfer_seed": transfer_seed, "workers": workers, "threads": threads,
                   "machine": machine(), "wall_s": round(seconds, 1), "interrupted": interrupted,
                   "unfinished": unfinished, "chance": chance}
        _write_json(table_dir / "run.json", summary)
    if interrupted:
        raise KeyboardInterrupt("the study stopped; run the same command again to continue")
    return {"table": rows, "gates": gate_rows, "files": {**files, "gates": str(gates_path),
                                                         "curves": str(table_dir / "curves.json")},
            "seconds": seconds, "interrupted": False, "unfinished": unfinished, "out": str(out)}


def study_seed(preset_name: str, overrides: tuple, seed: int, runs: str, transfer_seed: int, threads: int,
               command: str | None, gates_done: Sequence[str], evals_done: Sequence[tuple]) -> dict:
    """One seed's share of :func:`run_study` (a job, maybe in a worker process): the gates not yet
    in ``gates_done``, then the study table's pipelines and the evaluations not in ``evals_done``.
    Returns ``{"gates": rows, "records": evaluation rows, "unfinished": [(seed, variant)]}``."""
    torch.set_num_threads(threads)
    cfg = preset(preset_name, [*overrides, f"run.seed={seed}"])
    transfer = transfer_overrides(cfg.data, transfer_seed)
    root = Path(runs) / f"seed{seed}"
    stage1 = stage1_stages(cfg, root)
    provenance = {"source": SOURCE, "command": command, "preset": preset_name, "overrides": list(overrides),
                  "transfer_seed": transfer_seed, "threads": threads, "machine": machine()}
    gates, done = [], {}
    for part in ("g1", "g2", "g3", "premise"):
        t0 = time.perf_counter()
        if part == "g1" or (part == "g3" and "g1" not in done):
            done["g1"] = gate_supervised(cfg, root / "supervised-rgb", transfer_seed)
        if part == "g2":
            done[part] = gate_teacher(stage1["flow"].cfg, stage1["flow"].run_dir, transfer_seed)
        elif part == "g3":
            done[part] = gate_gap(stage1["rgb"].cfg, stage1["rgb"].run_dir, done["g1"], transfer_seed)
        elif part == "premise":
            done[part] = premise_diagnostic(cfg, stage1["flow"].run_dir, stage1["rgb"].run_dir)
        if part not in gates_done:
            row = _row(part, done[part], time.perf_counter() - t0, cfg, preset_name, seed, transfer_seed,
                       overrides, command)
            gates.append({**row, **provenance})
    records, unfinished = [], []
    skip = {tuple(e) for e in evals_done}
    for plan in plan_ablation(cfg, [seed], runs, TABLE, curves=False):
        t0 = time.perf_counter()
        if not run_pipeline(plan.cfg, plan.root, plan.stage1_root)["finished"]:       # cut short (run.max_steps)
            unfinished.append((seed, plan.variant.name))
            continue
        trained = time.perf_counter() - t0
        for protocol in PROTOCOLS:
            for dataset in DATASETS:
                if (plan.variant.name, protocol, dataset) in skip:
                    continue
                t1 = time.perf_counter()
                record = evaluate_variant(plan, protocol, dataset, transfer, "auto")
                records.append({**record, **provenance, "commit": source_commit(),
                                "train_s": round(trained, 1), "wall_s": round(time.perf_counter() - t1, 1)})
                trained = 0.0
    return {"gates": gates, "records": records, "unfinished": unfinished}


def _write_json(path: Path, value) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(value, indent=1) + "\n"))


def study_rows(out: str | Path, seeds: Sequence[int], preset_name: str, overrides: Sequence[str],
               transfer_seed: int) -> tuple[list[dict], list[dict]]:
    """The rows of one study setting under ``out`` for ``seeds``: its evaluation records
    (``ablation/results.jsonl``) and its gate rows (``gates.jsonl``, those ``cmmc study ablate``
    wrote)."""
    out, setting = Path(out), (preset_name, overrides, transfer_seed)
    records = [r for r in read_jsonl(out / "ablation" / "results.jsonl")
               if r["seed"] in seeds and _same_setting(r, *setting)]
    gates = [r for r in read_jsonl(out / ROWS)
             if r.get("source") == SOURCE and r["seed"] in seeds and _same_setting(r, *setting)]
    return records, gates


def _same_setting(row: dict, preset_name: str, overrides: Sequence[str], transfer_seed: int) -> bool:
    return (row.get("preset") == preset_name and list(row.get("overrides") or []) == list(overrides)
            and row.get("transfer_seed") == transfer_seed)


def rebuild_tables(out: str | Path, into: str | Path) -> dict[str, Path]:
    """Write the tables of a finished study again, into ``into``, from its files alone (``out``:
    ``ablation/run.json`` for the seeds, setting and chance levels, ``ablation/results.jsonl``,
    ``gates.jsonl``): a shipped table can be checked against the rows it says it came from.
    Returns ``{"study.md": path, "gates.md": path}``."""
    out, into = Path(out), Path(into)
    run = json.loads((out / "ablation" / "run.json").read_text())
    records, gate_rows = study_rows(out, run["seeds"], run["preset"], run["overrides"], run["transfer_seed"])
    spec = TABLES[TABLE]
    into.mkdir(parents=True, exist_ok=True)
    write_tables(aggregate(records, spec), records, spec, into, None, None, run["chance"])
    (into / "gates.md").write_text(gates_markdown(gate_rows))
    return {"study.md": into / f"{TABLE}.md", "gates.md": into / "gates.md"}
