"""Image-space skips (srcore/skip.py): MATLAB bicubic as convs, networks that start at their skip, genotype
schema version 2, the supernet's skip, ONNX export."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from nas.config import SpaceConfig
from nas.supernet import SuperNet
from search_spaces.genotype import load_genotype, save_genotype, validate
from search_spaces.network import build_network
from srcore.imresize import imresize
from srcore.skip import BicubicUpsample, ImageSkip, nearest_anchor
from srcore.yamlio import safe_load


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_skip_is_matlab_imresize(scale):
    """The fixed depthwise conv + pixel shuffle equals srcore.imresize (MATLAB) upscaling, borders included."""
    up = BicubicUpsample(scale)
    assert not list(up.parameters()) and "weight" not in up.state_dict()  # a fixed, non-persistent buffer
    for h, w in [(1, 1), (2, 5), (7, 9), (16, 13)]:
        x = torch.rand(2, 3, h, w)
        torch.testing.assert_close(up(x), imresize(x, float(scale)), atol=1e-5, rtol=0)


def test_nearest_anchor_is_nearest_upscaling():
    x = torch.rand(1, 3, 4, 5)
    y = ImageSkip("nearest", 3)(x, torch.zeros(1, 27, 4, 5))
    torch.testing.assert_close(y, x.repeat_interleave(3, -2).repeat_interleave(3, -1))
    assert nearest_anchor(x, 2).shape == (1, 12, 4, 5)


def small(skip: str, scale: int = 2, version: int = 2):
    raw = {"version": version, "space": "dlsr", "scale": scale, "channels": 8, "num_cells": 3,
           "ops": ["conv_3x3"], "cell": ["conv_3x3"] * 3, "inputs": [[1, 2]], "rgb_range": 1}
    if version == 2:
        raw["skip"] = skip
    return validate(raw)


@pytest.mark.parametrize("skip", ["nearest", "bicubic"])
@pytest.mark.parametrize("scale", [2, 3])
def test_untrained_network_equals_its_skip(skip, scale):
    torch.manual_seed(0)
    net = build_network(small(skip, scale)).eval()
    assert not net.upsampler[0].weight.any() and not net.upsampler[0].bias.any()
    x = torch.rand(2, 3, 24, 20)
    with torch.no_grad():
        want = (x.repeat_interleave(scale, -2).repeat_interleave(scale, -1) if skip == "nearest"
                else imresize(x, float(scale)))
        torch.testing.assert_close(net(x), want, atol=1e-6, rtol=0)
    assert net(x).requires_grad  # and it trains: the zeroed conv still gets gradients
    net(x).sum().backward()
    assert net.upsampler[0].weight.grad.abs().sum() > 0


def test_no_skip_network_is_unchanged():
    """skip: none keeps DLSR's layout and init (the last conv is not zeroed)."""
    net = build_network(small("none"))
    assert net.upsampler[0].weight.abs().sum() > 0 and net.skip.kind == "none"
    assert sorted(build_network(small("bicubic")).state_dict()) == sorted(net.state_dict())  # no skip weights


def test_genotype_version_2_roundtrip_and_version_1_default(tmp_path):
    g1 = small("none", version=1)
    assert g1.skip == "none" and "skip" not in g1.to_dict()
    assert load_genotype("dlsr_x2").skip == "none" and load_genotype("dlsr_x2").version == 1
    g2 = small("bicubic")
    path = save_genotype(g2, tmp_path / "g.yaml")
    assert safe_load(path.read_text(), str(path))["skip"] == "bicubic"
    assert load_genotype(path) == g2
    assert dataclasses.replace(g1, version=2, skip="nearest").to_dict()["skip"] == "nearest"


@pytest.mark.parametrize("change,key", [
    ({"skip": "bilinear"}, "skip"),  # unknown kind
    ({"version": 1, "skip": "bicubic"}, "skip"),  # v1 has no skip
    ({"skip": None}, "skip"),  # v2 requires it (removed below)
    ({"version": 3}, "version"),
])
def test_bad_skip_is_a_one_line_error(change, key):
    raw = small("bicubic").to_dict()
    raw.update(change)
    if raw["skip"] is None:
        del raw["skip"]
    with pytest.raises(ValueError, match=key) as err:
        validate(raw, "g.yaml")
    assert str(err.value).startswith("g.yaml: ") and "\n" not in str(err.value)


def test_supernet_carries_the_skip_and_derives_it():
    space = SpaceConfig(ops=("conv_1x1", "conv_3x3"), num_cells=3, channels=8, scale=2, channels_last=False)
    assert space.skip == "bicubic"  # new genotypes default to the bicubic skip
    net = SuperNet(space).eval()
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(net(x), imresize(x, 2.0), atol=1e-6, rtol=0)
    assert net.genotype().skip == "bicubic" and net.genotype().version == 2
    plain = SuperNet(dataclasses.replace(space, skip="none"))
    assert plain.genotype().skip == "none" and plain.upsampler[0].weight.abs().sum() > 0
    with pytest.raises(ValueError, match="space.skip"):
        dataclasses.replace(space, skip="bilinear")


class SkipOnly(torch.nn.Module):
    """The skip alone (the last conv's output is a function of x so the graph keeps both paths)."""

    def __init__(self, skip: str):
        super().__init__()
        self.skip = ImageSkip(skip, 2)

    def forward(self, x):
        return self.skip(x, 0.1 * x.repeat(1, 4, 1, 1))


def export(model, x, path):
    torch.onnx.export(model, (x,), str(path), input_names=["lq"], dynamic_axes={"lq": {2: "h", 3: "w"}},
                      dynamo=False)
    return path


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("skip", ["nearest", "bicubic"])
def test_skip_exports_to_onnx_as_plain_ops(tmp_path, skip):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    x, x2 = torch.rand(1, 3, 24, 32), torch.rand(1, 3, 21, 19)  # x2: another size through the dynamic axes
    ops = {n.op_type for n in onnx.load(str(export(SkipOnly(skip), x, tmp_path / "s.onnx"))).graph.node}
    assert "DepthToSpace" in ops and not ops & {"Resize", "Upsample", "Loop", "If", "Pad"}, ops
    assert ("Conv" in ops) == (skip == "bicubic")
    torch.manual_seed(0)
    net = build_network(small(skip)).eval()
    with torch.no_grad():
        for p in net.upsampler[0].parameters():
            p.normal_(std=0.01)
        want = net(x2)
    got = ort.InferenceSession(str(export(net, x, tmp_path / "n.onnx"))).run(None, {"lq": x2.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-5, rtol=1e-4)


def test_genotype_plot_shows_the_skip():
    from search_spaces import plot

    nodes = {k: set(plot.network_graph(small(k)).nodes) for k in ("none", "nearest", "bicubic")}
    assert {"bicubic", "addskip"} <= nodes["bicubic"] and "anchor" in nodes["nearest"]
    assert not nodes["none"] & {"bicubic", "addskip", "anchor"}
    assert "skip bicubic" in plot._title(small("bicubic"), "g")
