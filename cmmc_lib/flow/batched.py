"""``tvl1-torch`` over many videos in one process, with the device kept busy: frame pairs of
consecutive videos (of one frame size) share batches (a video's last pairs ride with the next
video's first), videos are decoded a few ahead in one thread, and each is written atomically in
another thread once all its fields are done. :func:`cmmc_lib.flow.extract_flow` runs it for
``tvl1-torch`` with one worker.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from ..data.rawframes import quantize_flow
from .folders import Outcome, is_flow_complete, remove_temp_folders, write_flow_folder
from .frames import decode_rgb, to_grey
from .tvl1 import default_batch_size, tvl1_flow_pairs


def extract_batched(jobs: list[tuple], device: str, batch_size: int | None,
                    on_result: Callable[[Outcome], None], prefetch: int = 2) -> None:
    """``tvl1-torch`` over ``jobs`` (tuples of ``_extract_one``'s arguments, see
    :mod:`cmmc_lib.flow.extract`) on ``device``, ``batch_size`` pairs per call (None: 1 on CPU,
    32 on CUDA), decoding ``prefetch`` videos ahead. ``on_result`` runs here for each video.

    Ctrl-C (KeyboardInterrupt here): nothing new starts, the writes already queued finish
    (their folders end complete) and KeyboardInterrupt is re-raised.
    """
    batch_size = default_batch_size(device) if batch_size is None else batch_size
    _BatchedExtraction(jobs, device, batch_size, on_result, prefetch).run()


class _PendingVideo:
    """A decoded video in the batched path: its grey frames, the flow filled in batch by batch,
    and how many of its N - 1 frame pairs have gone to the device."""

    def __init__(self, job: tuple, grey: np.ndarray):
        self.job, self.grey = job, grey
        self.flow = np.zeros((*grey.shape, 2), np.float32)
        self.pairs, self.sent = len(grey) - 1, 0


class _BatchedExtraction:
    """The state of one batched run: the decodes under way (in job order), the decoded videos
    with pairs still to compute, and the writes under way."""

    def __init__(self, jobs: list[tuple], device: str, batch_size: int,
                 on_result: Callable[[Outcome], None], prefetch: int):
        self.device, self.batch_size, self.on_result, self.prefetch = device, batch_size, on_result, prefetch
        self.decoder, self.writer = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
        self.upcoming = iter(jobs)
        self.decoding: deque[tuple[tuple, Future]] = deque()     # (job, future of _prepare_video)
        self.queue: deque[_PendingVideo] = deque()               # decoded, pairs still to compute
        self.writes: list[tuple[str, Future]] = []

    def run(self) -> None:
        for _ in range(self.prefetch):
            self._decode_next()
        try:
            while self.decoding or self.queue:
                self._decode_until_a_batch_is_full()
                if self.queue and self._compute_a_batch():
                    self._write_finished_videos()
                    self._report_writes(wait=False)
            self._report_writes(wait=True)
        finally:
            for _job, future in self.decoding:
                future.cancel()
            self.decoder.shutdown(wait=True, cancel_futures=True)
            self.writer.shutdown(wait=True)                # queued writes finish: complete folders

    # ----------------------------------------------------------------------- decoding
    def _decode_next(self) -> None:
        job = next(self.upcoming, None)
        if job is not None:
            path, folder, _method, _bound, short_side, keep_finished = job[:6]
            self.decoding.append((job, self.decoder.submit(_prepare_video, path, folder, short_side,
                                                           keep_finished)))

    def _decode_until_a_batch_is_full(self) -> None:
        """Take decoded videos into the queue until it holds a batch of pairs, or the videos
        run out (kept and unreadable ones are reported; a one-frame video is written at once)."""
        while self.decoding and sum(v.pairs - v.sent for v in self.queue) < self.batch_size:
            job, future = self.decoding.popleft()
            self._decode_next()
            grey, outcome = future.result()
            if outcome is not None:
                self.on_result(outcome)
            elif len(grey) == 1:
                self._write(_PendingVideo(job, grey))            # one frame: one zero field
            else:
                self.queue.append(_PendingVideo(job, grey))

    # ----------------------------------------------------------------------- computing
    def _next_batch(self) -> list[tuple[_PendingVideo, int, int]]:
        """(video, first pair, end pair) for the pairs of one batch: from the front videos that
        share the first one's frame size, marked as sent."""
        size, parts, taken = self.queue[0].grey.shape[1:], [], 0
        for video in self.queue:
            if video.grey.shape[1:] != size or taken == self.batch_size:
                break
            n = min(video.pairs - video.sent, self.batch_size - taken)
            parts.append((video, video.sent, video.sent + n))
            video.sent, taken = video.sent + n, taken + n
        return parts

    def _compute_a_batch(self) -> bool:
        """Compute one batch and file its fields with their videos. False when it failed (e.g.
        out of device memory): its videos are reported as failed and dropped."""
        parts = self._next_batch()
        prev = np.concatenate([v.grey[a:b] for v, a, b in parts])
        nxt = np.concatenate([v.grey[a + 1:b + 1] for v, a, b in parts])
        try:
            flow = tvl1_flow_pairs(prev, nxt, device=self.device, batch_size=len(prev))
        except Exception as exc:
            failed = {id(v) for v, _, _ in parts}
            for video in [v for v in self.queue if id(v) in failed]:
                self.queue.remove(video)
                self.on_result(Outcome(video.job[0], 0, f"{type(exc).__name__}: {exc}"))
            return False
        offset = 0
        for video, a, b in parts:
            video.flow[a:b] = flow[offset:offset + b - a]
            offset += b - a
        return True

    # ----------------------------------------------------------------------- writing
    def _write_finished_videos(self) -> None:
        while self.queue and self.queue[0].sent == self.queue[0].pairs:
            self._write(self.queue.popleft())

    def _write(self, video: _PendingVideo) -> None:
        """Queue the atomic write of a video whose fields are all computed."""
        path, folder, method, bound, _s, _k, run = video.job[:7]
        video.flow[-1] = video.flow[-2] if len(video.flow) > 1 else 0.0   # frame-aligned
        flow_q = quantize_flow(video.flow, bound)
        video.grey = video.flow = None
        self.writes.append((path, self.writer.submit(write_flow_folder, flow_q, folder, method, bound,
                                                     Path(path).name, run)))

    def _report_writes(self, wait: bool) -> None:
        """Report the finished writes, in order (all of them when ``wait``; at most 4 pending)."""
        while self.writes and (wait or self.writes[0][1].done() or len(self.writes) > 4):
            path, future = self.writes.pop(0)
            try:
                self.on_result(Outcome(path, future.result()))
            except Exception as exc:                        # a failed write fails one video
                self.on_result(Outcome(path, 0, f"{type(exc).__name__}: {exc}"))


def _prepare_video(path: str, folder: str, short_side: int | None,
                   keep_finished: bool) -> tuple[np.ndarray | None, Outcome | None]:
    """The first half of ``_extract_one`` (:mod:`cmmc_lib.flow.extract`): (grey frames
    (N, H, W), None), or (None, outcome) when the folder is kept or the video is unreadable.
    Never raises."""
    try:
        remove_temp_folders(Path(folder))
        frames = decode_rgb(path, short_side)
        if keep_finished and is_flow_complete(folder, video_frames=len(frames)):
            return None, Outcome(path, 0, kept=True)
        if len(frames) == 0:
            raise ValueError("compute_flow needs at least one frame, got 0")
        return to_grey(frames), None
    except Exception as exc:
        return None, Outcome(path, 0, f"{type(exc).__name__}: {exc}")
