"""PSNR/SSIM as the SR literature computes them: hand-computable cases, an independent SSIM, and the
published bicubic baselines reproduced through tools/evaluate.py (the issue's acceptance targets)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import import_tool, require_shared
from scipy.ndimage import correlate
from skimage.metrics import structural_similarity

from srcore.metrics import psnr, rgb_to_y, ssim, to_uint8

# Published "Bicubic" rows (e.g. the VDSR/EDSR/CARN tables): Y-channel PSNR, crop = scale.
PUBLISHED_BICUBIC = {
    2: {"Set5": 33.66, "Set14": 30.24, "B100": 29.56},
    3: {"Set5": 30.39, "Set14": 27.55, "B100": 27.21},
    4: {"Set5": 28.42, "Set14": 26.00, "B100": 25.96},
}


def _rand_rgb(h=24, w=20, lo=0, hi=256, seed=0):
    return np.random.default_rng(seed).integers(lo, hi, size=(h, w, 3), dtype=np.uint8)


def _y_by_hand(img: np.ndarray) -> np.ndarray:
    r, g, b = (img[..., i].astype(np.float64) / 255.0 for i in range(3))
    return 16.0 + 65.481 * r + 128.553 * g + 24.966 * b


def test_y_of_pure_colours():
    px = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    y = rgb_to_y(px)[0]
    np.testing.assert_allclose(y, [16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966], atol=1e-9)


def test_psnr_constant_offset_on_y():
    gt = _rand_rgb(lo=10, hi=200)
    d = 5
    sr = gt + np.uint8(d)  # every channel +d -> Y moves by d * 219 / 255 everywhere
    expected = 10 * math.log10(255.0**2 / (d * 219.0 / 255.0) ** 2)
    for crop in (0, 2, 4):
        assert psnr(sr, gt, crop) == pytest.approx(expected, abs=1e-9)
    # RGB PSNR: every value off by exactly d
    assert psnr(sr, gt, 2, test_y_channel=False) == pytest.approx(10 * math.log10(255.0**2 / d**2), abs=1e-9)


def test_psnr_is_symmetric_and_matches_an_independent_formula():
    a, b = _rand_rgb(seed=1), _rand_rgb(seed=2)
    ya, yb = _y_by_hand(a)[3:-3, 3:-3], _y_by_hand(b)[3:-3, 3:-3]
    expected = 10 * math.log10(255.0**2 / np.mean((ya - yb) ** 2))
    assert psnr(a, b, 3) == pytest.approx(expected, abs=1e-9)
    assert psnr(b, a, 3) == pytest.approx(expected, abs=1e-9)


def test_identical_images_score_inf_and_ssim_one():
    img = _rand_rgb()
    assert psnr(img, img.copy(), 2) == float("inf")
    assert psnr(img, img.copy(), 2, test_y_channel=False) == float("inf")
    assert ssim(img, img.copy(), 2) == pytest.approx(1.0, abs=1e-12)


def test_round_y_rounds_y_to_integers():
    a, b = _rand_rgb(seed=3), _rand_rgb(seed=4)
    ya, yb = np.floor(_y_by_hand(a) + 0.5), np.floor(_y_by_hand(b) + 0.5)
    expected = 10 * math.log10(255.0**2 / np.mean((ya - yb) ** 2))
    assert psnr(a, b, 0, round_y=True) == pytest.approx(expected, abs=1e-9)


def test_crop_border_removes_border_errors():
    gt = np.full((20, 20), 100, dtype=np.uint8)
    sr = gt.copy()
    sr[:2, :] += 10
    sr[-2:, :] += 10
    sr[:, :2] = 110
    sr[:, -2:] = 110  # every pixel within 2 of the edge is off by 10: 400 - 16*16 = 144 pixels
    assert psnr(sr, gt, 0) == pytest.approx(10 * math.log10(255.0**2 / (144 * 100 / 400)), abs=1e-9)
    assert psnr(sr, gt, 2) == float("inf")
    assert psnr(sr, gt, 1) == pytest.approx(10 * math.log10(255.0**2 / ((324 - 256) * 100 / 324)), abs=1e-9)
    with pytest.raises(ValueError, match="crop_border"):
        psnr(sr, gt, 10)


def test_gray_images_are_scored_on_gray_values():
    gt = np.full((16, 16), 120, dtype=np.uint8)
    sr = gt + np.uint8(4)
    # gray values, not 16 + 219/255 * v: the MSE is 16, not (4 * 219 / 255)^2
    assert psnr(sr, gt, 2) == pytest.approx(10 * math.log10(255.0**2 / 16), abs=1e-9)
    assert psnr(sr[:, :, None], gt[:, :, None], 2) == pytest.approx(10 * math.log10(255.0**2 / 16), abs=1e-9)
    # an RGB image with equal channels is scored on Y instead
    rgb = np.repeat(gt[:, :, None], 3, axis=2), np.repeat(sr[:, :, None], 3, axis=2)
    assert psnr(rgb[1], rgb[0], 2) == pytest.approx(10 * math.log10(255.0**2 / (4 * 219 / 255) ** 2), abs=1e-9)


def test_float_inputs_are_clipped_and_rounded_to_8_bits_first():
    gt = _rand_rgb(seed=5)
    sr = _rand_rgb(seed=6)
    f = sr.astype(np.float64) / 255.0 + 0.4 / 255.0  # rounds back to the same 8-bit values
    t = torch.from_numpy(f.transpose(2, 0, 1).copy())[None]
    assert psnr(f, gt, 2) == pytest.approx(psnr(sr, gt, 2), abs=1e-12)
    assert psnr(t, gt, 2) == pytest.approx(psnr(sr, gt, 2), abs=1e-12)
    np.testing.assert_array_equal(to_uint8(np.array([[-0.5, 1.7, 0.5 / 255, 0.49 / 255]])), [[0, 255, 1, 0]])


def _ssim_wang(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al.'s ssim_index.m, written out: 11x11 Gaussian (sigma 1.5), 'valid' filtering, L = 255."""
    ax = np.arange(-5, 6, dtype=np.float64)
    g = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * 1.5**2))
    win = g / g.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def filt(x):
        return correlate(x, win, mode="constant")[5:-5, 5:-5]  # 'valid' part only

    mu_a, mu_b = filt(a), filt(b)
    s_aa = filt(a * a) - mu_a**2
    s_bb = filt(b * b) - mu_b**2
    s_ab = filt(a * b) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2))
    return float(m.mean())


