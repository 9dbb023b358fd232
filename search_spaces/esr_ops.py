"""Building blocks of the `esr` search space: the conv types, activations and attentions of a block.

The `esr` space is made of what won the NTIRE efficient-SR challenge (SPAN 2024, DSCF 2025, SPANV2 2026):
chains of 3x3 convolutions trained as multi-branch blocks and fused for deployment, with a parameter-free
or 1x1-gated attention. Every choice here is a registry (a plain dict of factories, quark0/darts style):

* `CONVS[name](c_in, c_out, bias, deploy)`, each a linear map with a receptive field of at most 3x3:
    conv3x3   a plain 3x3 convolution;
    conv3xc   SPAN's Conv3XC (1x1 expand x2 -> 3x3 -> 1x1 squeeze, plus a 1x1 skip), fused to one 3x3;
    rrrb      FMEN's residual-in-residual block (expand x2, 3x3 with an inner residual, squeeze, plus the
              outer residual), fused to one 3x3; C -> C only, and always with biases (FMEN's);
    dsconv    depthwise-separable 3x3: a depthwise 3x3 then a pointwise 1x1, no activation between
              (deployed as these two plain convolutions: fusing them into a dense 3x3 would be slower);
    conv1x1   a plain 1x1 convolution.
  conv3xc and rrrb train multi-branch and fuse exactly (`compress.reparam.reparameterize`); the deployed
  network holds plain (grouped or dense) convolutions only. `deploy=True` builds the fused layout directly.
* `ACTS[name]()`: silu, relu, lrelu (LeakyReLU 0.05).
* `ATTNS[name](channels)`: an attention over a residual block, called as `attn(f, r)` with f the block's
  last conv output and r = x + f its residual sum:
    none   r;
    spab   SPAN's parameter-free gate, r * (sigmoid(f) - 0.5);
    guide  SPANV2's guidance map, r * conv1x1(f) (a 1x1 conv with bias, starting as the identity gate);
    esa    RLFN's reduced enhanced spatial attention on r (`srcore.layers.ESA(full=False)`, C/4 channels,
           at least 4).

`conv_kernel(module)` gives the (weight, bias) of the one 3x3 convolution that any conv type computes,
differentiably in its parameters (the kernel algebra of `compress.reparam`, not detached): the search's
supernet mixes conv types as one convolution with the mixed kernel (exact, same gradients).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from compress.blocks import RRRB, Conv3XC
from compress.reparam import dense_depthwise, identity_kernel, merge_1x1_kxk, merge_kxk_1x1, pad_kernel
from srcore.layers import ESA

NEG_SLOPE = 0.05


class DSConv(nn.Module):
    """Depthwise-separable 3x3: depthwise 3x3 (`dw`, c_in groups) then pointwise 1x1 (`pw`, c_in -> c_out)."""

    def __init__(self, c_in: int, c_out: int, bias: bool = True):
        super().__init__()
        self.dw = nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=bias)
        self.pw = nn.Conv2d(c_in, c_out, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


def _rrrb(c_in: int, c_out: int, bias: bool, deploy: bool) -> RRRB:
    if c_in != c_out:
        raise ValueError(f"conv type rrrb maps C -> C (it adds its input back); got {c_in} -> {c_out}")
    return RRRB(c_out, ratio=2, deploy=deploy)


CONVS: dict[str, Callable[[int, int, bool, bool], nn.Module]] = {
    "conv3x3": lambda ci, co, bias, deploy: nn.Conv2d(ci, co, 3, padding=1, bias=bias),
    "conv3xc": lambda ci, co, bias, deploy: Conv3XC(ci, co, gain=2, bias=bias, deploy=deploy),
    "rrrb": _rrrb,
    "dsconv": lambda ci, co, bias, deploy: DSConv(ci, co, bias),
    "conv1x1": lambda ci, co, bias, deploy: nn.Conv2d(ci, co, 1, bias=bias),
}
SAME_SIZE_ONLY = ("rrrb",)  # conv types that need c_in == c_out

ACTS: dict[str, Callable[[], nn.Module]] = {
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "lrelu": lambda: nn.LeakyReLU(NEG_SLOPE),
}


class NoAttention(nn.Module):
    def forward(self, f: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return r


class ParameterFreeAttention(nn.Module):
    """SPAN's SPAB gate: r * (sigmoid(f) - 0.5)."""

    def forward(self, f: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return r * (torch.sigmoid(f) - 0.5)


class GuidanceMap(nn.Module):
    """SPANV2's gate: r * conv(f), `conv` a 1x1 convolution with bias (the guidance map).

    It starts as the identity gate (weight 0, bias 1), so an untrained guided block is a plain residual block
    (SkipInit / ReZero style). With PyTorch's default init the gate multiplies the features by about 0.1 per
    block: after SPANV2's four guided blocks they are ~1e-6 of the input, the last convs see nothing, and the
    SPANV2 layout did not train from scratch here (L1 flat for 300 steps at Adam 5e-4 and 1e-3, divergence at
    2e-3; docs/esr_study.md). Loaded weights replace the init."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.conv.weight)
        nn.init.ones_(self.conv.bias)

    def forward(self, f: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return r * self.conv(f)


class ReducedESA(nn.Module):
    """RLFN's reduced ESA over the residual sum r (`esa`; C/4 channels, at least 4)."""

    def __init__(self, channels: int):
        super().__init__()
        self.esa = ESA(channels, max(4, channels // 4), full=False)

    def forward(self, f: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return self.esa(r)


ATTNS: dict[str, Callable[[int], nn.Module]] = {
    "none": lambda c: NoAttention(),
    "spab": lambda c: ParameterFreeAttention(),
    "guide": GuidanceMap,
    "esa": ReducedESA,
}


def build_conv(name: str, c_in: int, c_out: int, bias: bool = True, deploy: bool = False) -> nn.Module:
    if name not in CONVS:
        raise ValueError(f"unknown conv type {name!r}; known: {', '.join(CONVS)}")
    return CONVS[name](c_in, c_out, bias, deploy)


# ----------------------------------------------------------------------------------------------------
# the 3x3 kernel a conv type computes, differentiable in its parameters


def _wb(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of a conv, not detached; zeros for a missing bias."""
    bias = conv.bias if conv.bias is not None else conv.weight.new_zeros(conv.out_channels)
    return conv.weight, bias


def conv_kernel(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3x3 (weight, bias) equal to `module` (a conv type of `CONVS`, training or deployed form), as a
    differentiable function of its parameters. Zero-padded 3x3 convolution with it computes the module
    exactly, borders included (the blocks bias-pad their expanded maps for that, see compress/blocks.py)."""
    if isinstance(module, nn.Conv2d):
        w, b = _wb(module)
        if module.groups != 1:
            w = dense_depthwise(w)
        return pad_kernel(w, 3), b
    if isinstance(module, DSConv):
        w, b = conv_kernel(module.dw)
        return merge_kxk_1x1(w, b, *_wb(module.pw))
    if isinstance(module, Conv3XC):
        if module.deployed:
            return conv_kernel(getattr(module, module.eval_name))
        expand, conv3, squeeze = module.conv
        w, b = merge_1x1_kxk(*_wb(expand), *_wb(conv3))
        w, b = merge_kxk_1x1(w, b, *_wb(squeeze))
        wk, bk = _wb(module.sk)
        return w + pad_kernel(wk, 3), b + bk
    if isinstance(module, RRRB):
        if module.deployed:
            return conv_kernel(module.rep_conv)
        w2, b2 = _wb(module.fea_conv)
        w2 = w2 + identity_kernel(w2.shape[0], 3, w2)
        w, b = merge_1x1_kxk(*_wb(module.expand_conv), w2, b2)
        w, b = merge_kxk_1x1(w, b, *_wb(module.reduce_conv))
        return w + identity_kernel(module.channels, 3, w), b
    raise TypeError(f"conv_kernel: {type(module).__name__} is not an esr conv type")


def conv3x3(x: torch.Tensor, kernel: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """A zero-padded 3x3 convolution with a (weight, bias) pair."""
    return F.conv2d(x, kernel[0], kernel[1], padding=1)
