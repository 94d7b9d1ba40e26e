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
    run = {"command": "cmmc course --profile cpu (lesson 05_cross_modal_cutmix)", "commit": "abc123",
           "seeds": [0, 1, 2],
           "machine": {"cores": 2, "cpu": "x86_64", "torch": "2.14.1"}, "rows_s": 1800.0, "wall_s": 60.0}
    line = reference.provenance(run)
    assert line == ("`cmmc course --profile cpu (lesson 05_cross_modal_cutmix)` at commit abc123, training seeds "
                    "[0, 1, 2]; 2 cores (x86_64), torch 2.14.1; 30.0 min of training and evaluation")
    assert json.dumps(run)      # the fields are plain JSON, as the commands write them
    # the study's run.json names its transfer set and its workers, and has only a wall time
    study = {"command": "cmmc study ablate --seeds 5", "commit": "def456", "seeds": [0, 1], "transfer_seed": 1234,
             "workers": 2, "threads": 1, "machine": {"cores": 2, "cpu": "x86_64", "torch": "2.14.1"}, "wall_s": 90.0}
    assert reference.provenance(study) == ("`cmmc study ablate --seeds 5` at commit def456, training seeds [0, 1], "
                                           "transfer set data seed 1234; 2 cores (x86_64), torch 2.14.1, 2 worker(s) "
                                           "x 1 thread(s); 1.5 min wall")


def _course_out(tmp_path, profile="cpu", lessons=9, variants=("moco", "mixup", "cm-mixup", "cmmc")):
    out = tmp_path / "course"
    abl = out / "runs" / "ablation"
    abl.mkdir(parents=True)
    command = f"cmmc course --profile {profile} (lesson 03_mixup)"
    rows = [{"seed": 0, "method": m, "protocol": "linear", "dataset": "transfer", "num_test": 100, "num_train": 200, "num_classes": 10, "command": command,
             **{f"{st}/linear": 0.5 for st in ("rgb", "flow", "two-stream")}} for m in variants]
    (abl / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (abl / "ablation.run.json").write_text(json.dumps({"variants": list(variants), "unfinished": [], "seeds": [0],
                                                       "chance": {"linear/transfer": 0.1}}))
    (abl / "ablation.md").write_text("| table |\n")
    (abl / "ablation.csv").write_text("seed\n")
    return out


def _finish(out, profile="cpu", lessons=9):
    notebooks = [{"notebook": f"0{i}_x.ipynb", "status": "ok", "seconds": 1.0} for i in range(1, lessons + 1)]
    (out / "course.json").write_text(json.dumps({"profile": profile, "notebooks": notebooks, "ok": lessons,
                                                 "seconds": float(lessons)}))


def test_a_running_long_course_ships_each_table_once_it_is_finished(tmp_path):
    out, into = _course_out(tmp_path), tmp_path / "shipped"
    shipped = reference.ship(out, into)
    assert sorted(p.name for p in shipped["copied"]) == ["ablation.csv", "ablation.md", "ablation.run.json",
                                                        "results.jsonl"]
    assert shipped["waiting"][:3] == ["comparison", "pose-skeleton", "pose-rgb-pose"]
    # the rows travel unchanged, the table is rendered again from them (the course wrote a stale one)
    assert (into / "ablation" / "results.jsonl").read_text() == (out / "runs" / "ablation" / "results.jsonl").read_text()
    assert (into / "ablation" / "ablation.md").read_text().startswith("| stream | method |")
    assert "course.json" in shipped["waiting"][3]
    _finish(out)
    assert into / "course.json" in reference.ship(out, into)["copied"]


def test_the_quick_courses_time_counts_the_install_when_make_ran_it(tmp_path):
    quick = _course_out(tmp_path, profile="tiny")
    _finish(quick, "tiny")
    summary = json.loads((quick / "course.json").read_text())
    summary.update(since_make_s=301.0, machine={"cores": 2})
    (quick / "course.json").write_text(json.dumps(summary))
    reference.ship(quick, tmp_path / "into")
    assert reference.course_times(tmp_path / "into" / "course-tiny.json")["since_make"] == 301.0
    assert ("* `make course`: 5 min with the install, the nine lessons in 9 s on 2 CPU cores"
            in reference.readme_section(tmp_path / "into"))


def test_a_table_still_filling_in_is_not_shipped_and_the_quick_course_ships_only_its_times(tmp_path):
    out = _course_out(tmp_path, variants=("moco", "mixup"))        # lesson 03 done, 04 and 05 not yet
    assert not reference.ship(out, tmp_path / "a")["copied"]
    quick = _course_out(tmp_path / "q", profile="tiny")
    _finish(quick, "tiny")
    assert [p.name for p in reference.ship(quick, tmp_path / "b")["copied"]] == ["course-tiny.json"]
    _finish(quick, "tiny", lessons=3)                             # --only 01 02 03: not a whole run
    assert not reference.ship(quick, tmp_path / "c")["copied"]


def test_the_readme_section_is_rewritten_between_its_markers_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{reference.README_BEGIN}\nold numbers\n{reference.README_END}\n\n## next\n")
    assert reference.write_readme(readme, tmp_path / "nothing-shipped")
    assert reference.readme_block(readme) == reference.readme_section(tmp_path / "nothing-shipped")
    assert "Not shipped in this checkout yet: " in reference.readme_block(readme)
    assert "old numbers" not in readme.read_text()
    assert readme.read_text().startswith("# title\n") and readme.read_text().endswith("\n\n## next\n")
    assert not reference.write_readme(readme, tmp_path / "nothing-shipped")      # already up to date
