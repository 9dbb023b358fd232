"""Image-space skips: the network learns a residual on top of a fixed, parameter-free upscaling of its input.

`ImageSkip(kind, scale)` is the last step of a pixel-shuffle network. It takes the LR input `x` (RGB in
[0, 1]) and the upsampler's last conv output `y` (3 * s^2 channels at LR size, in [0, 1] units) and returns
the SR image:

  * `none`:    PixelShuffle(y) (the plain network);
  * `nearest`: PixelShuffle(y + x repeated s^2 times per channel): the anchor of ABPN (Du et al., MAI 2021)
               and NCNet, nearest-neighbour upscaling added before the shuffle;
  * `bicubic`: PixelShuffle(y) + bicubic(x): the MATLAB bicubic upscaling of the input added after it.

A network with a skip zeroes its last conv (`zero_init`), so an untrained network *is* its skip and
training starts from bicubic (or nearest) instead of from a black image.

The bicubic skip is exactly MATLAB's `imresize(x, s, 'bicubic')` (Keys kernel a = -0.5, symmetric
borders; `srcore.imresize`), written as convolutions: the LR image, padded by 2 pixels symmetrically,
goes through a fixed depthwise 5x5 conv with 3 * s^2 outputs (one output per colour and sub-pixel phase,
the outer product of two 1-D phase kernels), then PixelShuffle(s). The kernels are non-persistent buffers
(not parameters, not in state dicts), and the whole skip exports to ONNX as Slice/Concat/Conv/DepthToSpace.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .imresize import _cubic

SKIPS = ("none", "nearest", "bicubic")
_PAD = 2  # the cubic kernel reaches 2 LR pixels from the sampled position


def check_skip(kind: str) -> str:
    if kind not in SKIPS:
        raise ValueError(f"skip must be one of {', '.join(SKIPS)}, got {kind!r}")
    return kind


def phase_taps(scale: int) -> np.ndarray:
    """(scale, 5) float64: the MATLAB bicubic weights of LR pixels i-2..i+2 for HR pixel s*i + p (row p).

    MATLAB samples output pixel x (1-based) at input position x/s + (1 - 1/s)/2; for x = s*i + p + 1 that
    is LR position i + (p + 0.5)/s - 0.5 (0-based), whose taps at distance > 2 are zero.
    """
    p = np.arange(scale, dtype=np.float64)
    u = (p + 0.5) / scale - 0.5  # offset from LR pixel i, in (-0.5, 0.5)
    w = _cubic(u[:, None] - np.arange(-_PAD, _PAD + 1, dtype=np.float64)[None, :])
    return w / w.sum(axis=1, keepdims=True)  # the Keys kernel sums to 1 already; MATLAB normalises anyway


def bicubic_kernel(scale: int, channels: int = 3) -> torch.Tensor:
    """The (channels * s^2, 1, 5, 5) depthwise kernel: output channel c*s^2 + py*s + px (PixelShuffle's order)
    holds phase (py, px) of input channel c."""
    t = phase_taps(scale)
    k = np.einsum("ai,bj->abij", t, t).reshape(scale * scale, 1, 2 * _PAD + 1, 2 * _PAD + 1)
    return torch.from_numpy(np.tile(k, (channels, 1, 1, 1))).float()


def pad_symmetric(x: torch.Tensor, pad: int = _PAD) -> torch.Tensor:
    """Pad the last two dims by `pad` with the edge pixel repeated then mirrored (MATLAB's 'symmetric',
    numpy's 'symmetric'): ... x1 x0 | x0 x1 ... x(n-1) | x(n-1) x(n-2) ... For a side shorter than `pad` the
    mirror would run off the image; there (n = 1, for pad 2) symmetric padding is replicate padding."""
    for dim in (-2, -1):
        n = x.shape[dim]
        if n >= pad:
            left = x.narrow(dim, 0, pad).flip(dim)
            right = x.narrow(dim, n - pad, pad).flip(dim)
        else:
            left = x.narrow(dim, 0, 1).repeat_interleave(pad, dim)
            right = x.narrow(dim, n - 1, 1).repeat_interleave(pad, dim)
        x = torch.cat([left, x, right], dim=dim)
    return x


class BicubicUpsample(nn.Module):
    """MATLAB-compatible bicubic x`scale` upscaling of (B, C, h, w) as a fixed depthwise conv + PixelShuffle."""

    def __init__(self, scale: int, channels: int = 3):
        super().__init__()
        self.scale, self.channels = scale, channels
        self.register_buffer("weight", bicubic_kernel(scale, channels), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(dtype=x.dtype)
        return F.pixel_shuffle(F.conv2d(pad_symmetric(x), w, groups=self.channels), self.scale)


def nearest_anchor(x: torch.Tensor, scale: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, C*s^2, h, w) with every channel repeated s^2 times: PixelShuffle of it is the
    nearest-neighbour upscaling of x (channel c*s^2 + k is colour c, as PixelShuffle groups them)."""
    return x.repeat_interleave(scale * scale, dim=1)


class ImageSkip(nn.Module):
    """The image-space skip of a pixel-shuffle network (see the module docstring); no parameters."""

    def __init__(self, kind: str, scale: int):
        super().__init__()
        self.kind, self.scale = check_skip(kind), scale
        self.bicubic = BicubicUpsample(scale) if kind == "bicubic" else None

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: LR input (B, 3, h, w) in [0, 1]; y: the last conv's output (B, 3 s^2, h, w) in [0, 1] units."""
        if self.kind == "nearest":
            y = y + nearest_anchor(x, self.scale)
        out = F.pixel_shuffle(y, self.scale)
        if self.bicubic is not None:
            out = out + self.bicubic(x)
        return out

    def extra_repr(self) -> str:
        return f"{self.kind}, scale={self.scale}"


@torch.no_grad()
def zero_init(conv: nn.Conv2d) -> nn.Conv2d:
    """Zero a conv's weight and bias (the last conv of a network with an image-space skip)."""
    conv.weight.zero_()
    if conv.bias is not None:
        conv.bias.zero_()
    return conv
