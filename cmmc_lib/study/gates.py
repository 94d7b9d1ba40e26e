"""G1, G2, G3 and the premise diagnostic as library functions, and :func:`run_gates`, which runs
them for a preset and seeds and appends one JSON row per gate to ``<out>/gates.jsonl``.

Each gate returns ``{"gate", "labels", "test": {subset: Measured dict}, "transfer": {...}, ...}``
(subsets ``all`` / ``scene`` / ``motion``, :mod:`.subsets`). The transfer set is the same design
generated with an unseen data seed: the supervised classifier is applied to its test split as it
is; a MoCo backbone gets a new linear probe fitted on its training split.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

from ..config import Config, DataConfig
from ..data.prepare import prepare_synthetic
from ..evaluate.features import FeatureCache, split_features
from ..evaluate.linear import linear_probe
from ..evaluate.runner import probe_milestones
from ..runs import RunFolder
from ..ssl.factory import load_backbone, load_encoder
from ..train import train_or_load
from .premise import premise_from_features, window_features
from .subsets import subset_accuracy, clip_subsets
from .supervised import predict_split, train_supervised

#: the pass marks: G1 and G2 on the motion-only test clips, the gap G1 - G3 on them
GOALS = {"g1": 0.80, "g2": 0.85, "g3": 0.20}
PARTS = ("g1", "g2", "g3", "premise")


# --------------------------------------------------------------------------- data
def transfer_overrides(data: DataConfig, seed: int | None) -> dict | None:
    """DataConfig overrides for the transfer set (the same synthetic size with data seed ``seed``),
    or None without one."""
    if seed is None:
        return None
    root = str(Path(data.root).parent / f"{data.synthetic_size}-seed{seed}") if data.root else None
    return {"synthetic_seed": int(seed), "root": root}


def prepare_data(data: DataConfig) -> Path:
    """The synthetic set of ``data``, generated and its frame cache built
    (:func:`cmmc_lib.data.prepare.prepare_synthetic`). Returns the root."""
    return prepare_synthetic(data)


# --------------------------------------------------------------------------- G1
def gate_supervised(cfg: Config, run_dir: str | Path, transfer_seed: int | None = None,
                    progress: bool = False) -> dict:
    """G1: the RGB backbone of ``cfg`` trained with labels from scratch on the pre-training's
    augmented views (:func:`~cmmc_lib.study.supervised.train_supervised`), top-1 per test subset."""
    cfg = copy.deepcopy(cfg)
    cfg.ssl.modality = "rgb"
    model, train = train_supervised(cfg, run_dir, progress)
    out = {"gate": "g1", "labels": True, "modality": "rgb", "run_dir": str(run_dir), "train": train,
           "test": _classified(model, cfg, {}, progress)}
    extra = transfer_overrides(cfg.data, transfer_seed)
    if extra is not None:
        out["transfer"] = _classified(model, cfg, extra, progress)
    return out


def _classified(model, cfg: Config, overrides: dict, progress: bool) -> dict:
    ds, pred = predict_split(model, cfg, "test", batch_size=cfg.optim.batch_size, progress=progress, **overrides)
    correct = (pred.probs.argmax(1) == pred.labels).numpy()
    return subset_accuracy(correct, clip_subsets(ds.root, pred.videos), len(ds.classes))


# --------------------------------------------------------------------------- G2, G3
def ssl_gate(cfg: Config, modality: str, run_dir: str | Path, transfer_seed: int | None = None,
             progress: bool = False) -> dict:
    """MoCo on ``modality`` at ``cfg``'s budget (:func:`cmmc_lib.train.train_or_load`: a finished
    run is reused), then the library's linear probe (``eval.probe_*``, CoCLR's protocol: one
    window per training video, ``data.eval_windows`` per test video; the last epoch's accuracy)."""
    cfg = copy.deepcopy(cfg)
    cfg.ssl.method, cfg.ssl.modality, cfg.run.progress = "moco", modality, progress
    train = train_or_load(cfg, run_dir)
    backbone, _ = load_backbone(run_dir)
    out = {"labels": False, "modality": modality, "run_dir": str(run_dir),
           "train": {k: train.get(k) for k in ("steps", "seconds", "final_loss", "knn_r1", "reused")},
           "test": _probed(backbone, cfg, run_dir, {}, progress)}
    extra = transfer_overrides(cfg.data, transfer_seed)
    if extra is not None:
        out["transfer"] = _probed(backbone, cfg, run_dir, extra, progress)
    return out


