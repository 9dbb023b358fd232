"""Super-resolving a user's own image, whatever its layout: 8- or 16-bit; gray, RGB, gray + alpha or RGBA.

    sr = upscale_image(model, read_image(path, keep_alpha=True), scale, tile=512)

The result has the input's pixel type and channel layout, `scale` times larger:

* colour goes through the network as RGB in [0, 1]; a gray image as three equal channels, turned back to
  one gray channel with BT.601 luma (as `srcore.evaluation` scores gray images);
* 16-bit pixels are divided by 65535 on the way in and the output is rounded to 16 bits on the way out, so
  a 16-bit file stays 16-bit (the network itself was trained on 8-bit data);
* alpha does not go through the network (SR networks are trained on RGB only): it is enlarged with
  bicubic interpolation (OpenCV's, which works on any image size) and re-attached;
* large images go through `srcore.tiling` (overlapping windows, blended), x8 self-ensemble optional.
"""
from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch

from .evaluation import _LUMA, super_resolve
from .imageio import to_tensor


def split_alpha(img: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(colour or gray, alpha or None) of an (H, W), (H, W, 2), (H, W, 3) or (H, W, 4) image."""
    if img.ndim == 3 and img.shape[2] in (2, 4):
        colour = img[:, :, 0] if img.shape[2] == 2 else img[:, :, :3]
        return np.ascontiguousarray(colour), np.ascontiguousarray(img[:, :, -1])
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3):
        return img, None
    raise ValueError(f"expected an (H, W) or (H, W, 2/3/4) image, got shape {img.shape}")


def describe(img: np.ndarray) -> str:
    """'16-bit RGBA', '8-bit gray', ... for logs."""
    kind = "gray" if img.ndim == 2 else {2: "gray+alpha", 3: "RGB", 4: "RGBA"}.get(img.shape[2], "?")
    return f"{16 if img.dtype == np.uint16 else 8}-bit {kind}"


def to_integer(sr: torch.Tensor, dtype: np.dtype, gray: bool) -> np.ndarray:
    """(1, 3, H, W) float output -> uint8/uint16 (H, W, 3), or (H, W) BT.601 luma when `gray`."""
    t = sr[0].detach().to("cpu", torch.float64)
    if gray:
        t = (t * _LUMA[:, None, None]).sum(0, keepdim=True)
    top = 65535.0 if dtype == np.uint16 else 255.0
    arr = np.floor(t.clamp(0, 1).permute(1, 2, 0).numpy() * top + 0.5).astype(dtype)
    return arr[:, :, 0] if gray else arr


def upscale_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic enlargement of an alpha channel, same dtype (saturated)."""
    h, w = alpha.shape
    return cv2.resize(alpha, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)


@torch.no_grad()
def upscale_image(model: Callable[[torch.Tensor], torch.Tensor], img: np.ndarray, scale: int, *,
                  tile: int = 0, overlap: int = 32, self_ensemble: bool = False,
                  device: str | torch.device = "cpu",
                  on_window: Callable[[int, int], None] | None = None) -> np.ndarray:
    """`img` (uint8/uint16; gray, gray + alpha, RGB or RGBA) super-resolved x`scale`, same type and layout."""
    if img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected 8- or 16-bit pixels, got {img.dtype}")
    colour, alpha = split_alpha(img)
    lq = to_tensor(colour, channels=3)[None].to(device)
    sr = super_resolve(model, lq, scale, self_ensemble=self_ensemble, tile=tile, overlap=overlap,
                       on_window=on_window)
    out = to_integer(sr, img.dtype, gray=colour.ndim == 2)
    if alpha is None:
        return out
    a = upscale_alpha(alpha, scale)
    return np.concatenate([out if out.ndim == 3 else out[:, :, None], a[:, :, None]], axis=2)
