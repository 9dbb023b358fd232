"""Building blocks shared by the zoo and the search space: padded convs, pixel-shuffle upsampler, ESA."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv(in_ch: int, out_ch: int, k: int, *, bias: bool = True, dilation: int = 1, groups: int = 1,
         stride: int = 1) -> nn.Conv2d:
    """A kxk convolution with 'same' padding (for odd k and stride 1)."""
    return nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=(k - 1) // 2 * dilation, dilation=dilation,
                     groups=groups, bias=bias)


def pixelshuffle_upsampler(in_ch: int, out_ch: int, scale: int, k: int = 3) -> nn.Sequential:
    """conv(in -> out * scale^2) then PixelShuffle(scale): state-dict keys `0.weight`, `0.bias`."""
    return nn.Sequential(conv(in_ch, out_ch * scale * scale, k), nn.PixelShuffle(scale))


class ESA(nn.Module):
    """Enhanced spatial attention (Liu et al., RFANet, CVPR 2020) as used in RFDN and RLFN.

    full=True is RFDN's version (with `conv_max` and `conv3_`); full=False is RLFN's reduced one.
    Its stride-2 3x3 conv (no padding) and 7x7 max-pool (stride 3) need inputs of at least MIN_INPUT pixels
    per side: (15 - 3) // 2 + 1 = 7.
    """

    MIN_INPUT = 15

    def __init__(self, channels: int, f: int | None = None, *, full: bool = True):
        super().__init__()
        f = channels // 4 if f is None else f
        self.full = full
        self.conv1 = nn.Conv2d(channels, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        if full:
            self.conv_max = nn.Conv2d(f, f, 3, padding=1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2, padding=0)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        if full:
            self.conv3_ = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        c1 = F.max_pool2d(self.conv2(c1_), kernel_size=7, stride=3)
        if self.full:
            c3 = self.conv3_(F.relu(self.conv3(F.relu(self.conv_max(c1)))))
        else:
            c3 = self.conv3(c1)
        c3 = F.interpolate(c3, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(c3 + self.conv_f(c1_)))


def min_input_size(*models: nn.Module) -> int:
    """The smallest input side the networks accept: the largest `MIN_INPUT` of their modules (1 if none)."""
    return max([1] + [getattr(m, "MIN_INPUT", 1) for model in models for m in model.modules()])
