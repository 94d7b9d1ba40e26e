"""Downstream evaluation (CoCLR's protocols, ``paper/METHOD.md`` section 6).

* :mod:`.features`  backbone features of a split, cached on disk;
* :mod:`.retrieval` nearest-neighbour retrieval R@k (a hit rate), chunked and exact;
* :mod:`.linear`    linear probe on frozen features;
* :mod:`.finetune`  whole-network fine-tuning (dropout 0.9, backbone at lr / 10, 10-crop test);
* :mod:`.fusion`    two-stream fusion (mean probabilities; summed similarities);
* :mod:`.runner`    ``evaluate_run``: a run folder through one protocol (``cmmc eval``).
"""
from .features import Features, extract_features, feature_cache_key
from .finetune import finetune, ten_crop_clip
from .fusion import fuse_probabilities, two_stream_retrieval, two_stream_similarity
from .linear import confusion_matrix, linear_probe, topk_accuracy
from .retrieval import (bench_retrieval, hit_rate_from_similarity, nearest_neighbours, prepare_features,
                        retrieval_hit_rate, similarity_matrix)
from .runner import evaluate_run, format_result

__all__ = ["Features", "extract_features", "feature_cache_key", "finetune", "ten_crop_clip",
           "fuse_probabilities", "two_stream_retrieval", "two_stream_similarity", "confusion_matrix",
           "linear_probe", "topk_accuracy", "bench_retrieval", "hit_rate_from_similarity",
           "nearest_neighbours", "prepare_features", "retrieval_hit_rate", "similarity_matrix",
           "evaluate_run", "format_result"]
