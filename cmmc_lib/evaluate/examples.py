"""Small analyses the lessons show: retrieved examples (and the rows of a retrieval grid), what a
representation latches onto (neighbour agreement), and weighted two-stream fusion (a sweep over the
weight, and a weight chosen on the training split only)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from .common import collate_list, item_clips
from .features import split_features
from .retrieval import hit_rate_from_similarity, prepare_features, retrieval_hit_rate, similarity_matrix


@dataclass
class RetrievedExamples:
    """``queries``: dataset indices of the queries; ``neighbours`` (Q, k) gallery indices;
    ``correct`` (Q, k) bool, same class as the query; ``scores`` (Q, k) cosine similarities."""
    queries: list[int]
    neighbours: Tensor
    correct: Tensor
    scores: Tensor


def retrieved_examples(similarity: Tensor, query_labels, gallery_labels, k: int = 4, num_queries: int = 4,
                       seed: int = 0) -> RetrievedExamples:
    """Top-``k`` gallery items of ``num_queries`` queries drawn with ``seed`` (distinct classes first).

    ``similarity`` (Q, G) comes from :func:`~cmmc_lib.evaluate.retrieval.similarity_matrix` (one
    stream) or :func:`~cmmc_lib.evaluate.fusion.two_stream_similarity` (two streams); ties go to
    the lower gallery index, as in R@k.
    """
    query_labels, gallery_labels = torch.as_tensor(query_labels), torch.as_tensor(gallery_labels)
    if similarity.shape != (len(query_labels), len(gallery_labels)):
        raise ValueError(f"similarity is {tuple(similarity.shape)}, expected ({len(query_labels)}, {len(gallery_labels)})")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(query_labels), generator=g).tolist()
    picked, seen = [], set()
    for i in order:
        if int(query_labels[i]) not in seen:
            picked.append(i)
            seen.add(int(query_labels[i]))
        if len(picked) == num_queries:
            break
    picked += [i for i in order if i not in picked][: num_queries - len(picked)]
    scores, idx = torch.sort(similarity[picked], dim=1, descending=True, stable=True)
    scores, idx = scores[:, :k], idx[:, :k]
    correct = gallery_labels[idx] == query_labels[picked][:, None]
    return RetrievedExamples(picked, idx, correct, scores)


def neighbour_agreement(feats: Tensor, labels, groups) -> dict[str, float]:
    """Leave-one-out top-1 neighbour inside one set: how often it shares the class *without*
    sharing the sibling group (``same_class_other_group``, the number that matters), the class
    (``same_class``), or the sibling group (``same_group``: same class and same actor / scene /
    appearance). Keys in that order; :func:`~cmmc_lib.evaluate.chance.neighbour_chance` gives the
    same numbers for a random neighbour.

    A representation that takes appearance shortcuts finds siblings (same group) first; one that
    encodes motion finds the same class in other groups. ``groups`` may hold any hashable ids.
    """
    x = prepare_features(torch.as_tensor(feats, dtype=torch.float32), center=True)
    labels = torch.as_tensor(labels)
    ids = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    groups = torch.tensor([ids[g] for g in groups])
    if not len(labels) == len(groups) == x.shape[0]:
        raise ValueError(f"{x.shape[0]} features, {len(labels)} labels and {len(groups)} groups differ in number")
    sim = x @ x.T
    sim.fill_diagonal_(-float("inf"))
    nn = sim.argmax(1)
    same_class = labels[nn] == labels
    same_group = (groups[nn] == groups) & same_class
    return {"same_class_other_group": float((same_class & ~same_group).float().mean()),
            "same_class": float(same_class.float().mean()),
            "same_group": float(same_group.float().mean())}


@dataclass
class GridRows:
    """What :func:`cmmc_lib.viz.retrieval_grid` draws: clips and titles of queries and neighbours."""
    query_clips: list
    neighbour_clips: list[list]
    correct: list[list[bool]]
    query_titles: list[str]
    neighbour_titles: list[list[str]]

    def as_kwargs(self) -> dict:
        return {"query_clips": self.query_clips, "neighbour_clips": self.neighbour_clips, "correct": self.correct,
                "query_titles": self.query_titles, "neighbour_titles": self.neighbour_titles}


def grid_rows(examples: RetrievedExamples, query_ds, gallery_ds, modality: str = "rgb") -> GridRows:
    """The clips (first window of ``modality``) and titles of retrieved examples: a query's title
    is its class and sibling group, a neighbour's its class, group and cosine similarity."""
    def name(ds, i):
        return f"{ds.classes[ds.labels[i]]} g{ds.groups[i]}" if isinstance(ds.groups[i], int) \
            else f"{ds.classes[ds.labels[i]]} {ds.groups[i]}"

    rows = examples.neighbours.tolist()
    scores = examples.scores.tolist()
    return GridRows(
        query_clips=[query_ds[i][modality][0] for i in examples.queries],
        neighbour_clips=[[gallery_ds[j][modality][0] for j in row] for row in rows],
        correct=examples.correct.tolist(),
        query_titles=[name(query_ds, i) for i in examples.queries],
        neighbour_titles=[[f"{name(gallery_ds, j)} cos {s:.2f}" for j, s in zip(row, srow)]
                          for row, srow in zip(rows, scores)])