def _probed(backbone, cfg: Config, run_dir, overrides: dict, progress: bool) -> dict:
    run = RunFolder(run_dir)
    data = dataclasses.replace(cfg.data, **overrides)
    cache = FeatureCache(run.checkpoint_path("last"), run.features_dir)
    kw = dict(batch_size=cfg.optim.batch_size, cache=cache, progress=progress, window_l2=cfg.eval.window_l2)
    train_ds, train = split_features(backbone, data, cfg.ssl.modality, "train", eval_windows=1, **kw)
    test_ds, test = split_features(backbone, data, cfg.ssl.modality, "test", **kw)
    ev, k = cfg.eval, len(train_ds.classes)
    res = linear_probe(train.feats, train.labels, test.feats, test.labels, k, epochs=ev.probe_epochs,
                       lr=ev.probe_lr, milestones=probe_milestones(ev, ev.probe_epochs),
                       batch_size=ev.probe_batch_size, weight_decay=ev.probe_weight_decay, seed=cfg.run.seed,
                       features=ev.probe_features)
    correct = (res["test_probs"].argmax(1) == test.labels).numpy()
    return {**subset_accuracy(correct, clip_subsets(test_ds.root, test.videos), k),
            "probe_train_top1": res["train_top1"]}


def gate_teacher(cfg: Config, run_dir: str | Path, transfer_seed: int | None = None, progress: bool = False) -> dict:
    """G2: flow MoCo, linear probe per test subset (:func:`ssl_gate`)."""
    return {"gate": "g2", **ssl_gate(cfg, "flow", run_dir, transfer_seed, progress)}


def gate_gap(cfg: Config, run_dir: str | Path, supervised: dict, transfer_seed: int | None = None,
             progress: bool = False) -> dict:
    """G3: RGB MoCo at the same budget (:func:`ssl_gate`) and its gap below G1 (``supervised``,
    :func:`gate_supervised`'s result) on every subset: ``gap[set][subset] = {"value", "se"}``,
    value = G1 - G3, se = sqrt(se_G1^2 + se_G3^2)."""
    out = {"gate": "g3", **ssl_gate(cfg, "rgb", run_dir, transfer_seed, progress), "gap": {}}
    for where in ("test", "transfer"):
        if where in out and where in supervised:
            out["gap"][where] = {s: _difference(supervised[where][s], out[where][s])
                                 for s in out[where] if isinstance(out[where][s], dict)}
    return out


def _difference(a: dict | None, b: dict | None) -> dict | None:
    if a is None or b is None:
        return None
    return {"value": a["value"] - b["value"], "se": math.sqrt(a["se"] ** 2 + b["se"] ** 2)}


# --------------------------------------------------------------------------- premise
def premise_diagnostic(cfg: Config, flow_run: str | Path, rgb_run: str | Path) -> dict:
    """How well pooled flow features after each block predict the clip's own RGB MoCo embedding
    vs a same-class clip's vs a random clip's (:mod:`.premise`), on the test split of ``cfg.data``."""
    flow_backbone, _ = load_backbone(flow_run)
    rgb_encoder, _ = load_encoder(rgb_run)
    train = window_features(flow_backbone, rgb_encoder, cfg, "train", cfg.optim.batch_size)
    test = window_features(flow_backbone, rgb_encoder, cfg, "test", cfg.optim.batch_size)
    return {"gate": "premise", "labels": False, "blocks": premise_from_features(train, test, cfg.run.seed)}
