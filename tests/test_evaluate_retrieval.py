"""Retrieval R@k (and two-stream retrieval fusion) on constructed features with known answers.

References: a brute-force Python loop that ranks each query's gallery with the documented
tie rule (higher similarity first, then lower gallery index), and torchmetrics'
``RetrievalHitRate`` (per-query hit rate with ``indexes``).
"""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cmmc_lib.evaluate import (hit_rate_from_similarity, nearest_neighbours, retrieval_hit_rate,
                               similarity_matrix, two_stream_retrieval, two_stream_similarity)
from cmmc_lib.evaluate.retrieval import bench_retrieval, first_hit_rank


def brute_force_hit_rate(sim, query_labels, gallery_labels, ks):
    """Sort every query's gallery by (-similarity, index) in Python and look at the first k."""
    sim, ql, gl = sim.tolist(), query_labels.tolist(), gallery_labels.tolist()
    hits = {k: 0 for k in ks}
    for q, row in enumerate(sim):
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))
        for k in ks:
            hits[k] += any(gl[j] == ql[q] for j in order[:k])
    return {k: hits[k] / len(sim) for k in ks}


def tied_imbalanced_problem(seed, num_queries=60, num_gallery=80, dim=6):
    """Small-integer features (many exact ties), duplicated gallery rows with different labels,
    and a skewed class distribution (class 0 is most of the gallery, class 4 has no gallery item)."""
    g = torch.Generator().manual_seed(seed)
    gallery = torch.randint(-2, 3, (num_gallery, dim), generator=g).float()
    gallery[40:60] = gallery[0:20]                                           # exact duplicates
    gallery_labels = torch.multinomial(torch.tensor([0.55, 0.25, 0.15, 0.05]), num_gallery,
                                       replacement=True, generator=g)
    queries = torch.randint(-2, 3, (num_queries, dim), generator=g).float()
    queries[:10] = gallery[:10]                                              # queries equal to gallery rows
    query_labels = torch.randint(0, 5, (num_queries,), generator=g)
    return queries, query_labels, gallery, gallery_labels


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("center", [True, False])
def test_matches_brute_force_with_ties_and_imbalance(seed, center):
    q, ql, g, gl = tied_imbalanced_problem(seed)
    ks = (1, 2, 5, 10, 20, 80)
    sim = similarity_matrix(q, g, center=center)
    assert all(len(torch.unique(row)) <= len(row) - 20 for row in sim), "every row should hold ties"
    expected = brute_force_hit_rate(sim, ql, gl, ks)
    assert retrieval_hit_rate(q, ql, g, gl, ks=ks, center=center, chunk_size=7) == expected
    assert hit_rate_from_similarity(sim, ql, gl, ks=ks, chunk_size=16) == expected


def test_matches_torchmetrics_hit_rate_on_continuous_features():
    from torchmetrics.retrieval import RetrievalHitRate

    g = torch.Generator().manual_seed(3)
    q, gal = torch.randn(40, 16, generator=g), torch.randn(120, 16, generator=g)
    ql = torch.randint(0, 6, (40,), generator=g)
    gl = torch.multinomial(torch.tensor([0.4, 0.3, 0.1, 0.1, 0.05, 0.05]), 120, replacement=True, generator=g)
    sim = similarity_matrix(q, gal)
    ours = retrieval_hit_rate(q, ql, gal, gl, ks=(1, 5, 10, 20))
    indexes = torch.arange(40)[:, None].expand(40, 120)
    target = ql[:, None] == gl[None, :]
    for k in (1, 5, 10, 20):
        metric = RetrievalHitRate(top_k=k)
        expected = float(metric(sim.flatten(), target.flatten(), indexes=indexes.flatten()))
        assert ours[k] == pytest.approx(expected, abs=1e-6)


def test_matches_torchmetrics_on_ties_given_the_tie_broken_order():
    # torchmetrics breaks ties arbitrarily (argsort); feed it our documented order as distinct scores
    from torchmetrics.retrieval import RetrievalHitRate

    q, ql, g, gl = tied_imbalanced_problem(seed=5)
    sim = similarity_matrix(q, g)
    order = torch.sort(sim, dim=1, descending=True, stable=True).indices
    tie_broken = torch.empty_like(sim).scatter_(1, order, -torch.arange(sim.shape[1]).float().expand_as(sim))
    indexes = torch.arange(len(q))[:, None].expand_as(sim)
    target = ql[:, None] == gl[None, :]
    ours = retrieval_hit_rate(q, ql, g, gl, ks=(1, 3, 10))
    for k in (1, 3, 10):
        expected = float(RetrievalHitRate(top_k=k)(tie_broken.flatten(), target.flatten(),
                                                   indexes=indexes.flatten()))
        assert ours[k] == pytest.approx(expected, abs=1e-6)


