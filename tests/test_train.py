"""The training loop: determinism, exact resume, clear stops, the CLI, and DDP on CPU."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cmmc_lib import runs, train
from cmmc_lib.config import preset
from cmmc_lib.runs import RunFolder, read_metrics
from cmmc_lib.train import (NonFiniteLossError, epoch_order, pretrain, resume_config,
                            train_or_load)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_root():
    from cmmc_lib.data.synthetic import write_synthetic_dataset
    root = REPO / "data" / "synthetic" / "tiny"
    write_synthetic_dataset(root, size="tiny", seed=0, progress=False)
    return root


def tiny_cfg(root, *extra):
    return preset("tiny", [f"data.root={root}", "run.progress=false", "knn_every=0", *extra])


def step_losses(run_dir):
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir) if r["kind"] == "step"]


def patch_step_loss(monkeypatch, after_loss):
    """Every method step the loop builds passes its n-th loss through ``after_loss(n, loss)``."""
    real = train.build_method

    def build(cfg, source=None):
        step = real(cfg, source)
        original, calls = step.loss, {"n": 0}

        def loss(batch, generator=None):
            value, stats = original(batch, generator)
            calls["n"] += 1
            return after_loss(calls["n"], value), stats
        step.loss = loss
        return step
    monkeypatch.setattr(train, "build_method", build)
    return real


def test_epoch_order_is_seeded_and_splits_ranks():
    a = epoch_order(20, 4, seed=0, epoch=0)
    assert a == epoch_order(20, 4, seed=0, epoch=0) and a != epoch_order(20, 4, seed=0, epoch=1)
    # the batch is global: two ranks each take half of every batch of 4, so an epoch has 5 steps
    r0, r1 = epoch_order(20, 4, 0, 0, rank=0, world=2), epoch_order(20, 4, 0, 0, rank=1, world=2)
    assert len(r0) == len(r1) == 5 and all(len(b) == 2 for b in r0 + r1)
    assert [sorted(b0 + b1) for b0, b1 in zip(r0, r1)] == [sorted(b) for b in a]
    with pytest.raises(ValueError, match="divide evenly over 3 processes"):
        epoch_order(20, 4, 0, 0, rank=0, world=3)
    with pytest.raises(ValueError, match="fewer than one batch"):
        epoch_order(3, 4, 0, 0)


def test_two_tiny_runs_give_identical_losses(tiny_root, tmp_path):
    cfg = tiny_cfg(tiny_root, "run.max_steps=5")
    pretrain(cfg, tmp_path / "a")
    pretrain(cfg, tmp_path / "b")
    a, b = step_losses(tmp_path / "a"), step_losses(tmp_path / "b")
    assert len(a) == 5 and a == b


@pytest.mark.slow
def test_loader_workers_do_not_change_the_losses(tiny_root, tmp_path):
    # two epochs: the persistent workers of the first serve the second (set_epoch through shared memory)
    pretrain(tiny_cfg(tiny_root, "optim.epochs=2"), tmp_path / "w0")
    pretrain(tiny_cfg(tiny_root, "optim.epochs=2", "data.num_workers=2", "data.prefetch=3"), tmp_path / "w2")
    assert step_losses(tmp_path / "w0") == step_losses(tmp_path / "w2") and len(step_losses(tmp_path / "w0")) == 12


def test_metrics_rows_are_the_same_whatever_log_every(tiny_root, tmp_path):
    # the step stats are fetched every run.log_every steps (and before checkpoints): rows must not change
    for every in (1, 4, 1000):
        pretrain(tiny_cfg(tiny_root, "optim.epochs=2", f"run.log_every={every}", "ssl.method=cmmc",
                          "run.ckpt_every=5"), tmp_path / f"e{every}")
    rows = [[{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(tmp_path / f"e{e}")]
            for e in (1, 4, 1000)]
    assert rows[0] == rows[1] == rows[2] and len(rows[0]) == 2 * 6 + 2
    assert [r["step"] for r in rows[0] if r["kind"] == "step"] == list(range(1, 13))


def test_epoch_log_records_on_the_device_and_fetches_every_log_every_steps(tmp_path):
    from cmmc_lib.train import Env, EpochLog, Position
    cfg = preset("tiny", ["run.log_every=3", "run.progress=false"])
    run = runs.RunFolder(tmp_path / "r")
    run.path.mkdir()
    log = EpochLog(run, cfg, Position(), Env(0, 1, torch.device("cpu")), steps=6, started=0.0)
    pos = Position()
    for n, value in enumerate([1.0, 2.0], start=1):
        pos.step = pos.batch = n
        log.step(pos, {"loss": torch.tensor(value), "acc": 0.5}, torch.tensor(value), lr=0.1)
    assert not run.metrics.path.exists() and len(log.pending) == 2          # nothing fetched yet
    pos.step = pos.batch = 3
    log.step(pos, {"loss": torch.tensor(3.0), "acc": 0.25}, torch.tensor(3.0), lr=0.1)
    rows = read_metrics(tmp_path / "r")
    assert [(r["step"], r["loss"], r["acc"]) for r in rows] == [(1, 1.0, 0.5), (2, 2.0, 0.5), (3, 3.0, 0.25)]
    pos.step = pos.batch = 4
    log.step(pos, {"loss": torch.tensor(4.0), "acc": 0.5}, torch.tensor(float("nan")), lr=0.1)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 4 \(epoch 0\).*\(none yet\)"):
        log.flush()
    assert len(read_metrics(tmp_path / "r")) == 3 and log.losses == [1.0, 2.0, 3.0]


def test_channels_last_on_cpu_trains_the_same_run_to_rounding(tiny_root, tmp_path):
    from cmmc_lib.train import Env, prepare_method
    from cmmc_lib.ssl.factory import build_method
    cfg = tiny_cfg(tiny_root, "run.channels_last=on")
    method = prepare_method(build_method(cfg), cfg, Env(0, 1, torch.device("cpu"), channels_last=True))
    conv = next(m for m in method.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    # The first step compares the computation itself (same weights, same batch). Later steps are not
    # a layout test: Adam divides by sqrt(v), so a weight whose gradient is rounding noise moves by
    # about +-lr either way, and the runs part by more than rounding (measured: 5e-4 after one step).
    pretrain(tiny_cfg(tiny_root, "run.max_steps=1", "ssl.method=cmmc"), tmp_path / "ncdhw")
    pretrain(tiny_cfg(tiny_root, "run.max_steps=1", "ssl.method=cmmc", "run.channels_last=on"), tmp_path / "cl")
    a, b = step_losses(tmp_path / "ncdhw"), step_losses(tmp_path / "cl")
    assert [s for s, _ in a] == [s for s, _ in b] == [1]
    assert a[0][1] == pytest.approx(b[0][1], rel=1e-6)
    with pytest.raises(ValueError, match="run.channels_last must be one of auto, on, off"):
        pretrain(tiny_cfg(tiny_root, "run.channels_last=yes"), tmp_path / "bad")


@pytest.mark.slow
def test_compiled_blocks_train_the_same_run_to_rounding(tiny_root, tmp_path):
    pretrain(tiny_cfg(tiny_root, "run.max_steps=2"), tmp_path / "eager")
    out = pretrain(tiny_cfg(tiny_root, "run.max_steps=2", "run.compile=true"), tmp_path / "compiled")
    assert out["steps"] == 2
    losses = {name: [l for _, l in step_losses(tmp_path / name)] for name in ("eager", "compiled")}
    assert len(losses["compiled"]) == 2 and losses["compiled"] == pytest.approx(losses["eager"], rel=1e-4)
    saved = runs.RunFolder(tmp_path / "compiled").load_checkpoint()["method"]
    assert not any("_orig_mod" in k for k in saved)                          # compiled in place: same names


def test_bf16_autocast_path_trains_with_float32_logits(tiny_root, tmp_path):
    # the GPU's mixed-precision path, exercised with CPU autocast: finite, repeatable losses, fp32 weights
    cfg = tiny_cfg(tiny_root, "run.max_steps=3", "run.amp=bf16", "ssl.method=cmmc")
    out = pretrain(cfg, tmp_path / "bf16")
    pretrain(cfg, tmp_path / "again")
    assert out["steps"] == 3 and all(torch.isfinite(torch.tensor(l)) for _, l in step_losses(tmp_path / "bf16"))
    assert step_losses(tmp_path / "bf16") == step_losses(tmp_path / "again")
    assert all(v.dtype == torch.float32 for v in runs.RunFolder(tmp_path / "bf16").load_checkpoint()["backbone"].values()
               if v.is_floating_point())


def test_interrupted_run_resumes_exactly(tiny_root, tmp_path):
    cfg = tiny_cfg(tiny_root, "optim.epochs=2", "run.ckpt_every=3", "run.keep_ckpts=10", "ssl.method=cmmc")
    full = pretrain(cfg, tmp_path / "full")
    assert full["finished"] and full["steps"] >= 6
    # the interrupted run: stops mid-epoch, then we roll back to the step-3 checkpoint, as if it
    # had been killed right after writing it (metrics rows after step 3 exist but must be redone)
    cut = tiny_cfg(tiny_root, "optim.epochs=2", "run.ckpt_every=3", "run.keep_ckpts=10", "ssl.method=cmmc",
                   f"run.max_steps={full['steps'] - 2}")
    pretrain(cut, tmp_path / "cut")
    cut = runs.RunFolder(tmp_path / "cut")
    shutil.copy(cut.checkpoint_path(3), cut.checkpoint_path("last"))
    assert not RunFolder(tmp_path / "cut").is_finished()
    resumed = pretrain(resume_config(tmp_path / "cut"), tmp_path / "cut", resume=True)
    assert resumed["resumed_from"] == 3 and resumed["finished"]
    assert step_losses(tmp_path / "cut") == step_losses(tmp_path / "full")
    epochs = [[{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(d) if r["kind"] == "epoch"]
              for d in (tmp_path / "cut", tmp_path / "full")]
    assert epochs[0] == epochs[1] and len(epochs[0]) == 2
    a = runs.RunFolder(tmp_path / "full").load_checkpoint()["backbone"]
    b = runs.RunFolder(tmp_path / "cut").load_checkpoint()["backbone"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ctrl_c_finishes_the_step_writes_a_checkpoint_and_resumes_exactly(tiny_root, tmp_path, monkeypatch):
    cfg = tiny_cfg(tiny_root, "optim.epochs=2", "run.ckpt_every=100")
    pretrain(cfg, tmp_path / "full")

    def ctrl_c_at_step_4(n, loss):
        if n == 4:
            os.kill(os.getpid(), signal.SIGINT)              # the user presses Ctrl-C mid-step
        return loss
    real = patch_step_loss(monkeypatch, ctrl_c_at_step_4)
    stopped = pretrain(cfg, tmp_path / "cut")
    assert stopped["interrupted"] and not stopped["finished"] and stopped["steps"] == 4
    assert runs.RunFolder(tmp_path / "cut").load_checkpoint()["step"] == 4          # nothing lost
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.setattr(train, "build_method", real)
    pretrain(cfg, tmp_path / "cut", resume=True)
    assert step_losses(tmp_path / "cut") == step_losses(tmp_path / "full")


def test_resume_without_last_pt_continues_from_the_newest_step_checkpoint(tiny_root, tmp_path):
    cfg = tiny_cfg(tiny_root, "optim.epochs=2", "run.ckpt_every=3", "run.keep_ckpts=10")
    pretrain(cfg, tmp_path / "full")
    pretrain(tiny_cfg(tiny_root, "optim.epochs=2", "run.ckpt_every=3", "run.keep_ckpts=10", "run.max_steps=8"),
             tmp_path / "cut")
    runs.RunFolder(tmp_path / "cut").checkpoint_path("last").unlink()          # lost; step_0000006.pt is intact
    resumed = pretrain(resume_config(tmp_path / "cut"), tmp_path / "cut", resume=True)
    assert resumed["resumed_from"] == 6 and resumed["finished"]
    assert step_losses(tmp_path / "cut") == step_losses(tmp_path / "full")      # no row lost or doubled


def test_resume_needs_a_run_and_max_steps_counts_the_runs_steps(tiny_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no run"):
        pretrain(tiny_cfg(tiny_root), tmp_path / "nothing-here", resume=True)
    assert not (tmp_path / "nothing-here").exists()
    pretrain(tiny_cfg(tiny_root, "optim.epochs=3", "run.max_steps=4"), tmp_path / "r")
    again = pretrain(tiny_cfg(tiny_root, "optim.epochs=3", "run.max_steps=4"), tmp_path / "r", resume=True)
    assert again["steps"] == 4 and [s for s, _ in step_losses(tmp_path / "r")] == [1, 2, 3, 4]


def test_a_run_folder_is_not_overwritten_and_train_or_load_reuses_it(tiny_root, tmp_path):
    cfg = tiny_cfg(tiny_root, "optim.epochs=1")
    first = train_or_load(cfg, tmp_path / "r")
    assert not first["reused"] and RunFolder(tmp_path / "r").is_finished()
    with pytest.raises(ValueError, match="--resume"):
        pretrain(cfg, tmp_path / "r")
    again = train_or_load(cfg, tmp_path / "r")
    assert again["reused"] and again["steps"] == first["steps"]
    assert again["final_loss"] == first["final_loss"]         # the last epoch's mean loss, trained or reused


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_root, tmp_path, monkeypatch):
    patch_step_loss(monkeypatch, lambda n, loss: loss * float("nan") if n == 5 else loss)
    with pytest.raises(NonFiniteLossError, match="step 5 .*last good checkpoint"):   # the 5th step diverged
        pretrain(tiny_cfg(tiny_root, "run.ckpt_every=2"), tmp_path / "nan")
    ckpt = runs.RunFolder(tmp_path / "nan").load_checkpoint()
    assert ckpt["step"] == 4 and all(torch.isfinite(v).all() for v in ckpt["backbone"].values() if v.is_floating_point())


def test_cli_pretrain_writes_a_run_folder(tiny_root, tmp_path):
    run_dir = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "cmmc_lib.cli", "pretrain", "--preset", "tiny", "--method", "moco",
                           "--modality", "flow", "--run-dir", str(run_dir), "--json", f"data.root={tiny_root}",
                           "run.max_steps=3"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["run_dir"] == str(run_dir) and out["steps"] == 3
    assert (run_dir / "config.json").is_file() and (run_dir / "metrics.csv").is_file()
    assert runs.load_config(run_dir).ssl.modality == "flow"
    bad = subprocess.run([sys.executable, "-m", "cmmc_lib.cli", "pretrain", "--preset", "tiny", "ssl.layer_k=9",
                          "--method", "cmmc", f"data.root={tiny_root}", "--run-dir", str(tmp_path / "bad")],
                         capture_output=True, text=True, cwd=REPO)
    last_line = bad.stderr.strip().splitlines()[-1]
    assert bad.returncode == 2 and last_line.startswith("cmmc: error:") and "layer_k=9" in last_line


def test_cli_resume_keeps_the_runs_own_settings(tiny_root, tmp_path):
    run_dir = tmp_path / "r"
    first = subprocess.run([sys.executable, "-m", "cmmc_lib.cli", "pretrain", "--preset", "tiny", "--json",
                            "--run-dir", str(run_dir), f"data.root={tiny_root}", "optim.epochs=4",
                            "run.max_steps=8", "knn_every=2"], capture_output=True, text=True, cwd=REPO)
    assert first.returncode == 0, first.stderr[-2000:]
    assert not json.loads(first.stdout)["finished"]
    second = subprocess.run([sys.executable, "-m", "cmmc_lib.cli", "pretrain", "--resume", "--json",
                             "--run-dir", str(run_dir)], capture_output=True, text=True, cwd=REPO)
    assert second.returncode == 0, second.stderr[-2000:]
    out = json.loads(second.stdout)
    assert out["finished"] and out["epochs"] == 4 and out["resumed_from"] == 8
    assert runs.load_config(run_dir).optim.epochs == 4
    epochs = [r for r in read_metrics(run_dir) if r["kind"] == "epoch"]
    # the monitor ran every 2nd epoch: the others carry no (stale) value
    assert [r["knn_r1"] is not None for r in epochs] == [False, True, False, True]


def test_a_fresh_start_drops_the_rows_of_a_run_that_died_before_its_first_checkpoint(tiny_root, tmp_path,
                                                                                      monkeypatch):
    real = patch_step_loss(monkeypatch, lambda n, loss: loss * float("inf") if n == 3 else loss)
    with pytest.raises(NonFiniteLossError, match=r"\(none yet\)"):
        pretrain(tiny_cfg(tiny_root, "run.ckpt_every=50", "optim.epochs=1"), tmp_path / "r")
    monkeypatch.setattr(train, "build_method", real)
    train_or_load(tiny_cfg(tiny_root, "optim.epochs=1"), tmp_path / "r")
    assert [s for s, _ in step_losses(tmp_path / "r")] == list(range(1, 7))


DDP_WORKER = r'''
"""Run `cmmc ...` under torchrun, recording each rank's keys and own-key logit columns, and its final state."""
import sys
import torch
import cmmc_lib.train as train

