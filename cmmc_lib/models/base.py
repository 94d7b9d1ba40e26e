"""The block API every backbone shares.

A backbone is a stack of ``num_blocks`` blocks followed by global average pooling. CMMC cuts
a feature map *between* blocks, so the API exposes the two halves of a forward pass:

    h = net.forward_until(x, k)     # blocks 1..k: the feature map after block k
    z = net.forward_from(h, k)      # blocks k+1..N, then pooling -> (B, feat_dim)

Blocks are numbered from 1 everywhere (code, config, docs, lessons): ``ssl.layer_k = k`` cuts
after block k, ``self.blocks[k - 1]`` is block k.

and ``net.forward_from(net.forward_until(x, k), k) == net(x)`` for every k in
``[0, num_blocks]``. In the poster's pseudo-code, ``f.partial_forward(x, 0, k)`` is
``forward_until(x, k)`` and ``f.partial_forward(g, k, N)`` is ``forward_from(g, k)``.
"""
from __future__ import annotations

import operator

import torch
from torch import Tensor, nn
from torch.func import functional_call

class Backbone(nn.Module):
    """A stack of blocks with global average pooling on top.

    Subclasses build ``blocks`` and pass them here. Every dimension after the channel
    dimension is pooled: a video block output (B, C, T, H, W) and a skeleton block output
    (N, C, T, V, M) both become (B, feat_dim).

    Attributes:
        in_channels: channels of the input (RGB 3, flow 2, skeleton coordinates 3).
        feat_dim: size of the pooled feature (the channels of the last block).
        num_blocks: ``len(blocks)``.
        blocks: the blocks, in order.
    """

    def __init__(self, in_channels: int, feat_dim: int, blocks: list[nn.Module]):
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.in_channels = int(in_channels)
        self.feat_dim = int(feat_dim)
        self.blocks = nn.ModuleList(blocks)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def _check_k(self, k: int, name: str = "k") -> int:
        try:
            index = None if isinstance(k, bool) else operator.index(k)
        except TypeError:
            index = None
        if index is None or not 0 <= index <= self.num_blocks:
            raise ValueError(f"{name}={k!r} is outside the valid block range "
                             f"[0, {self.num_blocks}] of {type(self).__name__}")
        return index

    def pool(self, h: Tensor) -> Tensor:
        """Global average over every dimension after channels: (B, C, ...) -> (B, C)."""
        return h.flatten(2).mean(dim=2)

    def forward_until(self, x: Tensor, k: int) -> Tensor:
        """Run blocks 1..k on the input (the map after block k); ``k=0`` returns ``x`` unchanged."""
        for block in self.blocks[: self._check_k(k)]:
            x = block(x)
        return x

    def forward_from(self, h: Tensor, k: int) -> Tensor:
        """Run blocks k+1..N on the feature map after block k, then pool: (B, feat_dim)."""
        for block in self.blocks[self._check_k(k):]:
            h = block(h)
        return self.pool(h)

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features (B, feat_dim)."""
        return self.forward_from(x, 0)

    def block_shapes(self, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The per-sample output shape of every block for a per-sample input shape.

        Computed on the meta device (no memory, no arithmetic, parameters untouched), e.g.
        ``S3D().block_shapes((3, 32, 128, 128))[0] == (64, 16, 64, 64)``.

        Raises:
            ValueError: if the input is too small for some block (the message names it).
        """
        shape = tuple(int(s) for s in input_shape)
        if not shape or shape[0] != self.in_channels:
            raise ValueError(f"input_shape {shape} must start with in_channels={self.in_channels}")
        h = torch.empty((2, *shape), device="meta")
        shapes = []
        for i, block in enumerate(self.blocks):
            ghost = {name: t.to("meta") for name, t in
                     [*block.named_parameters(), *block.named_buffers()]}
            try:
                h = functional_call(block, ghost, (h,))
            except RuntimeError as err:
                raise ValueError(f"input shape {shape} is too small for block {i + 1} of "
                                 f"{type(self).__name__}: {str(err).splitlines()[0]}") from None
            shapes.append(tuple(h.shape[1:]))
        return shapes

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, feat_dim={self.feat_dim}, num_blocks={self.num_blocks}"
