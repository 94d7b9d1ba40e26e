"""Two-stream fusion (CoCLR): an RGB network and a flow network judged together.

* classification: the mean of the two streams' class probabilities;
* retrieval: the sum of the two cosine-similarity matrices (each stream's features centred by
  their own set's mean and L2-normalised first), ranked as in :mod:`.retrieval`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .common import as_labels
from .retrieval import DEFAULT_KS, check_ks, chunked_first_hit_ranks, hit_rates_from_ranks, prepare_pair, snap_similarity


def fuse_probabilities(p1, p2) -> Tensor:
    """Mean of two (N, K) class-probability tensors (rows of each should sum to 1)."""
    p1, p2 = torch.as_tensor(p1).float(), torch.as_tensor(p2).float()
    if p1.shape != p2.shape or p1.ndim != 2:
        raise ValueError(f"stream probabilities must both be (N, K) and equal in shape, got "
                         f"{tuple(p1.shape)} and {tuple(p2.shape)}")
    return (p1 + p2.to(p1.device)) / 2


def _prepared_streams(q1, g1, q2, g2, center: bool):
    q1, g1 = prepare_pair(q1, g1, center)
    q2, g2 = prepare_pair(q2, g2, center)
    if q1.shape[0] != q2.shape[0] or g1.shape[0] != g2.shape[0]:
        raise ValueError(f"the two streams must describe the same videos: queries {q1.shape[0]} vs "
                         f"{q2.shape[0]}, gallery {g1.shape[0]} vs {g2.shape[0]}")
    return q1, g1, q2.to(q1.device), g2.to(q1.device)


def two_stream_similarity(q1, g1, q2, g2, center: bool = True) -> Tensor:
    """The summed similarity matrix (Q, G), values in [-2, 2] (whole matrix: small sets)."""
    q1, g1, q2, g2 = _prepared_streams(q1, g1, q2, g2, center)
    return snap_similarity(q1 @ g1.T + q2 @ g2.T)


def two_stream_retrieval(q1, g1, q2, g2, query_labels, gallery_labels,
                         ks: Sequence[int] = DEFAULT_KS, center: bool = True,
                         chunk_size: int = 1024) -> dict[int, float]:
    """R@k (hit rate) of the summed similarities of stream 1 (q1 (Q, D1), g1 (G, D1)) and
    stream 2 (q2 (Q, D2), g2 (G, D2)); chunked over queries like :func:`retrieval_hit_rate`."""
    ranks = two_stream_ranks(q1, g1, q2, g2, query_labels, gallery_labels, center, chunk_size)
    return hit_rates_from_ranks(ranks, check_ks(ks, len(gallery_labels)))


def two_stream_ranks(q1, g1, q2, g2, query_labels, gallery_labels, center: bool = True,
                     chunk_size: int = 1024) -> Tensor:
    """Each query's first-hit rank (int64 (Q,)) under the summed similarities of the two streams:
    ``ranks < 1`` are the fused R@1 hits, per query."""
    q1, g1, q2, g2 = _prepared_streams(q1, g1, q2, g2, center)
    ql = as_labels(query_labels, q1.shape[0], "query labels")
    gl = as_labels(gallery_labels, g1.shape[0], "gallery labels")
    return chunked_first_hit_ranks(lambda a, b: q1[a:b] @ g1.T + q2[a:b] @ g2.T, ql, gl, chunk_size)
