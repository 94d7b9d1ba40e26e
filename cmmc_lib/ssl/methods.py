"""The methods of the paper's ablation as small modules with one ``loss(batch)``.

Every method makes a query from view 0 of the trained modality (mixed or not), a key from
view 1 with the momentum encoder, and the soft-label InfoNCE over the key, its mixing partner's
key and the queue (:meth:`MoCo.contrast`).
Which method a name means is :data:`cmmc_lib.registry.METHODS` (its ``kind`` picks the class
below, its ``mix`` the mixing function):

| kind              | class                  | where the mix happens                              |
|-------------------|------------------------|----------------------------------------------------|
| moco              | MoCoMethod             | nowhere (lam = 1)                                  |
| input-mix         | InputMixMethod         | input clips, same modality                         |
| manifold-mix      | ManifoldMixMethod      | features after block k, same modality              |
| cross-modal-mix   | CrossModalMixMethod    | features after block k of modality 1 with block l  |
|                   |                        | of the other modality's frozen network (CMMC)      |

Blocks are counted from 1: "the features after block k" are ``forward_until(x, k)``, the map the
first k blocks make (``docs/method.md``). A batch is the collated dataset item: ``batch[modality]``
is (B, V, C, T, H, W) with V >= 2 views; for cross-modal methods ``batch[other]`` holds the same
clips (identical crops) in the other modality. ``generator`` drives every random draw of the
mixing (lam, box, partners, the block).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..models.base import Backbone
from .losses import contrast_stats, mixed_targets, soft_info_nce
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


def mix_options(mix: Callable, **options) -> dict:
    """The ``options`` that the mixing function ``mix`` declares (``alpha``, ``dims``, ``perm``,
    ``generator``, ``resample``, ``centre``): every method passes all it has, each function
    takes what it needs (mixup has no box, so no ``dims``)."""
    accepted = inspect.signature(mix).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        return options                             # a wrapper that passes everything on
    return {k: v for k, v in options.items() if k in accepted}


class MoCoMethod(nn.Module):
    """The MoCo baseline: view 0 is the query, view 1 the key, InfoNCE over the queue.
    Subclasses override :meth:`query` to mix.

    In training mode ``loss`` also does the momentum update (before computing keys, as MoCo)
    and enqueues the new keys; in eval mode it leaves the key encoder and queue untouched.
    ``forward`` is ``loss``, so the loop can wrap the whole method in DistributedDataParallel.
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
        c = self.moco.contrast(q, k, perm)
        loss = soft_info_nce(c.logits, mixed_targets(c.logits.shape[1], c.own, lam, c.partner))
        if self.training:
            self.moco.enqueue(c.keys)
        stats = {"loss": float(loss.detach()), "lam": float(lam)}
        stats.update(contrast_stats(c.logits.detach(), c.own, self.moco.temperature))
        return loss, stats

    def after_step(self) -> None:
        """Hook called by the loop after the optimiser step (nothing to do for MoCo)."""

    @property
    def learning(self) -> bool:
        """Whether this step's loss should update the network (CoCLR: not until its queue is full)."""
        return True


class InputMixMethod(MoCoMethod):
    """Same-modality mixing of the input clips (``mix``: :func:`~cmmc_lib.mixing.mixup`,
    :func:`~cmmc_lib.mixing.cutmix` over dims thw / hw / t, or any function of that form)."""

    def __init__(self, moco: MoCo, modality: str, mix: Callable, alpha: float = 1.0, dims: str = "thw",
                 centre: str = "uniform"):
        super().__init__(moco, modality)
        self.mix = mix
        self.options = dict(alpha=alpha, dims=dims, centre=centre)

    def query(self, batch, x, generator):
        mixed = self.mix(x, **mix_options(self.mix, generator=generator, **self.options))
        return self.moco.encoder_q(mixed.mixed), mixed.lam, mixed.perm


class ManifoldMixMethod(MoCoMethod):
    """Same-modality mixing of the feature map after block ``k`` (manifold mixup / cutmix)."""

    def __init__(self, moco: MoCo, modality: str, mix: Callable, layer: int | Sequence[int], alpha: float = 1.0,
                 dims: str = "cthw", centre: str = "uniform"):
        super().__init__(moco, modality)
        self.layers = check_layers(moco.encoder_q.backbone, layer, "ssl.layer_k")
        self.mix = mix
        self.options = dict(alpha=alpha, dims=dims, centre=centre)

    def query(self, batch, x, generator):
        enc = self.moco.encoder_q
        k = draw_layer(self.layers, generator)
        mixed = self.mix(enc.forward_until(x, k), **mix_options(self.mix, generator=generator, **self.options))
        return enc.forward_from(mixed.mixed, k), mixed.lam, mixed.perm


