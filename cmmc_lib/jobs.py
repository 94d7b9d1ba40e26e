"""Run one function over many jobs, here or on a pool of worker processes, with a progress bar
and a clean Ctrl-C: the loop that optical-flow extraction (:mod:`cmmc_lib.flow.extract`) and the
frame cache (:mod:`cmmc_lib.data.frame_cache`) share.

Resuming is the callers' part: each job writes its result atomically and a caller plans only
the jobs whose result is not on disk yet, so a run stopped anywhere leaves whole results only.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

Report = Callable[[Any], None]


def run_jobs(fn: Callable[..., Any], jobs: Sequence[tuple], on_result: Report, *,
             workers: int = 1, progress: bool = True, desc: str = "", unit: str = "video",
             postfix: Callable[[], dict] | None = None,
             worker_setup: Callable[..., None] | None = None, worker_setup_args: tuple = (),
             serial: Callable[[Sequence[tuple], Report], None] | None = None) -> bool:
    """``fn(*job)`` for each of ``jobs``; ``on_result(result)`` runs here as each one finishes
    (in the order they finish) and advances a progress bar (``desc``, ``unit``; ``postfix()``:
    a dict shown beside it after each result; ``progress=False``: no bar).

    ``workers == 1`` or a single job: in this process, one job after the other, or through
    ``serial(jobs, report)`` when given (a runner of its own, e.g. one that batches across
    jobs; it calls ``report`` once per job). Otherwise ``min(workers, len(jobs))`` spawned
    processes, deaf to Ctrl-C from birth, each running ``worker_setup(*worker_setup_args)``
    first (a module-level function, e.g. one OpenCV thread per worker). ``fn`` should return
    a bad job's error rather than raise: an exception stops the run and propagates.

    Ctrl-C (KeyboardInterrupt here): jobs not started are cancelled, running workers killed,
    and once the pool is down and the bar closed ``run_jobs`` returns True. It returns False
    when every job reported.
    """
    bar = tqdm(total=len(jobs), desc=desc, unit=unit, disable=not progress)

    def report(result: Any) -> None:
        on_result(result)
        bar.update(1)
        if postfix is not None:
            bar.set_postfix(**postfix())

    try:
        if workers == 1 or len(jobs) <= 1:
            (serial or _one_after_another(fn))(jobs, report)
        else:
            _run_in_pool(fn, jobs, workers, report, worker_setup, worker_setup_args)
    except KeyboardInterrupt:
        return True
    finally:
        bar.close()
    return False


def _one_after_another(fn: Callable[..., Any]) -> Callable[[Sequence[tuple], Report], None]:
    def run(jobs: Sequence[tuple], report: Report) -> None:
        for job in jobs:
            report(fn(*job))
    return run


def _run_in_pool(fn: Callable[..., Any], jobs: Sequence[tuple], workers: int, report: Report,
                worker_setup: Callable[..., None] | None = None, worker_setup_args: tuple = ()) -> None:
    """``fn`` over ``jobs`` in ``workers`` spawned processes; ``report`` runs here as each job
    finishes. Ctrl-C: the queued jobs are cancelled, the running ones killed, and
    KeyboardInterrupt is re-raised once the pool is down."""
    # spawn: safe under Jupyter and with threads (torch, tqdm) alive in the parent
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=get_context("spawn"),
                               initializer=_start_worker, initargs=(worker_setup, worker_setup_args))
    futures: list[Future] = []
    try:
        with _sigint_ignored():                  # submit() starts the workers: born ignoring Ctrl-C
            futures = [pool.submit(fn, *job) for job in jobs]
        for future in as_completed(futures):
            report(future.result())
    except KeyboardInterrupt:
        _stop_workers_now(pool, futures)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _start_worker(setup: Callable[..., None] | None, args: tuple) -> None:
    """Pool worker set-up: Ctrl-C belongs to the main process; then the caller's own set-up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if setup is not None:
        setup(*args)


@contextlib.contextmanager
def _sigint_ignored():
    """Ignore Ctrl-C while the block runs (main thread only; elsewhere a no-op). Processes
    started meanwhile inherit the ignored signal, so pool workers are deaf to Ctrl-C from the
    moment they start, before their initializer runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def _stop_workers_now(pool: ProcessPoolExecutor, futures: list[Future]) -> None:
    """Cancel the jobs not started yet and kill the workers running the others."""
    for future in futures:
        future.cancel()
    if hasattr(pool, "terminate_workers"):                  # Python >= 3.14
        pool.terminate_workers()
        return
    workers = list((pool._processes or {}).values())        # before 3.14 there is no public way
    for process in workers:
        process.terminate()
    for process in workers:
        process.join()
