"""CARN and CARN-M: cascading residual networks (Ahn et al., "Fast, Accurate, and Lightweight
Super-Resolution with Cascading Residual Network", ECCV 2018; official code: nmhkahn/CARN-pytorch).

Network (64 channels throughout):

    x -> sub_mean -> entry (3x3, 3->64)
    3 cascading blocks b1..b3 with global cascading: o_k = c_k(cat[c_0, b_1, ..., b_k]) (1x1 conv + ReLU)
    each cascading block does the same locally over three residual units:
      CARN:   three separate residual blocks b1, b2, b3 (3x3 -> ReLU -> 3x3, + x, ReLU)
      CARN-M: ONE efficient residual block b1 applied three times (grouped 3x3 -> ReLU -> grouped 3x3
              -> ReLU -> 1x1, + x, ReLU), group = 4
    upsample (conv 64 -> 64*r^2 [grouped], ReLU, PixelShuffle(r); x4 = two x2 steps) -> exit (3x3) -> add_mean

The released models are multi-scale: one body with three heads `upsample.up2/up3/up4`, the scale being
chosen at forward time. Our network is built for one `scale` but holds all three heads (multi_scale=True,
the default) so the official file loads strictly; it uses the head of its own scale.

Official CARN-M checkpoint (`checkpoint/carn_m.pth`; flat state dict, no prefix, 58 tensors, 414,811 params):

    sub_mean.shifter, add_mean.shifter        fixed 1x1 mean shift (DIV2K mean 0.4488/0.4371/0.4040)
    entry, exit
    b{1,2,3}.b1.body.{0,2,4}                  shared efficient residual block (CARN: b{k}.b{1,2,3}.body.{0,2})
    b{1,2,3}.c{1,2,3}.body.0, c{1,2,3}.body.0 1x1 cascade fusions
    upsample.up2.body.0, upsample.up3.body.0, upsample.up4.body.{0,3}   grouped convs before PixelShuffle

The official weights work on RGB in [0, 1] (rgb_range 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from srcore.layers import conv
from srcore.registry import register

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Module):
    """Fixed 1x1 conv adding (sign=+1) or subtracting (sign=-1) the RGB mean; key `shifter`."""

    def __init__(self, mean_rgb: tuple[float, float, float] = DIV2K_MEAN, sign: int = -1,
                 rgb_range: float = 1.0):
        super().__init__()
        self.shifter = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.shifter.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.shifter.bias.copy_(sign * rgb_range * torch.tensor(mean_rgb))
        self.shifter.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shifter(x)


class BasicBlock(nn.Module):
    """conv + ReLU; key `body.0`."""

    def __init__(self, in_ch: int, out_ch: int, k: int = 1):
        super().__init__()
        self.body = nn.Sequential(conv(in_ch, out_ch, k), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResidualBlock(nn.Module):
    """CARN residual unit: ReLU(x + conv(ReLU(conv(x)))); keys `body.{0,2}`."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(conv(ch, ch, 3), nn.ReLU(inplace=True), conv(ch, ch, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class EResidualBlock(nn.Module):
    """CARN-M efficient residual unit: grouped 3x3, ReLU, grouped 3x3, ReLU, 1x1; + x; ReLU.
    Keys `body.{0,2,4}`."""

    def __init__(self, ch: int, group: int = 4):
        super().__init__()
        self.body = nn.Sequential(
            conv(ch, ch, 3, groups=group), nn.ReLU(inplace=True),
            conv(ch, ch, 3, groups=group), nn.ReLU(inplace=True),
            conv(ch, ch, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class CascadingBlock(nn.Module):
    """Local cascade over three residual units. shared=True (CARN-M) keeps one unit `b1` used three
    times; otherwise (CARN) there are three units `b1`, `b2`, `b3`."""

    def __init__(self, ch: int = 64, *, shared: bool, group: int = 4):
        super().__init__()
        self.shared = shared
        if shared:
            self.b1 = EResidualBlock(ch, group)
        else:
            self.b1 = ResidualBlock(ch)
            self.b2 = ResidualBlock(ch)
            self.b3 = ResidualBlock(ch)
        self.c1 = BasicBlock(ch * 2, ch)
        self.c2 = BasicBlock(ch * 3, ch)
        self.c3 = BasicBlock(ch * 4, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        units = (self.b1,) * 3 if self.shared else (self.b1, self.b2, self.b3)
        return _cascade(x, units, (self.c1, self.c2, self.c3))


def _cascade(x: torch.Tensor, units, fusions) -> torch.Tensor:
    """o_0 = x; for each k: o_k = fusion_k(cat[x, unit_1(o_0), ..., unit_k(o_{k-1})])."""
    cat, out = x, x
    for unit, fuse in zip(units, fusions, strict=True):
        cat = torch.cat([cat, unit(out)], dim=1)
        out = fuse(cat)
    return out


class UpsampleHead(nn.Module):
    """Sub-pixel upsampler: per x2 (or the single x3) step, conv ch -> ch*r^2 (grouped), ReLU,
    PixelShuffle(r). Keys `body.0` (x2, x3) or `body.{0,3}` (x4)."""

    def __init__(self, ch: int, scale: int, group: int = 1):
        super().__init__()
        if scale in (2, 4, 8):
            steps = [2] * {2: 1, 4: 2, 8: 3}[scale]
        elif scale == 3:
            steps = [3]
        else:
            raise ValueError(f"scale must be 2, 3, 4 or 8, got {scale}")
        layers: list[nn.Module] = []
        for r in steps:
            layers += [conv(ch, ch * r * r, 3, groups=group), nn.ReLU(inplace=True), nn.PixelShuffle(r)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class CARN(nn.Module):
    """CARN (mobile=False) or CARN-M (mobile=True). Input/output RGB in [0, 1]."""

    def __init__(self, scale: int, *, mobile: bool, group: int | None = None, multi_scale: bool = True,
                 ch: int = 64, rgb_range: float = 1.0, rgb_mean: tuple[float, float, float] = DIV2K_MEAN):
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {scale}")
        group = (4 if mobile else 1) if group is None else group
        self.scale = scale
        self.multi_scale = multi_scale
        self.rgb_range = float(rgb_range)
        self.sub_mean = MeanShift(rgb_mean, -1, rgb_range)
        self.add_mean = MeanShift(rgb_mean, +1, rgb_range)
        self.entry = conv(3, ch, 3)
        self.b1 = CascadingBlock(ch, shared=mobile, group=group)
        self.b2 = CascadingBlock(ch, shared=mobile, group=group)
        self.b3 = CascadingBlock(ch, shared=mobile, group=group)
        self.c1 = BasicBlock(ch * 2, ch)
        self.c2 = BasicBlock(ch * 3, ch)
        self.c3 = BasicBlock(ch * 4, ch)
        if multi_scale:
            self.upsample = nn.ModuleDict({f"up{s}": UpsampleHead(ch, s, group) for s in (2, 3, 4)})
        else:
            self.upsample = nn.ModuleDict({"up": UpsampleHead(ch, scale, group)})
        self.exit = conv(ch, 3, 3)

    def forward(self, x: torch.Tensor, scale: int | None = None) -> torch.Tensor:
        """`scale` (multi-scale models only) picks another of the held heads; default: the built scale."""
        scale = self.scale if scale is None else scale
        if not self.multi_scale and scale != self.scale:
            raise ValueError(f"single-scale model built for x{self.scale}, asked for x{scale}")
        head = self.upsample[f"up{scale}" if self.multi_scale else "up"]
        x = self.entry(self.sub_mean(x * self.rgb_range))
        x = _cascade(x, (self.b1, self.b2, self.b3), (self.c1, self.c2, self.c3))
        x = self.add_mean(self.exit(head(x)))
        return x / self.rgb_range


@register("carn_m", scales=(2, 3, 4), rgb_range=1.0, paper="Ahn et al., ECCV 2018 (CARN-M)")
def carn_m(scale: int, rgb_range: float = 1.0, **kw) -> nn.Module:
    return CARN(scale, mobile=True, rgb_range=rgb_range, **kw)


@register("carn", scales=(2, 3, 4), rgb_range=1.0, paper="Ahn et al., ECCV 2018")
def carn(scale: int, rgb_range: float = 1.0, **kw) -> nn.Module:
    return CARN(scale, mobile=False, rgb_range=rgb_range, **kw)