class CrossModalMixer(nn.Module):
    """The cross-modal half of CMMC, shared by every method that mixes across modalities (CMMC,
    CM mixup, CoCLR + CMMC): the trained encoder runs blocks 1..k on the query clips, the other
    modality's ``source`` network blocks 1..l on the same clips in its modality, ``mix`` pastes
    (or blends) the source map of video ``perm[i]`` into the query map of video i, and the trained
    encoder finishes the forward pass.

    ``source`` is frozen (no gradient, eval mode, BatchNorm included) unless ``frozen=False``
    (joint training: another method's live network, still read without gradient and in eval mode).
    ``partner='same'`` pastes from the same video (labels then stay unmixed): the control.
    """

    def __init__(self, source: nn.Module, mix: Callable, layer_k: int | Sequence[int],
                 layer_l: int | Sequence[int] | None = None, alpha: float = 1.0, dims: str = "cthw",
                 partner: str = "perm", resample: bool = True, centre: str = "uniform", frozen: bool = True,
                 trained: Backbone | None = None):
        super().__init__()
        if partner not in ("perm", "same"):
            raise ValueError(f"partner must be 'perm' or 'same', got {partner!r}")
        self.layers_k = check_layers(trained if trained is not None else source, layer_k, "ssl.layer_k")
        self.layers_l = None if layer_l is None else check_layers(source, layer_l, "ssl.layer_l")
        if self.layers_l is None:                  # l = the step's k: k must be a block of the source too
            check_layers(source, layer_k, "ssl.layer_k")
        self.source, self.mix, self.partner, self.frozen = source, mix, partner, frozen
        self.options = dict(alpha=alpha, dims=dims, resample=resample, centre=centre)
        if frozen:
            for p in self.source.parameters():
                p.requires_grad_(False)
            self.source.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
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

    def forward(self, encoder: nn.Module, x: Tensor, x_other: Tensor, generator: torch.Generator | None):
        """(q, lam, perm): ``encoder``'s embedding of the query clips ``x`` with a map of
        ``x_other`` (the same clips in the other modality, (B, C', T, H, W)) mixed in after
        block k."""
        k = draw_layer(self.layers_k, generator)
        l = k if self.layers_l is None else draw_layer(self.layers_l, generator)
        h1 = encoder.forward_until(x, k)
        h2 = self.source_features(x_other, l)
        perm = torch.arange(x.shape[0], device=x.device) if self.partner == "same" else None
        mixed = self.mix(h1, h2, **mix_options(self.mix, perm=perm, generator=generator, **self.options))
        return encoder.forward_from(mixed.mixed, k), mixed.lam, mixed.perm


class CrossModalMixMethod(MoCoMethod):
    """Cross-modal manifold mixing: CMMC with a cutmix ``mixer``, CM mixup with a mixup one.
    ``other`` is the modality of the mixer's source network."""

    def __init__(self, moco: MoCo, modality: str, other: str, mixer: CrossModalMixer):
        super().__init__(moco, modality)
        self.other, self.mixer = other, mixer

    @property
    def source(self) -> nn.Module:
        """The other modality's network whose features are pasted in."""
        return self.mixer.source

    def query(self, batch, x, generator):
        if self.other not in batch:
            raise ValueError(f"cross-modal mixing needs the {self.other!r} modality in the batch")
        return self.mixer(self.moco.encoder_q, x, batch[self.other][:, 0], generator)


class JointCrossModalMethod(nn.Module):
    """Both networks trained at once, each mixing in the other's *current* features (detached):
    the poster's "w/o alternate training". ``methods`` maps each modality to its
    :class:`CrossModalMixMethod`, whose source is the other method's live query backbone. The
    loss is the sum of the two losses; stats are the trained modality's (``modality``)."""

    def __init__(self, methods: dict[str, CrossModalMixMethod], modality: str):
        super().__init__()
        if set(methods) != {m.other for m in methods.values()} or len(methods) != 2 or modality not in methods:
            raise ValueError(f"joint training needs two methods that mix into each other, got {list(methods)}")
        self.methods = nn.ModuleDict(methods)
        self.modality = modality

    def query_backbone(self) -> Backbone:
        return self.methods[self.modality].query_backbone()

    def backbones(self) -> dict[str, Backbone]:
        """Every trained network by modality (both are saved in a checkpoint)."""
        return {m: method.query_backbone() for m, method in self.methods.items()}

    def forward(self, batch: dict, generator: torch.Generator | None = None):
        return self.loss(batch, generator)

    def loss(self, batch: dict, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        total, stats = 0.0, {}
        for m, method in self.methods.items():
            loss, s = method.loss(batch, generator)
            total = total + loss
            if m == self.modality:
                stats = dict(s)
        stats["loss"] = float(total.detach())
        return total, stats

    def after_step(self) -> None:
        for method in self.methods.values():
            method.after_step()

    @property
    def learning(self) -> bool:
        return all(method.learning for method in self.methods.values())


def draw_layer(layers: tuple[int, ...], generator: torch.Generator | None) -> int:
    """The block to cut after at this step: the only one, or one drawn uniformly from
    ``generator`` (a single block draws nothing, so a one-block run consumes the same random numbers)."""
    if len(layers) == 1:
        return layers[0]
    return layers[int(torch.randint(len(layers), (1,), generator=generator))]


def check_layers(network: nn.Module, layers: int | Sequence[int], name: str) -> tuple[int, ...]:
    """``layers`` as a tuple of blocks to cut after, each in 1 .. num_blocks - 1 of ``network``."""
    layers = (layers,) if isinstance(layers, int) else tuple(layers)
    if not layers:
        raise ValueError(f"{name} is empty: give one block or a list to draw from")
    for k in layers:
        if not 1 <= k < network.num_blocks:
            raise ValueError(f"{name}={k} is not a block boundary to cut at: choose 1..{network.num_blocks - 1} "
                             f"({type(getattr(network, 'backbone', network)).__name__} has {network.num_blocks} blocks)")
    return layers
