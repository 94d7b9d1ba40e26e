"""The course: lesson set-up shared by the notebooks, the helpers lessons repeat, and running
them all with papermill.

Every lesson's first code cell after its ``parameters`` cell calls :func:`lesson_setup`, which
resolves paths from the project root (so a notebook opened from ``notebooks/`` and one executed
by ``cmmc course`` see the same data and runs), makes sure the synthetic data exists, and
returns the preset config of the chosen profile.

Helpers the lessons share: :func:`train_runs` (copy the lesson's config per modality and seed,
then train or reuse the run folder), :func:`run_name`, :func:`seeds_for` (the seeds a profile can
afford; its probe epochs are the preset's ``eval.probe_epochs``), :func:`describe_run_folder`
(what a run folder holds), :func:`last_epoch` (a run's final epoch-mean loss and kNN, trained or
reused alike), :func:`random_backbone` (the untrained baseline) and :func:`protocol_features` (a
run's features cut as ``cmmc eval`` cuts them).

:func:`run_course` executes the lessons headless with a per-cell timeout
(:data:`CELL_TIMEOUT`), so that a hung cell fails its lesson instead of stalling the course;
:func:`run_notebook_inline` executes one lesson in this process, without a Jupyter kernel (what
``cmmc bench gpu-check`` does with lesson 06 on a machine that has none).
Lessons with widget panels declare ``INTERACTIVE = True`` in their parameters cell; the course
passes ``INTERACTIVE = False``: a panel needs a front end, and executing an ``interact`` headless
can stall the cell (nbclient mimics the Output widget by *sending* messages on the shell
channel while it waits for the execute reply on that same socket; one in a few runs, that reply
is noticed only when the wait times out).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import cmmc_lib
from .ablation import run_ablation
from .config import COURSE_PROFILES, Config, apply_overrides, preset
from .data.synthetic import write_synthetic_dataset
from .evaluate.features import FeatureCache, split_features
from .models import build_backbone
from .provenance import COMMAND_ENV, machine, source_commit
from .registry import METHODS, MODALITIES, lookup
from .pipeline import pipeline_config
from .runs import RunFolder, read_metrics
from .ssl.factory import load_backbone
from .train import train_or_load

log = logging.getLogger(__name__)

# Seconds one cell may run under `cmmc course` before its lesson fails, so that only a hung cell
# reaches it: at cpu one cell trains and evaluates three seeds of a table (lesson 03's stage 1 and
# two rows ran past 50 min on a 2-core machine that had other work, and the limit failed the
# lesson and every lesson after it), so the limit is hours, not the idle machine's time.
CELL_TIMEOUT = {"tiny": 600, "cpu": 4 * 3600}
# `make course` puts its start time here (seconds since the epoch) before it sets up the virtual
# environment, so course.json can say how long the README's first command took, install included.
STARTED_ENV = "CMMC_MAKE_STARTED"
# Training seeds a lesson can afford per profile, for a spread across seeds.
SEEDS = {"tiny": (0, 1, 2), "cpu": (0,)}
# Training seeds of the ablation lessons (03-05, 08): every row of the table is trained per seed.
ABLATION_SEEDS = {"tiny": (0,), "cpu": (0, 1, 2)}


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

    def with_overrides(self, *overrides: str) -> Config:
        """A copy of the lesson's config with ``key=value`` overrides, for a pipeline to start from
        (:func:`cmmc_lib.pipeline.pipeline_config`: a cross-modal method's source network is set
        by the pipeline, stage by stage)."""
        return pipeline_config(self.cfg, overrides)

    def savefig(self, fig, name: str) -> Path:
        self.fig_dir.mkdir(parents=True, exist_ok=True)
        path = self.fig_dir / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        return path


def lesson_setup(profile: str = "tiny", seed: int = 0, data_root: str | None = None,
                 runs_dir: str | None = None, fig_dir: str | None = None, device: str = "auto",
                 make_data: bool = True) -> Lesson:
    """Config and folders for a lesson; writes the synthetic dataset of the profile if missing."""
    _profile(profile)
    root = project_root()
    cfg = preset(profile, [f"run.seed={seed}", f"run.device={device}"])
    droot = Path(data_root) if data_root else Path(os.environ.get("CMMC_DATA_ROOT", root / "data")) / "synthetic" / cfg.data.synthetic_size
    cfg.data.root = str(droot)
    runs = Path(runs_dir) if runs_dir else root / "runs" / "course"
    figs = Path(fig_dir) if fig_dir else root / "outputs" / "figures"
    cfg.run.out_root = str(runs)
    if make_data and cfg.data.dataset == "synthetic":
        write_synthetic_dataset(droot, size=cfg.data.synthetic_size, seed=cfg.data.synthetic_seed, progress=False)
    return Lesson(profile, cfg, droot, runs, figs)


def _profile(profile: str) -> str:
    if profile not in COURSE_PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(COURSE_PROFILES)}")
    return profile


def seeds_for(profile: str, first: int = 0) -> tuple[int, ...]:
    """The training seeds a lesson runs at a profile, starting at ``first`` (:data:`SEEDS`)."""
    return tuple(first + s for s in SEEDS[_profile(profile)])


def run_name(method: str, modality: str, seed: int | None = None, base_seed: int = 0) -> str:
    """The run folder name lessons share: ``<method>-<modality>``, plus ``-s<seed>`` for seeds
    other than the lesson's own (so lesson 02's ``moco-rgb`` is what later lessons load)."""
    lookup(METHODS, method, "method")
    lookup(MODALITIES, modality, "modality")
    name = f"{method}-{modality}"
    return name if seed is None or seed == base_seed else f"{name}-s{seed}"


def train_runs(lesson: Lesson, modalities: Sequence[str] = ("rgb", "flow"), method: str = "moco",
               seeds: Sequence[int] | None = None, overrides: Sequence[str] = ()) -> dict[tuple[str, int], dict]:
    """Train (or reuse) one run per modality and seed: the lesson's config is copied, its
    ``ssl.modality``, ``ssl.method`` and ``run.seed`` set, ``overrides`` applied, and
    :func:`cmmc_lib.train.train_or_load` run in ``lesson.run_dir(run_name(...))``.

    Returns ``{(modality, seed): result}``; each result is train_or_load's dict (``reused``,
    ``steps``, ``final_loss``, ``knn_r1``, ``run_dir``...). Seeds default to the lesson's seed.
    """
    base = lesson.cfg.run.seed
    out = {}
    for seed in (seeds if seeds is not None else (base,)):
        for modality in modalities:
            cfg = copy.deepcopy(lesson.cfg)
            cfg.ssl.modality, cfg.ssl.method, cfg.run.seed = modality, method, int(seed)
            apply_overrides(cfg, list(overrides))
            run_dir = lesson.run_dir(run_name(method, modality, seed, base))
            out[(modality, int(seed))] = {**train_or_load(cfg, run_dir), "run_dir": str(run_dir)}
    return out


def ablation(lesson: Lesson, variants: Sequence[str], table: str = "ablation", curves: bool = False,
             seeds: Sequence[int] | None = None) -> dict:
    """A table's rows for a lesson: :func:`cmmc_lib.ablation.run_ablation` on the lesson's config
    under ``<runs>/ablation`` (stage 1 trained once and shared by every lesson's rows), for the
    profile's :data:`ABLATION_SEEDS`. Finished runs and evaluations are reused. ``variants``: names
    of the table's variants (:data:`cmmc_lib.ablation.TABLES`)."""
    seeds = ABLATION_SEEDS[_profile(lesson.profile)] if seeds is None else seeds
    return run_ablation(lesson.cfg, list(seeds), lesson.run_dir("ablation"), table=table, curves=curves,
                        device=lesson.cfg.run.device, progress=False, variants=variants)


def random_backbone(cfg: Config, modality: str, seed: int = 0):
    """A randomly initialised backbone of the config's architecture for ``modality`` (eval mode):
    the baseline every trained network is compared with."""
    torch.manual_seed(seed)
    return build_backbone(cfg.model.backbone, lookup(MODALITIES, modality, "modality").channels,
                          cfg.model.width).eval()


def protocol_features(run_dir: str | Path, subset: str, device: str = "cpu"):
    """``(dataset, Features)`` of a run's backbone on ``subset``, cut as ``cmmc eval`` cuts them
    (train, the gallery: one window per video; test, the queries: the config's ``eval_windows``),
    cached in the run's ``features/`` folder (:func:`cmmc_lib.evaluate.split_features`)."""
    run = RunFolder(run_dir)
    backbone, cfg = load_backbone(run)
    cache = FeatureCache(run.checkpoint_path("last"), run.features_dir)
    return split_features(backbone, cfg.data, cfg.ssl.modality, subset,
                          eval_windows=1 if subset == "train" else None, device=device, cache=cache,
                          window_l2=cfg.eval.window_l2)


def last_epoch(run_dir: str | Path) -> dict[str, Any]:
    """The last epoch row of a run's ``metrics.csv`` (``loss``: the epoch's mean loss, ``knn_r1``...):
    the same numbers whether the run was just trained or reused."""
    epochs = [r for r in read_metrics(run_dir) if r["kind"] == "epoch"]
    if not epochs:
        raise ValueError(f"{run_dir} has no finished epoch in its metrics.csv")
    return epochs[-1]


def describe_run_folder(run_dir: str | Path) -> str:
    """What a run folder holds, as text: each file with its size, then the settings that define
    the run (what ``ssl.source_run=<this folder>`` of a CMMC run reads)."""
    run = RunFolder(run_dir)
    if not run.exists():
        raise FileNotFoundError(f"{run.path} is not a run folder (no config.json)")
    lines = [f"{run.path.name}/"]
    for path in sorted(p for p in run.path.rglob("*") if p.is_file()):
        size = path.stat().st_size
        human = f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"
        lines.append(f"  {str(path.relative_to(run.path)):<40} {human:>10}")
    cfg = run.read_config()
    lines.append(f"config: method {cfg.ssl.method}, modality {cfg.ssl.modality}, backbone {cfg.model.backbone} "
                 f"(width {cfg.model.width}), {cfg.optim.epochs} epochs, batch {cfg.optim.batch_size}, "
                 f"queue {cfg.ssl.queue_size}, seed {cfg.run.seed}; finished: {run.is_finished()}")
    return "\n".join(lines)


def notebooks_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def select_lessons(books: list[Path], only: Sequence[str] | None) -> list[Path]:
    """The lessons whose names start with one of the ``only`` prefixes (all when ``only`` is None).

    ValueError for an empty selection (``--only`` without a prefix, or an empty prefix, which
    would match every lesson) and for a prefix that matches no lesson.
    """
    if only is None:
        return books
    only = [str(o) for o in only]
    if not only or any(not o.strip() for o in only):
        raise ValueError("--only needs lesson prefixes such as 01 02; an empty prefix would match every lesson "
                         "(leave --only out to run them all)")
    missing = [o for o in only if not any(b.name.startswith(o) for b in books)]
    if missing:
        raise ValueError(f"no lesson starts with {', '.join(map(repr, missing))}; "
                         f"lessons: {', '.join(b.name for b in books)}")
    return [b for b in books if any(b.name.startswith(o) for o in only)]


def run_course(profile: str = "tiny", out: Path = Path("outputs/course"), only: list[str] | None = None,
               timeout: int | None = None, notebooks_dir: Path | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Execute the lessons in order with papermill (kernel ``python3``).

    Executed copies go to ``out/<name>.ipynb``, figures to ``out/figures``, runs to
    ``out/runs`` (so later lessons reuse the runs of earlier ones). ``timeout``: seconds one
    cell may run (default :data:`CELL_TIMEOUT` of the profile); a cell that runs longer fails
    its lesson. ``only``: lesson name prefixes (see :func:`select_lessons`). A failing lesson is
    reported and the others still run; ``failed_run`` is then True. Lessons that declare
    ``INTERACTIVE`` get ``INTERACTIVE = False`` (no widget panels headless). ``progress``: a line on
    stderr when each lesson starts and ends, and papermill's bar over its cells while it runs.
    """
    _profile(profile)
    timeout = CELL_TIMEOUT[profile] if timeout is None else int(timeout)
    if timeout < 1:
        raise ValueError(f"the per-cell timeout must be >= 1 s, got {timeout}")
    try:                                 # optional: the notebooks extra
        import papermill as pm
    except ImportError as exc:
        raise RuntimeError("papermill is not installed: pip install -e '.[notebooks]'") from exc
    folder = notebooks_dir or project_root() / "notebooks"
    books = notebooks_in(folder)
    if not books:
        raise FileNotFoundError(f"no lessons (NN_*.ipynb) found in {folder}")
    books = select_lessons(books, only)
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    params = {"PROFILE": profile, "RUNS_DIR": str(out / "runs"), "FIG_DIR": str(out / "figures")}
    results, t_all = [], time.perf_counter()
    for i, nb in enumerate(books, 1):
        t0, target = time.perf_counter(), out / nb.name
        status, error = "ok", None
        if progress:
            print(f"[{i}/{len(books)}] {nb.stem} ({profile}) ...", file=sys.stderr, flush=True)
        try:
            declared = pm.inspect_notebook(str(nb))
            nb_params = {**params, **({"INTERACTIVE": False} if "INTERACTIVE" in declared else {})}
            # the rows a lesson's tables append name the command that computed them (cmmc_lib.provenance)
            with _env(COMMAND_ENV, f"cmmc course --profile {profile} (lesson {nb.stem})"):
                pm.execute_notebook(str(nb), str(target), parameters=nb_params, kernel_name="python3",
                                    cwd=str(folder), progress_bar=progress, execution_timeout=timeout)
        except Exception as exc:                     # papermill raises PapermillExecutionError
            status = "failed"
            error = (f"cell {getattr(exc, 'exec_count', '?')}: {exc.ename}: {exc.evalue}"
                     if hasattr(exc, "ename") else f"{type(exc).__name__}: {exc}")[:500]
            log.error("%s failed: %s", nb.name, error)
        results.append({"notebook": nb.name, "status": status, "seconds": time.perf_counter() - t0,
                        "output": str(target), "error": error})
        if progress:
            print(f"[{i}/{len(books)}] {nb.stem}: {status} in {results[-1]['seconds']:.0f} s "
                  f"({time.perf_counter() - t_all:.0f} s so far)", file=sys.stderr, flush=True)
    summary = {"profile": profile, "out": str(out), "cell_timeout": timeout, "notebooks": results,
               "ok": sum(r["status"] == "ok" for r in results), "seconds": time.perf_counter() - t_all,
               "commit": source_commit(), "machine": machine()}
    summary["failed_run"] = summary["ok"] != len(results)
    started = os.environ.get(STARTED_ENV)
    if started:                       # `make course` stamps its start: the setup's time is measured too
        summary["since_make_s"] = time.time() - float(started)
    (out / "course.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_notebook_inline(path: str | Path, parameters: dict | None = None) -> dict:
    """Execute a lesson's code cells in this process, in order, with ``parameters`` replacing
    the values of its ``parameters`` cell (papermill's contract without a Jupyter kernel, for
    machines that have none). Figures go to the Agg backend; what the cells print is captured
    (its end is returned as ``output_tail``). Returns ok, seconds, cells, error, output_tail."""
    import matplotlib                # here, not at the top: the Agg backend is this runner's choice alone
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    path = Path(path)
    nb = json.loads(path.read_text())
    ns: dict[str, Any] = {"__name__": "__main__", "display": print}
    cwd, t0, printed = Path.cwd(), time.perf_counter(), io.StringIO()
    os.chdir(path.parent)
    try:
        with contextlib.redirect_stdout(printed):
            _run_cells(nb, path, ns, parameters, plt)
        return {"ok": True, "seconds": time.perf_counter() - t0, "cells": ns["__cells__"], "error": None,
                "output_tail": printed.getvalue()[-3000:]}
    except Exception as e:
        return {"ok": False, "seconds": time.perf_counter() - t0, "cells": ns.get("__cells__", 0),
                "error": f"cell {ns.get('__cells__', 0) + 1}: {type(e).__name__}: {str(e)[:300]}",
                "output_tail": printed.getvalue()[-3000:]}
    finally:
        os.chdir(cwd)


def _run_cells(nb: dict, path: Path, ns: dict, parameters: dict | None, plt) -> None:
    ns["__cells__"] = 0
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        src = "\n".join(line for line in "".join(cell["source"]).splitlines()
                        if not line.lstrip().startswith(("%", "!")))
        exec(compile(src, f"{path.name} cell {i}", "exec"), ns)
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            ns.update(parameters or {})
        plt.close("all")
        ns["__cells__"] += 1


@contextlib.contextmanager
def _env(name: str, value: str):
    """``os.environ[name] = value`` while the block runs (a lesson's kernel inherits it)."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
