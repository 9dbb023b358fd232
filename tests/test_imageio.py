"""Reading and writing images: every format/bit depth we accept round-trips, bad files give one clear error."""
from __future__ import annotations

import struct
import zlib

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from srcore.imageio import ImageReadError, is_image_file, read_image, to_8bit, to_float, to_tensor, write_png

RNG = np.random.default_rng(0)
RGB8 = RNG.integers(0, 256, size=(13, 17, 3), dtype=np.uint8)
GRAY8 = RNG.integers(0, 256, size=(13, 17), dtype=np.uint8)
RGB16 = RNG.integers(0, 65536, size=(13, 17, 3), dtype=np.uint16)
GRAY16 = RNG.integers(0, 65536, size=(13, 17), dtype=np.uint16)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _encode_png16(img: np.ndarray) -> bytes:
    """An independent 16-bit PNG encoder (pure Python) that cycles through all five row filters and splits
    the data over several IDAT chunks, as other encoders do."""
    h, w = img.shape[:2]
    c = 1 if img.ndim == 2 else img.shape[2]
    bpp = 2 * c
    raw = np.ascontiguousarray(img, ">u2").reshape(h, -1).view(np.uint8).astype(int).tolist()
    out = bytearray()
    for y in range(h):
        f = y % 5
        prev = raw[y - 1] if y else [0] * len(raw[y])
        line = []
        for i, v in enumerate(raw[y]):
            a = raw[y][i - bpp] if i >= bpp else 0
            b = prev[i]
            cc = prev[i - bpp] if i >= bpp else 0
            pred = [0, a, b, (a + b) // 2, _paeth(a, b, cc)][f]
            line.append((v - pred) % 256)
        out += bytes([f] + line)
    z = zlib.compress(bytes(out))
    ctype = {1: 0, 3: 2, 4: 6}[c]
    idat = b"".join(_png_chunk(b"IDAT", z[i:i + 100]) for i in range(0, len(z), 100))
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0))
            + idat + _png_chunk(b"IEND", b""))


def _roundtrip(path, img):
    out = read_image(path)
    assert out.dtype == img.dtype and out.shape == img.shape
    np.testing.assert_array_equal(out, img)


def test_png_8bit_rgb(tmp_path):
    iio.imwrite(tmp_path / "a.png", RGB8)
    _roundtrip(tmp_path / "a.png", RGB8)


def test_png_gray_8bit(tmp_path):
    Image.fromarray(GRAY8, mode="L").save(tmp_path / "g.png")
    _roundtrip(tmp_path / "g.png", GRAY8)


def test_png_16bit_gray(tmp_path):
    (tmp_path / "g16.png").write_bytes(_encode_png16(GRAY16))
    _roundtrip(tmp_path / "g16.png", GRAY16)
    iio.imwrite(tmp_path / "g16_pil.png", GRAY16)  # Pillow's own 16-bit gray encoder
    _roundtrip(tmp_path / "g16_pil.png", GRAY16)


def test_png_16bit_rgb_keeps_all_16_bits(tmp_path):
    (tmp_path / "c16.png").write_bytes(_encode_png16(RGB16))
    _roundtrip(tmp_path / "c16.png", RGB16)
    # 8-bit content stored as 16 bits (v * 257) comes back as the same 8-bit values
    np.testing.assert_array_equal(to_8bit(RGB8.astype(np.uint16) * 257), RGB8)


def test_png_16bit_rgba_drops_alpha(tmp_path):
    rgba = np.concatenate([RGB16, np.full((13, 17, 1), 65535, np.uint16)], axis=2)
    (tmp_path / "c16a.png").write_bytes(_encode_png16(rgba))
    with pytest.warns(UserWarning, match="c16a.png.*alpha"):
        out = read_image(tmp_path / "c16a.png")
    np.testing.assert_array_equal(out, RGB16)


def test_jpeg(tmp_path):
    yy, xx = np.mgrid[0:32, 0:32]
    smooth = np.stack([yy * 8, xx * 8, (yy + xx) * 4], axis=2).astype(np.uint8)  # gradients: JPEG stays close
    Image.fromarray(smooth).save(tmp_path / "a.jpg", quality=98)
    out = read_image(tmp_path / "a.jpg")
    assert out.dtype == np.uint8 and out.shape == smooth.shape
    assert np.abs(out.astype(int) - smooth.astype(int)).mean() < 4


def test_bmp(tmp_path):
    Image.fromarray(RGB8).save(tmp_path / "a.bmp")
    _roundtrip(tmp_path / "a.bmp", RGB8)


