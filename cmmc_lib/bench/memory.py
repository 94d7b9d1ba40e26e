"""Peak memory of a training step: CUDA's allocator on a GPU, the resident set size on a CPU
(sampled in this process, or measured in a fresh one by :func:`cpu_peak_memory`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import torch

from ..config import Config
from .common import REPO


def _rss_bytes() -> int | None:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PeakMemory:
    """Peak memory while the block runs, above what was allocated when it began. CUDA:
    ``torch.cuda.max_memory_allocated`` (model, optimiser, activations, batch of this block).
    CPU: the peak resident set size of this process above its size when the block began,
    sampled every 5 ms (Linux ``/proc``; elsewhere None: "n/a"). In a process that already
    freed memory the CPU figure is too low (the allocator reuses it): :func:`cpu_peak_memory`
    measures a method in a fresh process instead."""

    def __init__(self, device: torch.device):
        self.device = device
        self.mib: float | None = None
        self.measure = ("cuda max_memory_allocated" if device.type == "cuda" else "peak RSS growth (sampled)")
        self._stop = threading.Event()
        self._peak = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = _rss_bytes()
            if self._base is None:
                self.measure = "n/a"
                return self
            self._peak = self._base
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, _rss_bytes() or 0)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif self._base is not None:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes() or 0)
            self.mib = (self._peak - self._base) / 2**20
        return False


def cpu_peak_memory(cfg: Config, warmup: int = 2) -> float | None:
    """Peak RSS growth (MiB) of building ``cfg``'s method and running ``warmup`` steps on the
    CPU, in a fresh Python process (so that no memory freed earlier is reused); None if it fails."""
    code = ("import json, sys, torch; from cmmc_lib.bench import StepRunner; from cmmc_lib.config import Config; "
            "torch.set_num_threads(%d); r = StepRunner(Config.from_dict(json.loads(sys.argv[1])), torch.device('cpu')); "
            "r.warm(%d); print(json.dumps(r.peak.mib))" % (torch.get_num_threads(), max(warmup, 1)))
    try:
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(cfg.to_dict())], capture_output=True, text=True,
                              timeout=600, cwd=REPO)
        return round(float(json.loads(proc.stdout.strip().splitlines()[-1])), 1) if proc.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        return None
