"""Running a network over a benchmark set and scoring it as the SR literature does.

* The whole LR image goes through the network in one pass, or with `tile` in overlapping windows blended
  into one image (`srcore.tiling`: exact for plain convolutional networks whose receptive field fits the
  discarded margin; close, not exact, for networks with wider context such as ESA).
* `self_ensemble` averages the 8 dihedral transforms (EDSR's "+" results).
* Gray images (Set14's `bridge`): the gray LR is fed as three equal channels. gray="luma" (default) turns
  the SR output back to gray with BT.601 luma (0.299 R + 0.587 G + 0.114 B) and scores gray values, as the
  MATLAB scripts behind the published bicubic tables do; gray="rgb" expands the ground truth to three
  channels and scores Y like a colour image, as the Python test scripts of EDSR/BasicSR-era papers do
  (Set14 means come out about 0.1 dB higher that way, because Y compresses the gray range by 219/255).
* `bicubic_protocol`: the published "Bicubic" rows (SRCNN, A+, VDSR, ...) were made on the Y channel:
  Y of the 8-bit HR rounded to 8 bits, MATLAB bicubic down and up in double precision, SR rounded to 8
  bits, scored on Y. On Set5/Set14/B100 this reproduces the published numbers within 0.01 dB; upsampling
  the RGB LR files instead (what a network sees) scores about 0.02 dB differently (Set5 x2: 33.678
  against 33.661).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .data import BenchmarkSet, DataError, Sample
from .imageio import to_tensor
from .imresize import imresize, modcrop
from .layers import min_input_size
from .metrics import SSIM_WINDOW, psnr, rgb_to_y, ssim, to_uint8
from .tiling import forward_tiled

_LUMA = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)


def _dihedral(t: torch.Tensor, k: int, inverse: bool = False) -> torch.Tensor:
    """The k-th of the 8 flips/rotations of the last two dims (k in 0..7), or its inverse."""
    flip, rot = k // 4, k % 4
    if not inverse:
        t = t.flip(-1) if flip else t
        return torch.rot90(t, rot, dims=(-2, -1))
    t = torch.rot90(t, -rot, dims=(-2, -1))
    return t.flip(-1) if flip else t


@torch.no_grad()
def super_resolve(model: nn.Module, lq: torch.Tensor, scale: int, *, self_ensemble: bool = False,
                  tile: int = 0, overlap: int = 32,
                  on_window: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """(1, 3, h, w) in [0, 1] -> (1, 3, s*h, s*w), optionally x8 self-ensembled and/or tiled.

    `on_window(done, total)` is called after each forward pass (of one tile of one transform)."""
    if not self_ensemble:
        return forward_tiled(model, lq, scale, tile, overlap, on_window)
    acc = None
    for k in range(8):
        tick = None if on_window is None else (lambda d, n, k=k: on_window(k * n + d, 8 * n))
        sr = _dihedral(forward_tiled(model, _dihedral(lq, k), scale, tile, overlap, tick), k, inverse=True)
        acc = sr if acc is None else acc + sr
    return acc / 8


GRAY_MODES = ("luma", "rgb")


def sr_to_uint8(sr: torch.Tensor, gray: bool) -> np.ndarray:
    """Network output (1, 3, H, W) -> uint8 (H, W, 3), or (H, W) BT.601 luma for gray ground truth."""
    if gray:
        sr = (sr[0].to(torch.float64) * _LUMA.to(sr.device)[:, None, None]).sum(0, keepdim=True)
    return to_uint8(sr)


@dataclass
class SetResult:
    dataset: str
    scale: int
    psnr_y: float
    ssim_y: float
    psnr_rgb: float
    ssim_rgb: float
    n_images: int
    images: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("dataset", "scale", "psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb",
                                              "n_images", "images")}


def score(sr: np.ndarray, gt: np.ndarray, scale: int, name: str, round_y: bool = False) -> dict:
    """All metrics of one 8-bit SR image against its ground truth, crop_border = scale."""
    return {"name": name,
            "psnr_y": psnr(sr, gt, scale, True, round_y), "ssim_y": ssim(sr, gt, scale, True, round_y),
            "psnr_rgb": psnr(sr, gt, scale, False), "ssim_rgb": ssim(sr, gt, scale, False)}


def summarize(dataset: str, scale: int, rows: list[dict]) -> SetResult:
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")}
    return SetResult(dataset, scale, n_images=len(rows), images=rows, **mean)


def evaluate_model(model: nn.Module, dataset: BenchmarkSet, *, device: str | torch.device = "cpu",
                   self_ensemble: bool = False, tile: int = 0, overlap: int = 32, round_y: bool = False,
                   gray_mode: str = "luma", on_image: Callable[[Sample, np.ndarray], None] | None = None,
                   progress: Callable[[Iterable], Iterable] | None = None) -> SetResult:
    """Score `model` (RGB [0,1] in and out) on every image of `dataset`.

    `on_image(sample, sr_uint8)` is called per image (e.g. to save it); `progress` wraps the iterator.
    """
    _check_gray_mode(gray_mode)
    model.eval()
    min_lr = min_input_size(model)
    if 0 < tile < min_lr:
        raise ValueError(f"tile {tile} is smaller than the network's minimum input {min_lr}x{min_lr} "
                         f"(use 0 for whole images, or >= {min_lr})")
    rows = []
    it: Iterable[Sample] = progress(dataset) if progress else dataset
    for sample in it:
        check_sample_size(sample, dataset.scale, min_lr)
        gt = _gray_as(sample.gt, gray_mode)
        lq = to_tensor(sample.lq, channels=3)[None].to(device)
        out = super_resolve(model, lq, dataset.scale, self_ensemble=self_ensemble, tile=tile, overlap=overlap)
        check_finite_output(out, sample)
        sr = sr_to_uint8(out, gt.ndim == 2)
        if on_image:
            on_image(sample, sr)
        rows.append(score(sr, gt, dataset.scale, sample.name, round_y))
    return summarize(dataset.name, dataset.scale, rows)


class NonFiniteOutput(ValueError):
    """The network produced NaN or Inf: its score would be meaningless."""


def check_finite_output(sr: torch.Tensor, sample: Sample) -> None:
    """Raise NonFiniteOutput naming the image when the network output holds NaN or Inf."""
    bad = ~torch.isfinite(sr)
    if bool(bad.any()):
        n_nan, n_inf = int(torch.isnan(sr).sum()), int(torch.isinf(sr).sum())
        raise NonFiniteOutput(f"{sample.source or sample.name}: the network output has {n_nan} NaN and {n_inf} Inf "
                              f"values of {sr.numel()}; not scored (are the weights corrupt?)")


def check_sample_size(sample: Sample, scale: int, min_lr: int = 1) -> None:
    """An image must leave an SSIM window after the border crop, and its LR must fit the network."""
    h, w = sample.gt.shape[:2]
    need_hr = 2 * scale + SSIM_WINDOW
    lh, lw = sample.lq.shape[:2]
    if min(h, w) < need_hr or min(lh, lw) < min_lr:
        need = max(need_hr, min_lr * scale)
        raise DataError(f"{sample.source or sample.name}: image {w}x{h} (LR {lw}x{lh}) is too small to score at "
                        f"x{scale}: at least {need}x{need} is needed (crop_border {scale} on each side, the "
                        f"{SSIM_WINDOW}x{SSIM_WINDOW} SSIM window" + (f", the network's {min_lr}x{min_lr} minimum "
                                                                       "input)" if min_lr > 1 else ")"))


def _check_gray_mode(gray_mode: str) -> None:
    if gray_mode not in GRAY_MODES:
        raise ValueError(f"gray_mode must be one of {list(GRAY_MODES)}, got {gray_mode!r}")


def _gray_as(img: np.ndarray, gray_mode: str) -> np.ndarray:
    """A gray image as scored: itself ("luma") or expanded to three equal channels ("rgb")."""
    return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 and gray_mode == "rgb" else img


def bicubic_upsample(lq: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB bicubic x`scale` of an 8-bit LR image in double precision, rounded to 8 bits."""
    up = imresize(lq.astype(np.float64), float(scale))
    return np.clip(np.floor(up + 0.5), 0, 255).astype(np.uint8)


