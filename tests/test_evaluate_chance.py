"""Chance levels and spreads, checked against brute-force enumeration and known values."""
import itertools
import math
import random
from fractions import Fraction

import pytest
import torch

from cmmc_lib.evaluate import chance
from cmmc_lib.evaluate.examples import neighbour_agreement
from cmmc_lib.evaluate.retrieval import hit_rate_from_similarity


def brute_hit_chance(num_relevant, gallery_size, k):
    """Exact P(some relevant item in a random k-subset), by listing every k-subset."""
    items = [1] * num_relevant + [0] * (gallery_size - num_relevant)
    subsets = list(itertools.combinations(range(gallery_size), k))
    return Fraction(sum(any(items[i] for i in s) for s in subsets), len(subsets))


@pytest.mark.parametrize("m,g,k", [(1, 6, 1), (2, 7, 3), (3, 8, 4), (0, 5, 2), (5, 6, 2), (4, 9, 9), (2, 9, 8)])
def test_hit_chance_matches_enumerating_every_subset(m, g, k):
    assert chance.hit_chance(m, g, k) == pytest.approx(float(brute_hit_chance(m, g, k)), abs=1e-12)


def test_hit_chance_refuses_impossible_sizes():
    for bad in [(3, 2, 1), (-1, 5, 1), (1, 5, 0), (1, 5, 6), (0, 0, 1)]:
        with pytest.raises(ValueError):
            chance.hit_chance(*bad)


def test_recall_chance_is_the_mean_over_every_ranking_of_a_small_split():
    """R@k chance = R@k averaged over all G! rankings of the gallery (every ranking equally likely)."""
    gallery = [0, 0, 1, 2, 2, 2]
    queries = [0, 1, 2, 2, 3]                      # class 3 is absent from the gallery: never a hit
    ks = (1, 2, 3, 5)
    totals = {k: Fraction(0) for k in ks}
    perms = list(itertools.permutations(range(len(gallery))))
    for order in perms:
        for k in ks:
            top = {gallery[j] for j in order[:k]}
            totals[k] += Fraction(sum(q in top for q in queries), len(queries))
    expected = {k: float(v / len(perms)) for k, v in totals.items()}
    got = chance.recall_at_k_chance(torch.tensor(queries), gallery, ks)
    assert got == pytest.approx(expected, abs=1e-12)


def test_recall_chance_agrees_with_retrieval_under_random_similarities():
    """The protocol's own R@k on random similarity matrices averages to the chance level."""
    g = torch.Generator().manual_seed(0)
    gallery = torch.arange(10).repeat(5)            # 10 classes x 5
    queries = torch.arange(10).repeat(2)
    expected = chance.recall_at_k_chance(queries, gallery, (1, 5))
    runs = [hit_rate_from_similarity(torch.rand(len(queries), len(gallery), generator=g), queries, gallery, (1, 5))
            for _ in range(400)]
    for k in (1, 5):
        mean = sum(r[k] for r in runs) / len(runs)
        assert mean == pytest.approx(expected[k], abs=0.01)
    assert expected[1] == pytest.approx(0.1)
    assert expected[5] == pytest.approx(1 - math.comb(45, 5) / math.comb(50, 5))


def test_accuracy_chance_and_majority():
    assert chance.accuracy_chance(6) == pytest.approx(1 / 6)
    assert chance.majority_rate([0, 0, 0, 1]) == 0.75
    assert chance.majority_rate(torch.arange(5)) == 0.2
    with pytest.raises(ValueError):
        chance.accuracy_chance(0)


def test_binomial_se_known_values():
    assert chance.binomial_se(0.5, 100) == pytest.approx(0.05)
    assert chance.binomial_se(0.1, 80) == pytest.approx(math.sqrt(0.09 / 80))
    assert chance.binomial_se(0.0, 10) == 0.0
    with pytest.raises(ValueError):
        chance.binomial_se(0.5, 0)


