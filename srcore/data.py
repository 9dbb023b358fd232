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
import logging
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

log = logging.getLogger(__name__)

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


def builtin_names(split: str) -> tuple[str, ...]:
    if split not in BUILTIN_SPLITS:
        raise DataError(f"unknown builtin split {split!r}; expected one of {list(BUILTIN_SPLITS)}")
    return BUILTIN_SPLITS[split]


def builtin_images(split: str) -> list[tuple[str, np.ndarray]]:
    return [(n, builtin_image(n)) for n in builtin_names(split)]


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


def _train_entries(source: str | os.PathLike | list | tuple) -> list[tuple[str, Path | None]]:
    """(name, file) of each training image, in order: the file's path as name, or a builtin photograph's
    name with no file."""
    if isinstance(source, (list, tuple)):  # several folders, e.g. T91 + BSD200 ("291")
        if not source:
            raise DataError("no training folder given (an empty list)")
        return [item for one in source for item in _train_entries(one)]
    s = str(source)
    if s.startswith("builtin"):
        return [(n, None) for n in builtin_names(s.split(":", 1)[1] if ":" in s else "train")]
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
    return [(str(p), p) for p in files]


def _read_train(name: str, path: Path | None) -> np.ndarray:
    return builtin_image(name) if path is None else to_8bit(read_image(path))


# `cache: ram` above this estimated size of the decoded training pairs logs a warning (use `disk`)
RAM_WARN_BYTES = 8 * 2**30


def decoded_bytes(entries: list[tuple[str, Path | None]], scale: int) -> int:
    """An estimate (from the image headers, nothing decoded) of the RAM the decoded pairs take: HR as RGB
    uint8 plus its LR, (1 + 1/s^2) * H * W * 3 bytes per image; unreadable headers and builtins count 0."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib and scikit-image
        return 0
    total = 0
    for _, path in entries:
        if path is None:
            continue
        try:
            with Image.open(path) as im:
                w, h = im.size
        except Exception:  # the decoder reports a bad file when it is read
            continue
        total += 3 * (w * h + (w // scale) * (h // scale))
    return total


class PatchDataset(Dataset):
    """Random aligned (lq, gt) patches for training.

    HR images come from a folder (or `builtin:train`), or a list of them; LR is MATLAB bicubic of the
    modcropped HR, made once. Item i takes image i % N and a patch position and augmentation (h/v flip,
    rot90) drawn from a generator seeded by (seed, epoch, i), so a given (seed, epoch) gives the same
    patches whatever the worker count or process rank; call `set_epoch` each epoch.

    `cache` says where the decoded pairs live: `ram` (default) keeps them in this process, (1 + 1/s^2) *
    H * W * 3 bytes per image (DF2K at x2: about 36 GB; a warning above `RAM_WARN_BYTES`, estimated from
    the headers before decoding); `disk` decodes once into a memory-mapped file in `cache_dir`
    (`srcore.decoded`: the same bytes on disk, reused by later runs, RAM bounded by the OS page cache).
    Both give the same patches bit for bit.
    """

    def __init__(self, source: str | os.PathLike | list, scale: int, gt_size: int, *, augment: bool = True,
                 repeat: int = 1, seed: int = 0, cache: str = "ram", cache_dir: str | os.PathLike | None = None):
        self.scale = check_scale(scale)
        if gt_size % scale:
            raise DataError(f"gt_size={gt_size} (HR patch) must be divisible by the scale {scale}")
        if cache not in ("ram", "disk"):
            raise DataError(f"data.cache = {cache!r}: expected ram or disk")
        self.gt_size, self.augment, self.repeat, self.seed, self.epoch = gt_size, augment, repeat, seed, 0
        self.cache, self._store = cache, None
        entries = _train_entries(source)
        self.names: list[str] = [name for name, _ in entries]
        if cache == "ram":
            need = decoded_bytes(entries, scale)
            if need > RAM_WARN_BYTES:
                log.warning(f"the {len(entries)} training images take about {need / 2**30:.1f} GiB decoded "
                            f"(cache: ram keeps them all in memory); set data.cache=disk to memory-map them "
                            f"from a cache folder instead")
            self.images: list = [self._prepare(name, path)[:2] for name, path in entries]
            return
        from .decoded import DecodedStore, default_cache_dir

        self._store = DecodedStore.open_or_build(entries, scale, cache_dir or default_cache_dir(), self._prepare)
        for record in self._store.index:
            self._check_size(record["name"], *record["size"])
        self.images = self._store.entries()

    def _check_size(self, name: str, w: int, h: int) -> None:
        if h < self.gt_size or w < self.gt_size:
            raise DataError(f"{name}: image {w}x{h} is smaller than the HR patch {self.gt_size}x{self.gt_size}")

    def _prepare(self, name: str, path: Path | None) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """(gt, lq, (w, h) as read) of one training image: RGB, modcropped, its MATLAB-bicubic LR."""
        hr = _read_train(name, path)
        h, w = hr.shape[:2]
        self._check_size(name, w, h)
        if hr.ndim == 2:
            hr = np.repeat(hr[:, :, None], 3, axis=2)
        hr = modcrop(hr, self.scale)
        return hr, _degrade(hr, self.scale, name), (w, h)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images) * self.repeat

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        pair = self.images[i % len(self.images)]
        gt, lq = pair if self._store is None else self._store.pair(pair)
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
