"""What the lessons show: neighbour agreement, retrieval grid rows, weighted two-stream fusion."""
import pytest
import torch

from cmmc_lib.evaluate.examples import (choose_fusion_weight, fusion_sweep, grid_rows, neighbour_agreement,
                                        retrieved_examples, weighted_similarity)
from cmmc_lib.evaluate.fusion import two_stream_retrieval
from cmmc_lib.evaluate.retrieval import hit_rate_from_similarity, retrieval_hit_rate, similarity_matrix


def _clustered(keys, noise=0.01, dim=16, seed=0):
    """One feature per entry of ``keys``: items with equal keys get nearly equal features."""
    g = torch.Generator().manual_seed(seed)
    centres = {k: torch.randn(dim, generator=g) for k in dict.fromkeys(keys)}
    return torch.stack([centres[k] + noise * torch.randn(dim, generator=g) for k in keys])


# 3 classes x 3 groups x 2 clips
LABELS = [c for c in range(3) for _ in range(3) for _ in range(2)]
GROUPS = [f"g{g}" for _ in range(3) for g in range(3) for _ in range(2)]


def test_neighbour_agreement_puts_motion_first_and_tells_appearance_from_motion():
    appearance = _clustered(list(zip(LABELS, GROUPS)))            # siblings look alike
    row = neighbour_agreement(appearance, LABELS, GROUPS)
    assert list(row) == ["same_class_other_group", "same_class", "same_group"]
    assert row == {"same_class_other_group": 0.0, "same_class": 1.0, "same_group": 1.0}
    # motion: the class decides the feature, the group only slightly; siblings are far apart
    motion = _clustered(LABELS, noise=0.0) + 0.3 * _clustered([(g, i) for i, g in enumerate(GROUPS)], noise=0.0, seed=1)
    row = neighbour_agreement(motion, LABELS, GROUPS)
    assert row["same_class"] == 1.0 and row["same_class_other_group"] > 0.5
    with pytest.raises(ValueError):
        neighbour_agreement(appearance, LABELS[:-1], GROUPS)


def test_weighted_similarity_interpolates_between_the_streams():
    g = torch.Generator().manual_seed(0)
    q1, g1, q2, g2 = (torch.randn(n, 8, generator=g) for n in (5, 12, 5, 12))
    assert torch.allclose(weighted_similarity(q1, g1, q2, g2, 1.0), similarity_matrix(q1, g1))
    assert torch.allclose(weighted_similarity(q1, g1, q2, g2, 0.0), similarity_matrix(q2, g2))
    ql, gl = torch.arange(5) % 3, torch.arange(12) % 3
    half = hit_rate_from_similarity(weighted_similarity(q1, g1, q2, g2, 0.5), ql, gl, (1, 3))
    assert half == two_stream_retrieval(q1, g1, q2, g2, ql, gl, (1, 3))        # equal weights = the sum
    with pytest.raises(ValueError):
        weighted_similarity(q1, g1, q2, g2, 1.5)


def test_fusion_sweep_ends_are_the_single_streams():
    g = torch.Generator().manual_seed(1)
    q1, g1, q2, g2 = (torch.randn(n, 8, generator=g) for n in (6, 18, 6, 18))
    ql, gl = torch.arange(6) % 3, torch.arange(18) % 3
    sweep = fusion_sweep(q1, g1, q2, g2, ql, gl, [0.0, 0.5, 1.0], ks=(1, 5))
    assert [row["weight"] for row in sweep] == [0.0, 0.5, 1.0]
    assert {k: sweep[0][k] for k in (1, 5)} == retrieval_hit_rate(q2, ql, g2, gl, (1, 5))
    assert {k: sweep[-1][k] for k in (1, 5)} == retrieval_hit_rate(q1, ql, g1, gl, (1, 5))


def test_fusion_weight_is_chosen_on_other_groups_of_the_training_split():
    # stream 1 sees appearance: the group (shared across classes, as the synthetic nuisances are)
    appearance = _clustered(GROUPS, noise=0.0) + 0.1 * _clustered(list(zip(LABELS, GROUPS)), noise=0.0, seed=3)
    motion = _clustered(LABELS, noise=0.05, seed=2)                   # stream 2: the class
    weights = [0.0, 0.25, 0.5, 0.75, 1.0]
    pick = choose_fusion_weight(appearance, motion, LABELS, GROUPS, weights)
    scores = {s["weight"]: s["R@1"] for s in pick["scores"]}
    assert list(scores) == weights
    assert scores[0.0] == 1.0 and scores[1.0] == 0.0                  # siblings hidden: appearance finds other classes
    assert pick["weight"] < 0.5 and scores[pick["weight"]] == max(scores.values())
    assert choose_fusion_weight(motion, appearance, LABELS, GROUPS, weights)["weight"] > 0.5


