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
* ``course.json`` and ``course-tiny.json``: what ``cmmc course`` wrote for the long and the quick
  course run (each lesson's status and seconds, the commit and the machine).

:func:`cmmc_lib.ablation.rebuild_table` and :func:`cmmc_lib.pose_study.rebuild_table` write every
shipped table again from these files (``tests/test_results.py``). To ship a new course run's
results: ``python -m cmmc_lib.reference ship outputs/course`` (:func:`ship`), then
``python -m cmmc_lib.reference readme README.md`` (:func:`write_readme`).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

from .ablation import TABLES, aggregate, conclusion_lines, rebuild_table, table_records
from .files import between_markers, read_jsonl, replace_between_markers
from .pose_study import aggregate as pose_aggregate
from .pose_study import conclusion_lines as pose_conclusion_lines
from .pose_study import rebuild_table as rebuild_pose_table
from .tables import fmt_cell, row_label

#: where a checkout keeps the course's shipped results (absent from an installed wheel)
COURSE = Path(__file__).resolve().parents[1] / "docs" / "results" / "course"
#: route -> its folder under :data:`COURSE`
POSE_FOLDERS = {"skeleton": "pose-skeleton", "rgb+pose": "pose-rgb-pose"}
#: profile -> the file under :data:`COURSE` with its timed course run (what ``cmmc course`` wrote)
TIMES = {"tiny": "course-tiny.json", "cpu": "course.json"}
#: shipped table -> (its folder under :data:`COURSE`, the course's run folder under ``<out>/runs``, the
#: files the commands wrote there); the ablation and the comparison share one results file
SHIPPED = {"ablation": ("ablation", "ablation", ("results.jsonl", "ablation.run.json", "ablation.md", "ablation.csv")),
           "comparison": ("ablation", "ablation", ("results.jsonl", "comparison.run.json", "comparison.md",
                                                   "comparison.csv")),
           "pose-skeleton": ("pose-skeleton", "09-skeleton", ("results.jsonl", "run.json", "table.md")),
           "pose-rgb-pose": ("pose-rgb-pose", "09-rgb-pose", ("results.jsonl", "run.json", "table.md"))}


def scale_label(profile: str) -> str:
    """How to read a run's numbers at ``profile``: the tiny profile is a smoke test, not a measurement."""
    return "tiny profile: a smoke test, not a measurement" if profile == "tiny" else f"{profile} profile"


def provenance(run: dict[str, Any], records: Sequence[dict[str, Any]] = ()) -> str:
    """Where shipped numbers come from, in one line: the command(s) that wrote the rows, commit(s),
    training seeds (and the transfer set's data seed when the run names one), machine (and its
    workers x threads when the run names them), and the rows' training and evaluation time (else
    the command's wall time). Every shipped table, the course's and the study's, says it this way."""
    m = run.get("machine") or {}
    commands = list(dict.fromkeys(r["command"] for r in records if r.get("command"))) or [run["command"]]
    commits = list(dict.fromkeys(r["commit"] for r in records if r.get("commit"))) or [run["commit"]]
    seeds = f"training seeds {run['seeds']}"
    if run.get("transfer_seed") is not None:
        seeds += f", transfer set data seed {run['transfer_seed']}"
    where = f"{m.get('cores', '?')} cores ({m.get('cpu', '?')}), torch {m.get('torch', '?')}"
    if run.get("workers"):
        where += f", {run['workers']} worker(s) x {run.get('threads', '?')} thread(s)"
    when = (f"{run['rows_s'] / 60:.1f} min of training and evaluation" if run.get("rows_s")
            else f"{run.get('wall_s', 0.0) / 60:.1f} min wall")
    return f"{', '.join(f'`{c}`' for c in commands)} at commit {', '.join(commits)}, {seeds}; {where}; {when}"


def _profile(out: Path) -> str:
    """The profile of the course run whose results sit in ``out`` (its ``course.json``), else cpu."""
    summary = out.parent / "course.json"
    return json.loads(summary.read_text()).get("profile", "cpu") if summary.is_file() else "cpu"


def load_table(table: str, out: str | Path = COURSE / "ablation") -> dict[str, Any] | None:
    """A shipped table of :mod:`cmmc_lib.ablation` (``ablation`` or ``comparison``): ``{"run":
    <table>.run.json, "rows": aggregated rows, "chance": chance levels, "seeds", "provenance": one
    line}``, or None when the checkout ships none (an installed package)."""
    out, spec = Path(out), TABLES[table]
    run_file = out / f"{table}.run.json"
    if not run_file.is_file():
        return None
    run = json.loads(run_file.read_text())
    records = table_records(read_jsonl(out / "results.jsonl"), spec, run["seeds"])
    return {"run": run, "rows": aggregate(records, spec), "chance": run["chance"], "seeds": run["seeds"],
            "profile": _profile(out), "provenance": provenance(run, records)}


def load_pose(route: str, out: str | Path | None = None) -> dict[str, Any] | None:
    """A shipped pose table in the shape :func:`cmmc_lib.pose_study.pose_study` returns (``route``,
    ``seeds``, ``records``, ``rows``) plus ``run`` and ``provenance``; None when none is shipped."""
    out = Path(out) if out is not None else COURSE / POSE_FOLDERS[route]
    if not (out / "run.json").is_file():
        return None
    run = json.loads((out / "run.json").read_text())
    records = [r for r in read_jsonl(out / "results.jsonl") if r["seed"] in set(run["seeds"])]
    return {"route": run["route"], "seeds": run["seeds"], "records": records,
            "rows": pose_aggregate(records, run["route"]), "run": run, "profile": _profile(out),
            "provenance": provenance(run, records)}


def course_times(path: str | Path = COURSE / "course.json") -> dict[str, Any] | None:
    """A shipped course run's ``{"profile", "seconds", "lessons": {stem: seconds}, "machine",
    "since_make"}`` (the machine from ``course.json``, else from the rows of the tables beside it;
    ``since_make``: seconds from ``make course``'s start, install included, when make ran it), or None."""
    path = Path(path)
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    machine = summary.get("machine")
    if machine is None and (path.parent / "ablation" / "ablation.run.json").is_file():
        machine = json.loads((path.parent / "ablation" / "ablation.run.json").read_text()).get("machine")
    return {"profile": summary["profile"], "seconds": summary["seconds"], "machine": machine or {},
            "since_make": summary.get("since_make_s"),
            "lessons": {Path(n["notebook"]).stem: n["seconds"] for n in summary["notebooks"]}}


def run_time_line(lesson: str, into: str | Path = COURSE) -> str:
    """What ``lesson`` (its stem, ``03_mixup``) took when ``cmmc course`` ran the whole course, at
    each profile shipped (:data:`TIMES`), for a lesson's header."""
    parts, cores = [], None
    for profile, name in TIMES.items():
        times = course_times(Path(into) / name)
        if times and lesson in times["lessons"]:
            parts.append(f"{profile} {_minutes(times['lessons'][lesson])}")
            cores = cores or times["machine"].get("cores")
    if not parts:
        return "run time: not measured in this checkout (`docs/results/course` holds the course's timed runs)"
    where = f" on {cores} CPU cores" if cores else ""
    return (f"run time of this lesson when `cmmc course` ran all nine in a row{where}: {', '.join(parts)} "
            "(a lesson that trains includes its training; later lessons reuse it)")


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
    lines = [f"| stream | method | cell | this run ({scale_label(profile)}) | reference "
             f"({label(ref)}) |", "|---|---|---|---|---|"]
    for stream in streams:
        for method in order:
            for cell in cells:
                a, b = _cell(mine.get((stream, method)), cell), _cell(theirs.get((stream, method)), cell)
                if a is None and b is None:
                    continue
                lines.append(f"| {stream} | {names.get(method, method)} | {cell.replace('/', ' ')} | "
                             f"{_side(a)} | {_side(b)} |")
    return "\n".join(lines) + "\n"


def label(ref: dict[str, Any]) -> str:
    """The reference's scale in a few words: ``cpu profile, training seeds [0, 1, 2]``."""
    return f"{ref.get('profile', 'cpu')} profile, training seeds {ref['seeds']}"


def _cell(row: dict[str, Any] | None, cell: str) -> dict[str, Any] | None:
    if row is None:
        return None
    return row.get(cell) if cell in row else (row if cell == "top1" and "values" in row else None)


def _side(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return "-"
    seeds = summary.get("seeds")
    return f"{fmt_cell(summary)} ({row_label([summary])}{'' if not seeds else f', seeds {list(seeds)}'})"


def ship(course_out: str | Path, into: str | Path = COURSE) -> dict[str, list]:
    """Copy what a ``cmmc course --out course_out`` run wrote into ``into`` (never the run folders):
    at the ``cpu`` profile each table of :data:`SHIPPED` that is finished (:func:`finished`), its rows
    and run record unchanged and its markdown (and CSV) rendered again from them by this checkout's
    code, and the run's ``course.json`` (as :data:`TIMES` names it) once the course ran every lesson.
    Returns ``{"copied": paths, "waiting": what is not finished yet}``: a long course can be shipped
    table by table while it runs."""
    course_out, into = Path(course_out), Path(into)
    copied, waiting = [], []
    profile = _course_profile(course_out)
    if profile not in TIMES:
        raise ValueError(f"no reference is kept for profile {profile!r}")
    if profile == "cpu":
        for table, (folder, source, names) in SHIPPED.items():
            if not finished(course_out / "runs" / source, table):
                waiting.append(table)
                continue
            (into / folder).mkdir(parents=True, exist_ok=True)
            copied += [Path(shutil.copy2(course_out / "runs" / source / n, into / folder / n)) for n in names]
            if table in TABLES:
                rebuild_table(into / folder, table, into / folder)
            else:
                rebuild_pose_table(into / folder, into / folder)
    summary = course_out / "course.json"
    whole = summary.is_file() and (lambda s: s["ok"] == len(s["notebooks"]) >= 9)(json.loads(summary.read_text()))
    if whole:
        into.mkdir(parents=True, exist_ok=True)
        copied.append(Path(shutil.copy2(summary, into / TIMES[profile])))
    else:
        waiting.append("course.json (the course has not run all nine lessons)")
    return {"copied": copied, "waiting": waiting}


def finished(folder: Path, table: str) -> bool:
    """Whether ``folder`` holds ``table`` finished: a pose study's ``run.json``, or a ``<table>.run.json``
    that lists every variant of the table and nothing unfinished (the lessons fill the ablation
    variant by variant)."""
    if table not in TABLES:
        return (folder / "run.json").is_file()
    run_file = folder / f"{table}.run.json"
    if not run_file.is_file():
        return False
    run = json.loads(run_file.read_text())
    return run["variants"] == list(TABLES[table].variants) and not run["unfinished"]


def _course_profile(course_out: Path) -> str:
    """The profile of a course run, from its ``course.json`` or, while it runs, its rows' command."""
    if (course_out / "course.json").is_file():
        return json.loads((course_out / "course.json").read_text())["profile"]
    for source in dict.fromkeys(source for _, source, _ in SHIPPED.values()):
        for row in read_jsonl(course_out / "runs" / source / "results.jsonl"):
            if row.get("command", "").startswith("cmmc course --profile "):
                return row["command"].split()[3]
    raise ValueError(f"{course_out} holds no course run (no course.json, no table rows)")


#: the markers of the README's generated section (:func:`write_readme`)
README_BEGIN = ("<!-- reference:begin (written by `python -m cmmc_lib.reference readme README.md` "
                "from docs/results/course) -->")
README_END = "<!-- reference:end -->"


def readme_section(into: str | Path = COURSE) -> str:
    """The README's account of the shipped course runs, computed from their files: how long each
    lesson took, each shipped table as the command wrote it, and every ablation variant against MoCo
    in the words of its paired 95 % interval; a line saying what is not shipped yet."""
    into = Path(into)
    parts, missing = [], []
    for profile, name in TIMES.items():
        times = course_times(into / name)
        if times is None:
            missing.append(f"the {profile} course's end-to-end time")
            continue
        per_lesson = ", ".join(f"{stem[:2]} {_minutes(sec)}" for stem, sec in times["lessons"].items())
        command = "`make course`" if times["profile"] == "tiny" else f"`make course PROFILE={times['profile']}`"
        took = f"the nine lessons in {_minutes(times['seconds'])}"
        if times["since_make"] is not None:
            took = f"{_minutes(times['since_make'])} with the install, {took}"
        parts += [f"* {command}: {took} on {times['machine'].get('cores', '?')} CPU cores "
                  f"(`docs/results/course/{name}`; per lesson: {per_lesson})."]
    for table, lessons in (("ablation", "lessons 03-05"), ("comparison", "lesson 08")):
        ref = load_table(table, into / "ablation")
        if ref is None:
            missing.append(f"the {table} table ({lessons})")
            continue
        parts += ["", f"**The {table}** ({lessons}; {ref['provenance']}):", "",
                  (into / "ablation" / f"{table}.md").read_text().strip()]
        if table == "ablation":
            parts += ["", "In words, each variant against MoCo paired by training seed (95 % interval), linear "
                      "probe on the transfer set:", "", "```",
                      *conclusion_lines(ref["rows"], ref["chance"], ("linear/transfer",)),
                      "```"]
    for route, folder in POSE_FOLDERS.items():
        pose = load_pose(route, into / folder)
        if pose is None:
            missing.append(f"the pose table, {route} (lesson 09)")
            continue
        parts += ["", f"**Pose, {route}** (lesson 09; {pose['provenance']}):", "",
                  (into / folder / "table.md").read_text().strip(), "",
                  "In words, paired by training seed (95 % interval):", "", "```",
                  *pose_conclusion_lines(pose), "```"]
    if missing:
        parts += ["", f"Not shipped in this checkout yet: {', '.join(missing)}."]
    return "\n".join(parts).lstrip("\n") + "\n"


def write_readme(readme: str | Path, into: str | Path = COURSE) -> bool:
    """Replace the README's section between :data:`README_BEGIN` and :data:`README_END` with
    :func:`readme_section`; True when the file changed."""
    return replace_between_markers(readme, README_BEGIN, README_END, readme_section(into))


def readme_block(readme: str | Path) -> str:
    """What the README holds between its markers now."""
    return between_markers(readme, README_BEGIN, README_END)


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


if __name__ == "__main__":
    # python -m cmmc_lib.reference ship outputs/course | python -m cmmc_lib.reference readme README.md
    if len(sys.argv) != 3 or sys.argv[1] not in ("ship", "readme"):
        sys.exit("usage: python -m cmmc_lib.reference ship COURSE_OUT | readme README.md")
    if sys.argv[1] == "ship":
        shipped = ship(sys.argv[2])
        print("\n".join(str(p) for p in shipped["copied"]) or "nothing finished to ship yet")
        if shipped["waiting"]:
            print("not finished yet: " + ", ".join(shipped["waiting"]))
    else:
        print(f"{sys.argv[2]}: {'updated' if write_readme(sys.argv[2]) else 'already up to date'}")
