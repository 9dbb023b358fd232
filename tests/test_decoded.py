"""PatchDataset's bounded-memory mode (`cache="disk"`, srcore/decoded.py): the same patches as `ram`, a cache
reused without decoding and rebuilt when an image changes, small pickles, no half-built cache after a failure,
the RAM estimate and its warning, and the config keys that choose the mode."""
from __future__ import annotations

import copy
import logging
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import srcore.data
from distill.config import StudentConfig, TrainConfig
from distill.trainer import resume_diff
from nas.config import SearchConfig
from nas.search import check_resume_config
from srcore.config import to_dict
from srcore.data import DataError, PatchDataset, decoded_bytes


def _save(path, h, w, seed, gray=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (h, w) if gray else (h, w, 3)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)).save(path)


@pytest.fixture
def train_dir(tmp_path):
    _save(tmp_path / "train" / "a.png", 41, 38, 10)
    _save(tmp_path / "train" / "b.png", 33, 45, 11)
    _save(tmp_path / "train" / "c.png", 30, 36, 12, gray=True)
    return tmp_path / "train"


def _items(ds: PatchDataset, epochs=(0, 1)) -> list[dict]:
    out = []
    for e in epochs:
        ds.set_epoch(e)
        out += [ds[i] for i in range(len(ds))]
    return out


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in ("lq", "gt"))


@pytest.mark.parametrize("scale", [2, 3])
def test_disk_cache_gives_the_ram_patches_and_is_reused(train_dir, tmp_path, monkeypatch, scale):
    kw = dict(augment=True, repeat=3, seed=7)
    ram = PatchDataset(train_dir, scale, 6 * scale, **kw)
    disk = PatchDataset(train_dir, scale, 6 * scale, cache="disk", cache_dir=tmp_path / "cache", **kw)
    assert disk.names == ram.names and _same(_items(disk), _items(ram))
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".json", ".u8"]  # no temp files left
    blob = next((tmp_path / "cache").glob("*.u8"))
    assert blob.stat().st_size == sum(gt.nbytes + lq.nbytes for gt, lq in ram.images)

    def no_decoding(*a, **k):
        raise AssertionError("the cache should be mapped, not decoded again")

    monkeypatch.setattr(srcore.data, "read_image", no_decoding)
    again = PatchDataset(train_dir, scale, 6 * scale, cache="disk", cache_dir=tmp_path / "cache", **kw)
    assert _same(_items(again), _items(ram))
    parts = []
    for ds in (again, ram):  # nas.search.split_dataset's subsets work on either mode
        part = copy.copy(ds)
        part.images, part.names = ds.images[1:], ds.names[1:]
        parts.append(_items(part))
    assert _same(*parts)


def test_disk_cache_follows_edited_images_and_pickles_small(train_dir, tmp_path):
    cache = tmp_path / "cache"
    first = PatchDataset(train_dir, 2, 12, cache="disk", cache_dir=cache, seed=1)
    _save(train_dir / "b.png", 33, 45, 99)  # new pixels (and size/mtime): a new cache key
    os.utime(train_dir / "b.png", ns=(1, 1))
    edited = PatchDataset(train_dir, 2, 12, cache="disk", cache_dir=cache, seed=1)
    assert len(list(cache.glob("*.u8"))) == 2
    assert _same(_items(edited), _items(PatchDataset(train_dir, 2, 12, seed=1)))
    assert not _same(_items(edited), _items(first))
    blob = pickle.dumps(edited)  # a DataLoader worker gets the map's file name, not the pixels
    assert len(blob) < 4096 and _same(_items(pickle.loads(blob)), _items(edited))


def test_failed_build_leaves_no_cache_and_errors_match_ram(train_dir, tmp_path):
    (train_dir / "z.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="z.png"):
        PatchDataset(train_dir, 2, 12, cache="disk", cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
    (train_dir / "z.png").unlink()
    PatchDataset(train_dir, 2, 12, cache="disk", cache_dir=tmp_path / "cache")
    for cache in ("ram", "disk"):  # the size check also runs on a cache built for a smaller patch
        with pytest.raises(DataError, match=r"c\.png: image 36x30 is smaller than the HR patch 32x32"):
            PatchDataset(train_dir, 2, 32, cache=cache, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="data.cache = 'lazy': expected ram or disk"):
        PatchDataset(train_dir, 2, 12, cache="lazy")


def test_ram_estimate_and_warning(train_dir, monkeypatch, caplog):
    entries = [(str(p), p) for p in sorted(train_dir.iterdir())]
    real = sum(gt.nbytes + lq.nbytes for gt, lq in PatchDataset(train_dir, 2, 12).images)
    assert decoded_bytes(entries, 2) == pytest.approx(real, rel=0.1)  # headers only; modcrop trims a little
    monkeypatch.setattr(srcore.data, "RAM_WARN_BYTES", real // 2)
    with caplog.at_level(logging.WARNING, logger="srcore.data"):
        PatchDataset(train_dir, 2, 12)
    assert "3 training images take about" in caplog.text and "data.cache=disk" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="srcore.data"):
        PatchDataset(train_dir, 2, 12, cache="disk", cache_dir=train_dir.parent / "cache")
    assert caplog.text == ""


def test_cache_keys_may_change_on_resume():
    saved = to_dict(SearchConfig())
    new = to_dict(SearchConfig())
    new["data"].update(cache="disk", cache_dir="/tmp/x")
    check_resume_config(saved, new, "ckpt")  # no error: the same patches either way
    cfg = TrainConfig(student=StudentConfig(genotype="dlsr_x2"))
    moved = to_dict(cfg)
    moved["data"].update(cache="disk", cache_dir="/tmp/x")
    assert resume_diff(moved, cfg) == []
    moved["data"]["repeat"] = 5
    assert resume_diff(moved, cfg) == ["data"]


def test_default_cache_dir_and_bench_worker(train_dir, tmp_path, monkeypatch):
    from conftest import import_tool

    from srcore.decoded import default_cache_dir

    monkeypatch.setenv("SRNAS_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c" / "decoded"
    bench_data = import_tool("bench_data")  # tools/bench.py data runs this in fresh processes
    ram = bench_data.data_worker([str(train_dir)], 2, 12, "ram", str(tmp_path / "c"), 50)
    disk = bench_data.data_worker([str(train_dir)], 2, 12, "disk", str(tmp_path / "c"), 50)
    assert ram["images"] == disk["images"] == 3 and ram["patches_per_s"] > 0 and disk["build_s"] > 0
    assert len(list((tmp_path / "c").glob("*.u8"))) == 1
