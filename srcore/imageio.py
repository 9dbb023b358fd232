"""Reading and writing images.

`read_image` returns the file's pixels as a numpy array in its native integer type (uint8 or uint16),
(H, W) for gray and (H, W, 3) for colour, so the MATLAB degradation can run on the exact 8-bit values.
`to_tensor` turns such an array into a float32 (C, H, W) tensor in [0, 1]. An alpha channel is dropped
with a warning (or kept, with `keep_alpha=True`: (H, W, 2) gray + alpha, (H, W, 4) RGBA); palette images
are expanded by the decoder. `write_image` writes any of these layouts in the format its extension names.
Decoding and encoding go through OpenCV (as in BasicSR), which keeps 16-bit colour PNG/TIFF values that
Pillow would truncate to 8 bits.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class ImageReadError(ValueError):
    """An image file that cannot be read or has an unsupported layout."""


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def _png_colour_type(data: np.ndarray) -> int | None:
    """The IHDR colour type of PNG bytes (0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA), else None."""
    if data.size > 25 and bytes(data[:8]) == b"\x89PNG\r\n\x1a\n":
        return int(data[25])
    return None


def check_image_header(path: str | os.PathLike) -> None:
    """A cheap check (file signature only, no decoding) that `path` is an image the decoder reads; one-line
    ImageReadError otherwise. Lets a batch tool reject a bad file before it processes the others."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such image file")
    if not cv2.haveImageReader(str(path)):
        raise ImageReadError(f"{path}: unreadable image (not a PNG/JPEG/BMP/TIFF file the decoder understands)")


def read_image(path: str | os.PathLike, keep_alpha: bool = False) -> np.ndarray:
    """Read an 8- or 16-bit gray/RGB/RGBA image as uint8/uint16 (H, W) or (H, W, 3).

    keep_alpha=True keeps an alpha channel: gray + alpha as (H, W, 2), RGBA as (H, W, 4).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such image file")
    try:
        data = np.fromfile(path, dtype=np.uint8)
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        if img is not None and path.suffix.lower() in (".tif", ".tiff"):
            ok, pages = cv2.imdecodemulti(data, cv2.IMREAD_UNCHANGED)
            if ok and len(pages) > 1:
                raise ImageReadError(f"{path}: multi-page TIFF with {len(pages)} pages; one image per file expected")
    except (OSError, cv2.error) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "no details"
        raise ImageReadError(f"{path}: unreadable image ({type(e).__name__}: {first})") from None
    if img is None:
        raise ImageReadError(f"{path}: unreadable image (not a PNG/JPEG/BMP/TIFF file the decoder understands)")
    if img.ndim == 3 and img.shape[2] in (3, 4):  # OpenCV gives BGR(A)
        img = img[:, :, [2, 1, 0] + ([3] if img.shape[2] == 4 else [])]
    if img.ndim == 3 and img.shape[2] == 4 and _png_colour_type(data) == 4:  # gray + alpha, expanded by OpenCV
        img = img[:, :, [0, 3]]
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f"{path}: unsupported pixel type {img.dtype} (expected 8- or 16-bit integers)")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if keep_alpha and img.ndim == 3 and img.shape[2] in (2, 4):
        return np.ascontiguousarray(img)
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
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3))):
        raise ValueError(f"write_png: expected an (H, W) or (H, W, 3) image for {path}, got shape {img.shape}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    ok, buf = cv2.imencode(".png", img[:, :, ::-1] if img.ndim == 3 else img)  # OpenCV expects BGR
    if not ok:
        raise ValueError(f"write_png: could not encode {path}")
    buf.tofile(path)


WRITE_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
_EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".bmp")


def write_image(path: str | os.PathLike, img: np.ndarray, jpeg_quality: int = 95) -> None:
    """Write a uint8/uint16 (H, W), (H, W, 2), (H, W, 3) or (H, W, 4) image in the format of its extension.

    PNG and TIFF keep 16 bits; JPEG and BMP hold 8 bits, so 16-bit pixels are rounded to 8 (`to_8bit`).
    JPEG has no alpha: it is dropped with a warning. Gray + alpha is written as RGBA with three equal colour
    channels (OpenCV has no 2-channel encoder). The file appears atomically (temp file + rename).
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in WRITE_EXTENSIONS:
        raise ValueError(f"{path}: cannot write '{ext}' images (expected one of {', '.join(WRITE_EXTENSIONS)})")
    if img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_image: expected uint8 or uint16 pixels for {path}, got {img.dtype}")
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 2, 3, 4))):
        raise ValueError(f"write_image: expected an (H, W) or (H, W, 1..4) image for {path}, got shape {img.shape}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 2:
        img = img[:, :, [0, 0, 0, 1]]
    if ext in _EIGHT_BIT_ONLY:
        img = to_8bit(img)
    if ext in (".jpg", ".jpeg") and img.ndim == 3 and img.shape[2] == 4:
        warnings.warn(f"{path}: JPEG has no alpha channel; dropping it", stacklevel=2)
        img = img[:, :, :3]
    if img.ndim == 3:  # OpenCV expects BGR(A)
        img = img[:, :, [2, 1, 0, 3][:img.shape[2]]]
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(img), params)
    if not ok:
        raise ValueError(f"write_image: could not encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        buf.tofile(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
