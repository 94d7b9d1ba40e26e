"""Dataclass configs and the named presets ``tiny``, ``cpu`` and ``paper``.

One code path, three scales: a preset is a :class:`Config`; a run is a preset plus
``key=value`` overrides (``lr=3e-4``, ``optim.lr=3e-4``, ``ssl.layer_k=2``).  Every choice
that ``docs/method.md`` marks **[choice]** is a field here, with the default given there.

Each preset has a **skeleton face** (:data:`SKELETON_SETTINGS`): when the overrides name a
skeleton stream (``ssl.modality=joint``, ``--modality motion``, ``schedule.modalities=joint,motion``)
the preset's skeleton settings (ST-GCN, SkeletonCLR's SGD, its linear-evaluation protocol, the
NTU-60 data at the paper scale) are applied first and the overrides on top of them.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, get_args, get_origin, get_type_hints

from .registry import BACKBONES, DATASETS, METHODS, MODALITIES, lookup

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """Where clips come from and how they are cut.

    ``root=None`` means the default for the dataset: ``$CMMC_DATA_ROOT/<dataset>`` if set,
    else ``data/<dataset>`` (for ``synthetic``: ``data/synthetic/<synthetic_size>``, with
    ``-seed<S>`` for a seed other than 0) relative to the working directory.
    """
    dataset: str = "synthetic"          # synthetic | ucf101 | hmdb51 | ntu60
    root: str | None = None
    split: int = 1                      # official split index (1..3)
    synthetic_size: str = "tiny"        # tiny | cpu | gates (only for dataset=synthetic)
    synthetic_seed: int = 0
    clip_len: int = 8                   # frames per clip (T)
    stride: int = 1                     # temporal stride between sampled frames
    short_side: int = 40                # resize the short side to this before cropping (px)
    size: int = 32                      # square crop side (px): clips are (C, T, size, size)
    crop_scale: tuple[float, float] = (0.3, 1.0)   # random resized crop area range
    crop_mode: str = "torchvision"      # torchvision (10 tries, centre fallback) | coclr (1 try, whole frame)
    views: int = 2                      # clips per video in training (query, key)
    view_mode: str = "symmetric"        # symmetric (both views strong) | coclr (weak/strong, shared window)
    same_window: float = 0.5            # coclr views: chance both views share one window (one weak, one strong)
    strong_p: float = 0.3               # coclr views: chance a view of two windows is strong
    eval_windows: int = 4               # evenly spaced windows per test video (0: dense, half-
                                        # overlapping windows, CoCLR's retrieval protocol)
    eval_crop: int = 0                  # the centred square (px of the frame at short_side) an evaluation
                                        # view resizes to ``size`` (0: ``size`` itself, no resizing)
    flip_flow: bool = True              # negate the horizontal flow component on flips
    color_jitter: float = 0.5           # probability of colour jitter (of a strong view)
    grayscale: float = 0.2              # probability of grey (of a strong view)
    grey_mode: str = "luma"             # luma | channel (CoCLR: one of R, G, B per frame)
    blur: float = 0.0                   # probability of a Gaussian blur (of a strong view)
    blur_sigma: tuple[float, float] = (0.1, 2.0)   # its sigma range, px of the crop
    photometric_flow: bool = False      # jitter, grey and blur flow too, as CoCLR's flow images
    normalize: str = "unit"             # unit: [-1, 1] (flow: px / 20) | imagenet (CoCLR)
    cache: bool = True                  # keep decoded videos in memory (small datasets only)
    num_workers: int = 0
    prefetch: int = 2                   # batches each loader worker prepares ahead
    persistent_workers: bool = True     # keep loader workers (and what they learnt) across epochs
    frame_cache: str = "auto"           # pre-decoded frames (`cmmc data cache`): auto (the root's
                                        # frames_s<short_side>/ when built) | off | a folder
    in_memory: bool = False             # frame cache: load each video's arrays into RAM once and keep them
                                        # (small data; the memory-mapped reads reopen files otherwise)
    # skeletons (joint / motion / bone streams) and pose heatmaps (the RGB + Pose route)
    skeleton_frames: int = 50           # frames a skeleton sample is resampled to (SkeletonCLR: 50)
    shear: float = 0.5                  # SkeletonCLR's shear amplitude (0: off)
    temporal_pad: int = 6               # temporal crop: pad T // temporal_pad mirrored frames (0: off)
    ntu_source: str = "auto"            # NTU-60 input: auto | arrays | skeletons | pickle (data/README.md)
    heatmap_sigma: float = 1.0          # pose heatmaps: Gaussian sigma in pixels of the crop
    heatmap_limbs: bool = False         # pose heatmaps: add each part's limbs (segments) to its channel
    pose_noise: float = 0.0             # synthetic 2-D poses as an estimator reports them: jitter std in
                                        # trunk lengths (skeleton streams and heatmaps alike; 0: exact)
    pose_drop: float = 0.0              # ... and the chance that a joint is missed (confidence 0)


@dataclass
class ModelConfig:
    backbone: str = "small3d"           # small3d | s3d | stgcn
    width: int = 16                     # small3d: channels of the first block
    proj_hidden: int = 128              # projection head hidden width (paper: 1024)
    proj_dim: int = 64                  # embedding size (paper: 128)


@dataclass
class SSLConfig:
    method: str = "moco"                # a name of cmmc_lib.registry.METHODS
    modality: str = "rgb"               # the trained modality
    other_modality: str = "flow"        # the source of cross-modal mixing
    queue_size: int = 16                # well below the number of training videos: a video's
                                        # key from the last epoch must not sit in the queue
    momentum: float = 0.99
    temperature: float = 0.07
    split_bn: int = 1                   # BatchNorm groups of the global batch, the GPUs emulated (shuffle-BN;
                                        # 1 in one process: none)
    contrast: str = "moco"              # moco: [own key ; partner's key ; queue] (MoCo, CoCLR) | batch: every
                                        # batch key a column (i-Mix)
    alpha: float = 1.0                  # Beta(alpha, alpha) for lam0
    layer_k: tuple[int, ...] = (2,)     # block(s) after which modality 1 is cut (blocks numbered from 1);
                                        # several: one drawn per step [choice]
    layer_l: tuple[int, ...] | None = None   # block(s) of modality 2 (None: the step's k)
    cut_dims: str = "cthw"              # dimensions the tesseract cuts [choice]
    cut_centre: str = "uniform"         # uniform (paper: centre anywhere, box clipped) | inside
    partner: str = "perm"               # perm (another video) | same (same video, unmixed labels)
    joint: bool = False                 # train both modalities at once, each mixing in the other's
                                        # current features (set by the schedule's alternate=False)
    resample: bool = True               # resample the source map when shapes differ (k != l)
    source_run: str | None = None       # run folder of the frozen other-modality network
    init_run: str | None = None         # start from this run's query encoder (stage 2 continues stage 1)
    topk: int = 5                       # CoCLR: queue entries mined as positives by the other network
    self_mask: float = 0.9              # CoCLR: chance per step that the own key leaves the positives
    input_cut_dims: str = "thw"         # input cutmix: thw | hw | t


#: ``optim.schedule``: the learning-rate schedules of the pre-training loop (:func:`cmmc_lib.train.lr_at`)
LR_SCHEDULES = ("step", "cosine")


@dataclass
class OptimConfig:
    batch_size: int = 8
    epochs: int = 3
    optimizer: str = "adam"             # adam (CoCLR) | sgd (SkeletonCLR: momentum 0.9, no Nesterov)
    lr: float = 1e-3
    weight_decay: float = 1e-5
    sgd_momentum: float = 0.9
    milestones: tuple[int, ...] = ()    # step schedule: epochs at which lr is multiplied by gamma
    gamma: float = 0.1
    schedule: str = "step"              # step (lr x gamma at milestones, per epoch) | cosine (per step,
                                        # from lr to 0 over optim.epochs; a stage-2 cycle: over its own epochs)
    warmup_steps: int = 0               # linear warm-up over the first steps: lr * (step + 1) / warmup_steps


@dataclass
class EvalConfig:
    """The downstream protocols' own schedules (docs/method.md section 6; CoCLR's scripts), not the
    pre-training's: the linear probe (SGD, lr x0.1 at 60% and 80% of its epochs) and fine-tuning
    (Adam, lr 1e-3 for the head, a tenth for the backbone, dropout 0.9, lr x0.1 at milestones)."""
    probe_epochs: int = 100
    probe_lr: float = 1.0               # CoCLR: 1.0; SkeletonCLR: 3.0
    probe_weight_decay: float = 1e-3    # CoCLR: 1e-3; SkeletonCLR: 0
    probe_batch_size: int = 1024        # CoCLR: 1024; SkeletonCLR: 128
    probe_milestones: tuple[int, ...] = ()   # lr x0.1 at these epochs (empty: 60% and 80% of probe_epochs)
    probe_features: str = "bn"          # bn (CoCLR: L2-normalised, BatchNorm1d) | raw (SkeletonCLR: as pooled)
    finetune_epochs: int = 500
    finetune_milestones: tuple[int, ...] = (400, 450)
    finetune_lr: float = 1e-3
    finetune_dropout: float = 0.9
    finetune_jitter: float = 0.3        # CoCLR's fine-tune transform: colour jitter p 0.3, no grey, no blur
    ten_crop: bool = False              # fine-tune testing on CoCLR's ten crops of every window
    window_l2: bool = True              # a video's feature: the mean of its L2-normalised window features
                                        # (CoCLR), else of the raw ones


@dataclass
class ScheduleConfig:
    """The recipe around the runs (docs/method.md section 4), driven by ``cmmc pipeline``.

    Stage 1 trains each modality alone with ``stage1_method`` for ``optim.epochs`` epochs (lr x
    ``optim.gamma`` at ``optim.milestones``): it *is* a plain ``cmmc pretrain`` run. Stage 2
    runs ``cycles`` alternate cycles of ``ssl.method``: each network in turn, for
    ``cycle_epochs`` epochs with lr ``optim.lr`` x gamma at ``cycle_milestones``, continuing from
    its own latest weights (a fresh queue and optimiser, as CoCLR restarts each cycle) and mixing
    in the other's latest, frozen. ``alternate=False`` trains both networks at once for
    ``cycles * cycle_epochs`` epochs, each mixing in the other's current features (the poster's
    "w/o alternate training").
    """
    stage1_method: str = "moco"         # moco, or input mixing first (STC-mix: mixup | cutmix)
    cycles: int = 1
    cycle_epochs: int = 1
    cycle_milestones: tuple[int, ...] = ()
    alternate: bool = True
    modalities: tuple[str, ...] = ("rgb", "flow")   # the order of each cycle


@dataclass
class RunConfig:
    seed: int = 0
    device: str = "auto"                # auto | cpu | cuda | cuda:N | mps
    amp: str = "auto"                   # auto (bf16 on CUDA) | bf16 | off
    ckpt_every: int = 50                # steps between checkpoints (and one at the end)
    keep_ckpts: int = 2                 # step checkpoints kept besides last.pt
    knn_every: int = 1                  # epochs between kNN R@1 monitors (0: off)
    out_root: str = "runs"
    name: str | None = None             # run folder name (default: preset-method-modality-seed)
    max_steps: int | None = None        # stop after this many steps (tests, benches)
    progress: bool = True
    log_every: int = 10                 # steps between fetches of the step stats from the device
                                        # (metrics rows are still one per step, written in batches)
    channels_last: str = "auto"         # channels-last 3-D memory format: auto (on CUDA) | on | off
    compile: bool = False               # torch.compile each backbone block and head


@dataclass
class Config:
    preset: str = "tiny"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        cfg = cls()
        for section in _sections(cfg):
            for k, v in d.get(section, {}).items():
                if (section, k) in RETIRED_KEYS:
                    if v:
                        log.warning("ignoring %s.%s=%r: %s", section, k, v, RETIRED_KEYS[(section, k)])
                    continue
                _set_field(getattr(cfg, section), k, v)
        cfg.preset = d.get("preset", cfg.preset)
        return cfg


#: Keys older versions wrote into config.json that are no longer settings, and why.
RETIRED_KEYS = {("data", "trust_pickle"): "permission to unpickle .pkl inputs comes from the command (--trust-pickle "
                                         "or CMMC_TRUST_PICKLE=1), never from a file that travels with a run"}


def data_root(d: DataConfig) -> Path:
    """The directory a :class:`DataConfig` reads from (see its docstring). The synthetic data of
    seed 0 lives in ``synthetic/<size>``, another seed's in ``synthetic/<size>-seed<seed>``."""
    if d.root:
        return Path(d.root).expanduser()
    base = Path(os.environ.get("CMMC_DATA_ROOT", "data"))
    if d.dataset == "synthetic":
        return base / "synthetic" / synthetic_folder_name(d)
    return base / d.dataset


