"""SPAN: Swift Parameter-free Attention Network, and DSCF (the same layout at 26 channels).

Paper: C. Wan, H. Yu, Z. Li, Y. Chen, Y. Zou, Y. Liu, X. Yin, K. Zuo, "Swift Parameter-free Attention
Network for Efficient Super-Resolution", arXiv 2311.12770 (NTIRE 2024 ESR winner, team XiaomiMM).
Official code: hongyuanyu/SPAN. DSCF: the NTIRE 2025 ESR winner (team EMSR, "DSCLoRA", arXiv 2504.11271),
SPAN's network at 26 channels, distilled with ConvLoRA adapters that are merged into its weights.

Network (nf channels, 6 SPAB blocks):

    x' = (x - DIV2K mean) * 255
    f0 = conv_1(x')                                           (Conv3XC, 3 -> nf)
    block_i: c1_r -> SiLU -> c2_r -> SiLU -> c3_r = o3;       (three Conv3XC, nf -> nf)
             out = (o3 + in) * (sigmoid(o3) - 0.5)            (parameter-free attention)
    conv_cat(cat[f0, conv_2(b6), b1, SiLU(c1_r) of block 6])  (1x1, 4 nf -> nf)
    upsampler: 3x3 conv to 3 s^2, PixelShuffle(s)             (no global skip; the output is RGB in [0, 1])

Training-time form (`deploy=False`): every Conv3XC has its multi-branch weights (`sk`, `conv.{0,1,2}`,
expansion 2); `compress.reparam.reparameterize` fuses them into the deployed form exactly.
Deployed form (`deploy=True`, the default): each Conv3XC is one 3x3 `eval_conv`, the layout of the
released files: 44 tensors, `conv_1.eval_conv`, `block_{1..6}.c{1,2,3}_r.eval_conv`, `conv_2.eval_conv`,
`conv_cat`, `upsampler.0` (`team38_span_ch28_slim.pth`, 28 channels; `team23_DSCF.pth`, 26 channels).

The official weights take (x - mean) * 255 in and give RGB in [0, 1] out: the input is scaled by
`rgb_range` but, unlike the rest of the zoo, the output is not divided by it (SPAN's own code does the
same). Taken and returned: RGB in [0, 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compress.blocks import Conv3XC
from srcore.layers import conv, pixelshuffle_upsampler
from srcore.registry import register

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


class SPAB(nn.Module):
    """Swift parameter-free attention block: three Conv3XC with SiLU, then (o3 + x) * (sigmoid(o3) - 0.5).

    Returns the block output and SiLU of its first conv (SPAN's final concat taps it; the official code
    returns the first conv's output after its in-place SiLU, so the tap is the activated one)."""

    def __init__(self, nf: int, deploy: bool = True):
        super().__init__()
        self.c1_r = Conv3XC(nf, nf, gain=2, deploy=deploy)
        self.c2_r = Conv3XC(nf, nf, gain=2, deploy=deploy)
        self.c3_r = Conv3XC(nf, nf, gain=2, deploy=deploy)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out1 = F.silu(self.c1_r(x))
        out3 = self.c3_r(F.silu(self.c2_r(out1)))
        return (out3 + x) * (torch.sigmoid(out3) - 0.5), out1


class SPAN(nn.Module):
    """SPAN: Conv3XC head, `num_blocks` SPABs (block_1..block_n), Conv3XC `conv_2`, 1x1 `conv_cat` over
    [head, conv_2 output, block 1 output, last block's activated first conv], pixel-shuffle upsampler."""

    def __init__(self, scale: int, nf: int = 28, num_blocks: int = 6, in_ch: int = 3, out_ch: int = 3,
                 rgb_range: float = 255.0, rgb_mean: tuple[float, ...] = DIV2K_MEAN, deploy: bool = True):
        super().__init__()
        self.rgb_range = float(rgb_range)
        self.num_blocks = num_blocks
        self.register_buffer("mean", torch.tensor(rgb_mean).view(1, -1, 1, 1), persistent=False)
        self.conv_1 = Conv3XC(in_ch, nf, gain=2, deploy=deploy)
        for i in range(1, num_blocks + 1):
            setattr(self, f"block_{i}", SPAB(nf, deploy=deploy))
        self.conv_cat = conv(4 * nf, nf, 1)
        self.conv_2 = Conv3XC(nf, nf, gain=2, deploy=deploy)
        self.upsampler = pixelshuffle_upsampler(nf, out_ch, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.conv_1((x - self.mean) * self.rgb_range)
        h = fea
        for i in range(1, self.num_blocks + 1):
            h, first = getattr(self, f"block_{i}")(h)
            if i == 1:
                b1 = h
        return self.upsampler(self.conv_cat(torch.cat([fea, self.conv_2(h), b1, first], 1)))


@register("span", scales=(2, 3, 4), rgb_range=255.0, paper="Wan et al., arXiv 2311.12770 (NTIRE 2024 ESR)")
def span(scale: int, rgb_range: float = 255.0, nf: int = 28, num_blocks: int = 6, deploy: bool = True,
         **kw) -> nn.Module:
    """SPAN (28 channels as the NTIRE 2024 entry). deploy=False: the training-time Conv3XC branches.
    Official weights: Amazingren/NTIRE2024_ESR model_zoo/team38_span_ch28_slim.pth (x4)."""
    return SPAN(scale, nf=nf, num_blocks=num_blocks, rgb_range=rgb_range, deploy=deploy, **kw)


@register("dscf", scales=(2, 3, 4), rgb_range=255.0, paper="DSCLoRA, arXiv 2504.11271 (NTIRE 2025 ESR)")
def dscf(scale: int, rgb_range: float = 255.0, nf: int = 26, num_blocks: int = 6, deploy: bool = True,
         **kw) -> nn.Module:
    """DSCF: the SPAN layout at 26 channels. deploy=False: the training-time Conv3XC branches.
    Official weights: Amazingren/NTIRE2025_ESR model_zoo/team23_DSCF.pth (x4)."""
    return SPAN(scale, nf=nf, num_blocks=num_blocks, rgb_range=rgb_range, deploy=deploy, **kw)
