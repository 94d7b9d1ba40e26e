"""Networks and methods built from a :class:`~cmmc_lib.config.Config`: the one place that knows
how a config becomes a network (channels, skeleton layout), how a run's checkpoint becomes one
(the query encoder's key prefix), and which class runs which method.

    method = build_method(cfg, build_source(cfg))         # what `cmmc pretrain` trains
    initialise(method, cfg)                                # ssl.init_run: continue a run's network
    backbone, run_cfg = load_backbone("runs/moco-rgb")     # what evaluation reads

The method names live in :data:`cmmc_lib.registry.METHODS`: each names its ``kind`` (the class
below that runs it), its mixing function and what it needs of the other modality (``source``),
so this factory never lists the methods themselves.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from .. import mixing
from ..config import Config
from ..models import Backbone, Encoder, build_backbone, build_encoder
from ..registry import BACKBONES, DATASETS, METHODS, MODALITIES, MethodSpec, lookup
from ..runs import RunFolder, first_line
from .coclr import CoCLRMethod
from .methods import (CrossModalMixer, CrossModalMixMethod, InputMixMethod, JointCrossModalMethod,
                      ManifoldMixMethod, MoCoMethod)
from .moco import MoCo

log = logging.getLogger(__name__)

#: Where a method's query encoder sits in its ``state_dict`` (a checkpoint's ``method`` entry).
ENCODER_PREFIX = "moco.encoder_q."


# --------------------------------------------------------------------------- networks
def channels(modality: str) -> int:
    """Input channels of a modality's network (rgb 3, flow 2, heatmap 5, skeleton streams 3)."""
    return lookup(MODALITIES, modality, "modality").channels


def layout_for(cfg: Config) -> str | None:
    """The skeleton layout a skeleton backbone's graph is built on (the dataset's), else None."""
    if BACKBONES[cfg.model.backbone].network != "skeleton":
        return None
    return DATASETS[cfg.data.dataset].skeleton_layout


def backbone_for(cfg: Config, modality: str) -> Backbone:
    """A fresh backbone of the config's architecture for ``modality``."""
    m = cfg.model
    return build_backbone(m.backbone, channels(modality), m.width, layout_for(cfg))


def encoder_for(cfg: Config, modality: str) -> Encoder:
    """A fresh encoder (backbone + projection head) of the config's architecture for ``modality``."""
    m = cfg.model
    return build_encoder(m.backbone, channels(modality), m.width, m.proj_hidden, m.proj_dim, layout_for(cfg))


def encoder_state(method_state: dict, prefix: str = ENCODER_PREFIX) -> dict:
    """The query encoder's weights inside a method's ``state_dict`` (its ``prefix`` removed)."""
    return {k[len(prefix):]: v for k, v in method_state.items() if k.startswith(prefix)}


# --------------------------------------------------------------------------- from run folders
def load_backbone(run_dir: str | Path | RunFolder, which: str | int = "last", map_location="cpu",
                  modality: str | None = None) -> tuple[Backbone, Config]:
    """A trained backbone of a run and the run's config: ``(backbone in eval mode, Config)``.

    ``modality``: which network, for a run that trains two at once (joint training); the returned
    config then names it as ``ssl.modality``. Default: the run's own modality.
    """
    run = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir)
    cfg = run.read_config()
    ckpt = run.load_checkpoint(which, map_location)
    weights = ckpt["backbone"]
    if modality not in (None, cfg.ssl.modality):
        if modality not in ckpt.get("backbones", {}):
            raise ValueError(f"{run.path} trained no {modality!r} network (it has: "
                             f"{', '.join(ckpt.get('backbones', {cfg.ssl.modality: 0}))})")
        weights = ckpt["backbones"][modality]
        cfg.ssl.other_modality, cfg.ssl.modality = cfg.ssl.modality, modality
    backbone = backbone_for(cfg, cfg.ssl.modality)
    try:
        backbone.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ValueError(f"{run.checkpoint_path(which)} does not fit the {cfg.model.backbone} of "
                         f"{run.config_path}: {first_line(exc)}") from None
    return backbone.eval(), cfg


def load_encoder(run_dir: str | Path | RunFolder, which: str | int = "last",
                 map_location="cpu") -> tuple[Encoder, Config]:
    """A run's query encoder, backbone *and* projection head (what CoCLR mines with):
    ``(encoder in eval mode, Config)``."""
    run = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir)
    cfg = run.read_config()
    state = run.load_checkpoint(which, map_location, needs=("config", "method"))["method"]
    encoder = encoder_for(cfg, cfg.ssl.modality)
    try:
        encoder.load_state_dict(encoder_state(state))
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"{run.checkpoint_path(which)} holds no encoder of the {cfg.model.backbone} of "
                         f"{run.config_path}: {first_line(exc)}") from None
    return encoder.eval(), cfg


