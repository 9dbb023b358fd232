"""Tests for the NAS engine: mixed op, supernet, derive, cost term, architect, search loop, CLIs.

(Data-parallel search: tests/test_nas_ddp.py.)"""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import import_tool, texture_images
from torch.func import functional_call

from nas.architect import Architect
from nas.config import ArchConfig, CostConfig, DataConfig, SearchConfig, SpaceConfig
from nas.cost import CostModel, build_cost_table, identity_genotype
from nas.derive import derive_genotype, top_inputs
from nas.loss import hfen, log_filter, sr_loss
from nas.mixed import MixedOp
from nas.report import collapse_report
from nas.search import (
    NonFiniteSearch,
    Search,
    config_from_checkpoint,
    cost_ramp,
    epoch_batches,
    load_search,
    run_search,
    smoothing_noise,
    split_dataset,
    temperature,
)
from nas.select import perturbation_select
from nas.supernet import SuperNet
from nas.timing import step_timing, weight_step_flops
from search_spaces.genotype import load_genotype
from search_spaces.network import DLSRNet
from srcore.checkpoint import CheckpointError, load_file
from srcore.config import ConfigError, load_config
from srcore.cost import count_params
from srcore.data import DataError, PatchDataset

REPO = Path(__file__).resolve().parents[1]
derive_cli = import_tool("derive")
search_cli = import_tool("search")
PRESETS = REPO / "configs" / "search"
TINY_OPS = ("identity", "conv_1x1", "conv_3x3", "sep_conv_3x3")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    """Eight small random-texture RGB images: loads in milliseconds (the presets use builtin:train)."""
    return texture_images(tmp_path_factory.mktemp("images"))


def tiny_space(**kw) -> SpaceConfig:
    """A small space without the image-space skip: with one, the upsampler's conv starts at zero and the
    output ignores alpha at initialisation, which the maths tests here need to move (tests/test_skip.py
    covers the skip)."""
    return SpaceConfig(**{"ops": TINY_OPS, "num_cells": 3, "channels": 8, "scale": 2, "skip": "none", **kw})


def tiny_config(image_dir: Path, **sections) -> SearchConfig:
    cfg = load_config(SearchConfig, "smoke", [f"data.train={image_dir}"], PRESETS)
    for name, values in sections.items():
        setattr(cfg, name, type(getattr(cfg, name))(**{**vars(getattr(cfg, name)), **values}))
    return cfg


# ----------------------------------------------------------------------------------------------------
# mixed op


@pytest.mark.parametrize("fuse", [False, True])
def test_mixed_op_is_the_weighted_sum(fuse):
    torch.manual_seed(0)
    names = ("conv_1x1", "conv_3x3", "sep_conv_3x3", "conv_5x5", "identity", "dil_conv_3x3")
    op = MixedOp(8, names, fuse=fuse).double()
    x = torch.randn(2, 8, 10, 10, dtype=torch.float64)
    w = torch.softmax(torch.randn(len(names), dtype=torch.float64), 0)
    op.weights = w
    expected = sum(w[i] * op.ops[i](x) for i in range(len(names)))
    torch.testing.assert_close(op(x), expected, rtol=1e-10, atol=1e-12)
    if fuse:
        assert op.fused == [0, 1, 3]  # the plain convs


