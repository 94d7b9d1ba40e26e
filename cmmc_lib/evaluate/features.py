"""Backbone features of a dataset split, cached on disk.

A dataset item holds ``item[modality]`` of shape (W, C, T, H, W): W clip windows of one video
(1 for the train split, ``eval_windows`` evenly spaced ones for the test split). The feature
of a video is the backbone's pooled output (not the projection head) averaged over its
windows: (W, D) -> (D,).

Caching: features depend on the checkpoint and on how clips are cut, so the cache file name is
a hash of both (:func:`feature_cache_key`). A second evaluation of the same checkpoint loads the
file instead of running the backbone again. Files are written atomically (a killed run never
leaves a half-written cache).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..data.datasets import worker_options

log = logging.getLogger(__name__)

# Bump when the way features are computed changes, so that old cache files are not reused.
FEATURE_VERSION = 1


@dataclass
class Features:
    """Per-video features of one split: ``feats`` float32 (N, D), ``labels`` int64 (N,),
    ``videos`` the N video ids in dataset order."""
    feats: Tensor
    labels: Tensor
    videos: list[str]

    def __len__(self) -> int:
        return self.feats.shape[0]

    def to_dict(self) -> dict[str, Any]:
        return {"feats": self.feats, "labels": self.labels, "videos": list(self.videos),
                "version": FEATURE_VERSION}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Features":
        return cls(d["feats"], d["labels"], list(d["videos"]))


def file_digest(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """SHA-1 of a file's bytes (hex)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def feature_cache_key(checkpoint_path: str | Path, data_cfg_dict: dict[str, Any], subset: str,
                      modality: str) -> str:
    """A file-name-safe key for the features of ``checkpoint_path`` on ``subset``/``modality``
    with clips cut as ``data_cfg_dict`` says (pass the DataConfig as a dict with every override
    applied and the data root resolved). The checkpoint enters by content hash, so copying
    or touching a run folder keeps its cache valid and retraining invalidates it.
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    payload = json.dumps({"checkpoint": file_digest(path), "data": data_cfg_dict, "subset": subset,
                          "modality": modality, "version": FEATURE_VERSION},
                         sort_keys=True, default=str)
    return f"{subset}-{modality}-{hashlib.sha1(payload.encode()).hexdigest()[:16]}"


def collate_list(batch: list[dict]) -> list[dict]:
    return batch


def item_clips(item: dict, modality: str) -> Tensor:
    if modality not in item:
        raise ValueError(f"dataset items have no {modality!r} entry (keys: {', '.join(map(str, item))})")
    x = item[modality]
    if x.ndim == 4:                                   # a single clip (C, T, H, W)
        x = x[None]
    if x.ndim != 5:
        raise ValueError(f"item[{modality!r}] must be (W, C, T, H, W), got shape {tuple(x.shape)}")
    return x


@torch.no_grad()
def compute_features(backbone: nn.Module, dataset, modality: str, batch_size: int = 8,
                     device: str | torch.device = "cpu", num_workers: int = 0,
                     progress: bool = True) -> Features:
    """Run ``backbone`` (eval mode, no grad) over every window of every item; mean over windows.

    ``batch_size`` counts videos; one forward pass sees all their windows at once.
    """
    from tqdm.auto import tqdm

    if len(dataset) == 0:
        raise ValueError("the dataset is empty: no features to compute")
    device = torch.device(device)
    was_training = backbone.training
    backbone.eval().to(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_list,
                        **worker_options(num_workers))
    feats, labels, videos = [], [], []
    try:
        for items in tqdm(loader, desc=f"features {modality}", disable=not progress, leave=False):
            clips = [item_clips(item, modality) for item in items]
            counts = [c.shape[0] for c in clips]
            out = backbone(torch.cat(clips).to(device, non_blocking=True))
            if out.ndim != 2 or out.shape[0] != sum(counts):
                raise ValueError(f"backbone returned shape {tuple(out.shape)} for {sum(counts)} clips; "
                                 "expected pooled features (clips, D)")
            feats += [f.mean(dim=0) for f in out.float().cpu().split(counts)]
            for i, item in enumerate(items):
                labels.append(int(item["label"]))
                videos.append(str(item.get("video", item.get("index", len(videos)))))
    finally:
        backbone.train(was_training)
    return Features(torch.stack(feats), torch.tensor(labels, dtype=torch.long), videos)


def extract_features(backbone: nn.Module, dataset, modality: str, batch_size: int = 8,
                     device: str | torch.device = "cpu", cache_dir: str | Path | None = None,
                     cache_key: str | None = None, progress: bool = True,
                     num_workers: int = 0) -> Features:
    """Features of ``dataset`` (see :func:`compute_features`), loaded from
    ``<cache_dir>/<cache_key>.pt`` when that file exists and matches the dataset, else computed
    and saved there. Without ``cache_dir`` nothing is cached. The backbone is moved to ``device``.
    """
    if cache_dir is None:
        return compute_features(backbone, dataset, modality, batch_size, device, num_workers, progress)
    if not cache_key:
        raise ValueError("cache_dir needs a cache_key (see feature_cache_key)")
    path = Path(cache_dir) / f"{cache_key}.pt"
    cached = _load_cached(path, dataset)
    if cached is not None:
        log.info("loaded cached features %s", path)
        return cached
    features = compute_features(backbone, dataset, modality, batch_size, device, num_workers, progress)
    from ..runs import save_checkpoint                 # an atomic torch.save
    save_checkpoint(features.to_dict(), path)
    return features


def _load_cached(path: Path, dataset) -> Features | None:
    if not path.is_file():
        return None
    try:
        d = torch.load(path, map_location="cpu", weights_only=False)
        features = Features.from_dict(d)
    except Exception as exc:           # unreadable or foreign file: recompute rather than fail
        log.warning("ignoring unreadable feature cache %s (%s)", path, exc)
        return None
    if d.get("version") != FEATURE_VERSION or len(features) != len(dataset):
        log.warning("feature cache %s does not match the dataset (%d cached, %d items); recomputing",
                    path, len(features), len(dataset))
        return None
    expected = getattr(dataset, "videos", None)
    if expected is not None and list(map(str, expected)) != features.videos:
        log.warning("feature cache %s lists other videos than the dataset; recomputing", path)
        return None
    return features
