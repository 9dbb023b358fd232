"""The mixed op: a distillation stage that runs every candidate op and sums them, weighted by softmax(alpha).

    MixedOp(x) = sum_i w_i * op_i(x),   w = softmax(alpha of this stage)

`DistillationCell` calls its stage ops as `op(x)`, so the supernet binds the current weights to each
mixed op (`mixed.weights = w`) right before the cell's forward and unbinds them after it.

Two options make the supernet cheaper without changing what it computes (fusion) or with PC-DARTS's
approximation (partial channels):

* `fuse` computes the same sum (up to float rounding; same gradients) in fewer, cheaper operations:
  - the plain convolutions (conv_1x1 ... conv_7x7, linear and bias-free) become one convolution whose
    kernel is the weighted sum of the zero-padded kernels, sum_i w_i conv(x, K_i) = conv(x, sum_i
    w_i pad(K_i)): the cost of the largest kernel alone;
  - the other ops that end in a bias-free convolution (sep_conv, dil_conv) take their weight inside that
    last kernel, w conv(h, K) = conv(h, w K), so no scaled copy of their output is made or kept for
    backward;
  - the ops that start with a ReLU (sep_conv, dil_conv) share one ReLU(x).
* `partial_channels` K > 1 (PC-DARTS, Xu et al. 2020): only one block of C/K channels goes through the
  candidate ops (built at C/K channels), block `group` (channels group*C/K ... (group+1)*C/K - 1), and
  the result is written back to the same channels, so the stage's residual add `op(x) + x` adds every
  channel to itself, as in the derived network. The supernet gives successive stages successive
  blocks (PC-DARTS's channel shuffle moves channels between nodes instead; with a residual add after
  every op that would add mismatched channels). The other channels get nothing from the op: in a
  residual stage the residual is their bypass (PC-DARTS passes them through the op itself because its
  cells have no residual; here that would double them at every stage).

`scale_free` (search only, never in a derived network): each candidate's output is rescaled, per
sample, to the RMS of the op's input, `y * rms(x) / rms(y)`, before it is weighted, so the weights
inside an op cannot absorb its alpha (the role of DARTS's BatchNorm without affine parameters; SR
networks avoid BatchNorm, and a per-sample norm keeps data-parallel and single-process runs equal).
Fusion does not apply then (every output is needed on its own).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.ops import Conv, build_op


def rms(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Root mean square of each sample over (C, H, W), shape (N, 1, 1, 1)."""
    return x.square().mean(dim=(1, 2, 3), keepdim=True).add(eps).sqrt()


def rescale_to(y: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """`y` rescaled per sample to the RMS of `ref`: invariant to any positive scaling of y."""
    return y * (rms(ref) / rms(y))


def _layers(op: nn.Module) -> nn.Sequential | None:
    """The op's layer sequence if it ends in a bias-free convolution (Conv, SepConv, DilConv), else None."""
    layers = getattr(op, "op", None)
    if isinstance(layers, nn.Sequential) and isinstance(layers[-1], nn.Conv2d) and layers[-1].bias is None:
        return layers
    return None


class MixedOp(nn.Module):
    """Weighted sum of the candidate ops `names` at `channels` (C -> C) channels.

    `self.ops[i]` is the op of `names[i]` (at C/K channels with partial channels), so the module's
    weights are laid out the same with or without fusion; fusion only changes how forward computes.
    """

    def __init__(self, channels: int, names: Sequence[str], partial_channels: int = 1, fuse: bool = True,
                 group: int = 0, scale_free: bool = False):
        super().__init__()
        if channels % partial_channels:
            raise ValueError(f"partial_channels = {partial_channels} must divide channels = {channels}")
        self.names = tuple(names)
        self.k = partial_channels
        self.group = group % partial_channels  # the block of C/K channels the ops see (partial channels)
        self.scale_free = scale_free
        self.ops = nn.ModuleList(build_op(name, channels // partial_channels) for name in self.names)
        fuse = fuse and not scale_free
        self.fuse = fuse
        fusable = [i for i, op in enumerate(self.ops) if isinstance(op, Conv)] if fuse else []
        self.fused = fusable if len(fusable) > 1 else []
        self.unfused = [i for i in range(len(self.ops)) if i not in self.fused]
        leading = [_layers(self.ops[i]) for i in self.unfused]
        self.shared_relu = fuse and any(seq is not None and isinstance(seq[0], nn.ReLU) for seq in leading)
        self.weights: torch.Tensor | None = None  # bound by the supernet for one forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weights is None:
            raise RuntimeError("MixedOp.weights is not bound; the supernet sets it before each forward")
        if self.k == 1:
            return self.mix(x, self.weights)
        ch = x.shape[1]
        c = ch // self.k
        lo = self.group * c
        part = self.mix(x[:, lo:lo + c], self.weights)
        return F.pad(part, (0, 0, 0, 0, lo, ch - lo - c))  # zeros outside the block, aligned with x

    def mix(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """sum_i weights[i] * op_i(x); with `fuse`, computed as described in the module docstring."""
        if self.scale_free:
            return sum(w * rescale_to(op(x), x) for w, op in zip(weights, self.ops))
        if not self.fuse:
            return sum(w * op(x) for w, op in zip(weights, self.ops))
        relu_x = F.relu(x) if self.shared_relu else None
        out = self.fused_conv(x, weights) if self.fused else None
        for i in self.unfused:
            y = self.scaled_op(i, x, relu_x, weights[i])
            out = y if out is None else out + y
        return out

    def scaled_op(self, i: int, x: torch.Tensor, relu_x: torch.Tensor | None, w: torch.Tensor) -> torch.Tensor:
        """w * op_i(x), with w folded into the op's last kernel and its leading ReLU shared, if it has them."""
        layers = _layers(self.ops[i])
        if layers is None:
            return w * self.ops[i](x)
        h = x
        if isinstance(layers[0], nn.ReLU) and relu_x is not None:
            h, layers = relu_x, layers[1:]
        for layer in layers[:-1]:
            h = layer(h)
        last = layers[-1]
        return F.conv2d(h, w * last.weight, None, last.stride, last.padding, last.dilation, last.groups)

    def fused_conv(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """conv(x, sum_i w_i pad(K_i)) over the plain convs: one conv with the largest kernel."""
        kernels = [self.ops[i].op[0].weight for i in self.fused]
        size = max(k.shape[-1] for k in kernels)
        merged = sum(weights[i] * F.pad(k, [(size - k.shape[-1]) // 2] * 4) for i, k in zip(self.fused, kernels))
        return F.conv2d(x, merged, padding=size // 2)
