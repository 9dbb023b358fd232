"""Reading and writing images.

`read_image` returns the file's pixels as a numpy array in its native integer type (uint8 or uint16),
(H, W) for gray and (H, W, 3) for colour, so the MATLAB degradation can run on the exact 8-bit values.
`to_tensor` turns such an array into a float32 (C, H, W) tensor in [0, 1]. An alpha channel is dropped
with a warning; palette images are expanded by the decoder.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class ImageReadError(ValueError):
    """An image file that cannot be read or has an unsupported layout."""


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an 8- or 16-bit gray/RGB/RGBA image as uint8/uint16 (H, W) or (H, W, 3)."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such image file")
    try:
        img = iio.imread(path)
    except Exception as e:  # the decoders raise many types; report one clear error
        raise ImageReadError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f"{path}: unsupported pixel type {img.dtype} (expected 8- or 16-bit integers)")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 2:  # gray + alpha
        warnings.warn(f"{path}: dropping the alpha channel", stacklevel=2)
        img = img[:, :, 0]
    elif img.ndim == 3 and img.shape[2] == 4:
        warnings.warn(f"{path}: dropping the alpha channel", stacklevel=2)
        img = img[:, :, :3]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ImageReadError(f"{path}: unsupported image shape {img.shape} (expected gray, RGB or RGBA; "
                             "multi-page files are not supported)")
    return np.ascontiguousarray(img)


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8/uint16 -> float32 in [0, 1]."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    return img.astype(np.float32)


def to_tensor(img: np.ndarray, channels: int | None = None) -> torch.Tensor:
    """(H, W[, C]) integer or float array -> float32 (C, H, W) tensor in [0, 1].

    channels=3 expands a gray image to three equal channels (what an RGB network is fed).
    """
    arr = to_float(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if channels == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def to_8bit(img: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 by rounding v * 255 / 65535; uint8 passes through."""
    if img.dtype == np.uint8:
        return img
    return np.floor(img.astype(np.float64) * (255.0 / 65535.0) + 0.5).astype(np.uint8)


def write_png(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write a uint8/uint16 (H, W[, 3]) array as PNG, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_png: expected uint8 or uint16 pixels for {path}, got {img.dtype}")
    iio.imwrite(path, img, extension=".png")
