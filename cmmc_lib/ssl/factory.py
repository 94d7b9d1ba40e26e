"""Build the method step a :class:`~cmmc_lib.config.Config` asks for."""
from __future__ import annotations

import logging

from ..config import MODALITY_CHANNELS, Config
from ..models import Backbone, build_backbone, build_encoder
from .methods import CrossModalMixStep, InputMixStep, ManifoldMixStep, MoCoStep
from .moco import MoCo

log = logging.getLogger(__name__)


def channels(modality: str) -> int:
    if modality not in MODALITY_CHANNELS:
        raise ValueError(f"modality {modality!r} has no 3-D backbone input; choose one of "
                         f"{', '.join(MODALITY_CHANNELS)}")
    return MODALITY_CHANNELS[modality]


def build_method(cfg: Config, source_backbone: Backbone | None = None) -> MoCoStep:
    """The step object of ``cfg.ssl.method`` for ``cfg.ssl.modality``.

    Cross-modal methods need the other modality's network: ``source_backbone`` (usually the
    backbone of a stage-1 run, ``ssl.source_run``). Without one, a randomly initialised
    network is used and a warning says so (fine for lessons on mechanics, not for results).
    """
    s, m = cfg.ssl, cfg.model
    encoder = build_encoder(m.backbone, channels(s.modality), m.width, m.proj_hidden, m.proj_dim)
    moco = MoCo(encoder, s.queue_size, s.momentum, s.temperature, s.split_bn)
    if s.method == "moco":
        return MoCoStep(moco, s.modality)
    if s.method in ("mixup", "cutmix"):
        return InputMixStep(moco, s.modality, s.method, s.alpha, s.input_cut_dims, s.cut_centre)
    if s.method in ("manifold-mixup", "manifold-cutmix"):
        return ManifoldMixStep(moco, s.modality, s.method.split("-")[1], s.layer_k, s.alpha, s.cut_dims,
                               s.cut_centre)
    if s.method in ("cm-mixup", "cmmc"):
        if s.other_modality == s.modality:
            raise ValueError("cross-modal mixing needs ssl.other_modality different from ssl.modality")
        if source_backbone is None:
            log.warning("no ssl.source_run given: the %s source network is randomly initialised",
                        s.other_modality)
            source_backbone = build_backbone(m.backbone, channels(s.other_modality), m.width)
        kind = "cutmix" if s.method == "cmmc" else "mixup"
        return CrossModalMixStep(moco, s.modality, s.other_modality, source_backbone, kind, s.layer_k,
                                 s.layer_l, s.alpha, s.cut_dims, s.partner, s.resample, s.cut_centre)
    raise ValueError(f"method {s.method!r} is not available yet (CoCLR arrives with its own issue)")
