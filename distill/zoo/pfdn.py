"""PFDN: the NTIRE 2023 efficient-SR overall winner (team 08; icandle/PlainUSR `2023_PFDN_NTIRE`).

Network (nf = 48, 4 blocks, LeakyReLU 0.05):

    f0 = conv_first(x)                                         (3x3, 3 -> nf)
    block_i: x = attn(x) (reduced ESA, 16 channels); r = x
             h = act(conv1(x));  h[:, :p] = act(conv3(h[:, :p]))  (p = 32: a partial conv on the first 32)
             out = act(conv2(h)) + r                          (conv1, conv2, conv3: RRRB 3x3 convs)
    conv_last(h) + f0 (3x3), tail: 3x3 conv to 3 s^2, PixelShuffle(s)

Training-time form (`deploy=False`): every RRRB has FMEN's branches (`expand_conv`, `fea_conv`,
`reduce_conv`, expansion 2; the team's training code is not released, FMEN's ratio is assumed);
`compress.reparam.reparameterize` fuses them exactly. Deployed form (`deploy=True`, the default): one 3x3
`rep_conv` per RRRB, the layout of the released `team08_PFDN.pth`: 70 tensors, `conv_first`,
`block{1..4}.attn.{conv1,conv_f,conv2,conv3,conv4}`, `block{i}.conv{1,2,3}.rep_conv`, `conv_last`, `tail.0`.

The official weights work on RGB in [0, 1] (no mean shift).
"""
from __future__ import annotations

import torch
from torch import nn

from compress.blocks import RRRB
from srcore.layers import ESA, conv, pixelshuffle_upsampler
from srcore.registry import register


class PFDNBlock(nn.Module):
    """ESA first, then RRRB conv1, a partial RRRB conv3 on the first `partial` channels, RRRB conv2, skip."""

    def __init__(self, nf: int = 48, partial: int = 32, esa_channels: int = 16, deploy: bool = True):
        super().__init__()
        self.partial = partial
        self.attn = ESA(nf, esa_channels, full=False)
        self.conv1 = RRRB(nf, deploy=deploy)
        self.conv2 = RRRB(nf, deploy=deploy)
        self.conv3 = RRRB(partial, deploy=deploy)
        self.act = nn.LeakyReLU(0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(x)
        h = self.act(self.conv1(x))
        p = self.partial
        h = torch.cat([self.act(self.conv3(h[:, :p])), h[:, p:]], 1)
        return self.act(self.conv2(h)) + x


class PFDN(nn.Module):
    """PFDN: head conv, `num_blocks` blocks (block1..blockn), conv_last with a skip from the head, tail."""

    def __init__(self, scale: int, nf: int = 48, num_blocks: int = 4, partial: int = 32, in_ch: int = 3,
                 out_ch: int = 3, rgb_range: float = 1.0, deploy: bool = True):
        super().__init__()
        if not 0 < partial <= nf:
            raise ValueError(f"pfdn: partial={partial} must be in 1..nf={nf}")
        self.rgb_range = float(rgb_range)
        self.num_blocks = num_blocks
        self.conv_first = conv(in_ch, nf, 3)
        for i in range(1, num_blocks + 1):
            setattr(self, f"block{i}", PFDNBlock(nf, partial, deploy=deploy))
        self.conv_last = conv(nf, nf, 3)
        self.tail = pixelshuffle_upsampler(nf, out_ch, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.conv_first(x * self.rgb_range)
        h = fea
        for i in range(1, self.num_blocks + 1):
            h = getattr(self, f"block{i}")(h)
        return self.tail(self.conv_last(h) + fea) / self.rgb_range


@register("pfdn", scales=(2, 3, 4), rgb_range=1.0, paper="PFDN, NTIRE 2023 ESR overall winner (team 08)")
def pfdn(scale: int, rgb_range: float = 1.0, nf: int = 48, num_blocks: int = 4, deploy: bool = True,
         **kw) -> nn.Module:
    """PFDN (48 channels, 4 blocks). deploy=False: the training-time RRRB branches.
    Official weights: icandle/PlainUSR 2023_PFDN_NTIRE/model_zoo/team08_PFDN.pth (x4)."""
    return PFDN(scale, nf=nf, num_blocks=num_blocks, rgb_range=rgb_range, deploy=deploy, **kw)
