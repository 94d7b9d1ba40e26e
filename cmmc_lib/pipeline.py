"""The paper's recipe around the training loop (docs/method.md section 4): stage 1, then alternate cycles.

    stages = plan_pipeline(cfg, "runs/cmmc")       # what will be trained where: nothing runs yet
    result = run_pipeline(cfg, "runs/cmmc")        # train, reuse or resume each stage in order

Stage 1 trains each modality alone (``schedule.stage1_method``, the config's ``optim`` epochs
and milestones). Stage 2 runs ``schedule.cycles`` cycles of ``ssl.method``; in each cycle every
network in turn (``schedule.modalities`` order: RGB, then flow) trains for
``schedule.cycle_epochs`` epochs from its own latest weights (``ssl.init_run``: fresh queue and
optimiser, as CoCLR restarts each cycle) with the other's latest network as its frozen source
(``ssl.source_run``). ``schedule.alternate=False`` replaces the cycles by one joint run that
trains both networks at once, each mixing in the other's current features.

Every stage is an ordinary run folder under ``root`` (``stage1-rgb``, ``cycle1-rgb``,
``cycle1-flow``, ...), trained by :func:`cmmc_lib.train.train_or_load`: a finished stage is
reused, an interrupted one resumes exactly, so running the same pipeline again continues where
it stopped. Stage 1 may live elsewhere (``stage1_root``) so that several stage-2 methods share it.
"""
from __future__ import annotations

import copy
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .config import Config, ScheduleConfig, apply_overrides, validate
from .data.prepare import prepare_synthetic
from .devices import launch_rank
from .registry import METHODS
from .runs import FolderLock, RunFolder
from .train import Interrupted, train_or_load

log = logging.getLogger(__name__)


@dataclass
class Stage:
    """One training run of a pipeline: its name, the network it trains and where."""
    name: str
    cfg: Config
    run_dir: Path

    @property
    def modality(self) -> str:
        return self.cfg.ssl.modality

    def describe(self) -> str:
        s = self.cfg.ssl
        text = f"{self.name}: {s.method} on {s.modality}, {self.cfg.optim.epochs} epochs"
        if s.joint:
            text += f", jointly with {s.other_modality}"
        elif s.source_run and METHODS[s.method].cross_modal:
            text += f", mixing in {Path(s.source_run).name} ({s.other_modality})"
        if s.init_run:
            text += f", from {Path(s.init_run).name}"
        return text


def derive(cfg: Config, **changes: Any) -> Config:
    """A validated copy of ``cfg`` with ``section__field=value`` changes (``ssl__method="moco"``;
    ``section__=value`` replaces a whole section)."""
    out = copy.deepcopy(cfg)
    for key, value in changes.items():
        section, name = key.split("__")
        if name:
            setattr(getattr(out, section), name, value)
        else:                                        # a whole section: schedule__=ScheduleConfig(...)
            setattr(out, section, copy.deepcopy(value))
    out.run.name = None
    validate(out)
    return out


def pipeline_config(cfg: Config, overrides: Sequence[str]) -> Config:
    """A copy of ``cfg`` with ``key=value`` overrides, for a pipeline to start from: validated, except
    that a cross-modal stage-2 method (``ssl.method=cmmc``) needs no ``ssl.source_run`` yet: the
    pipeline sets each stage's source network and validates that stage."""
    return apply_overrides(copy.deepcopy(cfg), list(overrides), pipeline=True)


def stage1_stages(cfg: Config, root: str | Path) -> dict[str, Stage]:
    """Stage 1: each modality alone with ``schedule.stage1_method`` (a plain pretrain run). Its
    config keeps only the schedule fields that shape it, so that pipelines differing in stage 2
    (method, cycles, alternate or joint) share the same stage-1 runs."""
    mods = cfg.schedule.modalities
    schedule = ScheduleConfig(stage1_method=cfg.schedule.stage1_method, modalities=mods)
    return {m: Stage(f"stage1-{m}", derive(cfg, ssl__method=cfg.schedule.stage1_method, ssl__modality=m,
                                           ssl__other_modality=mods[1 - mods.index(m)], ssl__joint=False,
                                           ssl__init_run=None, ssl__source_run=None, schedule__=schedule),
                     Path(root) / f"stage1-{m}")
            for m in mods}


