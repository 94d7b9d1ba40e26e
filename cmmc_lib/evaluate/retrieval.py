"""Nearest-neighbour retrieval R@k, the protocol of CoCLR (``docs/method.md`` section 6).

Queries are the test-split videos, the gallery is the train-split videos. Each set is centred
by **its own** mean, every feature is L2-normalised, and the similarity is the cosine
``q . g``. R@k is a *hit rate*: the fraction of queries with at least one same-class gallery
item among their k nearest gallery items (not torchmetrics' ``RetrievalRecall``).

Exactness and determinism
-------------------------
Ties in similarity are broken by gallery index: **the lower gallery index ranks first** (the
order a stable descending sort gives). R@k is computed without sorting: for each query we find
its best same-class gallery item ``j*`` (highest similarity, lowest index among equals) and
count the gallery items ranked ahead of it, ``#{s > s*} + #{s == s* and j < j*}``. The query
is a hit at k exactly when that count is below k. This is the same answer a stable sort and a
look at the first k items would give, in O(G) per query instead of O(G log G).

Similarities are rounded to 6 decimals before ranking (:func:`snap_similarity`): a matrix
product gives the same dot product slightly different float noise depending on how it is
blocked (0 in one, -6e-10 in another), which would otherwise let the chunk size decide ties.

Memory is bounded by working on ``chunk_size`` queries at a time: one (chunk, G) similarity
block (39 MiB for 1024 x 9537) plus masks over 256 rows of it at a time, never the whole
(Q, G) matrix. Similarities are float32 on the features' device. UCF101 split 1 sizes
(3783 x 9537, 1024-d) take about 1.3 s and 146 MiB of resident memory on 2 CPU cores
(:func:`bench_retrieval`; the whole similarity matrix alone would be 138 MiB).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

from .common import as_features, as_labels

log = logging.getLogger(__name__)

DEFAULT_KS = (1, 5, 10, 20)
SIM_DECIMALS = 6


def snap_similarity(sim: Tensor) -> Tensor:
    """Round similarities to ``SIM_DECIMALS`` decimals so that float noise cannot break ties."""
    return torch.round(sim, decimals=SIM_DECIMALS)


# ----------------------------------------------------------------------------- input checks
def check_ks(ks: Iterable[int], gallery_size: int) -> tuple[int, ...]:
    """Validate the cut-offs: positive integers no larger than the gallery."""
    ks = tuple(ks)
    if not ks:
        raise ValueError("ks is empty: give at least one cut-off k")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"every k must be a positive integer, got {k!r}")
        if k > gallery_size:
            raise ValueError(f"k={k} is larger than the gallery ({gallery_size} items)")
    return ks


# ----------------------------------------------------------------------------- similarities
def prepare_features(feats: Tensor, center: bool = True) -> Tensor:
    """(N, D) -> (N, D): subtract the set's own mean (when ``center``), then L2-normalise rows.

    A row that is zero after centring stays zero (similarity 0 to everything).
    """
    return _center_normalise(as_features(feats), center)


def _center_normalise(x: Tensor, center: bool) -> Tensor:
    x = x - x.mean(dim=0, keepdim=True) if center else x.clone()
    return x.div_(x.norm(p=2, dim=1, keepdim=True).clamp_min_(1e-12))   # in place: one copy only


def prepare_pair(query_feats, gallery_feats, center: bool = True) -> tuple[Tensor, Tensor]:
    """Check a query set (Q, D) and a gallery (G, D) against each other; both prepared as in
    :func:`prepare_features`, on the queries' device."""
    q = as_features(query_feats, "query features")
    g = as_features(gallery_feats, "gallery features")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query features are {q.shape[1]}-d but gallery features are {g.shape[1]}-d")
    if g.shape[0] == 0 or q.shape[0] == 0:
        raise ValueError("query and gallery sets must not be empty")
    if g.device != q.device:
        g = g.to(q.device)
    return _center_normalise(q, center), _center_normalise(g, center)


def similarity_matrix(query_feats, gallery_feats, center: bool = True) -> Tensor:
    """Cosine similarities (Q, G) of centred, L2-normalised features (the whole matrix: small sets)."""
    q, g = prepare_pair(query_feats, gallery_feats, center)
    return snap_similarity(q @ g.T)


# ----------------------------------------------------------------------------- ranking
def first_hit_rank(sim: Tensor, query_labels: Tensor, gallery_labels: Tensor,
                   block_rows: int = 256) -> Tensor:
    """For each query row of ``sim`` (Q, G): how many gallery items rank ahead of its best
    same-class item, ties broken by lower gallery index. ``G`` when the class is absent.

    The query is a hit at k exactly when this number is < k. Returns int64 (Q,). Rows are
    handled ``block_rows`` at a time because counting along a row casts a (rows, G) mask to
    int64 (8 bytes per entry).
    """
    return torch.cat([_first_hit_rank_block(snap_similarity(sim[a:a + block_rows]), query_labels[a:a + block_rows],
                                            gallery_labels)
                      for a in range(0, sim.shape[0], block_rows)])


