"""The esr search space (the NTIRE efficient-SR winners' building blocks): genotype schema, derived network,
exact fusion, the published layouts as genotypes, the supernet, cost table, derive, and the chain
search -> derive -> train -> compress to a plain-conv deployed network."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, import_tool, require_shared, texture_images
from torch import nn

from compress.blocks import RRRB, Conv3XC
from compress.reparam import build_from_spec, deployed_spec, fusable_modules, reparameterize
from distill.config import StudentConfig
from distill.pretrained import provenance_psnr
from distill.trainer import build_student
from nas.config import ArchConfig, CostConfig, ESRSearchConfig, ESRSpaceConfig, SearchConfig, search_config_from_dict
from nas.esr_cost import ESRCostModel, build_esr_cost_table, deployed
from nas.esr_derive import derive_esr
from nas.esr_supernet import ESRSuperNet, MixedConv, layout, tap_candidates
from nas.search import run_search
from search_spaces.esr_genotype import Block, ESRGenotype
from search_spaces.esr_network import OFFICIAL_FILES, ESRNet, load_official
from search_spaces.esr_ops import ACTS, ATTNS, CONVS, build_conv, conv3x3, conv_kernel
from search_spaces.genotype import dump_genotype, list_genotypes, load_genotype
from search_spaces.network import build_network
from srcore.config import ConfigError, load_config
from srcore.cost import count_params
from srcore.data import BenchmarkSet
from srcore.evaluation import evaluate_model
from srcore.modelspec import load_checkpoint_model
from srcore.yamlio import safe_load

GENOTYPES = REPO / "search_spaces" / "genotypes"
PRESETS = REPO / "configs" / "search"


def tiny(**kw) -> ESRGenotype:
    base = dict(channels=8, scale=2, head="conv3xc", body="conv3xc", taps=("head", "body", "block1", "block2.c1"),
                blocks=(Block("conv3xc", "silu", "spab"), Block("rrrb", "relu", "guide")))
    return ESRGenotype(**{**base, **kw})


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.2)
    return model


# ----------------------------------------------------------------------------------------------------
# genotype schema


@pytest.mark.parametrize("name", ["span_x4", "dscf_x4", "spanv2_x4"])
def test_named_esr_genotypes_round_trip_byte_exact(name, tmp_path):
    assert name in list_genotypes()
    g = load_genotype(name)
    assert isinstance(g, ESRGenotype) and g.space == "esr" and g.scale == 4
    assert dump_genotype(g) == (GENOTYPES / f"{name}.yaml").read_text()
    assert load_genotype(GENOTYPES / f"{name}.yaml") == g


def _raw(**changes):
    raw = safe_load((GENOTYPES / "span_x4.yaml").read_text())
    for k, v in changes.items():
        if v is None:
            del raw[k]
        else:
            raw[k] = v
    return raw


@pytest.mark.parametrize("changes,key", [
    ({"conv": 1}, "'conv'"),
    ({"taps": None}, "'taps'"),
    ({"head": "rrrb"}, "head"),
    ({"blocks": [{"conv": "conv3xc", "act": "gelu", "attn": "spab"}] * 6}, "blocks[0].act"),
    ({"blocks": [{"conv": "conv3xc", "act": "silu"}] * 6}, "blocks[0]"),
    ({"num_blocks": 5}, "blocks"),
    ({"taps": ["head", "block7"]}, "taps[1]"),
    ({"taps": ["head", "head", "body"]}, "taps[1]"),
    ({"taps": ["head", "block1"]}, "body"),
    ({"skip": "lanczos"}, "skip"),
    ({"fusion": "sum"}, "fusion"),
    ({"input_mean": [0.5, 0.5]}, "input_mean"),
    ({"channels": 2}, "channels"),
    ({"version": 1}, "version"),
])
def test_esr_genotype_errors_are_one_line_naming_file_and_key(tmp_path, changes, key):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(_raw(**changes), sort_keys=False))
    with pytest.raises(ValueError) as err:
        load_genotype(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ") and key in msg, msg


def test_head_none_needs_a_first_block_that_maps_rgb(tmp_path):
    raw = safe_load((GENOTYPES / "spanv2_x4.yaml").read_text())
    raw["blocks"][0] = {"conv": "rrrb", "act": "relu", "attn": "none"}
    with pytest.raises(ValueError, match=r"blocks\[0\]\.conv = 'rrrb'"):
        load_genotype(_write(tmp_path, raw))
    raw["blocks"][0] = {"conv": "conv3x3", "act": "relu", "attn": "spab"}
    with pytest.raises(ValueError, match=r"blocks\[0\]\.attn = 'spab'.*no residual"):
        load_genotype(_write(tmp_path, raw))
    raw["taps"] = ["head"]
    raw["blocks"][0]["attn"] = "none"
    with pytest.raises(ValueError, match=r"taps\[0\] = 'head': there is no head"):
        load_genotype(_write(tmp_path, raw))


def _write(tmp_path: Path, raw) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# ----------------------------------------------------------------------------------------------------
# derived network, exact fusion


@pytest.mark.parametrize("conv,c_in", [(c, n) for c in CONVS for n in (3, 6) if n == 6 or c != "rrrb"])
def test_conv_kernel_is_the_conv_type(conv, c_in):
    torch.manual_seed(0)
    m = randomize(build_conv(conv, c_in, 6).double())
    x = torch.randn(2, c_in, 9, 7, dtype=torch.float64)
    torch.testing.assert_close(conv3x3(x, conv_kernel(m)), m(x), rtol=1e-10, atol=1e-10)


def test_online_reparameterization_gives_the_same_function_and_gradients():
    g = load_genotype("span_x4")
    a = randomize(ESRNet(dataclasses.replace(g, channels=8)).double())
    b = ESRNet(dataclasses.replace(g, channels=8), online=False).double()
    b.load_state_dict(a.state_dict())
    x = torch.rand(2, 3, 10, 10, dtype=torch.float64)
    ya, yb = a(x), b(x)
    torch.testing.assert_close(ya, yb, rtol=1e-9, atol=1e-9)
    ya.square().mean().backward()
    yb.square().mean().backward()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("kw", [
    {},
    {"skip": "conv_near", "fusion": "dwpw"},
    {"skip": "bicubic", "blocks": (Block("dsconv", "lrelu", "esa"), Block("conv1x1", "silu", "none"))},
    {"skip": "nearest", "head": "none", "taps": ("block2", "block1.c1"), "body": "none", "bias": False,
     "blocks": (Block("conv3xc", "relu", "none"), Block("conv3x3", "relu", "guide"))},
])
def test_every_choice_fuses_exactly_to_plain_convolutions(kw):
    torch.manual_seed(0)
    g = tiny(**kw)
    net = randomize(build_network(g)).eval().requires_grad_(False)
    x = torch.rand(1, 3, 17, 15)
    fused = reparameterize(net)
    assert fusable_modules(fused) == []
    assert not any(isinstance(m, (Conv3XC, RRRB)) and not m.deployed for m in fused.modules())
    y, yf = net(x), fused(x)
    assert y.shape == (1, 3, 17 * g.scale, 15 * g.scale)
    assert (y - yf).abs().max() <= 1e-5 * max(1.0, float(y.abs().max()))
    deploy = ESRNet(g, deploy=True)
    deploy.load_state_dict(fused.state_dict(), strict=True)  # deploy=True builds the fused layout directly
    torch.testing.assert_close(deploy.eval()(x), yf)


@pytest.mark.parametrize("skip,fusion", [("nearest", "conv1x1"), ("bicubic", "conv1x1"), ("conv_near", "conv1x1"),
                                         ("conv_near", "dwpw"), ("bicubic", "dwpw")])
def test_untrained_network_outputs_its_skip(skip, fusion):
    from srcore.skip import ImageSkip

    g = tiny(skip=skip, fusion=fusion)
    x = torch.rand(1, 3, 8, 8)
    ref = ImageSkip("nearest" if skip == "conv_near" else skip, 2)(x, torch.zeros(1, 12, 8, 8))
    torch.testing.assert_close(build_network(g)(x), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", list(OFFICIAL_FILES))
def test_published_layouts_load_strictly_and_reproduce_provenance(name):
    layout_name, file = OFFICIAL_FILES[name]
    path = require_shared("teachers", file)
    expected = provenance_psnr(require_shared("teachers", "PROVENANCE.md").read_text(), file, 4)
    net = load_official(ESRNet(load_genotype(name), deploy=True), path, layout_name).eval()
    res = evaluate_model(net, BenchmarkSet(require_shared("data", "Set5"), 4))
    assert abs(res.psnr_y - expected) <= 0.01, f"{name}: {res.psnr_y:.4f} dB vs PROVENANCE {expected}"
    # the training-time form of the same genotype has the same deployed layout and size
    assert count_params(reparameterize(build_network(name))) == count_params(net)


# ----------------------------------------------------------------------------------------------------
# supernet, derive, cost


def space(**kw) -> ESRSpaceConfig:
    return ESRSpaceConfig(**{"scale": 2, "channels": 8, "num_blocks": 3, "taps": 3, **kw})


@pytest.mark.parametrize("c_in", [3, 8])
def test_fused_mixed_conv_gives_the_same_output_and_gradients(c_in):
    torch.manual_seed(0)
    names = tuple(c for c in CONVS if c_in == 8 or c != "rrrb")
    plain = randomize(MixedConv(names, c_in, 8, True, fuse=False, scale_free=False).double())
    fused = MixedConv(names, c_in, 8, True, fuse=True, scale_free=False).double()
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(2, c_in, 9, 9, dtype=torch.float64)
    results = []
    for op in (plain, fused):
        alpha = torch.linspace(-1, 1, len(names), dtype=torch.float64).requires_grad_()
        y = op(x, torch.softmax(alpha, 0))
        y.square().mean().backward()
        results.append([y, alpha.grad] + [p.grad for p in op.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kw", [{}, {"fusion": "dwpw", "head": "none", "body": "none"}, {"scale_free": True}])
def test_supernet_forward_backward_and_layout(kw):
    torch.manual_seed(0)
    sp = space(**kw)
    net = ESRSuperNet(sp)
    segs = layout(sp)
    assert net.alphas.numel() == segs[-1].stop and len(net.betas[0]) == len(tap_candidates(sp))
    if sp.head == "none":  # block 1 maps RGB: no rrrb, no attention, no gate
        s = {x.name: x for x in segs}
        assert "rrrb" not in s["block1.conv"].candidates and s["block1.attn"].stop == s["block1.attn"].start
        assert s["block1.depth"].stop == s["block1.depth"].start
    y = net(torch.rand(2, 3, 16, 16))
    assert y.shape == (2, 3, 32, 32)
    y.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.arch_parameters())
    assert {id(p) for p in net.arch_parameters()}.isdisjoint(id(p) for p in net.weight_parameters())


def _logits(sp: ESRSpaceConfig, picks: dict[str, str]) -> torch.Tensor:
    a = torch.zeros(layout(sp)[-1].stop)
    for s in layout(sp):
        if s.name in picks:
            a[s.start + s.candidates.index(picks[s.name])] = 5.0
    return a


def test_derive_drops_blocks_and_remaps_their_taps():
    sp = space(num_blocks=4, taps=3)
    picks = {"block1.conv": "dsconv", "block2.conv": "conv3x3", "block3.conv": "conv1x1", "block4.conv": "rrrb",
             "block2.depth": "drop", "block3.depth": "drop", "block2.attn": "esa", "skip": "bicubic"}
    names = tap_candidates(sp)
    beta = torch.zeros(len(names))
    for rank, t in enumerate(["block3", "block2.c1", "block2", "block4.c1", "body"]):
        beta[names.index(t)] = 10.0 - rank  # block3 -> block1 (dropped 2 and 3); block2.c1 gone; block2 = block1 again
    g = derive_esr(_logits(sp, picks), [beta], sp)
    assert [b.conv for b in g.blocks] == ["dsconv", "rrrb"] and g.num_blocks == 2
    assert g.taps == ("block1", "block2.c1", "body") and g.body == "conv3xc" and g.skip == "bicubic"
    g2 = derive_esr(_logits(sp, picks), [beta], sp, exclude=("bicubic",))
    assert g2.skip != "bicubic"
    every = {f"block{i}.depth": "drop" for i in range(1, 5)}
    assert derive_esr(_logits(sp, every), [beta], sp).num_blocks == 1  # at least one block stays


@pytest.mark.parametrize("kw", [{}, {"fusion": "dwpw", "head": "none", "body": "none", "taps": 2}])
def test_params_cost_table_counts_the_deployed_derived_network_exactly(kw):
    sp = space(**kw)
    cost = CostConfig(kind="params", weight=1.0, target=1e3, input_size=(16, 16))
    table = build_esr_cost_table(sp, cost)
    model = ESRCostModel(table, sp, cost)
    torch.manual_seed(1)
    for _ in range(3):
        alphas = torch.randn(layout(sp)[-1].stop) * 4
        beta = torch.zeros(len(tap_candidates(sp)))
        if sp.body != "none":
            beta[-1] = 5.0  # the table counts the body conv: tap it
        g = derive_esr(alphas, [beta], sp)
        assert model.derived_cost(g) == count_params(deployed(build_network(g)))
        sharp = float(model.expected(alphas, tau=1e-4))  # (nearly) one-hot mixtures: the derived network's cost
        gates = [s for s in layout(sp) if s.name.endswith(".depth") and s.stop > s.start]
        if any(alphas[s.start] > alphas[s.start + 1] for s in gates) or not gates:  # not the keep-one fallback
            assert sharp == pytest.approx(model.derived_cost(g), rel=1e-9)
    alphas = torch.zeros(layout(sp)[-1].stop, requires_grad=True)
    model.penalty(alphas).backward()  # E is above the 1000-parameter target: the hinge pulls
    assert alphas.grad.abs().sum() > 0


def test_cost_target_relative_to_a_reference_genotype():
    sp = ESRSpaceConfig(channels=28, num_blocks=6)  # the space of the study preset: span_x4 fits it
    cost = CostConfig(kind="params", weight=1.0, target=0.8, reference="span_x4", input_size=(16, 16))
    model = ESRCostModel(build_esr_cost_table(sp, cost), sp, cost)
    assert model.target == pytest.approx(0.8 * count_params(deployed(build_network("span_x4"))))
    with pytest.raises(ValueError, match="cost.reference = 'spanv2_x4': its channels"):
        ESRSearchConfig(space=sp, cost=cost.__class__(**{**vars(cost), "reference": "spanv2_x4"}))
    with pytest.raises(ValueError, match="cost.reference: .*esr space"):
        SearchConfig(cost=cost)


def test_latency_table_is_measured_for_the_deployed_ops():
    sp = space(convs=("conv3x3", "conv3xc", "rrrb", "dsconv"))
    table = build_esr_cost_table(sp, CostConfig(kind="latency", weight=1.0, target=1.0, input_size=(16, 16),
                                                latency_repeats=2))
    ops = table.ops
    assert table.unit == "ms" and table.fixed > 0 and ops["skip:none"] == 0.0
    assert ops["conv:conv3x3"] == ops["conv:conv3xc"] == ops["conv:rrrb"]  # one deployed 3x3: one measurement
    assert set(ops) == {f"conv:{c}" for c in sp.convs} | {f"act:{a}" for a in ACTS} | \
        {f"attn:{a}" for a in ATTNS} | {f"skip:{s}" for s in sp.skips}


# ----------------------------------------------------------------------------------------------------
# configs, search, and the chain to a deployed network


def test_search_config_family():
    cfg = load_config(_pick(), "esr_smoke", (), PRESETS)
    assert isinstance(cfg, ESRSearchConfig) and isinstance(cfg.space, ESRSpaceConfig)
    from srcore.config import to_dict

    assert search_config_from_dict(to_dict(cfg)) == cfg
    assert type(load_config(_pick(), "smoke", (), PRESETS)) is SearchConfig
    with pytest.raises(ConfigError, match="space.name = 'nope'"):
        load_config(_pick(), "smoke", ["space.name=nope"], PRESETS)
    with pytest.raises(ConfigError, match="space.blocks"):
        load_config(_pick(), "esr_smoke", ["space.blocks=3"], PRESETS)
    with pytest.raises(ConfigError, match="derive.method"):
        load_config(_pick(), "esr_smoke", ["derive.method=perturbation"], PRESETS)


def _pick():
    from nas.config import search_config_class

    return search_config_class


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    return texture_images(tmp_path_factory.mktemp("images"), size=72)  # x4 patches of 64


def test_esr_search_resumes_bit_identically(tmp_path, image_dir):
    cfg = load_config(_pick(), "esr_smoke", [f"data.train={image_dir}", "cost.kind=params", "cost.target=20000"],
                      PRESETS)
    full = run_search(cfg, tmp_path / "full")
    run_search(cfg, tmp_path / "part", stop_at=4)
    part = run_search(cfg, tmp_path / "part", resume=True)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full.genotype == part.genotype and full.status == "finished"
    assert load_genotype(tmp_path / "full" / "genotype.yaml") == full.genotype
    report = json.loads((tmp_path / "full" / "collapse_report.json").read_text())
    assert report["space"] == "esr" and report["links"][0]["inputs"] == list(full.genotype.taps)
    lines = (tmp_path / "full" / "alpha_history.jsonl").read_text().splitlines()
    assert len(json.loads(lines[-1])["alpha"]) == layout(cfg.space)[-1].stop


def test_esr_student_overrides():
    model, spec = build_student(StudentConfig(genotype="span_x4", scale=4, channels=8, skip="bicubic"))
    assert spec["genotype"]["channels"] == 8 and spec["genotype"]["skip"] == "bicubic" and isinstance(model, ESRNet)
    with pytest.raises(ConfigError, match="num_cells"):
        build_student(StudentConfig(genotype="span_x4", scale=4, num_cells=2))
    with pytest.raises(ConfigError, match="skip"):
        build_student(StudentConfig(genotype="span_x4", scale=4, skip="lanczos"))


def test_search_derive_train_compress_gives_a_working_plain_conv_network(tmp_path):
    from test_compress import _compress_cli  # tools/compress.py, loaded from its file

    search_cli, derive_cli, train_cli = import_tool("search"), import_tool("derive"), import_tool("train")
    s, g, t, c = tmp_path / "search", tmp_path / "g.yaml", tmp_path / "train", tmp_path / "compress"
    assert search_cli.main(["--config", "esr_smoke", "--out", str(s), "--threads", "1"]) == 0
    assert derive_cli.main([str(s), "--out", str(g)]) == 0
    assert load_genotype(g) == load_genotype(s / "genotype.yaml")
    cost = json.loads((s / "collapse_report.json").read_text())["derived_cost"]  # the search's table, its target
    assert cost["kind"] == "latency" and cost["value"] > 0 and cost["ratio_to_target"] == cost["value"] / cost["target"]
    assert train_cli.main(["--config", "esr_smoke", "--out", str(t), "--threads", "1", "--set",
                           f"student.genotype={g}", "--set", "student.channels=null"]) == 0
    model, ckpt = load_checkpoint_model(t / "best.pt")
    fused = reparameterize(model)
    assert fusable_modules(fused) == []
    plain = (nn.Conv2d, nn.SiLU, nn.ReLU, nn.LeakyReLU, nn.ModuleList)
    leaves = [m for m in fused.modules() if not list(m.children())]
    assert all(isinstance(m, plain) or not list(m.parameters()) for m in leaves)
    rebuilt = build_from_spec(deployed_spec(ckpt["spec"]))
    rebuilt.load_state_dict(fused.state_dict(), strict=True)
    x = torch.rand(1, 3, 24, 20)
    with torch.no_grad():
        y = model(x)
        assert (rebuilt.eval()(x) - y).abs().max() <= 1e-5
    res = evaluate_model(rebuilt, BenchmarkSet("builtin", 4))
    assert res.n_images >= 1 and np.isfinite(res.psnr_y) and res.psnr_y > 15
    assert count_params(rebuilt) < count_params(model) or not fusable_modules(model)

    # the compress CLI: fuse, prune a quarter of the channels, write deploy.pt (a plain-conv network on its own)
    assert _compress_cli().main(["--checkpoint", str(t / "best.pt"), "--out", str(c), "--reparam", "--prune-ratio",
                                 "0.25", "--multiple", "2", "--lr-size", "32", "--val", "builtin", "--export", "",
                                 "--latency-repeats", "1", "--threads", "1"]) == 0
    deployed, _ = load_checkpoint_model(c / "deploy.pt")
    leaves = [m for m in deployed.modules() if not list(m.children())]
    assert fusable_modules(deployed) == [] and all(isinstance(m, plain) or not list(m.parameters()) for m in leaves)
    assert count_params(deployed) < count_params(rebuilt)
    res = evaluate_model(deployed, BenchmarkSet("builtin", 4))
    assert np.isfinite(res.psnr_y) and res.psnr_y > 15


def test_esr_preset_for_the_study_loads():
    cfg = load_config(_pick(), "esr", [], PRESETS)
    assert isinstance(cfg, ESRSearchConfig) and cfg.space.scale == 4 and cfg.cost.kind == "latency"
    assert isinstance(cfg.arch, ArchConfig)


def test_study_verdicts_need_psnr_beyond_the_noise_at_equal_latency():
    study = import_tool("esr_study")

    def st(means):
        return {"per_seed": means, "seeds": list(range(len(means))), "mean": sum(means) / len(means)}

    stats = {"searched": st([30.30, 30.34]), "span": st([30.0, 30.1]), "spanv2": st([30.31, 30.30])}
    out = study.verdicts(stats, {"searched": 100.0, "span": 120.0, "spanv2": 101.0}, noise=0.02)
    assert "It beats it" in out[0] and "faster" in out[0]
    assert "same PSNR within the noise" in out[1] and "does not beat" in out[1]
    slower = study.verdicts(stats, {"searched": 150.0, "span": 120.0, "spanv2": 101.0}, noise=0.02)
    assert "slower" in slower[0] and "does not beat" in slower[0]
    busy = {"ms": {"a": 900.0}, "threads": 2, "cores": 2, "loadavg_1min": [6.0, 7.0],
            "by_threads": {"2": {"ms": {"a": 900.0}}, "1": {"ms": {"a": 40.0}}}}
    assert study.latency_basis(busy)[0] == {"a": 40.0} and "busy" in study.latency_basis(busy)[1]
    quiet = {**busy, "loadavg_1min": [0.5, 0.6]}
    assert study.latency_basis(quiet) == ({"a": 900.0}, "2 threads")


def test_study_widened_row_matches_the_reference_macs():
    study = import_tool("esr_study")
    g, ref = tiny(), tiny(channels=20)
    assert study.matched_width(g, ref) == 20 and study.deployed_macs(ref) > 4 * study.deployed_macs(g)


def test_study_budget_line_reports_what_was_spent():
    study = import_tool("esr_study")
    runs = {"searched": [{"seed": 0, "train_s": 600.0, "loadavg": [4.5, 4, 4]},
                         {"seed": 1, "train_s": 660.0, "loadavg": [6.5, 5, 5]}],
            "span": [{"seed": 0, "train_s": 540.0}]}
    data = {"runs": runs, "search": {"search_s": 540.0}, "threads": 1, "machine": {"cores": 2, "cpu": "x86_64"},
            "stats": {"searched": {"s_per_step": 0.42}, "span": {"s_per_step": 0.36}}}
    line = study.wall_time_line(data)
    assert "after 9 min of search; 30 min of training over 3 runs" in line
    assert "searched 0.42, span 0.36" in line and "load average 4.5-6.5" in line and "1 torch thread" in line
    assert study.done_seeds(data) == "searched 0, 1; span 0"