def build_source(cfg: Config) -> Backbone | Encoder | None:
    """The other modality's network a cross-modal method needs (``MethodSpec.source``): its backbone
    (CMMC pastes its features) or its whole encoder (CoCLR mines with its embedding), loaded from
    ``ssl.source_run``, or randomly initialised without one (a warning says so: fine for lessons on
    mechanics and benchmarks, not for results). None for methods that need none, and for joint
    training (the other network trains too and starts from ``ssl.source_run``, see :func:`initialise`)."""
    spec = METHODS[cfg.ssl.method]
    if not spec.cross_modal or cfg.ssl.joint:
        return None
    other = cfg.ssl.other_modality
    if not cfg.ssl.source_run:
        log.warning("no ssl.source_run given: the %s network is randomly initialised", other)
        return random_source(cfg)
    require_finished(RunFolder(cfg.ssl.source_run), "ssl.source_run")
    source, src_cfg = (load_encoder if spec.source == "encoder" else load_backbone)(cfg.ssl.source_run)
    if src_cfg.ssl.modality != other:
        raise ValueError(f"ssl.source_run {cfg.ssl.source_run} trained {src_cfg.ssl.modality!r}, but "
                         f"ssl.other_modality is {other!r}")
    if (src_cfg.model.backbone, src_cfg.model.width) != (cfg.model.backbone, cfg.model.width):
        log.warning("source network %s (width %d) differs from the trained %s (width %d): feature maps "
                    "are resampled to match", src_cfg.model.backbone, src_cfg.model.width,
                    cfg.model.backbone, cfg.model.width)
    return source


def require_finished(run: RunFolder, key: str) -> None:
    """ValueError unless ``run`` finished its schedule: a network that stopped half-way is never
    continued from or mixed in (a pipeline would otherwise build on a half-trained stage)."""
    if not run.exists():
        raise FileNotFoundError(f"{key}={run.path} is not a run folder (no config.json)")
    if not run.is_finished():
        raise ValueError(f"{key}={run.path} has not finished its schedule: finish it first "
                         f"(cmmc pretrain --resume --run-dir {run.path})")


def random_source(cfg: Config) -> Backbone | Encoder | None:
    """A randomly initialised network of the kind ``cfg.ssl.method`` needs of the other modality
    (benchmarks time the computation, not what the weights know); None when it needs none."""
    spec = METHODS[cfg.ssl.method]
    if not spec.cross_modal or cfg.ssl.joint:
        return None
    build = encoder_for if spec.source == "encoder" else backbone_for
    return build(cfg, cfg.ssl.other_modality)


def init_from_run(moco: MoCo, run_dir: str | Path, cfg: Config, modality: str) -> None:
    """Start ``moco`` from a run: that run's query encoder (backbone and projection head) becomes
    the query encoder and, copied, the key encoder; the queue stays fresh (stage 2 continues
    stage 1, and CoCLR restarts its queue every cycle)."""
    run = RunFolder(run_dir)
    src = run.read_config()
    mine = (modality, cfg.model.backbone, cfg.model.width, cfg.model.proj_hidden, cfg.model.proj_dim)
    theirs = (src.ssl.modality, src.model.backbone, src.model.width, src.model.proj_hidden, src.model.proj_dim)
    if mine != theirs:
        raise ValueError(f"ssl.init_run {run.path} trained (modality, backbone, width, proj_hidden, proj_dim) = "
                         f"{theirs}, but this run is {mine}")
    require_finished(run, "ssl.init_run")
    state = encoder_state(run.load_checkpoint(needs=("method",))["method"])
    moco.encoder_q.load_state_dict(state)
    moco.encoder_k.load_state_dict(state)


def initialise(method, cfg: Config) -> None:
    """A fresh run's starting weights: ``ssl.init_run`` for the trained network; in joint
    training, ``ssl.source_run`` for the other one (which trains too)."""
    if cfg.ssl.joint:
        starts = {cfg.ssl.modality: cfg.ssl.init_run, cfg.ssl.other_modality: cfg.ssl.source_run}
        for modality, run_dir in starts.items():
            if run_dir:
                init_from_run(method.methods[modality].moco, run_dir, cfg, modality)
    elif cfg.ssl.init_run:
        init_from_run(method.moco, cfg.ssl.init_run, cfg, cfg.ssl.modality)


