"""Evaluate a run folder with one protocol: what ``cmmc eval retrieval|linear|finetune`` does.

For each run (``run`` and, for two-stream fusion, ``other_run``) the trained backbone and its
config are loaded from the run folder; the datasets come from the run's ``DataConfig``:

* gallery / train set = subset ``train``, deterministic transforms, one window per video;
* queries / test set  = subset ``test``, deterministic transforms, ``eval_windows`` windows
  per video (features and probabilities averaged over them).

Features are cached under ``<run>/features/`` (see :mod:`.features`). Each stream is reported
on its own, and with a second run the fused result beside them (retrieval: sum of similarity
matrices; linear / fine-tune: mean of class probabilities; two skeleton streams: mean of the
linear layers' logits, as docs/method.md says for SkeletonCLR's two-stream). The result is a
JSON-serialisable dict, also appended to ``<run>/eval.jsonl``.

Skeleton runs (ST-GCN on the joint / motion / bone streams) are evaluated on their skeleton
dataset (one view per sample, no augmentation) with the run's ``eval.probe_*`` protocol: the
skeleton settings of the presets give SkeletonCLR's (raw features, SGD lr 3.0, no weight decay,
batch 128, lr x0.1 at 80% of the epochs); NTU-60 split 1 is cross-subject, split 2 cross-view.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.datasets import build_dataset
from ..devices import resolve_device
from ..registry import BACKBONES
from ..runs import RunFolder
from ..ssl.factory import load_backbone
from .common import classification_summary
from .features import FeatureCache, Features, split_features
from .finetune import finetune
from .fusion import fuse_probabilities, two_stream_ranks
from .linear import linear_probe
from .retrieval import hit_rates_from_ranks, retrieval_ranks

log = logging.getLogger(__name__)

PROTOCOLS = ("retrieval", "linear", "finetune")

# Options each protocol accepts besides the named arguments of evaluate_run.
_COMMON_OPTS = {"feature_batch_size", "num_workers", "other_which", "append", "seed"}
PROTOCOL_OPTS = {
    "retrieval": _COMMON_OPTS | {"center", "chunk_size"},
    "linear": _COMMON_OPTS | {"lr", "milestones", "weight_decay"},
    "finetune": _COMMON_OPTS | {"lr", "milestones", "weight_decay", "head_lr_ratio", "dropout",
                                "ten_crop"},
}


@dataclass
class Stream:
    """One trained network: its run folder, config, backbone and the checkpoint it came from."""
    run_dir: Path
    cfg: Any
    backbone: nn.Module
    checkpoint: Path

    @property
    def modality(self) -> str:
        return self.cfg.ssl.modality


def load_stream(run_dir: str | Path, which: str = "last", modality: str | None = None,
                data: dict[str, Any] | None = None) -> Stream:
    """The network of a run (``modality``: which one, for a joint run) with its config's data
    replaced by ``data`` (DataConfig fields, e.g. ``{"dataset": "hmdb51"}``: a transfer set)."""
    run = RunFolder(run_dir)
    backbone, cfg = load_backbone(run, which, modality=modality)
    if data:
        known = {f.name for f in dataclasses.fields(cfg.data)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DataConfig field(s) for the evaluation data: {', '.join(unknown)}")
        cfg.data = dataclasses.replace(cfg.data, **data)
    return Stream(run.path, cfg, backbone, run.checkpoint_path(which))


def _stream_split(stream: Stream, subset: str, device: torch.device, batch_size: int = 8,
                  num_workers: int = 0, progress: bool = True):
    """``(dataset, Features)`` of ``subset`` for ``stream`` as the protocols cut it (train: one
    window per video; test: the config's ``eval_windows``), cached in ``<run>/features``."""
    cache = FeatureCache(stream.checkpoint, RunFolder(stream.run_dir).features_dir)
    return split_features(stream.backbone, stream.cfg.data, stream.modality, subset,
                          eval_windows=1 if subset == "train" else None, batch_size=batch_size,
                          device=device, cache=cache, progress=progress, num_workers=num_workers,
                          window_l2=stream.cfg.eval.window_l2)


def _same_videos(a: Features, b: Features, what: str) -> tuple[Features, Features]:
    """Both streams on the videos both could read (two-stream fusion compares the same videos);
    ValueError when the two runs list different videos at all."""
    if sorted(a.videos + a.skipped) != sorted(b.videos + b.skipped):
        raise ValueError(f"the two runs' {what} sets list different videos ({len(a)} vs {len(b)}): "
                         "two-stream fusion needs the same dataset and split")
    common = set(a.videos) & set(b.videos)
    return a.keep(common), b.keep(common)


def _skipped(test: Features, train: Features) -> dict[str, list[str]]:
    return {"test": sorted(test.skipped), "train": sorted(train.skipped)}


def hits(correct) -> str:
    """Per-test-video correctness (a bool tensor or sequence, in ``test_videos`` order) as a string
    of 0s and 1s: a subset's accuracy can be read off a result file later (e.g. the synthetic
    data's motion-only clips, :func:`subset_value`)."""
    return "".join("1" if bool(c) else "0" for c in torch.as_tensor(correct).flatten().tolist())


def subset_value(hits_: str, mask) -> tuple[float | None, int]:
    """The accuracy of the ``hits_`` string (:func:`hits`) over the entries where ``mask`` is true:
    ``(value, n)``, value None for an empty subset."""
    chosen = [h == "1" for h, m in zip(hits_, mask, strict=True) if m]
    return (sum(chosen) / len(chosen) if chosen else None), len(chosen)


def _json_summary(summary: dict) -> dict:
    out = {k: float(summary[k]) for k in ("top1", "top5")}
    out["confusion"] = summary["confusion"].tolist()
    return out


# ----------------------------------------------------------------------------- protocols
def _retrieval(streams: list[Stream], ks, device, feature_batch, num_workers, progress, opts) -> dict:
    center = opts.get("center", True)
    chunk_size = opts.get("chunk_size", 1024)
    sets = [(_stream_split(s, "test", device, feature_batch, num_workers, progress)[1],
             _stream_split(s, "train", device, feature_batch, num_workers, progress)[1]) for s in streams]
    if len(sets) == 2:
        (q1, q2), (g1, g2) = _same_videos(sets[0][0], sets[1][0], "test"), _same_videos(sets[0][1], sets[1][1],
                                                                                          "train")
        sets = [(q1, g1), (q2, g2)]
    queries, gallery = sets[0]
    kept = tuple(k for k in ks if k <= len(gallery))
    skipped = [k for k in ks if k > len(gallery)]
    if skipped:
        log.warning("R@k for k=%s skipped: the gallery holds only %d videos", skipped, len(gallery))
    if not kept:
        raise ValueError(f"every k in {tuple(ks)} is larger than the gallery ({len(gallery)} videos)")

    def named(rates: dict[int, float]) -> dict[str, float]:
        return {f"R@{k}": v for k, v in rates.items()}

    per_stream = []
    for s, (q, g) in zip(streams, sets):
        ranks = retrieval_ranks(q.feats, q.labels, g.feats, g.labels, center, chunk_size)
        per_stream.append({"run": str(s.run_dir), "modality": s.modality,
                           **named(hit_rates_from_ranks(ranks, kept)), "R@1_hits": hits(ranks < 1)})
    fused = None
    if len(sets) == 2:
        (q1, g1), (q2, g2) = sets
        ranks = two_stream_ranks(q1.feats, g1.feats, q2.feats, g2.feats, q1.labels, g1.labels, center, chunk_size)
        fused = {**named(hit_rates_from_ranks(ranks, kept)), "R@1_hits": hits(ranks < 1)}
    return {"num_queries": len(queries), "num_gallery": len(gallery), "num_test": len(queries),
            "num_train": len(gallery), "ks": list(kept), "ks_skipped": skipped, "streams": per_stream,
            "fused": fused, "skipped": _skipped(queries, gallery), "test_videos": list(queries.videos)}


def probe_milestones(ev, epochs: int) -> tuple[int, ...]:
    """The linear probe's lr decay epochs: ``eval.probe_milestones`` (scaled when ``epochs``
    differs from ``eval.probe_epochs``), else docs/method.md's 60% and 80% of the epochs."""
    if ev.probe_milestones:
        return tuple(sorted({max(1, round(m * epochs / ev.probe_epochs)) for m in ev.probe_milestones}))
    return tuple(sorted({round(0.6 * epochs), round(0.8 * epochs)}))


def _is_skeleton(stream: Stream) -> bool:
    return BACKBONES[stream.cfg.model.backbone].network == "skeleton"


def _linear(streams, epochs, batch_size, device, feature_batch, num_workers, progress, opts) -> dict:
    ev = streams[0].cfg.eval
    epochs = ev.probe_epochs if epochs is None else epochs
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    # docs/method.md: lr x0.1 at epochs 60 and 80 of 100 (SkeletonCLR: at 80); other lengths keep the fractions
    milestones = tuple(opts.get("milestones") or probe_milestones(ev, epochs))
    per_stream, probs, best_probs, logits, test_sets = [], [], [], [], []
    splits = [(*_stream_split(s, "train", device, feature_batch, num_workers, progress),
               _stream_split(s, "test", device, feature_batch, num_workers, progress)[1]) for s in streams]
    if len(splits) == 2:
        (tr1, tr2), (te1, te2) = (_same_videos(splits[0][1], splits[1][1], "train"),
                                  _same_videos(splits[0][2], splits[1][2], "test"))
        splits = [(splits[0][0], tr1, te1), (splits[1][0], tr2, te2)]
    for s, (train_ds, train, test) in zip(streams, splits):
        classes = list(train_ds.classes)
        e = s.cfg.eval
        res = linear_probe(train.feats, train.labels, test.feats, test.labels, len(classes),
                           epochs=epochs, lr=opts.get("lr", e.probe_lr), milestones=milestones,
                           batch_size=batch_size or e.probe_batch_size,
                           weight_decay=opts.get("weight_decay", e.probe_weight_decay),
                           seed=opts.get("seed", s.cfg.run.seed), device=device, progress=progress,
                           features=e.probe_features)
        per_stream.append({"run": str(s.run_dir), "modality": s.modality, **_json_summary(res),
                           "train_top1": res["train_top1"], "final_train_loss": res["train_loss"][-1],
                           "num_train": len(train), "num_test": len(test), "classes": classes,
                           "probe": e.probe_features, "top1_best_test_epoch": res["best_top1"],
                           "best_test_epoch": res["best_epoch"],
                           "top1_hits": hits(res["test_probs"].argmax(1) == test.labels)})
        probs.append(res["test_probs"])
        best_probs.append(res["best_probs"])
        logits.append(res["test_logits"])
        test_sets.append(test)
    fused, fusion = None, None
    if len(streams) == 2:
        num_classes = len(per_stream[0]["classes"])
        fusion = "logits" if all(_is_skeleton(s) for s in streams) else "probabilities"
        scores = (logits[0] + logits[1]) / 2 if fusion == "logits" else fuse_probabilities(*probs)
        fused = _json_summary(classification_summary(scores, test_sets[0].labels, num_classes))
        fused["top1_hits"] = hits(scores.argmax(1) == test_sets[0].labels)
        fused["top1_best_test_epoch"] = classification_summary(fuse_probabilities(*best_probs), test_sets[0].labels,
                                                               num_classes)["top1"]
    first = per_stream[0]
    return {"num_train": first["num_train"], "num_test": first["num_test"], "classes": first["classes"],
            "epochs": epochs, "milestones": list(milestones), "streams": per_stream, "fused": fused,
            "fusion": fusion, "skipped": _skipped(test_sets[0], splits[0][1]),
            "test_videos": list(test_sets[0].videos)}


def _finetune(streams, epochs, batch_size, device, num_workers, progress, opts) -> dict:
    splits = [finetune_data(s, opts.get("ten_crop")) for s in streams]   # all first: a mismatch fails fast
    ten_crop = splits[0][1].eval_crops == 10
    if len(splits) == 2 and list(splits[0][1].videos) != list(splits[1][1].videos):
        raise ValueError("the two runs' test sets list different videos: two-stream fusion needs "
                         "the same dataset and split")
    per_stream, probs = [], []
    for s, (train_ds, test_ds) in zip(streams, splits):
        ev = s.cfg.eval                 # the protocol's own schedule, not the pre-training's
        res = finetune(s.backbone, train_ds, test_ds, s.modality, len(train_ds.classes),
                       epochs=epochs or ev.finetune_epochs, lr=opts.get("lr", ev.finetune_lr),
                       head_lr_ratio=opts.get("head_lr_ratio", 10.0), dropout=opts.get("dropout", ev.finetune_dropout),
                       batch_size=batch_size or s.cfg.optim.batch_size,
                       weight_decay=opts.get("weight_decay", 1e-3),
                       milestones=opts.get("milestones", ev.finetune_milestones if epochs is None else ()),
                       device=device, seed=opts.get("seed", s.cfg.run.seed), num_workers=num_workers,
                       progress=progress)
        per_stream.append({"run": str(s.run_dir), "modality": s.modality, **_json_summary(res),
                           "train_top1": res["train_top1"], "train_loss": res["train_loss"],
                           "epochs": len(res["train_loss"]), "milestones": list(res["milestones"]),
                           "lr_per_epoch": res["lr_per_epoch"],
                           "lr_head": res["lr_head"],
                           "lr_backbone": res["lr_backbone"]})
        probs.append(res)
    train_ds, test_ds = splits[0]
    fused, tested = None, probs[0]
    if len(streams) == 2:                  # fused over the test videos both streams could read
        common = set(probs[0]["test_videos"]) & set(probs[1]["test_videos"])
        rows = [[i for i, v in enumerate(r["test_videos"]) if v in common] for r in probs]
        fused = _json_summary(classification_summary(
            fuse_probabilities(*(r["test_probs"][i] for r, i in zip(probs, rows))),
            probs[0]["test_labels"][rows[0]], len(test_ds.classes)))
    skipped = sorted(set().union(*(r["skipped"] for r in probs)))
    return {"num_train": len(train_ds), "num_test": len(tested["test_videos"]), "classes": list(test_ds.classes),
            "ten_crop": ten_crop, "streams": per_stream, "fused": fused,
            "fusion": "probabilities" if fused is not None else None,
            "skipped": {"test": skipped, "train": sorted(set(train_ds.skipped_items()))}}


def finetune_data(stream: Stream, ten_crop: bool | None = None):
    """(train, test) datasets of fine-tuning: the training set with CoCLR's fine-tune transform (one
    view per video, a random crop of the pre-training's area range, colour jitter with probability
    ``eval.finetune_jitter``, no grey, no blur, every view strong), the test set of the evaluation
    windows, each in CoCLR's ten crops when ``ten_crop`` (default ``eval.ten_crop``)."""
    data, ev = stream.cfg.data, stream.cfg.eval
    train = build_dataset(data, "train", True, (stream.modality,), seed=stream.cfg.run.seed, views=1,
                          view_mode="symmetric", crop_mode="torchvision", color_jitter=ev.finetune_jitter,
                          grayscale=0.0, blur=0.0)
    test = build_dataset(data, "test", False, (stream.modality,))
    test.eval_crops = 10 if (ev.ten_crop if ten_crop is None else ten_crop) else 1
    return train, test


# ----------------------------------------------------------------------------- entry point
def evaluate_run(run_dir: str | Path, protocol: str, other_run: str | Path | None = None,
                 which: str = "last", device: str | torch.device = "auto",
                 ks=(1, 5, 10, 20, 50), epochs: int | None = None, batch_size: int | None = None,
                 progress: bool = True, data: dict[str, Any] | None = None,
                 modality: str | None = None, other_modality: str | None = None, **opts) -> dict:
    """Evaluate the backbone of ``run_dir`` (and ``other_run`` for two-stream fusion).

    protocol: ``retrieval`` (R@k for ``ks``; k larger than the gallery is skipped with a
    warning), ``linear`` (linear probe: ``epochs`` default ``eval.probe_epochs``, lr x0.1 at 60%
    and 80% of them, ``batch_size`` default 1024) or ``finetune`` (``epochs`` and milestones
    default to the run's ``eval.finetune_*`` schedule, CoCLR's 500 epochs with decay at 400 and
    450 at the paper preset; ``batch_size`` to the run's). ``opts``: ``lr``, ``milestones``, ``weight_decay``, ``seed``;
    fine-tune: ``head_lr_ratio``, ``dropout``, ``ten_crop``; retrieval: ``center``,
    ``chunk_size``; all: ``feature_batch_size`` (videos per forward, default 8),
    ``num_workers``, ``other_which`` (checkpoint of ``other_run``, default ``which``),
    ``append`` (default True: add the result to ``<run>/eval.jsonl``).
    ``data``: DataConfig fields that replace the runs' own (evaluate on a transfer set, e.g.
    ``{"dataset": "hmdb51", "root": None}``: its train split trains the probe / is the gallery,
    its test split is tested / queried). ``modality`` / ``other_modality``: which network of a
    run that trained two at once (joint training).

    Returns a JSON-serialisable dict: ``protocol``, ``run``, ``other_run``, ``which``,
    ``timestamp``, ``device``, ``seconds``, ``streams`` (one entry per run: ``run``,
    ``modality`` and the metrics: ``R@k`` or ``top1``/``top5``/``confusion``...), ``fused``
    (the two-stream metrics, or None) and protocol-specific sizes.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    unknown = sorted(set(opts) - PROTOCOL_OPTS[protocol])
    if unknown:
        raise ValueError(f"unknown option(s) for {protocol}: {', '.join(unknown)}")
    if epochs is not None and epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    started = time.perf_counter()
    device = resolve_device(device)
    streams = [load_stream(run_dir, which, modality, data)]
    if other_run is not None:
        streams.append(load_stream(other_run, opts.get("other_which", which), other_modality, data))
    feature_batch = opts.get("feature_batch_size", 8)
    num_workers = opts.get("num_workers", 0)

    if protocol == "retrieval":
        body = _retrieval(streams, ks, device, feature_batch, num_workers, progress, opts)
    elif protocol == "linear":
        body = _linear(streams, epochs, batch_size, device, feature_batch, num_workers, progress, opts)
    else:
        body = _finetune(streams, epochs, batch_size, device, num_workers, progress, opts)

    result = {"protocol": protocol, "run": str(run_dir),
              "other_run": None if other_run is None else str(other_run), "which": str(which),
              "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "device": str(device), "dataset": streams[0].cfg.data.dataset, "data": data or {}, **body,
              "seconds": time.perf_counter() - started}
    if opts.get("append", True):
        RunFolder(run_dir).append_eval(result)
    return result


def format_result(result: dict) -> str:
    """A human summary of an :func:`evaluate_run` result: one line per stream and the fusion."""
    metrics = ([f"R@{k}" for k in result["ks"]] if result["protocol"] == "retrieval"
               else ["top1", "top5"])
    rows = [(f"{s['modality']:<5} {s['run']}", s) for s in result["streams"]]
    if result.get("fused"):
        rows.append(("two-stream (fused)", result["fused"]))
    width = max(len(name) for name, _ in rows)
    lines = [f"{result['protocol']} on {result['dataset']} ({result['device']}, {result['seconds']:.1f} s)"]
    lines += [f"{name:<{width}}  " + "  ".join(f"{m} {row[m]:.3f}" for m in metrics) for name, row in rows]
    if result.get("ks_skipped"):
        lines.append(f"skipped k={result['ks_skipped']}: larger than the gallery ({result['num_gallery']})")
    if result["protocol"] == "linear":                # CoCLR's protocol: the best of the epochs scored on the test set
        best = [f"{s['modality']} {s['top1_best_test_epoch']:.3f} (epoch {s['best_test_epoch']})"
                for s in result["streams"]]
        if result.get("fused"):
            best.append(f"two-stream {result['fused']['top1_best_test_epoch']:.3f}")
        lines.append("top1 at the best test epoch (CoCLR's protocol, chosen on the test set): " + ", ".join(best))
    lines.append(f"{result['num_test']} test videos evaluated" + (f", {result['num_train']} train videos"
                                                                   if "num_train" in result else ""))
    for subset, videos in (result.get("skipped") or {}).items():
        if videos:
            lines.append(f"SKIPPED {len(videos)} unreadable {subset} video(s), not counted: "
                         + ", ".join(videos[:5]) + (" ..." if len(videos) > 5 else ""))
    return "\n".join(lines)

