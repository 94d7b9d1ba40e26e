"""run_jobs (cmmc_lib.jobs): the loop flow extraction and the frame cache share, here or on a
pool of worker processes, with a progress bar and a clean Ctrl-C."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from cmmc_lib.jobs import run_jobs


def _square(x: int) -> tuple[int, int]:
    return x, x * x


def _nap(seconds: float, folder: str) -> float:
    (Path(folder) / f"started-{seconds}-{os.getpid()}").touch()
    time.sleep(seconds)
    return seconds


def _mark_worker(folder: str) -> None:
    (Path(folder) / f"worker-{os.getpid()}").touch()


def test_in_this_process_one_after_another():
    got, shown = [], []
    interrupted = run_jobs(_square, [(1,), (2,), (3,)], got.append, progress=False,
                           postfix=lambda: shown.append(len(got)) or {"n": len(got)})
    assert interrupted is False and got == [(1, 1), (2, 4), (3, 9)] and shown == [1, 2, 3]


def test_a_runner_of_its_own_serves_one_worker():
    got = []
    run_jobs(_square, [(1,), (2,)], got.append, progress=False,
             serial=lambda jobs, report: [report(("batched", j[0])) for j in jobs])
    assert got == [("batched", 1), ("batched", 2)]


def test_a_pool_runs_every_job_once_in_set_up_workers(tmp_path):
    got = []
    interrupted = run_jobs(_square, [(i,) for i in range(5)], got.append, workers=2, progress=False,
                           worker_setup=_mark_worker, worker_setup_args=(str(tmp_path),))
    assert interrupted is False and sorted(got) == [(i, i * i) for i in range(5)]
    workers = {p.name for p in tmp_path.iterdir()}
    assert 1 <= len(workers) <= 2 and str(os.getpid()) not in {w.split("-")[1] for w in workers}


def test_ctrl_c_cancels_the_queue_kills_the_running_and_returns_true(tmp_path):
    got = []

    def ctrl_c_after_the_first(result):
        got.append(result)
        os.kill(os.getpid(), signal.SIGINT)                 # the user presses Ctrl-C
    jobs = [(0.0, str(tmp_path)), (30.0, str(tmp_path)), (30.0, str(tmp_path)), (30.0, str(tmp_path))]
    t0 = time.monotonic()
    assert run_jobs(_nap, jobs, ctrl_c_after_the_first, workers=2, progress=False) is True
    assert time.monotonic() - t0 < 20 and got == [0.0]      # not the 30 s naps
    started = [p.name for p in tmp_path.iterdir()]
    assert len(started) <= 3                                # the last nap never started


def test_an_exception_in_a_job_stops_the_run():
    with pytest.raises(ZeroDivisionError):
        run_jobs(lambda x: 1 / x, [(1,), (0,)], lambda r: None, progress=False)
