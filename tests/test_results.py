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


def test_the_course_ships_its_tables_rows_times_and_provenance():
    for folder, (_, names) in reference.SHIPPED.items():
        for name in names:
            assert (COURSE / folder / name).is_file(), f"{folder}/{name}"
    for profile, name in reference.TIMES.items():
        times = reference.course_times(COURSE / name)
        assert times["profile"] == profile and len(times["lessons"]) == 9 and times["seconds"] > 0, name
    folders = ["ablation", *reference.POSE_FOLDERS.values()]
    for path in (COURSE / folder / "results.jsonl" for folder in folders):
        rows = read_jsonl(path)
        assert rows, path
        for row in rows:
            assert row["command"].startswith("cmmc course --profile cpu (lesson "), row["command"]
            assert row["commit"] and row["machine"]["cores"] >= 1 and row["wall_s"] is not None and "train_s" in row


def test_every_shipped_course_table_is_rebuilt_from_its_rows(tmp_path):
    for table in ("ablation", "comparison"):
        rebuilt = rebuild_table(COURSE / "ablation", table, tmp_path / table)
        assert rebuilt.read_text() == (COURSE / "ablation" / f"{table}.md").read_text(), table
        csv = (tmp_path / table / f"{table}.csv").read_text()
        assert csv == (COURSE / "ablation" / f"{table}.csv").read_text(), table
    for folder in reference.POSE_FOLDERS.values():
        rebuilt = rebuild_pose_table(COURSE / folder, tmp_path / folder)
        assert rebuilt.read_text() == (COURSE / folder / "table.md").read_text(), folder


def test_the_course_reference_read_back_has_every_row_over_every_seed():
    ablation = reference.load_table("ablation")
    assert ablation["seeds"] == [0, 1, 2] and ablation["profile"] == "cpu"
    for row in ablation["rows"]:
        for cell in ("linear/pretrain", "linear/transfer", "R@1/pretrain", "R@1/transfer", "R@5/transfer"):
            assert row[cell]["seeds"] == [0, 1, 2], (row["stream"], row["method"], cell)
    comparison = reference.load_table("comparison")
    assert all(row["linear/transfer"]["seeds"] == comparison["seeds"] for row in comparison["rows"])
    for route in reference.POSE_FOLDERS:
        pose = reference.load_pose(route)
        assert pose["seeds"] == [0, 1, 2] and all(row["seeds"] == [0, 1, 2] for row in pose["rows"]), route


def test_the_readmes_results_are_what_the_shipped_files_say():
    # refreshed by `python -m cmmc_lib.reference readme README.md` after `... ship outputs/course`
    assert reference.readme_block(README) == reference.readme_section()
    assert "`make course PROFILE=cpu`: the nine lessons in" in reference.readme_section()
