"""RFDN: Residual Feature Distillation Network.

Paper: J. Liu, J. Tang, G. Wu, "Residual Feature Distillation Network for Lightweight Image
Super-Resolution", ECCV 2020 Workshops (AIM 2020 efficient SR challenge winner).
Official code: github.com/njulj/RFDN.

The released checkpoint (`trained_model/RFDN_AIM.pth`, identical to NTIRE2022_ESR
`model_zoo/rfdn_baseline.pth`) is the AIM-2020 challenge entry: nf 50, **4** RFDB blocks, x4. The RFDN
paper's table reports a 6-block, nf 48 configuration; both are this class with different `nf` /
`num_blocks`.

Checkpoint layout: flat state dict, no prefix: `fea_conv`, `B{1..n}.{c1_d,c1_r,c2_d,c2_r,c3_d,c3_r,c4,c5}`,
`B{i}.esa.{conv1,conv_f,conv_max,conv2,conv3,conv3_,conv4}` (the full ESA, f = nf // 4), `c.0` (1x1 fuse of
all block outputs, then LeakyReLU 0.05), `LR_conv`, `upsampler.0` (3x3 conv to 3*s^2, then PixelShuffle).
The official weights expect RGB in [0, 255] (`rgb_range=255`); this module still takes and returns [0, 1].
"""
from __future__ import annotations

import torch
from torch import nn

from srcore.layers import ESA, conv, pixelshuffle_upsampler
from srcore.registry import register

_SLOPE = 0.05


class RFDB(nn.Module):
    """Residual feature distillation block.

    Three stages; each has a 1x1 "distill" conv (nf -> nf/2, LeakyReLU) and a 3x3 shallow-residual conv
    (LeakyReLU(conv(h) + h)) that feeds the next stage. A final 3x3 conv (nf -> nf/2, LeakyReLU) on the
    last residual output joins the three distilled parts; a 1x1 conv fuses the concat back to nf, then ESA.
    There is no block-level skip connection.
    """

    def __init__(self, nf: int, esa_channels: int | None = None):
        super().__init__()
        dc = nf // 2
        self.c1_d = conv(nf, dc, 1)
        self.c1_r = conv(nf, nf, 3)
        self.c2_d = conv(nf, dc, 1)
        self.c2_r = conv(nf, nf, 3)
        self.c3_d = conv(nf, dc, 1)
        self.c3_r = conv(nf, nf, 3)
        self.c4 = conv(nf, dc, 3)
        self.act = nn.LeakyReLU(_SLOPE, inplace=True)
        self.c5 = conv(dc * 4, nf, 1)
        self.esa = ESA(nf, esa_channels, full=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        h = x
        for dist, res in ((self.c1_d, self.c1_r), (self.c2_d, self.c2_r), (self.c3_d, self.c3_r)):
            parts.append(self.act(dist(h)))
            h = self.act(res(h) + h)
        parts.append(self.act(self.c4(h)))
        return self.esa(self.c5(torch.cat(parts, dim=1)))


class RFDN(nn.Module):
    """RFDN: head conv, `num_blocks` RFDBs (attributes B1..Bn), 1x1 fuse of all block outputs + LeakyReLU,
    3x3 LR conv with a global skip from the head, pixel-shuffle upsampler."""

    def __init__(self, scale: int, nf: int = 50, num_blocks: int = 4, in_ch: int = 3, out_ch: int = 3,
                 esa_channels: int | None = None, rgb_range: float = 255.0):
        super().__init__()
        self.rgb_range = float(rgb_range)
        self.num_blocks = num_blocks
        self.fea_conv = conv(in_ch, nf, 3)
        for i in range(1, num_blocks + 1):
            setattr(self, f"B{i}", RFDB(nf, esa_channels))
        self.c = nn.Sequential(conv(nf * num_blocks, nf, 1), nn.LeakyReLU(_SLOPE, inplace=True))
        self.LR_conv = conv(nf, nf, 3)
        self.upsampler = pixelshuffle_upsampler(nf, out_ch, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.fea_conv(x * self.rgb_range)
        outs = []
        h = fea
        for i in range(1, self.num_blocks + 1):
            h = getattr(self, f"B{i}")(h)
            outs.append(h)
        lr = self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea
        return self.upsampler(lr) / self.rgb_range


@register("rfdn", scales=(2, 3, 4), rgb_range=255.0, paper="Liu et al., ECCVW 2020 (AIM 2020 entry)")
def rfdn(scale: int, rgb_range: float = 255.0, nf: int = 50, num_blocks: int = 4, **kw) -> nn.Module:
    """RFDN; defaults are the AIM-2020 entry (nf 50, 4 RFDB) whose x4 weights are released.
    Pass nf=48, num_blocks=6 for the paper-table RFDN (no released weights)."""
    return RFDN(scale, nf=nf, num_blocks=num_blocks, rgb_range=rgb_range, **kw)