def test_ties_go_to_the_lower_gallery_index():
    query = torch.tensor([[1.0, 0.0]])
    gallery = torch.tensor([[2.0, 0.0], [3.0, 0.0], [0.0, 1.0]])        # rows 0 and 1: same direction
    assert retrieval_hit_rate(query, [7], gallery, [3, 7, 3], ks=(1, 2), center=False) == {1: 0.0, 2: 1.0}
    assert retrieval_hit_rate(query, [7], gallery, [7, 3, 3], ks=(1, 2), center=False) == {1: 1.0, 2: 1.0}
    scores, idx = nearest_neighbours(query, gallery, k=3, center=False)
    assert idx.tolist() == [[0, 1, 2]] and scores[0, 0] == scores[0, 1] == 1.0


def test_nearest_neighbours_follow_the_same_order_as_brute_force():
    q, ql, g, gl = tied_imbalanced_problem(seed=7)
    sim = similarity_matrix(q, g)
    scores, idx = nearest_neighbours(q, g, k=12, chunk_size=9)
    for row in range(len(q)):
        values = sim[row].tolist()
        expected = sorted(range(len(values)), key=lambda j: (-values[j], j))[:12]
        assert idx[row].tolist() == expected
        assert torch.equal(scores[row], sim[row, idx[row]])


def test_known_answer_on_clusters_and_absent_classes_count_as_misses():
    # two well separated clusters; a third query class has no gallery items at all
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]])
    gallery = torch.cat([centres[0] + 0.1 * torch.randn(10, 3, generator=g),
                         centres[1] + 0.1 * torch.randn(10, 3, generator=g)])
    gl = torch.tensor([0] * 10 + [1] * 10)
    queries = torch.cat([centres[0] + 0.1 * torch.randn(3, 3, generator=g),
                         centres[1] + 0.1 * torch.randn(3, 3, generator=g),
                         centres[2] + 0.1 * torch.randn(2, 3, generator=g)])
    ql = torch.tensor([0] * 3 + [1] * 3 + [2] * 2)
    r = retrieval_hit_rate(queries, ql, gallery, gl, ks=(1, 20), center=False)
    assert r == {1: 6 / 8, 20: 6 / 8}
    ranks = first_hit_rank(similarity_matrix(queries, gallery, center=False), ql, gl)
    assert ranks[-2:].tolist() == [20, 20] and (ranks[:6] == 0).all()


def test_centring_removes_only_a_mean_shift():
    q, ql, g, gl = tied_imbalanced_problem(seed=2)
    q, g = q + 0.01 * torch.randn_like(q), g + 0.01 * torch.randn_like(g)      # break ties
    shift_g, shift_q = 4.0 * torch.randn(g.shape[1]), -3.0 * torch.randn(g.shape[1])
    ks = (1, 5, 10)
    base = retrieval_hit_rate(q, ql, g, gl, ks=ks)
    assert retrieval_hit_rate(q + shift_q, ql, g + shift_g, gl, ks=ks) == base
    torch.testing.assert_close(similarity_matrix(q + shift_q, g + shift_g), similarity_matrix(q, g),
                               atol=1e-5, rtol=0)
    # without centring the same shift does change the similarities
    assert not torch.allclose(similarity_matrix(q, g + shift_g, center=False),
                              similarity_matrix(q, g, center=False), atol=1e-2)


def test_chunk_size_does_not_change_the_result():
    g = torch.Generator().manual_seed(11)
    q, gal = torch.randn(100, 32, generator=g), torch.randn(300, 32, generator=g)
    ql, gl = torch.randint(0, 10, (100,), generator=g), torch.randint(0, 10, (300,), generator=g)
    results = [retrieval_hit_rate(q, ql, gal, gl, ks=(1, 5, 50), chunk_size=c) for c in (1, 13, 100, 4096)]
    assert all(r == results[0] for r in results)


def test_bad_input_raises_one_clear_error():
    q, g = torch.randn(4, 8), torch.randn(6, 8)
    ql, gl = [0, 1, 0, 1], [0, 1, 0, 1, 0, 1]
    with pytest.raises(ValueError, match="k=7 is larger than the gallery"):
        retrieval_hit_rate(q, ql, g, gl, ks=(1, 7))
    with pytest.raises(ValueError, match="positive integer"):
        retrieval_hit_rate(q, ql, g, gl, ks=(0,))
    with pytest.raises(ValueError, match="gallery labels"):
        retrieval_hit_rate(q, ql, g, gl[:-1])
    with pytest.raises(ValueError, match="query labels"):
        retrieval_hit_rate(q, ql[:3], g, gl)
    with pytest.raises(ValueError, match="8-d but gallery features are 9-d"):
        retrieval_hit_rate(q, ql, torch.randn(6, 9), gl, ks=(1,))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_hit_rate(q, ql, torch.full((6, 8), float("nan")), gl, ks=(1,))
    with pytest.raises(ValueError, match="2-D"):
        retrieval_hit_rate(torch.randn(4), ql, g, gl)
    with pytest.raises(ValueError, match="larger than the gallery"):
        nearest_neighbours(q, g, k=10)


