"""The course's reference results as the repository ships them (``docs/results/course``): the
tables ``cmmc course --profile cpu`` computed (the ablation and the comparison over the profile's
seeds, the two pose tables) and its per-lesson times, read back so that a lesson run at the
``tiny`` profile can show them beside its own numbers, each labelled with its scale, seeds,
spread and the command, commit and machine that wrote it.

Layout (each folder as the command wrote it, only the run folders left out):

* ``ablation/``: ``results.jsonl`` (one row per seed, variant, protocol and dataset, each with
  its command, commit, machine and seconds), ``ablation.run.json`` / ``comparison.run.json``
  (the call: seeds, chance levels, wall time), ``ablation.md`` / ``comparison.md`` and their CSVs;
* ``pose-skeleton/``, ``pose-rgb-pose/``: ``results.jsonl``, ``run.json``, ``table.md``;
* ``course.json``: what ``cmmc course`` wrote (each lesson's status and seconds).

:func:`cmmc_lib.ablation.rebuild_table` and :func:`cmmc_lib.pose_study.rebuild_table` write every
shipped table again from these files (``tests/test_results.py``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from .ablation import TABLES, aggregate
from .files import read_jsonl
from .pose_study import aggregate as pose_aggregate
from .tables import fmt_cell, row_label

#: where a checkout keeps the course's shipped results (absent from an installed wheel)
COURSE = Path(__file__).resolve().parents[1] / "docs" / "results" / "course"
#: route -> its folder under :data:`COURSE`
POSE_FOLDERS = {"skeleton": "pose-skeleton", "rgb+pose": "pose-rgb-pose"}


def scale_label(profile: str) -> str:
    """How to read a run's numbers at ``profile``: the tiny profile is a smoke test, not a measurement."""
    return "tiny profile: a smoke test, not a measurement" if profile == "tiny" else f"{profile} profile"


def provenance(run: dict[str, Any]) -> str:
    """Where shipped numbers come from, in one line: command, commit, seeds, machine, compute time."""
    m = run.get("machine") or {}
    seconds = run.get("rows_s") or run.get("wall_s") or 0.0
    return (f"`{run['command']}` at commit {run['commit']}, training seeds {run['seeds']}; "
            f"{m.get('cores', '?')} cores ({m.get('cpu', '?')}), torch {m.get('torch', '?')}; "
            f"{seconds / 60:.1f} min of training and evaluation")


def load_table(table: str, out: str | Path = COURSE / "ablation") -> dict[str, Any] | None:
    """A shipped table of :mod:`cmmc_lib.ablation` (``ablation`` or ``comparison``): ``{"run":
    <table>.run.json, "rows": aggregated rows, "chance": chance levels, "seeds", "provenance": one
    line}``, or None when the checkout ships none (an installed package)."""
    out, spec = Path(out), TABLES[table]
    run_file = out / f"{table}.run.json"
    if not run_file.is_file():
        return None
    run = json.loads(run_file.read_text())
    records = [r for r in read_jsonl(out / "results.jsonl") if r["seed"] in run["seeds"] and r["method"] in spec.variants]
    return {"run": run, "rows": aggregate(records, spec), "chance": run["chance"], "seeds": run["seeds"],
            "provenance": provenance(run)}


def load_pose(route: str, out: str | Path | None = None) -> dict[str, Any] | None:
    """A shipped pose table in the shape :func:`cmmc_lib.pose_study.pose_study` returns (``route``,
    ``seeds``, ``records``, ``rows``) plus ``run`` and ``provenance``; None when none is shipped."""
    out = Path(out) if out is not None else COURSE / POSE_FOLDERS[route]
    if not (out / "run.json").is_file():
        return None
    run = json.loads((out / "run.json").read_text())
    records = [r for r in read_jsonl(out / "results.jsonl") if r["seed"] in set(run["seeds"])]
    return {"route": run["route"], "seeds": run["seeds"], "records": records,
            "rows": pose_aggregate(records, run["route"]), "run": run, "provenance": provenance(run)}


def course_times(path: str | Path = COURSE / "course.json") -> dict[str, Any] | None:
    """The shipped course run's ``{"profile", "seconds", "lessons": {stem: seconds}}``, or None."""
    path = Path(path)
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    return {"profile": summary["profile"], "seconds": summary["seconds"],
            "lessons": {Path(n["notebook"]).stem: n["seconds"] for n in summary["notebooks"]}}


def beside(rows: list[dict[str, Any]], ref: dict[str, Any] | None, cells: Sequence[str], profile: str,
           methods: Sequence[str] | None = None, streams: Sequence[str] = ("rgb", "flow", "two-stream"),
           key: str = "method") -> str:
    """This run's rows beside the reference's, as a markdown table in %: one line per stream,
    method and cell, each side mean ± spread with what the spread is (std over seeds, or one
    seed's binomial SE) and its seeds; the header names both scales. ``key``: the rows' field
    that names a variant (``method`` in the ablation tables, ``variant`` in the pose tables)."""
    if ref is None:
        return "(no reference results in this checkout: `cmmc course --profile cpu` writes them)"
    mine = {(r["stream"], r[key]): r for r in rows}
    theirs = {(r["stream"], r[key]): r for r in ref["rows"]}
    names = {r[key]: r["name"] for r in [*ref["rows"], *rows]}
    order = list(methods) if methods is not None else list(dict.fromkeys(r[key] for r in ref["rows"]))
    lines = [f"| stream | method | cell | this run ({scale_label(profile)}) | reference (cpu profile, "
             f"seeds {ref['seeds']}) |", "|---|---|---|---|---|"]
    for stream in streams:
        for method in order:
            for cell in cells:
                a, b = _cell(mine.get((stream, method)), cell), _cell(theirs.get((stream, method)), cell)
                if a is None and b is None:
                    continue
                lines.append(f"| {stream} | {names.get(method, method)} | {cell.replace('/', ' ')} | "
                             f"{_side(a)} | {_side(b)} |")
    return "\n".join(lines) + "\n"


def _cell(row: dict[str, Any] | None, cell: str) -> dict[str, Any] | None:
    if row is None:
        return None
    return row.get(cell) if cell in row else (row if cell == "top1" and "values" in row else None)


def _side(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return "-"
    seeds = summary.get("seeds")
    return f"{fmt_cell(summary)} ({row_label([summary])}{'' if not seeds else f', seeds {list(seeds)}'})"
