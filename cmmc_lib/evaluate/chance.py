"""Chance levels and uncertainty: what every number the course prints is compared with.

A retrieval R@k or an accuracy means little alone. Two companions go with it:

* **chance**: what a representation that knows nothing would score on *this* split;
* **spread**: how much the number would move if the test set (or the seed) were drawn again.

Chance
------
* :func:`hit_chance` / :func:`recall_at_k_chance`: R@k of a random ranking. For a query of
  class c, with ``m`` of the ``G`` gallery videos in class c, the top k of a random ranking are k
  items drawn without replacement, and the query is a hit unless all k miss:
  ``P(hit) = 1 - C(G - m, k) / C(G, k)``. R@k chance is this averaged over the queries, so it
  follows the class balance of the split (10 balanced classes: R@1 chance 0.10, R@5 about 0.41).
* :func:`accuracy_chance`: a classifier guessing a class uniformly at random is right with
  probability ``1 / K`` whatever the class balance; :func:`majority_rate` is the best constant
  guess (equal to ``1 / K`` on balanced splits).
* :func:`neighbour_chance`: what a random nearest neighbour shares with its query (class,
  sibling group, class in another group), the chance row of lesson 02's appearance-vs-motion
  table.

Spread
------
* :func:`binomial_se`: the standard error ``sqrt(p (1 - p) / n)`` of a rate measured on ``n``
  independent test items (the test set is a sample; another sample gives another rate).
* :func:`poisson_binomial_tail` / :class:`Measured.p_value`: the exact one-sided probability of
  scoring at least as many hits as observed if the representation were at chance (each query
  with its own hit probability, so unbalanced splits are handled exactly).

Over training seeds (reruns), a number's mean and spread, and the paired differences between two
methods, are :mod:`cmmc_lib.tables`'s (:func:`~cmmc_lib.tables.summarize`): the sample std over
several seeds, this module's :func:`binomial_se` for one.

Everything is exact and plain Python / torch (no scipy); ``tests/test_evaluate_chance.py``
checks it against brute-force enumeration.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["hit_chance", "recall_at_k_chance", "query_hit_chances", "accuracy_chance", "majority_rate",
           "binomial_se", "poisson_binomial_tail", "Measured",
           "measure_rate", "measure_accuracy", "measure_recall", "neighbour_chance"]


def _labels(labels) -> list[int]:
    return [int(x) for x in torch.as_tensor(labels).flatten().tolist()]


# ----------------------------------------------------------------------------- chance levels
def hit_chance(num_relevant: int, gallery_size: int, k: int) -> float:
    """P(at least one relevant item among k drawn without replacement from ``gallery_size``
    items of which ``num_relevant`` are relevant) = ``1 - C(G - m, k) / C(G, k)``.

    Computed as ``1 - prod_{i<k} (G - m - i) / (G - i)`` (no huge binomials).

    >>> round(hit_chance(1, 10, 1), 12), hit_chance(1, 10, 10), hit_chance(0, 10, 5)
    (0.1, 1.0, 0.0)
    """
    m, g, k = int(num_relevant), int(gallery_size), int(k)
    if g < 1 or not 0 <= m <= g:
        raise ValueError(f"need 0 <= num_relevant <= gallery_size and gallery_size >= 1, got {m}, {g}")
    if not 1 <= k <= g:
        raise ValueError(f"k must lie in [1, {g}], got {k}")
    if g - m < k:
        return 1.0
    miss = 1.0
    for i in range(k):
        miss *= (g - m - i) / (g - i)
    return 1.0 - miss


def query_hit_chances(query_labels, gallery_labels, k: int) -> list[float]:
    """Each query's probability of a hit at ``k`` under a random ranking (:func:`hit_chance`)."""
    gallery = Counter(_labels(gallery_labels))
    size = sum(gallery.values())
    cache: dict[int, float] = {}
    out = []
    for label in _labels(query_labels):
        if label not in cache:
            cache[label] = hit_chance(gallery.get(label, 0), size, k)
        out.append(cache[label])
    return out


