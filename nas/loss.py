"""The search's reconstruction loss: L1, plus DLSR's optional high-frequency error norm (HFEN).

HFEN (Ravishankar & Bresler 2011, as DLSR uses it): both images are smoothed by a 5x5 Gaussian
(sigma 1.5, no padding), filtered by the 3x3 Laplacian, each result divided by its largest absolute
value, and compared by L1. DLSR's loss is L1 + 0.2 * HFEN. Unlike DLSR's code, the filters are
per-channel (depthwise) and built on the input's device and dtype.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


def gaussian_kernel(size: int = 5, sigma: float = 1.5) -> torch.Tensor:
    """A normalised (size, size) Gaussian in float64."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma * sigma)) / (2 * math.pi * sigma * sigma)
    return g / g.sum()


def log_filter(img: torch.Tensor) -> torch.Tensor:
    """Laplacian of Gaussian, per channel: Gaussian 5x5 (valid), then Laplacian 3x3 (same)."""
    c = img.shape[1]
    g = gaussian_kernel().to(img)[None, None].expand(c, 1, 5, 5)
    lap = torch.tensor(LAPLACIAN, dtype=img.dtype, device=img.device)[None, None].expand(c, 1, 3, 3)
    return F.conv2d(F.conv2d(img, g, groups=c), lap, padding=1, groups=c)


def hfen(sr: torch.Tensor, gt: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """DLSR's HFEN: L1 between max-normalised LoG responses of `sr` and `gt`."""
    a, b = log_filter(sr), log_filter(gt)
    return F.l1_loss(a / a.abs().max().clamp_min(eps), b / b.abs().max().clamp_min(eps))


def sr_loss(sr: torch.Tensor, gt: torch.Tensor, hfen_weight: float = 0.0) -> torch.Tensor:
    """L1(sr, gt) + hfen_weight * HFEN(sr, gt)."""
    loss = F.l1_loss(sr, gt)
    if hfen_weight:
        loss = loss + hfen_weight * hfen(sr, gt)
    return loss
