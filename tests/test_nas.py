"""Tests for the NAS engine: mixed op, supernet, derive, cost term, architect, search loop, CLIs."""
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
from conftest import import_tool
from torch.func import functional_call

from nas.architect import Architect
from nas.config import ArchConfig, CostConfig, DataConfig, SearchConfig, SpaceConfig
from nas.cost import CostModel, build_cost_table, identity_genotype
from nas.derive import derive_genotype, top_inputs
from nas.loss import hfen, sr_loss
from nas.mixed import MixedOp, channel_shuffle
from nas.search import (
    Search,
    collapse_report,
    config_from_checkpoint,
    epoch_batches,
    run_search,
    split_dataset,
    step_timing,
)
from nas.supernet import SuperNet
from search_spaces.genotype import load_genotype
from search_spaces.network import DLSRNet
from srcore.checkpoint import CheckpointError, load_file
from srcore.config import ConfigError, load_config
from srcore.cost import count_params
from srcore.data import PatchDataset
from srcore.imageio import write_png

REPO = Path(__file__).resolve().parents[1]
derive_cli = import_tool("derive")
search_cli = import_tool("search")
PRESETS = REPO / "configs" / "search"
TINY_OPS = ("identity", "conv_1x1", "conv_3x3", "sep_conv_3x3")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    """Eight small random-texture RGB images: loads in milliseconds (the presets use builtin:train)."""
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(8):
        base = rng.integers(0, 256, size=(12, 12, 3)).astype(np.float64)
        img = np.kron(base, np.ones((4, 4, 1))) + rng.normal(0, 8, size=(48, 48, 3))
        write_png(d / f"img{i}.png", np.clip(img, 0, 255).astype(np.uint8))
    return d


def tiny_space(**kw) -> SpaceConfig:
    return SpaceConfig(**{"ops": TINY_OPS, "num_cells": 3, "channels": 8, "scale": 2, **kw})


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


def test_partial_channels_shapes_and_bypass():
    torch.manual_seed(0)
    op = MixedOp(16, ("conv_3x3", "sep_conv_3x3"), partial_channels=4)
    assert op.ops[0].op[0].weight.shape == (4, 4, 3, 3)  # ops are built at C/K channels
    x = torch.randn(2, 16, 6, 6)
    op.weights = torch.tensor([0.5, 0.5])
    assert op(x).shape == x.shape
    op.weights = torch.zeros(2)  # the mixed part is 0: what is left is the bypass, shuffled
    expected = channel_shuffle(torch.cat([torch.zeros_like(x[:, :4]), x[:, 4:]], 1), 4)
    torch.testing.assert_close(op(x), expected)
    perm = channel_shuffle(torch.arange(16.0).view(1, 16, 1, 1), 4).flatten().long()
    assert sorted(perm.tolist()) == list(range(16)) and perm[:4].tolist() == [0, 4, 8, 12]


def test_supernet_with_partial_channels_runs():
    net = SuperNet(tiny_space(channels=16, partial_channels=4))
    assert net(torch.rand(1, 3, 16, 16)).shape == (1, 3, 32, 32)


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
    with pytest.raises(ValueError, match="top_k"):
        derive_genotype(alphas, betas, space, top_k=3)
    with pytest.raises(ValueError, match="alphas"):
        derive_genotype(alphas[:2], betas, space)


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
    table = build_cost_table(space, CostConfig(kind="params", weight=1.0))
    model = CostModel(table, space, CostConfig(kind="params", weight=1.0))
    g = derive_genotype(torch.tensor([[0.0, 0, 9, 0], [0.0, 9, 0, 0], [0.0, 0, 0, 9]]),
                        [torch.zeros(2), torch.zeros(3)], space)
    assert model.derived_cost([g.cell] * 4) == count_params(DLSRNet(g))
    one_hot = torch.full((3, 4), -1e4)
    one_hot[0, 2] = one_hot[1, 1] = one_hot[2, 3] = 0.0
    assert float(model.expected(one_hot)) == pytest.approx(count_params(DLSRNet(g)))
    macs = build_cost_table(space, CostConfig(kind="macs", weight=1.0, input_size=(16, 16)))
    assert macs.ops["identity"] == 0 and macs.ops["conv_3x3"] == 16 * 16 * 9 * 64
    assert table.fixed == count_params(DLSRNet(identity_genotype(space)))


def test_cost_gradient_is_nonzero_and_matches_finite_differences():
    space = tiny_space(num_cells=3, shared_alphas=False)
    cfg = CostConfig(kind="params", weight=0.5, target=5000.0)
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


def test_latency_table_is_measured_and_keeps_the_rng():
    space = tiny_space()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    table = build_cost_table(space, CostConfig(kind="latency", weight=1.0, input_size=(16, 16), latency_repeats=1))
    assert torch.equal(torch.get_rng_state(), before)
    assert table.unit == "ms" and table.fixed > 0 and all(v >= 0 for v in table.ops.values())
    assert set(table.ops) == set(TINY_OPS) and table.device == "cpu"


