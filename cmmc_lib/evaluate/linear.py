"""Linear probe on frozen features (CoCLR's ``eval/feature_linear_probe.py`` protocol).

The backbone is frozen and its features are held in memory; a BatchNorm1d + Linear classifier
is trained on the L2-normalised features with SGD (momentum 0.9), 100 epochs, the learning rate
multiplied by 0.1 at epochs 60 and 80 (``docs/method.md`` section 6). CoCLR's defaults: batch
1024, lr 1.0, weight decay 1e-3, the linear layer initialised N(0, 0.01), bias 0.

Two numbers come out: the accuracy **after the last epoch** (ours: nothing looks at the test
set), and, labelled as CoCLR's protocol, the **best test accuracy** over the epochs at which the
test set is scored (every ``test_every`` epochs and the last; CoCLR's script: every 5, keeping the
best, which selects the epoch on the test set).

SkeletonCLR's protocol (``features="raw"``): a plain linear layer on the pooled features as they
are (no L2-normalisation, no BatchNorm), SGD momentum 0.9, lr 3.0, no weight decay, batch 128,
lr x0.1 after epoch 80 of 100. SkeletonCLR too reports its best test epoch.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import trange

from .common import (as_features, as_labels, check_class_labels, classification_summary, step_lr,
                     topk_accuracy)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the probe
class LinearProbe(nn.Module):
    """BatchNorm1d + Linear on (N, D) features -> (N, K) logits (``batchnorm=False``: Linear only)."""

    def __init__(self, dim: int, num_classes: int, generator: torch.Generator | None = None,
                 batchnorm: bool = True):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim) if batchnorm else nn.Identity()
        self.fc = nn.Linear(dim, num_classes)
        with torch.no_grad():
            self.fc.weight.normal_(0.0, 0.01, generator=generator)
            self.fc.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.bn(x))


def linear_probe(train_feats, train_labels, test_feats, test_labels, num_classes: int,
                 epochs: int = 100, lr: float = 1.0, milestones: Sequence[int] = (60, 80),
                 batch_size: int = 1024, weight_decay: float = 1e-3, momentum: float = 0.9,
                 seed: int = 0, device: str | torch.device = "cpu", progress: bool = False,
                 features: str = "bn", test_every: int = 5) -> dict:
    """Train the probe on (N, D) train features, evaluate on (M, D) test features.

    ``features``: ``bn`` (CoCLR: L2-normalised features, BatchNorm1d + Linear) or ``raw``
    (SkeletonCLR: Linear on the features as they are).

    Returns ``top1``, ``top5`` (test accuracy in [0, 1]; top5 is top-min(5, K)), ``test_probs``
    (M, K) softmax probabilities, ``test_logits`` (M, K), ``confusion`` (K, K) int64 (row = true
    class), ``train_top1`` (train accuracy after training, eval mode) and ``train_loss`` (mean
    loss per epoch); CoCLR's protocol: ``best_top1``, ``best_epoch`` (1-based) and ``best_probs``,
    the best test accuracy among the epochs scored every ``test_every``. Deterministic given
    ``seed``: initialisation and shuffling use their own generator.
    """
    if features not in ("bn", "raw"):
        raise ValueError(f"features must be 'bn' or 'raw', got {features!r}")
    device = torch.device(device)
    prep = (lambda x: x) if features == "raw" else (lambda x: F.normalize(x, dim=1))
    x_train = prep(as_features(train_feats, "train features")).to(device)
    x_test = prep(as_features(test_feats, "test features")).to(device)
    y_train = as_labels(train_labels, x_train.shape[0], "train labels").to(device)
    y_test = as_labels(test_labels, x_test.shape[0], "test labels").to(device)
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"train features are {x_train.shape[1]}-d but test features "
                         f"{x_test.shape[1]}-d")
    if x_train.shape[0] < 2 and features == "bn":
        raise ValueError("the linear probe needs at least 2 training samples (BatchNorm)")
    if epochs < 1 or batch_size < 2:
        raise ValueError(f"epochs must be >= 1 and batch_size >= 2, got {epochs} and {batch_size}")
    check_class_labels(y_train, num_classes, "train labels")
    check_class_labels(y_test, num_classes, "test labels")

    gen = torch.Generator().manual_seed(seed)
    probe = LinearProbe(x_train.shape[1], num_classes, generator=gen, batchnorm=features == "bn").to(device)
    optimizer = torch.optim.SGD(probe.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    n = x_train.shape[0]
    losses, best = [], (-1.0, 0, None)
    for epoch in trange(epochs, desc="linear probe", disable=not progress, leave=False):
        for group in optimizer.param_groups:
            group["lr"] = step_lr(lr, epoch, milestones)
        probe.train()
        order = torch.randperm(n, generator=gen).to(device)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            if len(idx) < 2 and features == "bn":   # BatchNorm cannot train on one sample: drop a lone tail
                continue
            loss = F.cross_entropy(probe(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / n)
        if (epoch + 1) % test_every == 0 or epoch + 1 == epochs:
            scored = _scored(probe, x_test, y_test, epoch + 1)
            best = scored if scored[0] >= best[0] else best                 # ties: the later epoch, as CoCLR

    probe.eval()
    with torch.no_grad():
        test_logits = probe(x_test)
        test_probs = test_logits.softmax(dim=1)
        train_top1 = topk_accuracy(probe(x_train), y_train, 1)
    summary = classification_summary(test_probs, y_test, num_classes)
    return {**summary, "test_probs": test_probs.cpu(), "test_logits": test_logits.cpu(), "train_top1": train_top1,
            "train_loss": losses, "best_top1": best[0], "best_epoch": best[1], "best_probs": best[2]}


@torch.no_grad()
def _scored(probe: nn.Module, x: Tensor, y: Tensor, epoch: int) -> tuple[float, int, Tensor]:
    """(test top-1, epoch, test probabilities) of the probe now; it goes back to training after."""
    probe.eval()
    probs = probe(x).softmax(dim=1)
    probe.train()
    return topk_accuracy(probs, y, 1), epoch, probs.cpu()
