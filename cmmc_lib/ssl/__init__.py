"""Self-supervised learning: MoCo (momentum encoder + queue), the soft-label InfoNCE every
method shares, the DDP helpers, the method modules (``loss(batch)``) and the factory that builds
them from a config.

Uses ``cmmc_lib.models``, ``cmmc_lib.mixing`` and run folders (``cmmc_lib.runs``); never
``cmmc_lib.data``.
"""
from .distributed import concat_all_gather, rank, world_size
from .losses import contrast_stats, moco_targets, soft_info_nce, soft_targets
from .moco import MoCo, SplitBatchNorm, convert_split_bn
from .methods import (CrossModalMixer, CrossModalMixMethod, InputMixMethod, JointCrossModalMethod,
                      ManifoldMixMethod, MoCoMethod, query_and_key_views)
from .coclr import CoCLRMethod

__all__ = ["concat_all_gather", "rank", "world_size", "contrast_stats", "soft_info_nce",
           "soft_targets", "moco_targets", "MoCo", "SplitBatchNorm", "convert_split_bn", "MoCoMethod",
           "InputMixMethod", "ManifoldMixMethod", "CrossModalMixer", "CrossModalMixMethod",
           "JointCrossModalMethod", "CoCLRMethod", "query_and_key_views"]
