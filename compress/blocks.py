"""Re-parameterizable blocks: multi-branch linear blocks for training that fuse into one kxk convolution.

Each block is linear (no activation inside) and has `fuse()`, which returns its deployed form computing
the same function (see `compress/reparam.py` for the mechanism and `reparameterize(model)`):

* `RepConv` (RepVGG without BatchNorm, as SR uses it): kxk conv + 1x1 conv + identity, with biases.
  Deploys as a bare `nn.Conv2d`.
* `ECB`, the edge-oriented convolution block of ECBSR (Zhang et al., "Edge-oriented Convolution Block for
  Real-time Super Resolution on Mobile Devices", ACM MM 2021): a 3x3 conv, 1x1-expand -> 3x3, and 1x1 ->
  fixed Sobel-x, Sobel-y and Laplacian filters with learned per-channel scale and bias, plus an optional
  identity when in == out. Deploys as a bare `nn.Conv2d`.
* `RRRB`, the residual-in-residual re-parameterizable block of FMEN (Du et al., "Fast and
  Memory-Efficient Network Towards Efficient Image Super-Resolution", CVPRW 2022): 1x1 expand -> 3x3
  with an inner residual -> 1x1 squeeze, plus the outer residual. Deploys as `RRRB(deploy=True)`, whose
  only weights are `rep_conv` (the key of FMEN's and PFDN's deployed files).
* `Conv3XC` of SPAN (Wan et al., arXiv 2311.12770): 1x1 expand -> 3x3 -> 1x1 squeeze, plus a 1x1 skip.
  Deploys as `Conv3XC(deploy=True)`, whose only weights are `eval_conv` (SPAN's, DSCF's key) or another
  name given by `eval_name` (SPANV2's deployed files say `conv`).

Where a 1x1 conv feeds a 3x3 conv, the expanded map is padded with the 1x1 conv's bias, not zeros
(`reparam.bias_padded_expand`): that is what makes the fused conv, which zero-pads its input, exact at the
image borders too. The state-dict keys of the training forms follow the published code (ECB's are ours).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .reparam import (
    as64,
    bias_padded_expand,
    dense_depthwise,
    identity_kernel,
    make_conv,
    merge_1x1_kxk,
    merge_kxk_1x1,
    pad_kernel,
)


def _conv_kernel(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of a plain conv in float64; zeros for a missing bias."""
    return as64(conv.weight), as64(conv.bias, conv.out_channels, conv.weight)


class RepConv(nn.Module):
    """Reparameterizable kxk conv C -> C: kxk conv + 1x1 conv + identity, all linear, summed (with biases).

    Keys `conv_kxk`, `conv_1x1`. The 1x1 kernel sits at the centre of the kxk kernel; the identity is a
    centre 1 on the diagonal. This is the search space's `rep_conv_3x3/5x5` op.
    """

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.channels = channels
        self.kernel_size = kernel_size
        self.conv_kxk = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.conv_1x1 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_kxk(x) + self.conv_1x1(x) + x

    def kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.kernel_size
        w, b = _conv_kernel(self.conv_kxk)
        w1, b1 = _conv_kernel(self.conv_1x1)
        return w + pad_kernel(w1, k) + identity_kernel(self.channels, k, w), b + b1

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """One plain kxk conv (same device and dtype) equal to the three-branch sum."""
        return make_conv(*self.kernel(), like=self.conv_kxk.weight)


