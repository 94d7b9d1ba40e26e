"""ST-GCN skeleton encoder in the size SkeletonCLR / CrosSCLR pretrain (Li et al., CVPR 2021).

Input (N, C, T, V, M): N samples, C=3 coordinates, T frames, V=25 NTU joints, M=2 persons.
Every block outputs (N, C', T', V, M), persons last, so a tesseract cut over the letters
(C, T, H) of a (B, C, T, H, W) map is a cut over (C, T, V) that leaves the persons uncut.

Ten ST-GCN blocks (the ST-GCN papers call them units: a spatial graph convolution over the joints,
then a temporal 9x1 convolution, with a residual connection; ``num_blocks = 10``), numbered from 1
as every backbone's. With width w (SkeletonCLR: ``hidden_channels=16``, ``hidden_dim=256``,
"1/4 of the standard ST-GCN channels"):

    block  1-4    5      6-7    8      9      10
    out    w      2w     2w     4w     4w     16w        (w=16: 16 .. 256, feat_dim 256)
    stride 1      2      1      2      1      1          (temporal)

For (3, 50, 25, 2): blocks 1-4 -> (w, 50, 25, 2), 5-7 -> (2w, 25, 25, 2), 8-9 -> (4w, 13, 25, 2),
10 -> (16w, 13, 25, 2). Block 1 also holds the input BatchNorm over (V*C) channels ("data_bn").
Learnable edge-importance masks on every block, dropout 0.5 inside blocks 2-10, as SkeletonCLR.
Pooling: mean over T and V, then over persons -> (N, 16w).

Graph: the skeleton layout of the dataset (``layout``, a key of
:data:`cmmc_lib.registry.SKELETON_LAYOUTS`: NTU RGB+D's 25 joints by default, or the synthetic
figure's 15), spatial-configuration partition (root / centripetal / centrifugal, 3 adjacency
matrices) around the layout's centre (NTU: joint 21, the spine), as the ST-GCN reference code
builds it: hop distances are computed up to ``max_hop=1``, so joints farther than one hop from
the centre count as equally far and their edges fall in the "root" partition. We keep that quirk
because the SkeletonCLR numbers were obtained with it.

Initialisation (SkeletonCLR / CrosSCLR's ``weights_init``): convolution and linear weights
N(0, 0.02), biases 0, BatchNorm weights N(1, 0.02) and biases 0 (:func:`skeletonclr_init`).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..registry import SKELETON_LAYOUTS, lookup
from .base import Backbone

NTU_NUM_JOINTS = SKELETON_LAYOUTS["ntu25"].num_joints
NTU_CENTER_JOINT = SKELETON_LAYOUTS["ntu25"].center + 1  # 1-based: the spine joint
# 1-based bone list of the NTU RGB+D skeleton (the Kinect v2 joint order).
NTU_EDGES = tuple((c + 1, p + 1) for c, p in SKELETON_LAYOUTS["ntu25"].bones)


def ntu_spatial_adjacency(max_hop: int = 1) -> Tensor:
    """The (3, 25, 25) spatial-partition adjacency of the NTU skeleton (see
    :func:`spatial_adjacency`)."""
    return spatial_adjacency("ntu25", max_hop)


def spatial_adjacency(layout: str = "ntu25", max_hop: int = 1) -> Tensor:
    """The (3, V, V) spatial-partition adjacency of a skeleton layout.

    ``A[k, j, i]`` weights joint i's features in joint j's output for partition k (root,
    centripetal, centrifugal); each column of the summed matrix sums to 1 (in-degree normalised,
    ST-GCN's ``normalize_digraph``).
    """
    spec = lookup(SKELETON_LAYOUTS, layout, "skeleton layout")
    v = spec.num_joints
    link = torch.eye(v)
    for i, j in spec.bones:
        link[i, j] = link[j, i] = 1.0
    hop = torch.full((v, v), float("inf"))
    reach = torch.eye(v)
    for d in range(max_hop + 1):
        hop[(reach > 0) & torch.isinf(hop)] = d
        reach = reach @ link
    adjacency = (hop <= max_hop).float()
    normalised = adjacency / adjacency.sum(0, keepdim=True)    # divide column i by its degree
    center = spec.center
    to_center = hop[:, center]
    parts = []
    for d in range(max_hop + 1):
        at_d = hop == d
        root = torch.where(at_d & (to_center[:, None] == to_center[None, :]), normalised, 0.0)
        close = torch.where(at_d & (to_center[:, None] > to_center[None, :]), normalised, 0.0)
        further = torch.where(at_d & (to_center[:, None] < to_center[None, :]), normalised, 0.0)
        parts += [root] if d == 0 else [root + close, further]
    return torch.stack(parts)


class STGCNUnit(nn.Module):
    """One ST-GCN unit on (N*M, C, T, V): graph conv -> BN, ReLU, temporal conv (9x1), BN,
    dropout -> + residual -> ReLU."""

    def __init__(self, c_in: int, c_out: int, adjacency: Tensor, stride: int = 1,
                 residual: bool = True, dropout: float = 0.0, temporal_kernel: int = 9):
        super().__init__()
        self.register_buffer("A", adjacency.clone(), persistent=False)
        self.edge_importance = nn.Parameter(torch.ones_like(adjacency))
        k = adjacency.shape[0]
        self.graph_conv = nn.Conv2d(c_in, c_out * k, kernel_size=1)
        pad = (temporal_kernel - 1) // 2
        self.temporal = nn.Sequential(
            nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, (temporal_kernel, 1), (stride, 1), (pad, 0)),
            nn.BatchNorm2d(c_out), nn.Dropout(dropout, inplace=True))
        if not residual:
            self.residual = None
        elif c_in == c_out and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = nn.Sequential(nn.Conv2d(c_in, c_out, 1, (stride, 1)),
                                          nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        n, _, t, v = x.shape
        k = self.A.shape[0]
        y = self.graph_conv(x).view(n, k, -1, t, v)
        y = torch.einsum("nkctv,kvw->nctw", y, self.A * self.edge_importance)
        y = self.temporal(y.contiguous())
        if self.residual is not None:
            y = y + self.residual(x)
        return self.relu(y)


class PersonBlock(nn.Module):
    """Runs an ST-GCN unit on (N, C, T, V, M) maps: persons fold into the batch and back.

    With ``data_bn`` (the first block), the raw input is first normalised by a BatchNorm1d
    over the V*C coordinate channels, per person, as in ST-GCN.
    """

    def __init__(self, unit: STGCNUnit, data_bn: nn.BatchNorm1d | None = None):
        super().__init__()
        self.data_bn = data_bn
        self.unit = unit

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5:
            raise ValueError(f"ST-GCN blocks take (N, C, T, V, M) tensors, got shape {tuple(x.shape)}")
        n, c, t, v, m = x.shape
        if v != self.unit.A.shape[-1]:
            raise ValueError(f"this ST-GCN's graph has {self.unit.A.shape[-1]} joints but the input has {v} "
                             f"(shape {tuple(x.shape)}): build it with the dataset's skeleton layout")
        x = x.permute(0, 4, 1, 2, 3)                                    # (N, M, C, T, V)
        if self.data_bn is not None:
            x = x.permute(0, 1, 4, 2, 3).reshape(n * m, v * c, t)       # (N*M, V*C, T)
            x = self.data_bn(x).view(n, m, v, c, t).permute(0, 1, 3, 4, 2)
        y = self.unit(x.reshape(n * m, c, t, v))                        # (N*M, C', T', V)
        return y.view(n, m, *y.shape[1:]).permute(0, 2, 3, 4, 1)        # (N, C', T', V, M)


class STGCN(Backbone):
    """ST-GCN encoder, 10 blocks (one unit each), feat_dim = 16 * width (see module docstring).

    Args:
        in_channels: coordinates per joint (3: x, y, z; the motion stream is also 3).
        width: channels of the first units; 16 is SkeletonCLR's size.
        dropout: dropout inside units 1-9 (SkeletonCLR: 0.5).
        layout: the skeleton layout whose graph the units convolve over (``ntu25``, ``synthetic15``).
    """

    def __init__(self, in_channels: int = 3, width: int = 16, dropout: float = 0.5, layout: str = "ntu25"):
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        a = spatial_adjacency(layout)
        w = width
        plan = [(in_channels, w, 1), (w, w, 1), (w, w, 1), (w, w, 1), (w, 2 * w, 2),
                (2 * w, 2 * w, 1), (2 * w, 2 * w, 1), (2 * w, 4 * w, 2), (4 * w, 4 * w, 1),
                (4 * w, 16 * w, 1)]
        blocks = []
        for i, (c_in, c_out, stride) in enumerate(plan):
            unit = STGCNUnit(c_in, c_out, a, stride, residual=i > 0, dropout=dropout if i > 0 else 0.0)
            data_bn = nn.BatchNorm1d(in_channels * a.shape[1]) if i == 0 else None
            blocks.append(PersonBlock(unit, data_bn))
        super().__init__(in_channels, 16 * w, blocks)
        self.width = w
        self.layout = layout
        self.num_joints = a.shape[1]
        skeletonclr_init(self)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", width={self.width}, layout={self.layout}"


def skeletonclr_init(module: nn.Module) -> nn.Module:
    """SkeletonCLR's initialisation, in place: every Conv/Linear weight N(0, 0.02) and bias 0,
    every BatchNorm weight N(1, 0.02) and bias 0. Returns ``module``."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module