def evaluate_bicubic(dataset: BenchmarkSet, *, source: str = "hr-y", round_y: bool = False,
                     gray_mode: str = "luma",
                     on_image: Callable[[Sample, np.ndarray], None] | None = None) -> SetResult:
    """The bicubic baseline. source="hr-y" is the published protocol (see the module docstring; only Y
    metrics are defined, RGB fields are NaN); source="lr" upsamples the set's RGB LR images."""
    if source not in ("hr-y", "lr"):
        raise ValueError(f"bicubic source must be 'hr-y' or 'lr', got {source!r}")
    _check_gray_mode(gray_mode)
    s = dataset.scale
    rows = []
    for sample in dataset:
        check_sample_size(sample, s)
        gt = _gray_as(sample.gt, gray_mode)
        if source == "lr":
            sr = bicubic_upsample(_gray_as(sample.lq, gray_mode), s)
            if on_image:
                on_image(sample, sr)
            rows.append(score(sr, gt, s, sample.name, round_y))
            continue
        gt = modcrop(gt, s)
        y = np.floor((rgb_to_y(gt) if gt.ndim == 3 else gt.astype(np.float64)) + 0.5).astype(np.uint8)
        y_lq = imresize(y.astype(np.float64), 1.0 / s)
        y_sr = np.clip(np.floor(imresize(y_lq, float(s)) + 0.5), 0, 255).astype(np.uint8)
        if on_image:
            on_image(sample, y_sr)
        # Y is already extracted: score the (H, W) arrays as 1-channel images
        rows.append({"name": sample.name, "psnr_y": psnr(y_sr, y, s), "ssim_y": ssim(y_sr, y, s),
                     "psnr_rgb": float("nan"), "ssim_rgb": float("nan")})
    return summarize(dataset.name, s, rows)
