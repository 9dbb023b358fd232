"""Distillation: every loss on a hand-computable case (and its gradient reaches only the student), feature
hooks, DUKD upcycling, the smoke CLI + evaluate.py on its checkpoint, bit-identical resume, 2-process DDP
against 1 process, the NaN guard and the teacher cache.

Runs on tiny students (the DLSR genotype cut to 2 cells at C=8), a few patches of T91 and RLFN-S x2.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import REPO, import_tool, require_shared
from torch import nn

from distill.config import LossTerm, TrainConfig
from distill.features import FeatureHooks
from distill.losses import Criterion, LossInputs
from distill.trainer import Callback, NonFiniteGradients, NonFiniteLoss, Trainer
from distill.upcycle import InvertibleAug, enhance_hr, sample_rngs, zoom_in, zoom_out
from search_spaces.network import build_network
from srcore.checkpoint import read_checkpoint, save_checkpoint
from srcore.config import ConfigError, from_dict


@pytest.fixture(autouse=True)
def one_thread():
    """2 shared cores: OpenMP threads that spin-wait on a busy machine make tiny convs 50x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def hr_dir(tmp_path_factory):
    """The first 6 T91 images (all >= 78 px), so datasets load in a fraction of a second."""
    src = sorted(p for p in require_shared("data", "T91", "HR").iterdir() if p.suffix == ".png")[:6]
    dst = tmp_path_factory.mktemp("hr")
    for p in src:
        shutil.copy(p, dst / p.name)
    return dst


@pytest.fixture(scope="module")
def teacher_file():
    return require_shared("teachers", "rlfn_s_x2.pth")


def make_cfg(hr_dir, teacher_file, loss, **sections) -> dict:
    cfg = {"student": {"genotype": "dlsr_x2", "scale": 2, "channels": 8, "num_cells": 2},
           "teacher": [{"arch": "rlfn_s", "weights": str(teacher_file)}],
           "data": {"train": str(hr_dir), "gt_size": 32, "batch_size": 4, "repeat": 2},
           "optim": {"lr": 1e-3, "grad_clip": 1.0},
           "schedule": {"name": "cosine", "warmup_steps": 1},
           "loss": loss,
           "loop": {"steps": 4, "log_every": 2, "seed": 0}}
    for k, v in sections.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return cfg


# ---------------------------------------------------------------------------------------------------------
# losses: value on a hand-computable case, gradient to the student only


def full(shape, v, grad=False):
    return torch.full(shape, float(v), requires_grad=grad)


LQ, HR = (1, 3, 2, 2), (1, 3, 4, 4)


def case_l1(w):
    return LossTerm("l1", "l1", weight=2.0), LossInputs(lq=full(LQ, 0), gt=full(HR, 0.25), sr=w * full(HR, 0.5)), 0.25


def case_charbonnier(w):  # sqrt(0.3^2 + 0.4^2) = 0.5
    return (LossTerm("cb", "charbonnier", params={"eps": 0.4}),
            LossInputs(lq=full(LQ, 0), gt=full(HR, 0.5), sr=w * full(HR, 0.8)), 0.5)


def case_output_kd(w):  # anchors 1 and 3: (1 * 0.2 + 3 * 0.4) / 4
    x = LossInputs(lq=full(LQ, 0), gt=full(HR, 0), sr=w * full(HR, 0.5),
                   t_sr=[full(HR, 0.3, True), full(HR, 0.9, True)], anchor_weights=[1.0, 3.0])
    return LossTerm("kd", "output_kd"), x, 0.35


def case_fitnet(w):  # equal widths: identity adapter, (1 - 1.5)^2
    x = LossInputs(lq=full(LQ, 0), gt=full(HR, 0), sr=w * full(HR, 0), s_feats={"a": w * full((1, 2, 3, 3), 1.0)},
                   t_feats={"b": full((1, 2, 3, 3), 1.5, True)})
    return LossTerm("fit", "fitnet", student=["a"], teacher=["b"]), x, 0.25


