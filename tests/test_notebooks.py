"""The course: committed notebooks are clean lessons that follow the course's conventions, and they
all run (papermill, tiny profile) and pass nbval on their executed copies.

Conventions every lesson follows (01, 02 and 07 set them; 03-09 must follow):
* named ``NN_<idea>.ipynb`` in the plan's order (01 masks, 02 MoCo, 03 mixup, 04 cross-modal
  mixup, 05 cross-modal cutmix, 06 GPU, 07 retrieval, 08 CoCLR + CMMC, 09 pose);
* a first markdown cell with the title (``# NN · ...``), the goals and a ``Run time:`` line that
  points at the cell printing the measured times (never a typed estimate);
* exactly one ``parameters`` cell, of literals only; a lesson with a widget panel declares
  ``INTERACTIVE`` there (``cmmc course`` sets it False: no panels headless);
* a ``## Conclusion`` whose numbers come with their spread (±) and, in a lesson that scores
  representations (kNN, retrieval, probes), their chance levels; computed by the code cell that
  follows it (lessons 02, 03, 04, 05, 07, 08 and 09: the run's own numbers, worded by their intervals), or typed in
  the older lessons (issue 21 converts them);
* a ``## Exercises`` cell with at least two exercises, each solution hidden in
  ``<details><summary>Solution</summary>...</details>`` (in the lesson: a student opens it when
  ready; a separate solutions file drifts from the lesson it answers);
* a last ``## What to try next`` cell;
* ``# NBVAL_CHECK_OUTPUT`` only on deterministic cells; cells that draw, train or time carry
  ``# NBVAL_IGNORE_OUTPUT``;
* committed without outputs.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cmmc_lib.course import CELL_TIMEOUT, notebooks_in

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = notebooks_in(REPO / "notebooks")
# Lesson number -> words of which its file name holds one (the plan of ARCHITECTURE.md).
PLAN = {"01": ("mask", "cutmix", "tesseract"), "02": ("moco",), "03": ("mixup",), "04": ("mixup",),
        "05": ("cutmix", "cmmc"), "06": ("gpu",), "07": ("retrieval",), "08": ("coclr",), "09": ("pose",)}
RUN_TIME = re.compile(r"Run time: measured, not estimated")
SOLUTION = "<details><summary>Solution</summary>"
# A cell doing one of these draws, trains or times: its output is not reproducible.
UNSTABLE = re.compile(r"savefig|\bfig = |plt\.|train_runs\(|train_or_load\(|pretrain\(|perf_counter|tqdm")
# A lesson calling one of these scores a representation: its conclusion must name chance levels.
SCORES = re.compile(r"evaluate_run\(|knn_r1\(|retrieval_hit_rate\(|linear_probe\(|measure_(rate|recall|accuracy)\(")


def _book(nb: Path) -> dict:
    return json.loads(nb.read_text())


def _src(cell) -> str:
    return "".join(cell["source"])


def _markdown(book) -> list[str]:
    return [_src(c) for c in book["cells"] if c["cell_type"] == "markdown"]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_every_cell_has_a_unique_id_and_the_notebook_validates_without_warnings(nb):
    import warnings

    import nbformat
    book = _book(nb)
    ids = [c.get("id") for c in book["cells"]]
    assert None not in ids and len(set(ids)) == len(ids)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # nbformat's MissingIDFieldWarning included
        nbformat.validate(nbformat.reads(nb.read_text(), as_version=4))


@pytest.mark.parametrize("nb", [n for n in NOTEBOOKS if n.name[:2] in ("02", "07")], ids=lambda p: p.name)
def test_the_video_lessons_train_only_the_streams_they_name(nb):
    # a stream picked up from the registry (pose arrived with lesson 09) trained runs no lesson explains
    code = "\n".join(_src(c) for c in _book(nb)["cells"] if c["cell_type"] == "code")
    assert 'modalities = ("rgb", "flow")' in code and "MODALITIES" not in code


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_no_cell_echoes_the_path_of_the_figure_it_saved(nb):
    for cell in _book(nb)["cells"]:
        lines = [l for l in _src(cell).splitlines() if l.strip()] if cell["cell_type"] == "code" else []
        assert not (lines and re.match(r"^\S.*\bsavefig\(.*\)$", lines[-1])), f"{cell.get('id')}: end with ';'"


STEP_BY_HAND = {"02": ("def moco_loss(", "method.loss(batch)"),
                "05": ("def cmmc_loss(", "method.loss(batch, generator=")}


@pytest.mark.parametrize("number", sorted(STEP_BY_HAND))
def test_the_methods_step_is_written_out_and_asserted_equal_to_the_librarys(number):
    # the key idea in the student's hands: the step as code, checked when the lesson runs
    nb = next(n for n in NOTEBOOKS if n.name.startswith(number))
    code = "\n".join(_src(c) for c in _book(nb)["cells"] if c["cell_type"] == "code")
    mine, library = STEP_BY_HAND[number]
    assert mine in code and library in code
    assert re.search(r"assert torch\.allclose\(mine, library", code)


def test_there_are_lessons_in_order():
    names = [nb.name for nb in NOTEBOOKS]
    assert names and names == sorted(names)
    assert names[0].startswith("01_")


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_lesson_is_numbered_as_the_plan(nb):
    number, name = nb.name[:2], nb.stem[3:].lower()
    assert number in PLAN, f"{nb.name}: the plan has lessons 01-09"
    assert any(word in name for word in PLAN[number]), f"{nb.name}: lesson {number} is about {PLAN[number]}"
    assert len([b for b in NOTEBOOKS if b.name[:2] == number]) == 1, f"two lessons numbered {number}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_a_clean_lesson(nb):
    book = _book(nb)
    assert book["metadata"]["kernelspec"]["name"] == "python3"
    cells = book["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip outputs"
    assert cells[0]["cell_type"] == "markdown" and _src(cells[0]).startswith(f"# {nb.name[:2]} · ")
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    code_only = "\n".join(line.split("#")[0] for line in _src(params[0]).splitlines())
    assert "PROFILE" in code_only and "import" not in code_only and "(" not in code_only, \
        "the parameters cell holds literals only"
    assert cells[-1]["cell_type"] == "markdown", "a lesson ends with markdown"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_lesson_states_goals_and_run_time_up_front(nb):
    first = _src(_book(nb)["cells"][0])
    assert "**Goals.**" in first, "the first cell lists the lesson's goals"
    assert RUN_TIME.search(first), "the first cell says where the measured run time is printed"
    assert not re.search(r"~\s*\d+\s*(s|min)\b", first), "no typed run-time estimate"
    cells = _book(nb)["cells"]
    runtime = [c for c in cells if c["cell_type"] == "code" and f'reference.run_time_line("{nb.stem}")' in _src(c)]
    assert len(runtime) == 1 and cells.index(runtime[0]) <= 4, "the measured run time is printed near the top"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_lesson_ends_with_conclusion_exercises_and_what_next(nb):
    book = _book(nb)
    md = _markdown(book)
    conclusion = [m for m in md if m.lstrip().startswith("## Conclusion")]
    assert len(conclusion) == 1, "one '## Conclusion' cell"
    cells = book["cells"]
    at = next(i for i, c in enumerate(cells) if _src(c).lstrip().startswith("## Conclusion"))
    computed = cells[at + 1]["cell_type"] == "code" and _src(cells[at + 1])
    if computed:      # the conclusion's numbers are computed by the cell that follows it, never typed
        # the run's numbers with their spread, or exact counts (lesson 06's FLOPs)
        assert "print(" in computed and re.search(r"compared_with\(|\.verdict\(|±|conclusion_lines\(|_over_moco",
                                                  computed)
        assert not re.search(r"\d\.\d{3} ± \d", conclusion[0]), "a computed conclusion types no result"
    else:
        assert re.search(r"\d\.\d+ ± \d", conclusion[0]), "the conclusion quotes its numbers with their spread"
    code = "\n".join(_src(c) for c in book["cells"] if c["cell_type"] == "code")
    if SCORES.search(code):
        assert "chance" in conclusion[0] + (computed or ""), \
            "a lesson that scores representations gives chance levels in its conclusion"
    exercises = [m for m in md if m.lstrip().startswith("## Exercises")]
    assert len(exercises) == 1, "one '## Exercises' cell"
    assert exercises[0].count(SOLUTION) >= 2, "two or more exercises, each with a hidden solution"
    assert exercises[0].count(SOLUTION) == exercises[0].count("</details>")
    assert md[-1].lstrip().startswith("## What to try next"), "the last cell is 'What to try next'"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_nbval_markers_match_what_cells_do(nb):
    book = _book(nb)
    for cell in (c for c in book["cells"] if c["cell_type"] == "code"):
        src = _src(cell)
        check, ignore = "# NBVAL_CHECK_OUTPUT" in src, "# NBVAL_IGNORE_OUTPUT" in src
        assert not (check and ignore), f"both markers in:\n{src[:200]}"
        if UNSTABLE.search(src):
            assert ignore, f"a cell that draws, trains or times carries # NBVAL_IGNORE_OUTPUT:\n{src[:200]}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_widget_panels_are_built_only_when_interactive(nb):
    book = _book(nb)
    code = [_src(c) for c in book["cells"] if c["cell_type"] == "code"]
    params = next(_src(c) for c in book["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    panels = [c for c in code if re.search(r"ipywidgets|interact\(|_panel\(", c)]
    if panels:
        assert "INTERACTIVE" in params, "a lesson with widgets declares INTERACTIVE in its parameters cell"
        assert all("if INTERACTIVE" in c for c in panels if re.search(r"interact\(|_panel\(", c)), \
            "widget panels are built only when INTERACTIVE"


def test_lesson_helpers_live_in_the_library():
    """Logic the lessons used to repeat is called from cmmc_lib, not rewritten per notebook."""
    for nb in NOTEBOOKS:
        code = "\n".join(_src(c) for c in _book(nb)["cells"] if c["cell_type"] == "code")
        assert "copy.deepcopy(" not in code, f"{nb.name}: use course.train_runs (config copy + train-or-load)"
        assert not re.search(r"epochs = \d+ if PROFILE", code), f"{nb.name}: use course.probe_epochs(PROFILE)"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    out = tmp_path_factory.mktemp("course")
    proc = subprocess.run([sys.executable, "-m", "cmmc_lib.cli", "course", "--profile", "tiny",
                           "--out", str(out), "--timeout", str(CELL_TIMEOUT["tiny"]), "--json"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    summary = json.loads(proc.stdout)
    return out, summary


@pytest.mark.slow
def test_course_runs_every_lesson_with_papermill(executed):
    out, summary = executed
    assert summary["ok"] == len(NOTEBOOKS) == len(summary["notebooks"]), summary
    for nb in NOTEBOOKS:
        assert (out / nb.name).is_file()
    figures = {p.name for p in (out / "figures").glob("*.png")}
    for name in ("01_clips.png", "01_cmmc_pipeline.png", "01_soft_targets.png", "02_curves.png",
                 "02_appearance_motion.png", "07_recall_at_k.png", "07_fusion_weights.png"):
        assert name in figures, f"{name} missing from {sorted(figures)}"


@pytest.mark.slow
def test_executed_lessons_print_numbers_with_chance_and_spread(executed):
    out, _ = executed
    for name in ("02_baseline_moco.ipynb", "07_retrieval.ipynb"):
        text = "".join("".join(o.get("text", "")) for c in _book(out / name)["cells"] if c["cell_type"] == "code"
                       for o in c.get("outputs", []) if o.get("output_type") == "stream")
        assert re.search(r"\d\.\d{3} ± \d\.\d{3} \(chance \d\.\d{3}, n=\d+\)", text), name
        assert "p = " in text or "p(R@1 | chance)" in text, name


def _outputs(cell) -> str:
    parts = []
    for o in cell.get("outputs", []):
        parts.append("".join(o.get("text", "")))
        parts += ["".join(o.get("data", {}).get(k, "")) for k in ("text/markdown", "text/plain")]
    return "\n".join(parts)


def _printed_forms(value: str) -> set[str]:
    """How a rate printed as 0.787 may appear in a table above: 0.787, or in % with one decimal (78.7,
    or 78.8 when the rate was 0.7875 and the two roundings part)."""
    x = float(value)
    return {f"{x:.3f}", *(f"{100 * x + d:.1f}" for d in (-0.05, 0.0, 0.05))}


@pytest.mark.slow
def test_every_number_a_conclusion_computes_is_printed_above_it(executed):
    # the conclusion cell rewords the lesson's tables; a row's "mean ± spread" it quotes (its own run's
    # or the shipped reference's) must be one the lesson printed before it, not a number from elsewhere
    out, _ = executed
    pair = re.compile(r"(by |\()?([-+]?\d+\.\d{3}) ± (\d+\.\d{3}|< 0\.001)")
    quoted = 0
    for nb in NOTEBOOKS:
        cells = _book(out / nb.name)["cells"]
        at = next((i for i, c in enumerate(cells) if c.get("id", "").endswith("conclusion-numbers")), None)
        if at is None:
            continue
        above = "\n".join(_outputs(c) for c in cells[:at])
        for prefix, mean, spread in pair.findall(_outputs(cells[at])):
            if prefix or mean.startswith(("+", "-")):        # a difference computed in the conclusion itself
                continue
            quoted += 1
            assert any(f in above for f in _printed_forms(mean)), f"{nb.name}: {mean} ± {spread} not printed above"
            assert spread.startswith("<") or any(f in above for f in _printed_forms(spread)), (nb.name, mean, spread)
    assert quoted > 100                    # lessons 02-05 and 07-09 quote their rows


@pytest.mark.slow
def test_every_figure_a_lesson_saves_exists_and_is_not_blank(executed):
    import matplotlib.image

    out, _ = executed
    for nb in NOTEBOOKS:
        code = "\n".join(_src(c) for c in _book(nb)["cells"] if c["cell_type"] == "code")
        names = re.findall(r'savefig\(fig, "(\w+)"\)', code)
        assert names, f"{nb.name} saves no figure"
        for name in names:
            path = out / "figures" / f"{name}.png"
            assert path.is_file(), f"{nb.name}: {path.name} was not written"
            pixels = matplotlib.image.imread(path)[..., :3]
            assert pixels.std() > 0.01, f"{nb.name}: {path.name} is blank"


def test_executed_lessons_pass_nbval(executed):
    out, _ = executed
    proc = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p",
                           "no:cacheprovider", "-q", "--rootdir", str(out), *sorted(map(str, out.glob("*.ipynb")))],
                          capture_output=True, text=True, cwd=out)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert " passed" in proc.stdout