class ExpandConv(nn.Module):
    """1x1 expand (in -> mid) then an unpadded kxk conv (mid -> out) on the bias-padded expanded map."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, k: int = 3, bias: bool = True):
        super().__init__()
        self.expand = nn.Conv2d(in_ch, mid_ch, 1, bias=bias)
        self.conv = nn.Conv2d(mid_ch, out_ch, k, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(bias_padded_expand(self.expand, x, self.conv.kernel_size[0] // 2))

    def kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        return merge_1x1_kxk(*_conv_kernel(self.expand), *_conv_kernel(self.conv))


# Fixed 3x3 edge filters of ECB (ECBSR's masks: Sobel-x, Sobel-y, Laplacian).
EDGE_FILTERS = {
    "sobel_x": ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0)),
    "sobel_y": ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0)),
    "laplacian": ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0)),
}


class EdgeConv(nn.Module):
    """1x1 conv (in -> out), then a fixed 3x3 edge filter per channel with a learned scale and bias.

    Keys `expand`, `scale` (out,), `bias` (out,); the filter is a non-persistent buffer. Scale and bias
    start at N(0, 1e-3^2) as in ECBSR.
    """

    def __init__(self, in_ch: int, out_ch: int, kind: str):
        super().__init__()
        if kind not in EDGE_FILTERS:
            raise ValueError(f"unknown edge filter {kind!r}; known: {', '.join(EDGE_FILTERS)}")
        self.kind = kind
        self.expand = nn.Conv2d(in_ch, out_ch, 1)
        self.scale = nn.Parameter(torch.randn(out_ch) * 1e-3)
        self.bias = nn.Parameter(torch.randn(out_ch) * 1e-3)
        self.register_buffer("mask", torch.tensor(EDGE_FILTERS[kind]).expand(out_ch, 1, 3, 3).clone(),
                             persistent=False)

    def depthwise(self) -> torch.Tensor:
        return self.scale.view(-1, 1, 1, 1) * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = bias_padded_expand(self.expand, x, 1)
        return F.conv2d(y, self.depthwise(), self.bias, groups=self.scale.numel())

    def kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        w2 = dense_depthwise(as64(self.depthwise()))
        return merge_1x1_kxk(*_conv_kernel(self.expand), w2, as64(self.bias))


class ECB(nn.Module):
    """Edge-oriented convolution block (ECBSR), linear, in_ch -> out_ch, 3x3 receptive field.

    Branches: `conv3x3`; `conv1x1_3x3` (1x1 expand to out_ch * depth_multiplier, then 3x3);
    `conv1x1_sbx`, `conv1x1_sby`, `conv1x1_lpl` (1x1 then scaled Sobel-x / Sobel-y / Laplacian); plus the
    input itself when `with_idt` and in_ch == out_ch. ECBSR applies its activation after the block; so
    does the caller here.
    """

    def __init__(self, in_ch: int, out_ch: int, depth_multiplier: float = 2.0, with_idt: bool = False):
        super().__init__()
        self.in_ch, self.out_ch = in_ch, out_ch
        self.with_idt = bool(with_idt) and in_ch == out_ch
        self.conv3x3 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv1x1_3x3 = ExpandConv(in_ch, int(out_ch * depth_multiplier), out_ch)
        self.conv1x1_sbx = EdgeConv(in_ch, out_ch, "sobel_x")
        self.conv1x1_sby = EdgeConv(in_ch, out_ch, "sobel_y")
        self.conv1x1_lpl = EdgeConv(in_ch, out_ch, "laplacian")

    def branches(self) -> tuple[nn.Module, ...]:
        return self.conv1x1_3x3, self.conv1x1_sbx, self.conv1x1_sby, self.conv1x1_lpl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3x3(x)
        for branch in self.branches():
            y = y + branch(x)
        return y + x if self.with_idt else y

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        w, b = _conv_kernel(self.conv3x3)
        for branch in self.branches():
            wb, bb = branch.kernel()
            w, b = w + wb, b + bb
        if self.with_idt:
            w = w + identity_kernel(self.out_ch, 3, w)
        return make_conv(w, b, like=self.conv3x3.weight)


class RRRB(nn.Module):
    """FMEN's residual-in-residual re-parameterizable block, C -> C, 3x3 receptive field:

        out = reduce_conv(fea_conv(E) + E) + x,   E = expand_conv(x) (1x1, C -> ratio*C), bias-padded for fea_conv

    Keys `expand_conv`, `fea_conv`, `reduce_conv` (FMEN's training code); with `deploy=True` only
    `rep_conv` (3x3, C -> C, with bias), the layout of FMEN's and PFDN's released files.
    """

    def __init__(self, channels: int, ratio: int = 2, deploy: bool = False):
        super().__init__()
        self.channels, self.ratio, self.deployed = channels, ratio, bool(deploy)
        if self.deployed:
            self.rep_conv = nn.Conv2d(channels, channels, 3, padding=1)
        else:
            self.expand_conv = nn.Conv2d(channels, ratio * channels, 1)
            self.fea_conv = nn.Conv2d(ratio * channels, ratio * channels, 3)
            self.reduce_conv = nn.Conv2d(ratio * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deployed:
            return self.rep_conv(x)
        e = bias_padded_expand(self.expand_conv, x, 1)
        out = self.fea_conv(e) + e[:, :, 1:-1, 1:-1]
        return self.reduce_conv(out) + x

    @torch.no_grad()
    def fuse(self) -> RRRB:
        if self.deployed:
            raise ValueError("RRRB.fuse: the block is deployed already")
        w2, b2 = _conv_kernel(self.fea_conv)
        w2 = w2 + identity_kernel(w2.shape[0], 3, w2)  # the inner residual around fea_conv
        w, b = merge_1x1_kxk(*_conv_kernel(self.expand_conv), w2, b2)
        w, b = merge_kxk_1x1(w, b, *_conv_kernel(self.reduce_conv))
        w = w + identity_kernel(self.channels, 3, w)  # the outer residual
        out = RRRB(self.channels, self.ratio, deploy=True)
        out.rep_conv = make_conv(w, b, like=self.fea_conv.weight)
        return out


class Conv3XC(nn.Module):
    """SPAN's Conv3XC, c_in -> c_out, 3x3 receptive field:

        out = conv(x) + sk(x),   conv = 1x1 (c_in -> gain*c_in) -> 3x3 (-> gain*c_out) -> 1x1 (-> c_out)

    (the 3x3 works on the bias-padded expanded map, as SPAN's code does by zero-padding x before the first
    1x1). Keys `sk`, `conv.{0,1,2}` (SPAN's training code); with `deploy=True` only the 3x3 conv named
    `eval_name` (`eval_conv` in SPAN's and DSCF's files, `conv` in SPANV2's). `bias=False` drops every
    bias (SPANV2).
    """

    def __init__(self, c_in: int, c_out: int, gain: int = 2, bias: bool = True, deploy: bool = False,
                 eval_name: str = "eval_conv"):
        super().__init__()
        self.c_in, self.c_out, self.gain, self.has_bias = c_in, c_out, gain, bias
        self.deployed, self.eval_name = bool(deploy), eval_name
        if self.deployed:
            self.add_module(eval_name, nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias))
        else:
            self.sk = nn.Conv2d(c_in, c_out, 1, bias=bias)
            self.conv = nn.Sequential(
                nn.Conv2d(c_in, c_in * gain, 1, bias=bias),
                nn.Conv2d(c_in * gain, c_out * gain, 3, bias=bias),
                nn.Conv2d(c_out * gain, c_out, 1, bias=bias),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deployed:
            return getattr(self, self.eval_name)(x)
        expand, conv3, squeeze = self.conv
        return squeeze(conv3(bias_padded_expand(expand, x, 1))) + self.sk(x)

    @torch.no_grad()
    def fuse(self) -> Conv3XC:
        if self.deployed:
            raise ValueError("Conv3XC.fuse: the block is deployed already")
        expand, conv3, squeeze = self.conv
        w, b = merge_1x1_kxk(*_conv_kernel(expand), *_conv_kernel(conv3))
        w, b = merge_kxk_1x1(w, b, *_conv_kernel(squeeze))
        wk, bk = _conv_kernel(self.sk)
        w, b = w + pad_kernel(wk, 3), b + bk
        out = Conv3XC(self.c_in, self.c_out, self.gain, self.has_bias, deploy=True, eval_name=self.eval_name)
        setattr(out, self.eval_name, make_conv(w, b if self.has_bias else None, like=conv3.weight))
        return out
