"""The reference results the repository ships (``docs/results/``) are what their commands wrote: every
shipped table is rebuilt from its rows alone and must match, and every row says where it came
from (command, commit, seeds, machine, wall time)."""
from __future__ import annotations

import json

import pytest

from cmmc_lib.files import read_jsonl
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
