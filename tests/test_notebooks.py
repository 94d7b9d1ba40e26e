"""The course: committed notebooks are clean lessons, and they all run (papermill, tiny profile)
and pass nbval on their executed copies."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cmmc_lib.course import notebooks_in

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = notebooks_in(REPO / "notebooks")


def test_there_are_lessons_in_order():
    names = [nb.name for nb in NOTEBOOKS]
    assert names and names == sorted(names)
    assert names[0].startswith("01_")


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_a_clean_lesson(nb):
    book = json.loads(nb.read_text())
    assert book["metadata"]["kernelspec"]["name"] == "python3"
    cells = book["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip outputs"
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# ")
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    code_only = "\n".join(line.split("#")[0] for line in "".join(params[0]["source"]).splitlines())
    assert "PROFILE" in code_only and "import" not in code_only and "(" not in code_only, \
        "the parameters cell holds literals only"
    assert cells[-1]["cell_type"] == "markdown", "a lesson ends with its conclusion"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    out = tmp_path_factory.mktemp("course")
    proc = subprocess.run([sys.executable, "-m", "cmmc_lib.cli", "course", "--profile", "tiny",
                           "--out", str(out), "--json"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    summary = json.loads(proc.stdout)
    return out, summary


@pytest.mark.slow
def test_course_runs_every_lesson_with_papermill(executed):
    out, summary = executed
    assert summary["ok"] == len(NOTEBOOKS) == len(summary["notebooks"])
    for nb in NOTEBOOKS:
        assert (out / nb.name).is_file()
    assert any((out / "figures").glob("*.png")), "lessons save their figures"


@pytest.mark.slow
def test_executed_lessons_pass_nbval(executed):
    out, _ = executed
    proc = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p",
                           "no:cacheprovider", "-q", "--rootdir", str(out), *sorted(map(str, out.glob("*.ipynb")))],
                          capture_output=True, text=True, cwd=out)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert " passed" in proc.stdout