# ----------------------------------------------------------------------------------------------------
# architect


def _tiny_problem(algorithm: str):
    torch.manual_seed(0)
    net = SuperNet(tiny_space(channels=4, ops=("conv_1x1", "conv_3x3", "sep_conv_3x3"))).double()
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
    xi, wd = 0.05, 1e-3
    names = [n for n, p in net.named_parameters() if not n.startswith(("alphas", "betas"))]
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    approx, _ = arch.unrolled_gradient(train, val, xi, wd, r=1e-5)  # float64: a small r is exact
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


def test_first_order_and_dlsr_gradients():
    net, loss_fn, train, val, arch = _tiny_problem("first_order")
    g_val = torch.autograd.grad(loss_fn(net, val), net.arch_parameters())
    g_train = torch.autograd.grad(loss_fn(net, train), net.arch_parameters())
    fo, _ = arch.gradient(train, val)
    for a, b in zip(fo, g_val):
        torch.testing.assert_close(a, b)
    arch.cfg = ArchConfig(algorithm="dlsr")
    dl, _ = arch.gradient(train, val)
    for a, b, c in zip(dl, g_val, g_train):
        torch.testing.assert_close(a, b + c)
    dl2, _ = arch.gradient(train, val, train_grads=g_train)
    for a, b in zip(dl, dl2):
        torch.testing.assert_close(a, b)
    weights = [p.detach().clone() for p in net.weight_parameters()]
    arch.step(train, val)
    assert all(torch.equal(p, w) for p, w in zip(net.weight_parameters(), weights))  # only alphas move
    assert all(p.grad is None for p in net.weight_parameters())


def test_hfen_loss():
    x = torch.rand(2, 3, 16, 16)
    assert float(hfen(x, x)) == 0.0
    assert float(sr_loss(x, x.flip(-1), 0.2)) > float(sr_loss(x, x.flip(-1)))


# ----------------------------------------------------------------------------------------------------
# configs and data


def test_presets_load_strictly(tmp_path):
    for name in ("smoke", "quickstart", "dlsr"):
        cfg = load_config(SearchConfig, name, [], PRESETS)
        assert isinstance(cfg, SearchConfig)
    dlsr = load_config(SearchConfig, "dlsr", [], PRESETS)
    assert (dlsr.space.num_cells, dlsr.space.channels, dlsr.data.batch_size, dlsr.data.gt_size) == (6, 48, 64, 64)
    assert (dlsr.optim.lr, dlsr.arch.lr, dlsr.arch.betas, dlsr.arch.warmup_epochs) == (5e-4, 3e-4, (0.5, 0.999), 20)
    with pytest.raises(ConfigError, match="arch.lrr"):
        load_config(SearchConfig, "smoke", ["arch.lrr=1"], PRESETS)
    with pytest.raises(ConfigError, match="unknown op"):
        load_config(SearchConfig, "smoke", ["space.ops=[conv_9x9]"], PRESETS)
    with pytest.raises(ConfigError, match="partial_channels"):
        load_config(SearchConfig, "smoke", ["space.partial_channels=3"], PRESETS)


def test_split_is_disjoint_and_batches_are_seeded(image_dir):
    ds = PatchDataset(image_dir, 2, 16, seed=0)
    train, val = split_dataset(ds, 0.25, seed=0)
    assert len(train.names) == 6 and len(val.names) == 2 and not set(train.names) & set(val.names)
    assert epoch_batches(10, 3, 0, 1) == epoch_batches(10, 3, 0, 1) != epoch_batches(10, 3, 0, 2)
    assert all(len(b) == 3 for b in epoch_batches(10, 3, 0, 1))


# ----------------------------------------------------------------------------------------------------
# the search loop


def _final_state(out: Path) -> dict:
    return load_file(out / "checkpoint.pt")["state_dict"]


def test_resume_is_bit_identical(image_dir, tmp_path):
    cfg = tiny_config(image_dir, loop={"epochs": 4, "checkpoint_every": 3, "log_every": 1, "eval_every": 2},
                      data={"repeat": 2, "batch_size": 2})  # 6 steps per epoch, 24 steps, 18 arch steps
    full = run_search(cfg, tmp_path / "full")
    assert full.status == "finished" and full.step == 24

    half = run_search(cfg, tmp_path / "split", stop_at=11)
    assert half.status == "stopped" and half.step == 11
    assert not (tmp_path / "split" / "genotype.yaml").exists()

    def interrupt(event, info):  # Ctrl-C at step 16: the loop stops at the step boundary and saves
        if event == "step" and info["step"] == 16:
            os.kill(os.getpid(), signal.SIGINT)

    again = run_search(cfg, tmp_path / "split", resume=True, callback=interrupt)
    assert again.status == "interrupted" and again.step == 16
    done = run_search(cfg, tmp_path / "split", resume=True)
    assert done.status == "finished" and done.step == 24

    a, b = _final_state(tmp_path / "full"), _final_state(tmp_path / "split")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (tmp_path / "full" / "alpha_history.jsonl").read_text() == \
        (tmp_path / "split" / "alpha_history.jsonl").read_text()
    assert (tmp_path / "full" / "genotype.yaml").read_text() == (tmp_path / "split" / "genotype.yaml").read_text()
    ckpt = load_file(tmp_path / "full" / "checkpoint.pt")
    assert ckpt["genotype"] == load_genotype(tmp_path / "full" / "genotype.yaml").to_dict()


