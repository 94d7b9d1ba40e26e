"""Heads on pooled backbone features, and :class:`Encoder` (backbone + projection head).

* :class:`ProjectionHead`: the contrastive MLP, Linear -> ReLU -> Linear (CoCLR: 1024 -> 1024 -> 128).
* :class:`LinearClassifier`: optional BatchNorm1d, dropout, Linear (linear probe: BN on;
  fine-tune: dropout 0.9).
* :class:`Encoder`: what MoCo trains; its outputs are L2-normalised embeddings, and it keeps
  the block API so a mixing method can finish a forward pass from a cut feature map.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import Backbone


class ProjectionHead(nn.Module):
    """MLP (B, in_dim) -> (B, out_dim): Linear(in_dim, hidden) -> ReLU -> Linear(hidden, out_dim)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.in_dim, self.hidden, self.out_dim = int(in_dim), int(hidden), int(out_dim)
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class LinearClassifier(nn.Module):
    """(B, in_dim) -> (B, num_classes) logits: [BatchNorm1d (no affine)] -> [Dropout] -> Linear.

    Args:
        dropout: probability before the Linear layer (0 = none; CoCLR fine-tunes with 0.9).
        batchnorm: normalise features first (CoCLR's linear probe), without learned scale/shift.
    """

    def __init__(self, in_dim: int, num_classes: int, dropout: float = 0.0, batchnorm: bool = False):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_dim, self.out_dim = int(in_dim), int(num_classes)
        self.norm = nn.BatchNorm1d(in_dim, affine=False) if batchnorm else nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_dim, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(self.norm(x)))


class Encoder(nn.Module):
    """Backbone + head, producing L2-normalised embeddings (B, dim).

    ``forward_from(forward_until(x, k), k) == forward(x)``: the head and normalisation come at
    the end of ``forward_from``, so a feature map mixed after block k can be finished here.

    Attributes:
        backbone, head; dim: the embedding size (``head.out_dim``).
    """

    def __init__(self, backbone: Backbone, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.dim = int(head.out_dim)

    @property
    def num_blocks(self) -> int:
        return self.backbone.num_blocks

    def forward_until(self, x: Tensor, k: int) -> Tensor:
        """The backbone's feature map after k blocks (see :meth:`Backbone.forward_until`)."""
        return self.backbone.forward_until(x, k)

    def forward_from(self, h: Tensor, k: int) -> Tensor:
        """Finish from a feature map after k blocks: remaining blocks, pool, head, L2-normalise."""
        return F.normalize(self.head(self.backbone.forward_from(h, k)), dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_from(x, 0)