def recall_at_k_chance(query_labels, gallery_labels, ks: Iterable[int] = (1, 5, 10, 20)) -> dict[int, float]:
    """R@k of a random ranking for this split's class balance: ``{k: chance}``.

    The mean over queries of :func:`hit_chance` (the count of the query's class in the gallery,
    the gallery size, k). Compare with :func:`~cmmc_lib.evaluate.retrieval_hit_rate`.
    """
    queries = _labels(query_labels)
    if not queries:
        raise ValueError("no queries")
    return {int(k): sum(query_hit_chances(queries, gallery_labels, k)) / len(queries) for k in ks}


def accuracy_chance(num_classes: int) -> float:
    """Expected accuracy of guessing one of ``num_classes`` uniformly at random: ``1 / K``
    (whatever the class balance of the test set)."""
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return 1.0 / int(num_classes)


def majority_rate(labels) -> float:
    """Accuracy of always answering the most frequent class of ``labels`` (the best constant guess)."""
    values = _labels(labels)
    if not values:
        raise ValueError("no labels")
    return max(Counter(values).values()) / len(values)


def neighbour_chance(labels, groups) -> dict[str, float]:
    """What a *random* leave-one-out neighbour shares with its item, averaged over the items:
    ``same_class_other_group`` (same class, another sibling group: motion), ``same_class``,
    ``same_group`` (same sibling group: appearance). The chance row of
    :func:`~cmmc_lib.evaluate.examples.neighbour_agreement` (same keys)."""
    labels, groups = _labels(labels), list(groups)
    n = len(labels)
    if n < 2 or len(groups) != n:
        raise ValueError(f"need >= 2 items with one group each, got {n} labels and {len(groups)} groups")
    per_class = Counter(labels)
    per_pair = Counter(zip(labels, groups))
    sums = {"same_class_other_group": 0.0, "same_class": 0.0, "same_group": 0.0}
    for label, group in zip(labels, groups):
        same_class = per_class[label] - 1
        same_group = per_pair[(label, group)] - 1          # siblings share the class too
        sums["same_class"] += same_class / (n - 1)
        sums["same_group"] += same_group / (n - 1)
        sums["same_class_other_group"] += (same_class - same_group) / (n - 1)
    return {key: value / n for key, value in sums.items()}


# ----------------------------------------------------------------------------- spread
def binomial_se(p: float, n: int) -> float:
    """Standard error ``sqrt(p (1 - p) / n)`` of a rate ``p`` measured on ``n`` independent items.

    >>> binomial_se(0.5, 100)
    0.05
    """
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must lie in [0, 1], got {p}")
    return math.sqrt(p * (1.0 - p) / int(n))


def below_chance_note(value: float, n: int, chance: float) -> str:
    """Empty when ``value`` is not below ``chance``; else how likely a representation at chance is
    to score this low on ``n`` items (the lower binomial tail): a small test set makes low scores
    common ("0.000 on 18 items happens at chance with p = 0.037")."""
    hits = int(round(value * n))
    if value >= chance:
        return ""
    tail = math.fsum(math.comb(n, j) * chance ** j * (1 - chance) ** (n - j) for j in range(hits + 1))
    return (f"below chance: {hits} of {n} right; at chance a score this low happens with p = {tail:.2g}"
            + (", so this is noise of a small test set" if tail >= 0.01 else ", so it is systematically wrong"))


def poisson_binomial_tail(probs: Sequence[float], hits: int) -> float:
    """P(X >= hits) for X = sum of independent Bernoulli(p_i): exact, by dynamic programming
    over the items (O(n^2)). With equal p_i it is the binomial tail."""
    probs = [float(p) for p in probs]
    if any(not 0.0 <= p <= 1.0 for p in probs):
        raise ValueError("probabilities must lie in [0, 1]")
    hits = int(hits)
    if hits <= 0:
        return 1.0
    if hits > len(probs):
        return 0.0
    dist = [1.0]                                     # dist[j] = P(j successes so far)
    for p in probs:
        nxt = [0.0] * (len(dist) + 1)
        for j, q in enumerate(dist):
            nxt[j] += q * (1.0 - p)
            nxt[j + 1] += q * p
        dist = nxt
    return min(1.0, max(0.0, math.fsum(dist[hits:])))


