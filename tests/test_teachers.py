"""Every official checkpoint in ../shared/teachers loads strictly and reproduces its measured Set5 PSNR.

The expected values are the measurements in ../shared/teachers/PROVENANCE.md (same protocol: whole image,
fp32, SR rounded to 8 bits, float Y, crop = scale), read from that file rather than copied here.
"""
from __future__ import annotations

import pytest
import torch
from conftest import require_shared

from distill import zoo
from distill.pretrained import load_pretrained, provenance_psnr
from srcore.checkpoint import CheckpointError, load_strict, read_state_dict
from srcore.data import BenchmarkSet
from srcore.evaluation import evaluate_model

# (file, architecture or "genotype:<name>", scale, how PROVENANCE.md's table row names the figure)
CASES = [
    ("imdn_x2.pth", "imdn", 2), ("imdn_x4.pth", "imdn", 4), ("imdn_aim19_x4.pth", "imdn_aim19", 4),
    ("rfdn_x4.pth", "rfdn", 4), ("rlfn_x2.pth", "rlfn", 2), ("rlfn_x4.pth", "rlfn", 4),
    ("rlfn_s_x2.pth", "rlfn_s", 2), ("rlfn_s_x4.pth", "rlfn_s", 4), ("pan_x2.pth", "pan", 2),
    ("pan_x4.pth", "pan", 4), ("carn_m_x2x3x4.pth", "carn_m", 2), ("carn_m_x2x3x4.pth", "carn_m", 3),
    ("carn_m_x2x3x4.pth", "carn_m", 4), ("a2n_x2.pth", "a2n", 2), ("dlsr_x2.pth", "genotype:dlsr_x2", 2),
    # the NTIRE efficient-SR winners (deployed files; their own PROVENANCE table)
    ("span_ntire24_x4.pth", "span", 4), ("dscf_ntire25_x4.pth", "dscf", 4), ("spanv2_ntire26_x4.pth", "spanv2", 4),
    ("pfdn_ntire23_x4.pth", "pfdn", 4),
]


def build(arch: str, file, scale: int) -> torch.nn.Module:
    if arch.startswith("genotype:"):
        from search_spaces.network import build_network

        model = build_network(arch.split(":", 1)[1])
        load_strict(model, read_state_dict(file), str(file))
        return model.eval()
    return load_pretrained(arch, file, scale)


@pytest.mark.parametrize("file,arch,scale", CASES, ids=[f"{f}-x{s}" for f, _, s in CASES])
def test_teacher_reproduces_provenance_psnr(file, arch, scale):
    path = require_shared("teachers", file)
    expected = provenance_psnr(require_shared("teachers", "PROVENANCE.md").read_text(), file, scale)
    model = build(arch, path, scale).to(memory_format=torch.channels_last)
    res = evaluate_model(model, BenchmarkSet(require_shared("data", "Set5"), scale))
    assert res.n_images == 5
    assert abs(res.psnr_y - expected) <= 0.01, f"{file} x{scale}: {res.psnr_y:.4f} dB vs PROVENANCE {expected}"


# The winners' PROVENANCE table also gives Set14 and B100: Set14 for all four; B100 (100 images, ~10 s of CPU
# each) for SPANV2, the esr study's KD teacher (docs/esr_study.md scores SPAN and SPANV2 on all three sets).
WINNER_SETS = [(f, a, s, d) for f, a, s in CASES if "_ntire2" in f for d in ("Set14", "B100")
               if d == "Set14" or a == "spanv2"]


@pytest.mark.parametrize("file,arch,scale,dataset", WINNER_SETS, ids=[f"{f}-{d}" for f, _, _, d in WINNER_SETS])
def test_winner_reproduces_provenance_psnr_on_set14_and_b100(file, arch, scale, dataset):
    path = require_shared("teachers", file)
    expected = provenance_psnr(require_shared("teachers", "PROVENANCE.md").read_text(), file, scale, dataset)
    res = evaluate_model(build(arch, path, scale), BenchmarkSet(require_shared("data", dataset), scale))
    assert res.n_images == {"Set14": 14, "B100": 100}[dataset]
    assert abs(res.psnr_y - expected) <= 0.01, f"{file} {dataset}: {res.psnr_y:.4f} dB vs PROVENANCE {expected}"


def test_wrong_scale_or_architecture_is_a_clear_error():
    path = require_shared("teachers", "imdn_x4.pth")
    with pytest.raises(CheckpointError, match=r"upsampler\.0\.weight .*wrong shape|wrong shape.*upsampler\.0"):
        load_pretrained("imdn", path, 2)
    with pytest.raises(CheckpointError, match=r"missing: conv_1\.weight.*unexpected: fea_conv\.weight"):
        load_pretrained("rlfn", path, 4)


def test_dlsr_weights_need_their_genotype():
    """The DLSR weights also load into a wrong topology (swapped cell inputs): only the genotype saves them."""
    from search_spaces.genotype import load_genotype
    from search_spaces.network import build_network

    g = load_genotype("dlsr_x2")
    wrong = build_network(type(g)(**{**g.__dict__, "inputs": tuple((b, a) for a, b in g.inputs)}))
    load_strict(wrong, read_state_dict(require_shared("teachers", "dlsr_x2.pth")))  # loads without error...
    res = evaluate_model(wrong.eval(), BenchmarkSet(require_shared("data", "Set5"), 2))
    assert res.psnr_y < 37.0  # ...but scores far below the published 38.04


def test_zoo_names_are_explicit():
    assert {"imdn", "imdn_aim19", "rfdn", "rlfn", "rlfn_s", "pan", "a2n", "carn_m", "carn", "edsr_baseline",
            "rcan", "span", "dscf", "spanv2", "pfdn"} <= set(zoo.list_models())