def facd_inputs(w):
    """Two patches: features 1 and 3 (student), 1.5 and 2 (teacher). Patch 0's SR is worse than the
    teacher's (0.2 vs 0.1 from gt), patch 1's better (0.05 vs 0.1)."""
    fs = w * torch.tensor([1.0, 3.0]).view(2, 1, 1, 1).expand(2, 1, 2, 2)
    ft = torch.tensor([1.5, 2.0]).view(2, 1, 1, 1).expand(2, 1, 2, 2).clone().requires_grad_(True)
    sr = w * torch.tensor([0.7, 0.55]).view(2, 1, 1, 1).expand(2, 3, 4, 4)
    return LossInputs(lq=full((2, 3, 2, 2), 0), gt=full((2, 3, 4, 4), 0.5), sr=sr, t_sr=[full((2, 3, 4, 4), 0.6, True)],
                      s_feats={"a": fs}, t_feats={"b": ft})


def case_facd(w):  # ratios 0.5/1 and 1/1.5; adaptive: only patch 0 counts -> (0.5 + 0) / 2
    return LossTerm("facd", "facd", student=["a"], teacher=["b"]), facd_inputs(w), 0.25


def case_facd_plain(w):
    return (LossTerm("facd", "facd", student=["a"], teacher=["b"], params={"adaptive": False}), facd_inputs(w),
            (0.5 + 1 / 1.5) / 2)


def case_lsfd(w):  # identity regressor; d = [1, 0]; attention 2 softmax([1, 0] / 0.5) -> e^2 / (e^2 + 1)
    x = LossInputs(lq=full(LQ, 0), gt=full(HR, 0), sr=w * full(HR, 0),
                   s_feats={"a": w * torch.tensor([1.0, 2.0]).view(1, 1, 1, 2)},
                   t_feats={"b": torch.tensor([0.0, 2.0]).view(1, 1, 1, 2).requires_grad_(True)})
    return LossTerm("lsfd", "lsfd", student=["a"], teacher=["b"]), x, math.e ** 2 / (math.e ** 2 + 1)


def case_zoom_in(w):
    x = LossInputs(lq=full(LQ, 0), gt=full(HR, 0), sr=w * full(HR, 0), zoom_in_sr=w * full(HR, 0.6),
                   zoom_in_target=full(HR, 0.2, True))
    return LossTerm("zi", "zoom_in"), x, 0.4


def case_zoom_out_pix(w):
    x = LossInputs(lq=full(LQ, 0.5), gt=full(HR, 0), sr=w * full(HR, 0), zoom_out_sr=w * full(LQ, 0.7))
    return LossTerm("zop", "zoom_out_pix"), x, 0.2


def case_zoom_out_kd(w):
    x = LossInputs(lq=full(LQ, 0.5), gt=full(HR, 0), sr=w * full(HR, 0), zoom_out_sr=w * full(LQ, 0.7),
                   zoom_out_target=full(LQ, 0.4, True))
    return LossTerm("zok", "zoom_out_kd"), x, 0.3


def case_enhanced_hr(w):
    x = LossInputs(lq=full(LQ, 0), gt=full(HR, 0), sr=w * full(HR, 0.5), enhanced_hr=full(HR, 0.8, True))
    return LossTerm("ehr", "enhanced_hr"), x, 0.3


CASES = [case_l1, case_charbonnier, case_output_kd, case_fitnet, case_facd, case_facd_plain, case_lsfd,
         case_zoom_in, case_zoom_out_pix, case_zoom_out_kd, case_enhanced_hr]


def teacher_tensors(x: LossInputs) -> list[torch.Tensor]:
    ts = list(x.t_sr) + list(x.t_feats.values())
    ts += [t for t in (x.zoom_in_target, x.zoom_out_target, x.enhanced_hr) if t is not None]
    return [t for t in ts if t.requires_grad]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[5:] for c in CASES])
