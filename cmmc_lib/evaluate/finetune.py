"""Fine-tuning: the whole network trained for classification (CoCLR's ``train_what=ft``).

backbone -> Dropout(0.9) -> Linear; Adam with the backbone at a tenth of the head's learning
rate, weight decay 1e-3 (CoCLR's ``eval/main_classifier.py`` defaults: Adam, lr 1e-3).
Training takes every view of a training item as one sample; the runner builds the training set
with CoCLR's fine-tune transform (a random crop, colour jitter with probability 0.3, no grey, no
blur). Testing averages softmax probabilities over every clip a test item holds: its windows and,
with ten-crop testing (the dataset's ``eval_crops = 10``), CoCLR's ten crops of each window.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import trange

from ..data.datasets import worker_options
from .common import check_class_labels, classification_summary, collate_list, item_clips, step_lr, video_batches

log = logging.getLogger(__name__)


class ClipClassifier(nn.Module):
    """backbone (B, C, T, H, W) -> (B, D) -> Dropout -> Linear -> (B, K) logits."""

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.9):
        super().__init__()
        feat_dim = getattr(backbone, "feat_dim", None)
        if not isinstance(feat_dim, int):
            raise ValueError("the backbone must expose its pooled feature size as .feat_dim")
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(feat_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(self.backbone(x)))


def finetune_optimizer(model: ClipClassifier, lr: float, head_lr_ratio: float = 10.0,
                       weight_decay: float = 1e-3) -> torch.optim.Adam:
    """Adam with two groups: ``backbone`` at ``lr / head_lr_ratio``, ``head`` at ``lr``.
    Each group remembers its ``base_lr`` for the step schedule."""
    head = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    groups = [{"name": "backbone", "params": list(model.backbone.parameters()), "lr": lr / head_lr_ratio},
              {"name": "head", "params": head, "lr": lr}]
    for g in groups:
        g["base_lr"] = g["lr"]
    return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)


class Predictions(NamedTuple):
    """What :func:`predict_probabilities` returns."""
    probs: Tensor
    labels: Tensor
    videos: list[str]
    skipped: list[str]


def _train_batch(items: list[dict], modality: str) -> tuple[Tensor, Tensor]:
    clips = [item_clips(item, modality) for item in items]                 # each (V, C, T, H, W)
    labels = [torch.full((c.shape[0],), int(item["label"]), dtype=torch.long)
              for c, item in zip(clips, items)]
    return torch.cat(clips), torch.cat(labels)


@torch.no_grad()
def predict_probabilities(model: nn.Module, dataset, modality: str, batch_size: int = 4,
                          device: str | torch.device = "cpu", num_workers: int = 0,
                          progress: bool = False) -> Predictions:
    """Class probabilities (N, K) per video, the mean of softmax over its clips (windows, and
    crops), with the labels (N,), the N videos, and the videos left out because they could not be read."""
    model.eval()
    probs, labels, videos, skipped = [], [], [], []
    for items, clips, counts in video_batches(dataset, modality, batch_size, num_workers, skipped,
                                              "fine-tune test", progress):
        p = model(clips.to(device)).float().softmax(dim=1).cpu()
        probs += [chunk.mean(dim=0) for chunk in p.split(counts)]
        labels += [int(item["label"]) for item in items]
        videos += [str(item.get("video", item.get("index"))) for item in items]
    if not probs:
        raise ValueError(f"none of the {len(dataset)} test videos could be read (e.g. {skipped[0]})")
    return Predictions(torch.stack(probs), torch.tensor(labels, dtype=torch.long), videos, skipped)


def finetune(backbone: nn.Module, train_ds, test_ds, modality: str, num_classes: int,
             epochs: int = 10, lr: float = 1e-3, head_lr_ratio: float = 10.0, dropout: float = 0.9,
             batch_size: int = 8,
             weight_decay: float = 1e-3, milestones: Sequence[int] = (),
             device: str | torch.device = "cpu", seed: int = 0, num_workers: int = 0,
             progress: bool = False) -> dict:
    """Fine-tune a copy of ``backbone`` (the caller's module is left untouched) on ``train_ds``
    items ``item[modality]`` (V, C, T, H, W), then test on ``test_ds`` items (W, C, T, H', W').

    ``lr`` is the head's learning rate; the backbone's is ``lr / head_lr_ratio``; both are
    multiplied by 0.1 at each of ``milestones`` (epochs). Deterministic given ``seed`` on CPU.

    Returns ``top1``, ``top5``, ``confusion`` (K, K), ``test_probs`` (N, K), ``train_loss`` and
    ``train_top1`` (per epoch, on the augmented training views with dropout on), ``model``
    (the trained :class:`ClipClassifier`), ``lr_head``, ``lr_backbone``, ``milestones`` and
    ``lr_per_epoch`` (the head's learning rate in each epoch).
    """
    if len(train_ds) == 0 or len(test_ds) == 0:
        raise ValueError("fine-tuning needs non-empty train and test datasets")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    device = torch.device(device)

    rng_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(seed)                          # head initialisation and dropout masks
        model = ClipClassifier(copy.deepcopy(backbone), num_classes, dropout).to(device)
        optimizer = finetune_optimizer(model, lr, head_lr_ratio, weight_decay)
        losses, accuracies = [], []
        for epoch in trange(epochs, desc="fine-tune", disable=not progress, leave=False):
            for group in optimizer.param_groups:
                group["lr"] = step_lr(group["base_lr"], epoch, milestones)
            if hasattr(train_ds, "set_epoch"):
                train_ds.set_epoch(epoch)
            order = torch.Generator().manual_seed(seed * 100_003 + epoch)
            loader = DataLoader(train_ds, batch_size=batch_size, shuffle=True, generator=order,
                                collate_fn=collate_list, **worker_options(num_workers))
            model.train()
            total_loss, correct, seen = 0.0, 0, 0
            for items in loader:
                x, y = _train_batch(items, modality)
                if x.shape[0] < 2:                      # BatchNorm cannot train on one clip
                    continue
                check_class_labels(y, num_classes, "training labels")
                x, y = x.to(device, non_blocking=True), y.to(device)
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += float(loss.detach()) * len(y)
                correct += int((logits.argmax(dim=1) == y).sum())
                seen += len(y)
            losses.append(total_loss / max(seen, 1))
            accuracies.append(correct / max(seen, 1))

    probs, labels, videos, skipped = predict_probabilities(
        model, test_ds, modality, batch_size=batch_size, device=device, num_workers=num_workers, progress=progress)
    check_class_labels(labels, num_classes, "test labels")
    return {**classification_summary(probs, labels, num_classes), "test_probs": probs, "test_labels": labels,
            "test_videos": videos, "skipped": skipped, "num_test": len(labels),
            "train_loss": losses, "train_top1": accuracies, "model": model,
            "lr_head": lr, "lr_backbone": lr / head_lr_ratio, "milestones": tuple(milestones),
            "lr_per_epoch": [step_lr(lr, e, milestones) for e in range(epochs)]}