def test_chunk_size_cannot_decide_ties_through_float_noise():
    # blocked matrix products give this exact tie 0 in one chunking and -6e-10 in another
    g = torch.Generator().manual_seed(0)
    q = torch.randint(-1, 2, (4, 3), generator=g).float()
    gal = torch.randint(-1, 2, (5, 3), generator=g).float()
    ql, gl = torch.randint(0, 4, (4,), generator=g), torch.randint(0, 4, (5,), generator=g)
    ks = (1, 2, 3, 4, 5)
    assert retrieval_hit_rate(q, ql, gal, gl, ks, center=False, chunk_size=3) == \
        retrieval_hit_rate(q, ql, gal, gl, ks, center=False, chunk_size=1024)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 12), st.integers(2, 25), st.integers(1, 4),
       st.integers(1, 5), st.booleans())
def test_property_exact_and_monotone(seed, num_queries, num_gallery, dim, num_classes, center):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-1, 2, (num_queries, dim), generator=g).float()
    gal = torch.randint(-1, 2, (num_gallery, dim), generator=g).float()
    ql = torch.randint(0, num_classes, (num_queries,), generator=g)
    gl = torch.randint(0, num_classes, (num_gallery,), generator=g)
    ks = tuple(range(1, num_gallery + 1))
    r = retrieval_hit_rate(q, ql, gal, gl, ks=ks, center=center, chunk_size=3)
    assert r == brute_force_hit_rate(similarity_matrix(q, gal, center=center), ql, gl, ks)
    values = [r[k] for k in ks]
    assert values == sorted(values)                                       # non-decreasing in k
    has_positive = (ql[:, None] == gl[None, :]).any(dim=1).double().mean().item()
    assert r[num_gallery] == pytest.approx(has_positive)                  # k = G: any positive at all


# ----------------------------------------------------------------------------- two-stream fusion
def test_two_stream_with_an_uninformative_stream_equals_the_informative_one():
    q, ql, g, gl = tied_imbalanced_problem(seed=4)
    q, g = q + 0.01 * torch.randn_like(q), g + 0.01 * torch.randn_like(g)
    # a constant stream carries no information: after centring its similarities are all 0
    q_flat, g_flat = torch.ones(len(q), 3), torch.ones(len(g), 3)
    ks = (1, 5, 10)
    alone = retrieval_hit_rate(q, ql, g, gl, ks=ks)
    fused = two_stream_retrieval(q, g, q_flat, g_flat, ql, gl, ks=ks, chunk_size=5)
    assert fused == alone
    assert all(fused[k] >= alone[k] for k in ks)


def test_two_streams_with_complementary_information_beat_each_stream():
    # stream A tells {0,1} from {2,3}; stream B tells {0,2} from {1,3}: only together is the class known
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat(30)
    a_code = torch.tensor([1.0, 1.0, -1.0, -1.0])[labels]
    b_code = torch.tensor([1.0, -1.0, 1.0, -1.0])[labels]

    def stream(code):
        return torch.stack([code, torch.zeros_like(code)], 1) + 0.05 * torch.randn(len(code), 2, generator=g)

    qa, qb, ga, gb = stream(a_code), stream(b_code), stream(a_code), stream(b_code)
    ra = retrieval_hit_rate(qa, labels, ga, labels, ks=(1,))[1]
    rb = retrieval_hit_rate(qb, labels, gb, labels, ks=(1,))[1]
    fused = two_stream_retrieval(qa, ga, qb, gb, labels, labels, ks=(1,))[1]
    assert fused == 1.0 and ra < 0.8 and rb < 0.8
    sim = two_stream_similarity(qa, ga, qb, gb)
    assert hit_rate_from_similarity(sim, labels, labels, ks=(1,))[1] == fused


def test_two_stream_rejects_streams_of_different_videos():
    with pytest.raises(ValueError, match="same videos"):
        two_stream_retrieval(torch.randn(5, 4), torch.randn(8, 4), torch.randn(6, 4), torch.randn(8, 4),
                             torch.zeros(5), torch.zeros(8), ks=(1,))


def test_bench_retrieval_reports_time_memory_and_recall():
    r = bench_retrieval(num_queries=50, num_gallery=120, dim=16, num_classes=5, chunk_size=16)
    assert r["seconds"] > 0 and r["peak_mem_mib"] >= 0
    assert set(r["recall"]) == {"1", "5", "10", "20", "50"}
    assert 0 <= r["recall"]["1"] <= r["recall"]["50"] <= 1
