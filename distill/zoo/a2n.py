"""A2N: attention in attention network (Chen et al., "Attention in Attention Network for Image
Super-Resolution", arXiv 2104.09497, 2021; official code: haoyuc/A2N, `code/model/aan.py`).

Same skeleton and upsampler as PAN (nf=40, unf=24, bilinear global skip; see `pan.PixelAttentionSRNet`);
the trunk is 16 attention-in-attention blocks (AAB, about 1.04M params in all at x2):

    y = LReLU(conv_first(x))                                       (1x1, no bias)
    w = softmax(ADM(avgpool(y)) / t)                                (t = 30; ADM: Linear-ReLU-Linear, K=2)
    z = LReLU(w0 * attention(y) + w1 * non_attention(y))
    out = x + conv_last(z)                                          (1x1, no bias)
    attention(y) = k4(k3(y) * sigmoid(k2(LReLU(k1(y)))))            (k1/k3/k4 3x3 no bias, k2 1x1 with bias)
    non_attention = 3x3 conv, no bias (1x1 for A2N-M)

Official checkpoint (`code/experiment/model/aan_x2.pt`; flat state dict, no prefix, 172 tensors):

    conv_first.{weight,bias}
    AAB_trunk.{0..15}.conv_first.weight, .conv_last.weight
    AAB_trunk.{i}.ADM.0.weight (nf/4 x nf), .ADM.2.weight (2 x nf/4)
    AAB_trunk.{i}.attention.k1.weight, .k2.{weight,bias}, .k3.weight, .k4.weight
    AAB_trunk.{i}.non_attention.weight
    trunk_conv, upconv1, att1.conv, HRconv1, [x4: upconv2, att2.conv, HRconv2], conv_last  (with bias)

The official weights work on RGB in [0, 255] (EDSR framework, rgb_range 255).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill.zoo.pan import PixelAttentionSRNet
from srcore.layers import conv
from srcore.registry import register


class AttentionBranch(nn.Module):
    def __init__(self, nf: int, k: int = 3):
        super().__init__()
        self.k1 = conv(nf, nf, k, bias=False)
        self.k2 = conv(nf, nf, 1)
        self.k3 = conv(nf, nf, k, bias=False)
        self.k4 = conv(nf, nf, k, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.k2(F.leaky_relu(self.k1(x), 0.2)))
        return self.k4(self.k3(x) * gate)


class AAB(nn.Module):
    """Attention-in-attention block: a dynamic (softmax / temperature) mix of an attention branch and a
    plain conv branch, inside a 1x1 -> ... -> 1x1 residual block."""

    def __init__(self, nf: int, reduction: int = 4, n_branches: int = 2, temperature: float = 30.0,
                 non_attention_kernel: int = 3):
        super().__init__()
        self.temperature = temperature
        self.conv_first = conv(nf, nf, 1, bias=False)
        self.conv_last = conv(nf, nf, 1, bias=False)
        self.ADM = nn.Sequential(
            nn.Linear(nf, nf // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(nf // reduction, n_branches, bias=False),
        )
        self.attention = AttentionBranch(nf)
        self.non_attention = conv(nf, nf, non_attention_kernel, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.conv_first(x), 0.2)
        w = torch.softmax(self.ADM(y.mean(dim=(2, 3))) / self.temperature, dim=1)
        z = self.attention(y) * w[:, 0, None, None, None] + self.non_attention(y) * w[:, 1, None, None, None]
        return x + self.conv_last(F.leaky_relu(z, 0.2))


class A2N(PixelAttentionSRNet):
    def __init__(self, scale: int, nf: int = 40, unf: int = 24, n_blocks: int = 16, *,
                 rgb_range: float = 255.0, non_attention_kernel: int = 3):
        trunk = nn.Sequential(*[AAB(nf, non_attention_kernel=non_attention_kernel) for _ in range(n_blocks)])
        super().__init__("AAB_trunk", trunk, scale, nf, unf, rgb_range=rgb_range)


@register("a2n", scales=(2, 3, 4), rgb_range=255.0, paper="Chen et al., arXiv 2104.09497 (2021)")
def a2n(scale: int, rgb_range: float = 255.0, **kw) -> nn.Module:
    return A2N(scale, rgb_range=rgb_range, **kw)
