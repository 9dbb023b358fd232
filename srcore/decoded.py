"""Decoded training images kept on disk and memory-mapped: `PatchDataset(cache="disk")`.

`PatchDataset` in its default `ram` mode holds every training pair decoded in memory: the HR image
(uint8, modcropped) and its MATLAB-bicubic LR, (1 + 1/s^2) * H * W * 3 bytes per image (DF2K's 3450 images:
about 36 GB at x2). The `disk` mode writes the same arrays once into one flat file,

    <cache_dir>/<key>.u8     every pair's bytes, back to back
    <key>.json               per image: name, original size, offset and shape of its HR and LR arrays

and maps it read-only: the process keeps no decoded pixels of its own; the OS page cache holds the parts
read often and gives them back under memory pressure. A sample reads its patch straight from the map, so
the patches (and hence training) are the same bit for bit as in `ram` mode.

The key hashes a format version, the scale and, per image, its resolved path, byte size and mtime (or the
builtin photograph's name), so an edited, added or removed image gives a new cache. Building decodes and
degrades one image at a time (the memory of one image), writes to temp files and renames them, the index
last: a killed build leaves no cache that looks complete, and concurrent builders (DDP ranks) write
identical files. A later run with the same images maps the cache without decoding anything. Old caches
are never deleted automatically; remove `cache_dir` (default `$SRNAS_CACHE/decoded`, `$SRNAS_CACHE` defaulting
to `~/.cache/srnas`) to reclaim the space.
"""
from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

VERSION = 1

Pair = tuple[tuple[int, tuple[int, ...]], tuple[int, tuple[int, ...]]]  # ((offset, shape) of HR, of LR)


def default_cache_dir() -> Path:
    """$SRNAS_CACHE/decoded, default ~/.cache/srnas/decoded (beside srcore.weights' downloads)."""
    return Path(os.environ.get("SRNAS_CACHE", "~/.cache/srnas")).expanduser() / "decoded"


def cache_key(entries: Sequence[tuple[str, Path | None]], scale: int) -> str:
    """A hash of what the decoded arrays depend on: format version, scale, each file's path, size and mtime."""
    h = hashlib.sha256(f"srnas-decoded-v{VERSION} x{scale}\n".encode())
    for name, path in entries:
        if path is None:
            h.update(f"builtin:{name}\n".encode())
        else:
            st = path.stat()
            h.update(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


class DecodedStore:
    """The memory-mapped decoded pairs of one image set; `pair(entry)` gives (gt, lq) uint8 views."""

    def __init__(self, blob: Path, index: list[dict]):
        self.blob, self.index = blob, index
        self._buf: np.ndarray | None = None

    @classmethod
    def open_or_build(cls, entries: Sequence[tuple[str, Path | None]], scale: int, cache_dir: str | os.PathLike,
                      prepare: Callable[[str, Path | None], tuple[np.ndarray, np.ndarray, tuple[int, int]]]
                      ) -> DecodedStore:
        """The store for `entries`, built with `prepare(name, path) -> (gt, lq, (w, h) as read)` when
        `cache_dir` holds no complete one."""
        folder = Path(cache_dir).expanduser()
        key = cache_key(entries, scale)
        blob, index_path = folder / f"{key}.u8", folder / f"{key}.json"
        index = _read_index(index_path, blob, [name for name, _ in entries])
        if index is None:
            folder.mkdir(parents=True, exist_ok=True)
            index = _build(entries, prepare, blob, index_path)
        return cls(blob, index)

    def entries(self) -> list[Pair]:
        return [((e["gt"][0], tuple(e["gt"][1])), (e["lq"][0], tuple(e["lq"][1]))) for e in self.index]

    def _open(self) -> np.ndarray:
        with open(self.blob, "rb") as f:
            self._buf = np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), dtype=np.uint8)
        return self._buf

    def pair(self, entry: Pair) -> tuple[np.ndarray, np.ndarray]:
        buf = self._buf if self._buf is not None else self._open()
        (go, gs), (lo, ls) = entry
        return buf[go:go + math.prod(gs)].reshape(gs), buf[lo:lo + math.prod(ls)].reshape(ls)

    def __getstate__(self) -> dict:  # a pickled copy (a DataLoader worker) maps the file again
        return {"blob": self.blob, "index": self.index, "_buf": None}


def _read_index(index_path: Path, blob: Path, names: list[str]) -> list[dict] | None:
    """A complete cache's index (names match, the blob has every byte), else None."""
    try:
        index = json.loads(index_path.read_text())["images"]
        size = blob.stat().st_size
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if [e.get("name") for e in index] != names:
        return None
    end = max((off + math.prod(shape) for e in index for off, shape in (e["gt"], e["lq"])), default=0)
    return index if end == size else None


def _publish(tmp: str, path: Path) -> None:
    """Give a finished temp file the usual permissions (mkstemp makes 0600 files) and rename it into place."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, path)


def _build(entries, prepare, blob: Path, index_path: Path) -> list[dict]:
    index, offset = [], 0
    fd, tmp = tempfile.mkstemp(prefix=f".{blob.name}.", suffix=".tmp", dir=blob.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for name, path in entries:
                gt, lq, size = prepare(name, path)
                record = {"name": name, "size": list(size)}
                for key, arr in (("gt", gt), ("lq", lq)):
                    arr = np.ascontiguousarray(arr, dtype=np.uint8)
                    f.write(arr.tobytes())
                    record[key] = [offset, list(arr.shape)]
                    offset += arr.size
                index.append(record)
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, blob)
        fd, tmp = tempfile.mkstemp(prefix=f".{index_path.name}.", suffix=".tmp", dir=blob.parent)
        with os.fdopen(fd, "w") as f:
            json.dump({"version": VERSION, "images": index}, f)
        _publish(tmp, index_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return index
