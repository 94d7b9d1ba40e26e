"""The house: top-level layout, pyproject as single source of truth, the two commands."""
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the design card, plus docs/ (the method as implemented, the paper preset's fidelity)
ALLOWED_TOP = {"notebooks", "cmmc_lib", "data", "docs", "tests", "environment.yml", "README.md", "pyproject.toml",
               "Makefile", ".ci", ".gitignore", "LICENSE"}


def tracked_top_level():
    import subprocess
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    return {p.split("/")[0] for p in out} if out else {p.name for p in REPO.iterdir() if not p.name.startswith(".git")}


def test_top_level_is_exactly_the_design_card():
    top = tracked_top_level()
    assert top <= ALLOWED_TOP, f"unexpected top-level entries: {sorted(top - ALLOWED_TOP)}"
    assert {"notebooks", "cmmc_lib", "tests", "README.md", "pyproject.toml", "environment.yml"} <= top


def test_environment_yml_installs_the_project_through_pip_and_agrees_with_pyproject():
    env = (REPO / "environment.yml").read_text()
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert re.search(r"^\s*-\s*-e \.\[dev\]\s*$", env, re.M), "the project is installed by the pip section"
    py_env = re.search(r"^\s*-\s*python([<>=!~].*)$", env, re.M).group(1).strip()
    assert py_env == meta["requires-python"], (py_env, meta["requires-python"])
    # conda lists no Python package of its own: pyproject.toml stays the single source of truth
    conda_deps = re.findall(r"^  - ([A-Za-z0-9_.-]+)", env.split("dependencies:", 1)[1], re.M)
    python_pkgs = {re.split(r"[<>=\[ ;]", d)[0].lower() for d in meta["dependencies"]}
    for extra in meta["optional-dependencies"].values():
        python_pkgs |= {re.split(r"[<>=\[ ;]", d)[0].lower() for d in extra}
    assert not set(d.lower() for d in conda_deps) & python_pkgs
    assert set(conda_deps) <= {"python", "pip", "make"}


def test_console_command_and_extras_are_declared():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["scripts"]["cmmc"] == "cmmc_lib.cli:main"
    extras = meta["optional-dependencies"]
    assert {"notebooks", "dev"} <= set(extras)
    for need in ("papermill", "ipywidgets", "jupyterlab"):
        assert any(d.startswith(need) for d in extras["notebooks"])
    for need in ("nbval", "hypothesis", "pytest", "torchmetrics"):
        assert any(d.startswith(need) for d in extras["dev"])


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    assert "make test" in ci
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.S).group(1)
    assert "make course" in first_block and "make test" in first_block


def test_venv_is_made_once_and_keyed_on_pyproject():
    mk = (REPO / "Makefile").read_text()
    assert re.search(r"^\$\(VENV\)/\.stamp: pyproject\.toml", mk, re.M)
    assert re.search(r"^course: setup", mk, re.M) and re.search(r"^test: setup", mk, re.M)
