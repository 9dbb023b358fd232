"""MATLAB-compatible bicubic imresize: bit-exact against the shared benchmark LR files, and its input paths.

The acceptance test is `test_bicubic_degrade_reproduces_every_shared_lr_file`: every LR image of Set5, Set14
and B100 in ../shared/data (x2, x3, x4; 357 files) is `imresize(modcrop(HR, s), 1/s, 'bicubic')` in
MATLAB terms (see ../shared/data/PROVENANCE.md) and our `bicubic_degrade` must reproduce it bit for bit.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import require_shared

from srcore.imageio import read_image
from srcore.imresize import _cubic, bicubic_degrade, imresize, modcrop, resize_matrix

SETS = ("Set5", "Set14", "B100")
SCALES = (2, 3, 4)


def test_bicubic_degrade_reproduces_every_shared_lr_file():
    data = require_shared("data")
    checked, mismatches = 0, []
    for name in SETS:
        hr_files = sorted((data / name / "HR").glob("*.png"))
        assert hr_files, f"{data / name / 'HR'} holds no PNG files"
        for hr_path in hr_files:
            hr = read_image(hr_path)
            for s in SCALES:
                lr_path = data / name / "LR_bicubic" / f"X{s}" / hr_path.name
                lr = read_image(lr_path)
                ours = bicubic_degrade(hr, s)
                checked += 1
                if ours.dtype != np.uint8 or ours.shape != lr.shape:
                    mismatches.append(f"{lr_path}: shape/dtype {ours.shape} {ours.dtype} vs {lr.shape} {lr.dtype}")
                elif not np.array_equal(ours, lr):
                    diff = np.abs(ours.astype(int) - lr.astype(int))
                    mismatches.append(f"{lr_path}: {int((diff > 0).sum())} pixels differ (max {diff.max()})")
    assert checked == 357, f"expected 357 LR files (Set5 5 + Set14 14 + B100 100, x3 scales), found {checked}"
    assert not mismatches, f"{len(mismatches)} of {checked} LR files differ:\n" + "\n".join(mismatches[:10])


def _matlab_weights_reference(in_len: int, out_len: int, scale: float) -> np.ndarray:
    """Straight-line transcription of MATLAB's `contributions` (imresize.m), one output pixel at a time."""
    kernel_width = 4.0
    if scale < 1:
        kernel_width /= scale
    mat = np.zeros((out_len, in_len))
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - kernel_width / 2)
        ws, js = [], []
        for k in range(int(math.ceil(kernel_width)) + 2):
            j = left + k
            d = u - j
            ws.append(scale * float(_cubic(np.array(scale * d))) if scale < 1 else float(_cubic(np.array(d))))
            # symmetric padding: mirror 1-based index into 1..in_len
            jj = j - 1
            period = 2 * in_len
            jj = jj % period
            if jj >= in_len:
                jj = period - 1 - jj
            js.append(jj)
        total = sum(ws)
        for w, j in zip(ws, js, strict=True):
            mat[x - 1, j] += w / total
    return mat


@pytest.mark.parametrize("in_len,out_len,scale", [(12, 6, 0.5), (10, 4, 1 / 3), (7, 28, 4.0), (9, 18, 2.0),
                                                   (5, 3, 0.6)])
def test_resize_matrix_matches_a_pixel_by_pixel_transcription(in_len, out_len, scale):
    ref = _matlab_weights_reference(in_len, out_len, scale)
    np.testing.assert_allclose(resize_matrix(in_len, out_len, scale), ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(resize_matrix(in_len, out_len, scale).sum(axis=1), 1.0, atol=1e-12)


def test_cubic_kernel_hand_values():
    # Keys kernel, a = -0.5: k(0) = 1, k(1) = 0, k(0.5) = 0.5625, k(1.5) = -0.0625, k(2) = 0
    np.testing.assert_allclose(_cubic(np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, -0.5])),
                               [1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0, 0.5625], atol=1e-15)


def test_float_path_equals_uint8_path_before_rounding():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(37, 29, 3), dtype=np.uint8)
    for s in (0.5, 1 / 3, 0.25, 2.0):
        as_float = imresize(img.astype(np.float64), s)
        oh, ow = math.ceil(37 * s), math.ceil(29 * s)
        mh, mw = resize_matrix(37, oh, s), resize_matrix(29, ow, s)
        # the uint8 path rounds (half up, saturated) after each 1-D pass, rows first on a tie
        rows = np.clip(np.floor(np.einsum("ih,hwc->iwc", mh, img.astype(np.float64)) + 0.5), 0, 255)
        both = np.clip(np.floor(np.einsum("iwc,jw->ijc", rows, mw) + 0.5), 0, 255)
        np.testing.assert_array_equal(imresize(img, s), both.astype(np.uint8))
        # the float path is the same two passes without the rounding: M_h @ X @ M_w^T
        direct = np.einsum("ih,hwc,jw->ijc", mh, img.astype(np.float64), mw)
        assert as_float.dtype == np.float64
        np.testing.assert_allclose(as_float, direct, rtol=0, atol=1e-9)


def test_float_input_is_not_clipped_or_rounded():
    img = np.zeros((8, 8))
    img[:, 4:] = 1.0  # an edge overshoots with a negative-lobe kernel
    out = imresize(img, 2.0)
    assert out.dtype == np.float64
    assert out.min() < 0.0 and out.max() > 1.0


