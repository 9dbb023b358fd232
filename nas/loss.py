"""The search's reconstruction loss: L1, plus DLSR's optional high-frequency error norm (HFEN).

HFEN (Ravishankar & Bresler 2011, as DLSR uses it): both images are smoothed by a 5x5 Gaussian
(sigma 1.5, per channel, no padding), filtered by the 3x3 Laplacian (padding 1), each result divided by
its largest value over the batch, and compared by L1. Two variants (`loss.hfen_mode`):
  * `dlsr`, DLSR's released `losses/l1_loss.py`: the Laplacian kernel spans the three colour channels,
    so it filters their sum (one response per pixel), and the divisor is the signed maximum (skipped
    when it is 0);
  * `per_channel`: a Laplacian per colour channel, divided by the largest absolute value.
Both are range-free (a Gaussian and a Laplacian are linear, then the maximum divides), so DLSR's
`L1_255 + 0.2 HFEN` on [0, 255] is 255 (`L1 + (0.2 / 255) HFEN`) on [0, 1]: the same minimiser, and
the same Adam steps (Adam does not see a constant factor). Under data-parallel search the maximum is
the global batch's (`nas.distributed.global_max`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nas.distributed import global_max

LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))
HFEN_MODES = ("per_channel", "dlsr")


def gaussian_kernel(size: int = 5, sigma: float = 1.5) -> torch.Tensor:
    """A normalised (size, size) Gaussian in float64."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma * sigma)) / (2 * math.pi * sigma * sigma)
    return g / g.sum()


def log_filter(img: torch.Tensor, sum_channels: bool = False) -> torch.Tensor:
    """Laplacian of Gaussian: Gaussian 5x5 per channel (valid), then Laplacian 3x3 (same), per channel
    or (`sum_channels`) over the sum of the channels."""
    c = img.shape[1]
    g = gaussian_kernel().to(img)[None, None].expand(c, 1, 5, 5)
    smooth = F.conv2d(img, g, groups=c)
    lap = torch.tensor(LAPLACIAN, dtype=img.dtype, device=img.device)[None, None]
    if sum_channels:
        return F.conv2d(smooth, lap.expand(1, c, 3, 3), padding=1)
    return F.conv2d(smooth, lap.expand(c, 1, 3, 3), padding=1, groups=c)


def hfen(sr: torch.Tensor, gt: torch.Tensor, mode: str = "per_channel", eps: float = 1e-8) -> torch.Tensor:
    """L1 between max-normalised LoG responses of `sr` and `gt` (see the module docstring for `mode`)."""
    if mode not in HFEN_MODES:
        raise ValueError(f"hfen mode {mode!r}: expected one of {', '.join(HFEN_MODES)}")
    dlsr = mode == "dlsr"
    a, b = log_filter(sr, dlsr), log_filter(gt, dlsr)
    if dlsr:
        ma, mb = global_max(a), global_max(b)
        a = a / ma if float(ma.detach()) != 0 else a
        b = b / mb if float(mb.detach()) != 0 else b
        return F.l1_loss(b, a)
    return F.l1_loss(a / global_max(a.abs()).clamp_min(eps), b / global_max(b.abs()).clamp_min(eps))


def sr_loss(sr: torch.Tensor, gt: torch.Tensor, hfen_weight: float = 0.0,
            hfen_mode: str = "per_channel") -> torch.Tensor:
    """L1(sr, gt) + hfen_weight * HFEN(sr, gt)."""
    loss = F.l1_loss(sr, gt)
    if hfen_weight:
        loss = loss + hfen_weight * hfen(sr, gt, hfen_mode)
    return loss
