"""The learning-rate schedules of the training loop (``optim.schedule``, ``optim.warmup_steps``):
step decay per epoch, or cosine per step after a linear warm-up; a pure function of the position."""
import shutil

import pytest

from cmmc_lib import runs
from cmmc_lib.config import OptimConfig, preset, validate
from cmmc_lib.runs import read_metrics
from cmmc_lib.train import lr_at, pretrain, resume_config

from test_train import tiny_cfg, tiny_root  # noqa: F401  (the session's tiny data set)


def lrs(optim: OptimConfig, steps_per_epoch: int) -> list[float]:
    return [lr_at(optim, e, b, steps_per_epoch) for e in range(optim.epochs) for b in range(steps_per_epoch)]


def test_cosine_warms_up_to_lr_then_decays_to_nearly_zero_at_the_last_step():
    optim = OptimConfig(lr=1e-3, epochs=33, schedule="cosine", warmup_steps=50)
    sched = lrs(optim, steps_per_epoch=30)                      # 990 steps, as the gates preset
    assert sched[0] == pytest.approx(1e-3 / 50)                 # warm-up: lr * (step + 1) / 50
    assert sched[24] == pytest.approx(1e-3 * 25 / 50)
    assert sched[49] == pytest.approx(1e-3) and sched[50] == pytest.approx(1e-3)
    assert sched[50 + 470] == pytest.approx(0.5e-3)            # half-way through the decay
    assert 0 < sched[-1] < 1e-7                                 # ~0 at the last step
    assert all(a >= b for a, b in zip(sched[50:], sched[51:]))  # decreasing after the warm-up


def test_the_step_schedule_is_constant_within_an_epoch_and_warm_up_scales_it():
    step = OptimConfig(lr=1e-3, epochs=4, milestones=(2,))
    assert lrs(step, 3) == pytest.approx([1e-3] * 6 + [1e-4] * 6)
    warm = OptimConfig(lr=1e-3, epochs=4, milestones=(2,), warmup_steps=4)
    assert lrs(warm, 3)[:5] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])


def test_a_stage2_cycle_runs_its_cosine_over_its_own_epochs():
    from cmmc_lib.pipeline import plan_pipeline
    cfg = preset("tiny", ["ssl.method=cmmc", "optim.schedule=cosine", "schedule.cycle_epochs=2"])
    cycle = plan_pipeline(cfg, "runs/x")[-1].cfg
    assert cycle.optim.schedule == "cosine" and cycle.optim.epochs == 2
    sched = lrs(cycle.optim, steps_per_epoch=5)
    assert sched[0] == pytest.approx(cycle.optim.lr) and sched[-1] < 0.03 * cycle.optim.lr


def test_an_unknown_schedule_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"optim.schedule='linear' is unknown: choose from step, cosine"):
        validate(preset("tiny", ["optim.schedule=linear"]))
    with pytest.raises(ValueError, match="optim.warmup_steps must be >= 0"):
        validate(preset("tiny", ["optim.warmup_steps=-1"]))


def test_a_resumed_cosine_run_sets_the_same_lr_at_every_step(tiny_root, tmp_path):  # noqa: F811
    extra = ("optim.epochs=2", "run.ckpt_every=3", "run.keep_ckpts=10", "optim.schedule=cosine",
             "optim.warmup_steps=2")
    full = pretrain(tiny_cfg(tiny_root, *extra), tmp_path / "full")
    pretrain(tiny_cfg(tiny_root, *extra, f"run.max_steps={full['steps'] - 2}"), tmp_path / "cut")
    cut = runs.RunFolder(tmp_path / "cut")
    shutil.copy(cut.checkpoint_path(3), cut.checkpoint_path("last"))      # as if killed after step 3
    pretrain(resume_config(tmp_path / "cut"), tmp_path / "cut", resume=True)
    rows = [[(r["step"], r["lr"], r["loss"]) for r in read_metrics(d) if r["kind"] == "step"]
            for d in (tmp_path / "full", tmp_path / "cut")]
    assert rows[0] == rows[1]
    lr = [r[1] for r in rows[0]]
    assert lr[:3] == pytest.approx([5e-4, 1e-3, 1e-3])                   # warm-up, then the cosine's start
    assert all(a > b for a, b in zip(lr[2:], lr[3:]))                       # set per step, not per epoch