def test_poisson_binomial_tail_matches_enumerating_every_outcome():
    rng = random.Random(1)
    probs = [rng.random() for _ in range(9)]
    for hits in range(11):
        brute = 0.0
        for outcome in itertools.product((0, 1), repeat=len(probs)):
            if sum(outcome) >= hits:
                brute += math.prod(p if o else 1 - p for p, o in zip(probs, outcome))
        assert chance.poisson_binomial_tail(probs, hits) == pytest.approx(brute, abs=1e-12)


def test_poisson_binomial_tail_with_equal_probabilities_is_the_binomial_tail():
    n, p = 80, 0.1
    for hits in (0, 8, 10, 15, 30):
        binom = sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(hits, n + 1))
        assert chance.poisson_binomial_tail([p] * n, hits) == pytest.approx(binom, rel=1e-9)


def test_measured_reports_chance_spread_and_p_value():
    """The case of issue 9: RGB MoCo 0.125 on 80 queries against chance 0.10 is not evidence of learning."""
    rgb = chance.measure_rate(0.125, 80, 0.10)
    assert rgb.hits == 10 and rgb.se == pytest.approx(math.sqrt(0.125 * 0.875 / 80))
    assert not rgb.above_chance() and rgb.p_value > 0.2
    assert "0.125 ± 0.037 (chance 0.100, n=80)" == str(rgb)
    flow = chance.measure_rate(0.575, 80, 0.10)
    assert flow.above_chance() and flow.p_value < 1e-10
    assert "not distinguishable" in rgb.verdict() and "above chance" in flow.verdict()


def test_measure_recall_uses_the_split_class_balance():
    gallery = [0] * 8 + [1] * 2
    queries = [0, 1]
    m = chance.measure_recall({"R@1": 0.5, "R@5": 1.0}, queries, gallery)
    assert m[1].chance == pytest.approx((0.8 + 0.2) / 2)
    assert m[5].null_probs == pytest.approx([1.0, 1 - math.comb(8, 5) / math.comb(10, 5)])


def test_neighbour_chance_matches_a_uniformly_random_neighbour():
    labels = [0, 0, 0, 1, 1, 2]
    groups = ["a", "a", "b", "a", "c", "c"]
    n = len(labels)
    expected = {"same_class_other_group": 0.0, "same_class": 0.0, "same_group": 0.0}
    for i in range(n):
        others = [j for j in range(n) if j != i]
        expected["same_class"] += sum(labels[j] == labels[i] for j in others) / (n - 1) / n
        expected["same_group"] += sum(labels[j] == labels[i] and groups[j] == groups[i] for j in others) / (n - 1) / n
        expected["same_class_other_group"] += sum(labels[j] == labels[i] and groups[j] != groups[i]
                                                  for j in others) / (n - 1) / n
    assert chance.neighbour_chance(labels, groups) == pytest.approx(expected)
    assert set(chance.neighbour_chance(labels, groups)) == set(neighbour_agreement(torch.randn(6, 4), labels, groups))


def test_a_comparison_in_words_follows_from_the_difference_and_its_standard_error():
    from cmmc_lib.evaluate.chance import measure_rate
    a, b = measure_rate(0.831, 160, 0.1), measure_rate(0.656, 160, 0.1)
    assert a.compared_with(b, "the untrained network") == "above the untrained network by 0.175 ± 0.048"
    assert b.compared_with(a, "MoCo").startswith("below MoCo by 0.175")
    near = measure_rate(0.431, 160, 0.1).compared_with(measure_rate(0.419, 160, 0.1), "the untrained network")
    assert near == "within the noise of the untrained network (+0.012 ± 0.055)"


def test_a_score_below_chance_is_explained_by_its_lower_tail():
    from cmmc_lib.evaluate.chance import below_chance_note
    assert below_chance_note(0.2, 18, 1 / 6) == ""
    note = below_chance_note(0.0, 18, 1 / 6)
    assert note.startswith("below chance: 0 of 18 right; at chance a score this low happens with p = 0.038")
    assert note.endswith("noise of a small test set")
    assert below_chance_note(0.0, 160, 0.1).endswith("systematically wrong")
