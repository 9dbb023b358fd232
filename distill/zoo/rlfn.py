"""RLFN: Residual Local Feature Network (and its smaller RLFN-S).

Paper: F. Kong, M. Li, S. Liu, D. Liu, J. He, Y. Bai, F. Chen, L. Fu, "Residual Local Feature Network
for Efficient Super-Resolution", CVPR 2022 Workshops (NTIRE 2022 ESR).
Official code: github.com/bytedance/RLFN.

Released weights: `model_zoo/rlfn_x{2,4}.pth` (nf 52) and `model_zoo/rlfn_s_x{2,4}.pth` (nf 48), both with
6 RLFB blocks. Flat state dicts, no prefix: `conv_1`, `block_{1..6}.{c1_r,c2_r,c3_r,c5}`,
`block_{i}.esa.{conv1,conv_f,conv2,conv3,conv4}` (the reduced ESA with 16 channels, no conv_max/conv3_),
`conv_2`, `upsampler.0` (3x3 conv to 3*s^2, then PixelShuffle).
The official weights expect RGB in [0, 255] (`rgb_range=255`); this module still takes and returns [0, 1].
`skip="nearest"|"bicubic"` adds an image-space skip (srcore/skip.py) and zeroes the last conv: the form
tools/train.py uses for a teacher trained here (with rgb_range=1); the official weights have none.
"""
from __future__ import annotations

import torch
from torch import nn

from srcore.layers import ESA, conv, pixelshuffle_upsampler
from srcore.registry import register
from srcore.skip import ImageSkip, zero_init

_SLOPE = 0.05


class RLFB(nn.Module):
    """Residual local feature block: three 3x3 conv + LeakyReLU with a local skip, a 1x1 conv, reduced ESA."""

    def __init__(self, nf: int, mid: int | None = None, esa_channels: int = 16):
        super().__init__()
        mid = nf if mid is None else mid
        self.c1_r = conv(nf, mid, 3)
        self.c2_r = conv(mid, mid, 3)
        self.c3_r = conv(mid, nf, 3)
        self.c5 = conv(nf, nf, 1)
        self.esa = ESA(nf, esa_channels, full=False)
        self.act = nn.LeakyReLU(_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.c1_r(x))
        h = self.act(self.c2_r(h))
        h = self.act(self.c3_r(h))
        return self.esa(self.c5(h + x))


class RLFN(nn.Module):
    """RLFN: head conv, `num_blocks` RLFBs in a chain (attributes block_1..block_n), 3x3 conv with a global
    skip from the head, pixel-shuffle upsampler."""

    def __init__(self, scale: int, nf: int = 52, num_blocks: int = 6, in_ch: int = 3, out_ch: int = 3,
                 esa_channels: int = 16, rgb_range: float = 255.0, skip: str = "none"):
        super().__init__()
        self.rgb_range = float(rgb_range)
        self.num_blocks = num_blocks
        self.conv_1 = conv(in_ch, nf, 3)
        for i in range(1, num_blocks + 1):
            setattr(self, f"block_{i}", RLFB(nf, esa_channels=esa_channels))
        self.conv_2 = conv(nf, nf, 3)
        self.upsampler = pixelshuffle_upsampler(nf, out_ch, scale)
        self.skip = ImageSkip(skip, scale)
        if skip != "none":
            zero_init(self.upsampler[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.conv_1(x * self.rgb_range)
        h = fea
        for i in range(1, self.num_blocks + 1):
            h = getattr(self, f"block_{i}")(h)
        return self.skip(x, self.upsampler[0](self.conv_2(h) + fea) / self.rgb_range)


@register("rlfn", scales=(2, 3, 4), rgb_range=255.0, paper="Kong et al., CVPRW 2022")
def rlfn(scale: int, rgb_range: float = 255.0, nf: int = 52, num_blocks: int = 6, **kw) -> nn.Module:
    """RLFN (nf 52, 6 RLFB). Official weights: bytedance/RLFN model_zoo/rlfn_x{2,4}.pth."""
    return RLFN(scale, nf=nf, num_blocks=num_blocks, rgb_range=rgb_range, **kw)


@register("rlfn_s", scales=(2, 3, 4), rgb_range=255.0, paper="Kong et al., CVPRW 2022 (RLFN-S)")
def rlfn_s(scale: int, rgb_range: float = 255.0, nf: int = 48, num_blocks: int = 6, **kw) -> nn.Module:
    """RLFN-S (nf 48, 6 RLFB). Official weights: bytedance/RLFN model_zoo/rlfn_s_x{2,4}.pth."""
    return RLFN(scale, nf=nf, num_blocks=num_blocks, rgb_range=rgb_range, **kw)
