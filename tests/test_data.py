"""Benchmark folders in every supported layout, their errors, and the aligned random training patches."""
from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from srcore.data import BenchmarkSet, DataError, PatchDataset, check_scale
from srcore.imresize import bicubic_degrade, modcrop


def _img(h, w, seed, gray=False):
    shape = (h, w) if gray else (h, w, 3)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _save(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def _lr_by_hand(hr, s):
    """A different LR than MATLAB bicubic (box average), so we can tell the file was used, not recomputed."""
    m = modcrop(hr, s).astype(np.float64)
    h, w = m.shape[0] // s, m.shape[1] // s
    return np.floor(m.reshape(h, s, w, s, *m.shape[2:]).mean(axis=(1, 3)) + 0.5).astype(np.uint8)


HRS = {"baby": _img(27, 22, 0), "bird": _img(16, 19, 1), "gray": _img(20, 21, 2, gray=True)}


def _check(ds, scale, lrs=None):
    samples = {s.name: s for s in ds}
    assert len(ds) == len(samples) == len(HRS) and set(samples) == set(HRS)
    for name, hr in HRS.items():
        s = samples[name]
        h, w = hr.shape[0] // scale, hr.shape[1] // scale
        np.testing.assert_array_equal(s.gt, hr[: h * scale, : w * scale])
        expected_lq = lrs[name] if lrs else bicubic_degrade(hr, scale)
        np.testing.assert_array_equal(s.lq, expected_lq)
        assert s.lq.shape[:2] == (h, w) and s.lq.dtype == np.uint8 and s.gt.dtype == np.uint8


@pytest.mark.parametrize("suffix", [True, False], ids=["babyx2", "same-name"])
@pytest.mark.parametrize("scale", [2, 3])
def test_edsr_layout(tmp_path, scale, suffix):
    lrs = {n: _lr_by_hand(hr, scale) for n, hr in HRS.items()}
    for n, hr in HRS.items():
        _save(tmp_path / "Set" / "HR" / f"{n}.png", hr)
        _save(tmp_path / "Set" / "LR_bicubic" / f"X{scale}" / (f"{n}x{scale}.png" if suffix else f"{n}.png"), lrs[n])
    ds = BenchmarkSet(tmp_path / "Set", scale)
    assert ds.name == "Set" and ds.scale == scale
    _check(ds, scale, lrs)


def test_div2k_layout(tmp_path):
    lrs = {n: _lr_by_hand(hr, 2) for n, hr in HRS.items()}
    for n, hr in HRS.items():
        _save(tmp_path / "DIV2K" / "DIV2K_train_HR" / f"{n}.png", hr)
        _save(tmp_path / "DIV2K" / "DIV2K_train_LR_bicubic" / "X2" / f"{n}x2.png", lrs[n])
    _check(BenchmarkSet(tmp_path / "DIV2K", 2, name="div2k"), 2, lrs)
    # scale without an LR folder: made by MATLAB bicubic from the HR images
    _check(BenchmarkSet(tmp_path / "DIV2K", 3), 3)


@pytest.mark.parametrize("nested", [True, False], ids=["HR-folder", "flat-folder"])
def test_hr_only_layout_uses_matlab_bicubic(tmp_path, nested):
    for n, hr in HRS.items():
        _save(tmp_path / "S" / ("HR" if nested else "") / f"{n}.png", hr)
    (tmp_path / "S" / "notes.txt").write_text("not an image")
    for s in (2, 3, 4):
        _check(BenchmarkSet(tmp_path / "S", s), s)


def test_16bit_hr_is_rounded_to_8_bits(tmp_path):
    import imageio.v3 as iio

    v = HRS["baby"].astype(np.int64)
    hr16 = (v * 257 + np.where(v > 127, -100, 100)).astype(np.uint16)  # v +- 0.39: rounds back to v
    (tmp_path / "S" / "HR").mkdir(parents=True)
    iio.imwrite(tmp_path / "S" / "HR" / "baby.tif", hr16)
    (sample,) = list(BenchmarkSet(tmp_path / "S", 2))
    np.testing.assert_array_equal(sample.gt, modcrop(HRS["baby"], 2))


def test_builtin_set():
    ds = BenchmarkSet("builtin", 2)
    samples = list(ds)
    assert len(ds) == len(samples) >= 1
    s = samples[0]
    hr = getattr(skimage.data, s.name)()[:, :, :3]
    np.testing.assert_array_equal(s.gt, modcrop(hr, 2))
    np.testing.assert_array_equal(s.lq, bicubic_degrade(np.ascontiguousarray(hr), 2))


def test_lr_of_the_wrong_size_names_the_file_and_the_expected_size(tmp_path):
    hr = HRS["baby"]  # 22x27 (w x h): x2 LR must be 11x13
    _save(tmp_path / "S" / "HR" / "baby.png", hr)
    _save(tmp_path / "S" / "LR_bicubic" / "X2" / "baby.png", _lr_by_hand(hr, 3))  # 7x9: an x3 file
    ds = BenchmarkSet(tmp_path / "S", 2)
    with pytest.raises(DataError) as e:
        list(ds)
    msg = str(e.value)
    assert str(tmp_path / "S" / "LR_bicubic" / "X2" / "baby.png") in msg
    assert "11x13" in msg and "7x9" in msg


def test_lr_channel_mismatch(tmp_path):
    hr = HRS["gray"]
    _save(tmp_path / "S" / "HR" / "gray.png", hr)
    _save(tmp_path / "S" / "LR_bicubic" / "X2" / "gray.png", np.repeat(_lr_by_hand(hr, 2)[:, :, None], 3, axis=2))
    with pytest.raises(DataError, match=r"gray\.png.*channel"):
        list(BenchmarkSet(tmp_path / "S", 2))


def test_missing_lr_file(tmp_path):
    for n, hr in HRS.items():
        _save(tmp_path / "S" / "HR" / f"{n}.png", hr)
        if n != "bird":
            _save(tmp_path / "S" / "LR_bicubic" / "X2" / f"{n}.png", _lr_by_hand(hr, 2))
    with pytest.raises(DataError, match=r"no LR image for bird\.png"):
        BenchmarkSet(tmp_path / "S", 2)


@pytest.mark.parametrize("scale", [5, 1, 0, 8])
def test_wrong_scale(tmp_path, scale):
    _save(tmp_path / "S" / "HR" / "a.png", HRS["baby"])
    with pytest.raises(DataError, match=f"got {scale}"):
        BenchmarkSet(tmp_path / "S", scale)
    with pytest.raises(DataError, match=f"got {scale}"):
        check_scale(scale)


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(DataError, match=r"nowhere.*no such dataset folder"):
        BenchmarkSet(tmp_path / "nowhere", 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        BenchmarkSet(tmp_path / "empty", 2)
    (tmp_path / "emptyhr" / "HR").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        BenchmarkSet(tmp_path / "emptyhr", 2)


# --- PatchDataset ----------------------------------------------------------------------------------------


def _to_u8(t: torch.Tensor) -> np.ndarray:
    return np.floor(t.numpy().transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)


@pytest.fixture
def train_dir(tmp_path):
    _save(tmp_path / "train" / "HR" / "a.png", _img(41, 38, 10))  # modcrop x2 -> 40x38 (h x w)
    _save(tmp_path / "train" / "HR" / "b.png", _img(33, 45, 11))
    return tmp_path / "train"


def _locate(patch: np.ndarray, image: np.ndarray) -> tuple[int, int]:
    p = patch.shape[0]
    hits = [(y, x) for y in range(image.shape[0] - p + 1) for x in range(image.shape[1] - p + 1)
            if np.array_equal(image[y:y + p, x:x + p], patch)]
    assert len(hits) == 1, f"patch found {len(hits)} times"
    return hits[0]


@pytest.mark.parametrize("scale", [2, 3])
def test_patches_are_aligned(train_dir, scale):
    gt_size = 6 * scale
    ds = PatchDataset(train_dir, scale, gt_size, augment=False, repeat=3, seed=5)
    assert len(ds) == 6
    hrs = [modcrop(np.asarray(Image.open(train_dir / "HR" / f)), scale) for f in ("a.png", "b.png")]
    for i in range(len(ds)):
        item = ds[i]
        assert item["lq"].shape == (3, 6, 6) and item["gt"].shape == (3, gt_size, gt_size)
        assert item["lq"].dtype == torch.float32 and 0 <= item["lq"].min() and item["gt"].max() <= 1
        hr = hrs[i % 2]
        lq_img = bicubic_degrade(hr, scale)
        y, x = _locate(_to_u8(item["lq"]), lq_img)
        np.testing.assert_array_equal(_to_u8(item["gt"]), hr[y * scale:(y + 6) * scale, x * scale:(x + 6) * scale])


def test_patches_are_reproducible_per_seed_epoch_index(train_dir):
    a = PatchDataset(train_dir, 2, 16, seed=3, repeat=4)
    b = PatchDataset(train_dir, 2, 16, seed=3, repeat=4)
    for i in range(len(a)):
        for k in ("lq", "gt"):
            assert torch.equal(a[i][k], b[i][k])
    # order of access does not matter
    assert torch.equal(a[5]["gt"], b[5]["gt"])
    before = [a[i]["gt"] for i in range(len(a))]
    a.set_epoch(1)
    after = [a[i]["gt"] for i in range(len(a))]
    assert sum(not torch.equal(x, y) for x, y in zip(before, after, strict=True)) >= len(a) // 2
    b.set_epoch(1)
    assert all(torch.equal(b[i]["gt"], after[i]) for i in range(len(b)))
    c = PatchDataset(train_dir, 2, 16, seed=4, repeat=4)
    assert any(not torch.equal(c[i]["gt"], before[i]) for i in range(len(c)))


def _dihedral(img: np.ndarray) -> list[np.ndarray]:
    out = []
    for flipped in (img, img[:, ::-1]):
        for k in range(4):
            out.append(np.rot90(flipped, k, axes=(0, 1)))
    return out


def test_augmentations_are_the_8_dihedral_transforms_applied_to_both(train_dir):
    plain = PatchDataset(train_dir, 2, 16, augment=False, repeat=40, seed=9)
    aug = PatchDataset(train_dir, 2, 16, augment=True, repeat=40, seed=9)
    seen = set()
    for i in range(len(aug)):
        p, q = plain[i], aug[i]  # same (seed, epoch, index): same position, then maybe transformed
        gt_t, lq_t = _to_u8(q["gt"]), _to_u8(q["lq"])
        gts, lqs = _dihedral(_to_u8(p["gt"])), _dihedral(_to_u8(p["lq"]))
        ks = [k for k in range(8) if np.array_equal(gts[k], gt_t)]
        assert len(ks) == 1, f"item {i}: augmented gt is not one dihedral transform of the plain patch"
        assert np.array_equal(lqs[ks[0]], lq_t), f"item {i}: lq and gt were transformed differently"
        seen.add(ks[0])
    assert seen == set(range(8))


def test_gray_training_image_becomes_rgb(tmp_path):
    _save(tmp_path / "g" / "g.png", _img(20, 20, 3, gray=True))
    item = PatchDataset(tmp_path / "g", 2, 8, augment=False)[0]
    assert item["gt"].shape == (3, 8, 8)
    assert torch.equal(item["gt"][0], item["gt"][2])


def test_image_smaller_than_the_patch(tmp_path):
    _save(tmp_path / "t" / "tiny.png", _img(20, 30, 4))
    with pytest.raises(DataError) as e:
        PatchDataset(tmp_path / "t", 2, 24)
    msg = str(e.value)
    assert "tiny.png" in msg and "30x20" in msg and "24x24" in msg


def test_gt_size_must_be_divisible_by_scale(train_dir):
    with pytest.raises(DataError, match=r"gt_size=16.*scale 3"):
        PatchDataset(train_dir, 3, 16)
    with pytest.raises(DataError, match="got 5"):
        PatchDataset(train_dir, 5, 20)


def test_training_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no such training folder"):
        PatchDataset(tmp_path / "missing", 2, 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        PatchDataset(tmp_path / "empty", 2, 8)