def _first_hit_rank_block(sim: Tensor, query_labels: Tensor, gallery_labels: Tensor) -> Tensor:
    num_queries, num_gallery = sim.shape
    # Best same-class score per query, one class at a time: gathers (queries of c) x (gallery
    # items of c) entries, about Q * G / num_classes, instead of a masked (Q, G) copy.
    best = torch.full((num_queries,), float("-inf"), dtype=sim.dtype, device=sim.device)
    has_positive = torch.zeros(num_queries, dtype=torch.bool, device=sim.device)
    for label in torch.unique(query_labels).tolist():
        rows = torch.nonzero(query_labels == label).flatten()
        cols = torch.nonzero(gallery_labels == label).flatten()
        if len(cols):
            best[rows] = sim[rows[:, None], cols[None, :]].amax(dim=1)
            has_positive[rows] = True
    best = best[:, None]
    ahead = (sim > best).sum(dim=1)
    at_best = sim == best                                                         # (Q, G) bool
    # Items tied with the best positive rank ahead of it when their index is lower. Exact ties
    # are rare with real features, so only the rows that have any are inspected.
    tie_rows = torch.nonzero((at_best.sum(dim=1) > 1) & has_positive).flatten().tolist()
    for row in tie_rows:
        tied = torch.nonzero(at_best[row]).flatten()                              # ascending
        first_positive = tied[gallery_labels[tied] == query_labels[row]][0]
        ahead[row] += int((tied < first_positive).sum())
    return torch.where(has_positive, ahead, torch.full_like(ahead, num_gallery))


def hit_rates_from_ranks(ranks: Tensor, ks: Sequence[int]) -> dict[int, float]:
    """{k: fraction of ``ranks`` below k}, from :func:`first_hit_rank` values."""
    return {k: float((ranks < k).double().mean()) for k in ks}


