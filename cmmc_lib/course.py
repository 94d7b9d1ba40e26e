"""The course: lesson set-up shared by the notebooks, and running them all with papermill.

Every lesson's first code cell after its ``parameters`` cell calls :func:`lesson_setup`, which
resolves paths from the project root (so a notebook opened from ``notebooks/`` and one executed
by ``cmmc course`` see the same data and runs), makes sure the synthetic data exists, and
returns the preset config of the chosen profile.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cmmc_lib

from .config import COURSE_PROFILES, Config, preset

log = logging.getLogger(__name__)


def project_root() -> Path:
    """The checkout holding ``notebooks/`` and ``pyproject.toml`` (else the working directory)."""
    here = Path(cmmc_lib.__file__).resolve().parents[1]
    if (here / "pyproject.toml").is_file() and (here / "notebooks").is_dir():
        return here
    return Path.cwd()


@dataclass
class Lesson:
    """What a lesson needs: the profile's config and absolute folders."""
    profile: str
    cfg: Config
    data_root: Path
    runs_dir: Path
    fig_dir: Path

    def run_dir(self, name: str) -> Path:
        return self.runs_dir / name

    def savefig(self, fig, name: str) -> Path:
        self.fig_dir.mkdir(parents=True, exist_ok=True)
        path = self.fig_dir / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        return path


def lesson_setup(profile: str = "tiny", seed: int = 0, data_root: str | None = None,
                 runs_dir: str | None = None, fig_dir: str | None = None, device: str = "auto",
                 make_data: bool = True) -> Lesson:
    """Config and folders for a lesson; writes the synthetic dataset of the profile if missing."""
    if profile not in COURSE_PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(COURSE_PROFILES)}")
    root = project_root()
    cfg = preset(profile, [f"run.seed={seed}", f"run.device={device}"])
    droot = Path(data_root) if data_root else Path(os.environ.get("CMMC_DATA_ROOT", root / "data")) / "synthetic" / cfg.data.synthetic_size
    cfg.data.root = str(droot)
    runs = Path(runs_dir) if runs_dir else root / "runs" / "course"
    figs = Path(fig_dir) if fig_dir else root / "outputs" / "figures"
    cfg.run.out_root = str(runs)
    if make_data and cfg.data.dataset == "synthetic":
        from .data.synthetic import write_synthetic_dataset
        write_synthetic_dataset(droot, size=cfg.data.synthetic_size, seed=cfg.data.synthetic_seed, progress=False)
    return Lesson(profile, cfg, droot, runs, figs)


def notebooks_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def run_course(profile: str = "tiny", out: Path = Path("outputs/course"), only: list[str] | None = None,
               timeout: int = 3600, notebooks_dir: Path | None = None) -> dict[str, Any]:
    """Execute the lessons in order with papermill (kernel ``python3``).

    Executed copies go to ``out/<name>.ipynb``, figures to ``out/figures``, runs to
    ``out/runs`` (so later lessons reuse the runs of earlier ones). A failing lesson is
    reported and the others still run; ``failed_run`` is then True.
    """
    try:
        import papermill as pm
    except ImportError as exc:
        raise RuntimeError("papermill is not installed: pip install -e '.[notebooks]'") from exc
    folder = notebooks_dir or project_root() / "notebooks"
    books = notebooks_in(folder)
    if only:
        books = [b for b in books if any(b.name.startswith(o) for o in only)]
    if not books:
        raise FileNotFoundError(f"no lessons (NN_*.ipynb) found in {folder}")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    params = {"PROFILE": profile, "RUNS_DIR": str(out / "runs"), "FIG_DIR": str(out / "figures")}
    results, t_all = [], time.perf_counter()
    for nb in books:
        t0, target = time.perf_counter(), out / nb.name
        status, error = "ok", None
        try:
            pm.execute_notebook(str(nb), str(target), parameters=params, kernel_name="python3",
                                cwd=str(folder), progress_bar=False, execution_timeout=timeout)
        except Exception as exc:                     # papermill raises PapermillExecutionError
            status = "failed"
            error = (f"cell {getattr(exc, 'exec_count', '?')}: {exc.ename}: {exc.evalue}"
                     if hasattr(exc, "ename") else f"{type(exc).__name__}: {exc}")[:500]
            log.error("%s failed: %s", nb.name, error)
        results.append({"notebook": nb.name, "status": status, "seconds": time.perf_counter() - t0,
                        "output": str(target), "error": error})
    summary = {"profile": profile, "out": str(out), "notebooks": results,
               "ok": sum(r["status"] == "ok" for r in results), "seconds": time.perf_counter() - t_all}
    summary["failed_run"] = summary["ok"] != len(results)
    (out / "course.json").write_text(json.dumps(summary, indent=2))
    return summary