# --------------------------------------------------------------------------- methods
def mix_dims(cfg: Config) -> tuple[str, str]:
    """``(ssl.cut_dims, ssl.input_cut_dims)`` as the mixing functions read them. Skeleton maps are
    (B, C, T, V, M), persons last: the config's letters ``c t v`` become the mixing's ``c t h``
    (``h`` = joints), and ``w`` (persons) is never cut, so both persons get one box."""
    s = cfg.ssl
    if BACKBONES[cfg.model.backbone].network != "skeleton":
        return s.cut_dims, s.input_cut_dims
    return s.cut_dims.replace("v", "h"), s.input_cut_dims.replace("v", "h")


def mixing_function(spec: MethodSpec) -> Callable:
    """The function of :mod:`cmmc_lib.mixing` that ``spec.mix`` names."""
    fn = getattr(mixing, spec.mix or "", None)
    if not callable(fn):
        raise ValueError(f"method {spec.name!r} names the mixing function {spec.mix!r}, which cmmc_lib.mixing "
                         f"does not define")
    return fn


def build_moco(cfg: Config, modality: str) -> MoCo:
    """A MoCo (query encoder, key encoder, queue) for ``modality`` at the config's sizes."""
    s = cfg.ssl
    return MoCo(encoder_for(cfg, modality), s.queue_size, s.momentum, s.temperature, s.split_bn, s.contrast)


def build_mixer(cfg: Config, spec: MethodSpec, source, trained: Backbone, frozen: bool = True) -> CrossModalMixer:
    """The cross-modal mixer of ``spec`` pasting ``source``'s features into ``trained``'s."""
    s = cfg.ssl
    return CrossModalMixer(source, mixing_function(spec), s.layer_k, s.layer_l, s.alpha, mix_dims(cfg)[0], s.partner,
                           s.resample, s.cut_centre, frozen=frozen, trained=trained)


def build_method(cfg: Config, source: Backbone | Encoder | None = None):
    """The method module of ``cfg.ssl.method`` for ``cfg.ssl.modality``.

    Cross-modal methods need the other modality's network, ``source`` (:func:`build_source`: a
    stage-1 run's backbone for CMMC, its encoder for CoCLR); without one, a random one is built
    with a warning.
    """
    s = cfg.ssl
    spec = lookup(METHODS, s.method, "method")
    if spec.trains_jointly and s.joint:
        return build_joint(cfg, spec)
    if spec.cross_modal and source is None:
        source = build_source(cfg)
    moco = build_moco(cfg, s.modality)
    trained = moco.encoder_q.backbone
    cut_dims, input_cut_dims = mix_dims(cfg)
    if spec.kind == "moco":
        return MoCoMethod(moco, s.modality)
    if spec.kind == "input-mix":
        return InputMixMethod(moco, s.modality, mixing_function(spec), s.alpha, input_cut_dims, s.cut_centre)
    if spec.kind == "manifold-mix":
        return ManifoldMixMethod(moco, s.modality, mixing_function(spec), s.layer_k, s.alpha, cut_dims, s.cut_centre)
    if spec.kind == "cross-modal-mix":
        source = getattr(source, "backbone", source)                # an encoder's backbone
        return CrossModalMixMethod(moco, s.modality, s.other_modality, build_mixer(cfg, spec, source, trained))
    if spec.kind == "coclr":
        mixer = None if spec.mix is None else build_mixer(cfg, spec, source, trained)
        return CoCLRMethod(moco, s.modality, s.other_modality, source, s.topk, s.self_mask, mixer)
    raise ValueError(f"method {s.method!r} has no class for its kind {spec.kind!r}")


def build_joint(cfg: Config, spec: MethodSpec) -> JointCrossModalMethod:
    """``ssl.joint``: the modality's and the other modality's networks trained together, each the
    other's (live) source."""
    s = cfg.ssl
    mocos = {m: build_moco(cfg, m) for m in (s.modality, s.other_modality)}
    methods = {}
    for m, other in ((s.modality, s.other_modality), (s.other_modality, s.modality)):
        mixer = build_mixer(cfg, spec, mocos[other].encoder_q.backbone, mocos[m].encoder_q.backbone, frozen=False)
        methods[m] = CrossModalMixMethod(mocos[m], m, other, mixer)
    return JointCrossModalMethod(methods, s.modality)