def test_loss_value_and_gradient_reaches_student_only(case):
    w = torch.tensor(1.0, requires_grad=True)  # the "student": every student tensor is w * something
    term, x, expected = case(w)
    c = x.s_feats["a"].shape[1] if x.s_feats else 1
    crit = Criterion([term], {"s:a": c, "t:b": c})
    if term.kind == "lsfd":  # identity local regressor (features are positive, so the ReLU passes them)
        with torch.no_grad():
            for conv in (m for m in crit.terms["lsfd"].adapters[0] if isinstance(m, nn.Conv2d)):
                conv.weight.zero_()
                conv.weight[0, 0, 1, 1] = 1.0
                conv.bias.zero_()
    out = crit(x)
    assert set(out) == {term.name, "total"}
    assert out[term.name].item() == pytest.approx(term.weight * expected, rel=1e-6)
    assert out["total"].item() == pytest.approx(term.weight * expected, rel=1e-6)
    teachers = teacher_tensors(x)
    out["total"].backward()
    assert w.grad is not None and w.grad.abs().item() > 0
    assert all(t.grad is None for t in teachers)


def test_feature_adapter_learns_when_widths_differ():
    crit = Criterion([LossTerm("fit", "fitnet", student=["a"], teacher=["b"])], {"s:a": 2, "t:b": 3})
    fs = torch.rand(1, 2, 3, 3, requires_grad=True)
    ft = torch.rand(1, 3, 3, 3, requires_grad=True)
    out = crit(LossInputs(lq=full(LQ, 0), gt=full(HR, 0), sr=full(HR, 0), s_feats={"a": fs}, t_feats={"b": ft}))
    out["total"].backward()
    assert isinstance(crit.terms["fit"].adapters[0], nn.Conv2d)
    assert crit.terms["fit"].adapters[0].weight.grad is not None and fs.grad is not None and ft.grad is None


def test_normalized_feature_terms_ignore_scale():
    fs, ft = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    for kind in ("fitnet", "facd", "lsfd"):
        term = LossTerm(kind, kind, student=["a"], teacher=["b"], params={"normalize": True})
        torch.manual_seed(0)
        crit = Criterion([term], {"s:a": 3, "t:b": 3})
        x = LossInputs(lq=full(LQ, 0), gt=full((2, 3, 4, 4), 0), sr=full((2, 3, 4, 4), 0.5),
                       t_sr=[full((2, 3, 4, 4), 0.1)], s_feats={"a": fs}, t_feats={"b": ft})
        a = crit(x)[kind]
        x.t_feats = {"b": 255 * ft + 7}
        assert crit(x)[kind].item() == pytest.approx(a.item(), rel=1e-4), kind


def test_loss_config_is_strict():
    with pytest.raises(ConfigError, match="unknown param 'epsilon'"):
        Criterion([LossTerm("cb", "charbonnier", params={"epsilon": 1.0})])
    with pytest.raises(ConfigError, match="kind 'kl'"):
        LossTerm("x", "kl")
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(TrainConfig, {"student": {"genotype": "dlsr_x2"}, "optim": {"learning_rate": 1.0}})
    with pytest.raises(ConfigError, match="unknown loss 'kd'"):
        from_dict(TrainConfig, {"student": {"genotype": "dlsr_x2"}, "stages": [{"start": 5, "weights": {"kd": 1}}]})


# ---------------------------------------------------------------------------------------------------------
# hooks and upcycling


def test_feature_hooks_record_scale_and_are_removed():
    net = build_network("dlsr_x2")  # rgb_range 255: features are reported divided by 255
    x = torch.rand(1, 3, 16, 16)
    with FeatureHooks(net, ["B1", "LR_conv"]) as hooks:
        net(x)
        f1, f2 = hooks.take()
        with FeatureHooks(net, ["B1"], scale=1.0) as raw:
            net(x)
            assert torch.allclose(raw.take()[0] / 255, hooks.take()[0])
    assert f1.shape == f2.shape == (1, 48, 16, 16)
    assert all(not m._forward_hooks for m in net.modules())
    with pytest.raises(RuntimeError), FeatureHooks(net, ["B2"]):
        raise RuntimeError("boom")
    assert all(not m._forward_hooks for m in net.modules())
    with pytest.raises(ValueError, match="no submodule 'B9'"):
        FeatureHooks(net, ["B9"])


