"""SR datasets: benchmark folders for evaluation, random aligned patches for training.

Folder layouts understood (`find_layout`), for scale s:
* BasicSR/EDSR benchmark: `ROOT/HR/<stem>.png` + `ROOT/LR_bicubic/X{s}/<stem>.png` or `<stem>x{s}.png`;
* DIV2K: `ROOT/DIV2K_train_HR/0001.png` + `ROOT/DIV2K_train_LR_bicubic/X{s}/0001x{s}.png` (any `*_HR`
  folder with a sibling `*_LR_bicubic`);
* HR only: `ROOT/HR/` or images directly in `ROOT/`; LR is made on the fly by MATLAB bicubic
  (`imresize(modcrop(HR, s), 1/s)`) and cached in memory.
* `builtin` (evaluation) / `builtin:train`, `builtin:val`: scikit-image's bundled photographs, the
  embedded default that needs no download (`BUILTIN_SPLITS` fixes the split).
A folder may start with `${SRNAS_SHARED}` (srcore/paths.py), e.g. `${SRNAS_SHARED}/data/Set5`.

Images are named `lq` (low quality input), `gt` (ground truth) and `sr` (network output), as BasicSR.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .imageio import is_image_file, read_image, to_8bit, to_tensor
from .imresize import ImageTooLarge, bicubic_degrade, modcrop
from .paths import describe, expand

SCALES = (2, 3, 4)

# scikit-image's bundled RGB photographs (no download). Fixed split: the validation images are scenes
# that do not appear in training (motorcycle_left/right are two views of one scene, both in training).
BUILTIN_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
              "motorcycle_left", "motorcycle_right", "colorwheel"),
    "val": ("chelsea", "coffee"),
}


class DataError(ValueError):
    """A dataset folder or file that does not fit what was asked for."""


def check_scale(scale: int) -> int:
    if scale not in SCALES:
        raise DataError(f"scale must be one of {list(SCALES)}, got {scale!r}")
    return scale


def builtin_image(name: str) -> np.ndarray:
    """One bundled scikit-image photograph as uint8 (H, W, 3)."""
    import skimage.data

    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = skimage.data.stereo_motorcycle()
        img = left if name == "motorcycle_left" else right
    else:
        img = getattr(skimage.data, name)()
    return np.ascontiguousarray(img[:, :, :3]) if img.ndim == 3 else img


def builtin_images(split: str) -> list[tuple[str, np.ndarray]]:
    if split not in BUILTIN_SPLITS:
        raise DataError(f"unknown builtin split {split!r}; expected one of {list(BUILTIN_SPLITS)}")
    return [(n, builtin_image(n)) for n in BUILTIN_SPLITS[split]]


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


@dataclass(frozen=True)
class Layout:
    """Where a set's HR images are and, if any, its bicubic LR folder for one scale."""

    root: Path
    hr_dir: Path
    lr_dir: Path | None


def find_layout(root: str | os.PathLike, scale: int) -> Layout:
    if not Path(expand(root)).is_dir():
        raise DataError(f"{describe(root)}: no such dataset folder")
    root = Path(expand(root))
    sx = f"X{scale}"
    if (root / "HR").is_dir():
        lr = root / "LR_bicubic" / sx
        return Layout(root, root / "HR", lr if lr.is_dir() else None)
    hr = _one_hr_folder(root)
    if hr is not None:
        lr = root / (hr.name[: -len("_HR")] + "_LR_bicubic") / sx
        return Layout(root, hr, lr if lr.is_dir() else None)
    if _images_in(root):
        return Layout(root, root, None)
    raise DataError(f"{root}: found neither an HR/ folder, a *_HR folder nor images")


def _one_hr_folder(root: Path) -> Path | None:
    """The `*_HR` folder of a DIV2K-style root (e.g. DIV2K_train_HR); an error when there are several (a root
    holding both the training and the validation split must not silently give the first one)."""
    hr_dirs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.endswith("_HR"))
    if len(hr_dirs) > 1:
        raise DataError(f"{root}: holds several HR folders ({', '.join(p.name for p in hr_dirs)}); give the one "
                        f"you mean, e.g. {hr_dirs[0]}")
    return hr_dirs[0] if hr_dirs else None


