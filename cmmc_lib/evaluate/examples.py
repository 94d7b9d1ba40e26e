"""Small analyses the lessons show: retrieved examples, and what a representation latches onto."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .retrieval import prepare_features


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
    """Leave-one-out top-1 neighbour inside one set: how often it shares the class, the sibling
    group (same actor / scene / appearance), or the class *without* sharing the group.

    A representation that takes appearance shortcuts finds siblings (same group) first; one that
    encodes motion finds the same class in other groups.
    """
    x = prepare_features(torch.as_tensor(feats, dtype=torch.float32), center=True)
    labels, groups = torch.as_tensor(labels), torch.as_tensor(groups)
    sim = x @ x.T
    sim.fill_diagonal_(-float("inf"))
    nn = sim.argmax(1)
    same_class = labels[nn] == labels
    same_group = (groups[nn] == groups) & (labels[nn] == labels)
    return {"same_class": float(same_class.float().mean()),
            "same_group": float(same_group.float().mean()),
            "same_class_other_group": float((same_class & ~same_group).float().mean())}