def synthetic_folder_name(d: DataConfig) -> str:
    """The folder name of a synthetic set: ``<size>``, or ``<size>-seed<seed>`` for a seed other than 0."""
    return f"{d.synthetic_size}-seed{d.synthetic_seed}" if d.synthetic_seed else d.synthetic_size


def _tiny() -> Config:
    return Config(preset="tiny", eval=EvalConfig(probe_epochs=30, finetune_epochs=1, finetune_milestones=()))


def _cpu() -> Config:
    return Config(
        preset="cpu",
        data=DataConfig(synthetic_size="cpu", clip_len=8, stride=2, short_side=48, size=40,
                        eval_windows=4),
        model=ModelConfig(backbone="small3d", width=24, proj_hidden=256, proj_dim=128),
        ssl=SSLConfig(queue_size=64, momentum=0.99),
        optim=OptimConfig(batch_size=16, epochs=20, lr=1e-3, milestones=(16,)),
        schedule=ScheduleConfig(cycles=2, cycle_epochs=10, cycle_milestones=(8,)),
        eval=EvalConfig(probe_epochs=100, finetune_epochs=12, finetune_milestones=(8, 10)),
        run=RunConfig(ckpt_every=100),
    )


def _paper() -> Config:
    """CoCLR's recipe where the poster is silent, line by line: docs/fidelity.md gives each setting
    its source (the poster, a CoCLR file and line, or our choice and why); tests/test_fidelity.py
    checks that the two agree."""
    return Config(
        preset="paper",
        data=DataConfig(dataset="ucf101", clip_len=32, stride=1, short_side=240, size=128, crop_scale=(0.2, 1.0),
                        crop_mode="coclr", view_mode="coclr", same_window=0.5, strong_p=0.3, color_jitter=0.8,
                        grayscale=0.2, grey_mode="channel", blur=0.5, blur_sigma=(0.1, 2.0), photometric_flow=True,
                        flip_flow=False, normalize="imagenet", eval_windows=0, eval_crop=224, cache=False,
                        num_workers=8, prefetch=4),
        model=ModelConfig(backbone="s3d", proj_hidden=1024, proj_dim=128),
        ssl=SSLConfig(queue_size=2048, momentum=0.999, temperature=0.07, layer_k=(3,), split_bn=2, contrast="moco",
                      topk=5, self_mask=0.9),
        optim=OptimConfig(batch_size=64, epochs=300, lr=1e-3, weight_decay=1e-5, milestones=(250, 280)),
        schedule=ScheduleConfig(stage1_method="moco", cycles=2, cycle_epochs=100, cycle_milestones=(80,)),
        eval=EvalConfig(probe_epochs=100, probe_lr=1.0, probe_weight_decay=1e-3, probe_batch_size=1024,
                        probe_milestones=(60, 80), finetune_epochs=500, finetune_milestones=(400, 450),
                        finetune_lr=1e-3, finetune_dropout=0.9, finetune_jitter=0.3, ten_crop=True,
                        window_l2=True),
        run=RunConfig(ckpt_every=500, knn_every=10, log_every=50),
    )