def test_zoom_in_tiles_and_invertible_augmentations():
    gt = torch.arange(4.0).view(1, 1, 2, 2).repeat_interleave(3, -1).repeat_interleave(3, -2).expand(2, 3, 6, 6)
    tiles = zoom_in(gt, 2, sample_rngs(0, 0, [0, 1]), n_sub=4)  # all 4 tiles of each patch, tile-major
    assert tiles.shape == (8, 3, 3, 3)
    for i in range(2):
        assert sorted(tiles[k * 2 + i, 0, 0, 0].item() for k in range(4)) == [0, 1, 2, 3]
    x = torch.rand(16, 3, 5, 5)
    aug = InvertibleAug.draw(sample_rngs(1, 2, range(16)), prob=0.5)
    assert all(f.any() and not f.all() for f in aug.flags.values())
    assert torch.equal(aug.inverse(aug.apply(x)), x)

    def up(t):  # nearest x2 commutes with flips, transpose and 1 - x: label consistency holds exactly
        return t.repeat_interleave(2, -1).repeat_interleave(2, -2)

    assert torch.allclose(aug.inverse(up(aug.apply(x))), up(x))
    assert torch.allclose(zoom_out(full((1, 3, 8, 8), 0.3), 2), full((1, 3, 4, 4), 0.3))
    assert torch.allclose(enhance_hr(full((1, 3, 8, 8), 0.3), 2), full((1, 3, 4, 4), 0.3))


# ---------------------------------------------------------------------------------------------------------
# end to end


