"""InfoNCE with soft labels, the one loss every method shares (docs/method.md, section 2).

A query's logits hold a column for its own key and, when it was mixed, one for its mixing
partner's key; the target puts ``lam`` on the first and ``1 - lam`` on the second:

    loss = mean_i  -sum_j targets[i, j] * log_softmax(logits[i])[j]
         = mean_i  lam_i * CE(logits_i, own_i) + (1 - lam_i) * CE(logits_i, partner_i)

With ``lam = 1`` this is MoCo's InfoNCE. Where those columns sit depends on the contrast layout
(:class:`Contrast`, ``ssl.contrast``): MoCo's and CoCLR's ``[own key ; (partner key) ; queue]``
(the own key in column 0, the partner's in column 1) or i-Mix's ``[every batch key ; queue]``
(row i's own key in column ``offset + i``, its partner's in ``offset + perm[i]``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

#: The contrast layouts (``ssl.contrast``): MoCo / CoCLR's, and i-Mix's (every batch key a column).
LAYOUTS = ("moco", "batch")


@dataclass
class Contrast:
    """One step's logits and where each row's positives sit.

    logits:  (B, N) float32, similarities / temperature; a column a row must ignore holds -inf.
    own:     (B,) long, the column of row i's own key.
    partner: (B,) long, the column of its mixing partner's key (None without mixing).
    keys:    (B_all, dim) this step's keys from every process (what the queue receives).
    """
    logits: Tensor
    own: Tensor
    partner: Tensor | None
    keys: Tensor


def mixed_targets(num_cols: int, own: Tensor, lam: float | Tensor = 1.0, partner: Tensor | None = None) -> Tensor:
    """Soft label matrix (B, num_cols), float32: ``lam`` on each row's ``own`` column, ``1 - lam``
    on its ``partner`` column (added, so a row whose partner column is its own is one-hot).

    Raises:
        ValueError: columns out of range, wrong lam shapes, or lam < 1 without a partner.
    """
    batch = own.shape[0]
    if bool(((own < 0) | (own >= num_cols)).any()) or (partner is not None and bool(
            ((partner < 0) | (partner >= num_cols)).any())):
        raise ValueError(f"target columns must lie in [0, {num_cols})")
    lam_t = torch.as_tensor(lam, dtype=torch.float32, device=own.device)
    if lam_t.dim() == 0:
        lam_t = lam_t.expand(batch)
    if lam_t.shape != (batch,):
        raise ValueError(f"lam must be a float or a ({batch},) tensor, got shape {tuple(lam_t.shape)}")
    if bool(((lam_t < 0) | (lam_t > 1)).any()):
        raise ValueError("lam must lie in [0, 1]")
    rows = torch.arange(batch, device=own.device)
    targets = torch.zeros(batch, num_cols, dtype=torch.float32, device=own.device)
    targets[rows, own] = lam_t
    if partner is None:
        if bool((lam_t < 1).any()):
            raise ValueError("lam < 1 needs a partner: the remaining 1 - lam goes to the partner's key")
        return targets
    if partner.shape != (batch,):
        raise ValueError(f"partner must have shape ({batch},), got {tuple(partner.shape)}")
    targets.index_put_((rows, partner), 1.0 - lam_t, accumulate=True)
    return targets


def moco_targets(perm: Tensor, lam: float | Tensor = 1.0, queue: int = 0) -> Tensor:
    """The soft labels of MoCo's layout with a partner column, ``[own key ; partner's key ;
    queue]`` (``ssl.contrast=moco``, :meth:`~cmmc_lib.ssl.moco.MoCo.contrast`): (B, 2 + queue),
    ``lam`` on column 0 and ``1 - lam`` on column 1, nothing on the queue; a row that is its own
    partner (``perm[i] == i``) has no partner column and is one-hot on column 0."""
    rows = torch.arange(perm.shape[0], device=perm.device)
    partner = torch.where(perm == rows, torch.zeros_like(rows), torch.ones_like(rows))
    return mixed_targets(2 + queue, torch.zeros_like(rows), lam, partner)


def soft_targets(batch: int, num_cols: int, offset: int, lam: float | Tensor = 1.0,
                 perm: Tensor | None = None, device: torch.device | str | None = None) -> Tensor:
    """The soft labels of i-Mix's layout ``[every batch key ; queue]`` (``ssl.contrast=batch``):
    row i's own key is column ``offset + i`` (``offset = rank * batch``), its partner's
    ``offset + perm[i]`` (:func:`mixed_targets`)."""
    if offset < 0 or offset + batch > num_cols:
        raise ValueError(f"own-key columns [{offset}, {offset + batch}) do not fit in {num_cols} columns")
    if device is None:
        device = perm.device if perm is not None else (lam.device if isinstance(lam, Tensor) else None)
    own = offset + torch.arange(batch, device=device)
    return mixed_targets(num_cols, own, lam, None if perm is None else offset + perm.to(own.device))


def soft_info_nce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over rows of ``-(targets * log_softmax(logits, 1)).sum(1)``; a scalar.

    ``logits`` (B, N) are similarities already divided by the temperature (a -inf column is left
    out of the softmax); ``targets`` (B, N) rows sum to 1 (:func:`mixed_targets`). Float32.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape")
    log_p = F.log_softmax(logits.float(), dim=1)
    weighted = torch.where(targets > 0, targets.to(log_p.dtype) * log_p, torch.zeros_like(log_p))
    return -weighted.sum(dim=1).mean()


@torch.no_grad()
def contrast_stats(logits: Tensor, own: Tensor | int, temperature: float) -> dict[str, float]:
    """Monitoring numbers for (B, N) logits whose row i's own key is column ``own[i]`` (an int:
    ``offset + i``, i-Mix's layout).

    Returns ``acc`` (fraction of rows whose top column is the own key), ``pos_sim`` (mean cosine
    similarity to the own key) and ``neg_sim`` (mean cosine similarity to every other column that
    takes part: the queue, and the batch keys or the partner's key).
    """
    b, n = logits.shape
    rows = torch.arange(b, device=logits.device)
    own = own + rows if isinstance(own, int) else own.to(logits.device)
    sims = logits.float() * temperature
    pos = sims[rows, own]
    acc = (logits.argmax(dim=1) == own).float().mean()
    others = torch.isfinite(sims)
    others[rows, own] = False
    neg_sim = sims.masked_fill(~others, 0).sum() / others.sum().clamp(min=1)
    acc, pos_sim, neg_sim = torch.stack([acc, pos.mean(), neg_sim]).tolist()   # one device sync
    return {"acc": acc, "pos_sim": pos_sim, "neg_sim": neg_sim}
