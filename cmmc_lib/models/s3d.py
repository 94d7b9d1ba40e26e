"""S3D in the five-block layout of CoCLR (TengdaHan/CoCLR ``backbone/s3dg.py``).

S3D (Xie et al., ECCV 2018) is Inception-v1 with every 3x3x3 convolution separated into a
spatial (1, k, k) and a temporal (k, 1, 1) convolution. Blocks are numbered from 1 (the cut
``ssl.layer_k = k`` takes the map after block k); for a (3, 32, 128, 128) clip:

    block 1  stem: separable 7x7x7 conv, stride 2            ->   (64, 16, 64, 64)
    block 2  maxpool 1x3x3 /2, 1x1x1 conv, separable 3x3x3   ->  (192, 16, 32, 32)
    block 3  maxpool 1x3x3 /2, Mixed_3b, Mixed_3c            ->  (480, 16, 16, 16)   (the paper preset's cut)
    block 4  maxpool 3x3x3 /2, Mixed_4b .. Mixed_4f          ->  (832,  8,  8,  8)
    block 5  maxpool 2x2x2 /2, Mixed_5b, Mixed_5c            -> (1024,  4,  4,  4)

then adaptive global average pooling -> (B, 1024). Any input channel count works (flow: 2).
The smallest input is 5 frames of 17x17 pixels; 8x64x64 gives block outputs of
(64, 4, 32, 32) ... (1024, 1, 2, 2).

BatchNorm: PyTorch's defaults (eps 1e-5, momentum 0.1), as CoCLR's s3dg.py uses (the
TensorFlow S3D used eps 1e-3, momentum 0.001). Convolutions are initialised N(0, 0.01) as there.
No feature gating (S3D, not S3D-G), as CoCLR trains it.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Backbone

# Inception branch widths: [1x1, 3x3 reduce, 3x3, 3x3 reduce (second), 3x3 (second), pool proj]
_MIXED = {
    "3b": (192, (64, 96, 128, 16, 32, 32)),
    "3c": (256, (128, 128, 192, 32, 96, 64)),
    "4b": (480, (192, 96, 208, 16, 48, 64)),
    "4c": (512, (160, 112, 224, 24, 64, 64)),
    "4d": (512, (128, 128, 256, 24, 64, 64)),
    "4e": (512, (112, 144, 288, 32, 64, 64)),
    "4f": (528, (256, 160, 320, 32, 128, 128)),
    "5b": (832, (256, 160, 320, 32, 128, 128)),
    "5c": (832, (384, 192, 384, 48, 128, 128)),
}


def _init_conv_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.normal_(m.weight, mean=0.0, std=0.01)
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ConvBNReLU3d(nn.Sequential):
    """Conv3d (no bias) -> BatchNorm3d -> ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel, stride=1, padding=0):
        super().__init__(nn.Conv3d(c_in, c_out, kernel, stride, padding, bias=False),
                         nn.BatchNorm3d(c_out), nn.ReLU(inplace=True))


class SepConv3d(nn.Sequential):
    """A k x k x k convolution separated into spatial (1, k, k) then temporal (k, 1, 1),
    each followed by BatchNorm and ReLU. ``stride`` is an int or (t, s)."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int | tuple[int, int] = 1,
                 padding: int = 0):
        t_stride, s_stride = (stride, stride) if isinstance(stride, int) else stride
        super().__init__(
            ConvBNReLU3d(c_in, c_out, (1, k, k), (1, s_stride, s_stride), (0, padding, padding)),
            ConvBNReLU3d(c_out, c_out, (k, 1, 1), (t_stride, 1, 1), (padding, 0, 0)),
        )


class SepInception(nn.Module):
    """Inception module with separable 3x3x3 branches; output channels = the sum of the
    four branch widths. (B, c_in, T, H, W) -> (B, out_channels, T, H, W)."""

    def __init__(self, c_in: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        b0, b1_reduce, b1, b2_reduce, b2, b3 = widths
        self.branch0 = ConvBNReLU3d(c_in, b0, 1)
        self.branch1 = nn.Sequential(ConvBNReLU3d(c_in, b1_reduce, 1),
                                     SepConv3d(b1_reduce, b1, 3, padding=1))
        self.branch2 = nn.Sequential(ConvBNReLU3d(c_in, b2_reduce, 1),
                                     SepConv3d(b2_reduce, b2, 3, padding=1))
        self.branch3 = nn.Sequential(nn.MaxPool3d(3, stride=1, padding=1),
                                     ConvBNReLU3d(c_in, b3, 1))
        self.out_channels = b0 + b1 + b2 + b3

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


def _mixed(*names: str) -> list[nn.Module]:
    return [SepInception(*_MIXED[n]) for n in names]


class S3D(Backbone):
    """S3D backbone, five blocks, feat_dim 1024 (see the module docstring for shapes).

    Args:
        in_channels: input channels (3 for RGB, 2 for optical flow).
    """

    def __init__(self, in_channels: int = 3):
        blocks = [
            nn.Sequential(SepConv3d(in_channels, 64, 7, stride=2, padding=3)),
            nn.Sequential(nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
                          ConvBNReLU3d(64, 64, 1),
                          SepConv3d(64, 192, 3, padding=1)),
            nn.Sequential(nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)), *_mixed("3b", "3c")),
            nn.Sequential(nn.MaxPool3d(3, 2, 1), *_mixed("4b", "4c", "4d", "4e", "4f")),
            nn.Sequential(nn.MaxPool3d(2, 2, 0), *_mixed("5b", "5c")),
        ]
        super().__init__(in_channels, 1024, blocks)
        _init_conv_bn(self)