def _gates() -> Config:
    """The gates' design (``cmmc study gates``): the synthetic ``gates`` set (generator v3: a big
    centred actor in a 48 x 48 frame, one look per (group, clip), 480 train / 400 test videos),
    cut as short side 40, crop 32 (area 0.6-1), 8 frames at stride 2; small3d of width 16; MoCo
    with a queue of 64, momentum 0.99, temperature 0.07; Adam lr 1e-3, weight decay 1e-5, batch
    16, 33 epochs of 30 steps (990 steps), lr x0.1 after epoch 27 (the loop's step schedule; the
    design was found with a cosine one, which measured no better for G1). Stage 2 (``cmmc study
    ablate``): 2 alternate cycles of 5 epochs per network (lr x0.1 for each cycle's last epoch,
    the shape of stage 1); the kNN monitor every 11 epochs and at each run's end (the curves).
    Not a course profile: minutes per run on one CPU core."""
    return Config(
        preset="gates",
        data=DataConfig(synthetic_size="gates", clip_len=8, stride=2, short_side=40, size=32,
                        crop_scale=(0.6, 1.0), eval_windows=4, in_memory=True),
        model=ModelConfig(backbone="small3d", width=16, proj_hidden=256, proj_dim=128),
        ssl=SSLConfig(queue_size=64, momentum=0.99, temperature=0.07),
        optim=OptimConfig(batch_size=16, epochs=33, lr=1e-3, weight_decay=1e-5, milestones=(27,)),
        eval=EvalConfig(probe_epochs=100, finetune_epochs=12, finetune_milestones=(8, 10)),
        schedule=ScheduleConfig(cycles=2, cycle_epochs=5, cycle_milestones=(4,)),
        run=RunConfig(ckpt_every=330, knn_every=11),
    )

