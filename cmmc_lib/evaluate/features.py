"""Backbone features of a dataset split, cached on disk.

A dataset item holds ``item[modality]`` of shape (W, C, T, H, W): W clip windows of one video.
The feature of a video is the backbone's pooled output (not the projection head) averaged over
its windows, each L2-normalised first (``window_l2``, CoCLR's; ``eval.window_l2``): (W, D) -> (D,).

:func:`split_features` is the one way the package gets the features of a trained backbone on
a split: it builds the split's evaluation dataset from a ``DataConfig`` (deterministic
transforms, ``eval_windows`` windows per video) and runs the backbone over it
(:func:`extract_features`). ``cmmc eval`` (the runner), the lessons and the training loop's
kNN monitor all call it.

Caching: features depend on the checkpoint and on how clips are cut, so the cache file name is
a hash of both (:func:`feature_cache_key`), derived inside :func:`split_features` from a
:class:`FeatureCache` (the checkpoint file and the cache folder). A second evaluation of the
same checkpoint loads the file instead of running the backbone again. Files are written
atomically (a killed run never leaves a half-written cache) and read with
``weights_only=True``: a cache file holding pickled Python objects is refused with
:class:`cmmc_lib.files.UnsafeFileError`, never executed; an unreadable or stale one is
recomputed with a warning.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import data_root
from ..data.datasets import build_dataset, worker_options
from ..files import UnsafeFileError, load_state, save_state
from .common import video_batches

log = logging.getLogger(__name__)

# Bump when the way features are computed changes, so that old cache files are not reused.
FEATURE_VERSION = 2                  # 2: windows L2-normalised before their mean (window_l2)


@dataclass
class Features:
    """Per-video features of one split: ``feats`` float32 (N, D), ``labels`` int64 (N,),
    ``videos`` the N video ids in dataset order; ``skipped``: the videos of the split that could
    not be read and are *not* in ``feats`` (an evaluation reports them, never fills them in)."""
    feats: Tensor
    labels: Tensor
    videos: list[str]
    skipped: list[str] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return self.feats.shape[0]

    def to_dict(self) -> dict[str, Any]:
        return {"feats": self.feats, "labels": self.labels, "videos": list(self.videos),
                "skipped": list(self.skipped), "version": FEATURE_VERSION}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Features":
        return cls(d["feats"], d["labels"], list(d["videos"]), list(d.get("skipped", [])))

    def keep(self, videos: set[str]) -> "Features":
        """The features of ``videos`` only (in this order); the others join ``skipped``."""
        rows = [i for i, v in enumerate(self.videos) if v in videos]
        dropped = [v for v in self.videos if v not in videos]
        return Features(self.feats[rows], self.labels[rows], [self.videos[i] for i in rows],
                        self.skipped + dropped)


@dataclass(frozen=True)
class FeatureCache:
    """Where :func:`split_features` keeps features: ``folder/<key>.pt``, the key derived from the
    content of ``checkpoint`` (the file the backbone was loaded from) and the data config."""
    checkpoint: Path
    folder: Path


def file_digest(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """SHA-1 of a file's bytes (hex)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def data_key(data_cfg, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """What decides the clips of an evaluation dataset, for :func:`feature_cache_key`: the
    DataConfig with ``overrides`` applied and the root resolved (fields that only change speed
    left out)."""

    cfg = dataclasses.replace(data_cfg, **(overrides or {}))
    d = dataclasses.asdict(cfg)
    d["root"] = str(data_root(cfg).expanduser().resolve())
    d["train"] = False              # evaluation transforms (kept: earlier cache keys stay valid)
    for speed_only in ("cache", "num_workers"):
        d.pop(speed_only, None)
    return d


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


@torch.no_grad()
def compute_features(backbone: nn.Module, dataset, modality: str, batch_size: int = 8,
                     device: str | torch.device = "cpu", num_workers: int = 0,
                     progress: bool = True, window_l2: bool = True) -> Features:
    """Run ``backbone`` (eval mode, no grad) over every window of every item; mean over windows.

    ``batch_size`` counts videos; one forward pass sees all their windows at once. Items the
    dataset could not read (skipped markers, see :mod:`cmmc_lib.data.items`) are left out and
    listed in ``Features.skipped``; ValueError when nothing is readable.
    """

    if len(dataset) == 0:
        raise ValueError("the dataset is empty: no features to compute")
    device = torch.device(device)
    was_training = backbone.training
    backbone.eval().to(device)
    feats, labels, videos, skipped = [], [], [], []
    try:
        for items, clips, counts in video_batches(dataset, modality, batch_size, num_workers, skipped,
                                                  f"features {modality}", progress):
            out = backbone(clips.to(device, non_blocking=True))
            if out.ndim != 2 or out.shape[0] != sum(counts):
                raise ValueError(f"backbone returned shape {tuple(out.shape)} for {sum(counts)} clips; "
                                 "expected pooled features (clips, D)")
            out = F.normalize(out.float(), dim=1) if window_l2 else out.float()
            feats += [f.mean(dim=0) for f in out.cpu().split(counts)]
            for item in items:
                labels.append(int(item["label"]))
                videos.append(str(item.get("video", item.get("index", len(videos)))))
    finally:
        backbone.train(was_training)
    if not feats:
        raise ValueError(f"none of the {len(dataset)} videos could be read (e.g. {skipped[0]}): no features")
    if skipped:
        log.warning("%d of %d videos could not be read and are left out of the features: %s", len(skipped),
                    len(dataset), ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
    return Features(torch.stack(feats), torch.tensor(labels, dtype=torch.long), videos, skipped)


def extract_features(backbone: nn.Module, dataset, modality: str, batch_size: int = 8,
                     device: str | torch.device = "cpu", cache_dir: str | Path | None = None,
                     cache_key: str | None = None, progress: bool = True,
                     num_workers: int = 0, window_l2: bool = True) -> Features:
    """Features of ``dataset`` (see :func:`compute_features`), loaded from
    ``<cache_dir>/<cache_key>.pt`` when that file exists and matches the dataset, else computed
    and saved there. Without ``cache_dir`` nothing is cached. The backbone is moved to ``device``.

    Raises :class:`cmmc_lib.files.UnsafeFileError` (naming the file) when the cache file holds
    pickled Python objects: it is never executed, and never silently overwritten.
    """
    if cache_dir is None:
        return compute_features(backbone, dataset, modality, batch_size, device, num_workers, progress, window_l2)
    if not cache_key:
        raise ValueError("cache_dir needs a cache_key (see feature_cache_key)")
    path = Path(cache_dir) / f"{cache_key}.pt"
    cached = _load_cached(path, dataset)
    if cached is not None:
        log.info("loaded cached features %s", path)
        return cached
    features = compute_features(backbone, dataset, modality, batch_size, device, num_workers, progress, window_l2)
    save_state(features.to_dict(), path)
    return features


def split_features(backbone: nn.Module, data_cfg, modality: str, subset: str, *,
                   eval_windows: int | None = None, batch_size: int = 8,
                   device: str | torch.device = "cpu", cache: FeatureCache | None = None,
                   progress: bool = False, num_workers: int = 0, dataset=None,
                   window_l2: bool = True) -> tuple[Any, Features]:
    """The features of ``backbone`` on one split: ``(dataset, Features)``.

    ``data_cfg``: the :class:`~cmmc_lib.config.DataConfig` of the data; ``subset``: ``"train"``
    or ``"test"`` of its split; ``modality``: the backbone's input (``rgb`` / ``flow``). The
    dataset has deterministic evaluation transforms (centre crop) and ``eval_windows`` evenly
    spaced windows per video (default: the config's); a video's feature (D,) is the mean over
    its windows, so ``Features.feats`` is float32 (N, D) in dataset order. ``batch_size`` counts
    videos per forward pass; the backbone runs in eval mode on ``device`` (its mode is restored).

    ``cache``: keep the features in ``cache.folder/<key>.pt``, the key derived from the content
    of ``cache.checkpoint``, this data config (overrides applied, root resolved), ``subset`` and
    ``modality``; a later call with the same checkpoint and clips loads the file.
    ``dataset``: the dataset an earlier call returned for the same arguments, used instead of
    building it again (it keeps its decoded videos in memory: what a monitor that runs every
    epoch wants).
    """

    overrides = {} if eval_windows is None else {"eval_windows": eval_windows}
    if dataset is None:
        dataset = build_dataset(data_cfg, subset, False, (modality,), **overrides)
    else:
        _check_reused(dataset, modality, data_cfg.eval_windows if eval_windows is None else eval_windows)
    cache_dir = cache_key = None
    if cache is not None:
        cache_dir = cache.folder
        cache_key = feature_cache_key(cache.checkpoint, {**data_key(data_cfg, overrides), "window_l2": window_l2},
                                      subset, modality)
    return dataset, extract_features(backbone, dataset, modality, batch_size=batch_size, device=device,
                                     cache_dir=cache_dir, cache_key=cache_key, progress=progress,
                                     num_workers=num_workers, window_l2=window_l2)


def _check_reused(dataset, modality: str, windows: int) -> None:
    """ValueError when a dataset passed to :func:`split_features` was built otherwise."""
    train = getattr(dataset, "train", False)
    modalities = getattr(dataset, "modalities", (modality,))
    views = getattr(dataset, "num_views", windows)
    if train or modality not in modalities or views != windows:
        raise ValueError(f"the dataset passed in was built for other arguments (train={train}, "
                         f"modalities={tuple(modalities)}, {views} windows per video); expected "
                         f"evaluation clips of {modality!r} with {windows} windows")


def _load_cached(path: Path, dataset) -> Features | None:
    """The cached features in ``path`` if it exists and matches ``dataset``; None (with a
    warning) for an unreadable, foreign or stale file; UnsafeFileError for pickled objects."""
    if not path.is_file():
        return None
    try:
        d = load_state(path)
        features = Features.from_dict(d)
        if not isinstance(features.feats, Tensor) or features.feats.ndim != 2:
            raise ValueError("feats is not an (N, D) tensor")
    except UnsafeFileError as exc:
        raise UnsafeFileError(f"{exc}; delete the file to compute the features again") from None
    except (ValueError, KeyError, TypeError) as exc:   # unreadable or foreign: recompute
        log.warning("ignoring unreadable feature cache %s (%s); recomputing", path, exc)
        return None
    if d.get("version") != FEATURE_VERSION or len(features) + len(features.skipped) != len(dataset):
        log.warning("feature cache %s does not match the dataset (%d cached, %d items); recomputing",
                    path, len(features), len(dataset))
        return None
    expected = getattr(dataset, "videos", None)
    skipped = set(features.skipped)
    if expected is not None and [v for v in map(str, expected) if v not in skipped] != features.videos:
        log.warning("feature cache %s lists other videos than the dataset; recomputing", path)
        return None
    return features