@pytest.mark.parametrize("img", [RGB8, RGB16, GRAY16], ids=["rgb8", "rgb16", "gray16"])
def test_tiff(tmp_path, img):
    iio.imwrite(tmp_path / "a.tif", img)
    _roundtrip(tmp_path / "a.tif", img)


def test_rgba_png_drops_alpha_with_a_warning_naming_the_file(tmp_path):
    rgba = np.concatenate([RGB8, RNG.integers(0, 256, size=(13, 17, 1), dtype=np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "with_alpha.png")
    with pytest.warns(UserWarning, match=r"with_alpha\.png.*alpha"):
        out = read_image(tmp_path / "with_alpha.png")
    np.testing.assert_array_equal(out, RGB8)


def test_gray_alpha_png(tmp_path):
    la = np.stack([GRAY8, np.full_like(GRAY8, 200)], axis=2)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    with pytest.warns(UserWarning, match="la.png"):
        out = read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(out, GRAY8)


def test_palette_png_is_expanded(tmp_path):
    pal = Image.fromarray(RGB8).quantize(colors=16)
    pal.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    expected = np.asarray(pal.convert("RGB"))
    _roundtrip(tmp_path / "p.png", expected)


def test_one_bit_png(tmp_path):
    Image.fromarray(GRAY8 > 128).save(tmp_path / "bw.png")
    out = read_image(tmp_path / "bw.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.where(GRAY8 > 128, 255, 0))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # imageio tries its legacy plugins on garbage
@pytest.mark.parametrize("content", [b"", b"not an image at all" * 20, b"\x89PNG\r\n\x1a\n" + b"\x00" * 40],
                         ids=["empty", "garbage", "truncated-png"])
def test_unreadable_file_is_one_line_naming_it(tmp_path, content):
    bad = tmp_path / "broken_file.png"
    bad.write_bytes(content)
    with pytest.raises(ImageReadError) as e:
        read_image(bad)
    msg = str(e.value)
    assert str(bad) in msg and "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match=r"nothere\.png.*no such"):
        read_image(tmp_path / "nothere.png")
    with pytest.raises(ImageReadError, match="no such"):
        read_image(tmp_path)  # a folder is not an image


def test_multipage_tiff_is_rejected(tmp_path):
    iio.imwrite(tmp_path / "stack.tif", np.stack([RGB8, RGB8, RGB8, RGB8, RGB8]))
    with pytest.raises(ImageReadError, match="stack.tif"):
        read_image(tmp_path / "stack.tif")


def test_to_tensor_ranges_and_shapes():
    t = to_tensor(RGB8)
    assert t.dtype == torch.float32 and t.shape == (3, 13, 17)
    np.testing.assert_allclose(t.numpy(), RGB8.transpose(2, 0, 1) / 255.0, atol=1e-7)
    full = to_tensor(np.array([[0, 255]], dtype=np.uint8))
    assert full.shape == (1, 1, 2) and full.min() == 0.0 and full.max() == 1.0
    t16 = to_tensor(np.array([[0, 65535]], dtype=np.uint16))
    assert t16.tolist() == [[[0.0, 1.0]]]
    g3 = to_tensor(GRAY8, channels=3)
    assert g3.shape == (3, 13, 17)
    assert torch.equal(g3[0], g3[1]) and torch.equal(g3[1], g3[2])
    np.testing.assert_allclose(g3[0].numpy(), GRAY8 / 255.0, atol=1e-7)
    assert to_tensor(GRAY8).shape == (1, 13, 17)
    assert to_float(np.array([0.25], dtype=np.float64)).dtype == np.float32


def test_to_8bit_rounds():
    v = np.array([0, 128, 129, 65535, 257 * 7], dtype=np.uint16)
    np.testing.assert_array_equal(to_8bit(v), np.floor(v.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8))
    assert to_8bit(RGB8) is RGB8


@pytest.mark.parametrize("img", [RGB8, GRAY8, RGB16, GRAY16], ids=["rgb8", "gray8", "rgb16", "gray16"])
def test_write_png_roundtrip(tmp_path, img):
    path = tmp_path / "sub" / "dir" / "out.png"  # parent folders are created
    write_png(path, img)
    assert Image.open(path).format == "PNG"
    _roundtrip(path, img)


def test_write_png_rejects_other_types(tmp_path):
    with pytest.raises(ValueError, match="uint8 or uint16"):
        write_png(tmp_path / "f.png", RGB8.astype(np.float32))
    assert not (tmp_path / "f.png").exists()


def test_is_image_file():
    assert is_image_file("a/B.PNG") and is_image_file("x.jpeg") and is_image_file("x.tiff")
    assert not is_image_file("x.txt") and not is_image_file("png")