def plan_pipeline(cfg: Config, root: str | Path, stage1_root: str | Path | None = None) -> list[Stage]:
    """Every stage of the schedule of ``cfg`` (stage 2 trains ``cfg.ssl.method``), in order."""
    root = Path(root)
    first = stage1_stages(cfg, stage1_root or root)
    stages = list(first.values())
    latest = {m: str(s.run_dir) for m, s in first.items()}
    sc, method = cfg.schedule, METHODS[cfg.ssl.method]
    stage2 = dict(ssl__method=cfg.ssl.method, optim__milestones=tuple(sc.cycle_milestones))
    if method.trains_jointly and not sc.alternate:
        m, other = sc.modalities
        joint = derive(cfg, ssl__modality=m, ssl__other_modality=other, ssl__joint=True,
                       ssl__init_run=latest[m], ssl__source_run=latest[other],
                       optim__epochs=sc.cycles * sc.cycle_epochs, **stage2)
        return stages + [Stage("joint", joint, root / "joint")]
    for cycle in range(1, sc.cycles + 1):
        for m in sc.modalities:
            other = sc.modalities[1 - sc.modalities.index(m)]
            source = latest[other] if method.cross_modal else None
            run_dir = root / f"cycle{cycle}-{m}"
            stage_cfg = derive(cfg, ssl__modality=m, ssl__other_modality=other, ssl__joint=False,
                               ssl__init_run=latest[m], ssl__source_run=source,
                               optim__epochs=sc.cycle_epochs, **stage2)
            stages.append(Stage(f"cycle{cycle}-{m}", stage_cfg, run_dir))
            latest[m] = str(run_dir)
    return stages


def final_networks(stages: list[Stage]) -> dict[str, tuple[Path, str]]:
    """The last network of each modality: ``{modality: (run_dir, modality)}`` (a joint run
    holds both)."""
    out: dict[str, tuple[Path, str]] = {}
    for stage in stages:
        out[stage.modality] = (stage.run_dir, stage.modality)
        if stage.cfg.ssl.joint:
            out[stage.cfg.ssl.other_modality] = (stage.run_dir, stage.cfg.ssl.other_modality)
    return out


def run_pipeline(cfg: Config, root: str | Path, stage1_root: str | Path | None = None) -> dict[str, Any]:
    """Train (or reuse, or resume) every stage of :func:`plan_pipeline` in order.

    Returns ``stages`` (name, run_dir, reused, final kNN R@1, seconds), ``final`` (``{modality:
    run_dir}`` of the last network of each modality) and ``finished``. A stage that stops before
    the end of its schedule is never used: Ctrl-C raises :class:`~cmmc_lib.train.Interrupted` (with
    what was done), and a stage cut short otherwise (``run.max_steps``) ends the pipeline there
    (``finished`` False, ``stopped_at`` its name). Running the same pipeline again continues it.
    """
    stages = plan_pipeline(cfg, root, stage1_root)
    prepare_synthetic(cfg.data)             # generated and frame-cached once, before any stage trains
    with FolderLock(root, "pipeline folder") if launch_rank() == 0 else nullcontext():
        return _run_stages(cfg, root, stages)


def _run_stages(cfg: Config, root: str | Path, stages: list[Stage]) -> dict[str, Any]:
    done: list[dict[str, Any]] = []
    summary = {"root": str(root), "method": cfg.ssl.method, "stages": done, "finished": False}
    for i, stage in enumerate(stages, start=1):
        log.info("[%d/%d] %s", i, len(stages), stage.describe())
        result = train_or_load(stage.cfg, stage.run_dir)
        done.append({"name": stage.name, "run_dir": str(stage.run_dir), "modality": stage.modality,
                     "reused": result["reused"], "knn_r1": result.get("knn_r1"),
                     "seconds": result.get("seconds", 0.0), "finished": result["finished"]})
        if result["interrupted"]:
            raise Interrupted(f"stopped in {stage.name} ({stage.run_dir}); run the same command again to continue",
                              {**summary, "stopped_at": stage.name, "interrupted": True})
        if not result["finished"]:
            return {**summary, "stopped_at": stage.name, "final": {}}
    final = {m: str(run_dir) for m, (run_dir, _) in final_networks(stages).items()}
    return {**summary, "final": final, "finished": True}


def is_complete(stages: list[Stage]) -> bool:
    """Whether every stage has finished its schedule (what an evaluation of the result needs)."""
    return all(RunFolder(s.run_dir).is_finished() for s in stages)
