"""Backbones with a block API (S3D, a small 3-D CNN, ST-GCN), heads and the encoder.

Never imports ``cmmc_lib.data``: models know tensors, not datasets.
"""
from .base import BACKBONES, Backbone, build_backbone
from .heads import Encoder, LinearClassifier, ProjectionHead, build_encoder
from .s3d import S3D
from .small3d import Small3D
from .stgcn import STGCN, ntu_spatial_adjacency

__all__ = ["BACKBONES", "Backbone", "build_backbone", "Encoder", "LinearClassifier",
           "ProjectionHead", "build_encoder", "S3D", "Small3D", "STGCN", "ntu_spatial_adjacency"]