class _FakeSplit:
    classes = ["Wave", "Jump"]

    def __init__(self, labels, groups):
        self.labels, self.groups = labels, groups

    def __getitem__(self, i):
        return {"rgb": torch.full((1, 3, 2, 4, 4), float(i))}


def test_grid_rows_name_class_group_and_score():
    q_ds, g_ds = _FakeSplit([0, 1], [1, 1]), _FakeSplit([0, 0, 1], [2, 3, 2])
    sim = torch.tensor([[0.9, 0.2, 0.5], [0.1, 0.3, 0.8]])
    ex = retrieved_examples(sim, q_ds.labels, g_ds.labels, k=2, num_queries=2, seed=0)
    rows = grid_rows(ex, q_ds, g_ds, "rgb")
    first = ex.queries.index(0)
    assert rows.query_titles[first] == "Wave g1"
    assert rows.neighbour_titles[first] == ["Wave g2 cos 0.90", "Jump g2 cos 0.50"]
    assert rows.correct[first] == [True, False]
    assert float(rows.neighbour_clips[first][1].flatten()[0]) == 2.0          # gallery item 2's first window
    assert set(rows.as_kwargs()) == {"query_clips", "neighbour_clips", "correct", "query_titles", "neighbour_titles"}


def test_recall_by_subset_splits_the_queries_but_keeps_the_whole_gallery():
    from cmmc_lib.evaluate.examples import recall_by_subset
    gallery = torch.eye(3)                               # one gallery item per class, classes 0, 1, 2
    g_labels = torch.tensor([0, 1, 2])
    queries = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0], [0, 0, 1.0]])
    q_labels = torch.tensor([0, 1, 1, 2])                # the third query is wrong
    r = recall_by_subset(queries, q_labels, gallery, g_labels, [True, True, False, False], ks=(1,))
    assert r["n_in"] == 2 and r["n_out"] == 2
    assert r["in"][1] == 1.0 and r["out"][1] == 0.5


def test_mined_positives_rank_other_sources_by_the_miners_embedding():
    from cmmc_lib.evaluate.examples import mined_positives

    class Miner(torch.nn.Module):                      # embeds a clip by its mean value: a 1-d "network"
        def forward(self, x):
            v = x.flatten(1).mean(1, keepdim=True)
            return torch.nn.functional.normalize(torch.cat([v, torch.ones_like(v)], 1), dim=1)

    values = [0.0, 0.1, 5.0, 5.1, 0.05]                  # two clusters; video 4 shares video 0's source
    labels = [0, 0, 1, 1, 1]
    sources = [0, 1, 2, 3, 0]
    dataset = [{"flow": torch.full((1, 2, 1, 2, 2), v), "label": l, "source": s}
               for v, l, s in zip(values, labels, sources)]
    r = mined_positives(Miner(), dataset, "flow", k=1, num_queries=5, seed=0)
    best = dict(zip(r.queries, r.mined[:, 0].tolist()))
    assert best[0] == 1 and best[2] == 3 and best[3] == 2    # nearest of another source
    assert best[4] == 1                                      # not video 0: its own source
    assert r.rate == pytest.approx(3 / 5)                    # 0->1, 2->3, 3->2 share the class
    assert 0 < r.chance < 1


def test_a_subset_cell_shows_its_binomial_se_and_never_nan():
    from cmmc_lib.evaluate.examples import subset_cell
    assert subset_cell(0.25, 80) == "0.250 ± 0.048 (n=80)"
    assert subset_cell(float("nan"), 0) == "none at this profile"


def test_a_fusion_weight_at_an_end_is_named_as_one_stream_alone():
    from cmmc_lib.evaluate.examples import fusion_label
    assert fusion_label(0.0) == "flow alone (weight 0 on RGB)" and fusion_label(1.0) == "RGB alone (weight 0 on flow)"
    assert fusion_label(0.3) == "two-stream, weight 0.3 on RGB"
