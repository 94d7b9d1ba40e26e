"""Build a backbone or an encoder by name, from :data:`cmmc_lib.registry.BACKBONES`."""
from __future__ import annotations

import importlib

from ..registry import BACKBONES, lookup
from .base import Backbone
from .heads import Encoder, ProjectionHead


def build_backbone(name: str, in_channels: int, width: int = 16) -> Backbone:
    """The backbone called ``name`` (``small3d`` | ``s3d`` | ``stgcn``) for ``in_channels`` inputs.

    ``width`` sizes the small networks (small3d: channels of the first block; stgcn: channels of
    the first unit, 16 = SkeletonCLR); S3D has a fixed size and ignores it.
    """
    spec = lookup(BACKBONES, name, "backbone")
    module, cls_name = spec.cls.split(":")
    cls = getattr(importlib.import_module(f"{__package__}.{module}"), cls_name)
    return cls(in_channels=in_channels, width=width) if spec.sized_by_width else cls(in_channels=in_channels)


def build_encoder(backbone: str, in_channels: int, width: int = 16,
                  proj_hidden: int | None = None, proj_dim: int = 128) -> Encoder:
    """``build_backbone(...)`` with a ``ProjectionHead(feat_dim, proj_hidden or feat_dim, proj_dim)``."""
    net = build_backbone(backbone, in_channels, width)
    return Encoder(net, ProjectionHead(net.feat_dim, proj_hidden or net.feat_dim, proj_dim))
