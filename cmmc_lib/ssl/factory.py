"""Build the method step a :class:`~cmmc_lib.config.Config` asks for.

The method names live in :data:`cmmc_lib.registry.METHODS`; each names the step class that runs
it (``Method.step``) and what it mixes (``Method.mix``), so this factory never lists them.
"""
from __future__ import annotations

import logging

from ..config import Config
from ..models import Backbone, build_backbone, build_encoder
from ..registry import BACKBONES, DATASETS, METHODS, MODALITIES, lookup
from .coclr import CoCLRStep
from .methods import CrossModalMixStep, InputMixStep, JointCrossModalStep, ManifoldMixStep, MoCoStep
from .moco import MoCo

log = logging.getLogger(__name__)


def channels(modality: str) -> int:
    """Input channels of a modality's network (rgb 3, flow 2)."""
    return lookup(MODALITIES, modality, "modality").channels


def layout_for(cfg: Config) -> str | None:
    """The skeleton layout a skeleton backbone's graph is built on (the dataset's), else None."""
    if BACKBONES[cfg.model.backbone].network != "skeleton":
        return None
    return DATASETS[cfg.data.dataset].skeleton_layout


def mix_dims(cfg: Config) -> tuple[str, str]:
    """``(ssl.cut_dims, ssl.input_cut_dims)`` as the mixing functions read them. Skeleton maps are
    (B, C, T, V, M), persons last: the config's letters ``c t v`` become the mixing's ``c t h``
    (``h`` = joints), and ``w`` (persons) is never cut, so both persons get one box."""
    s = cfg.ssl
    if BACKBONES[cfg.model.backbone].network != "skeleton":
        return s.cut_dims, s.input_cut_dims
    return s.cut_dims.replace("v", "h"), s.input_cut_dims.replace("v", "h")


def build_method(cfg: Config, source_backbone: Backbone | None = None) -> MoCoStep:
    """The step object of ``cfg.ssl.method`` for ``cfg.ssl.modality``.

    Cross-modal methods need the other modality's network: ``source_backbone`` (usually from a
    stage-1 run, ``ssl.source_run``: its backbone for CMMC, its whole encoder for CoCLR, which
    mines with the projected embeddings). Without one, a randomly initialised network is used and
    a warning says so (fine for lessons on mechanics, not for results).
    """
    s, m = cfg.ssl, cfg.model
    method = lookup(METHODS, s.method, "method")
    if method.step == "cross-modal-mix" and s.joint:
        return build_joint(cfg)
    moco = build_moco(cfg, s.modality)
    cut_dims, input_cut_dims = mix_dims(cfg)
    if method.step == "moco":
        return MoCoStep(moco, s.modality)
    if method.step == "input-mix":
        return InputMixStep(moco, s.modality, method.mix, s.alpha, input_cut_dims, s.cut_centre)
    if method.step == "manifold-mix":
        return ManifoldMixStep(moco, s.modality, method.mix, s.layer_k, s.alpha, cut_dims, s.cut_centre)
    if method.step == "cross-modal-mix":
        if source_backbone is None:
            log.warning("no ssl.source_run given: the %s source network is randomly initialised",
                        s.other_modality)
            source_backbone = build_backbone(m.backbone, channels(s.other_modality), m.width, layout_for(cfg))
        source_backbone = getattr(source_backbone, "backbone", source_backbone)     # an encoder's backbone
        return CrossModalMixStep(moco, s.modality, s.other_modality, source_backbone, method.mix, s.layer_k,
                                 s.layer_l, s.alpha, cut_dims, s.partner, s.resample, s.cut_centre)
    if method.step == "coclr":
        if source_backbone is None:
            log.warning("no ssl.source_run given: the %s network that mines positives is randomly initialised",
                        s.other_modality)
            source_backbone = build_encoder(m.backbone, channels(s.other_modality), m.width, m.proj_hidden,
                                            m.proj_dim, layout_for(cfg))
        return CoCLRStep(moco, s.modality, s.other_modality, source_backbone, s.topk, s.self_mask, method.mix,
                         s.layer_k, s.layer_l, s.alpha, cut_dims, s.resample, s.cut_centre)
    raise ValueError(f"method {s.method!r} has no step class for {method.step!r}")


def build_moco(cfg: Config, modality: str) -> MoCo:
    """A MoCo (query encoder, key encoder, queue) for ``modality`` at the config's sizes."""
    s, m = cfg.ssl, cfg.model
    encoder = build_encoder(m.backbone, channels(modality), m.width, m.proj_hidden, m.proj_dim, layout_for(cfg))
    return MoCo(encoder, s.queue_size, s.momentum, s.temperature, s.split_bn)


def build_joint(cfg: Config) -> JointCrossModalStep:
    """``ssl.joint``: the modality's and the other modality's networks trained together, each the
    other's (live) source."""
    s = cfg.ssl
    kind = METHODS[s.method].mix
    mocos = {m: build_moco(cfg, m) for m in (s.modality, s.other_modality)}
    steps = {}
    for m, other in ((s.modality, s.other_modality), (s.other_modality, s.modality)):
        steps[m] = CrossModalMixStep(mocos[m], m, other, mocos[other].encoder_q.backbone, kind, s.layer_k,
                                     s.layer_l, s.alpha, mix_dims(cfg)[0], s.partner, s.resample, s.cut_centre,
                                     frozen_source=False)
    return JointCrossModalStep(steps, s.modality)