@dataclass(frozen=True)
class Preset:
    """A named scale of the one code path; ``course``: the lessons can run at it (on a CPU)."""
    name: str
    build: Callable[[], Config]
    summary: str
    course: bool


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("tiny", _tiny, "CI and the lessons' quick run: seconds on 2 CPU cores", course=True),
    Preset("cpu", _cpu, "the course's CPU experiment: minutes per run", course=True),
    Preset("paper", _paper, "S3D on UCF101 with docs/method.md's schedule, for GPUs", course=False),
    Preset("gates", _gates, "the gates' design (cmmc study gates): minutes per run on one CPU core", course=False),
)}
COURSE_PROFILES = tuple(name for name, p in PRESETS.items() if p.course)

_SKELETON_COMMON = ("model.backbone=stgcn", "ssl.modality=joint", "ssl.other_modality=motion", "ssl.layer_k=5",
                    "ssl.cut_dims=ctv", "ssl.input_cut_dims=tv", "optim.optimizer=sgd", "optim.lr=0.1",
                    "optim.weight_decay=1e-4", "schedule.modalities=joint,motion", "eval.probe_lr=3.0",
                    "eval.probe_weight_decay=0", "eval.probe_batch_size=128", "eval.probe_features=raw")
#: The skeleton face of each preset (SkeletonCLR's recipe at the preset's scale), applied before the
#: overrides when they name a skeleton stream: ST-GCN (width 16 = SkeletonCLR's size; 8 at tiny),
#: SGD with momentum 0.9 and weight decay 1e-4, the cut after block 5 over (C, T, V), alternate training
#: between the joint and motion streams, SkeletonCLR's linear evaluation (raw features, SGD lr 3.0, no
#: weight decay, batch 128, lr x0.1 at 80% of the epochs). ``paper``: NTU-60 cross-subject, 50 frames,
#: queue 32768, momentum 0.999, lr 0.1, batch 128, 300 epochs (x0.1 at 250). ``tiny`` / ``cpu``: the
#: synthetic 2-D poses with an estimator's jitter (``data.pose_noise=0.05``: exact keypoints are
#: separable by a random ST-GCN already, probes 0.94-0.99 after stage 1) and lr 0.01 (0.1 collapsed
#: every embedding onto one point within 20 steps at batch 32 on 320 samples; 0.025 degraded them).
SKELETON_SETTINGS: dict[str, tuple[str, ...]] = {
    "tiny": _SKELETON_COMMON + ("data.skeleton_frames=24", "data.pose_noise=0.05", "model.width=8",
                                "model.proj_hidden=64", "model.proj_dim=32", "optim.lr=0.01", "eval.probe_milestones=24"),
    "cpu": _SKELETON_COMMON + ("data.skeleton_frames=32", "data.pose_noise=0.05", "model.width=16",
                               "model.proj_hidden=256", "model.proj_dim=128", "ssl.queue_size=128",
                               "optim.batch_size=32", "optim.lr=0.01", "eval.probe_milestones=80"),
    "paper": _SKELETON_COMMON + ("data.dataset=ntu60", "data.split=1", "data.skeleton_frames=50", "model.width=16",
                                 "ssl.split_bn=1",          # SkeletonCLR: one GPU, no shuffle-BN
                                 "model.proj_hidden=256", "model.proj_dim=128", "ssl.queue_size=32768",
                                 "ssl.momentum=0.999", "ssl.temperature=0.07", "optim.batch_size=128",
                                 "optim.epochs=300", "optim.milestones=250", "eval.probe_epochs=100",
                                 "eval.probe_milestones=80"),
}
_MODALITY_KEYS = {("ssl", "modality"), ("ssl", "other_modality"), ("schedule", "modalities")}


