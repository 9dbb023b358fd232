"""PAN: pixel attention network (Zhao et al., "Efficient Image Super-Resolution Using Pixel Attention",
ECCV Workshops 2020; official code: zhaohengyuan1/PAN).

Network (nf=40, unf=24, 16 SCPA blocks, about 261K params at x2/x3 and 272K at x4):

    x -> conv_first (3x3, 3->nf) -> fea
    fea + trunk_conv(SCPA_trunk(fea))                   (16 self-calibrated blocks with pixel attention)
    per stage: nearest upsample (x2, x3; x4 = two x2 stages) -> upconv (3x3) -> PA -> LReLU(0.2)
               -> HRconv (3x3) -> LReLU(0.2)
    conv_last (3x3, unf->3) + bilinear(x, scale)         (global skip on the interpolated input)

Official checkpoint (`PANx{2,4}_DF2K.pth`, trained on DF2K; flat state dict, no prefix, 140/146 tensors):

    conv_first.{weight,bias}
    SCPA_trunk.{0..15}.conv1_a.weight, .conv1_b.weight          1x1, nf -> nf/2, no bias
    SCPA_trunk.{i}.k1.0.weight                                  3x3, no bias
    SCPA_trunk.{i}.PAConv.k2.{weight,bias}                      1x1 gate (sigmoid)
    SCPA_trunk.{i}.PAConv.k3.weight, .PAConv.k4.weight          3x3, no bias
    SCPA_trunk.{i}.conv3.weight                                 1x1, nf -> nf, no bias
    trunk_conv, upconv1, att1.conv, HRconv1, [x4: upconv2, att2.conv, HRconv2], conv_last  (with bias)

The official weights work on RGB in [0, 1] (rgb_range 1).

The skeleton around the trunk (head conv, trunk conv + skip, pixel-attention upsampler, bilinear global
skip) is shared with A2N, which imports `PixelAttentionSRNet` from here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from srcore.layers import conv
from srcore.registry import register


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, negative_slope=0.2)


class PixelAttention(nn.Module):
    """PA: x * sigmoid(conv1x1(x)); key `conv`."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x))


class PAConv(nn.Module):
    """Pixel-attention convolution: k4(k3(x) * sigmoid(k2(x))); k2 is 1x1 with bias, k3/k4 are kxk without."""

    def __init__(self, channels: int, k: int = 3):
        super().__init__()
        self.k2 = conv(channels, channels, 1)
        self.k3 = conv(channels, channels, k, bias=False)
        self.k4 = conv(channels, channels, k, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.k4(self.k3(x) * torch.sigmoid(self.k2(x)))


class SCPA(nn.Module):
    """Self-calibrated block with pixel attention (after SCNet, Liu et al., CVPR 2020).

    Two half-width branches from 1x1 convs: a plain 3x3 conv (`k1`) and a PAConv; both LReLU(0.2);
    concatenated, fused by a 1x1 conv (`conv3`) and added to the input.
    """

    def __init__(self, nf: int, reduction: int = 2):
        super().__init__()
        width = nf // reduction
        self.conv1_a = conv(nf, width, 1, bias=False)
        self.conv1_b = conv(nf, width, 1, bias=False)
        self.k1 = nn.Sequential(conv(width, width, 3, bias=False))
        self.PAConv = PAConv(width)
        self.conv3 = conv(width * reduction, nf, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = _lrelu(self.k1(_lrelu(self.conv1_a(x))))
        b = _lrelu(self.PAConv(_lrelu(self.conv1_b(x))))
        return x + self.conv3(torch.cat([a, b], dim=1))


class PixelAttentionSRNet(nn.Module):
    """The PAN/A2N skeleton around a trunk of blocks.

    `trunk` is stored under the attribute `trunk_name` (`SCPA_trunk` for PAN, `AAB_trunk` for A2N) so the
    state-dict keys equal the official ones. The upsampler has one nearest+conv stage for x2/x3 and two
    x2 stages for x4 (`upconv{i}`, `att{i}`, `HRconv{i}`). Input and output are RGB in [0, 1]; inside, the
    signal is scaled to `rgb_range` (the range of the official weights).
    """

    def __init__(self, trunk_name: str, trunk: nn.Module, scale: int, nf: int, unf: int, *,
                 in_ch: int = 3, out_ch: int = 3, rgb_range: float = 1.0):
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {scale}")
        self.scale = scale
        self.rgb_range = float(rgb_range)
        self.trunk_name = trunk_name
        self.conv_first = conv(in_ch, nf, 3)
        setattr(self, trunk_name, trunk)
        self.trunk_conv = conv(nf, nf, 3)

        self.stage_factors = (2, 2) if scale == 4 else (scale,)
        ch = nf
        for i in range(1, len(self.stage_factors) + 1):
            setattr(self, f"upconv{i}", conv(ch, unf, 3))
            setattr(self, f"att{i}", PixelAttention(unf))
            setattr(self, f"HRconv{i}", conv(unf, unf, 3))
            ch = unf
        self.conv_last = conv(unf, out_ch, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.rgb_range
        fea = self.conv_first(x)
        fea = fea + self.trunk_conv(getattr(self, self.trunk_name)(fea))
        for i, factor in enumerate(self.stage_factors, start=1):
            fea = getattr(self, f"upconv{i}")(F.interpolate(fea, scale_factor=factor, mode="nearest"))
            fea = _lrelu(getattr(self, f"att{i}")(fea))
            fea = _lrelu(getattr(self, f"HRconv{i}")(fea))
        out = self.conv_last(fea)
        out = out + F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return out / self.rgb_range


class PAN(PixelAttentionSRNet):
    def __init__(self, scale: int, nf: int = 40, unf: int = 24, n_blocks: int = 16, *,
                 rgb_range: float = 1.0):
        trunk = nn.Sequential(*[SCPA(nf) for _ in range(n_blocks)])
        super().__init__("SCPA_trunk", trunk, scale, nf, unf, rgb_range=rgb_range)


@register("pan", scales=(2, 3, 4), rgb_range=1.0, paper="Zhao et al., ECCVW 2020")
def pan(scale: int, rgb_range: float = 1.0, **kw) -> nn.Module:
    return PAN(scale, rgb_range=rgb_range, **kw)
