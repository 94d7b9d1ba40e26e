"""CoCLR (Han, Xie and Zisserman, NeurIPS 2020) and CoCLR + CMMC (docs/method.md, sections 3-4).

CoCLR trains one modality with positives *mined by the other*: beside the queue of keys it keeps
aligned queues of the frozen other network's embedding of each key clip and of the key's source
video. For query i (its key clip's other-modality embedding ``kf_i``):

    P_i = {own key} U {queue entries of the same source video}
              U top-K over the rest of the queue of  kf_i . queue_other_j

    loss_i = -log( sum_{j in P'_i} exp z_ij / sum_j exp z_ij )      z = q . [own key ; queue] / tau

where, with probability ``self_mask`` per step (CoCLR's code since 2021: 0.9), P'_i drops the own
key from P_i when P_i holds something else (the own key always stays in the denominator). Until
the queue is full nothing is mined and nothing is learnt: the step runs forward and fills the
queue, and the loop skips the backward pass and the optimiser step (:attr:`CoCLRMethod.learning`),
as CoCLR does at the start of every cycle. With ``ssl.contrast=batch`` the logits hold every key
of the batch instead, and same-source keys of the batch are positives too.

CoCLR + CMMC mixes the query as CMMC does (a tesseract of the frozen other network's block-l map
of video perm[i] pasted into the query's block-k map), adds the partner's key as a column, and
spreads the target over both positive sets, as CoCLR spreads it over one:

    loss_i = lam * -log sum_{P'_i} softmax(z_i) + (1 - lam) * -log sum_{P'_perm[i]} softmax(z_i)
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models.heads import Encoder
from .distributed import concat_all_gather
from .losses import Contrast, contrast_stats
from .methods import CrossModalMixer, MoCoMethod, query_and_key_views
from .moco import MoCo
from .queue import ring_write


def mine_positives(kf: Tensor, queue_other: Tensor, queue_source: Tensor, source: Tensor, topk: int,
                   mine: bool = True) -> Tensor:
    """CoCLR's positive mask over the queue, (B, Q) bool.

    Args:
        kf: (B, D) L2-normalised embeddings of the key clips by the frozen other network.
        queue_other: (Q, D) the same network's embeddings of the queued keys' clips.
        queue_source: (Q,) source video of each queued key (-1: an empty slot).
        source: (B,) source video of each query.
        topk: K, the most similar entries (by ``kf . queue_other``) taken as positives, among
            the entries of *other* sources.
        mine: False until the queue is full: then only same-source entries are positives.
    """
    same = queue_source[None, :] == source[:, None]                   # sibling clips: positives
    if not mine or topk <= 0 or queue_other.shape[0] == 0:
        return same
    sim = kf.float() @ queue_other.float().T
    sim = sim.masked_fill(same, float("-inf"))
    k = min(topk, queue_other.shape[0])
    top = sim.topk(k, dim=1).indices
    mined = torch.zeros_like(same).scatter_(1, top, True)
    return same | (mined & torch.isfinite(sim))


def multi_positive_nce(logits: Tensor, positives: Tensor, lam: float | Tensor = 1.0,
                       partner_positives: Tensor | None = None) -> Tensor:
    """Mean over rows of ``-log sum_{positives} softmax(logits)`` (CoCLR's multi-instance InfoNCE),
    with mixing: ``lam`` times that for ``positives`` plus ``1 - lam`` times it for
    ``partner_positives`` (each (B, N) bool; every row needs at least one positive)."""
    if logits.shape != positives.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and positives {tuple(positives.shape)} differ in shape")
    log_p = torch.log_softmax(logits.float(), dim=1)

    def term(mask: Tensor) -> Tensor:
        if not bool(mask.any(dim=1).all()):
            raise ValueError("every row needs at least one positive")
        return -torch.logsumexp(log_p.masked_fill(~mask, float("-inf")), dim=1)

    loss = term(positives)
    if partner_positives is not None:
        lam_t = torch.as_tensor(lam, dtype=loss.dtype, device=loss.device)
        loss = lam_t * loss + (1 - lam_t) * term(partner_positives)
    return loss.mean()


class CoCLRMethod(MoCoMethod):
    """CoCLR for ``modality``, its positives mined by the frozen ``miner`` (the other modality's
    encoder, backbone and projection head); with a ``mixer``, CoCLR + CMMC (the mixer pastes the
    miner's block-l features, :class:`~cmmc_lib.ssl.methods.CrossModalMixer`).

    Buffers beside MoCo's queue, written at the same rows (:func:`~cmmc_lib.ssl.queue.ring_write`):
    ``queue_other`` (Q, D), the miner's embeddings of the queued keys' clips, ``queue_source``
    (Q,) their source videos (-1 while empty), ``queue_label`` (Q,) their labels (for monitoring
    only) and ``queue_filled``, the number of entries written so far (capped at Q).
    """

    def __init__(self, moco: MoCo, modality: str, other: str, miner: Encoder, topk: int = 5,
                 self_mask: float = 0.9, mixer: CrossModalMixer | None = None):
        super().__init__(moco, modality)
        if not 0 <= self_mask <= 1 or topk < 0:
            raise ValueError(f"need 0 <= self_mask <= 1 and topk >= 0, got {self_mask} and {topk}")
        self.other, self.miner, self.topk, self.self_mask, self.mixer = other, miner, topk, self_mask, mixer
        for p in self.miner.parameters():
            p.requires_grad_(False)
        self.miner.eval()
        q_len = moco.queue.shape[0]
        self.register_buffer("queue_other", torch.zeros(q_len, miner.dim))
        self.register_buffer("queue_source", torch.full((q_len,), -1, dtype=torch.long))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_label", torch.full((q_len,), -1, dtype=torch.long))   # monitoring only

    def train(self, mode: bool = True):
        super().train(mode)
        self.miner.eval()                          # frozen, BatchNorm included
        return self

    @torch.no_grad()
    def mining_embedding(self, x_other: Tensor) -> Tensor:
        """The miner's L2-normalised embedding (B, D) of clips in the other modality."""
        return self.miner(x_other)

    def query(self, batch, x, generator):
        if self.mixer is None:
            return self.moco.encoder_q(x), 1.0, None
        return self.mixer(self.moco.encoder_q, x, batch[self.other][:, 0], generator)

    @property
    def learning(self) -> bool:
        """CoCLR trains only once its queue is full: before, each step runs forward (the momentum
        update, BatchNorm statistics, the queue filling up) and computes the loss, but the loop
        neither back-propagates nor steps the optimiser (CoCLR's warm-up, again in every cycle)."""
        return not self.training or int(self.queue_filled) >= self.queue_other.shape[0]

    def loss(self, batch: dict, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """Scalar loss and stats (``loss``, ``lam``, ``acc``, ``pos_sim``, ``neg_sim``, and
        ``positives``: the mean size of the positive sets)."""
        for key in (self.other, "source"):
            if key not in batch:
                raise ValueError(f"CoCLR needs batch[{key!r}] (the other modality and each clip's source video)")
        x_q, x_k = query_and_key_views(batch, self.modality)
        source = torch.as_tensor(batch["source"], device=x_q.device).long()
        full = int(self.queue_filled) >= self.queue_other.shape[0]
        q, lam, perm = self.query(batch, x_q, generator)
        if self.training:
            self.moco.momentum_update()
        k = self.moco.keys(x_k)
        kf = self.mining_embedding(batch[self.other][:, 1])           # the key clip's other modality
        c = self.moco.contrast(q, k, perm)
        source_all = concat_all_gather(source)
        queue_pos = mine_positives(kf, self.queue_other, self.queue_source, source, self.topk, full)
        drop_own = float(torch.rand((), generator=generator)) < self.self_mask
        pos, partner = self.positive_sets(c, source, source_all, queue_pos, perm, drop_own)
        loss = multi_positive_nce(c.logits, pos, lam, partner)
        labels = torch.as_tensor(batch.get("label", torch.full_like(source, -1)), device=source.device).long()
        stats = {"loss": float(loss.detach()), "lam": float(lam), "positives": float(pos.sum(1).float().mean()),
                 "warmup": float(not full), **self.mining_stats(queue_pos, source, labels, full)}
        if self.training:
            self.enqueue(c.keys, concat_all_gather(kf), source_all, concat_all_gather(labels))
        stats.update(contrast_stats(c.logits.detach(), c.own, self.moco.temperature))
        return loss, stats

    def positive_sets(self, c: Contrast, source: Tensor, source_all: Tensor, queue_pos: Tensor,
                      perm: Tensor | None, drop_own: bool) -> tuple[Tensor, Tensor | None]:
        """The positive masks over ``c.logits``' columns: of each query (its own key, same-source
        keys, the mined queue entries) and, when mixed, of its partner. ``moco`` layout: the batch
        holds only the own key (and the partner's, a positive of a query when they share their
        source); ``batch`` layout: every same-source key of the batch is a positive."""
        rows = torch.arange(len(source), device=source.device)
        if self.moco.layout == "batch":
            others = torch.cat([source_all[None, :] == source[:, None], queue_pos], 1)
            pos = self.positives(others, c.own, drop_own)
            return pos, None if perm is None else self.positives(others[perm], c.own[perm], drop_own)
        if perm is None:
            return self.positives(torch.cat([torch.zeros_like(queue_pos[:, :1]), queue_pos], 1), c.own, drop_own), None
        shared = (source[perm] == source) & (perm != rows)                   # a partner of the same source
        own_cols = torch.stack([torch.zeros_like(shared), shared], 1)
        partner_cols = torch.stack([shared, torch.zeros_like(shared)], 1)
        pos = self.positives(torch.cat([own_cols, queue_pos], 1), c.own, drop_own)
        partner = self.positives(torch.cat([partner_cols, queue_pos[perm]], 1), c.partner, drop_own)
        return pos, partner

    @staticmethod
    def positives(others: Tensor, own: Tensor, drop_own: bool) -> Tensor:
        """A (B, N) positive mask over a logit matrix's N columns: the own key column ``own`` (B,)
        and ``others`` (B, N): same-source keys and the queue entries mined. With ``drop_own`` the
        own key leaves every row that has another positive (it stays in the denominator)."""
        rows = torch.arange(others.shape[0], device=others.device)
        mask = others.clone()
        mask[rows, own] = False
        has_other = mask.any(dim=1)
        mask[rows, own] = ~has_other if drop_own else True
        return mask

    @torch.no_grad()
    def mining_stats(self, queue_pos: Tensor, source: Tensor, labels: Tensor, full: bool) -> dict[str, float]:
        """How often the mined positives (not the same-source ones) share the query's class,
        and the rate chance would give: the share of the queue's other-source entries of that
        class. Labels are only read here, to monitor mining; they never reach the loss."""
        if not full or labels.lt(0).any():
            return {}
        other_source = self.queue_source[None, :] != source[:, None]
        mined = queue_pos & other_source
        same_class = self.queue_label[None, :] == labels[:, None]
        return {"mined_same_class": float((mined & same_class).sum() / mined.sum().clamp(min=1)),
                "queue_same_class": float((other_source & same_class).sum() / other_source.sum().clamp(min=1))}

    @torch.no_grad()
    def enqueue(self, k_all: Tensor, kf_all: Tensor, source_all: Tensor, label_all: Tensor) -> None:
        """Write keys, their other-modality embeddings, sources (and labels, for monitoring) at the
        same queue rows."""
        moco, n = self.moco, k_all.shape[0]
        if moco.queue_size == 0:
            return
        buffers = [moco.queue, self.queue_other, self.queue_source, self.queue_label]
        moco.queue_ptr[0] = ring_write(buffers, [k_all, kf_all, source_all, label_all], int(moco.queue_ptr[0]))
        self.queue_filled.fill_(min(int(self.queue_filled) + n, moco.queue_size))
