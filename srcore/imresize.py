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

Weights are built once per (length, scale) as a band: for each output pixel its few taps (4 / scale + 2
input pixels when shrinking, 6 when enlarging) and their source indices, `resize_weights`. A pass sums the
taps in order, tap by tap, over strips of output rows, so memory stays proportional to the image (uint8
input keeps a uint8 intermediate, as MATLAB), never to length x length as a dense matrix would. It works
on numpy arrays (H, W[, C]) and on torch tensors (..., H, W).

Images beyond `MAX_PIXELS` (100 megapixels, e.g. 10000 x 10000) in or out are refused with `ImageTooLarge`
(a ValueError) before any work: crop or tile such an image first.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

_KERNEL_WIDTH = 4.0
MAX_PIXELS = 100_000_000  # per image (H x W), input or output
_STRIP_ELEMENTS = 1 << 22  # elements per strip of a pass (32 MiB of float64 temporaries)


class ImageTooLarge(ValueError):
    """An image beyond `MAX_PIXELS`."""


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2)))


@lru_cache(maxsize=64)
def resize_weights(in_len: int, out_len: int, scale: float, antialias: bool = True,
                   border: str = "symmetric") -> tuple[np.ndarray, np.ndarray]:
    """The taps of one MATLAB bicubic 1-D resize pass: float64 weights (out_len, taps) and the 0-based
    input index of each (out_len, taps), in MATLAB's tap order (mirrored taps stay separate, as MATLAB).

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
    w.setflags(write=False)
    src.setflags(write=False)
    return w, src


def resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True,
                  border: str = "symmetric") -> np.ndarray:
    """The same pass as a dense (out_len, in_len) float64 matrix (for checks on small sizes only)."""
    w, src = resize_weights(in_len, out_len, scale, antialias, border)
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    np.add.at(mat, (np.repeat(np.arange(out_len), w.shape[1]), src.ravel()), w.ravel())
    return mat


def _out_len(in_len: int, scale: float) -> int:
    return int(math.ceil(in_len * scale))


def _round_uint8(a):
    if isinstance(a, torch.Tensor):
        return torch.floor(a + 0.5).clamp_(0, 255)
    return np.clip(np.floor(a + 0.5), 0, 255)


def check_pixels(h: int, w: int, what: str = "image") -> None:
    """Raise ImageTooLarge when an h x w image exceeds MAX_PIXELS."""
    if h * w > MAX_PIXELS:
        raise ImageTooLarge(f"{what} {w}x{h} ({h * w / 1e6:.0f} megapixels) exceeds imresize's bound of "
                            f"{MAX_PIXELS / 1e6:.0f} megapixels (srcore.imresize.MAX_PIXELS); crop or tile it first")


def _pass(x, w: np.ndarray, src: np.ndarray, round_to_uint8: bool):
    """One 1-D pass along axis 0 of `x` (numpy or torch): out[i] = sum_t w[i, t] * x[src[i, t]], taps in order."""
    n_out, taps = w.shape
    rest = math.prod(x.shape[1:])
    rows = max(1, _STRIP_ELEMENTS // max(rest, 1))
    if isinstance(x, torch.Tensor):  # float only: all taps of a strip gathered at once, then one weighted sum
        wt = torch.tensor(w, device=x.device, dtype=x.dtype)
        it = torch.tensor(src, device=x.device)
        flat = x.reshape(x.shape[0], -1)
        out = flat.new_empty((n_out, flat.shape[1]))
        rows = max(1, rows // taps)
        for i0 in range(0, n_out, rows):
            i1 = min(i0 + rows, n_out)
            gathered = flat.index_select(0, it[i0:i1].reshape(-1)).view(i1 - i0, taps, -1)
            out[i0:i1] = torch.einsum("rt,rtk->rk", wt[i0:i1], gathered)
        return out.view(n_out, *x.shape[1:])
    out = np.empty((n_out, *x.shape[1:]), dtype=np.uint8 if round_to_uint8 else np.float64)
    view = (slice(None),) + (None,) * (x.ndim - 1)
    for i0 in range(0, n_out, rows):
        i1 = min(i0 + rows, n_out)
        acc = w[i0:i1, 0][view] * x[src[i0:i1, 0]]
        for t in range(1, taps):
            acc += w[i0:i1, t][view] * x[src[i0:i1, t]]
        out[i0:i1] = _round_uint8(acc) if round_to_uint8 else acc
    return out


def imresize(img, scale: float | None = None, *, size: tuple[int, int] | None = None, antialias: bool = True,
             border: str = "symmetric"):
    """Resize like MATLAB `imresize(img, scale, 'bicubic')` (or to `size` = (out_h, out_w)).

    numpy input is (H, W) or (H, W, C); uint8 input gives uint8 output with per-pass rounding exactly as
    MATLAB, float input stays float (no clipping). torch input is (..., H, W) float (any range); pass
    `round_uint8` semantics by giving values in 0..255 and rounding yourself if needed. Images beyond
    MAX_PIXELS (input or output) raise ImageTooLarge.
    """
    is_torch = isinstance(img, torch.Tensor)
    if is_torch:
        if img.dim() < 2:
            raise ValueError(f"imresize expects a (..., H, W) tensor, got shape {tuple(img.shape)}")
        h, w = img.shape[-2], img.shape[-1]
    else:
        if img.ndim not in (2, 3):
            raise ValueError(f"imresize expects an (H, W) or (H, W, C) array, got shape {img.shape}")
        h, w = img.shape[0], img.shape[1]
    if (scale is None) == (size is None):
        raise ValueError("imresize needs exactly one of `scale` or `size`")
    if size is not None:
        out_h, out_w = size
        sh, sw = out_h / h if h else 0.0, out_w / w if w else 0.0
    else:
        if not scale > 0 or not math.isfinite(scale):
            raise ValueError(f"imresize scale must be > 0, got {scale}")
        sh = sw = float(scale)
        out_h, out_w = _out_len(h, sh), _out_len(w, sw)
    if min(h, w, out_h, out_w) < 1:
        raise ValueError(f"imresize: an empty image: {w}x{h} -> {out_w}x{out_h}")
    check_pixels(h, w)
    check_pixels(out_h, out_w, "resized image")

    is_uint8 = (not is_torch) and img.dtype == np.uint8
    out = img if (is_torch or is_uint8) else img.astype(np.float64)
    h_axis, w_axis = (out.ndim - 2, out.ndim - 1) if is_torch else (0, 1)
    passes = [(h_axis, h, out_h, sh), (w_axis, w, out_w, sw)]
    if sw < sh:  # MATLAB resizes the dimension with the smaller scale first
        passes.reverse()
    move = torch.movedim if is_torch else np.moveaxis
    for axis, n_in, n_out, s in passes:
        wts, src = resize_weights(n_in, n_out, s, antialias, border)
        out = move(_pass(move(out, axis, 0), wts, src, is_uint8), 0, axis)
    if is_torch:
        return out
    return np.ascontiguousarray(out)


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
