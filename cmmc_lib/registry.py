"""The project's named things, each listed once: modalities, backbones and training methods.

Everything else reads these tables: the config's ``validate``, the method factory, the
dataset builder, the CLI's choices, the course and the notebooks. A name that is listed but
not ``available`` is known (it has a place in the plan and the config) but refused with one
line until its code exists.

Pure metadata: this module imports nothing of the package, so every layer may read it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Modality:
    """An input stream: its channels, the kind of network that reads it, the datasets that
    carry it."""
    name: str
    channels: int
    network: str                     # "video": (C, T, H, W) clips; "skeleton": (C, T, V, M)
    datasets: tuple[str, ...]
    summary: str
    available: bool = True


@dataclass(frozen=True)
class Dataset:
    """A dataset the loaders read: how many official splits it has (``data.split`` 1..splits)."""
    name: str
    splits: int
    summary: str


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone: where its class lives, how many blocks it has (the cut points of mixing are
    1 .. num_blocks - 1), what it reads, whether ``model.width`` sizes it."""
    name: str
    cls: str                         # "module:Class" inside cmmc_lib.models
    num_blocks: int
    network: str                     # the Modality.network it reads
    sized_by_width: bool
    summary: str


@dataclass(frozen=True)
class Method:
    """A training method: which step class runs it and what it mixes.

    step: ``moco`` (no mixing), ``input-mix`` (the input clips, same modality), ``manifold-mix``
    (block-k features, same modality), ``cross-modal-mix`` (block-k features with the other
    modality's block-l features; CMMC), ``coclr`` (CoCLR's mined positives).
    mix: ``mixup`` | ``cutmix`` | None.
    """
    name: str
    step: str
    mix: str | None
    summary: str
    available: bool = True

    @property
    def cross_modal(self) -> bool:
        """Needs the other modality's network (a frozen source, or CoCLR's miner)."""
        return self.step in ("cross-modal-mix", "coclr")


def _table(*items):
    return {item.name: item for item in items}


DATASETS: dict[str, Dataset] = _table(
    Dataset("synthetic", 3, "the generated stick-figure actions (cmmc data synth), UCF101 layout"),
    Dataset("ucf101", 3, "UCF101, official splits 1-3"),
    Dataset("hmdb51", 3, "HMDB51, official splits 1-3"),
    Dataset("ntu60", 2, "NTU RGB+D 60: split 1 cross-subject, 2 cross-view"),
)
VIDEO_DATASETS = ("synthetic", "ucf101", "hmdb51")

MODALITIES: dict[str, Modality] = _table(
    Modality("rgb", 3, "video", VIDEO_DATASETS, "colour frames, values in [-1, 1]"),
    Modality("flow", 2, "video", VIDEO_DATASETS, "optical flow (x, y) in px / 20, TV-L1 or DIS"),
    Modality("pose", 3, "skeleton", ("ntu60", "synthetic"), "skeleton joints (x, y, z or confidence)",
             available=False),
)

BACKBONES: dict[str, BackboneSpec] = _table(
    BackboneSpec("small3d", "small3d:Small3D", 4, "video", True, "small 3-D CNN for CPU lessons"),
    BackboneSpec("s3d", "s3d:S3D", 5, "video", False, "S3D in CoCLR's layout, 1024-d (the paper)"),
    BackboneSpec("stgcn", "stgcn:STGCN", 10, "skeleton", True, "ST-GCN at SkeletonCLR's size"),
)

METHODS: dict[str, Method] = _table(
    Method("moco", "moco", None, "MoCo baseline: InfoNCE over batch keys and a queue"),
    Method("mixup", "input-mix", "mixup", "+ mixup of the input clips (same modality)"),
    Method("cutmix", "input-mix", "cutmix", "+ cutmix of the input clips (same modality)"),
    Method("manifold-mixup", "manifold-mix", "mixup", "+ mixup of block-k features (same modality)"),
    Method("manifold-cutmix", "manifold-mix", "cutmix", "+ tesseract cutmix of block-k features (same modality)"),
    Method("cm-mixup", "cross-modal-mix", "mixup", "+ cross-modal mixup of block-k features"),
    Method("cmmc", "cross-modal-mix", "cutmix", "+ cross-modal manifold cutmix (CMMC)"),
    Method("coclr", "coclr", None, "CoCLR: positives mined by the other modality's frozen network"),
    Method("coclr-cmmc", "coclr", "cutmix", "CoCLR + CMMC: mined positives and a cross-modal tesseract"),
)


def lookup(table: dict, name: str, what: str):
    """``table[name]``, or ValueError naming the choices (and why an entry cannot run yet)."""
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; choose one of {', '.join(table)}")
    item = table[name]
    if not getattr(item, "available", True):
        ready = [n for n, i in table.items() if getattr(i, "available", True)]
        raise ValueError(f"{what} {name!r} is not available yet in this version; choose one of "
                         f"{', '.join(ready)}")
    return item


def available(table: dict) -> tuple[str, ...]:
    """The names of a table that can run now (the CLI's choices)."""
    return tuple(n for n, i in table.items() if getattr(i, "available", True))
