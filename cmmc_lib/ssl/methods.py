"""The methods of the paper's ablation as small steps with one ``loss(batch)``.

Every step makes a query from view 0 of the trained modality (mixed or not), a key from
view 1 with the momentum encoder, and the soft-label InfoNCE over ``[batch keys ; queue]``:

| method            | class              | where the mix happens                              |
|-------------------|--------------------|----------------------------------------------------|
| moco              | MoCoStep           | nowhere (lam = 1)                                  |
| mixup / cutmix    | InputMixStep       | input clips, same modality                         |
| manifold-mixup/-cutmix | ManifoldMixStep | features after block k, same modality            |
| cm-mixup / cmmc   | CrossModalMixStep  | features after block k of modality 1 with block l  |
|                   |                    | of the other modality's frozen network (METHOD.md 2)|

A batch is the collated dataset item: ``batch[modality]`` is (B, V, C, T, H, W) with V >= 2
views; for cross-modal steps ``batch[other]`` holds the same clips (identical crops) in the
other modality. ``generator`` drives every random draw of the mixing (lam, box, partners).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .. import mixing
from ..models.base import Backbone
from .losses import contrast_stats, soft_info_nce, soft_targets
from .moco import MoCo


def query_and_key_views(batch: dict, modality: str) -> tuple[Tensor, Tensor]:
    """Views 0 and 1 of ``batch[modality]`` (B, V>=2, *clip) -> two (B, *clip) tensors."""
    if modality not in batch:
        raise ValueError(f"batch has no {modality!r} entry (it has: {', '.join(map(str, batch))})")
    x = batch[modality]
    if not isinstance(x, Tensor) or x.dim() < 3 or x.shape[1] < 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"batch[{modality!r}] must be (B, V>=2, C, ...) with a query and a key view, got {shape}")
    return x[:, 0], x[:, 1]


class MoCoStep(nn.Module):
    """The MoCo baseline: view 0 is the query, view 1 the key, InfoNCE over the queue.
    Subclasses override :meth:`query` to mix.

    In training mode ``loss`` also does the momentum update (before computing keys, as MoCo)
    and enqueues the new keys; in eval mode it leaves the key encoder and queue untouched.
    ``forward`` is ``loss``, so the loop can wrap the whole step in DistributedDataParallel.
    """

    def __init__(self, moco: MoCo, modality: str):
        super().__init__()
        self.moco = moco
        self.modality = modality

    def query_backbone(self) -> Backbone:
        """The trained backbone (what downstream evaluation uses)."""
        return self.moco.encoder_q.backbone

    def query(self, batch: dict, x: Tensor, generator: torch.Generator | None):
        """(q (B, dim) L2-normalised, lam, perm or None) for the query clips ``x`` (B, C, T, H, W)."""
        return self.moco.encoder_q(x), 1.0, None

    def forward(self, batch: dict, generator: torch.Generator | None = None):
        return self.loss(batch, generator)

    def loss(self, batch: dict, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """Scalar loss and stats ``loss``, ``lam``, ``acc`` (top-1 of the own-key column),
        ``pos_sim``, ``neg_sim`` (mean cosine similarity to the own key / everything else)."""
        x_q, x_k = query_and_key_views(batch, self.modality)
        q, lam, perm = self.query(batch, x_q, generator)
        if self.training:
            self.moco.momentum_update()
        k = self.moco.keys(x_k)
        logits, offset, k_all = self.moco.contrast(q, k, return_keys=True)
        targets = soft_targets(q.shape[0], logits.shape[1], offset, lam, perm, device=logits.device)
        loss = soft_info_nce(logits, targets)
        if self.training:
            self.moco.enqueue(k_all)
        stats = {"loss": float(loss.detach()), "lam": float(lam)}
        stats.update(contrast_stats(logits.detach(), offset, self.moco.temperature))
        return loss, stats

    def after_step(self) -> None:
        """Hook called by the loop after the optimiser step (nothing to do for MoCo)."""


class InputMixStep(MoCoStep):
    """Same-modality mixing of the input clips: ``mixup`` or ``cutmix`` (dims thw / hw / t)."""

    def __init__(self, moco: MoCo, modality: str, kind: str, alpha: float = 1.0, dims: str = "thw",
                 centre: str = "uniform"):
        super().__init__(moco, modality)
        if kind not in ("mixup", "cutmix"):
            raise ValueError(f"input mixing is 'mixup' or 'cutmix', got {kind!r}")
        self.kind, self.alpha, self.dims, self.centre = kind, alpha, dims, centre

    def query(self, batch, x, generator):
        if self.kind == "mixup":
            mix = mixing.mixup(x, self.alpha, generator=generator)
        else:
            mix = mixing.cutmix(x, self.alpha, self.dims, generator=generator, centre=self.centre)
        return self.moco.encoder_q(mix.mixed), mix.lam, mix.perm


class ManifoldMixStep(MoCoStep):
    """Same-modality mixing of the feature map after block ``k`` (manifold mixup / cutmix)."""

    def __init__(self, moco: MoCo, modality: str, kind: str, layer: int | Sequence[int], alpha: float = 1.0,
                 dims: str = "cthw", centre: str = "uniform"):
        super().__init__(moco, modality)
        if kind not in ("mixup", "cutmix"):
            raise ValueError(f"manifold mixing is 'mixup' or 'cutmix', got {kind!r}")
        self.layers = _check_layers(moco.encoder_q.backbone, layer, "ssl.layer_k")
        self.kind, self.alpha, self.dims, self.centre = kind, alpha, dims, centre

    def query(self, batch, x, generator):
        enc = self.moco.encoder_q
        k = draw_layer(self.layers, generator)
        h = enc.forward_until(x, k)
        if self.kind == "mixup":
            mix = mixing.manifold_mixup(h, self.alpha, generator=generator)
        else:
            mix = mixing.manifold_cutmix(h, self.alpha, self.dims, generator=generator, centre=self.centre)
        return enc.forward_from(mix.mixed, k), mix.lam, mix.perm


class CrossModalMixStep(MoCoStep):
    """Cross-modal manifold mixing (METHOD.md section 2): ``cutmix`` is CMMC, ``mixup`` is CM mixup.

    ``source`` is the other modality's backbone: frozen, kept in eval mode, never trained here.
    With ``frozen_source=False`` it is another step's live network (:class:`JointCrossModalStep`):
    its features are still taken without gradient and in eval mode, but it is left trainable.
    ``partner='same'`` pastes from the same video (labels then stay unmixed): the control.
    """

    def __init__(self, moco: MoCo, modality: str, other: str, source: Backbone, kind: str,
                 layer_k: int | Sequence[int], layer_l: int | Sequence[int] | None = None,
                 alpha: float = 1.0, dims: str = "cthw",
                 partner: str = "perm", resample: bool = True, centre: str = "uniform",
                 frozen_source: bool = True):
        super().__init__(moco, modality)
        if kind not in ("mixup", "cutmix"):
            raise ValueError(f"cross-modal mixing is 'mixup' or 'cutmix', got {kind!r}")
        if partner not in ("perm", "same"):
            raise ValueError(f"partner must be 'perm' or 'same', got {partner!r}")
        self.layers_k = _check_layers(moco.encoder_q.backbone, layer_k, "ssl.layer_k")
        self.layers_l = None if layer_l is None else _check_layers(source, layer_l, "ssl.layer_l")
        if self.layers_l is None:                  # l = the step's k: k must be a block of the source too
            _check_layers(source, layer_k, "ssl.layer_k")
        self.other, self.source, self.kind = other, source, kind
        self.alpha, self.dims = alpha, dims
        self.partner, self.resample, self.centre = partner, resample, centre
        self.frozen_source = frozen_source
        if frozen_source:
            for p in self.source.parameters():
                p.requires_grad_(False)
            self.source.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_source:
            self.source.eval()                     # the source network is frozen, BN included
        return self

    def source_features(self, x: Tensor, layer: int) -> Tensor:
        """The other modality's map after ``layer`` blocks: eval-mode BatchNorm, computed under
        ``torch.inference_mode`` (no autograd bookkeeping at all, not even version counters).
        The map only ever enters the mix as a constant, so the result may be an inference
        tensor: autograd never needs to save it."""
        was_training = self.source.training
        self.source.eval()
        try:
            with torch.inference_mode():
                return self.source.forward_until(x, layer)
        finally:
            self.source.train(was_training)

    def query(self, batch, x, generator):
        if self.other not in batch:
            raise ValueError(f"cross-modal mixing needs the {self.other!r} modality in the batch")
        enc = self.moco.encoder_q
        k = draw_layer(self.layers_k, generator)
        l = k if self.layers_l is None else draw_layer(self.layers_l, generator)
        h1 = enc.forward_until(x, k)
        h2 = self.source_features(batch[self.other][:, 0], l)
        perm = torch.arange(x.shape[0], device=x.device) if self.partner == "same" else None
        if self.kind == "cutmix":
            mix = mixing.cross_modal_cutmix(h1, h2, self.alpha, self.dims, perm, generator, self.resample,
                                            self.centre)
        else:
            mix = mixing.cross_modal_mixup(h1, h2, self.alpha, perm, generator, self.resample)
        return enc.forward_from(mix.mixed, k), mix.lam, mix.perm


class JointCrossModalStep(nn.Module):
    """Both networks trained at once, each mixing in the other's *current* features (detached):
    the poster's "w/o alternate training". ``steps`` maps each modality to its
    :class:`CrossModalMixStep`, whose source is the other step's live query backbone. The loss is
    the sum of the two steps' losses; stats are the trained modality's (``modality``)."""

    def __init__(self, steps: dict[str, CrossModalMixStep], modality: str):
        super().__init__()
        if set(steps) != {s.other for s in steps.values()} or len(steps) != 2 or modality not in steps:
            raise ValueError(f"joint training needs two steps that mix into each other, got {list(steps)}")
        self.steps = nn.ModuleDict(steps)
        self.modality = modality

    def query_backbone(self) -> Backbone:
        return self.steps[self.modality].query_backbone()

    def backbones(self) -> dict[str, Backbone]:
        """Every trained network by modality (both are saved in a checkpoint)."""
        return {m: step.query_backbone() for m, step in self.steps.items()}

    def forward(self, batch: dict, generator: torch.Generator | None = None):
        return self.loss(batch, generator)

    def loss(self, batch: dict, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        total, stats = 0.0, {}
        for m, step in self.steps.items():
            loss, s = step.loss(batch, generator)
            total = total + loss
            if m == self.modality:
                stats = dict(s)
        stats["loss"] = float(total.detach())
        return total, stats

    def after_step(self) -> None:
        for step in self.steps.values():
            step.after_step()


def draw_layer(layers: tuple[int, ...], generator: torch.Generator | None) -> int:
    """The block to cut at this step: the only one, or one drawn uniformly from ``generator``
    (a single layer draws nothing, so a one-layer run consumes the same random numbers)."""
    if len(layers) == 1:
        return layers[0]
    return layers[int(torch.randint(len(layers), (1,), generator=generator))]


def _check_layers(backbone: Backbone, layers: int | Sequence[int], name: str) -> tuple[int, ...]:
    layers = (layers,) if isinstance(layers, int) else tuple(layers)
    if not layers:
        raise ValueError(f"{name} is empty: give one block or a list to draw from")
    for k in layers:
        if not 1 <= k < backbone.num_blocks:
            raise ValueError(f"{name}={k} is not a block boundary to cut at: choose 1..{backbone.num_blocks - 1} "
                             f"({type(backbone).__name__} has {backbone.num_blocks} blocks)")
    return layers