def test_history_and_checkpoint_contents(image_dir, tmp_path):
    cfg = tiny_config(image_dir, arch={"warmup_epochs": 0})
    res = run_search(cfg, tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / "alpha_history.jsonl").read_text().splitlines()]
    assert [e["step"] for e in lines] == list(range(1, res.total_steps + 1))
    assert set(lines[0]) == {"step", "epoch", "ops", "alpha", "beta"} and lines[0]["ops"] == list(cfg.space.ops)
    ckpt = load_file(tmp_path / "run" / "checkpoint.pt")
    assert lines[-1]["alpha"] == ckpt["state_dict"]["alphas"].double().tolist()  # full precision
    assert lines[-1]["beta"] == [ckpt["state_dict"]["betas.0"].double().tolist()]
    assert lines[0]["alpha"] != lines[-1]["alpha"]  # the arch steps moved the alphas
    assert config_from_checkpoint(tmp_path / "run" / "checkpoint.pt") == cfg
    with pytest.raises(CheckpointError, match="already holds a search"):
        run_search(cfg, tmp_path / "run")
    other = tiny_config(image_dir, arch={"warmup_epochs": 0, "lr": 0.5})
    with pytest.raises(CheckpointError, match="arch.lr"):
        run_search(other, tmp_path / "run", resume=True)


def test_collapse_guard():
    ops = TINY_OPS
    params = {"identity": 0.0, "conv_1x1": 64.0, "conv_3x3": 576.0, "sep_conv_3x3": 272.0}
    collapsed = torch.tensor([[3.0, 0.0, 0.0, 0.0]] * 3)
    assert "identity takes all 3 edges" in collapse_report(collapsed, ops, params, 0.3)
    assert collapse_report(torch.zeros(3, 4), ops, params, 0.3) is None  # uniform: not taken
    mixed = collapsed.clone()
    mixed[1] = torch.tensor([0.0, 0.0, 3.0, 0.0])
    assert collapse_report(mixed, ops, params, 0.3) is None
    per_cell = torch.tensor([[[0.0, 4.0, 0.0, 0.0]] * 3] * 2)  # conv_1x1 everywhere, but not cheapest
    assert collapse_report(per_cell, ops, params, 0.3) is None


def test_collapse_guard_stops_a_search(image_dir, tmp_path):
    cfg = tiny_config(image_dir, loop={"collapse_action": "stop", "collapse_min_prob": 0.0})
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
    for reference in (False, True):
        t = step_timing(cfg, 1, partial_channels=2, reference=reference)
        assert t["weight_step_s"] > 0 and t["arch_step_s"] > 0 and t["partial_channels"] == 2
        assert t["peak_memory_bytes"] is None or t["peak_memory_bytes"] > 0


@pytest.mark.parametrize("algorithm", ["first_order", "second_order"])
def test_other_algorithms_run(image_dir, tmp_path, algorithm):
    cfg = tiny_config(image_dir, arch={"algorithm": algorithm, "warmup_epochs": 0},
                      loop={"epochs": 1}, cost={"kind": "macs", "weight": 0.01, "input_size": (16, 16)})
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
    for name in ("genotype.yaml", "alpha_history.jsonl", "checkpoint.pt", "genotype.png"):
        assert (out / name).is_file(), name
    g = load_genotype(out / "genotype.yaml")
    assert derive_cli.main([str(out), "--out", str(tmp_path / "derived.yaml"), "--top-k", "2"]) == 0
    assert load_genotype(tmp_path / "derived.yaml") == g
    assert time.perf_counter() - t0 < 60
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        derive_cli.main([str(tmp_path), "--out", str(tmp_path / "x.yaml")])
    with pytest.raises(ValueError, match="already holds a search"):  # srcore.rundir.RunDirError
        search_cli.main(["--config", "smoke", "--out", str(out)])


def test_search_cli_script_runs(tmp_path):
    """The script itself (its own process): a 2-step smoke search on small images, stopped and resumed."""
    env = {**os.environ, "COLUMNS": "120"}
    cmd = [sys.executable, str(REPO / "tools" / "search.py"), "--out", str(tmp_path / "run"), "--threads", "1"]
    r = subprocess.run(cmd + ["--config", "smoke", "--set", "loop.epochs=1", "--stop-at", "1"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "stopped at step 1" in r.stderr, r.stderr
    r = subprocess.run(cmd + ["--resume", "--no-plot"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "resumed at step 1" in r.stderr, r.stderr
    assert load_genotype(tmp_path / "run" / "genotype.yaml").num_cells == 3
