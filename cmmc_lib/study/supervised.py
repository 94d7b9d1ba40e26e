"""G1's trainer: the pre-training's backbone trained with labels, from scratch, on exactly the
pre-training's inputs.

The batches are the training loop's (:class:`cmmc_lib.train.TrainLoader`: the seeded batches of
each epoch, ``optim.batch_size`` videos, the geometric augmentation per item and the photometric
one batched on the device, :func:`cmmc_lib.train.to_device`), one view per video; the optimiser,
learning rate and its schedule are the pre-training's (``optim``, :func:`cmmc_lib.train.lr_at`, set
before every step).
The classifier is :class:`~cmmc_lib.evaluate.finetune.ClipClassifier` without dropout: a linear
layer on the pooled features. The weights (and the config) go to ``<run_dir>/supervised.pt``; a
folder that holds them is reused, not trained again, unless they were trained with other settings
(then it is refused, as :func:`cmmc_lib.train.train_or_load` refuses a run of other settings).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import Config
from ..data.datasets import build_dataset
from ..devices import resolve_device
from ..evaluate.finetune import ClipClassifier, predict_probabilities
from ..files import load_state, save_state
from ..ssl.factory import backbone_for
from ..train import (LOCATION_KEYS, RUNTIME_KEYS, Env, Position, TrainLoader, config_changes, lr_at,
                     make_optimizer, step_seed, to_device)

log = logging.getLogger(__name__)

WEIGHTS = "supervised.pt"


def build_classifier(cfg: Config, num_classes: int) -> ClipClassifier:
    """The backbone of ``cfg`` for ``cfg.ssl.modality`` + a linear layer (no dropout), seeded by
    ``run.seed``."""
    torch.manual_seed(cfg.run.seed)
    return ClipClassifier(backbone_for(cfg, cfg.ssl.modality), num_classes, dropout=0.0)


def train_supervised(cfg: Config, run_dir: str | Path, progress: bool = False) -> tuple[ClipClassifier, dict]:
    """Train (or load, when ``<run_dir>/supervised.pt`` exists) the classifier of ``cfg`` with
    labels for ``optim.epochs`` epochs (``run.max_steps`` caps the steps). Returns the model
    (eval mode) and ``{"steps", "seconds", "final_loss", "train_top1", "reused"}``; train top-1
    is on the augmented training views of the last epoch."""
    path = Path(run_dir) / WEIGHTS
    modality = cfg.ssl.modality
    train_ds = build_dataset(cfg.data, "train", True, (modality,), seed=cfg.run.seed, views=1)
    model = build_classifier(cfg, len(train_ds.classes))
    if path.is_file():
        return _reuse(path, cfg, model)
    env = Env(0, 1, resolve_device(cfg.run.device))
    model = model.to(env.device)
    optimizer = make_optimizer(model, cfg, env)
    loader = TrainLoader(train_ds, cfg, env)
    steps_per_epoch = len(train_ds) // cfg.optim.batch_size
    total = steps_per_epoch * cfg.optim.epochs if cfg.run.max_steps is None else min(
        cfg.run.max_steps, steps_per_epoch * cfg.optim.epochs)
    bar = tqdm(total=total, desc=f"supervised {modality}", disable=not progress, leave=False)
    pos, started, loss, hits, seen = Position(), time.perf_counter(), float("nan"), 0, 0
    try:
        while pos.step < total:
            hits, seen = 0, 0
            for n, batch in enumerate(loader.epoch(pos)):
                if pos.step >= total:
                    break
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(cfg.optim, pos.epoch, n, steps_per_epoch)
                torch.manual_seed(step_seed(cfg.run.seed, pos.step))
                loss, correct = _step(model, optimizer, to_device(batch, env, cfg.data), modality)
                hits, seen = hits + correct, seen + cfg.optim.batch_size
                pos.step += 1
                bar.update(1)
            pos.epoch += 1
    finally:
        loader.close()
        bar.close()
    summary = {"steps": pos.step, "seconds": round(time.perf_counter() - started, 1), "final_loss": loss,
               "train_top1": hits / max(seen, 1)}
    save_state({"model": model.state_dict(), "summary": summary, "config": cfg.to_dict()}, path)
    return model.eval(), {**summary, "reused": False}


def _reuse(path: Path, cfg: Config, model: ClipClassifier) -> tuple[ClipClassifier, dict]:
    """The trained weights in ``path`` loaded into ``model``; ValueError when they were trained
    with other settings than ``cfg`` (run-time settings and locations aside)."""
    state = load_state(path)
    saved = state.get("config")
    if saved is None:
        log.warning("%s holds no config (written before the check): reused as it is", path)
    changed = [c for c in config_changes(Config.from_dict(saved), cfg)
               if c.split(":")[0] not in RUNTIME_KEYS | LOCATION_KEYS] if saved else []
    if changed:
        raise ValueError(f"{path} holds a model trained with other settings ({'; '.join(changed[:3])}): "
                         "delete it or choose another folder")
    model.load_state_dict(state["model"])
    return model.eval(), {**state["summary"], "reused": True}


def _step(model: ClipClassifier, optimizer, batch: dict, modality: str) -> tuple[float, int]:
    """One cross-entropy step on the batch's views (B, V, C, T, S, S) with its labels (B,):
    ``(loss, correct predictions)``."""
    x = batch[modality]
    y = batch["label"].to(x.device).repeat_interleave(x.shape[1])
    model.train()
    logits = model(x.flatten(0, 1))
    loss = F.cross_entropy(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach()), int((logits.argmax(1) == y).sum())


def predict_split(model: ClipClassifier, cfg: Config, subset: str = "test", batch_size: int = 16,
                  progress: bool = False, **data_overrides):
    """The classifier's predictions on ``subset`` of ``cfg.data`` (with ``data_overrides``, e.g. a
    transfer set's seed): every evaluation window (centre crop), softmax averaged per video.
    Returns ``(dataset, Predictions)`` (:class:`~cmmc_lib.evaluate.finetune.Predictions`)."""
    data = dataclasses.replace(cfg.data, **data_overrides)
    ds = build_dataset(data, subset, False, (cfg.ssl.modality,))
    device = next(model.parameters()).device
    return ds, predict_probabilities(model, ds, cfg.ssl.modality, batch_size=batch_size, device=device,
                                     progress=progress)
