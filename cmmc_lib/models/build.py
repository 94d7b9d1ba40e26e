"""Build a backbone or an encoder by name, from :data:`cmmc_lib.registry.BACKBONES`."""
from __future__ import annotations

import importlib

from ..registry import BACKBONES, lookup
from .base import Backbone
from .heads import Encoder, ProjectionHead
from .stgcn import skeletonclr_init


def build_backbone(name: str, in_channels: int, width: int = 16, layout: str | None = None) -> Backbone:
    """The backbone called ``name`` (``small3d`` | ``s3d`` | ``stgcn``) for ``in_channels`` inputs.

    ``width`` sizes the small networks (small3d: channels of the first block; stgcn: channels of
    the first unit, 16 = SkeletonCLR); S3D has a fixed size and ignores it. ``layout``: the
    skeleton layout of a skeleton backbone's graph (a key of ``registry.SKELETON_LAYOUTS``;
    default NTU's 25 joints); video backbones ignore it.
    """
    spec = lookup(BACKBONES, name, "backbone")
    module, cls_name = spec.cls.split(":")
    cls = getattr(importlib.import_module(f"{__package__}.{module}"), cls_name)
    kw = {"layout": layout} if spec.network == "skeleton" and layout else {}
    return cls(in_channels=in_channels, width=width, **kw) if spec.sized_by_width else cls(in_channels=in_channels)


def build_encoder(backbone: str, in_channels: int, width: int = 16,
                  proj_hidden: int | None = None, proj_dim: int = 128, layout: str | None = None) -> Encoder:
    """``build_backbone(...)`` with a ``ProjectionHead(feat_dim, proj_hidden or feat_dim, proj_dim)``
    (initialised as SkeletonCLR's when the backbone reads skeletons)."""
    net = build_backbone(backbone, in_channels, width, layout)
    head = ProjectionHead(net.feat_dim, proj_hidden or net.feat_dim, proj_dim)
    if BACKBONES[backbone].network == "skeleton":
        skeletonclr_init(head)
    return Encoder(net, head)
