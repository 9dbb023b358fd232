"""tools/evaluate.py end to end: scores, JSON, saved images, tiling, self-ensemble, and one-line errors."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, import_tool, require_shared
from PIL import Image

from distill import zoo
from srcore.checkpoint import save_checkpoint
from srcore.imageio import read_image
from srcore.modelspec import arch_spec

evaluate_cli = import_tool("evaluate")
run_cli = import_tool("common").run_cli

SET5 = ("baby", "bird", "butterfly", "head", "woman")



def _run(args: list[str], tmp_path, name="out.json") -> dict:
    out = tmp_path / name
    assert evaluate_cli.main([*args, "--json", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def imdn_whole(tmp_path_factory):
    """IMDN x2 on Set5, whole images, with --save-images (run once, checked by several tests)."""
    tmp = tmp_path_factory.mktemp("imdn")
    weights = require_shared("teachers", "imdn_x2.pth")
    set5 = require_shared("data", "Set5")
    res = _run(["--arch", "imdn", "--weights", str(weights), "--scale", "2", "--data", str(set5),
                "--save-images", str(tmp / "sr")], tmp)
    return res, tmp / "sr", set5


def test_imdn_x2_set5_score_and_json(imdn_whole):
    res, _, _ = imdn_whole
    assert res["scale"] == 2 and res["self_ensemble"] is False and res["tile"] == 0
    assert len(res["results"]) == 1
    r = res["results"][0]
    assert r["dataset"] == "Set5" and r["scale"] == 2 and r["n_images"] == 5
    assert abs(r["psnr_y"] - 37.996) <= 0.01, r["psnr_y"]  # ../shared/teachers/PROVENANCE.md, paper 38.00
    assert 0.95 < r["ssim_y"] < 1.0
    assert 30 < r["psnr_rgb"] < r["psnr_y"] and 0.9 < r["ssim_rgb"] < 1.0
    assert [im["name"] for im in r["images"]] == list(SET5)
    for k in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"):
        assert r[k] == pytest.approx(np.mean([im[k] for im in r["images"]]), abs=1e-9)


def test_save_images_writes_the_sr_pngs(imdn_whole):
    _, sr_dir, set5 = imdn_whole
    files = sorted((sr_dir / "Set5" / "x2").glob("*.png"))
    assert [f.stem for f in files] == list(SET5)
    for f in files:
        w, h = Image.open(set5 / "HR" / f.name).size
        sr = read_image(f)
        assert sr.dtype == np.uint8 and sr.shape == (h - h % 2, w - w % 2, 3)


def test_saved_image_scores_like_the_json(imdn_whole):
    """Re-score one saved PNG independently (Y by hand, crop 2): the JSON's per-image PSNR."""
    res, sr_dir, set5 = imdn_whole
    sr = read_image(sr_dir / "Set5" / "x2" / "baby.png").astype(np.float64)
    gt = read_image(set5 / "HR" / "baby.png")[: sr.shape[0], : sr.shape[1]].astype(np.float64)
    w = np.array([65.481, 128.553, 24.966]) / 255.0
    ya, yb = (16 + sr @ w)[2:-2, 2:-2], (16 + gt @ w)[2:-2, 2:-2]
    expected = 10 * math.log10(255.0**2 / np.mean((ya - yb) ** 2))
    assert res["results"][0]["images"][0]["psnr_y"] == pytest.approx(expected, abs=1e-9)


def test_tiled_stays_close_to_whole_image(tmp_path):
    # RLFN-S x4 (small LR images: fast); its ESA attention pools over the input, so tiles change it slightly
    args = ["--arch", "rlfn_s", "--weights", str(require_shared("teachers", "rlfn_s_x4.pth")), "--scale", "4",
            "--data", str(require_shared("data", "Set5"))]
    whole = _run(args, tmp_path, "whole.json")
    tiled = _run([*args, "--tile", "48", "--tile-overlap", "16"], tmp_path, "tiled.json")
    assert whole["tile"] == 0 and tiled["tile"] == 48 and tiled["tile_overlap"] == 16
    a, b = whole["results"][0], tiled["results"][0]
    assert abs(a["psnr_y"] - b["psnr_y"]) <= 0.05
    assert a["psnr_y"] != b["psnr_y"], "--tile 48 had no effect: were the images tiled at all?"
    assert [x["name"] for x in a["images"]] == [y["name"] for y in b["images"]]


def test_self_ensemble_runs(tmp_path):
    weights = require_shared("teachers", "rlfn_s_x4.pth")
    set5 = require_shared("data", "Set5")
    res = _run(["--arch", "rlfn_s", "--weights", str(weights), "--scale", "4", "--data", str(set5),
                "--self-ensemble"], tmp_path)
    r = res["results"][0]
    assert res["self_ensemble"] is True and r["n_images"] == 5
    # x8 ensembling gains about 0.1 dB over the single pass (32.239 in ../shared/teachers/PROVENANCE.md)
    assert 32.239 + 0.03 < r["psnr_y"] < 32.239 + 0.3