def preset(name: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The named preset with ``key=value`` overrides applied.

    >>> preset("tiny", ["lr=0.01", "ssl.method=cmmc"]).optim.lr
    0.01
    """
    cfg = lookup(PRESETS, name, "preset").build()
    overrides = list(overrides)
    skeleton = names_skeleton_stream(cfg, overrides)
    if skeleton and name not in SKELETON_SETTINGS:
        raise ValueError(f"preset {name!r} has no skeleton settings: use one of {', '.join(SKELETON_SETTINGS)}")
    if skeleton:
        overrides = list(SKELETON_SETTINGS[name]) + overrides
        _set_other_stream(cfg, overrides)
    apply_overrides(cfg, overrides)
    return cfg


def _set_other_stream(cfg: Config, overrides: list[str]) -> None:
    """With the skeleton face, ``ssl.modality=motion`` alone makes the other modality the other
    stream of ``schedule.modalities`` (joint), unless ``ssl.other_modality`` is given too."""
    trial = _assign(copy.deepcopy(cfg), overrides)
    s, mods = trial.ssl, trial.schedule.modalities
    if s.other_modality == s.modality and s.modality in mods and len(mods) == 2:
        overrides.insert(len(SKELETON_SETTINGS[cfg.preset]), f"ssl.other_modality={mods[1 - mods.index(s.modality)]}")


def names_skeleton_stream(cfg: Config, overrides: list[str] | tuple[str, ...]) -> bool:
    """True when ``overrides`` set ``ssl.modality``, ``ssl.other_modality`` or
    ``schedule.modalities`` to a skeleton stream (a modality read by a skeleton network).
    Malformed overrides are left for :func:`apply_overrides` to refuse."""
    for item in overrides:
        try:
            section, name, value = parse_override(cfg, item)
        except ValueError:
            continue
        if (section, name) in _MODALITY_KEYS:
            names = [v.strip() for v in value.strip("()[] ").split(",")]
            if any(n in MODALITIES and MODALITIES[n].network == "skeleton" for n in names):
                return True
    return False


def parse_override(cfg: Config, item: str) -> tuple[str, str, str]:
    """``"key=value"`` -> ``(section, field, value)``; ``key`` is ``section.name`` or a unique
    ``name``. ValueError (one line) for a malformed item or an unknown or ambiguous key."""
    if "=" not in item:
        raise ValueError(f"override {item!r} is not key=value")
    key, value = item.split("=", 1)
    section, name = _locate(cfg, key.strip())
    return section, name, value.strip()


def _assign(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    for item in overrides:
        section, name, value = parse_override(cfg, item)
        _set_field(getattr(cfg, section), name, value)
    return cfg


def apply_overrides(cfg: Config, overrides: list[str] | tuple[str, ...], pipeline: bool = False) -> Config:
    """Apply ``key=value`` strings in place (:func:`parse_override`), then :func:`validate`
    (``pipeline``: the config a pipeline starts from, see :func:`validate`)."""
    validate(_assign(cfg, overrides), pipeline)
    return cfg


def validate(cfg: Config, pipeline: bool = False) -> None:
    """Raise ValueError with one clear line for settings that cannot work (or cannot run yet).
    ``pipeline``: ``cfg`` starts a pipeline, which sets each stage's source network (``ssl.source_run``)
    and validates that stage, so a cross-modal method needs none here."""
    _validate_names(cfg)
    _validate_numbers(cfg)
    _validate_schedule(cfg)
    _validate_mixing(cfg, pipeline)


def _validate_names(cfg: Config) -> None:
    method = lookup(METHODS, cfg.ssl.method, "method")
    dataset = lookup(DATASETS, cfg.data.dataset, "dataset")
    backbone = lookup(BACKBONES, cfg.model.backbone, "backbone")
    used = [cfg.ssl.modality] + ([cfg.ssl.other_modality] if method.cross_modal else [])
    for name in used:
        modality = lookup(MODALITIES, name, "modality")
        if dataset.name not in modality.datasets:
            raise ValueError(f"dataset {dataset.name!r} carries no {name!r} modality (it is in: "
                             f"{', '.join(modality.datasets)})")
        if modality.network != backbone.network:
            hint = (" (a skeleton stream: name it as ssl.modality / --modality on a preset and its skeleton "
                    "settings follow, or set model.backbone=stgcn)" if modality.network == "skeleton" else "")
            raise ValueError(f"backbone {backbone.name!r} reads {backbone.network} input, not {name!r}{hint}")
    if method.cross_modal and cfg.ssl.other_modality == cfg.ssl.modality:
        raise ValueError(f"method {method.name!r} mixes across modalities: ssl.other_modality must differ "
                         f"from ssl.modality ({cfg.ssl.modality!r})")
    if not 1 <= cfg.data.split <= dataset.splits:
        raise ValueError(f"data.split={cfg.data.split}: {dataset.name} has splits 1..{dataset.splits}")
    choices = {"ssl.partner": (cfg.ssl.partner, ("perm", "same")),
               "ssl.cut_centre": (cfg.ssl.cut_centre, ("uniform", "inside")),
               "run.amp": (cfg.run.amp, ("auto", "bf16", "off")),
               "ssl.contrast": (cfg.ssl.contrast, ("moco", "batch")),
               "optim.optimizer": (cfg.optim.optimizer, ("adam", "sgd")),
               "eval.probe_features": (cfg.eval.probe_features, ("bn", "raw")),
               "data.ntu_source": (cfg.data.ntu_source, ("auto", "arrays", "skeletons", "pickle")),
               "data.crop_mode": (cfg.data.crop_mode, ("torchvision", "coclr")),
               "data.view_mode": (cfg.data.view_mode, ("symmetric", "coclr")),
               "data.grey_mode": (cfg.data.grey_mode, ("luma", "channel")),
               "data.normalize": (cfg.data.normalize, ("unit", "imagenet"))}
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ValueError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")


def _validate_numbers(cfg: Config) -> None:
    d, o, s = cfg.data, cfg.optim, cfg.ssl
    floats = {"optim.lr": o.lr, "optim.weight_decay": o.weight_decay, "optim.gamma": o.gamma,
              "ssl.self_mask": s.self_mask, "optim.sgd_momentum": o.sgd_momentum, "data.shear": d.shear,
              "data.heatmap_sigma": d.heatmap_sigma, "eval.probe_lr": cfg.eval.probe_lr,
              "data.pose_noise": d.pose_noise, "data.pose_drop": d.pose_drop,
              "eval.probe_weight_decay": cfg.eval.probe_weight_decay,
              "ssl.alpha": s.alpha, "ssl.momentum": s.momentum, "ssl.temperature": s.temperature,
              "data.color_jitter": d.color_jitter, "data.grayscale": d.grayscale, "data.blur": d.blur,
              "data.same_window": d.same_window, "data.strong_p": d.strong_p,
              "eval.finetune_jitter": cfg.eval.finetune_jitter}
    for key, value in floats.items():
        if not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number, got {value}")
    at_least = {"data.clip_len": (d.clip_len, 1), "data.stride": (d.stride, 1), "data.size": (d.size, 1),
                "data.short_side": (d.short_side, 1), "data.eval_windows": (d.eval_windows, 0),
                "data.views": (d.views, 2), "data.num_workers": (d.num_workers, 0),
                "model.width": (cfg.model.width, 1), "model.proj_hidden": (cfg.model.proj_hidden, 1),
                "model.proj_dim": (cfg.model.proj_dim, 1), "optim.epochs": (o.epochs, 1),
                "optim.batch_size": (o.batch_size, 2), "run.ckpt_every": (cfg.run.ckpt_every, 1),
                "run.keep_ckpts": (cfg.run.keep_ckpts, 0), "run.knn_every": (cfg.run.knn_every, 0),
                "ssl.split_bn": (s.split_bn, 1), "ssl.queue_size": (s.queue_size, 0), "ssl.topk": (s.topk, 0),
                "data.skeleton_frames": (d.skeleton_frames, 1), "data.temporal_pad": (d.temporal_pad, 0),
                "data.shear": (d.shear, 0), "eval.probe_batch_size": (cfg.eval.probe_batch_size, 2),
                "data.pose_noise": (d.pose_noise, 0),
                "eval.probe_weight_decay": (cfg.eval.probe_weight_decay, 0)}
    for key, (value, low) in at_least.items():
        if value < low:
            why = {"optim.batch_size": " (contrastive learning needs negatives)",
                   "data.views": " (a query clip and a key clip)"}.get(key, "")
            raise ValueError(f"{key} must be >= {low}, got {value}{why}")
    positive = {"optim.lr": o.lr, "ssl.alpha": s.alpha, "ssl.temperature": s.temperature, "optim.gamma": o.gamma,
                "data.heatmap_sigma": d.heatmap_sigma, "eval.probe_lr": cfg.eval.probe_lr}
    for key, value in positive.items():
        if value <= 0:
            raise ValueError(f"{key} must be > 0, got {value}")
    unit = {"ssl.momentum": s.momentum, "data.color_jitter": d.color_jitter, "data.grayscale": d.grayscale,
            "data.blur": d.blur, "data.same_window": d.same_window, "data.strong_p": d.strong_p,
            "eval.finetune_jitter": cfg.eval.finetune_jitter,
            "ssl.self_mask": s.self_mask, "optim.sgd_momentum": o.sgd_momentum, "data.pose_drop": d.pose_drop}
    for key, value in unit.items():
        if not 0 <= value <= 1:
            raise ValueError(f"{key} must lie in [0, 1], got {value}")
    if o.weight_decay < 0:
        raise ValueError(f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    if not (len(d.crop_scale) == 2 and 0 < d.crop_scale[0] <= d.crop_scale[1] <= 1):
        raise ValueError(f"data.crop_scale must be (low, high) with 0 < low <= high <= 1, got {d.crop_scale}")
    if d.size > d.short_side:
        raise ValueError(f"data.size={d.size} is larger than data.short_side={d.short_side}: "
                         f"the crop must fit in the resized frame")
    if not (len(d.blur_sigma) == 2 and 0 < d.blur_sigma[0] <= d.blur_sigma[1]):
        raise ValueError(f"data.blur_sigma must be (low, high) with 0 < low <= high (px), got {d.blur_sigma}")
    if d.eval_crop < 0 or d.eval_crop > d.short_side:
        raise ValueError(f"data.eval_crop={d.eval_crop} must lie in 0..data.short_side={d.short_side} (0: data.size)")
    if d.view_mode == "coclr" and d.views != 2:
        raise ValueError(f"data.view_mode=coclr draws a query and a key view: data.views must be 2, got {d.views}")
    if any(m < 1 for m in o.milestones) or list(o.milestones) != sorted(set(o.milestones)):
        raise ValueError(f"optim.milestones must be increasing epochs >= 1, got {o.milestones}")
    if o.schedule not in LR_SCHEDULES:
        raise ValueError(f"optim.schedule={o.schedule!r} is unknown: choose from {', '.join(LR_SCHEDULES)}")
    if o.warmup_steps < 0:
        raise ValueError(f"optim.warmup_steps must be >= 0, got {o.warmup_steps}")
    ev = cfg.eval
    if ev.probe_epochs < 1 or ev.finetune_epochs < 1:
        raise ValueError(f"eval.probe_epochs and eval.finetune_epochs must be >= 1, got {ev.probe_epochs} and "
                         f"{ev.finetune_epochs}")
    for key, ms in (("eval.finetune_milestones", ev.finetune_milestones), ("eval.probe_milestones", ev.probe_milestones)):
        if list(ms) != sorted(set(ms)) or any(m < 1 for m in ms):
            raise ValueError(f"{key} must be increasing epochs >= 1, got {ms}")
    if not (math.isfinite(ev.finetune_lr) and ev.finetune_lr > 0) or not 0 <= ev.finetune_dropout < 1:
        raise ValueError(f"eval.finetune_lr must be > 0 and eval.finetune_dropout in [0, 1), got {ev.finetune_lr} "
                         f"and {ev.finetune_dropout}")
    if o.batch_size % s.split_bn:
        raise ValueError(f"optim.batch_size={o.batch_size} is not divisible by ssl.split_bn={s.split_bn}")
    if cfg.run.max_steps is not None and cfg.run.max_steps < 0:
        raise ValueError(f"run.max_steps must be >= 0, got {cfg.run.max_steps}")


def _validate_schedule(cfg: Config) -> None:
    sc = cfg.schedule
    method = lookup(METHODS, sc.stage1_method, "method")
    if not method.stage1:
        raise ValueError(f"schedule.stage1_method={sc.stage1_method!r}: stage 1 trains each modality alone "
                         f"(moco, mixup or cutmix)")
    if sc.cycles < 1 or sc.cycle_epochs < 1:
        raise ValueError(f"schedule.cycles and schedule.cycle_epochs must be >= 1, got {sc.cycles} and "
                         f"{sc.cycle_epochs}")
    if list(sc.cycle_milestones) != sorted(set(sc.cycle_milestones)) or any(m < 1 for m in sc.cycle_milestones):
        raise ValueError(f"schedule.cycle_milestones must be increasing epochs >= 1, got {sc.cycle_milestones}")
    if len(set(sc.modalities)) != 2:
        raise ValueError(f"schedule.modalities must name two different modalities, got {sc.modalities}")
    network = BACKBONES[cfg.model.backbone].network if cfg.model.backbone in BACKBONES else None
    for m in sc.modalities:
        modality = lookup(MODALITIES, m, "modality")
        if network and modality.network != network:
            raise ValueError(f"schedule.modalities={','.join(sc.modalities)}: backbone {cfg.model.backbone!r} reads "
                             f"{network} input, not {m!r}")
        if cfg.data.dataset not in modality.datasets:
            raise ValueError(f"schedule.modalities: dataset {cfg.data.dataset!r} carries no {m!r} modality")
    method2 = METHODS[cfg.ssl.method]
    if not sc.alternate and not method2.trains_jointly:
        raise ValueError(f"schedule.alternate=false trains both networks at once, each mixing in the other's "
                         f"current features: only cross-modal mixing methods can ("
                         f"{', '.join(n for n, m in METHODS.items() if m.trains_jointly)}), not {cfg.ssl.method!r}")
    if cfg.ssl.joint and not method2.trains_jointly:
        raise ValueError(f"ssl.joint trains two networks that mix into each other: it needs a cross-modal "
                         f"mixing method (cm-mixup, cmmc), not {cfg.ssl.method!r}")


def _validate_mixing(cfg: Config, pipeline: bool = False) -> None:
    s = cfg.ssl
    backbone = BACKBONES[cfg.model.backbone]
    letters = "cthw" if backbone.network == "video" else "ctv"
    input_letters = "thw" if backbone.network == "video" else "tv"        # skeletons: never cut persons
    for key, dims, allowed in (("ssl.cut_dims", s.cut_dims, letters), ("ssl.input_cut_dims", s.input_cut_dims,
                                                                       input_letters)):
        if not dims or set(dims) - set(allowed) or len(set(dims)) != len(dims):
            raise ValueError(f"{key}={dims!r} must be distinct letters from {allowed!r}")
    for key, layers in (("ssl.layer_k", s.layer_k), ("ssl.layer_l", s.layer_l)):
        if layers is not None and not layers:
            raise ValueError(f"{key} is empty: give one block or a list to draw from")
        for k in layers or ():
            if not 1 <= k < backbone.num_blocks:
                raise ValueError(f"{key}={k} is not a block boundary to cut at: {backbone.name} has "
                                 f"{backbone.num_blocks} blocks, so choose 1..{backbone.num_blocks - 1}")
    if METHODS[s.method].cross_modal and not s.source_run and cfg.preset != "tiny" and not s.joint and not pipeline:
        raise ValueError(f"method {s.method!r} needs the frozen {s.other_modality} network: set "
                         f"ssl.source_run=RUN_DIR (a finished {s.other_modality} run; `cmmc pipeline` sets "
                         f"it for you). Only the tiny preset may use a random one, for lessons on mechanics")


def _sections(cfg: Config) -> list[str]:
    return [f.name for f in fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))]


def _locate(cfg: Config, key: str) -> tuple[str, str]:
    if "." in key:
        section, name = key.split(".", 1)
        if section not in _sections(cfg) or name not in {f.name for f in fields(getattr(cfg, section))}:
            raise ValueError(f"unknown config key {key!r}")
        return section, name
    hits = [s for s in _sections(cfg) if key in {f.name for f in fields(getattr(cfg, s))}]
    if not hits:
        raise ValueError(f"unknown config key {key!r}")
    if len(hits) > 1:
        raise ValueError(f"config key {key!r} is ambiguous: use one of "
                         + ", ".join(f"{s}.{key}" for s in hits))
    return hits[0], key


def _set_field(obj: Any, name: str, value: Any) -> None:
    hints = get_type_hints(type(obj))
    if name not in hints:
        raise ValueError(f"unknown config key {type(obj).__name__}.{name}")
    setattr(obj, name, _coerce(value, hints[name], name))


def _coerce(value: Any, typ: Any, name: str) -> Any:
    origin, args = get_origin(typ), get_args(typ)
    if value is None:
        return None
    if origin is not None and type(None) in args:          # Optional[X]
        if isinstance(value, str) and value.lower() in ("none", "null", ""):
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(value, inner, name)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.strip("()[] ").split(",") if v.strip()]
        elif not isinstance(value, (list, tuple)):                 # one value: a tuple of one
            value = [value]
        elem = args[0] if args else str
        return tuple(_coerce(v, elem, name) for v in value)
    try:
        if typ is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if typ in (int, float, str):
            if typ is int and isinstance(value, str) and not value.lstrip("-").isdigit():
                raise ValueError
            return typ(value)
    except (TypeError, ValueError):
        raise ValueError(f"config key {name!r}: cannot read {value!r} as {typ.__name__}") from None
    return value
