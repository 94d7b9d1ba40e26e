"""What the evaluation protocols share: input checks, classification metrics, the step learning
rate schedule, and how clips come out of dataset items.

Retrieval, the linear probe, fine-tuning and feature extraction import these from here and
never from each other.

* input checks: :func:`as_features` (N, D) float32, :func:`as_labels` (N,) int64,
  :func:`check_class_labels` (labels in [0, K));
* metrics on class scores (N, K): :func:`topk_accuracy`, :func:`confusion_matrix`,
  :func:`classification_summary`;
* :func:`step_lr`: the learning rate multiplied by ``gamma`` at each milestone epoch;
* dataset items: :func:`collate_list` (a batch stays a list of item dicts) and
  :func:`item_clips` (``item[modality]`` as (W, C, T, H, W)).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.datasets import worker_options


# ----------------------------------------------------------------------------- input checks
def as_features(feats, name: str = "features") -> Tensor:
    """``feats`` as a finite float32 (N, D) tensor; ValueError naming ``name`` otherwise."""
    x = torch.as_tensor(feats)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {tuple(x.shape)}")
    x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return x


def as_labels(labels, n: int, name: str = "labels") -> Tensor:
    """``labels`` as an int64 (n,) tensor; ValueError when the length is not ``n`` or a value
    is not an integer."""
    y = torch.as_tensor(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) to match the features, got {tuple(y.shape)}")
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise ValueError(f"{name} must be integers")
    return y.long()


def check_class_labels(labels: Tensor, num_classes: int, name: str) -> None:
    """ValueError naming ``name`` unless every label lies in [0, ``num_classes``)."""
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}), got [{int(labels.min())}, "
                         f"{int(labels.max())}]")


# ----------------------------------------------------------------------------- metrics
def topk_accuracy(scores: Tensor, labels: Tensor, k: int = 1) -> float:
    """Fraction of rows of ``scores`` (N, K) whose true label is among the k highest
    (k is capped at K). Ties: ``torch.topk``'s order."""
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    return float((top == labels[:, None]).any(dim=1).double().mean())


def confusion_matrix(predictions: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(K, K) int64 counts: row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def classification_summary(probs: Tensor, labels: Tensor, num_classes: int) -> dict:
    """top1, top5 (top-min(5, K)) and the confusion matrix of class probabilities (N, K)."""
    labels = labels.to(probs.device)
    return {"top1": topk_accuracy(probs, labels, 1), "top5": topk_accuracy(probs, labels, 5),
            "confusion": confusion_matrix(probs.argmax(dim=1), labels, num_classes).cpu()}


# ----------------------------------------------------------------------------- schedule
def step_lr(base_lr: float, epoch: int, milestones: Sequence[int], gamma: float = 0.1) -> float:
    """The learning rate in ``epoch`` (0-based): ``base_lr * gamma ** #{m <= epoch}``."""
    return base_lr * gamma ** sum(epoch >= m for m in milestones)


# ----------------------------------------------------------------------------- dataset items
def collate_list(batch: list[dict]) -> list[dict]:
    """DataLoader ``collate_fn`` that keeps a batch as the list of its item dicts (items may
    hold different numbers of windows, so they are not stacked). A named function, not a
    lambda, so that spawned DataLoader workers can pickle it."""
    return batch


def item_clips(item: dict, modality: str) -> Tensor:
    """``item[modality]`` as (W, C, T, H, W): the W windows (or views) of one video; a single
    clip (C, T, H, W) becomes W = 1. ValueError for a missing modality or another shape."""
    if modality not in item:
        raise ValueError(f"dataset items have no {modality!r} entry (keys: {', '.join(map(str, item))})")
    x = item[modality]
    if x.ndim == 4:                                   # a single clip (C, T, H, W)
        x = x[None]
    if x.ndim != 5:
        raise ValueError(f"item[{modality!r}] must be (W, C, T, H, W), got shape {tuple(x.shape)}")
    return x


def video_batches(dataset, modality: str, batch_size: int, num_workers: int, skipped: list[str],
                  desc: str, progress: bool) -> Iterator[tuple[list[dict], Tensor, list[int]]]:
    """The readable videos of ``dataset`` in order, ``batch_size`` at a time, as ``(items, clips,
    counts)``: the items, all their windows stacked ((sum of counts), C, T, H, W) and each video's
    number of windows. Videos the dataset could not read (skipped markers) are appended to
    ``skipped`` instead."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_list,
                        **worker_options(num_workers))
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        skipped += [str(item["video"]) for item in batch if item.get("skipped")]
        items = [item for item in batch if not item.get("skipped")]
        if items:
            clips = [item_clips(item, modality) for item in items]
            yield items, torch.cat(clips), [c.shape[0] for c in clips]