# ----------------------------------------------------------------------------- a number with its context
@dataclass
class Measured:
    """A rate measured on ``n`` test items, with its chance level and spread.

    ``value``: the rate; ``chance``: what a random representation scores on the same split;
    ``null_probs``: each test item's hit probability at chance (default: ``chance`` for all),
    for the exact p-value. ``se`` is the binomial standard error of ``value``.
    """
    value: float
    n: int
    chance: float
    null_probs: list[float] | None = field(default=None, repr=False)

    @property
    def se(self) -> float:
        return binomial_se(min(max(self.value, 0.0), 1.0), self.n)

    @property
    def hits(self) -> int:
        return int(round(self.value * self.n))

    @property
    def p_value(self) -> float:
        """One-sided exact P(at least this many hits | the representation is at chance)."""
        probs = self.null_probs if self.null_probs is not None else [self.chance] * self.n
        return poisson_binomial_tail(probs, self.hits)

    def above_chance(self, level: float = 0.05) -> bool:
        """True when ``p_value < level``: this many hits would be unlikely at chance."""
        return self.p_value < level

    def verdict(self, level: float = 0.05) -> str:
        return (f"above chance (p = {self.p_value:.2g})" if self.above_chance(level)
                else f"not distinguishable from chance (p = {self.p_value:.2g})")

    def __str__(self) -> str:
        return f"{self.value:.3f} ± {self.se:.3f} (chance {self.chance:.3f}, n={self.n})"

    def compared_with(self, other: "Measured", name: str, z: float = 2.0) -> str:
        """This rate against ``other`` (another network on the same test items) in words that
        follow from the difference and its standard error sqrt(se^2 + se_other^2): "above / below
        <name> by d ± se", or "within the noise of <name> (d ± se)" when |d| < ``z`` se."""
        d = self.value - other.value
        se = (self.se ** 2 + other.se ** 2) ** 0.5
        if abs(d) < z * se or se == 0 and d == 0:
            return f"within the noise of {name} ({d:+.3f} ± {se:.3f})"
        return f"{'above' if d > 0 else 'below'} {name} by {abs(d):.3f} ± {se:.3f}"

    def to_dict(self) -> dict:
        return {"value": self.value, "se": self.se, "chance": self.chance, "n": self.n,
                "p_value": self.p_value}


def measure_rate(value: float, n: int, chance: float, null_probs: Sequence[float] | None = None) -> Measured:
    """A :class:`Measured` rate (checks ``n`` and the ranges)."""
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 <= float(chance) <= 1.0:
        raise ValueError(f"chance must lie in [0, 1], got {chance}")
    if null_probs is not None and len(null_probs) != int(n):
        raise ValueError(f"null_probs has {len(null_probs)} entries for n={n}")
    return Measured(float(value), int(n), float(chance), None if null_probs is None else list(null_probs))


def measure_accuracy(value: float, num_test: int, num_classes: int) -> Measured:
    """A top-1 accuracy on ``num_test`` items against uniform guessing over ``num_classes``."""
    return measure_rate(value, num_test, accuracy_chance(num_classes))


def measure_recall(rk: dict, query_labels, gallery_labels) -> dict[int, Measured]:
    """R@k values ``{k: value}`` (keys int or ``"R@k"``/str) as :class:`Measured`, each with the
    random-ranking chance of this split and the per-query null probabilities."""
    out = {}
    queries = _labels(query_labels)
    for key, value in rk.items():
        k = int(str(key).replace("R@", ""))
        probs = query_hit_chances(queries, gallery_labels, k)
        out[k] = measure_rate(value, len(queries), sum(probs) / len(probs), probs)
    return out
