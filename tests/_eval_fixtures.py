"""Tiny stand-ins for the evaluation tests: backbones with ``feat_dim`` and list datasets of dicts
shaped like ``cmmc_lib.data.datasets`` items (so these tests do not need videos)."""
from __future__ import annotations

import torch
from torch import nn


class ChannelMeanBackbone(nn.Module):
    """(B, C, T, H, W) -> (B, C): the mean of each channel (times a learnable scale).
    Counts forward calls and clips seen, and records whether it ran in train mode."""

    def __init__(self, channels: int = 3):
        super().__init__()
        self.feat_dim = channels
        self.scale = nn.Parameter(torch.ones(()))
        self.calls = 0
        self.clips = 0
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.clips += x.shape[0]
        self.modes.append(self.training)
        return x.mean(dim=(2, 3, 4)) * self.scale


class TinyConvBackbone(nn.Module):
    """Conv3d -> BatchNorm3d -> ReLU -> global average pool: (B, C, T, H, W) -> (B, width)."""

    def __init__(self, in_channels: int = 3, width: int = 8):
        super().__init__()
        self.feat_dim = width
        self.conv = nn.Conv3d(in_channels, width, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm3d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3, 4))


class ListClips(list):
    """A list of item dicts with the dataset attributes the evaluation code may read."""

    def __init__(self, items, classes):
        super().__init__(items)
        self.classes = list(classes)
        self.labels = [it["label"] for it in items]
        self.videos = [it["video"] for it in items]
        self.epochs_seen: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs_seen.append(epoch)


def constant_window_dataset(values_per_video, modality="rgb", channels=3, size=4, frames=2,
                            labels=None) -> ListClips:
    """Video i has one window per value in ``values_per_video[i]``; window w is filled with that
    value, so its channel-mean feature is the value and the video's feature is their mean."""
    items = []
    for i, values in enumerate(values_per_video):
        windows = torch.stack([torch.full((channels, frames, size, size), float(v)) for v in values])
        items.append({modality: windows, "label": 0 if labels is None else labels[i], "index": i,
                      "video": f"v{i:03d}", "group": -1})
    return ListClips(items, ["only"] if labels is None else sorted({str(x) for x in labels}))


def bright_dark_dataset(num_videos: int, windows: int, seed: int, modality: str = "rgb",
                        channels: int = 3, frames: int = 4, size: int = 8, noise: float = 0.3) -> ListClips:
    """A trivially separable task: class 1 clips are bright (+0.5), class 0 dark (-0.5), plus noise."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(num_videos):
        label = i % 2
        level = 0.5 if label else -0.5
        clip = level + noise * torch.randn(windows, channels, frames, size, size, generator=g)
        items.append({modality: clip, "label": label, "index": i, "video": f"s{seed}_{i:03d}", "group": -1})
    return ListClips(items, ["dark", "bright"])
