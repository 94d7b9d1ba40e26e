"""A small 3-D CNN with S3D's block API, sized for CPU lessons.

Four blocks of Conv3d -> BatchNorm3d -> ReLU, numbered from 1; each block first downsamples with
a strided convolution, then refines with a 3x3x3 convolution (blocks 2-4). Channels w, 2w, 4w, 8w;
feat_dim = 8w. Like S3D, space shrinks first and time later, so a feature map keeps a
temporal extent worth cutting after blocks 1-2:

    block 1  conv 3x5x5, stride (1, 2, 2)                      -> ( w, T,    H/2,  W/2)
    block 2  conv 3x3x3, stride (1, 2, 2); conv 3x3x3           -> (2w, T,    H/4,  W/4)
    block 3  conv 3x3x3, stride 2;         conv 3x3x3           -> (4w, T/2,  H/8,  W/8)
    block 4  conv 3x3x3, stride 2;         conv 3x3x3           -> (8w, T/4,  H/16, W/16)

(sizes round up: a stride-2 layer maps n to ceil(n / 2)). For the ``tiny`` preset's
(3, 8, 32, 32) clip at w=16: (16, 8, 16, 16), (32, 8, 8, 8), (64, 4, 4, 4), (128, 2, 2, 2);
for the ``cpu`` preset's (3, 8, 40, 40) at w=24: (24, 8, 20, 20), (48, 8, 10, 10),
(96, 4, 5, 5), (192, 2, 3, 3). BatchNorm: PyTorch defaults. Kaiming-normal convolutions.
"""
from __future__ import annotations

from torch import nn

from .base import Backbone


def _conv_bn_relu(c_in: int, c_out: int, kernel, stride) -> list[nn.Module]:
    padding = tuple(k // 2 for k in kernel)
    return [nn.Conv3d(c_in, c_out, kernel, stride, padding, bias=False),
            nn.BatchNorm3d(c_out), nn.ReLU(inplace=True)]


class Small3D(Backbone):
    """Small 3-D CNN, 4 blocks, channels (w, 2w, 4w, 8w), feat_dim 8w.

    Args:
        in_channels: input channels (3 for RGB, 2 for flow).
        width: w, the channels of the first block.
    """

    def __init__(self, in_channels: int = 3, width: int = 16):
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        w = width
        blocks = [
            nn.Sequential(*_conv_bn_relu(in_channels, w, (3, 5, 5), (1, 2, 2))),
            nn.Sequential(*_conv_bn_relu(w, 2 * w, (3, 3, 3), (1, 2, 2)),
                          *_conv_bn_relu(2 * w, 2 * w, (3, 3, 3), 1)),
            nn.Sequential(*_conv_bn_relu(2 * w, 4 * w, (3, 3, 3), 2),
                          *_conv_bn_relu(4 * w, 4 * w, (3, 3, 3), 1)),
            nn.Sequential(*_conv_bn_relu(4 * w, 8 * w, (3, 3, 3), 2),
                          *_conv_bn_relu(8 * w, 8 * w, (3, 3, 3), 1)),
        ]
        super().__init__(in_channels, 8 * w, blocks)
        self.width = w
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def extra_repr(self) -> str:
        return super().extra_repr() + f", width={self.width}"
