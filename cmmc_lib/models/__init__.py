"""Backbones with a block API (S3D, a small 3-D CNN, ST-GCN), heads and the encoder.

Never imports ``cmmc_lib.data``: models know tensors, not datasets. The backbones' names and
block counts are listed in :data:`cmmc_lib.registry.BACKBONES`.
"""
from .base import Backbone
from .build import build_backbone, build_encoder
from .heads import Encoder, LinearClassifier, ProjectionHead
from .s3d import S3D
from .small3d import Small3D
from .stgcn import STGCN, ntu_spatial_adjacency

__all__ = ["Backbone", "build_backbone", "Encoder", "LinearClassifier", "ProjectionHead",
           "build_encoder", "S3D", "Small3D", "STGCN", "ntu_spatial_adjacency"]
