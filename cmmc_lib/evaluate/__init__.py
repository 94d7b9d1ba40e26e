"""Downstream evaluation (CoCLR's protocols, ``docs/method.md`` section 6).

* :mod:`.common`    what the protocols share: input checks, top-k accuracy, confusion matrix,
                    the step learning rate, clips out of dataset items;
* :mod:`.features`  ``split_features``: a backbone's features on a split, cached on disk;
* :mod:`.retrieval` nearest-neighbour retrieval R@k (a hit rate), chunked and exact;
* :mod:`.linear`    linear probe on frozen features;
* :mod:`.finetune`  whole-network fine-tuning (dropout 0.9, backbone at lr / 10, 10-crop test);
* :mod:`.fusion`    two-stream fusion (mean probabilities; summed similarities);
* :mod:`.examples`  what the lessons show: retrieved examples, neighbour agreement, weighted fusion;
* :mod:`.chance`    chance levels (R@k of a random ranking, accuracy) and spreads (binomial SE,
                    exact p-values) for every number the lessons print (over seeds:
                    :mod:`cmmc_lib.tables`);
* :mod:`.runner`    ``evaluate_run``: a run folder through one protocol (``cmmc eval``).
"""
from .chance import (Measured, accuracy_chance, binomial_se, measure_accuracy, measure_recall,
                     recall_at_k_chance)
from .common import classification_summary, confusion_matrix, topk_accuracy
from .features import FeatureCache, Features, extract_features, feature_cache_key, split_features
from .finetune import finetune
from .fusion import fuse_probabilities, two_stream_retrieval, two_stream_similarity
from .linear import linear_probe
from .retrieval import (bench_retrieval, hit_rate_from_similarity, nearest_neighbours, prepare_features,
                        retrieval_hit_rate, similarity_matrix)
from .runner import evaluate_run, format_result

__all__ = ["FeatureCache", "Features", "extract_features", "feature_cache_key", "split_features",
           "finetune", "fuse_probabilities", "two_stream_retrieval",
           "two_stream_similarity", "classification_summary", "confusion_matrix", "linear_probe",
           "topk_accuracy", "bench_retrieval", "hit_rate_from_similarity", "nearest_neighbours",
           "prepare_features", "retrieval_hit_rate", "similarity_matrix", "evaluate_run",
           "format_result", "Measured", "accuracy_chance", "binomial_se", "measure_accuracy",
           "measure_recall", "recall_at_k_chance"]
