"""Self-supervised learning: MoCo (momentum encoder + queue), the soft-label InfoNCE every
method shares, the DDP helpers, and the method steps (``loss(batch)``).

Uses ``cmmc_lib.models`` and ``cmmc_lib.mixing``; never ``cmmc_lib.data``.
"""
from .distributed import concat_all_gather, rank, world_size
from .losses import contrast_stats, soft_info_nce, soft_targets
from .moco import MoCo, SplitBatchNorm, convert_split_bn
from .methods import CrossModalMixStep, InputMixStep, ManifoldMixStep, MoCoStep, query_and_key_views

__all__ = ["concat_all_gather", "rank", "world_size", "contrast_stats", "soft_info_nce",
           "soft_targets", "MoCo", "SplitBatchNorm", "convert_split_bn", "MoCoStep",
           "InputMixStep", "ManifoldMixStep", "CrossModalMixStep", "query_and_key_views"]