def _lr_path(lr_dir: Path, hr_path: Path, scale: int) -> Path:
    stem = hr_path.stem
    for cand in (f"{stem}{hr_path.suffix}", f"{stem}x{scale}{hr_path.suffix}", f"{stem}.png", f"{stem}x{scale}.png"):
        if (lr_dir / cand).is_file():
            return lr_dir / cand
    raise DataError(f"{lr_dir}: no LR image for {hr_path.name} (looked for {stem}.* and {stem}x{scale}.*)")


def check_pair(hr: np.ndarray, lq: np.ndarray, scale: int, hr_name: str, lr_name: str) -> np.ndarray:
    """Check LR size == floor(HR size / s) and return HR cropped top-left to s * LR size."""
    h, w = hr.shape[:2]
    lh, lw = lq.shape[:2]
    if (lh, lw) != (h // scale, w // scale):
        raise DataError(f"{lr_name}: LR size {lw}x{lh} does not match HR {hr_name} ({w}x{h}) at scale x{scale}: "
                        f"expected {w // scale}x{h // scale}")
    if hr.ndim != lq.ndim:
        raise DataError(f"{lr_name}: LR has {1 if lq.ndim == 2 else 3} channel(s) but HR {hr_name} has "
                        f"{1 if hr.ndim == 2 else 3}")
    return hr[: lh * scale, : lw * scale]


@dataclass
class Sample:
    name: str
    gt: np.ndarray  # uint8 (H, W[, 3]), modcropped to s * LR size
    lq: np.ndarray  # uint8 (H/s, W/s[, 3])
    source: str = ""  # the HR file (or builtin:<name>), for error messages


class BenchmarkSet:
    """A test set (Set5-style folder, DIV2K folder, HR-only folder or `builtin`) at one scale.

    Iterating yields `Sample`s with 8-bit images; 16-bit files are rounded to 8 bits (the benchmarks are
    8-bit). When the folder has no LR images for the scale, they are made by MATLAB bicubic.
    """

    def __init__(self, root: str | os.PathLike, scale: int, name: str | None = None):
        self.scale = check_scale(scale)
        root_s = str(root)
        if root_s in ("builtin", "builtin:val"):
            self.name = name or "builtin-val"
            self._builtin = builtin_images("val")
            self.items: list[tuple[str, Path | None, Path | None]] = [(n, None, None) for n, _ in self._builtin]
            return
        self._builtin = None
        layout = find_layout(root, scale)
        self.name = name or layout.root.resolve().name
        hrs = _images_in(layout.hr_dir)
        if not hrs:
            raise DataError(f"{layout.hr_dir}: no images")
        self.items = [(p.stem, p, _lr_path(layout.lr_dir, p, scale) if layout.lr_dir else None) for p in hrs]

    def __len__(self) -> int:
        return len(self.items)

    def _subset(self, keep: slice) -> BenchmarkSet:
        sub = copy.copy(self)
        sub.items = self.items[keep]
        if self._builtin is not None:
            sub._builtin = self._builtin[keep]
        return sub

    def head(self, n: int) -> BenchmarkSet:
        """The same set with its first `n` images only."""
        return self._subset(slice(0, n))

    def shard(self, rank: int, world: int) -> BenchmarkSet:
        """Images rank, rank + world, ... (one process's share when `world` processes score the set)."""
        return self._subset(slice(rank, None, world))

    def __iter__(self) -> Iterator[Sample]:
        for i, (stem, hr_path, lr_path) in enumerate(self.items):
            if self._builtin is not None:
                hr = self._builtin[i][1]
                yield Sample(stem, modcrop(hr, self.scale), bicubic_degrade(hr, self.scale), f"builtin:{stem}")
                continue
            hr = to_8bit(read_image(hr_path))
            h, w = hr.shape[:2]
            if min(h, w) < self.scale:
                raise DataError(f"{hr_path}: image {w}x{h} is smaller than the scale x{self.scale} "
                                f"(no LR pixel left)")
            if lr_path is None:
                yield Sample(stem, modcrop(hr, self.scale), _degrade(hr, self.scale, hr_path), str(hr_path))
            else:
                lq = to_8bit(read_image(lr_path))
                yield Sample(stem, check_pair(hr, lq, self.scale, str(hr_path), str(lr_path)), lq, str(hr_path))


def _degrade(hr: np.ndarray, scale: int, path: Path | str) -> np.ndarray:
    """bicubic_degrade, with an image beyond imresize's pixel bound reported against its file."""
    try:
        return bicubic_degrade(hr, scale)
    except ImageTooLarge as e:
        raise DataError(f"{path}: {e}") from None


def _load_train_images(source: str | os.PathLike | list | tuple) -> list[tuple[str, np.ndarray]]:
    if isinstance(source, (list, tuple)):  # several folders, e.g. T91 + BSD200 ("291")
        if not source:
            raise DataError("no training folder given (an empty list)")
        return [item for one in source for item in _load_train_images(one)]
    s = str(source)
    if s.startswith("builtin"):
        return builtin_images(s.split(":", 1)[1] if ":" in s else "train")
    folder = Path(expand(source))
    if not folder.is_dir():
        raise DataError(f"{describe(source)}: no such training folder")
    if (folder / "HR").is_dir():  # BasicSR / EDSR benchmark layout
        folder = folder / "HR"
    elif not _images_in(folder):  # DIV2K layout: ROOT/DIV2K_train_HR
        folder = _one_hr_folder(folder) or folder
    files = _images_in(folder)
    if not files:
        raise DataError(f"{folder}: no images")
    return [(str(p), to_8bit(read_image(p))) for p in files]


class PatchDataset(Dataset):
    """Random aligned (lq, gt) patches for training.

    HR images come from a folder (or `builtin:train`), or a list of them; LR is MATLAB bicubic of the
    modcropped HR, made once and kept in memory. Item i takes image i % N and a patch position and
    augmentation (h/v flip, rot90) drawn from a generator seeded by (seed, epoch, i), so a given
    (seed, epoch) gives the same patches whatever the worker count or process rank; call `set_epoch`
    each epoch.
    """

    def __init__(self, source: str | os.PathLike | list, scale: int, gt_size: int, *, augment: bool = True,
                 repeat: int = 1, seed: int = 0):
        self.scale = check_scale(scale)
        if gt_size % scale:
            raise DataError(f"gt_size={gt_size} (HR patch) must be divisible by the scale {scale}")
        self.gt_size, self.augment, self.repeat, self.seed, self.epoch = gt_size, augment, repeat, seed, 0
        self.images: list[tuple[np.ndarray, np.ndarray]] = []
        self.names: list[str] = []
        for name, hr in _load_train_images(source):
            h, w = hr.shape[:2]
            if h < gt_size or w < gt_size:
                raise DataError(f"{name}: image {w}x{h} is smaller than the HR patch {gt_size}x{gt_size}")
            if hr.ndim == 2:
                hr = np.repeat(hr[:, :, None], 3, axis=2)
            hr = modcrop(hr, scale)
            self.images.append((hr, _degrade(hr, scale, name)))
            self.names.append(name)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images) * self.repeat

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        gt, lq = self.images[i % len(self.images)]
        p, s = self.gt_size // self.scale, self.scale
        y = int(rng.integers(0, lq.shape[0] - p + 1))
        x = int(rng.integers(0, lq.shape[1] - p + 1))
        lq_p = lq[y:y + p, x:x + p]
        gt_p = gt[y * s:(y + p) * s, x * s:(x + p) * s]
        if self.augment:
            hflip, vflip, rot = rng.integers(0, 2, size=3)
            lq_p, gt_p = (augment(a, bool(hflip), bool(vflip), bool(rot)) for a in (lq_p, gt_p))
        return {"lq": to_tensor(lq_p), "gt": to_tensor(gt_p)}


def augment(img: np.ndarray, hflip: bool, vflip: bool, rot90: bool) -> np.ndarray:
    """The 8 dihedral augmentations of SR training (BasicSR `augment`): flips then transpose."""
    if hflip:
        img = img[:, ::-1]
    if vflip:
        img = img[::-1]
    if rot90:
        img = img.transpose(1, 0, 2) if img.ndim == 3 else img.T
    return np.ascontiguousarray(img)
