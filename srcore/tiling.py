"""Tiled inference: run an SR network over overlapping LR windows and blend the SR windows into one image.

Used by `srcore.evaluation.super_resolve` (`tools/evaluate.py --tile`) and `tools/upscale.py`, so that an image
of any size goes through a network with bounded memory: the working set is the output image, two 1-D weight
sums and one window's activations.

Layout, along each axis of an LR image of `size` pixels, with `tile` T and `overlap` O (LR pixels):

* the window is min(T, size) pixels; an axis no longer than T is one window (an image smaller than a tile is
  one plain forward pass);
* n = ceil((size - O) / (T - O)) windows whose starts are spread evenly from 0 to size - T, so two neighbours
  share at least O pixels (the last window ends exactly at the image edge; nothing is padded);
* in the span two neighbours share, the outer `margin(O)` = floor((O - O // 2) / 2) pixels next to each
  window's inner edge are discarded (weight 0: there the window's zero padding changes a convolutional
  network's output), and the middle `O // 2` pixels (times the scale, in SR pixels) are a raised-cosine
  cross-fade: weights 0.5 - 0.5 cos(pi (j + 0.5) / n) and their complement, so the seams are smooth;
* image edges are not faded (weight 1 up to the edge); the 2-D weight of a window is the outer product of its
  two axis weights, and the output is sum(weight * SR window) / sum(weight).

What this guarantees: for a network whose output at an LR pixel depends only on LR pixels within a radius r
(a plain convolutional network: r = sum of its kernels' half-widths, e.g. 20 for SPAN), tiles with
margin(O) >= r reproduce the whole-image output up to float rounding (tested). Networks with wider context
are not reproduced exactly by any tiling: RLFN/RFDN's ESA max-pools a strided map of the whole window and
resizes it to the window, and IMDN/RCAN's channel attention averages over the window, so each window sees
different context. For them, blending removes the seams and the remaining difference to the whole-image pass
is measured in tests/test_tiling.py (RLFN-S x2 on Set5: see the bound stated there and in the README).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

MIN_TILE = 16  # LR pixels; ESA (RLFN, RFDN, DLSR cells) needs windows of at least 15 pixels


def check_tiling(tile: int, overlap: int) -> None:
    """One-line ValueError unless `tile` is 0 (whole image) or >= MIN_TILE and 0 <= overlap < tile / 2."""
    if isinstance(tile, bool) or not isinstance(tile, int) or (tile != 0 and tile < MIN_TILE):
        raise ValueError(f"tile must be 0 (whole image) or an integer >= {MIN_TILE} LR pixels, got {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise ValueError(f"tile overlap must be an integer >= 0 LR pixels, got {overlap!r}")
    if tile and 2 * overlap >= tile:
        raise ValueError(f"tile overlap must be < tile / 2 = {tile / 2:g} LR pixels, got overlap {overlap} "
                         f"with tile {tile}")


def fade_width(overlap: int) -> int:
    """LR pixels of raised-cosine cross-fade in the middle of a shared span of `overlap` pixels."""
    return overlap // 2


def margin(overlap: int) -> int:
    """LR pixels discarded next to a window's inner edge (its output there depends on the zero padding)."""
    return (overlap - fade_width(overlap)) // 2


def window_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start of each window along an axis of `size` LR pixels (see the module docstring)."""
    if tile <= 0 or size <= tile:
        return [0]
    n = math.ceil((size - overlap) / (tile - overlap))
    return [round(k * (size - tile) / (n - 1)) for k in range(n)]


def axis_weights(size: int, starts: list[int], window: int, overlap: int, scale: int) -> list[torch.Tensor]:
    """Each window's 1-D blending weight over its window * scale SR pixels (float64)."""
    weights = [torch.ones(window * scale, dtype=torch.float64) for _ in starts]
    fade = fade_width(overlap)
    for k in range(len(starts) - 1):
        a, b = starts[k + 1], starts[k] + window  # the span windows k and k+1 share
        f = a + (b - a - fade) // 2  # first LR pixel of the cross-fade
        n = fade * scale
        j = torch.arange(n, dtype=torch.float64)
        rise = 0.5 - 0.5 * torch.cos(math.pi * (j + 0.5) / n)  # window k+1 fades in, window k fades out
        left, right = weights[k], weights[k + 1]
        lo, hi = (f - starts[k]) * scale, (f + fade - starts[k]) * scale  # the fade in window k's SR pixels
        left[lo:hi] *= 1 - rise
        left[hi:] = 0
        lo, hi = (f - a) * scale, (f + fade - a) * scale  # and in window k+1's
        right[:lo] = 0
        right[lo:hi] *= rise
    return weights


def count_windows(h: int, w: int, tile: int, overlap: int) -> int:
    """How many forward passes `forward_tiled` makes for an (h, w) LR image."""
    return len(window_starts(h, tile, overlap)) * len(window_starts(w, tile, overlap))


@torch.no_grad()
def forward_tiled(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, scale: int,
                  tile: int, overlap: int = 32,
                  on_window: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Run `model` on (N, C, H, W) LR `x` in overlapping tile x tile windows, blended (module docstring).

    tile = 0, or an image no larger than one tile, is one plain forward pass. `on_window(done, total)` is
    called after each window (progress bars).
    """
    check_tiling(tile, overlap)
    _, _, h, w = x.shape
    ys, xs = window_starts(h, tile, overlap), window_starts(w, tile, overlap)
    total = len(ys) * len(xs)
    if total == 1:
        out = model(x)
        if on_window:
            on_window(1, 1)
        return out
    th, tw = min(tile, h), min(tile, w)
    wy = axis_weights(h, ys, th, overlap, scale)
    wx = axis_weights(w, xs, tw, overlap, scale)
    out = None
    done = 0
    for iy, y0 in enumerate(ys):
        for ix, x0 in enumerate(xs):
            sr = model(x[:, :, y0:y0 + th, x0:x0 + tw])
            if sr.shape[-2:] != (th * scale, tw * scale):
                raise ValueError(f"tiling: the network turned a {th}x{tw} window into {tuple(sr.shape[-2:])}, "
                                 f"expected x{scale} = {th * scale}x{tw * scale}")
            if out is None:
                out = sr.new_zeros(sr.shape[0], sr.shape[1], h * scale, w * scale)
            weight = (wy[iy][:, None] * wx[ix][None, :]).to(sr.device, sr.dtype)
            out[:, :, y0 * scale:(y0 + th) * scale, x0 * scale:(x0 + tw) * scale] += sr * weight
            done += 1
            if on_window:
                on_window(done, total)
    # weights of a separable grid sum to the outer product of the per-axis sums (1 up to rounding)
    norm_y = torch.zeros(h * scale, dtype=torch.float64)
    norm_x = torch.zeros(w * scale, dtype=torch.float64)
    for y0, wgt in zip(ys, wy, strict=True):
        norm_y[y0 * scale:(y0 + th) * scale] += wgt
    for x0, wgt in zip(xs, wx, strict=True):
        norm_x[x0 * scale:(x0 + tw) * scale] += wgt
    return out / (norm_y[:, None] * norm_x[None, :]).to(out.device, out.dtype)
