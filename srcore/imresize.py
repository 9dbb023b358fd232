"""MATLAB-compatible `imresize` (bicubic, antialiased on downscale) and `modcrop`.

The SR literature makes its LR images with MATLAB's `imresize(modcrop(HR, s), 1/s, 'bicubic')` and
scores against them, so our degradation must be MATLAB's, not PIL's or torch's. What MATLAB does:

* Cubic kernel with a = -0.5 (Keys). When shrinking (scale < 1) the kernel is stretched by 1/scale
  (antialiasing), so each output pixel sees 4/scale input pixels.
* Output pixel x (1-based) samples input position u = x/scale + 0.5 * (1 - 1/scale).
* Each output pixel's weights are normalised to sum to 1; out-of-range taps are mirrored
  symmetrically (index sequence 1..n, n..1, 1..n, ...).
* The dimension with the smaller scale factor is resized first (rows first on ties), and for uint8
  input the result of each 1-D pass is rounded to uint8 (half away from zero, saturated). Keeping the
  intermediate in float instead differs from MATLAB by up to 2 grey levels.

Weights are built once per (length, scale) as a dense matrix, so a pass is one matrix product; it works
on numpy arrays (H, W[, C]) and on torch tensors (..., H, W).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

_KERNEL_WIDTH = 4.0


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2)))


@lru_cache(maxsize=64)
def resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True,
                  border: str = "symmetric") -> np.ndarray:
    """The (out_len, in_len) float64 matrix of one MATLAB bicubic 1-D resize pass.

    border="symmetric" is MATLAB's `imresize`; "replicate" clamps out-of-range taps to the edge pixel,
    which is what older MATLAB-made benchmark LR files (e.g. SelfExSR's) were produced with.
    """
    shrink = scale < 1 and antialias
    width = _KERNEL_WIDTH / scale if shrink else _KERNEL_WIDTH
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # 1-based input positions
    dist = u[:, None] - idx
    w = scale * _cubic(dist * scale) if shrink else _cubic(dist)
    w = w / w.sum(axis=1, keepdims=True)
    if border == "symmetric":  # mirror out-of-range positions: 1..n, n..1, 1..n, ...
        period = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
        src = period[np.mod(idx - 1, 2 * in_len).astype(np.int64)]
    elif border == "replicate":
        src = np.clip(idx - 1, 0, in_len - 1).astype(np.int64)
    else:
        raise ValueError(f"imresize border must be 'symmetric' or 'replicate', got {border!r}")
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    np.add.at(mat, (np.repeat(np.arange(out_len), taps), src.ravel()), w.ravel())
    return mat


def _out_len(in_len: int, scale: float) -> int:
    return int(math.ceil(in_len * scale))


def _round_uint8(a):
    if isinstance(a, torch.Tensor):
        return torch.floor(a + 0.5).clamp_(0, 255)
    return np.clip(np.floor(a + 0.5), 0, 255)


def imresize(img, scale: float | None = None, *, size: tuple[int, int] | None = None, antialias: bool = True,
             border: str = "symmetric"):
    """Resize like MATLAB `imresize(img, scale, 'bicubic')` (or to `size` = (out_h, out_w)).

    numpy input is (H, W) or (H, W, C); uint8 input gives uint8 output with per-pass rounding exactly as
    MATLAB, float input stays float (no clipping). torch input is (..., H, W) float (any range); pass
    `round_uint8` semantics by giving values in 0..255 and rounding yourself if needed.
    """
    is_torch = isinstance(img, torch.Tensor)
    if is_torch:
        h, w = img.shape[-2], img.shape[-1]
    else:
        if img.ndim not in (2, 3):
            raise ValueError(f"imresize expects an (H, W) or (H, W, C) array, got shape {img.shape}")
        h, w = img.shape[0], img.shape[1]
    if (scale is None) == (size is None):
        raise ValueError("imresize needs exactly one of `scale` or `size`")
    if size is not None:
        out_h, out_w = size
        sh, sw = out_h / h, out_w / w
    else:
        if scale <= 0:
            raise ValueError(f"imresize scale must be > 0, got {scale}")
        sh = sw = float(scale)
        out_h, out_w = _out_len(h, sh), _out_len(w, sw)

    is_uint8 = (not is_torch) and img.dtype == np.uint8
    if is_torch:
        out = img
        h_axis, w_axis = out.ndim - 2, out.ndim - 1
    else:
        out = img.astype(np.float64)
        h_axis, w_axis = 0, 1
    passes = [(h_axis, h, out_h, sh), (w_axis, w, out_w, sw)]
    if sw < sh:  # MATLAB resizes the dimension with the smaller scale first
        passes.reverse()
    for axis, n_in, n_out, s in passes:
        mat = resize_matrix(n_in, n_out, s, antialias, border)
        if is_torch:
            m = torch.from_numpy(mat).to(device=out.device, dtype=out.dtype)
            out = torch.movedim(torch.tensordot(m, torch.movedim(out, axis, 0), dims=([1], [0])), 0, axis)
        else:
            out = np.moveaxis(np.tensordot(mat, np.moveaxis(out, axis, 0), axes=([1], [0])), 0, axis)
        if is_uint8:
            out = _round_uint8(out)
    return out.astype(np.uint8) if is_uint8 else out


def modcrop(img, scale: int):
    """Keep the top-left floor(H/s)*s by floor(W/s)*s pixels; numpy (H, W[, C]) or torch (..., H, W)."""
    if isinstance(img, torch.Tensor):
        h, w = img.shape[-2:]
        return img[..., : h - h % scale, : w - w % scale]
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def bicubic_degrade(hr_uint8: np.ndarray, scale: int) -> np.ndarray:
    """The standard SR degradation: `imresize(modcrop(HR, s), 1/s, 'bicubic')` on uint8, as MATLAB."""
    if hr_uint8.dtype != np.uint8:
        raise ValueError(f"bicubic_degrade expects a uint8 image (as MATLAB), got {hr_uint8.dtype}")
    return imresize(modcrop(hr_uint8, scale), 1.0 / scale)