def chunked_first_hit_ranks(similarity_chunk: Callable[[int, int], Tensor], query_labels, gallery_labels,
                            chunk_size: int = 1024) -> Tensor:
    """:func:`first_hit_rank` of every query (int64 (Q,), on the CPU) where
    ``similarity_chunk(start, stop)`` returns the (stop - start, G) block of the similarity matrix;
    only one block lives at a time. Query q is a hit at k exactly when its rank is < k."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    gallery_labels = torch.as_tensor(gallery_labels).long()
    query_labels = torch.as_tensor(query_labels).long()
    num_queries, num_gallery = query_labels.shape[0], gallery_labels.shape[0]
    ranks = []
    for start in range(0, num_queries, chunk_size):
        stop = min(start + chunk_size, num_queries)
        sim = similarity_chunk(start, stop)
        if sim.shape != (stop - start, num_gallery):
            raise ValueError(f"similarity block has shape {tuple(sim.shape)}, "
                             f"expected ({stop - start}, {num_gallery})")
        gl = gallery_labels.to(sim.device)
        ranks.append(first_hit_rank(sim, query_labels[start:stop].to(sim.device), gl).cpu())
        del sim                         # before the next block is made: one block alive at a time
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)


def chunked_hit_rate(similarity_chunk: Callable[[int, int], Tensor], query_labels, gallery_labels,
                     ks: Sequence[int] = DEFAULT_KS, chunk_size: int = 1024) -> dict[int, float]:
    """R@k from :func:`chunked_first_hit_ranks`: the building block of :func:`retrieval_hit_rate`,
    :func:`hit_rate_from_similarity` and two-stream fusion."""
    ks = check_ks(ks, torch.as_tensor(gallery_labels).shape[0])
    return hit_rates_from_ranks(chunked_first_hit_ranks(similarity_chunk, query_labels, gallery_labels,
                                                        chunk_size), ks)


def hit_rate_from_similarity(sim, query_labels, gallery_labels, ks: Sequence[int] = DEFAULT_KS,
                             chunk_size: int = 1024) -> dict[int, float]:
    """R@k from a given similarity matrix (Q, G) (higher = more similar), chunked over queries."""
    sim = torch.as_tensor(sim)
    if sim.ndim != 2:
        raise ValueError(f"similarity matrix must be 2-D (Q, G), got shape {tuple(sim.shape)}")
    if torch.isnan(sim).any():
        raise ValueError("similarity matrix contains NaN")
    ql = as_labels(query_labels, sim.shape[0], "query labels")
    gl = as_labels(gallery_labels, sim.shape[1], "gallery labels")
    return chunked_hit_rate(lambda a, b: sim[a:b], ql, gl, ks, chunk_size)


def retrieval_hit_rate(query_feats, query_labels, gallery_feats, gallery_labels,
                       ks: Sequence[int] = DEFAULT_KS, center: bool = True,
                       chunk_size: int = 1024) -> dict[int, float]:
    """Retrieval R@k (hit rate) of queries (Q, D) against a gallery (G, D): ``{k: value in [0, 1]}``.

    Each set is centred by its own mean (when ``center``), L2-normalised, compared by cosine
    similarity; ties go to the lower gallery index. Raises ValueError for k > G, mismatched
    lengths or feature sizes, and non-finite features.

    >>> g = torch.tensor([[1.0, 0.0], [0.0, 1.0]]); q = torch.tensor([[0.9, 0.1]])
    >>> retrieval_hit_rate(q, [1], g, [0, 1], ks=(1, 2), center=False)
    {1: 0.0, 2: 1.0}
    """
    ranks = retrieval_ranks(query_feats, query_labels, gallery_feats, gallery_labels, center, chunk_size)
    return hit_rates_from_ranks(ranks, check_ks(ks, len(gallery_labels)))


def retrieval_ranks(query_feats, query_labels, gallery_feats, gallery_labels, center: bool = True,
                    chunk_size: int = 1024) -> Tensor:
    """Each query's :func:`first_hit_rank` (int64 (Q,)) against the gallery, prepared as in
    :func:`retrieval_hit_rate`: ``ranks < 1`` are the R@1 hits, per query."""
    q, g = prepare_pair(query_feats, gallery_feats, center)
    ql = as_labels(query_labels, q.shape[0], "query labels")
    gl = as_labels(gallery_labels, g.shape[0], "gallery labels")
    return chunked_first_hit_ranks(lambda a, b: q[a:b] @ g.T, ql, gl, chunk_size)


def nearest_neighbours(query_feats, gallery_feats, k: int, center: bool = True,
                       chunk_size: int = 1024) -> tuple[Tensor, Tensor]:
    """The k most similar gallery items of each query: ``(scores (Q, k), indices (Q, k))``,
    best first, ties broken by lower gallery index (the same order R@k uses)."""
    q, g = prepare_pair(query_feats, gallery_feats, center)
    check_ks((k,), g.shape[0])
    scores, indices = [], []
    for start in range(0, q.shape[0], chunk_size):
        sim = snap_similarity(q[start:start + chunk_size] @ g.T)
        s, i = torch.sort(sim, dim=1, descending=True, stable=True)
        scores.append(s[:, :k].cpu().clone())
        indices.append(i[:, :k].cpu().clone())
        del sim, s, i
    return torch.cat(scores), torch.cat(indices)


# ----------------------------------------------------------------------------- benchmark
class _PeakRSS:
    """Sample the process's resident memory (Linux /proc) in a thread; ``peak - start`` in bytes."""

    def __init__(self, interval_s: float = 0.002):
        self.interval_s = interval_s
        self.start = self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                pages = int(f.read().split()[1])
        except OSError:
            return 0
        import resource
        return pages * resource.getpagesize()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval_s)

    def __enter__(self) -> "_PeakRSS":
        self.start = self.peak = self.rss()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def _max_rss() -> int:
    """The process's resident-set high-water mark in bytes (0 where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:
        return 0
    import sys
    scale = 1 if sys.platform == "darwin" else 1024          # macOS reports bytes, Linux KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def bench_retrieval(num_queries: int = 3783, num_gallery: int = 9537, dim: int = 1024, seed: int = 0,
                    num_classes: int = 101, ks: Sequence[int] = (1, 5, 10, 20, 50),
                    chunk_size: int = 1024, repeats: int = 1) -> dict:
    """Time and peak memory of :func:`retrieval_hit_rate` on random features (UCF101 split-1 sizes
    by default); ``seconds`` is the best of ``repeats``.

    Memory, in MiB, two ways: ``peak_mem_mib`` = the largest resident-set growth during a call
    above the level at its start (sampled every 2 ms from /proc; Linux only, else 0);
    ``maxrss_delta_mib`` = growth of the process's resident high-water mark over the calls
    (``getrusage``). Both count what the allocator holds, not only live tensors, so run this in a
    fresh process for clean figures: ``python -c "from cmmc_lib.evaluate.retrieval import
    bench_retrieval as b; print(b())"``.
    """
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(num_queries, dim, generator=gen)
    g = torch.randn(num_gallery, dim, generator=gen)
    ql = torch.randint(num_classes, (num_queries,), generator=gen)
    gl = torch.randint(num_classes, (num_gallery,), generator=gen)
    ks = tuple(k for k in ks if k <= num_gallery)
    times, peaks = [], []
    maxrss_before = _max_rss()
    for _ in range(repeats):
        with _PeakRSS() as mem:
            t0 = time.perf_counter()
            recall = retrieval_hit_rate(q, ql, g, gl, ks=ks, chunk_size=chunk_size)
            times.append(time.perf_counter() - t0)
        peaks.append((mem.peak - mem.start) / 2**20)
    return {
        "num_queries": num_queries, "num_gallery": num_gallery, "dim": dim, "chunk_size": chunk_size,
        "threads": torch.get_num_threads(), "seconds": min(times), "seconds_all": times,
        "peak_mem_mib": max(peaks), "maxrss_delta_mib": (_max_rss() - maxrss_before) / 2**20,
        "full_similarity_mib": num_queries * num_gallery * 4 / 2**20,
        "features_mib": (num_queries + num_gallery) * dim * 4 / 2**20,
        "recall": {str(k): v for k, v in recall.items()},
    }
