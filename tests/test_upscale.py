"""tools/upscale.py on a folder of mixed images, srcore/modelfile.py's loaders, and one-line errors."""
from __future__ import annotations

import importlib.util
import sys
import warnings

import cv2
import numpy as np
import pytest
import torch
from conftest import import_tool
from PIL import Image
from test_tiling import receptive_radius

from distill import zoo
from srcore.checkpoint import save_checkpoint
from srcore.data import builtin_image
from srcore.imageio import read_image, to_8bit, write_image
from srcore.modelspec import arch_spec
from srcore.tiling import margin

upscale_cli = import_tool("upscale")
run_cli = import_tool("common").run_cli

# A tiny PAN (pixel attention, no global context: tiling is exact when the margin covers its receptive field)
# whose bilinear skip makes its random-weight output image-like.
PAN_KW = {"nf": 8, "unf": 8, "n_blocks": 1}
TILE, OVERLAP = 50, 24  # margin(24) = 6 = the network's receptive radius (checked below)


def tiny_pan(scale: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    net = zoo.create("pan", scale, **PAN_KW).eval()
    with torch.no_grad():
        net.conv_last.weight.mul_(0.1)  # a small residual on top of bilinear
    return net


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny_pan_x2.pt"
    save_checkpoint(path, state_dict=tiny_pan().state_dict(), spec=arch_spec("pan", 2, **PAN_KW))
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder with one image of each kind a user has (70 x 90 crops of a photograph)."""
    d = tmp_path_factory.mktemp("photos")
    rgb = np.ascontiguousarray(builtin_image("astronaut")[100:170, 150:240])
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    yy, xx = np.mgrid[:70, :90]
    alpha = np.clip(255 - 4 * np.hypot(yy - 35, xx - 45), 0, 255).astype(np.uint8)  # a soft disc
    Image.fromarray(rgb).save(d / "photo.png")
    cv2.imwrite(str(d / "deep.png"), (rgb.astype(np.uint16) * 257)[:, :, ::-1])  # 16-bit RGB, same values
    cv2.imwrite(str(d / "gray.jpg"), gray)
    Image.fromarray(np.dstack([rgb, alpha])).save(d / "logo.png")  # RGBA
    Image.fromarray(np.dstack([gray, alpha]), mode="LA").save(d / "mask.png")  # gray + alpha
    Image.fromarray(rgb).save(d / "pic.bmp")
    cv2.imwrite(str(d / "scan.tif"), gray.astype(np.uint16) * 257)  # 16-bit gray TIFF
    (d / "notes.txt").write_text("not an image: ignored")
    return d


@pytest.fixture(scope="module")
def upscaled(ckpt, photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("sr")
    assert upscale_cli.main(["--checkpoint", str(ckpt), "--input", str(photos), "--out", str(out / "whole"),
                             "--tile", "0", "--threads", "1"]) == 0
    assert upscale_cli.main(["--checkpoint", str(ckpt), "--scale", "2", "--input", str(photos), "--out",
                             str(out / "tiled"), "--tile", str(TILE), "--tile-overlap", str(OVERLAP)]) == 0
    return out


NAMES = ["deep.png", "gray.jpg", "logo.png", "mask.png", "photo.png", "pic.bmp", "scan.tif"]


def test_outputs_keep_names_sizes_bit_depth_and_layout(upscaled, photos):
    for run in ("whole", "tiled"):
        assert sorted(p.name for p in (upscaled / run).iterdir()) == NAMES
    expected = {"photo.png": (np.uint8, 3), "deep.png": (np.uint16, 3), "gray.jpg": (np.uint8, None),
                "logo.png": (np.uint8, 4), "mask.png": (np.uint8, 4), "pic.bmp": (np.uint8, 3),
                "scan.tif": (np.uint16, None)}
    for name, (dtype, channels) in expected.items():
        src = read_image(photos / name, keep_alpha=True)
        out = read_image(upscaled / "tiled" / name, keep_alpha=True)
        assert out.dtype == dtype, name
        assert out.shape[:2] == (140, 180) and src.shape[:2] == (70, 90), name
        assert (out.ndim == 2) if channels is None else out.shape[2] == channels, name


def test_content_is_consistent_across_formats(upscaled, photos):
    sr = {n: read_image(upscaled / "whole" / n, keep_alpha=True) for n in NAMES}
    # the network is not the identity, yet stays image-like (bilinear skip): close to a plain 2x enlargement
    photo = read_image(photos / "photo.png")
    bilinear = cv2.resize(photo, (180, 140), interpolation=cv2.INTER_LINEAR).astype(float)
    diff = np.abs(sr["photo.png"].astype(float) - bilinear)
    assert 0.5 < diff.mean() < 20
    # the same pixels in 8-bit PNG, 16-bit PNG and BMP give the same SR (16 bits: the same value x 257, +-1)
    assert np.array_equal(sr["photo.png"], sr["pic.bmp"])
    assert np.abs(sr["deep.png"] / 257.0 - sr["photo.png"]).max() <= 1.0
    # RGBA: the colour is the RGB image's SR; alpha is its bicubic enlargement
    assert np.array_equal(sr["logo.png"][:, :, :3], sr["photo.png"])
    a = np.asarray(Image.open(photos / "logo.png"))[:, :, 3]
    assert np.array_equal(sr["logo.png"][:, :, 3], cv2.resize(a, (180, 140), interpolation=cv2.INTER_CUBIC))
    # gray + alpha: written as RGBA with three equal channels; gray outputs are the luma of the RGB output
    assert np.array_equal(sr["mask.png"][:, :, 0], sr["mask.png"][:, :, 2])
    assert np.abs(sr["scan.tif"] / 257.0 - sr["mask.png"][:, :, 0]).max() <= 1.0


def test_tiled_output_matches_the_whole_image_pass(upscaled):
    """The tiny PAN has no global context and its receptive radius fits the margin: tiles reproduce the
    whole-image pass up to float rounding (so at most 1 level where a value sits at a rounding boundary)."""
    assert receptive_radius(tiny_pan(), 2, n=48) <= margin(OVERLAP)
    for name in NAMES:
        whole = read_image(upscaled / "whole" / name, keep_alpha=True).astype(np.int64)
        tiled = read_image(upscaled / "tiled" / name, keep_alpha=True).astype(np.int64)
        assert np.abs(whole - tiled).max() <= 1, name
        assert np.mean(whole != tiled) < 1e-3, name


def test_single_file_and_format_option(ckpt, photos, tmp_path):
    assert upscale_cli.main(["--checkpoint", str(ckpt), "--input", str(photos / "deep.png"), "--out", str(tmp_path),
                             "--format", "jpg"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["deep.jpg"]
    out = read_image(tmp_path / "deep.jpg")
    assert out.dtype == np.uint8 and out.shape == (140, 180, 3)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's legacy (TorchScript) ONNX exporter
def test_onnx_model_gives_the_checkpoints_output(ckpt, photos, tmp_path):
    pytest.importorskip("onnxruntime")
    onnx = tmp_path / "model.onnx"
    torch.onnx.export(tiny_pan(), torch.zeros(1, 3, 16, 16), str(onnx), input_names=["lr"], output_names=["sr"],
                      dynamic_axes={"lr": {2: "h", 3: "w"}, "sr": {2: "H", 3: "W"}}, dynamo=False)
    assert upscale_cli.main(["--checkpoint", str(onnx), "--scale", "2", "--input", str(photos / "logo.png"),
                             "--out", str(tmp_path / "o"), "--tile", str(TILE), "--tile-overlap", str(OVERLAP)]) == 0
    assert upscale_cli.main(["--checkpoint", str(ckpt), "--input", str(photos / "logo.png"),
                             "--out", str(tmp_path / "c"), "--tile", str(TILE), "--tile-overlap", str(OVERLAP)]) == 0
    a = read_image(tmp_path / "o" / "logo.png", keep_alpha=True).astype(int)
    b = read_image(tmp_path / "c" / "logo.png", keep_alpha=True).astype(int)
    assert np.abs(a - b).max() <= 1


def _error(argv, monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", ["upscale.py", *argv])
    with pytest.raises(SystemExit) as e:
        run_cli(upscale_cli.main)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return " ".join(err.split())  # rich wraps long lines


def test_bad_inputs_are_one_line_errors(ckpt, photos, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes((photos / "photo.png").read_bytes())
    (bad / "broken.png").write_bytes(b"this is not a png")
    out = tmp_path / "out"
    base = ["--checkpoint", str(ckpt), "--out", str(out)]
    assert "broken.png: unreadable image" in _error([*base, "--input", str(bad)], monkeypatch, capsys)
    assert f"--scale 3 but {ckpt} holds a x2 network" in _error(
        [*base, "--scale", "3", "--input", str(photos)], monkeypatch, capsys)
    assert "tile overlap must be < tile / 2" in _error(
        [*base, "--input", str(photos), "--tile", "40", "--tile-overlap", "20"], monkeypatch, capsys)
    assert "tile must be 0 (whole image) or an integer >= 16" in _error(
        [*base, "--input", str(photos), "--tile", "8"], monkeypatch, capsys)
    (tmp_path / "empty").mkdir()
    assert "no images in this folder" in _error([*base, "--input", str(tmp_path / "empty")], monkeypatch, capsys)
    assert "no such image or folder" in _error([*base, "--input", str(tmp_path / "nope")], monkeypatch, capsys)
    assert "not an image file" in _error([*base, "--input", str(photos / "notes.txt")], monkeypatch, capsys)
    assert "would overwrite its input" in _error(
        ["--checkpoint", str(ckpt), "--input", str(photos), "--out", str(photos)], monkeypatch, capsys)
    twins = tmp_path / "twins"
    twins.mkdir()
    for name in ("photo.png", "photo.bmp"):
        (twins / name).write_bytes((photos / ("photo.png" if name.endswith("png") else "pic.bmp")).read_bytes())
    assert "would both be written to" in _error([*base, "--input", str(twins), "--format", "tif"], monkeypatch, capsys)
    weights = tmp_path / "published.pth"
    torch.save(tiny_pan().state_dict(), weights)
    assert "not an srnas checkpoint, deploy.pt or .onnx model" in _error(
        ["--checkpoint", str(weights), "--out", str(out), "--input", str(photos)], monkeypatch, capsys)
    if importlib.util.find_spec("compress.deploy") is None:  # the compression branch adds it
        deploy = tmp_path / "deploy.pt"
        torch.save({"spec": {}, "widths": {}, "state_dict": {}}, deploy)
        assert "deploy.pt models are not supported yet" in _error(
            ["--checkpoint", str(deploy), "--out", str(out), "--input", str(photos)], monkeypatch, capsys)
    assert not out.exists()  # no failed run wrote anything


# --- srcore.imageio: keep_alpha and write_image --------------------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".tif", ".bmp", ".jpg"])
@pytest.mark.parametrize("layout", ["gray", "rgb", "rgba", "gray16", "rgb16", "rgba16"])
def test_write_image_round_trips_each_format_and_layout(tmp_path, ext, layout):
    rng = np.random.default_rng(0)
    deep = layout.endswith("16")
    channels = {"gray": None, "rgb": 3, "rgba": 4}[layout.removesuffix("16")]
    shape = (9, 11) if channels is None else (9, 11, channels)
    img = rng.integers(0, 65536 if deep else 256, shape).astype(np.uint16 if deep else np.uint8)
    path = tmp_path / f"x{ext}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_image(path, img)
    back = read_image(path, keep_alpha=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp file left behind
    want = img if ext in (".png", ".tif") or not deep else to_8bit(img)  # JPEG/BMP hold 8 bits
    if ext == ".jpg" and channels == 4:  # JPEG has no alpha: dropped, with a warning
        want = want[:, :, :3]
        assert any("JPEG has no alpha" in str(w.message) for w in caught)
    assert back.dtype == want.dtype and back.shape == want.shape
    if ext != ".jpg":  # lossless formats give the pixels back
        assert np.array_equal(back, want)


def test_write_image_rejects_unknown_formats_in_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"x\.gif: cannot write '\.gif' images"):
        write_image(tmp_path / "x.gif", np.zeros((4, 4), np.uint8))
