"""The reference results the repository ships (``docs/results/``) are what their commands wrote: every
shipped table is rebuilt from its rows alone and must match, every row says where it came from
(command, commit, seeds, machine, wall time), and the README's results section is what the files say."""
from __future__ import annotations

import json

import pytest

from cmmc_lib import reference
from cmmc_lib.ablation import rebuild_table
from cmmc_lib.files import read_jsonl
from cmmc_lib.pose_study import rebuild_table as rebuild_pose_table
from cmmc_lib.study.ablate import rebuild_tables
from cmmc_lib.study.reference import REFERENCE, load_reference

STUDY = REFERENCE / "ablation"


def test_the_study_ships_its_tables_rows_and_provenance():
    for name in ("run.json", "results.jsonl", "study.md", "study.csv", "gates.md", "curves.json"):
        assert (STUDY / name).is_file(), name
    run = json.loads((STUDY / "run.json").read_text())
    assert run["command"].startswith("cmmc study ablate") and run["commit"] and len(run["seeds"]) >= 5
    assert run["machine"]["cores"] >= 1 and run["wall_s"] > 0 and not run["interrupted"]


def test_every_shipped_study_table_is_rebuilt_from_its_rows(tmp_path):
    rebuilt = rebuild_tables(REFERENCE, tmp_path)
    assert rebuilt["study.md"].read_text() == (STUDY / "study.md").read_text()
    assert rebuilt["gates.md"].read_text() == (STUDY / "gates.md").read_text()


@pytest.mark.parametrize("path", sorted(p.name for p in REFERENCE.glob("*.jsonl")) + ["ablation/results.jsonl"])
def test_every_row_says_where_it_came_from(path):
    rows = read_jsonl(REFERENCE / path)
    assert rows
    for row in rows:
        assert row["command"] and row["commit"] and "seed" in row and row.get("wall_s") is not None, row.get("gate")


def test_the_reference_read_back_has_every_variant_over_every_seed():
    ref = load_reference()
    seeds = ref["run"]["seeds"]
    for row in ref["rows"]:
        for cell in ("linear/transfer", "linear motion-only/transfer", "R@1 motion-only/pretrain"):
            assert row[cell]["seeds"] == seeds, (row["stream"], row["method"], cell)
    assert {(r["seed"], r["gate"]) for r in ref["gates"]} == {(s, g) for s in seeds
                                                             for g in ("g1", "g2", "g3", "premise")}


# ----------------------------------------------------------------------------- the course's reference
COURSE = reference.COURSE
README = COURSE.parents[2] / "README.md"
#: the tables of the long course shipped in this checkout (a long course ships table by table)
SHIPPED = [t for t, (folder, _, names) in reference.SHIPPED.items() if (COURSE / folder / names[1]).is_file()]


def test_the_long_course_ships_its_tables():
    assert SHIPPED, "docs/results/course holds none of the long course's tables"


@pytest.mark.parametrize("table", SHIPPED)
def test_every_row_of_a_shipped_course_table_says_where_it_came_from(table):
    folder, _, names = reference.SHIPPED[table]
    for name in names:
        assert (COURSE / folder / name).is_file(), f"{folder}/{name}"
    for row in read_jsonl(COURSE / folder / "results.jsonl"):
        assert row["command"].startswith("cmmc course --profile cpu (lesson "), row["command"]
        assert row["commit"] and row["machine"]["cores"] >= 1 and row["wall_s"] is not None and "train_s" in row


@pytest.mark.parametrize("table", SHIPPED)
def test_every_shipped_course_table_is_rebuilt_from_its_rows(table, tmp_path):
    folder, _, _ = reference.SHIPPED[table]
    if table in ("ablation", "comparison"):
        rebuilt = rebuild_table(COURSE / folder, table, tmp_path)
        assert rebuilt.read_text() == (COURSE / folder / f"{table}.md").read_text()
        assert (tmp_path / f"{table}.csv").read_text() == (COURSE / folder / f"{table}.csv").read_text()
        assert reference.finished(COURSE / folder, table)
        ref = reference.load_table(table)
        assert ref["profile"] == "cpu" and ref["seeds"] == ([0, 1, 2] if table == "ablation" else [0])
        for row in ref["rows"]:          # every variant, stream and cell measured on every seed
            for cell in (c for c in row if "/" in c):
                assert row[cell] is not None, (row["stream"], row["method"], cell)
                assert row[cell]["seeds"] == ref["seeds"], (row["stream"], row["method"], cell)
    else:
        rebuilt = rebuild_pose_table(COURSE / folder, tmp_path)
        assert rebuilt.read_text() == (COURSE / folder / "table.md").read_text()
        route = next(r for r, f in reference.POSE_FOLDERS.items() if f == folder)
        pose = reference.load_pose(route)
        assert pose["seeds"] == [0, 1, 2] and all(row["seeds"] == [0, 1, 2] for row in pose["rows"])


@pytest.mark.parametrize("profile", [p for p, name in reference.TIMES.items() if (COURSE / name).is_file()])
def test_a_shipped_course_run_took_each_lesson_in_measured_seconds(profile):
    times = reference.course_times(COURSE / reference.TIMES[profile])
    assert times["profile"] == profile and len(times["lessons"]) == 9 and times["seconds"] > 0
    assert all(0 < sec <= times["seconds"] for sec in times["lessons"].values())


def test_the_readmes_results_are_what_the_shipped_files_say():
    # refreshed by `python -m cmmc_lib.reference readme README.md` after `... ship outputs/course`
    assert reference.readme_block(README) == reference.readme_section()