def test_torch_path_equals_numpy_float_path():
    rng = np.random.default_rng(1)
    img = rng.random((23, 31, 3))
    t = torch.from_numpy(img.transpose(2, 0, 1).copy())[None]  # (1, 3, H, W) float64
    for s in (0.5, 0.25, 3.0):
        ref = imresize(img, s)
        out = imresize(t, s)
        assert isinstance(out, torch.Tensor) and out.shape == (1, 3, *ref.shape[:2])
        np.testing.assert_allclose(out[0].numpy().transpose(1, 2, 0), ref, rtol=0, atol=1e-12)
    out32 = imresize(t.float(), 0.5)
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32[0].numpy().transpose(1, 2, 0), imresize(img, 0.5), atol=1e-5)


def test_size_argument():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, size=(20, 30), dtype=np.uint8)
    out = imresize(img, size=(7, 11))
    assert out.shape == (7, 11) and out.dtype == np.uint8
    # a uniform scale expressed as size gives the same result as the scale
    np.testing.assert_array_equal(imresize(img, size=(10, 15)), imresize(img, 0.5))
    # constant images stay constant whatever the size (weights sum to 1)
    const = np.full((9, 13, 3), 77, dtype=np.uint8)
    np.testing.assert_array_equal(imresize(const, size=(4, 20)), np.full((4, 20, 3), 77, dtype=np.uint8))
    with pytest.raises(ValueError, match="exactly one"):
        imresize(img, 0.5, size=(10, 15))
    with pytest.raises(ValueError, match="exactly one"):
        imresize(img)
    with pytest.raises(ValueError, match="> 0"):
        imresize(img, 0.0)


def test_scale_output_size_is_ceil():
    img = np.zeros((13, 7), dtype=np.uint8)
    assert imresize(img, 0.5).shape == (7, 4)
    assert imresize(img, 1 / 3).shape == (5, 3)
    assert imresize(img, 2.0).shape == (26, 14)


def test_modcrop_numpy_and_torch():
    img = np.arange(11 * 14 * 3).reshape(11, 14, 3)
    out = modcrop(img, 4)
    assert out.shape == (8, 12, 3)
    np.testing.assert_array_equal(out, img[:8, :12])  # top-left kept
    assert modcrop(img[:, :, 0], 3).shape == (9, 12)
    assert modcrop(img, 1).shape == img.shape
    t = torch.zeros(2, 3, 11, 14)
    assert modcrop(t, 3).shape == (2, 3, 9, 12)


def test_bicubic_degrade_sizes_and_grey():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(25, 31), dtype=np.uint8)
    for s in SCALES:
        out = bicubic_degrade(img, s)
        assert out.shape == (25 // s, 31 // s) and out.dtype == np.uint8


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16, np.int32])
def test_bicubic_degrade_rejects_non_uint8(dtype):
    with pytest.raises(ValueError, match="uint8"):
        bicubic_degrade(np.zeros((12, 12, 3), dtype=dtype), 2)


# --- memory: banded weights over strips, and the pixel bound ---------------------------------------------


@pytest.mark.parametrize("border", ["symmetric", "replicate"])
@pytest.mark.parametrize("shape,size", [((37, 29, 3), (13, 71)), ((5, 64), (3, 16)), ((40, 3), (120, 2))])
def test_banded_passes_equal_the_dense_matrices(shape, size, border):
    rng = np.random.default_rng(4)
    img = rng.random(shape) * 255
    mh = resize_matrix(shape[0], size[0], size[0] / shape[0], True, border)
    mw = resize_matrix(shape[1], size[1], size[1] / shape[1], True, border)
    dense = np.einsum("ih,hw...,jw->ij...", mh, img, mw)
    np.testing.assert_allclose(imresize(img, size=size, border=border), dense, rtol=0, atol=1e-9)


def test_a_long_image_is_resized_without_a_length_squared_matrix():
    """A dense pass over 60000 pixels would need a 30000 x 60000 float64 matrix (14 GB)."""
    import tracemalloc

    img = np.random.default_rng(5).integers(0, 256, size=(3, 60000), dtype=np.uint8)
    tracemalloc.start()
    try:
        out = imresize(img, 0.5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (2, 30000) and out.dtype == np.uint8
    assert peak < 50e6, peak
    np.testing.assert_array_equal(out[:, 100:110], imresize(img[:, :400], 0.5)[:, 100:110])  # away from the border


def test_images_beyond_the_pixel_bound_are_refused_before_any_work():
    from srcore.imresize import MAX_PIXELS, ImageTooLarge

    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20000, 20000, 3))  # no memory behind it
    with pytest.raises(ImageTooLarge, match=r"image 20000x20000 \(400 megapixels\) exceeds imresize's bound of "
                                            r"100 megapixels"):
        bicubic_degrade(huge, 2)
    with pytest.raises(ImageTooLarge, match="resized image 40000x8000"):
        imresize(np.broadcast_to(np.zeros((1, 1), np.uint8), (2000, 10000)), 4.0)
    assert MAX_PIXELS == 100_000_000  # documented in the README


def test_too_large_image_in_a_dataset_names_the_file(tmp_path, monkeypatch):
    from srcore import imresize as mod
    from srcore.data import BenchmarkSet, DataError, PatchDataset
    from srcore.imageio import write_png

    write_png(tmp_path / "HR" / "big.png", np.zeros((60, 60, 3), np.uint8))
    monkeypatch.setattr(mod, "MAX_PIXELS", 1000)
    with pytest.raises(DataError, match=r"big\.png: image 60x60 \(0 megapixels\) exceeds"):
        list(BenchmarkSet(tmp_path, 2))
    with pytest.raises(DataError, match=r"big\.png: image 60x60"):
        PatchDataset(tmp_path, 2, 32)
