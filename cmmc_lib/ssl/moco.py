"""MoCo (He et al., CVPR 2020): a momentum key encoder and a queue of past keys.

    q = encoder_q(x_query)                       # (B, dim), L2-normalised, trained
    momentum_update()                            # theta_k <- m * theta_k + (1 - m) * theta_q
    k = keys(x_key)                              # (B, dim), no gradient
    c = contrast(q, k, perm)                     # q . [own key ; partner's key ; queue] / tau
    loss = soft_info_nce(c.logits, mixed_targets(c.logits.shape[1], c.own, lam, c.partner))
    enqueue(c.keys)                              # the queue is a ring buffer of clean keys

The contrast layout (``ssl.contrast``) is MoCo's and CoCLR's: row i's own key in column 0, then,
for a mixed query, its partner's key in column 1 (so the mixed target has a column to go to),
then the queue; the other keys of the batch are no negatives (they join the queue after the
step). ``batch`` is i-Mix's layout: every key of the batch is a column.
"""
from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.heads import Encoder
from .distributed import concat_all_gather, rank, shuffle_across_ranks, unshuffle_across_ranks, world_size
from .losses import LAYOUTS, Contrast
from .queue import ring_write


class SplitBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are computed per sub-batch of ``B / num_splits``.

    Training: the batch (B, C, ...) is cut into G consecutive groups of B / G samples and each
    group is normalised with its own mean and variance (as if each group were on its own GPU);
    the running statistics move towards the average of the G groups' statistics. Evaluation:
    ordinary BatchNorm with the running statistics. Consecutive groups keep the persons of one
    skeleton sample (ST-GCN folds (N, M) into the batch, sample-major) in the same group.
    MoCo's CIFAR-10 demo uses this to simulate per-GPU BatchNorm on one GPU.
    """

    def __init__(self, num_features: int, num_splits: int, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True, track_running_stats: bool = True,
                 device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype)
        if num_splits < 1:
            raise ValueError(f"num_splits must be >= 1, got {num_splits}")
        self.num_splits = int(num_splits)

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"SplitBatchNorm expects (B, C, ...) input, got {x.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        g = self.num_splits
        if not self.training or g == 1:
            return super().forward(x)
        self._check_input_dim(x)
        b, c = x.shape[:2]
        if b % g:
            raise ValueError(f"split-BN: batch {b} is not divisible by split_bn={g}")
        groups = x.reshape(g, b // g, c, -1)                     # (G, B/G, C, L)
        mean = groups.mean(dim=(1, 3))                           # (G, C)
        var = groups.var(dim=(1, 3), unbiased=False)
        y = (groups - mean[:, None, :, None]) * torch.rsqrt(var[:, None, :, None] + self.eps)
        if self.affine:
            y = y * self.weight[:, None] + self.bias[:, None]
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            n = groups.shape[1] * groups.shape[3]
            with torch.no_grad():                                # running variance is unbiased, as BN's
                self.running_mean.lerp_(mean.mean(0).to(self.running_mean.dtype), factor)
                unbiased = var.mean(0) * (n / max(n - 1, 1))
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return y.reshape(x.shape)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_splits={self.num_splits}"


def convert_split_bn(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every BatchNorm{1,2,3}d in ``module`` (in place) by a :class:`SplitBatchNorm`
    with the same parameters and running statistics. Parameter order is unchanged."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, SplitBatchNorm):
            ref = next(iter(child.parameters()), child.running_mean)
            split = SplitBatchNorm(child.num_features, num_splits, child.eps, child.momentum,
                                   child.affine, child.track_running_stats,
                                   device=None if ref is None else ref.device,
                                   dtype=None if ref is None else ref.dtype)
            split.load_state_dict(child.state_dict())
            split.train(child.training)
            setattr(module, name, split)
        else:
            convert_split_bn(child, num_splits)
    return module


def _fp32(device: torch.device):
    """A context with autocast off on ``device`` (logits are computed in float32)."""
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


class MoCo(nn.Module):
    """Momentum encoder + queue + the contrast of queries with their keys and the queue.

    Args:
        encoder: the query encoder (an :class:`~cmmc_lib.models.Encoder`, L2-normalised output);
            it is trained. A deep copy becomes the key encoder (no gradient).
        queue_size: Q, number of past keys kept; any Q >= 0 (0: the batch keys only).
        momentum: m in ``theta_k <- m * theta_k + (1 - m) * theta_q``.
        temperature: tau; logits are cosine similarities / tau.
        split_bn: G >= 1, the BatchNorm groups of the *global* batch, i.e. the GPUs a run emulates
            (CoCLR: 2 GPUs x 32 clips). **Shuffle-BN.** MoCo computes keys on a batch shuffled
            across GPUs so that the BatchNorm statistics of a query and of its positive key come
            from different samples (otherwise the network can "cheat" by recognising its positive
            through batch statistics). Each of W processes gets G // W groups (at least 1): there,
            as in MoCo's CIFAR-10 demo, the BatchNorms of *both* encoders become
            :class:`SplitBatchNorm` with those groups (each normalises B / G clips, as each GPU of
            the emulated run would) and the key batch is shuffled before its forward pass (and
            unshuffled after), so a key is normalised with other clips than its query. Under DDP the
            key batch is shuffled across processes first (real shuffle-BN). ``split_bn=1`` in one
            process is plain BatchNorm with no shuffle: no shuffle-BN at all.
        layout: ``moco`` (``[own key ; partner's key ; queue]``) or ``batch`` (``[every batch key ;
            queue]``): see :meth:`contrast`.

    Buffers: ``queue`` (Q, dim), L2-normalised random vectors at first; ``queue_ptr`` (1,),
    the row the next key is written to.
    """

    def __init__(self, encoder: Encoder, queue_size: int, momentum: float, temperature: float,
                 split_bn: int = 1, layout: str = "moco"):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"the contrast layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if queue_size < 0:
            raise ValueError(f"queue_size must be >= 0, got {queue_size}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if split_bn < 1:
            raise ValueError(f"split_bn must be >= 1, got {split_bn}")
        self.momentum = float(momentum)
        self.temperature = float(temperature)
        self.layout = layout
        self.split_bn = max(1, int(split_bn) // world_size())     # this process's share of the groups
        self.encoder_q = encoder
        if self.split_bn > 1:                  # both encoders, as each GPU of a real run normalises its share
            convert_split_bn(self.encoder_q, self.split_bn)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        self.dim = int(encoder.dim)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, self.dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @property
    def queue_size(self) -> int:
        return self.queue.shape[0]

    @torch.no_grad()
    def momentum_update(self) -> None:
        """theta_k <- m * theta_k + (1 - m) * theta_q for every parameter (not BN statistics)."""
        for p_q, p_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            p_k.mul_(self.momentum).add_(p_q.detach(), alpha=1.0 - self.momentum)

    @torch.no_grad()
    def keys(self, x: Tensor) -> Tensor:
        """Key embeddings (B, dim) of ``x``, no gradient. The key encoder runs in the mode of
        ``encoder_q``; in training its BatchNorm never sees a key beside its own query's batch:
        under DDP the batch is shuffled across ranks (MoCo / CoCLR's ``_batch_shuffle_ddp``),
        and with ``split_bn > 1`` it is shuffled inside this rank's split-BN groups too."""
        self.encoder_k.train(self.encoder_q.training)
        if not self.encoder_k.training:
            return self.encoder_k(x)
        x, unshuffle = shuffle_across_ranks(x)
        if self.split_bn > 1:
            order = torch.randperm(x.shape[0], device=x.device)
            k = self.encoder_k(x[order])[torch.argsort(order)]
        else:
            k = self.encoder_k(x)
        return unshuffle_across_ranks(k, unshuffle)

    def contrast(self, q: Tensor, k_local: Tensor, perm: Tensor | None = None) -> Contrast:
        """The logits of queries against their keys and the queue, in the layout ``self.layout``.

        Args:
            q: (B, dim) L2-normalised queries (with gradient).
            k_local: (B, dim) this rank's keys; gathered over DDP ranks (no-op in one process).
            perm: (B,) the mixing partner of each query (None: no mixing, no partner column).

        Returns:
            a :class:`~cmmc_lib.ssl.losses.Contrast`: ``moco`` layout, logits (B, 1 [+ 1] + Q) =
            ``q . [own key ; partner's key ; queue] / tau`` (own column 0, partner column 1; a row
            that is its own partner has no partner column: -inf there, its target on column 0);
            ``batch`` layout, (B, B_all + Q) = ``q . [k_all ; queue] / tau`` with row i's own key in
            column ``rank * B + i``.
        """
        if q.dim() != 2 or q.shape != k_local.shape:
            raise ValueError(f"queries {tuple(q.shape)} and keys {tuple(k_local.shape)} must both be (B, dim)")
        k_all = concat_all_gather(k_local)
        rows = torch.arange(q.shape[0], device=q.device)
        with _fp32(q.device):
            qf, queue = q.float(), self.queue.float().clone()     # a copy: the queue changes after the step
            if self.layout == "batch":
                offset = rank() * q.shape[0]
                logits = qf @ torch.cat([k_all.float(), queue]).T / self.temperature
                partner = None if perm is None else offset + perm.to(rows.device)
                return Contrast(logits, offset + rows, partner, k_all)
            k = k_local.float()
            columns = [(qf * k).sum(1, keepdim=True)]
            partner = None
            if perm is not None:
                perm = perm.to(rows.device)
                cross = (qf * k[perm]).sum(1, keepdim=True)
                columns.append(cross.masked_fill((perm == rows)[:, None], float("-inf")))
                partner = torch.where(perm == rows, torch.zeros_like(rows), torch.ones_like(rows))
            logits = torch.cat(columns + [qf @ queue.T], dim=1) / self.temperature
        return Contrast(logits, torch.zeros_like(rows), partner, k_all)

    @torch.no_grad()
    def enqueue(self, k_all: Tensor) -> None:
        """Write keys (N, dim) into the ring buffer at ``queue_ptr``, wrapping around the end
        (:func:`~cmmc_lib.ssl.queue.ring_write`: any Q, the last Q keys when N > Q, Q = 0 a no-op)."""
        if k_all.dim() != 2 or k_all.shape[1] != self.dim:
            raise ValueError(f"keys must be (N, {self.dim}), got {tuple(k_all.shape)}")
        self.queue_ptr[0] = ring_write([self.queue], [k_all], int(self.queue_ptr[0]))
