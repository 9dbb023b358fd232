"""IMDN: Information Multi-distillation Network, and its AIM-2019 simplified variant.

Paper: Z. Hui, X. Gao, Y. Yang, X. Wang, "Lightweight Image Super-Resolution with Information
Multi-distillation Network", ACM MM 2019. Official code: github.com/Zheng222/IMDN.

`imdn` (nf 64, 6 IMDB blocks with contrast-aware channel attention, CCA)
    Official checkpoints `checkpoints/IMDN_x{2,3,4}.pth` are flat state dicts saved from
    DataParallel, so every key carries a `module.` prefix that the loader must strip. After that:
    `fea_conv`, `IMDB{1..6}.{c1,c2,c3,c4,c5}`, `IMDB{i}.cca.conv_du.{0,2}`, `c.0` (1x1 fuse of all
    block outputs, followed by LeakyReLU 0.05), `LR_conv`, `upsampler.0` (3x3 conv to 3*s^2, then
    PixelShuffle). Input range [0, 1].

`imdn_aim19` (nc 64, 8 simplified blocks, no CCA; the AIM-2019 constrained-SR winner)
    The checkpoint (NTIRE 2022 ESR repo, `model_zoo/imdn_baseline.pth`) was saved from a KAIR-style
    flattened Sequential: `model.0` head conv; `model.1` is a shortcut whose `sub` holds the 8 blocks
    `sub.{0..7}.{conv1.0,conv2.0,conv3.0,conv4,conv1x1}` and the tail conv `sub.8`; `model.2` is the
    upsampler conv and `model.3` the (parameter-free) PixelShuffle. Input range [0, 1].

Every network here takes RGB in [0, 1] and returns RGB in [0, 1]; `rgb_range` rescales internally.
"""
from __future__ import annotations

import torch
from torch import nn

from srcore.layers import conv, pixelshuffle_upsampler
from srcore.registry import register

_SLOPE = 0.05  # LeakyReLU negative slope used throughout IMDN


