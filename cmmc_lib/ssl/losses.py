"""InfoNCE with soft labels, the one loss every method shares (docs/method.md section 2).

The contrast set is ``[all batch keys ; queue]`` (i-Mix's layout), so the logits of row i have
a column for its own key (``offset + i``) and one for its mixing partner's key
(``offset + perm[i]``). The target puts ``lam`` on the first and ``1 - lam`` on the second:

    loss = mean_i  -sum_j targets[i, j] * log_softmax(logits[i])[j]
         = mean_i  lam_i * CE(logits_i, offset+i) + (1 - lam_i) * CE(logits_i, offset+perm[i])

With ``lam = 1`` this is MoCo's InfoNCE, ``F.cross_entropy(logits, offset + arange(B))``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def soft_targets(batch: int, num_cols: int, offset: int, lam: float | Tensor = 1.0,
                 perm: Tensor | None = None, device: torch.device | str | None = None) -> Tensor:
    """Soft label matrix (batch, num_cols), float32.

    Args:
        batch: B, rows (queries on this rank).
        num_cols: columns of the logits (B_all + queue length).
        offset: column of row 0's own key (``rank * B`` under DDP, else 0).
        lam: weight of the own key: a float or a per-sample (B,) tensor, in [0, 1].
        perm: (B,) partner of each row; the partner's key column gets ``1 - lam``. Required
            when ``lam < 1``; when ``perm[i] == i`` the row's target is one-hot again.
        device: where to build the targets (default: perm's, else lam's, else CPU).

    Raises:
        ValueError: columns out of range, wrong lam/perm shapes, or lam < 1 without perm.
    """
    if offset < 0 or offset + batch > num_cols:
        raise ValueError(f"own-key columns [{offset}, {offset + batch}) do not fit in {num_cols} columns")
    if device is None:
        device = perm.device if perm is not None else (lam.device if isinstance(lam, Tensor) else None)
    lam_t = torch.as_tensor(lam, dtype=torch.float32, device=device)
    if lam_t.dim() == 0:
        lam_t = lam_t.expand(batch)
    if lam_t.shape != (batch,):
        raise ValueError(f"lam must be a float or a ({batch},) tensor, got shape {tuple(lam_t.shape)}")
    if bool(((lam_t < 0) | (lam_t > 1)).any()):
        raise ValueError("lam must lie in [0, 1]")
    rows = torch.arange(batch, device=lam_t.device)
    targets = torch.zeros(batch, num_cols, dtype=torch.float32, device=lam_t.device)
    targets[rows, offset + rows] = lam_t
    if perm is None:
        if bool((lam_t < 1).any()):
            raise ValueError("lam < 1 needs perm: the remaining 1 - lam goes to the partner's key")
        return targets
    if perm.shape != (batch,):
        raise ValueError(f"perm must have shape ({batch},), got {tuple(perm.shape)}")
    targets.index_put_((rows, offset + perm.to(rows.device)), 1.0 - lam_t, accumulate=True)
    return targets


def soft_info_nce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over rows of ``-(targets * log_softmax(logits, 1)).sum(1)``; a scalar.

    ``logits`` (B, N) are similarities already divided by the temperature; ``targets`` (B, N)
    rows sum to 1 (see :func:`soft_targets`). Computed in float32.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape")
    log_p = F.log_softmax(logits.float(), dim=1)
    return -(targets.to(log_p.dtype) * log_p).sum(dim=1).mean()


@torch.no_grad()
def contrast_stats(logits: Tensor, offset: int, temperature: float) -> dict[str, float]:
    """Monitoring numbers for a (B, N) logit matrix whose row i's own key is column offset+i.

    Returns ``acc`` (fraction of rows whose top column is the own key), ``pos_sim`` (mean
    cosine similarity to the own key) and ``neg_sim`` (mean cosine similarity to every other
    column: the other batch keys and the queue).
    """
    b, n = logits.shape
    rows = torch.arange(b, device=logits.device)
    own = offset + rows
    sims = logits.float() * temperature
    pos = sims[rows, own]
    acc = (logits.argmax(dim=1) == own).float().mean()
    neg_sim = (sims.sum() - pos.sum()) / max(b * (n - 1), 1)
    acc, pos_sim, neg_sim = torch.stack([acc, pos.mean(), neg_sim]).tolist()   # one device sync
    return {"acc": acc, "pos_sim": pos_sim, "neg_sim": neg_sim}