def test_ssim_equals_wang_et_al_on_y():
    rng = np.random.default_rng(7)
    gt = _rand_rgb(40, 36, seed=8)
    sr = np.clip(gt.astype(int) + rng.integers(-20, 21, size=gt.shape), 0, 255).astype(np.uint8)
    ya, yb = _y_by_hand(sr)[2:-2, 2:-2], _y_by_hand(gt)[2:-2, 2:-2]
    ref_skimage = structural_similarity(ya, yb, data_range=255.0, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, K1=0.01, K2=0.03)
    ours = ssim(sr, gt, 2)
    assert ours == pytest.approx(ref_skimage, abs=1e-12)
    assert ours == pytest.approx(_ssim_wang(ya, yb), abs=1e-9)
    assert 0.0 < ours < 1.0


def test_ssim_gray_and_rgb():
    rng = np.random.default_rng(9)
    gt = rng.integers(0, 256, size=(30, 30), dtype=np.uint8)
    sr = np.clip(gt.astype(int) + rng.integers(-15, 16, size=gt.shape), 0, 255).astype(np.uint8)
    assert ssim(sr, gt, 3) == pytest.approx(_ssim_wang(sr[3:-3, 3:-3].astype(float), gt[3:-3, 3:-3].astype(float)),
                                            abs=1e-9)
    g3, s3 = _rand_rgb(30, 30, seed=10), _rand_rgb(30, 30, seed=11)
    per_channel = np.mean([_ssim_wang(s3[..., c].astype(float), g3[..., c].astype(float)) for c in range(3)])
    assert ssim(s3, g3, 0, test_y_channel=False) == pytest.approx(per_channel, abs=1e-9)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(_rand_rgb(24, 20), _rand_rgb(24, 22), 2)
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(_rand_rgb(24, 20), _rand_rgb(24, 20)[:, :, 0], 2)


# --- the published bicubic rows, end to end through the CLI ---------------------------------------------


@pytest.fixture(scope="module")
def evaluate_main():
    return import_tool("evaluate").main


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_cli_reproduces_published_bicubic(scale, tmp_path, evaluate_main):
    data = [require_shared("data", s) for s in ("Set5", "Set14", "B100")]
    out = tmp_path / "bicubic.json"
    assert evaluate_main(["--arch", "bicubic", "--scale", str(scale), "--data", *map(str, data),
                          "--json", str(out)]) == 0
    res = {r["dataset"]: r for r in json.loads(out.read_text())["results"]}
    assert {k: r["n_images"] for k, r in res.items()} == {"Set5": 5, "Set14": 14, "B100": 100}
    for name, target in PUBLISHED_BICUBIC[scale].items():
        assert res[name]["scale"] == scale
        assert abs(res[name]["psnr_y"] - target) <= 0.01, f"{name} x{scale}: {res[name]['psnr_y']:.4f} vs {target}"