class CCALayer(nn.Module):
    """Contrast-aware channel attention: gate = sigmoid(MLP(std(x) + mean(x))) per channel."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()
        return x * self.conv_du(std + mean)


class IMDB(nn.Module):
    """Information multi-distillation block.

    Three 3x3 conv + LeakyReLU steps each split off `distilled` channels (a quarter) and pass the rest on;
    a fourth 3x3 conv maps the last remainder to `distilled` channels. The four distilled parts are
    concatenated, gated by CCA, fused by a 1x1 conv and added to the block input.
    """

    def __init__(self, nf: int, distill_rate: float = 0.25):
        super().__init__()
        self.distilled = int(nf * distill_rate)
        self.remaining = nf - self.distilled
        self.c1 = conv(nf, nf, 3)
        self.c2 = conv(self.remaining, nf, 3)
        self.c3 = conv(self.remaining, nf, 3)
        self.c4 = conv(self.remaining, self.distilled, 3)
        self.act = nn.LeakyReLU(_SLOPE, inplace=True)
        self.c5 = conv(self.distilled * 4, nf, 1)
        self.cca = CCALayer(self.distilled * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        r = x
        for layer in (self.c1, self.c2, self.c3):
            d, r = torch.split(self.act(layer(r)), (self.distilled, self.remaining), dim=1)
            parts.append(d)
        parts.append(self.c4(r))
        return self.c5(self.cca(torch.cat(parts, dim=1))) + x


class IMDN(nn.Module):
    """IMDN: head conv, `num_blocks` IMDBs (attributes IMDB1..IMDBn), 1x1 fuse of all block outputs,
    3x3 LR conv with a global skip from the head, pixel-shuffle upsampler."""

    def __init__(self, scale: int, nf: int = 64, num_blocks: int = 6, in_ch: int = 3, out_ch: int = 3,
                 rgb_range: float = 1.0):
        super().__init__()
        self.rgb_range = float(rgb_range)
        self.num_blocks = num_blocks
        self.fea_conv = conv(in_ch, nf, 3)
        for i in range(1, num_blocks + 1):
            setattr(self, f"IMDB{i}", IMDB(nf))
        self.c = nn.Sequential(conv(nf * num_blocks, nf, 1), nn.LeakyReLU(_SLOPE, inplace=True))
        self.LR_conv = conv(nf, nf, 3)
        self.upsampler = pixelshuffle_upsampler(nf, out_ch, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.fea_conv(x * self.rgb_range)
        outs = []
        h = fea
        for i in range(1, self.num_blocks + 1):
            h = getattr(self, f"IMDB{i}")(h)
            outs.append(h)
        lr = self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea
        return self.upsampler(lr) / self.rgb_range


class SimpleIMDB(nn.Module):
    """The AIM-2019 simplified IMDB: like IMDB but without CCA (conv1..3 carry their activation as `.0`/`.1`
    of a Sequential, conv4 and the 1x1 fuse are bare convs)."""

    def __init__(self, nc: int, distill_rate: float = 0.25):
        super().__init__()
        self.distilled = int(nc * distill_rate)
        self.remaining = nc - self.distilled
        self.conv1 = nn.Sequential(conv(nc, nc, 3), nn.LeakyReLU(_SLOPE, inplace=True))
        self.conv2 = nn.Sequential(conv(self.remaining, nc, 3), nn.LeakyReLU(_SLOPE, inplace=True))
        self.conv3 = nn.Sequential(conv(self.remaining, nc, 3), nn.LeakyReLU(_SLOPE, inplace=True))
        self.conv4 = conv(self.remaining, self.distilled, 3)
        self.conv1x1 = conv(self.distilled * 4, nc, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        r = x
        for layer in (self.conv1, self.conv2, self.conv3):
            d, r = torch.split(layer(r), (self.distilled, self.remaining), dim=1)
            parts.append(d)
        parts.append(self.conv4(r))
        return x + self.conv1x1(torch.cat(parts, dim=1))


class Shortcut(nn.Module):
    """x + sub(x); the attribute name `sub` is part of the official key layout."""

    def __init__(self, sub: nn.Module):
        super().__init__()
        self.sub = sub

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sub(x)


class IMDNAIM19(nn.Module):
    """Simplified IMDN (AIM 2019).

    model = [head conv, Shortcut(blocks + conv), upsampler conv, PixelShuffle].
    """

    def __init__(self, scale: int, nc: int = 64, num_blocks: int = 8, in_ch: int = 3, out_ch: int = 3,
                 rgb_range: float = 1.0):
        super().__init__()
        self.rgb_range = float(rgb_range)
        body = [SimpleIMDB(nc) for _ in range(num_blocks)]
        body.append(conv(nc, nc, 3))
        # unpack the upsampler so its conv sits at `model.2` and the PixelShuffle at `model.3`
        self.model = nn.Sequential(conv(in_ch, nc, 3), Shortcut(nn.Sequential(*body)),
                                   *pixelshuffle_upsampler(nc, out_ch, scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.rgb_range) / self.rgb_range


@register("imdn", scales=(2, 3, 4), rgb_range=1.0, paper="Hui et al., ACM MM 2019")
def imdn(scale: int, rgb_range: float = 1.0, **kw) -> nn.Module:
    """IMDN (nf 64, 6 IMDB). Official weights: Zheng222/IMDN checkpoints/IMDN_x{2,3,4}.pth."""
    return IMDN(scale, rgb_range=rgb_range, **kw)


@register("imdn_aim19", scales=(4,), rgb_range=1.0,
          paper="Hui et al., ACM MM 2019; AIM 2019 constrained SR winner (Zhang et al., ICCVW 2019)")
def imdn_aim19(scale: int, rgb_range: float = 1.0, **kw) -> nn.Module:
    """Simplified IMDN (nc 64, 8 blocks, no CCA).

    Official weights: ofsoundof/NTIRE2022_ESR model_zoo/imdn_baseline.pth.
    """
    return IMDNAIM19(scale, rgb_range=rgb_range, **kw)
