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
* `rep_conv_3x3`, `rep_conv_5x5`: a structurally reparameterizable block (RepVGG/ECB/RRRB idea, without
  BatchNorm): kxk conv + 1x1 conv + identity, summed. Trained multi-branch, it `fuse()`s into one plain
  kxk convolution for deployment, at no cost in accuracy.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


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


class RepConv(nn.Module):
    """Reparameterizable kxk conv: kxk conv + 1x1 conv + identity, all linear, summed (with biases).

    Training sees three branches (easier optimisation, as in RepVGG / ECB / RRRB); `fuse()` folds them
    into one kxk `nn.Conv2d` that computes exactly the same function, so the deployed network pays only
    for a single conv. The 1x1 kernel sits at the centre of the kxk kernel; the identity is a centre 1 on
    the diagonal (channel i -> channel i).
    """

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.channels = channels
        self.kernel_size = kernel_size
        self.conv_kxk = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.conv_1x1 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_kxk(x) + self.conv_1x1(x) + x

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """One plain kxk conv (same device and dtype) equal to the three-branch sum."""
        k, c = self.kernel_size, self.channels
        weight = self.conv_kxk.weight.detach().clone()
        centre = k // 2
        weight += F.pad(self.conv_1x1.weight, (centre, centre, centre, centre))  # 1x1 at the kxk centre
        weight[torch.arange(c), torch.arange(c), centre, centre] += 1.0
        bias = self.conv_kxk.bias.detach() + self.conv_1x1.bias.detach()
        fused = nn.Conv2d(c, c, k, padding=centre).to(device=weight.device, dtype=weight.dtype)
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
        return fused


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
