"""SPANV2: the NTIRE 2026 efficient-SR winner (team XiaomiMM), SPAN's successor.

Official code: Amazingren/NTIRE2026_ESR `models/team22_SPANV2_ESR.py` (the team's fast path calls a custom
CUDA op for the guided attention; this is the plain-PyTorch path, which computes the same function).

Network (nf = 32 channels, 5 blocks, no head conv, no bias in any 3x3 conv):

    block_1: c1 -> ReLU -> c2 -> ReLU -> c3 -> ReLU                 (3 -> nf)
    block_i (i >= 2): f3 = c3(ReLU(c2(ReLU(c1(x)))));
             out = (x + f3) * guidance_map_conv(f3)                (a 1x1 conv with bias: the guidance map)
    conv_near: depthwise 3x3, 3 -> 3 s^2, no bias, initialised as nearest-neighbour replication of the
               input (the NCNet/ABPN anchor) and learned
    depthwise_conv (3x3, per channel) and pointwise_conv (1x1 -> 3 s^2) over cat[conv_near(x), block_5],
    then PixelShuffle(s)

Training-time form (`deploy=False`): every 3x3 conv is a bias-free Conv3XC with its multi-branch weights
(`sk`, `conv.{0,1,2}`, expansion 2); `compress.reparam.reparameterize` fuses them exactly. Deployed form
(`deploy=True`, the default): one 3x3 conv per Conv3XC under the key `conv`, the layout of the released
file `team22_spanv2_c2.pth`: 26 tensors, `block_{1..5}.c{1,2,3}.conv.weight`,
`block_{2..5}.guidance_map_conv.{weight,bias}`, `conv_near.weight`, `depthwise_conv.weight`,
`pointwise_conv.weight`.

The official weights work on RGB in [0, 1] (the team's code keeps `img_range`/`rgb_mean` arguments but
does not use them; the challenge script feeds [0, 1]).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compress.blocks import Conv3XC
from srcore.registry import register


class SPABV2(nn.Module):
    """Three bias-free 3x3 Conv3XC with ReLU; with in == out, (x + f3) scaled by a 1x1 guidance map of f3."""

    def __init__(self, in_ch: int, nf: int, deploy: bool = True):
        super().__init__()
        self.guided = in_ch == nf
        self.c1 = Conv3XC(in_ch, nf, gain=2, bias=False, deploy=deploy, eval_name="conv")
        self.c2 = Conv3XC(nf, nf, gain=2, bias=False, deploy=deploy, eval_name="conv")
        self.c3 = Conv3XC(nf, nf, gain=2, bias=False, deploy=deploy, eval_name="conv")
        if self.guided:
            self.guidance_map_conv = nn.Conv2d(nf, nf, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f3 = self.c3(F.relu(self.c2(F.relu(self.c1(x)))))
        if self.guided:
            return (x + f3) * self.guidance_map_conv(f3)
        return F.relu(f3)


def nearest_anchor_(conv: nn.Conv2d) -> None:
    """Set a depthwise 3x3 conv (C -> C s^2) so that PixelShuffle(s) of its output is the nearest-neighbour
    upsampled input: every one of the s^2 outputs of channel c copies channel c (a centre tap of 1)."""
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, 0, 1, 1] = 1.0


class SPANV2(nn.Module):
    """SPANV2: `num_blocks` SPABV2 blocks (block_1: in_ch -> nf), a learned nearest anchor `conv_near`,
    depthwise + pointwise fusion of [anchor, features] to in_ch * s^2, PixelShuffle(s)."""

    def __init__(self, scale: int, nf: int = 32, num_blocks: int = 5, in_ch: int = 3, rgb_range: float = 1.0,
                 deploy: bool = True):
        super().__init__()
        self.rgb_range = float(rgb_range)
        self.num_blocks = num_blocks
        for i in range(1, num_blocks + 1):
            setattr(self, f"block_{i}", SPABV2(in_ch if i == 1 else nf, nf, deploy=deploy))
        up = in_ch * scale * scale
        self.conv_near = nn.Conv2d(in_ch, up, 3, padding=1, groups=in_ch, bias=False)
        nearest_anchor_(self.conv_near)
        self.depthwise_conv = nn.Conv2d(up + nf, up + nf, 3, padding=1, groups=up + nf, bias=False)
        self.pointwise_conv = nn.Conv2d(up + nf, up, 1, bias=False)
        self.depth_to_space = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.rgb_range
        h = x
        for i in range(1, self.num_blocks + 1):
            h = getattr(self, f"block_{i}")(h)
        out = self.pointwise_conv(self.depthwise_conv(torch.cat([self.conv_near(x), h], 1)))
        return self.depth_to_space(out) / self.rgb_range


@register("spanv2", scales=(2, 3, 4), rgb_range=1.0, paper="XiaomiMM, NTIRE 2026 ESR winner (SPANV2)")
def spanv2(scale: int, rgb_range: float = 1.0, nf: int = 32, num_blocks: int = 5, deploy: bool = True,
           **kw) -> nn.Module:
    """SPANV2 (32 channels, 5 blocks). deploy=False: the training-time Conv3XC branches.
    Official weights: Amazingren/NTIRE2026_ESR model_zoo/team22_spanv2_c2.pth (x4)."""
    return SPANV2(scale, nf=nf, num_blocks=num_blocks, rgb_range=rgb_range, deploy=deploy, **kw)
