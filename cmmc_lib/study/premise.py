"""The premise of cross-modal mixing, measured: do flow features after block k carry what the
RGB network's embedding of the *same clip* holds, beyond what its class holds?

For every evaluation window (centre crop) of every video, the flow backbone's feature map after
block k is pooled to (C_k,) and the RGB MoCo query encoder's embedding (D,) (L2-normalised) is
the target. A ridge regression (features standardised, ``lam`` chosen on the last fifth of the
training videos) is fitted on the training split and predicts the test split's embeddings; each
prediction is L2-normalised and compared (cosine, mean over windows) with the embedding of its
own clip, of another test clip of the same class, and of a random test clip. ``own_r1``: how
often the own clip's embedding is the nearest of all test clips' (same window).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from ..config import Config
from ..data.datasets import build_dataset
from ..evaluate.common import collate_list, item_clips
from ..models.base import Backbone
from ..models.heads import Encoder

LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


@torch.no_grad()
def window_features(flow_backbone: Backbone, rgb_encoder: Encoder, cfg: Config, subset: str,
                    batch_size: int = 16) -> tuple[list[Tensor], Tensor, Tensor]:
    """``(flow, keys, labels)`` of ``subset``: ``flow[k-1]`` float32 (N, W, C_k) pooled flow
    features after block k (k = 1..num_blocks), ``keys`` (N, W, D) the RGB embeddings, ``labels`` (N,)."""
    ds = build_dataset(cfg.data, subset, False, ("rgb", "flow"))
    flow_backbone.eval()
    rgb_encoder.eval()
    per_block: list[list[Tensor]] = [[] for _ in range(flow_backbone.num_blocks)]
    keys, labels = [], []
    for items in DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate_list):
        items = [it for it in items if not it.get("skipped")]
        rgb = torch.stack([item_clips(it, "rgb") for it in items])          # (B, W, C, T, S, S)
        flow = torch.stack([item_clips(it, "flow") for it in items])
        b, w = rgb.shape[:2]
        keys.append(rgb_encoder(rgb.flatten(0, 1)).float().unflatten(0, (b, w)))
        h = flow.flatten(0, 1)
        for k, block in enumerate(flow_backbone.blocks):
            h = block(h)
            per_block[k].append(flow_backbone.pool(h).float().unflatten(0, (b, w)))
        labels += [int(it["label"]) for it in items]
    return [torch.cat(f) for f in per_block], torch.cat(keys), torch.tensor(labels)


def fit_ridge(x: Tensor, y: Tensor, lam: float):
    """Ridge regression (M, C) -> (M, D) on standardised inputs, ``lam`` times M on the diagonal;
    returns the predictor (a function of (..., C))."""
    mean, std, y_mean = x.mean(0), x.std(0) + 1e-6, y.mean(0)
    xn = (x - mean) / std
    a = xn.T @ xn + lam * len(x) * torch.eye(x.shape[1])
    w = torch.linalg.solve(a, xn.T @ (y - y_mean))
    return lambda z: ((z - mean) / std) @ w + y_mean


def choose_lambda(x: Tensor, y: Tensor) -> float:
    """The ridge ``lam`` of :data:`LAMBDAS` with the best mean cosine on the last fifth of the
    training videos (x (N, W, C), y (N, W, D)), fitted on the rest."""
    cut = max(1, int(0.8 * len(x)))
    scores = []
    for lam in LAMBDAS:
        f = fit_ridge(x[:cut].flatten(0, 1), y[:cut].flatten(0, 1), lam)
        scores.append(F.cosine_similarity(f(x[cut:].flatten(0, 1)), y[cut:].flatten(0, 1)).mean().item())
    return LAMBDAS[int(np.argmax(scores))]


def compare(pred: Tensor, keys: Tensor, labels: Tensor, seed: int = 0) -> dict[str, float]:
    """Mean cosine (over windows and test clips) of the normalised predictions (N, W, D) with the
    own clip's keys, a same-class other clip's and a random clip's (drawn with ``seed``), and the
    own key's R@1 among all test keys of the same window."""
    rng = np.random.default_rng(seed)
    lab = labels.numpy()
    n = len(lab)
    same_idx = [rng.choice(np.flatnonzero((lab == lab[i]) & (np.arange(n) != i)) if (lab == lab[i]).sum() > 1
                           else np.array([i])) for i in range(n)]
    rand_idx = rng.integers(0, n, n)
    cos = lambda other: F.cosine_similarity(pred, keys[torch.as_tensor(np.asarray(other, dtype=np.int64))],
                                            dim=-1).mean().item()
    sims = torch.einsum("nwd,mwd->wnm", pred, keys)
    r1 = (sims.argmax(2) == torch.arange(n)[None]).float().mean().item()
    return {"own": cos(np.arange(n)), "same_class": cos(same_idx), "random": cos(rand_idx), "own_r1": r1}


def premise_from_features(train: tuple, test: tuple, seed: int = 0) -> dict[str, dict]:
    """Per block ``block<k>``: ``lambda``, ``own``, ``same_class``, ``random``, ``own_r1`` (see
    :func:`compare`) from :func:`window_features` of the train and test splits."""
    (x_tr, y_tr, _), (x_te, y_te, lab_te) = train, test
    out = {}
    for k, (xk_tr, xk_te) in enumerate(zip(x_tr, x_te), start=1):
        lam = choose_lambda(xk_tr, y_tr)
        f = fit_ridge(xk_tr.flatten(0, 1), y_tr.flatten(0, 1), lam)
        pred = F.normalize(f(xk_te), dim=-1)
        out[f"block{k}"] = {"lambda": lam, **compare(pred, y_te, lab_te, seed)}
    return out
