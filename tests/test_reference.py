"""A lesson shows the shipped reference beside its own run: each side with its spread, its seeds and its scale."""
from __future__ import annotations

import json

from cmmc_lib import reference
from cmmc_lib.tables import summarize


def _row(stream, method, name, values, seeds, n=160):
    return {"stream": stream, "method": method, "name": name,
            "linear/transfer": summarize(values, n, seeds).to_dict()}


def test_beside_puts_the_run_and_the_reference_side_by_side_with_spreads_seeds_and_scales():
    mine = [_row("rgb", "moco", "MoCo (baseline)", [0.5], [0], n=18)]
    ref = {"seeds": [0, 1, 2], "rows": [_row("rgb", "moco", "MoCo (baseline)", [0.40, 0.42, 0.44], [0, 1, 2]),
                                        _row("rgb", "cmmc", "+ CM cutmix", [0.45, 0.43, 0.47], [0, 1, 2])]}
    text = reference.beside(mine, ref, ("linear/transfer",), "tiny", methods=("moco", "cmmc"), streams=("rgb",))
    head, _, moco, cmmc = text.strip().splitlines()
    assert "this run (tiny profile: a smoke test, not a measurement)" in head and "seeds [0, 1, 2]" in head
    assert "| 50.0 ± 11.8 (binomial SE, one seed, seeds [0]) |" in moco
    assert "42.0 ± 2.0 (std over 3 seeds, seeds [0, 1, 2])" in moco
    assert cmmc.startswith("| rgb | + CM cutmix | linear transfer | - | 45.0 ± 2.0")


def test_without_shipped_results_a_lesson_says_how_to_make_them(tmp_path):
    assert reference.load_table("ablation", tmp_path) is None and reference.load_pose("skeleton", tmp_path) is None
    assert reference.course_times(tmp_path / "course.json") is None
    assert "cmmc course --profile cpu" in reference.beside([], None, ("linear/transfer",), "tiny")


def test_the_provenance_line_names_command_commit_seeds_machine_and_time():
    run = {"command": "cmmc course --profile cpu (lesson 05_cross_modal_cutmix)", "commit": "abc123", "seeds": [0, 1, 2],
           "machine": {"cores": 2, "cpu": "x86_64", "torch": "2.14.1"}, "rows_s": 1800.0, "wall_s": 60.0}
    line = reference.provenance(run)
    assert line == ("`cmmc course --profile cpu (lesson 05_cross_modal_cutmix)` at commit abc123, training seeds "
                    "[0, 1, 2]; 2 cores (x86_64), torch 2.14.1; 30.0 min of training and evaluation")
    assert json.dumps(run)      # the fields are plain JSON, as the commands write them
