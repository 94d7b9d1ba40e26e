"""What the bench's modules share: the device's name, a device synchronisation (benchmark only),
and the preset a measurement starts from."""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Sequence

import torch

from ..config import Config, preset

REPO = Path(__file__).resolve().parents[2]     # the folder holding cmmc_lib/: the checkout


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work (the benchmark's timings only, never training)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    """The GPU's name (``NVIDIA H200``), else the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench_config(preset_name: str = "tiny", overrides: Sequence[str] = ()) -> Config:
    """The preset with overrides (validated as a MoCo run: the bench sets the method itself)."""
    return preset(preset_name, list(overrides))