def test_fused_mixed_op_gives_the_same_output_and_gradients():
    torch.manual_seed(0)
    names = ("conv_1x1", "conv_3x3", "conv_5x5", "conv_7x7", "sep_conv_3x3", "sep_conv_7x7", "dil_conv_5x5",
             "identity", "rep_conv_3x3")
    plain = MixedOp(8, names, fuse=False).double()
    fused = copy.deepcopy(plain)
    fused.fuse, fused.fused, fused.unfused = True, [0, 1, 2, 3], [4, 5, 6, 7, 8]
    x = torch.randn(2, 8, 12, 12, dtype=torch.float64)
    results = []
    for op in (plain, fused):
        alpha = torch.linspace(-1, 1, len(names), dtype=torch.float64).requires_grad_()
        op.weights = torch.softmax(alpha, 0)
        y = op(x)
        y.square().mean().backward()
        results.append([y, alpha.grad] + [p.grad for p in op.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_partial_channels_stay_inside_the_op():
    torch.manual_seed(0)
    op = MixedOp(16, ("conv_3x3", "sep_conv_3x3"), partial_channels=4, group=6)  # block 6 % 4 = 2
    assert op.ops[0].op[0].weight.shape == (4, 4, 3, 3)  # ops are built at C/K channels
    x = torch.randn(2, 16, 6, 6)
    op.weights = torch.tensor([0.5, 0.5])
    y = op(x)
    assert y.shape == x.shape
    assert torch.equal(y[:, :8], torch.zeros_like(y[:, :8])) and torch.equal(y[:, 12:], torch.zeros_like(y[:, 12:]))
    torch.testing.assert_close(y[:, 8:12], op.mix(x[:, 8:12], op.weights))  # channels 8..11 in, 8..11 out


def _embed(partial: torch.Tensor, channels: int, block: int) -> torch.Tensor:
    """A full C x C kernel equal to `partial` on channel block `block` and zero elsewhere."""
    c = partial.shape[0]
    full = torch.zeros(channels, channels, *partial.shape[2:], dtype=partial.dtype)
    full[block * c:(block + 1) * c, block * c:(block + 1) * c] = partial
    return full


def test_partial_channels_supernet_computes_the_derived_topology():
    """K = 4, one op, two-hot betas: the supernet is exactly the derived network whose stage convs hold the
    partial kernel on their block (the residual adds every channel to itself, the links read the kept cells)."""
    torch.manual_seed(0)
    c, n, k = 8, 4, 4
    net = SuperNet(SpaceConfig(ops=("conv_3x3",), num_cells=n, channels=c, partial_channels=k)).double()
    with torch.no_grad():
        for b in net.betas:  # cell j + 3 reads its two latest predecessors, softmax weight 1/2 each
            b.fill_(-1e4)
            b[-2:] = 0.0
    g = net.genotype()
    assert g.inputs == ((1, 2), (2, 3))
    derived = DLSRNet(g).double()
    sd = {}
    for name, v in net.state_dict().items():
        if name.startswith("cells."):
            _, cell, rest = name.split(".", 2)
            if ".ops.0." in rest:  # stage s of cell `cell` sees block (3 * cell + s) % K
                stage = int(rest[1]) - 1
                v, rest = _embed(v, c, (3 * int(cell) + stage) % k), rest.replace(".ops.0.", ".")
            sd[f"B{int(cell) + 1}.{rest}"] = v
        elif name.startswith("links."):
            _, j, rest = name.split(".", 2)
            if rest.endswith("weight"):
                kept = g.inputs[int(j)]
                v = torch.cat([v[:, (i - 1) * c:i * c] for i in kept], dim=1) * 0.5
            sd[f"c{int(j) + 3}.{rest}"] = v
        elif not name.startswith(("alphas", "betas")):
            sd[name] = v
    derived.load_state_dict(sd, strict=True)
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(net(x), derived(x), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------------
# supernet


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_supernet_shapes(scale):
    net = SuperNet(tiny_space(scale=scale, num_cells=4))
    assert net(torch.rand(2, 3, 16, 17)).shape == (2, 3, 16 * scale, 17 * scale)  # ESA needs >= 15


@pytest.mark.parametrize("shared", [True, False])
def test_arch_and_weight_parameters_are_disjoint_nn_parameters(shared):
    net = SuperNet(tiny_space(num_cells=5, shared_alphas=shared))
    arch, weights = net.arch_parameters(), net.weight_parameters()
    assert all(isinstance(p, torch.nn.Parameter) for p in arch)
    ids_a, ids_w = {id(p) for p in arch}, {id(p) for p in weights}
    assert not ids_a & ids_w and ids_a | ids_w == {id(p) for p in net.parameters()}
    assert net.alphas.shape == ((3, 4) if shared else (5, 3, 4))
    assert [b.shape[0] for b in net.betas] == [2, 3, 4]
    sd = net.state_dict()
    assert "alphas" in sd and "betas.2" in sd


def test_beta_folding_equals_scaled_concat():
    torch.manual_seed(0)
    net = SuperNet(tiny_space(num_cells=4)).double()
    with torch.no_grad():
        net.betas[1].copy_(torch.tensor([0.3, -1.0, 2.0]))
    outs = [torch.randn(1, 8, 5, 5, dtype=torch.float64) for _ in range(3)]
    b = torch.softmax(net.betas[1], 0)
    expected = net.links[1](torch.cat([b[j] * o for j, o in enumerate(outs)], 1))
    torch.testing.assert_close(net.link(3, outs), expected)


# ----------------------------------------------------------------------------------------------------
# derive


def test_derive_top_k_and_rules():
    space = tiny_space(num_cells=5)
    alphas = torch.tensor([[0.0, 1.0, 0.5, 0.2],   # conv_1x1
                           [3.0, 0.0, 0.0, 2.0],   # identity (or sep_conv_3x3 when excluded)
                           [0.1, 0.1, 0.1, 0.1]])  # tie: the first op
    betas = [torch.tensor([0.0, 1.0]), torch.tensor([2.0, -1.0, 1.0]), torch.tensor([0.0, 0.5, 0.5, 3.0])]
    g = derive_genotype(alphas, betas, space)
    assert g.cell == ("conv_1x1", "identity", "identity")
    assert g.inputs == ((1, 2), (1, 3), (2, 4))  # ties between cells 2 and 3 go to the earlier cell
    g2 = derive_genotype(alphas, betas, space, exclude=("identity",))
    assert g2.cell == ("conv_1x1", "sep_conv_3x3", "conv_1x1")
    assert top_inputs(torch.tensor([5.0, 4.0, 9.0])) == (1, 3)
    assert derive_genotype(alphas, betas, tiny_space(num_cells=5, rgb_range=255.0)).rgb_range == 255.0
    with pytest.raises(ValueError, match="alphas"):
        derive_genotype(alphas[:2], betas, space)


def test_perturbation_selection_keeps_what_the_supernet_needs_most():
    """Selection by perturbation keeps, per edge, the op whose removal raises the measured loss most (not
    the largest alpha), discretizes edges one by one and keeps the two links whose removal hurts most."""
    net = SuperNet(tiny_space(num_cells=4))
    with torch.no_grad():
        net.alphas.copy_(torch.tensor([[3.0, 0, 0, 0]] * 3))  # argmax would take identity everywhere
    needed = {0: 2, 1: 3, 2: 1}  # edge -> the op the "validation loss" depends on
    seen = []

    def measure() -> float:
        w = net.op_weights().detach()
        seen.append(w.clone())
        loss = -sum(float(w[e, i]) for e, i in needed.items())
        if net.beta_override is not None:  # cell 3 needs cell 1, cell 4 needs cells 1 and 3
            loss -= float(net.beta_override[0][0]) + float(net.beta_override[1][0] + net.beta_override[1][2])
        return loss

    ops, inputs, record = perturbation_select(net, measure, exclude=("conv_1x1",))
    assert ops == ["conv_3x3", "sep_conv_3x3", "identity"]  # edge 2: conv_1x1 is excluded
    assert inputs == [(1, 2), (1, 3)]
    assert net.weight_override is None and net.beta_override is None
    assert record["edges"][0]["loss_increase"]["conv_3x3"] > record["edges"][0]["loss_increase"]["identity"]
    assert torch.equal(seen[-1], torch.eye(4)[[2, 3, 0]])  # every edge one-hot at the end


def test_derive_per_cell_and_supernet_delegation():
    torch.manual_seed(1)
    net = SuperNet(tiny_space(num_cells=4, shared_alphas=False))
    g = net.genotype()
    assert g.cell is None and len(g.cells) == 4
    for k in range(4):
        assert g.cells[k] == tuple(TINY_OPS[int(i)] for i in net.alphas[k].argmax(-1))
    assert DLSRNet(g)(torch.rand(1, 3, 16, 16)).shape == (1, 3, 32, 32)


# ----------------------------------------------------------------------------------------------------
# cost


def test_cost_tables_count_the_derived_network():
    space = tiny_space(num_cells=4)
    table = build_cost_table(space, CostConfig(kind="params", weight=1.0, target=1.0))
    model = CostModel(table, space, CostConfig(kind="params", weight=1.0, target=1.0))
    g = derive_genotype(torch.tensor([[0.0, 0, 9, 0], [0.0, 9, 0, 0], [0.0, 0, 0, 9]]),
                        [torch.zeros(2), torch.zeros(3)], space)
    assert model.derived_cost([g.cell] * 4) == count_params(DLSRNet(g))
    one_hot = torch.full((3, 4), -1e4)
    one_hot[0, 2] = one_hot[1, 1] = one_hot[2, 3] = 0.0
    assert float(model.expected(one_hot)) == pytest.approx(count_params(DLSRNet(g)))
    macs = build_cost_table(space, CostConfig(kind="macs", weight=1.0, target=1.0, input_size=(16, 16)))
    assert macs.ops["identity"] == 0 and macs.ops["conv_3x3"] == 16 * 16 * 9 * 64
    assert table.fixed == count_params(DLSRNet(identity_genotype(space)))


def test_cost_gradient_is_nonzero_and_matches_finite_differences():
    space = tiny_space(num_cells=3, shared_alphas=False)
    cfg = CostConfig(kind="params", weight=0.5, target=3000.0)  # the hinge is active: E > 4228 > target
    model = CostModel(build_cost_table(space, cfg), space, cfg)
    alphas = torch.randn(3, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()
    (grad,) = torch.autograd.grad(model.penalty(alphas), alphas)
    assert grad.abs().sum() > 0
    eps = 1e-6
    for idx in [(0, 0, 0), (1, 2, 3), (2, 1, 2)]:
        a_p, a_n = alphas.detach().clone(), alphas.detach().clone()
        a_p[idx] += eps
        a_n[idx] -= eps
        fd = (model.penalty(a_p) - model.penalty(a_n)) / (2 * eps)
        assert float(grad[idx]) == pytest.approx(float(fd), rel=1e-6, abs=1e-12)
    hinge = CostModel(model.table, space, CostConfig(kind="params", weight=0.5, target=1e9, mode="hinge"))
    assert float(hinge.penalty(alphas.detach())) == 0.0  # far below the target: no pressure
    two = CostModel(model.table, space, CostConfig(kind="params", weight=0.5, target=1e9, mode="two_sided"))
    e = float(two.expected(alphas.detach()))
    assert float(two.penalty(alphas.detach(), ramp=0.5)) == pytest.approx(0.25 * (1 - e / 1e9))  # pushes up
    sharp = model.expected(alphas.detach(), tau=1e-4)  # a low temperature: the cost of the argmax network
    g = derive_genotype(alphas.detach(), [torch.zeros(2)], space)
    assert float(sharp) == pytest.approx(model.derived_cost(g.cells), rel=1e-6)
    with pytest.raises(ValueError, match="cost.target"):
        CostConfig(kind="params", weight=1.0)


def test_latency_table_is_measured_and_keeps_the_rng():
    space = tiny_space()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    table = build_cost_table(space, CostConfig(kind="latency", weight=1.0, target=1.0, input_size=(16, 16),
                                               latency_repeats=1))
    assert torch.equal(torch.get_rng_state(), before)
    assert table.unit == "ms" and table.fixed > 0 and all(v >= 0 for v in table.ops.values())
    assert set(table.ops) == set(TINY_OPS) and table.device == "cpu"


# ----------------------------------------------------------------------------------------------------
# architect


def _tiny_problem(algorithm: str):
    torch.manual_seed(0)
    net = SuperNet(tiny_space(channels=4, ops=("conv_1x1", "conv_3x3", "sep_conv_3x3"), channels_last=False)).double()
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_(0, 0.5)

    def loss_fn(model, batch):
        return sr_loss(model(batch["lq"]), batch["gt"], 0.1)

    g = torch.Generator().manual_seed(1)
    train = {"lq": torch.rand(2, 3, 16, 16, generator=g, dtype=torch.float64),
             "gt": torch.rand(2, 3, 32, 32, generator=g, dtype=torch.float64)}
    val = {"lq": torch.rand(2, 3, 16, 16, generator=g, dtype=torch.float64),
           "gt": torch.rand(2, 3, 32, 32, generator=g, dtype=torch.float64)}
    arch = Architect(net, ArchConfig(algorithm=algorithm, unrolled_lr=0.05), loss_fn)
    return net, loss_fn, train, val, arch


def test_second_order_hypergradient_matches_exact_autograd():
    net, loss_fn, train, val, arch = _tiny_problem("second_order")
    xi, wd = 0.05, 1e-3  # arch.unrolled_lr = xi: DARTS's plain SGD virtual step
    names = [n for n, p in net.named_parameters() if not n.startswith(("alphas", "betas"))]
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    approx, _ = arch.unrolled_gradient(train, val, 0.0, wd, r=1e-5)  # float64: a small r is exact
    for n, p in net.named_parameters():  # the weights are restored bit for bit
        assert torch.equal(p, before[n]), n

    params = dict(net.named_parameters())
    w = [params[n] for n in names]
    lt = sr_loss(functional_call(net, params, (train["lq"],)), train["gt"], 0.1)
    dw = torch.autograd.grad(lt, w, create_graph=True)
    unrolled = {**params, **{n: p - xi * (g + wd * p) for n, p, g in zip(names, w, dw)}}
    lv = sr_loss(functional_call(net, unrolled, (val["lq"],)), val["gt"], 0.1)
    exact = torch.autograd.grad(lv, net.arch_parameters())
    fixed = {**params, **{n: p.detach() for n, p in unrolled.items() if n in names}}
    first = torch.autograd.grad(sr_loss(functional_call(net, fixed, (val["lq"],)), val["gt"], 0.1),
                                net.arch_parameters())  # dL_v(w', a)/da alone, without the implicit term

    def rel(xs, ys):
        return float(torch.sqrt(sum(((x - y) ** 2).sum() for x, y in zip(xs, ys))) /
                     torch.sqrt(sum((y ** 2).sum() for y in ys)))

    assert rel(approx, exact) < 1e-7, rel(approx, exact)
    assert rel(first, exact) > 100 * rel(approx, exact)  # the second-order term is really there


def test_second_order_correction_is_the_size_of_the_real_adam_step():
    """Through the weight optimizer's own step (the default), the hypergradient is the derivative of
    alpha -> L_v(w after one real torch Adam step on L_t(w, alpha), alpha), correction term included;
    xi = Adam's learning rate (the old default) gets the correction wrong."""
    net, loss_fn, train, val, _ = _tiny_problem("second_order")
    lr = 1e-2
    opt = torch.optim.Adam(net.weight_parameters(), lr=lr)
    for _ in range(5):  # Adam with some history: moments and bias corrections in play
        opt.zero_grad()
        loss_fn(net, train).backward(inputs=net.weight_parameters())
        opt.step()
    arch = Architect(net, ArchConfig(algorithm="second_order"), loss_fn, weight_optimizer=opt)
    hyper, _ = arch.unrolled_gradient(train, val, lr, 0.0, r=1e-6)
    u = [torch.randn(a.shape, generator=torch.Generator().manual_seed(5), dtype=a.dtype)
         for a in net.arch_parameters()]

    def dot(xs):
        return float(sum((x * y).sum() for x, y in zip(xs, u)))

    def after_real_step(h: float):
        box = copy.deepcopy({"net": net, "opt": opt})
        n, o = box["net"], box["opt"]
        with torch.no_grad():
            for a, d in zip(n.arch_parameters(), u):
                a.add_(h * d)
        o.zero_grad()
        loss_fn(n, train).backward(inputs=n.weight_parameters())
        o.step()
        return n

    h = 1e-5
    total = (loss_fn(after_real_step(h), val).item() - loss_fn(after_real_step(-h), val).item()) / (2 * h)
    n0 = after_real_step(0.0)
    first = dot(torch.autograd.grad(loss_fn(n0, val), n0.arch_parameters()))  # dL_v(w', a)/da alone
    correction, expected = dot(hyper) - first, total - first
    assert abs(expected) > 0.1 * abs(first)  # the unrolled term matters here
    assert correction == pytest.approx(expected, rel=1e-4)
    arch.cfg = ArchConfig(algorithm="second_order", unrolled_lr=lr)  # xi = Adam's lr: the wrong size
    old, _ = arch.unrolled_gradient(train, val, lr, 0.0, r=1e-6)
    assert abs(dot(old) - first - expected) > 0.2 * abs(expected)


def test_first_order_and_dlsr_gradients():
    net, loss_fn, train, val, arch = _tiny_problem("first_order")
    g_val = torch.autograd.grad(loss_fn(net, val), net.arch_parameters())
    g_train = torch.autograd.grad(loss_fn(net, train), net.arch_parameters())
    fo, _ = arch.gradient(train, val)
    for a, b in zip(fo, g_val):
        torch.testing.assert_close(a, b)
    arch.cfg = ArchConfig(algorithm="dlsr_exact")  # re-runs the training batch
    dl, _ = arch.gradient(train, val)
    for a, b, c in zip(dl, g_val, g_train):
        torch.testing.assert_close(a, b + c)
    arch.cfg = ArchConfig(algorithm="dlsr_reuse")  # takes the weight step's alpha gradient instead
    dl2, _ = arch.gradient(train, val, train_grads=[2 * g for g in g_train])
    for a, b, c in zip(dl2, g_val, g_train):
        torch.testing.assert_close(a, b + 2 * c)
    weights = [p.detach().clone() for p in net.weight_parameters()]
    arch.step(train, val)
    assert all(torch.equal(p, w) for p, w in zip(net.weight_parameters(), weights))  # only alphas move
    assert all(p.grad is None for p in net.weight_parameters())


def test_hfen_loss():
    x = torch.rand(2, 3, 16, 16)
    assert float(hfen(x, x)) == 0.0
    assert float(sr_loss(x, x.flip(-1), 0.2)) > float(sr_loss(x, x.flip(-1)))


def test_hfen_dlsr_mode_and_range():
    """DLSR's HFEN: one LoG response of the RGB sum, divided by the signed max; range-free, so DLSR's
    L1 + 0.2 HFEN on [0, 255] is 255 (L1 + 0.2 / 255 HFEN) on [0, 1]."""
    g = torch.Generator().manual_seed(0)
    sr, gt = torch.rand(2, 3, 20, 20, generator=g, dtype=torch.float64), torch.rand(2, 3, 20, 20, generator=g,
                                                                                  dtype=torch.float64)
    a, b = log_filter(sr, True), log_filter(gt, True)
    assert a.shape == (2, 1, 16, 16)
    torch.testing.assert_close(a, log_filter(sr).sum(1, keepdim=True))  # the Laplacian of the channel sum
    torch.testing.assert_close(hfen(sr, gt, "dlsr"), (a / a.max() - b / b.max()).abs().mean())
    assert float(hfen(sr, gt, "dlsr")) != pytest.approx(float(hfen(sr, gt)))
    for mode in ("dlsr", "per_channel"):
        torch.testing.assert_close(hfen(255 * sr, 255 * gt, mode), hfen(sr, gt, mode))
        dlsr_255 = torch.nn.functional.l1_loss(255 * sr, 255 * gt) + 0.2 * hfen(255 * sr, 255 * gt, mode)
        torch.testing.assert_close(dlsr_255, 255 * sr_loss(sr, gt, 0.2 / 255, mode))


def test_scale_free_mixture_and_links_ignore_weight_scale():
    """space.scale_free: scaling an op's (or a link edge's) kernel leaves the supernet unchanged, so alpha and
    beta cannot be absorbed by the weights they scale; the derived network has no such rescaling."""
    torch.manual_seed(0)
    net = SuperNet(tiny_space(num_cells=4, scale_free=True, channels_last=False)).double()
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    y = net(x)
    with torch.no_grad():
        net.cells[1].c2_r.ops[2].op[0].weight.mul_(7.0)  # conv_3x3 of cell 2, stage 2
        net.links[1][0].weight[:, 8:16].mul_(0.1)  # cell 4's edge from cell 2
    torch.testing.assert_close(net(x), y)
    plain = SuperNet(tiny_space(num_cells=4, channels_last=False)).double()
    plain.load_state_dict(net.state_dict())
    assert not torch.allclose(plain(x), y)  # without scale_free the same weights compute something else
    assert DLSRNet(net.genotype())  # derive builds the plain network


# ----------------------------------------------------------------------------------------------------
# configs and data


def test_presets_load_strictly(tmp_path):
    for name in ("smoke", "quickstart", "dlsr", "dlsr_robust"):
        cfg = load_config(SearchConfig, name, [], PRESETS)
        assert isinstance(cfg, SearchConfig)
    with pytest.raises(ConfigError, match="arch.lrr"):
        load_config(SearchConfig, "smoke", ["arch.lrr=1"], PRESETS)
    with pytest.raises(ConfigError, match="unknown op"):
        load_config(SearchConfig, "smoke", ["space.ops=[conv_9x9]"], PRESETS)
    with pytest.raises(ConfigError, match="partial_channels"):
        load_config(SearchConfig, "smoke", ["space.partial_channels=3"], PRESETS)
    with pytest.raises(ConfigError, match="cost.target"):
        load_config(SearchConfig, "smoke", ["cost.target=null"], PRESETS)


def test_dlsr_preset_is_dlsr_released_search():
    """configs/search/dlsr.yaml against DLSR's search/RFDN6_para_loss.py + scripts/RFDN_beta_NAS.sh (the table
    in docs/dlsr_settings.md): no cost term (DLSR's is a constant), ~21 passes per epoch, HFEN at 0.2 / 255."""
    d = load_config(SearchConfig, "dlsr", [], PRESETS)
    assert d.cost.kind == "none"
    assert d.loss.hfen_weight == pytest.approx(0.2 / 255, rel=1e-6) and d.loss.hfen_mode == "dlsr"
    assert d.data.repeat == 64 * 1000 // 3000 == 21  # batch x test_every / n_images
    train_images = d.data.train_range[1] - d.data.train_range[0] + 1
    assert (d.data.train_range, d.data.val_range, train_images) == ((1, 3000), (3000, 3450), 3000)
    assert train_images * d.data.repeat // d.data.batch_size == 984  # full batches per epoch (DLSR: 985, one partial)
    assert (d.space.num_cells, d.space.channels, d.space.rgb_range, d.data.batch_size, d.data.gt_size) == \
        (6, 48, 255.0, 64, 64)
    assert (d.optim.lr, d.optim.adam_betas, d.optim.weight_decay, d.optim.milestones, d.optim.gamma) == \
        (5e-4, (0.9, 0.999), 1e-8, (200, 400, 600), 0.5)
    assert (d.arch.algorithm, d.arch.lr, d.arch.adam_betas, d.arch.weight_decay) == \
        ("dlsr_exact", 3e-4, (0.5, 0.999), 1e-8)
    assert (d.arch.warmup_epochs, d.arch.tau_start, d.arch.tau_end, d.arch.smoothing) == (21, 1.0, 1.0, 0.0)
    assert (d.data.val_sampling, d.loop.epochs, d.loop.seed, d.space.scale_free) == ("replacement", 1000, 9, False)
    robust = load_config(SearchConfig, "dlsr_robust", [], PRESETS)
    assert robust.cost.kind == "params" and robust.cost.mode == "hinge" and robust.cost.target > 0


def test_split_is_disjoint_and_batches_are_seeded(image_dir):
    ds = PatchDataset(image_dir, 2, 16, seed=0)
    train, val = split_dataset(ds, 0.25, seed=0)
    assert len(train.names) == 6 and len(val.names) == 2 and not set(train.names) & set(val.names)
    assert epoch_batches(10, 3, 0, 1) == epoch_batches(10, 3, 0, 1) != epoch_batches(10, 3, 0, 2)
    assert all(len(b) == 3 for b in epoch_batches(10, 3, 0, 1))
    train, val = split_dataset(ds, 0.25, 0, train_range=(1, 6), val_range=(6, 8))  # DLSR's style, overlapping
    assert train.names == ds.names[:6] and val.names == ds.names[5:]
    with pytest.raises(DataError, match="data.val_range"):
        split_dataset(ds, 0.25, 0, train_range=(1, 6), val_range=(6, 9))


def test_schedules_are_pure_functions_of_the_step(image_dir):
    cfg = tiny_config(image_dir, arch={"warmup_epochs": 2, "tau_start": 1.0, "tau_end": 0.1, "smoothing": 0.03},
                      cost={"ramp_epochs": 2.0})
    bpe, total = 10, 101  # warm-up ends at step 20, the ramp at step 40, the last step is 100
    assert temperature(cfg, 0, bpe, total) == temperature(cfg, 20, bpe, total) == 1.0
    assert temperature(cfg, 100, bpe, total) == pytest.approx(0.1)
    assert temperature(cfg, 60, bpe, total) == pytest.approx(0.1 ** 0.5)  # geometric
    assert [cost_ramp(cfg, s, bpe) for s in (0, 19, 20, 29, 39, 80)] == [0.0, 0.0, 0.05, 0.5, 1.0, 1.0]
    a, b = smoothing_noise(cfg, 7, torch.Size([3, 4])), smoothing_noise(cfg, 7, torch.Size([3, 4]))
    assert torch.equal(a, b) and not torch.equal(a, smoothing_noise(cfg, 8, torch.Size([3, 4])))
    assert float(a.abs().max()) <= 0.03


def test_validation_batches_with_replacement_are_seeded(image_dir, tmp_path):
    cfg = tiny_config(image_dir, data={"val_sampling": "replacement", "batch_size": 4, "repeat": 2})
    s1, s2 = Search(cfg, tmp_path / "a"), Search(cfg, tmp_path / "b")
    draws = [s1.next_val_batch()["gt"] for _ in range(3)]
    assert all(torch.equal(x, s2.next_val_batch()["gt"]) for x in draws)
    assert s1.pos.val_batch == 3 and not torch.equal(draws[0], draws[1])


# ----------------------------------------------------------------------------------------------------
# the search loop


def _final_state(out: Path) -> dict:
    return load_file(out / "checkpoint.pt")["state_dict"]


def test_resume_is_bit_identical(image_dir, tmp_path):
    """Stops between two log lines (steps 11, 16 with lines every 4 steps): the loss and arch-gradient windows
    behind the next line are restored, so history and metrics match too; tau anneals and the cost ramps."""
    cfg = tiny_config(image_dir, loop={"epochs": 4, "checkpoint_every": 3, "log_every": 4, "eval_every": 2},
                      data={"repeat": 2, "batch_size": 2}, arch={"warmup_epochs": 1, "tau_end": 0.3})
    # 6 steps per epoch, 24 steps, 18 arch steps
    full = run_search(cfg, tmp_path / "full")
    assert full.status == "finished" and full.step == 24

    half = run_search(cfg, tmp_path / "split", stop_at=11)
    assert half.status == "stopped" and half.step == 11
    assert not (tmp_path / "split" / "genotype.yaml").exists()

    def interrupt(event, info):  # Ctrl-C at step 14: the loop stops at the step boundary and saves
        if event == "eval" and info["step"] == 14:
            os.kill(os.getpid(), signal.SIGINT)

    again = run_search(cfg, tmp_path / "split", resume=True, callback=interrupt)
    assert again.status == "interrupted" and again.step == 14
    done = run_search(cfg, tmp_path / "split", resume=True)
    assert done.status == "finished" and done.step == 24

    a, b = _final_state(tmp_path / "full"), _final_state(tmp_path / "split")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    history = (tmp_path / "full" / "alpha_history.jsonl").read_text()
    assert history == (tmp_path / "split" / "alpha_history.jsonl").read_text()
    lines = [json.loads(x) for x in history.splitlines()]
    assert [e["arch_steps"] for e in lines] == [0, 2, 4, 4, 4, 4] and lines[-1]["tau"] == pytest.approx(0.3)
    assert load_file(tmp_path / "full" / "checkpoint.pt")["metrics"] == \
        load_file(tmp_path / "split" / "checkpoint.pt")["metrics"]
    assert (tmp_path / "full" / "genotype.yaml").read_text() == (tmp_path / "split" / "genotype.yaml").read_text()
    ckpt = load_file(tmp_path / "full" / "checkpoint.pt")
    assert ckpt["genotype"] == load_genotype(tmp_path / "full" / "genotype.yaml").to_dict()


def _poison(tensor: torch.Tensor) -> None:
    with torch.no_grad():
        tensor[(0,) * tensor.dim()] = float("nan")


def test_non_finite_search_stops_and_keeps_the_last_good_checkpoint(image_dir, tmp_path):
    cfg = tiny_config(image_dir, loop={"log_every": 1, "checkpoint_every": 2, "eval_every": 0},
                      data={"repeat": 2})
    search = Search(cfg, tmp_path / "run")
    search.callback = lambda e, i: _poison(search.model.alphas) if e == "step" and i["step"] == 3 else None
    with pytest.raises(NonFiniteSearch, match=r"^non-finite values at step 4: loss = nan, tensor alphas \(3, 4\) "
                       r"holds 1 NaN and 0 Inf values of 12; .*checkpoint\.pt \(step 2\) is the last good"):
        search.run()
    ckpt = load_file(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["step"] == 2 and all(bool(torch.isfinite(t).all()) for t in ckpt["state_dict"].values())
    assert not (tmp_path / "run" / "genotype.yaml").exists()
    # a weight poisoned between the step's check and its checkpoint: refused before writing
    search = Search(cfg, tmp_path / "run2")
    weight = next(n for n, _ in search.model.named_parameters() if n not in ("alphas", "betas.0"))
    search.callback = lambda e, i: _poison(search.model.get_parameter(weight)) if e == "step" and i["step"] == 4 \
        else None
    with pytest.raises(NonFiniteSearch, match=rf"step 4: tensor {weight} .* holds 1 NaN.*; not saved; .*\(step 2\)"):
        search.run()
    assert load_file(tmp_path / "run2" / "checkpoint.pt")["step"] == 2
    # no genotype from non-finite alphas: the library and tools/derive.py name the file
    bad = load_file(tmp_path / "run" / "checkpoint.pt")
    bad["state_dict"]["betas.0"][1] = float("inf")
    (tmp_path / "bad").mkdir()
    torch.save(bad, tmp_path / "bad" / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"bad/checkpoint\.pt: tensor betas\.0 \(2,\) holds 0 NaN and 1 Inf"):
        derive_cli.main([str(tmp_path / "bad"), "--out", str(tmp_path / "g.yaml")])
    with pytest.raises(ValueError, match=r"checkpoint\.pt: tensor betas\.0 .* no genotype"):
        load_search(tmp_path / "bad", cfg).derive()
    assert not (tmp_path / "g.yaml").exists()


def test_history_and_checkpoint_contents(image_dir, tmp_path):
    cfg = tiny_config(image_dir, arch={"warmup_epochs": 0})
    res = run_search(cfg, tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / "alpha_history.jsonl").read_text().splitlines()]
    assert [e["step"] for e in lines] == list(range(1, res.total_steps + 1))
    assert set(lines[0]) == {"step", "epoch", "ops", "alpha", "beta", "tau", "cost_ramp", "arch_steps",
                             "grad_alpha_loss", "grad_alpha_cost", "grad_beta_loss", "expected_cost"}
    assert lines[0]["ops"] == list(cfg.space.ops) and lines[0]["arch_steps"] == 1
    assert np.array(lines[0]["grad_alpha_loss"]).shape == np.array(lines[0]["grad_alpha_cost"]).shape == (3, 4)
    assert [len(b) for b in lines[0]["grad_beta_loss"]] == [2]
    assert np.abs(lines[-1]["grad_alpha_loss"]).sum() > 0 and lines[-1]["tau"] == pytest.approx(0.5)
    ckpt = load_file(tmp_path / "run" / "checkpoint.pt")
    assert lines[-1]["alpha"] == ckpt["state_dict"]["alphas"].double().tolist()  # full precision
    assert lines[-1]["beta"] == [ckpt["state_dict"]["betas.0"].double().tolist()]
    assert lines[0]["alpha"] != lines[-1]["alpha"]  # the arch steps moved the alphas
    assert config_from_checkpoint(tmp_path / "run" / "checkpoint.pt") == cfg
    with pytest.raises(CheckpointError, match="already holds a search"):
        run_search(cfg, tmp_path / "run")
    other = tiny_config(image_dir, arch={"warmup_epochs": 0, "lr": 0.5})
    with pytest.raises(CheckpointError, match="arch.lr = 0.5 differs"):
        run_search(other, tmp_path / "run", resume=True)
    report = json.loads((tmp_path / "run" / "collapse_report.json").read_text())
    assert report == res.report and report["method"] == "argmax" and len(report["edges"]) == 3
    assert [e["op"] for e in report["edges"]] == list(res.genotype.cell)
    cost = report["derived_cost"]  # the params table's cost of the derived network is its parameter count
    assert cost["value"] == count_params(DLSRNet(res.genotype)) and cost["unit"] == "params"
    assert cost["target"] == cfg.cost.target and cost["ratio_to_target"] == pytest.approx(cost["value"] / 6000)


def test_cost_gradient_is_logged_apart_from_the_loss_gradient(image_dir, tmp_path):
    """grad_alpha_cost is d(penalty)/d(alpha) at the logged step (one arch step per line, ramp 1, tau 1)."""
    cfg = tiny_config(image_dir, arch={"warmup_epochs": 0, "tau_end": 1.0},
                      cost={"ramp_epochs": 0.0, "target": 1000.0, "weight": 0.3})
    search = Search(cfg, tmp_path / "run")
    before = []
    search.callback = lambda e, i: before.append(search.model.alphas.detach().clone()) if e == "start" else None
    search.run(stop_at=1)
    line = json.loads((tmp_path / "run" / "alpha_history.jsonl").read_text().splitlines()[0])
    a = before[0].double().requires_grad_()
    (expected,) = torch.autograd.grad(search.cost_model.penalty(a), a)
    torch.testing.assert_close(torch.tensor(line["grad_alpha_cost"], dtype=torch.float64), expected, rtol=1e-5,
                               atol=1e-9)


def test_collapse_report():
    space = tiny_space()  # identity, conv_1x1, conv_3x3, sep_conv_3x3
    params = {"identity": 0.0, "conv_1x1": 64.0, "conv_3x3": 576.0, "sep_conv_3x3": 272.0}
    betas = [torch.zeros(2)]

    def report(logits, **kw):
        return collapse_report(torch.softmax(torch.tensor(logits), -1), betas, space, params, params, **kw)

    collapsed = report([[5.0, 0.0, 0.0, 0.0]] * 3)
    assert collapsed["degenerate"] and collapsed["decided"]
    assert any("cheapest op (identity)" in w for w in collapsed["warnings"])
    assert any("parameter-free" in w for w in collapsed["warnings"])
    coin = report([[0.0, 0.0, 0.05, 0.0]] * 3)  # the same op everywhere, by a hair
    assert coin["degenerate"] and not coin["decided"] and coin["summary"]["undecided"] == 3
    assert "coin toss" in coin["verdict"] and coin["edges"][0]["entropy"] > 0.99
    good = report([[0.0, 4.0, 0.0, 0.0], [0.0, 0.0, 4.0, 0.0], [0.0, 0.0, 0.0, 4.0]])
    assert not good["degenerate"] and good["decided"] and good["verdict"] == "decided and not degenerate"
    assert good["summary"]["distinct_ops"] == 3 and good["summary"]["share_cheapest"] == 0.0
    e = good["edges"][0]
    assert e["op"] == "conv_1x1" and e["margin"] == pytest.approx(e["p_top"] - e["p_second"]) and e["p_top"] > 0.9
    same = report([[0.0, 4.0, 0.0, 0.0]] * 3)  # one op everywhere, decided, not the cheapest: allowed
    assert not same["degenerate"] and same["decided"]
    assert report([[0.0, 4.0, 0.0, 0.0]] * 3, decided_prob=0.99)["summary"]["undecided"] == 3
    four = SpaceConfig(ops=space.ops, num_cells=4, channels=8)  # cell 4 keeps two of three inputs
    links = [torch.zeros(2), torch.log(torch.tensor([0.5, 0.3, 0.2]))]
    rep = collapse_report(torch.eye(4)[[1, 2, 3]], links, four, params, params)
    assert rep["links"][1]["inputs"] == [1, 2] and rep["links"][1]["margin"] == pytest.approx(0.1)
    assert not rep["links"][1]["decided"] and not rep["decided"] and rep["summary"]["undecided_links"] == 1
    links[1] = torch.log(torch.tensor([0.5, 0.4, 0.1]))
    assert collapse_report(torch.eye(4)[[1, 2, 3]], links, four, params, params)["decided"]


def test_collapse_guard_stops_a_search(image_dir, tmp_path):
    cfg = tiny_config(image_dir, loop={"collapse_action": "stop"})
    events = []
    search = Search(cfg, tmp_path / "run", callback=lambda e, i: events.append((e, i)))
    with torch.no_grad():
        search.model.alphas.zero_()
        search.model.alphas[:, 0] = 5.0  # identity, the cheapest op, on every edge
    res = search.run()
    assert res.status == "collapsed" and res.step == 1
    assert any(e == "collapse" and "identity" in i["message"] for e, i in events)


def test_step_timing_api():
    cfg = SearchConfig(space=tiny_space(), data=DataConfig(batch_size=2, gt_size=32))
    for algorithm, reference in (("dlsr_exact", True), ("dlsr_reuse", False), ("second_order", False)):
        t = step_timing(cfg, 1, partial_channels=2, algorithm=algorithm, reference=reference)
        assert t["weight_step_s"] > 0 and t["arch_step_s"] > 0 and t["partial_channels"] == 2
        assert t["algorithm"] == algorithm and t["fuse"] == (not reference)
        assert t["peak_memory_bytes"] is None or t["peak_memory_bytes"] > 0
    fused = weight_step_flops(cfg)
    unfused = weight_step_flops(SearchConfig(space=tiny_space(fuse=False), data=cfg.data))
    assert unfused > fused > 0  # fusion does fewer FLOPs: each row is counted as it runs


@pytest.mark.parametrize("algorithm", ["first_order", "dlsr_reuse", "second_order"])
def test_other_algorithms_run(image_dir, tmp_path, algorithm):
    cfg = tiny_config(image_dir, arch={"algorithm": algorithm, "warmup_epochs": 0, "smoothing": 0.03},
                      loop={"epochs": 1}, cost={"kind": "macs", "weight": 0.01, "target": 1e7, "input_size": (16, 16)})
    res = run_search(cfg, tmp_path / "run")
    assert res.status == "finished" and (tmp_path / "run" / "cost_table.json").is_file()


# ----------------------------------------------------------------------------------------------------
# CLIs


def test_search_and_derive_cli_end_to_end(tmp_path, monkeypatch):
    """`tools/search.py --config smoke` (embedded images) + `tools/derive.py`, well under a minute."""
    monkeypatch.syspath_prepend(str(REPO / "tools"))  # as when run as a script: plot_genotype is importable
    out = tmp_path / "smoke"
    t0 = time.perf_counter()
    assert search_cli.main(["--config", "smoke", "--out", str(out), "--threads", "1"]) == 0
    for name in ("genotype.yaml", "collapse_report.json", "alpha_history.jsonl", "checkpoint.pt", "genotype.png"):
        assert (out / name).is_file(), name
    g = load_genotype(out / "genotype.yaml")
    assert derive_cli.main([str(out), "--out", str(tmp_path / "derived.yaml")]) == 0
    assert load_genotype(tmp_path / "derived.yaml") == g
    derived, searched = (json.loads(p.read_text()) for p in (tmp_path / "derived.report.json",
                                                             out / "collapse_report.json"))
    assert derived["edges"] == searched["edges"] and derived["derived_cost"] == searched["derived_cost"]
    assert derived["derived_cost"]["value"] == count_params(DLSRNet(g))
    assert derive_cli.main([str(out), "--out", str(tmp_path / "pt.yaml"), "--method", "perturbation",
                            "--eval-batches", "1", "--tune-steps", "1"]) == 0
    pt = json.loads((tmp_path / "pt.report.json").read_text())
    assert pt["method"] == "perturbation" and len(pt["selection"]["edges"]) == 3
    assert list(load_genotype(tmp_path / "pt.yaml").cell) == [e["op"] for e in pt["selection"]["edges"]]
    assert time.perf_counter() - t0 < 60
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        derive_cli.main([str(tmp_path), "--out", str(tmp_path / "x.yaml")])
    with pytest.raises(ValueError, match="already holds a search"):  # srcore.rundir.RunDirError
        search_cli.main(["--config", "smoke", "--out", str(out)])


def test_search_cli_script_runs(tmp_path):
    """The script itself (its own process): a smoke search stopped, resumed with new execution keys (an
    architecture change is refused, naming the key), finished."""
    env = {**os.environ, "COLUMNS": "120"}
    cmd = [sys.executable, str(REPO / "tools" / "search.py"), "--out", str(tmp_path / "run")]
    r = subprocess.run(cmd + ["--config", "smoke", "--set", "loop.epochs=2", "--stop-at", "1", "--threads", "2"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "stopped at step 1" in r.stderr, r.stderr
    r = subprocess.run(cmd + ["--resume", "--set", "space.channels=16"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "space.channels = 16 differs from the checkpoint's 8" in r.stderr, r.stderr
    r = subprocess.run(cmd + ["--resume", "--no-plot", "--set", "run.threads=1", "--set", "loop.log_every=2",
                              "--set", "space.fuse=false", "--stop-at", "2"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "resumed at step 1" in r.stderr and "1 threads" in r.stderr, r.stderr
    assert config_from_checkpoint(tmp_path / "run" / "checkpoint.pt").run.threads == 1  # the new value is kept
    r = subprocess.run(cmd + ["--config", "smoke", "--set", "loop.epochs=2", "--resume", "--no-plot"],
                       capture_output=True, text=True, env=env)  # the preset again: run.threads back to 0
    assert r.returncode == 0 and "resumed at step 2" in r.stderr, r.stderr
    assert load_genotype(tmp_path / "run" / "genotype.yaml").num_cells == 3