def test_smoke_cli_then_evaluate_checkpoint(tmp_path):
    out = tmp_path / "run"
    rc = import_tool("train").main(["--config", "smoke", "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                             "--set", "loop.steps=4", "val.every=2", "pretrain_teacher.steps=2", "data.repeat=1"])
    assert rc == 0
    cached = list((tmp_path / "cache").glob("teacher-rlfn_s-x2-*.pt"))
    assert len(cached) == 1  # the cached quickstart teacher, trained on [0, 1] with the student's skip
    assert read_checkpoint(cached[0])["spec"]["kwargs"] == {"rgb_range": 1.0, "skip": "bicubic", "nf": 16,
                                                            "num_blocks": 2}
    ck = read_checkpoint(out / "best.pt")
    assert ck["spec"]["genotype"]["channels"] == 8 and ck["config"]["loss"][1]["kind"] == "output_kd"
    assert "builtin-val/psnr_y" in ck["metrics"] and "train_state" in read_checkpoint(out / "last.pt")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any({"loss/l1", "loss/kd", "loss/fitnet", "loss/total"} <= set(r) for r in records)
    assert any("val/psnr_y_mean" in r for r in records)
    assert import_tool("evaluate").main(["--checkpoint", str(out / "best.pt"), "--data", "builtin",
                                  "--json", str(tmp_path / "eval.json")]) == 0
    ev = json.loads((tmp_path / "eval.json").read_text())["results"][0]
    assert ev["psnr_y"] > 5


ALL_TERMS = [
    {"name": "l1", "kind": "l1"},
    {"name": "kd", "kind": "output_kd"},
    {"name": "fitnet", "kind": "fitnet", "weight": 0.1, "student": ["B2"], "teacher": ["block_2"]},
    {"name": "lsfd", "kind": "lsfd", "weight": 0.1, "student": ["B1"], "teacher": ["block_1"]},
    {"name": "facd", "kind": "facd", "weight": 0.1, "student": ["B2"], "teacher": ["block_2"]},
    {"name": "zoom_in", "kind": "zoom_in", "params": {"aug_prob": 0.5}},
    {"name": "zoom_out_pix", "kind": "zoom_out_pix"},
    {"name": "zoom_out_kd", "kind": "zoom_out_kd"},
    {"name": "ehr", "kind": "enhanced_hr", "weight": 0.5},
]


def test_resume_is_bit_identical(tmp_path, hr_dir, teacher_file):
    raw = make_cfg(hr_dir, teacher_file, ALL_TERMS, data={"gt_size": 64}, optim={"ema": 0.9},
                   stages=[{"start": 4, "gt_size": 72, "weights": {"kd": 0.5}}],
                   loop={"steps": 5, "log_every": 2, "seed": 3})
    cfg = from_dict(TrainConfig, raw)
    full_run = Trainer(cfg, tmp_path / "a")
    full_run.fit()
    assert all(p.grad is None for t in full_run.teachers for p in t.parameters())
    Trainer(cfg, tmp_path / "b").fit(stop_after=2)  # "interrupted" after step 2 (steps 3..5 cross an epoch
    assert read_checkpoint(tmp_path / "b" / "last.pt")["step"] == 2  # and the stage boundary)
    Trainer(cfg, tmp_path / "b").fit(resume=True)
    a, b = read_checkpoint(tmp_path / "a" / "last.pt"), read_checkpoint(tmp_path / "b" / "last.pt")
    assert a["step"] == b["step"] == 5
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for part in ("student", "criterion"):
        for key, v in a["train_state"][part].items():
            assert torch.equal(v, b["train_state"][part][key]), (part, key)
    for k, st in a["train_state"]["optimizer"]["state"].items():
        assert all(torch.equal(v, b["train_state"]["optimizer"]["state"][k][n]) for n, v in st.items())

    def losses(d):
        return [{k: v for k, v in json.loads(line).items() if k.startswith("loss/") or k == "step"}
                for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]

    assert losses("a") == losses("b")


def test_ddp_two_processes_match_one(tmp_path, hr_dir, teacher_file):
    raw = make_cfg(hr_dir, teacher_file, ALL_TERMS[:3], optim={"ema": 0.5}, loop={"steps": 3, "log_every": 1},
                   val={"data": [str(require_shared("data", "Set5"))], "max_images": 3, "every": 2,
                        "kd_gate_db": None})  # every rank scores a share of the images, none waits
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(REPO / "tools" / "train.py"), "--config", str(path), "--out", str(tmp_path / "ddp"),
           "--device", "cpu", "--threads", "1"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    Trainer(from_dict(TrainConfig, raw), tmp_path / "one").fit()
    d, o = read_checkpoint(tmp_path / "ddp" / "last.pt"), read_checkpoint(tmp_path / "one" / "last.pt")
    assert d["train_state"]["world_size"] == 2 and o["train_state"]["world_size"] == 1
    for part in ("student", "criterion"):
        for key, v in o["train_state"][part].items():
            assert torch.allclose(v, d["train_state"][part][key], rtol=1e-4, atol=1e-5), (part, key)
    for key, v in o["state_dict"].items():
        assert torch.allclose(v, d["state_dict"][key], rtol=1e-4, atol=1e-5), key

    def losses(p):
        return [r["loss/total"] for r in map(json.loads, (p / "metrics.jsonl").read_text().splitlines())
                if "loss/total" in r]

    assert losses(tmp_path / "ddp") == pytest.approx(losses(tmp_path / "one"), rel=1e-5)
    vd, vo = (read_checkpoint(tmp_path / d / "best.pt")["metrics"] for d in ("ddp", "one"))
    assert vd["Set5/psnr_y"] == pytest.approx(vo["Set5/psnr_y"], abs=1e-3) and math.isfinite(vo["Set5/psnr_y"])


class Poison(Callback):
    """Before step `at` (0-based), set a student weight to NaN."""

    def __init__(self, at):
        self.at = at

    def on_step_start(self, trainer, step):
        if step == self.at:
            with torch.no_grad():
                next(trainer.student.parameters()).fill_(float("nan"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, hr_dir, teacher_file):
    cfg = from_dict(TrainConfig, make_cfg(hr_dir, teacher_file, ALL_TERMS[:2], loop={"steps": 6, "save_every": 2}))
    with pytest.raises(NonFiniteLoss, match=r"step 4 .*last\.pt \(step 2\) is the last good checkpoint"):
        Trainer(cfg, tmp_path, callbacks=[Poison(3)]).fit()
    ck = read_checkpoint(tmp_path / "last.pt")
    assert ck["step"] == 2
    assert all(torch.isfinite(v).all() for v in ck["train_state"]["student"].values())


def test_a_teacher_trained_here_is_published_from_its_final_weights(tmp_path):
    run = tmp_path / "teacher.run"
    run.mkdir()
    spec = {"arch": "rlfn_s", "scale": 2, "kwargs": {}}
    save_checkpoint(run / "best.pt", state_dict={"w": torch.zeros(2)}, spec=spec, step=500)
    save_checkpoint(run / "last.pt", state_dict={"w": torch.ones(2)}, spec=spec, step=1000,
                    train_state={"optimizer": {}})
    import_tool("train")._publish_teacher(run, tmp_path / "teacher.pt")
    ck = read_checkpoint(tmp_path / "teacher.pt")  # not best.pt: that one is chosen on the reported photographs
    assert ck["step"] == 1000 and torch.equal(ck["state_dict"]["w"], torch.ones(2)) and "train_state" not in ck


def test_gradient_calibration_measures_unweighted_terms_and_sets_the_ratio(tmp_path, hr_dir, teacher_file):
    from distill.calibrate import term_gradient_norms, weights_for_ratio

    def norms(fitnet_weight):
        terms = [ALL_TERMS[0], ALL_TERMS[1], {**ALL_TERMS[2], "weight": fitnet_weight}]
        return term_gradient_norms(Trainer(from_dict(TrainConfig, make_cfg(hr_dir, teacher_file, terms)), tmp_path), 2)

    a, b = norms(0.1), norms(10.0)
    assert set(a) == {"l1", "kd", "fitnet"} and all(v > 0 for v in a.values())
    assert b == pytest.approx(a, rel=1e-4)  # per unweighted term: the configured weight does not change it
    w = weights_for_ratio(a, 0.25)
    assert set(w) == {"kd", "fitnet"} and w["fitnet"] * a["fitnet"] == pytest.approx(0.25 * a["l1"])
    with pytest.raises(ValueError, match="no 'l1' term"):
        weights_for_ratio({"kd": 1.0}, 0.25)


def test_teacher_cache_serves_fixed_patches(tmp_path, hr_dir, teacher_file):
    cfg = from_dict(TrainConfig, make_cfg(hr_dir, teacher_file, ALL_TERMS[:2], loop={"steps": 6},
                                          data={"fixed_patches": True, "cache_teacher": True}))
    tr = Trainer(cfg, tmp_path)
    tr.fit()  # 2 epochs of 3 steps: the second epoch is served from the cache
    assert len(tr.cache) == len(tr.dataset) == 12
    item = tr.dataset[5]
    with torch.no_grad():
        fresh = tr.teachers[0](item["lq"][None])[0]
    assert torch.allclose(tr.cache[("t0", 5, 32)], fresh, atol=1e-6)


def test_ema_warms_up_from_the_first_update():
    """decay_n = min(decay, (1 + n) / (10 + n)): the first update keeps 10% of the initial weights, not 99.9%."""
    from distill.trainer import EMA

    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, 0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model, 0)
    assert torch.allclose(ema.model.weight, torch.full((1, 2), 0.9))
    assert ema.decay_at(10_000) == 0.999 and ema.decay_at(1) == pytest.approx(2 / 11)
    assert model.weight.requires_grad and not ema.model.weight.requires_grad


# ---------------------------------------------------------------------------------------------------------
# trainer guarantees: non-finite gradients, frozen teachers, best.pt, the KD gate, loss kinds in one place


class PoisonGrads(Callback):
    """On the given (0-based) steps, make one student gradient infinite (the loss stays finite); snapshot the
    student and EMA weights after every step."""

    def __init__(self, steps):
        self.steps, self.snaps, self.handle = set(steps), {}, None

    def on_step_start(self, trainer, step):
        if step in self.steps:
            p = trainer.student.fea_conv.weight
            self.handle = p.register_hook(lambda g: torch.full_like(g, float("inf")))

    def on_step_end(self, trainer, step, losses):
        if self.handle is not None:
            self.handle.remove()
            self.handle = None
        assert math.isfinite(losses["total"])
        self.snaps[step] = ({k: v.clone() for k, v in trainer.student.state_dict().items()},
                            {k: v.clone() for k, v in trainer.ema.model.state_dict().items()})


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_nonfinite_gradients_never_reach_the_weights(tmp_path, hr_dir, teacher_file):
    raw = make_cfg(hr_dir, teacher_file, ALL_TERMS[:2], optim={"ema": 0.9, "grad_clip": 0.0},
                   loop={"steps": 8, "save_every": 1, "max_bad_steps": 3})
    cb = PoisonGrads({1, 3, 4, 5})
    tr = Trainer(from_dict(TrainConfig, raw), tmp_path, callbacks=[cb])
    with pytest.raises(NonFiniteGradients, match=r"3 steps in a row \(steps 4\.\.6\).*last\.pt \(step 5\)"):
        tr.fit()
    assert tr.skipped_steps == 4
    assert same(*[cb.snaps[2][i] for i in (0,)], cb.snaps[1][0]) and same(cb.snaps[2][1], cb.snaps[1][1])
    assert not same(cb.snaps[3][0], cb.snaps[2][0])  # a good step updates again
    assert same(cb.snaps[5][0], cb.snaps[3][0]) and same(cb.snaps[5][1], cb.snaps[3][1])
    last, best = read_checkpoint(tmp_path / "last.pt"), read_checkpoint(tmp_path / "best.pt")
    assert last["step"] == 5 and same(last["state_dict"], cb.snaps[3][1])  # EMA weights of step 3
    assert all(torch.isfinite(v).all() for v in last["train_state"]["student"].values())
    assert best["step"] == 5 and same(best["state_dict"], last["state_dict"])  # best.pt exists: = last
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert max(r.get("skipped_steps", 0) for r in records) >= 1


def test_handed_in_teachers_are_frozen_and_best_is_last_without_validation(tmp_path, hr_dir, teacher_file):
    from distill import zoo

    teacher = zoo.create("rlfn_s", 2, nf=8, num_blocks=1).train()
    assert all(p.requires_grad for p in teacher.parameters())
    cfg = from_dict(TrainConfig, make_cfg(hr_dir, teacher_file, ALL_TERMS[:2], loop={"steps": 2}))
    tr = Trainer(cfg, tmp_path, teachers=[teacher])
    assert tr.teachers[0] is teacher and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    tr.fit()
    assert all(p.grad is None for p in teacher.parameters())
    best, last = read_checkpoint(tmp_path / "best.pt"), read_checkpoint(tmp_path / "last.pt")
    assert best["step"] == last["step"] == 2 and same(best["state_dict"], last["state_dict"])


@pytest.fixture(scope="module")
def weak_teacher(tmp_path_factory):
    """An untrained RLFN-S (nf 8, 1 block) as an srnas checkpoint: far below bicubic."""
    from distill import zoo
    from srcore.checkpoint import save_checkpoint
    from srcore.modelspec import arch_spec

    torch.manual_seed(0)
    spec = arch_spec("rlfn_s", 2, nf=8, num_blocks=1)
    path = tmp_path_factory.mktemp("weak") / "weak.pt"
    save_checkpoint(path, state_dict=zoo.create("rlfn_s", 2, nf=8, num_blocks=1).state_dict(), spec=spec)
    return path


def gated_cfg(hr_dir, teacher_file, teacher: dict) -> TrainConfig:
    raw = make_cfg(hr_dir, teacher_file, ALL_TERMS[:3], loop={"steps": 1},
                   val={"data": [str(require_shared("data", "Set5"))], "max_images": 1},
                   stages=[{"start": 1, "weights": {"kd": 0.5, "l1": 2.0}}])
    raw["teacher"] = [teacher]
    return from_dict(TrainConfig, raw)


def test_kd_gate(tmp_path, hr_dir, teacher_file, weak_teacher, caplog):
    # a named teacher that does not beat bicubic: an error
    with pytest.raises(ConfigError, match=r"teacher .*weak\.pt: .* does not clear the KD gate of \+0\.2 dB"):
        Trainer(gated_cfg(hr_dir, teacher_file, {"checkpoint": str(weak_teacher)}), tmp_path / "a")
    # the same teacher trained here: dropped with a warning, and the KD terms with it
    with caplog.at_level("WARNING"):
        tr = Trainer(gated_cfg(hr_dir, teacher_file, {"checkpoint": str(weak_teacher), "trained_here": True}),
                     tmp_path / "b")
    assert "not used for KD" in caplog.text and tr.teachers == []
    assert [t.name for t in tr.cfg.loss] == ["l1"] and tr.cfg.stages[0].weights == {"l1": 2.0}
    tr.fit()
    gate_rec = json.loads((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()[0])["kd_gate"][0]
    assert gate_rec["passed"] is False and gate_rec["teacher_psnr"] < gate_rec["bicubic_psnr"]
    assert read_checkpoint(tmp_path / "b" / "best.pt")["config"]["teacher"] == []
    # a registered teacher by name, found through the registry: clears the gate
    tr = Trainer(gated_cfg(hr_dir, teacher_file, {"name": "rlfn_s_x2"}), tmp_path / "c")
    (r,) = tr.gate_results
    assert r.passed and r.gain > 1.0 and [t.name for t in tr.cfg.loss] == ["l1", "kd", "fitnet"]
    # the gate names the sets it scored (the validation sets, not a study's test sets)
    assert r.sets == tuple(d.name for d in tr.val_sets) and f"validation set(s) {r.sets[0]}" in r.message()


def test_a_loss_kind_is_defined_in_one_place(tmp_path, hr_dir, teacher_file, monkeypatch):
    """Every kind's class names its config kind and what the step must compute; a new kind (here defined in
    the test) is accepted by the config and gets exactly what it needs from the trainer."""
    from distill import losses

    assert set(losses.KINDS) == {"l1", "charbonnier", "output_kd", "fitnet", "facd", "lsfd", "zoom_in",
                                 "zoom_out_pix", "zoom_out_kd", "enhanced_hr"}
    for kind, cls in losses.KINDS.items():
        assert cls.kind == kind and cls.needs <= set(losses.NEEDS), kind

    class TeacherGap(losses.Term):  # |sr - T(lq)| on the zoom-out input: needs zoom_out and zoom_out_t
        kind, needs = "gap", frozenset({"zoom_out", "zoom_out_t"})

        def forward(self, x):
            return (x.zoom_out_sr - x.zoom_out_target).abs().mean()

    monkeypatch.setitem(losses.KINDS, "gap", TeacherGap)
    cfg = from_dict(TrainConfig, make_cfg(hr_dir, teacher_file, [{"name": "l1", "kind": "l1"},
                                                                 {"name": "gap", "kind": "gap"}],
                                          data={"gt_size": 64}))
    assert cfg.needs_teacher()
    tr = Trainer(cfg, tmp_path)
    batch = next(tr._batches(0))
    targets = tr.teacher_targets(batch["lq"], batch["gt"], batch["index"], 0)
    assert set(targets) == {"zoom_out_input", "zoom_out_target", "anchor_weights"}
    assert math.isfinite(tr.train_step(batch, 0)["gap"])
