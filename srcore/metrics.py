"""PSNR and SSIM exactly as the SR literature computes them.

The convention (EDSR/BasicSR/MATLAB evaluation scripts):
* the SR output is clipped to [0, 1] and rounded to 8 bits before scoring (`to_uint8`);
* the ground truth must already have the SR size (the data loaders crop it: `srcore.data.check_pair`,
  `modcrop`); a mismatch is an error;
* `test_y_channel=True` scores the Y channel of ITU-R BT.601 YCbCr as MATLAB `rgb2ycbcr` on an image in
  [0, 1]: Y = 16 + (65.481 R + 128.553 G + 24.966 B), kept in float (MATLAB scripts that round Y to uint8
  score about 0.08 dB lower at x2: pass `round_y=True` to get those numbers);
* grayscale images are scored on their gray values (as MATLAB scripts that skip `rgb2ycbcr` for
  1-channel images, which is how Set14's `bridge` is scored in the published tables);
* `crop_border` pixels (the scale, by convention) are shaved from every side;
* PSNR = 10 log10(255^2 / MSE); SSIM is Wang et al. 2004 (Gaussian window 11, sigma 1.5, K1 0.01,
  K2 0.03) through `skimage.metrics.structural_similarity`, on the same channel(s).
`test_y_channel=False` gives RGB PSNR/SSIM over all channels (the NTIRE efficient-SR convention).
"""
from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import structural_similarity

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)


def to_uint8(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """A [0, 1] float image -> uint8 (H, W, C) (or (H, W) for 1 channel): clip, scale by 255, round.

    Torch input is (C, H, W) or (1, C, H, W); numpy float input is (H, W[, C]).
    """
    if isinstance(img, torch.Tensor):
        t = img.detach().to("cpu", torch.float64)
        if t.ndim == 4:
            if t.shape[0] != 1:
                raise ValueError(f"to_uint8 takes one image, got a batch of shape {tuple(t.shape)}")
            t = t[0]
        if t.ndim != 3:
            raise ValueError(f"to_uint8 expects (C, H, W), got shape {tuple(t.shape)}")
        arr = t.permute(1, 2, 0).numpy()
    else:
        if img.dtype == np.uint8:
            return img
        arr = np.asarray(img, dtype=np.float64)
    arr = np.floor(np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return arr


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """uint8 or [0,255] float RGB (H, W, 3) -> float64 Y in [16, 235], MATLAB rgb2ycbcr without rounding."""
    return 16.0 + np.asarray(img, dtype=np.float64) @ _Y_WEIGHTS / 255.0


def _score_channels(img: np.ndarray, test_y_channel: bool, round_y: bool) -> np.ndarray:
    """The float64 array that is scored: Y (H, W) or gray (H, W) or RGB (H, W, 3), in [0, 255]."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return img.astype(np.float64)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape {img.shape}")
    if not test_y_channel:
        return img.astype(np.float64)
    y = rgb_to_y(img)
    return np.floor(y + 0.5) if round_y else y


def _prepare(sr: np.ndarray, gt: np.ndarray, crop_border: int, test_y_channel: bool, round_y: bool):
    sr, gt = to_uint8(sr), to_uint8(gt)
    if sr.shape != gt.shape:
        raise ValueError(f"SR and GT shapes differ: {sr.shape} vs {gt.shape} (modcrop the GT to the SR size)")
    a = _score_channels(sr, test_y_channel, round_y)
    b = _score_channels(gt, test_y_channel, round_y)
    if crop_border:
        if 2 * crop_border >= min(a.shape[0], a.shape[1]):
            raise ValueError(f"crop_border={crop_border} leaves nothing of a {a.shape[0]}x{a.shape[1]} image")
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    return a, b


def psnr(sr, gt, crop_border: int, test_y_channel: bool = True, round_y: bool = False) -> float:
    """PSNR in dB between two 8-bit images (uint8 arrays, or [0,1] floats that are rounded first)."""
    a, b = _prepare(sr, gt, crop_border, test_y_channel, round_y)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


SSIM_WINDOW = 11  # the Gaussian window's side: an image needs at least this much left after the border crop


def ssim(sr, gt, crop_border: int, test_y_channel: bool = True, round_y: bool = False) -> float:
    """SSIM (Wang et al. 2004: Gaussian window sigma 1.5 truncated to 11x11) on Y, gray or RGB."""
    a, b = _prepare(sr, gt, crop_border, test_y_channel, round_y)
    return float(structural_similarity(a, b, data_range=255.0, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, K1=0.01, K2=0.03,
                                       channel_axis=2 if a.ndim == 3 else None))
