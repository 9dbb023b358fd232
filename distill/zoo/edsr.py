"""EDSR (Lim et al., "Enhanced Deep Residual Networks for Single Image Super-Resolution", CVPRW 2017;
official PyTorch code: sanghyun-son/EDSR-PyTorch, `src/model/edsr.py`).

Network (EDSR-baseline: 16 residual blocks, 64 channels, res_scale 1; about 1.37M params at x2, 1.55M at
x3, 1.52M at x4; the full EDSR is 32 blocks, 256 channels, res_scale 0.1):

    x -> sub_mean -> head.0 (3x3)
    body: 16 x [conv3x3 -> ReLU -> conv3x3, * res_scale, + x], then body.16 (3x3), + head output
    tail.0: upsampler (per x2 step, or the single x3 step: conv n -> n*r^2, PixelShuffle(r); no activation)
    tail.1 (3x3, n -> 3) -> add_mean

Release checkpoint layout (`edsr_baseline_x{2,3,4}-*.pt`; flat state dict, no prefix):

    sub_mean.{weight,bias}, add_mean.{weight,bias}     fixed 1x1 mean shift (DIV2K mean, times rgb_range)
    head.0, body.{0..15}.body.{0,2}, body.16
    tail.0.0 (x2/x3) or tail.0.{0,2} (x4), tail.1

The release weights work on RGB in [0, 255] (rgb_range 255). No weights are shipped with srnas.
"""
from __future__ import annotations

import torch
from torch import nn

from srcore.layers import conv, pixelshuffle_upsampler
from srcore.registry import register

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Conv2d):
    """Fixed 1x1 conv: y = (x + sign * rgb_range * mean) / std per channel (keys `weight`, `bias`)."""

    def __init__(self, rgb_range: float, rgb_mean: tuple[float, float, float] = DIV2K_MEAN,
                 rgb_std: tuple[float, float, float] = (1.0, 1.0, 1.0), sign: int = -1):
        super().__init__(3, 3, kernel_size=1)
        std = torch.tensor(rgb_std)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1) / std.view(3, 1, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(rgb_mean) / std)
        self.requires_grad_(False)


class ResBlock(nn.Module):
    """x + res_scale * conv(ReLU(conv(x))); keys `body.{0,2}`."""

    def __init__(self, n_feats: int, k: int = 3, res_scale: float = 1.0):
        super().__init__()
        self.res_scale = res_scale
        self.body = nn.Sequential(conv(n_feats, n_feats, k), nn.ReLU(inplace=True), conv(n_feats, n_feats, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.body(x)
        if self.res_scale != 1:
            res = res * self.res_scale
        return x + res


def edsr_upsampler(n_feats: int, scale: int) -> nn.Sequential:
    """EDSR-style sub-pixel upsampler without activation: x2/x4/x8 as repeated (conv, PixelShuffle(2)),
    x3 as one (conv, PixelShuffle(3)). Keys `0`, `2`, ... are the convs."""
    if scale & (scale - 1) == 0 and scale > 1:
        steps = [2] * (scale.bit_length() - 1)
    elif scale == 3:
        steps = [3]
    else:
        raise ValueError(f"unsupported scale {scale}")
    layers: list[nn.Module] = []
    for r in steps:
        layers.extend(pixelshuffle_upsampler(n_feats, n_feats, r))
    return nn.Sequential(*layers)


class EDSR(nn.Module):
    """EDSR; input/output RGB in [0, 1], internally scaled to `rgb_range` as the official code expects."""

    def __init__(self, scale: int, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1.0, *,
                 rgb_range: float = 255.0, rgb_mean: tuple[float, float, float] = DIV2K_MEAN,
                 n_colors: int = 3):
        super().__init__()
        self.scale = scale
        self.rgb_range = float(rgb_range)
        self.sub_mean = MeanShift(rgb_range, rgb_mean, sign=-1)
        self.add_mean = MeanShift(rgb_range, rgb_mean, sign=1)
        self.head = nn.Sequential(conv(n_colors, n_feats, 3))
        self.body = nn.Sequential(*[ResBlock(n_feats, 3, res_scale) for _ in range(n_resblocks)],
                                  conv(n_feats, n_feats, 3))
        self.tail = nn.Sequential(edsr_upsampler(n_feats, scale), conv(n_feats, n_colors, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.sub_mean(x * self.rgb_range))
        x = self.tail(x + self.body(x))
        return self.add_mean(x) / self.rgb_range


@register("edsr_baseline", scales=(2, 3, 4), rgb_range=255.0, paper="Lim et al., CVPRW 2017 (EDSR-baseline)")
def edsr_baseline(scale: int, rgb_range: float = 255.0, **kw) -> nn.Module:
    return EDSR(scale, rgb_range=rgb_range, **kw)