# ----------------------------------------------------------------------------- weighted fusion
def weighted_similarity(q1, g1, q2, g2, weight: float, center: bool = True) -> Tensor:
    """``weight * s1 + (1 - weight) * s2``: the two streams' cosine similarities (each set
    centred by its own mean, L2-normalised) mixed with weight ``weight`` on stream 1.
    ``weight = 0.5`` ranks exactly as the equal-weight sum of :func:`~cmmc_lib.evaluate.fusion.two_stream_similarity`."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must lie in [0, 1], got {weight}")
    return weight * similarity_matrix(q1, g1, center) + (1.0 - weight) * similarity_matrix(q2, g2, center)


def fusion_sweep(q1, g1, q2, g2, query_labels, gallery_labels, weights, ks=(1,)) -> list[dict]:
    """R@k of :func:`weighted_similarity` for each weight: ``[{"weight": w, k: R@k, ...}]``."""
    out = []
    for w in weights:
        rates = hit_rate_from_similarity(weighted_similarity(q1, g1, q2, g2, float(w)), query_labels, gallery_labels, ks)
        out.append({"weight": float(w), **rates})
    return out


def choose_fusion_weight(g1, g2, labels, groups, weights, k: int = 1) -> dict:
    """Pick the fusion weight without looking at the test set: leave-one-group-out retrieval
    inside the *training* split. Each training video queries the other training videos of
    **other** sibling groups (as test queries meet a gallery of other groups), and the weight
    with the best R@k wins (ties: the one closest to 0.5).

    Returns ``{"weight": w, "scores": [{"weight": w, "R@k": value}, ...]}``.
    """
    labels = torch.as_tensor(labels)
    ids = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    grp = torch.tensor([ids[g] for g in groups])
    same = (grp[:, None] == grp[None, :]) & (labels[:, None] == labels[None, :])
    s1, s2 = similarity_matrix(g1, g1), similarity_matrix(g2, g2)
    scores = []
    for w in weights:
        sim = w * s1 + (1.0 - w) * s2
        sim = sim.masked_fill(same, -float("inf"))          # siblings (and the video itself) are hidden
        top = torch.sort(sim, dim=1, descending=True, stable=True).indices[:, :k]
        hit = (labels[top] == labels[:, None]).any(dim=1).float().mean()
        scores.append({"weight": float(w), f"R@{k}": float(hit)})
    best = max(scores, key=lambda r: (r[f"R@{k}"], -abs(r["weight"] - 0.5)))
    return {"weight": best["weight"], "scores": scores}


def union_features(backbone, data_cfg, modality: str, subsets=("train", "test"), device="cpu"):
    """Features (one window per video) of several splits stacked: ``(feats (N, D), labels (N,),
    groups list)`` for analyses over every video, such as :func:`neighbour_agreement` (the test
    split alone may hold a single sibling group per class)."""

    feats, labels, groups = [], [], []
    for subset in subsets:
        ds, f = split_features(backbone, data_cfg, modality, subset, eval_windows=1, device=device)
        feats.append(f.feats)
        labels.append(f.labels)
        groups += [(subset, g) for g in ds.groups]
    return torch.cat(feats), torch.cat(labels), groups


def recall_by_subset(query_feats, query_labels, gallery_feats, gallery_labels, mask, ks=(1,)) -> dict:
    """R@k of the queries where ``mask`` is True and of the others, against the whole gallery:
    ``{"in": {k: rate}, "out": {k: rate}, "n_in": int, "n_out": int}`` (e.g. the synthetic
    videos filmed in their class's scene, where RGB can tell the class by the scene, against
    those where only the motion tells it: :func:`cmmc_lib.data.synthetic.in_context`)."""
    mask = torch.as_tensor(list(mask), dtype=torch.bool)
    labels = torch.as_tensor(query_labels)
    if mask.shape[0] != labels.shape[0]:
        raise ValueError(f"mask has {mask.shape[0]} entries for {labels.shape[0]} queries")
    q = torch.as_tensor(query_feats, dtype=torch.float32)
    g = torch.as_tensor(gallery_feats, dtype=torch.float32)
    q, g = q - q.mean(0), g - g.mean(0)          # centred as the whole protocol centres them
    out = {"n_in": int(mask.sum()), "n_out": int((~mask).sum())}
    for name, part in (("in", mask), ("out", ~mask)):
        out[name] = (retrieval_hit_rate(q[part], labels[part], g, gallery_labels, ks, center=False)
                     if part.any() else {k: float("nan") for k in ks})
    return out


def fusion_label(weight: float, first: str = "RGB", second: str = "flow") -> str:
    """What :func:`weighted_similarity` at ``weight`` (on the first stream) ranks by, in words: at
    0 or 1 one stream alone, not a two-stream result."""
    if weight <= 0.0:
        return f"{second} alone (weight 0 on {first})"
    if weight >= 1.0:
        return f"{first} alone (weight 0 on {second})"
    return f"two-stream, weight {weight:.1f} on {first}"


def subset_cell(rate: float, n: int) -> str:
    """One subset's R@k for a table: ``rate ± binomial SE (n=...)``, or a sentence when the split
    has no such queries (the tiny profile has no scene groups), never ``nan``."""
    if n == 0:
        return "none at this profile"
    return f"{rate:.3f} ± {(rate * (1 - rate) / n) ** 0.5:.3f} (n={n})"


@dataclass
class MinedPositives:
    """What CoCLR's miner picks for some queries: ``queries`` (dataset indices), ``mined``
    (Q, K) indices of the other videos it ranks closest, ``same_class`` (Q, K) bool, and the
    rates: ``rate`` (share of mined entries of the query's class over *all* queries) against
    ``chance`` (the share of same-class videos among each query's candidates, averaged)."""
    queries: list[int]
    mined: Tensor
    same_class: Tensor
    rate: float
    chance: float


@torch.no_grad()
def mined_positives(encoder, dataset, modality: str, k: int = 5, num_queries: int = 4, seed: int = 0,
                    batch_size: int = 8, device: str = "cpu") -> MinedPositives:
    """CoCLR's mining over a whole dataset: every video embedded by ``encoder`` (the frozen other
    network: backbone and projection head, L2-normalised), and for each video the ``k`` most
    similar videos of *other* sources (same-source clips are positives anyway). Returns the picks
    of ``num_queries`` queries drawn with ``seed`` and the rates over every query."""


    encoder = encoder.eval().to(device)
    embeddings, labels, sources = [], [], []
    for items in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_list):
        clips = torch.stack([item_clips(item, modality)[0] for item in items])
        embeddings.append(encoder(clips.to(device)).float().cpu())
        labels += [int(item["label"]) for item in items]
        sources += [int(item["source"]) for item in items]
    z = torch.cat(embeddings)
    labels_t, sources_t = torch.tensor(labels), torch.tensor(sources)
    candidate = sources_t[None, :] != sources_t[:, None]             # other sources only
    sim = (z @ z.T).masked_fill(~candidate, float("-inf"))
    top = sim.topk(min(k, len(z) - 1), dim=1).indices
    same = labels_t[top] == labels_t[:, None]
    chance = float(((labels_t[None, :] == labels_t[:, None]) & candidate).sum(1).float().div(
        candidate.sum(1).clamp(min=1)).mean())
    order = torch.randperm(len(z), generator=torch.Generator().manual_seed(seed))[:num_queries].tolist()
    return MinedPositives(order, top[order], same[order], float(same.float().mean()), chance)
