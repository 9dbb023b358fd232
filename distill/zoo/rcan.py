"""RCAN: residual channel attention network (Zhang et al., "Image Super-Resolution Using Very Deep Residual
Channel Attention Networks", ECCV 2018; official PyTorch code: yulunzhang/RCAN,
`RCAN_TestCode/code/model/rcan.py`).

Network (10 residual groups x 20 RCAB, 64 channels, reduction 16; about 15.4M params at x2, 15.6M at x4;
x8 weights were released too):

    x -> sub_mean -> head.0 (3x3)
    body: 10 x residual group [20 x RCAB, then conv3x3, + group input], then body.10 (3x3), + head output
    RCAB: x + CA(conv3x3(ReLU(conv3x3(x))))            (no residual scaling)
    CA:   y * sigmoid(conv1x1(ReLU(conv1x1(avgpool(y)))))   (64 -> 4 -> 64, with bias)
    tail.0: EDSR upsampler (conv + PixelShuffle per x2 step or one x3 step), tail.1 (3x3, 64 -> 3) -> add_mean

Release checkpoint layout (`RCAN_BIX{2,3,4,8}.pt`; flat state dict, no prefix):

    sub_mean.{weight,bias}, add_mean.{weight,bias}              fixed mean shift (DIV2K mean x rgb_range)
    head.0
    body.{g}.body.{b}.body.{0,2}                                g = 0..9, b = 0..19: the RCAB convs
    body.{g}.body.{b}.body.3.conv_du.{0,2}                      channel attention
    body.{g}.body.20, body.10
    tail.0.0 (x2/x3) or tail.0.{0,2} (x4), tail.1

The release weights work on RGB in [0, 255] (rgb_range 255). No weights are shipped with srnas.
"""
from __future__ import annotations

import torch
from torch import nn

from distill.zoo.edsr import DIV2K_MEAN, MeanShift, edsr_upsampler
from srcore.layers import conv
from srcore.registry import register


class CALayer(nn.Module):
    """Channel attention; keys `conv_du.{0,2}`."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.conv_du = nn.Sequential(
            conv(channels, channels // reduction, 1), nn.ReLU(inplace=True),
            conv(channels // reduction, channels, 1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(x.mean(dim=(2, 3), keepdim=True))


class RCAB(nn.Module):
    """Residual channel attention block; keys `body.{0,2}` (convs) and `body.3` (CALayer)."""

    def __init__(self, n_feats: int, reduction: int = 16, k: int = 3):
        super().__init__()
        self.body = nn.Sequential(
            conv(n_feats, n_feats, k), nn.ReLU(inplace=True), conv(n_feats, n_feats, k),
            CALayer(n_feats, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualGroup(nn.Module):
    """n_resblocks RCABs, then a 3x3 conv, plus a skip; keys `body.{0..n-1}` and `body.{n}`."""

    def __init__(self, n_feats: int, n_resblocks: int, reduction: int = 16, k: int = 3):
        super().__init__()
        self.body = nn.Sequential(*[RCAB(n_feats, reduction, k) for _ in range(n_resblocks)],
                                  conv(n_feats, n_feats, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class RCAN(nn.Module):
    """RCAN; input/output RGB in [0, 1], internally scaled to `rgb_range` as the official code expects."""

    def __init__(self, scale: int, n_resgroups: int = 10, n_resblocks: int = 20, n_feats: int = 64,
                 reduction: int = 16, *, rgb_range: float = 255.0,
                 rgb_mean: tuple[float, float, float] = DIV2K_MEAN, n_colors: int = 3):
        super().__init__()
        self.scale = scale
        self.rgb_range = float(rgb_range)
        self.sub_mean = MeanShift(rgb_range, rgb_mean, sign=-1)
        self.head = nn.Sequential(conv(n_colors, n_feats, 3))
        self.body = nn.Sequential(
            *[ResidualGroup(n_feats, n_resblocks, reduction) for _ in range(n_resgroups)],
            conv(n_feats, n_feats, 3),
        )
        self.tail = nn.Sequential(edsr_upsampler(n_feats, scale), conv(n_feats, n_colors, 3))
        self.add_mean = MeanShift(rgb_range, rgb_mean, sign=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.sub_mean(x * self.rgb_range))
        x = self.tail(x + self.body(x))
        return self.add_mean(x) / self.rgb_range


@register("rcan", scales=(2, 3, 4, 8), rgb_range=255.0, paper="Zhang et al., ECCV 2018")
def rcan(scale: int, rgb_range: float = 255.0, **kw) -> nn.Module:
    return RCAN(scale, rgb_range=rgb_range, **kw)