out, record = sys.argv[1], {"keys": [], "own_columns": [], "own_gap": []}
real_build, real_save = train.build_method, train.save


def build(cfg, source=None):
    step = real_build(cfg, source)
    moco = step.moco
    keys, contrast = moco.keys, moco.contrast

    def keys_recorded(x):
        k = keys(x)
        record["keys"].append(k.detach().clone())
        return k

    def contrast_recorded(q, k_local, perm=None):
        c = contrast(q, k_local, perm)
        rows = torch.arange(q.shape[0])
        own = c.logits[rows, c.own].detach() * moco.temperature              # q_i . k_i in the own-key column
        record["own_columns"].append(c.own.tolist())
        record["own_gap"].append(float((own - (q.detach().float() * k_local.float()).sum(1)).abs().max()))
        return c
    moco.keys, moco.contrast = keys_recorded, contrast_recorded
    return step


def save(run, cfg, method, optimizer, pos, env, periodic=False):
    if not periodic:
        torch.save({"method": method.state_dict(), "record": record}, f"{out}/rank{env.rank}.pt")
    return real_save(run, cfg, method, optimizer, pos, env, periodic)


train.build_method, train.save = build, save
from cmmc_lib.cli import main
sys.exit(main(sys.argv[2:]))
'''


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu_keep_the_ranks_identical_and_queue_both_ranks_keys(tiny_root, tmp_path):
    run_dir, script = tmp_path / "ddp", tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(free_port()), str(script), str(tmp_path), "pretrain", "--preset",
                           "tiny", "--method", "cmmc", "--json", "--run-dir", str(run_dir), f"data.root={tiny_root}",
                           "run.max_steps=3", "ssl.queue_size=1000", "knn_every=0", "run.device=cpu"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["steps"] == 3                       # rank 0 alone reports
    ckpt = runs.RunFolder(run_dir).load_checkpoint()
    batch = ckpt["config"]["optim"]["batch_size"]                      # global: each rank takes batch / 2
    local = batch // 2
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    # every weight (query, momentum and frozen source networks) and the queue are the same on both ranks;
    # BatchNorm running statistics are each rank's own until DDP broadcasts rank 0's at the next forward
    bn_stats = ("running_mean", "running_var", "num_batches_tracked")
    same = [k for k in r0["method"] if not k.endswith(bn_stats)]
    assert len(same) > 50 and all(torch.equal(r0["method"][k], r1["method"][k]) for k in same)
    assert all(torch.equal(r0["method"][k], ckpt["method"][k]) for k in same)          # the saved run is rank 0's
    # each step enqueues the keys of BOTH ranks in rank order: rank 0's B/2 rows, then rank 1's
    queue = r0["method"]["moco.queue"]
    assert int(r0["method"]["moco.queue_ptr"][0]) == 3 * batch
    for step in range(3):
        rows = queue[step * batch: (step + 1) * batch]
        assert torch.equal(rows[:local], r0["record"]["keys"][step]) and torch.equal(rows[local:], r1["record"]["keys"][step])
    # MoCo's layout on every rank: each query's own (local) key in column 0
    assert r0["record"]["own_columns"] == r1["record"]["own_columns"] == [[0] * local] * 3
    assert max(r0["record"]["own_gap"] + r1["record"]["own_gap"]) < 1e-5


def test_cpu_bf16_weight_gradients_are_exact_on_maps_smaller_than_the_kernel():
    # The cause of a flaky bf16 run: oneDNN's bf16 conv3d weight gradient on a 2x2x2 map read
    # uninitialised memory (NaN or 1e30 depending on what ran before). exact_kernels turns
    # oneDNN off around the step; each repetition must then give the same finite gradient.
    from cmmc_lib.train import autocast_for, exact_kernels
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(64, 128, 3, padding=1, bias=False)
    x = torch.randn(8, 64, 2, 2, 2)
    grads = []
    for _ in range(6):
        junk = torch.full((1 << 22,), float("nan"))          # leave garbage where buffers get reused
        del junk
        conv.zero_grad()
        with exact_kernels(torch.device("cpu"), "bf16"):
            with autocast_for(torch.device("cpu"), "bf16"):
                y = conv(x)
            assert y.dtype == torch.bfloat16                   # autocast is on
            (y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        grads.append(conv.weight.grad.clone())
    assert all(torch.isfinite(g).all() for g in grads)
    assert all(torch.equal(g, grads[0]) for g in grads)


@pytest.mark.slow
def test_pretrain_in_an_empty_folder_makes_the_synthetic_data_on_first_use(tmp_path):
    env = {**os.environ, "CMMC_DATA_ROOT": str(tmp_path / "data")}
    proc = subprocess.run([sys.executable, "-m", "cmmc_lib.cli", "pretrain", "--preset", "tiny", "--json",
                           "--run-dir", str(tmp_path / "run"), "run.max_steps=2", "knn_every=0"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "generating the tiny set (72 videos, seed 0) on first use" in proc.stderr
    assert (tmp_path / "data" / "synthetic" / "tiny" / "meta.json").is_file()
    assert json.loads(proc.stdout)["steps"] == 2


def test_init_run_starts_from_the_runs_query_encoder_with_a_fresh_queue(tiny_root, tmp_path):
    pretrain(tiny_cfg(tiny_root, "optim.epochs=1"), tmp_path / "stage1")
    stage1 = runs.RunFolder(tmp_path / "stage1").load_checkpoint()["method"]
    pretrain(tiny_cfg(tiny_root, "ssl.method=cmmc", f"ssl.init_run={tmp_path / 'stage1'}", "run.max_steps=0"),
             tmp_path / "stage2")
    stage2 = runs.RunFolder(tmp_path / "stage2").load_checkpoint()["method"]
    encoder = [k for k in stage1 if k.startswith("moco.encoder_q.")]
    assert len(encoder) > 20
    for k in encoder:                                   # query and key encoder: exactly stage 1's query encoder
        assert torch.equal(stage2[k], stage1[k])
        assert torch.equal(stage2[k.replace("encoder_q", "encoder_k")], stage1[k])
    assert int(stage2["moco.queue_ptr"]) == 0 and not torch.equal(stage2["moco.queue"], stage1["moco.queue"])
    with pytest.raises(ValueError, match="init_run .* trained .*'rgb'.* but this run is .*'flow'"):
        pretrain(tiny_cfg(tiny_root, "ssl.modality=flow", f"ssl.init_run={tmp_path / 'stage1'}"), tmp_path / "bad")


# ----------------------------------------------------------------------------- nothing lost, nothing half-done
def test_a_torn_last_pt_resumes_from_the_newest_intact_step_checkpoint(tiny_root, tmp_path):
    cfg = tiny_cfg(tiny_root, "optim.epochs=2", "run.ckpt_every=3", "run.keep_ckpts=10")
    pretrain(cfg, tmp_path / "full")
    pretrain(tiny_cfg(tiny_root, "optim.epochs=2", "run.ckpt_every=3", "run.keep_ckpts=10", "run.max_steps=8"),
             tmp_path / "cut")
    last = runs.RunFolder(tmp_path / "cut").checkpoint_path("last")
    for torn in (b"", last.read_bytes()[:1000]):              # killed at the first byte, or half-way
        last.write_bytes(torn)
        resumed = pretrain(resume_config(tmp_path / "cut"), tmp_path / "cut", resume=True)
        assert resumed["resumed_from"] == 6 and resumed["finished"]
        assert step_losses(tmp_path / "cut") == step_losses(tmp_path / "full")
        last.write_bytes(torn)                                # and again, from the end of the run
        (tmp_path / "cut" / "checkpoints" / "step_0000012.pt").unlink()
        (tmp_path / "cut" / "checkpoints" / "step_0000009.pt").unlink()


def test_a_torn_metrics_row_resumes_from_the_checkpoint_before_it_and_no_row_is_lost(tiny_root, tmp_path):
    cfg = ("optim.epochs=1", "run.ckpt_every=2", "run.keep_ckpts=10")
    full = pretrain(tiny_cfg(tiny_root, *cfg), tmp_path / "full")
    pretrain(tiny_cfg(tiny_root, *cfg, "run.max_steps=4"), tmp_path / "cut")
    metrics = tmp_path / "cut" / "metrics.csv"
    metrics.write_bytes(metrics.read_bytes()[:-10])            # the write of step 4's row cut short
    resumed = pretrain(resume_config(tmp_path / "cut"), tmp_path / "cut", resume=True)
    assert resumed["resumed_from"] == 2                         # step 4 is trained and logged again
    assert step_losses(tmp_path / "cut") == step_losses(tmp_path / "full")
    assert resumed["final_loss"] == full["final_loss"]


def test_a_failed_start_leaves_no_folder_and_no_half_written_files_survive(tiny_root, tmp_path):
    with pytest.raises(FileNotFoundError):
        pretrain(tiny_cfg(tiny_root, f"data.root={tmp_path / 'nowhere'}", "data.dataset=ucf101"), tmp_path / "r")
    assert not (tmp_path / "r").exists()                      # no folder with a lone config.json
    ckpts = tmp_path / "k" / "checkpoints"
    pretrain(tiny_cfg(tiny_root, "run.max_steps=2"), tmp_path / "k")
    (ckpts / ".step_0000004.tmp-999-dead.pt").write_bytes(b"half")      # what kill -9 mid-write leaves
    pretrain(resume_config(tmp_path / "k"), tmp_path / "k", resume=True)
    assert not list(ckpts.glob(".*tmp*"))


def test_two_writers_on_one_run_folder_the_second_stops_naming_the_first(tiny_root, tmp_path):
    from cmmc_lib.runs import FolderLockedError
    with runs.RunFolder(tmp_path / "r").lock("cmmc pretrain (the first)"):
        with pytest.raises(FolderLockedError, match=r"run folder .*r is in use by pid \d+ .*the first"):
            pretrain(tiny_cfg(tiny_root, "run.max_steps=2"), tmp_path / "r")
    assert not (tmp_path / "r" / "metrics.csv").exists()
    assert pretrain(tiny_cfg(tiny_root, "run.max_steps=2"), tmp_path / "r")["steps"] == 2     # free again