def test_bicubic_on_builtin_needs_no_shared_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SRNAS_SHARED", str(tmp_path / "nowhere"))
    res = _run(["--arch", "bicubic", "--scale", "2", "--data", "builtin"], tmp_path)
    r = res["results"][0]
    assert r["dataset"] == "builtin-val" and r["n_images"] == len(r["images"]) >= 1
    assert 20 < r["psnr_y"] < 45 and 0 < r["ssim_y"] < 1
    assert res["bicubic_source"] == "hr-y"


def test_checkpoint_on_builtin(tmp_path):
    spec = arch_spec("edsr_baseline", 2, n_resblocks=1, n_feats=8)
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, state_dict=zoo.create("edsr_baseline", 2, n_resblocks=1, n_feats=8).state_dict(),
                    spec=spec)
    res = _run(["--checkpoint", str(path), "--data", "builtin"], tmp_path)
    assert res["scale"] == 2 and res["results"][0]["n_images"] >= 1
    assert math.isfinite(res["results"][0]["psnr_y"])


# --- bad input: exit code 2 and one line on stderr naming the culprit --------------------------------------


def _cli_error(argv: list[str], monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", ["evaluate.py", *argv])
    with pytest.raises(SystemExit) as e:
        run_cli(evaluate_cli.main)
    assert e.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("error:")
    return lines[0]


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("weights")
    torch.save(zoo.create("rlfn_s", 4).state_dict(), tmp / "rlfn_s_x4.pth")
    return tmp


def test_unknown_arch(weight_files, monkeypatch, capsys):
    line = _cli_error(["--arch", "nosuchnet", "--weights", str(weight_files / "rlfn_s_x4.pth"), "--scale", "4",
                       "--data", "builtin"], monkeypatch, capsys)
    assert "nosuchnet" in line and "rlfn_s" in line  # names the culprit and the known architectures


def test_missing_weights_file(tmp_path, monkeypatch, capsys):
    line = _cli_error(["--arch", "rlfn_s", "--weights", str(tmp_path / "gone.pth"), "--scale", "4",
                       "--data", "builtin"], monkeypatch, capsys)
    assert str(tmp_path / "gone.pth") in line and "no such" in line


def test_weights_for_another_scale(weight_files, monkeypatch, capsys):
    w = weight_files / "rlfn_s_x4.pth"
    line = _cli_error(["--arch", "rlfn_s", "--weights", str(w), "--scale", "2", "--data", "builtin"],
                      monkeypatch, capsys)
    assert str(w) in line and "wrong shape" in line and "x2" in line


def test_weights_for_another_arch(weight_files, monkeypatch, capsys):
    w = weight_files / "rlfn_s_x4.pth"
    line = _cli_error(["--arch", "imdn", "--weights", str(w), "--scale", "4", "--data", "builtin"],
                      monkeypatch, capsys)
    assert str(w) in line and "missing" in line


def test_data_folder_that_does_not_exist(tmp_path, monkeypatch, capsys):
    line = _cli_error(["--arch", "bicubic", "--scale", "2", "--data", str(tmp_path / "NoSuchSet")],
                      monkeypatch, capsys)
    assert str(tmp_path / "NoSuchSet") in line


def test_scale_5(monkeypatch, capsys):
    line = _cli_error(["--arch", "bicubic", "--scale", "5", "--data", "builtin"], monkeypatch, capsys)
    assert "scale" in line and "5" in line


def test_checkpoint_that_is_a_published_weight_file(weight_files, monkeypatch, capsys):
    w = weight_files / "rlfn_s_x4.pth"
    line = _cli_error(["--checkpoint", str(w), "--data", "builtin"], monkeypatch, capsys)
    assert str(w) in line and "not an srnas checkpoint" in line


def test_checkpoint_scale_disagrees(tmp_path, monkeypatch, capsys):
    path = tmp_path / "c.pt"
    save_checkpoint(path, state_dict=zoo.create("edsr_baseline", 2, n_resblocks=1, n_feats=8).state_dict(),
                    spec=arch_spec("edsr_baseline", 2, n_resblocks=1, n_feats=8))
    line = _cli_error(["--checkpoint", str(path), "--scale", "3", "--data", "builtin"], monkeypatch, capsys)
    assert "--scale 3" in line and "x2" in line


def test_error_through_a_real_process(tmp_path):
    """The same contract from the shell: exit status 2, one stderr line, no traceback."""
    missing = tmp_path / "missing.pth"
    env = {**os.environ, "COLUMNS": "60"}  # a narrow terminal must not wrap the line
    p = subprocess.run([sys.executable, str(REPO / "tools" / "evaluate.py"), "--arch", "rlfn_s", "--weights",
                        str(missing), "--scale", "4", "--data", "builtin"], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 2
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(missing) in lines[0] and "Traceback" not in p.stderr, p.stderr


def test_per_image_table_lists_every_image(capsys):
    assert evaluate_cli.main(["--arch", "bicubic", "--scale", "2", "--data", "builtin", "--per-image"]) == 0
    err = capsys.readouterr().err
    assert "per image" in err and "chelsea" in err and "coffee" in err
