"""Candidate operations for the searched branch of a distillation cell (DLSR's op set, plus a few extras).

In an RFDN/DLSR distillation cell, each of the three stages keeps a "remaining" branch that refines the
features (C -> C channels, stride 1, same spatial size) before the stage's residual add. The search picks
which operation that branch is. This file is the registry of those candidates, in the quark0/darts
style: `OPS` maps an op name to a factory `factory(C) -> nn.Module`.

DLSR's nine candidates (Huang et al., arXiv 2105.03939) are plain convolutions (1x1..7x7), DARTS-style
separable convolutions and dilated convolutions, all without bias and without BatchNorm (SR networks
avoid BatchNorm). Module names inside each op (`op.0`, `op.1`, ...) follow DLSR's code, so DLSR's
published checkpoints load into cells built from this registry.

Extras, not in DLSR's search:
* `identity`: the stage passes its input through (the cell's residual add then doubles it).
* Re-parameterizable blocks (`compress/blocks.py`), trained multi-branch and fused exactly into one plain
  kxk convolution for deployment by `compress.reparam.reparameterize(model)`:
  `rep_conv_3x3`, `rep_conv_5x5` (RepVGG without BatchNorm: kxk conv + 1x1 conv + identity),
  `ecb_3x3` (ECBSR's edge-oriented block: 3x3, 1x1-expand-3x3, 1x1-Sobel-x/y, 1x1-Laplacian; expansion 2,
  no identity branch, since the cell adds the op's input back), `rrrb_3x3` (FMEN's residual-in-residual
  block, expansion 2) and `conv3xc_3x3` (SPAN's Conv3XC, expansion 2). All of them carry biases.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from compress.blocks import ECB, RRRB, Conv3XC, RepConv


class Conv(nn.Module):
    """A plain kxk convolution C -> C without bias (DLSR's `conv_kxk`); weight key `op.0.weight`."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        pad = kernel_size // 2
        self.op = nn.Sequential(nn.Conv2d(channels, channels, kernel_size, padding=pad, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class SepConv(nn.Module):
    """DARTS separable conv applied twice: (ReLU, depthwise kxk, pointwise 1x1) x 2, no bias, no BN.

    Keys: `op.1` / `op.4` depthwise, `op.2` / `op.5` pointwise (`op.0`, `op.3` are the ReLUs). The ReLUs
    are not in-place: the cell adds the op's input back after the op.
    """

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        pad = kernel_size // 2
        self.op = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size, padding=pad, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size, padding=pad, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """DARTS dilated conv: ReLU, depthwise kxk with dilation 2, pointwise 1x1; no bias, no BN.

    Keys: `op.1` depthwise, `op.2` pointwise. Receptive field of a 3x3 is 5x5, of a 5x5 is 9x9.
    """

    def __init__(self, channels: int, kernel_size: int, dilation: int = 2):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2 * dilation, dilation=dilation,
                      groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Identity(nn.Module):
    """The op that does nothing: the stage's output is its input (plus the cell's residual)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


OPS: dict[str, Callable[[int], nn.Module]] = {
    "identity": lambda C: Identity(),
    "conv_1x1": lambda C: Conv(C, 1),
    "conv_3x3": lambda C: Conv(C, 3),
    "conv_5x5": lambda C: Conv(C, 5),
    "conv_7x7": lambda C: Conv(C, 7),
    "sep_conv_3x3": lambda C: SepConv(C, 3),
    "sep_conv_5x5": lambda C: SepConv(C, 5),
    "sep_conv_7x7": lambda C: SepConv(C, 7),
    "dil_conv_3x3": lambda C: DilConv(C, 3),
    "dil_conv_5x5": lambda C: DilConv(C, 5),
    "rep_conv_3x3": lambda C: RepConv(C, 3),
    "rep_conv_5x5": lambda C: RepConv(C, 5),
    "ecb_3x3": lambda C: ECB(C, C, depth_multiplier=2.0, with_idt=False),
    "rrrb_3x3": lambda C: RRRB(C, ratio=2),
    "conv3xc_3x3": lambda C: Conv3XC(C, C, gain=2),
}

# The nine candidates DLSR's cell-level search chooses from (its default op set).
DLSR_PRIMITIVES: tuple[str, ...] = (
    "conv_1x1", "conv_3x3", "conv_5x5", "conv_7x7",
    "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7",
    "dil_conv_3x3", "dil_conv_5x5",
)


def build_op(name: str, channels: int) -> nn.Module:
    """OPS[name](channels), with a one-line ValueError listing the known ops for an unknown name."""
    if not isinstance(name, str) or name not in OPS:
        raise ValueError(f"unknown op {name!r}; known ops: {', '.join(OPS)}")
    return OPS[name](channels)
