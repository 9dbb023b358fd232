"""Checkpoint files: atomic saving, every published wrapping of a state dict, strict loading, srnas checkpoints."""
from __future__ import annotations

import io
import os

import pytest
import torch
from conftest import require_shared
from torch import nn

from srcore import checkpoint as ckpt_mod
from srcore.checkpoint import (
    CheckpointError,
    atomic_save,
    load_strict,
    read_checkpoint,
    read_state_dict,
    save_checkpoint,
)
from srcore.modelspec import arch_spec, build_model, genotype_spec, load_checkpoint_model, spec_scale


class Tiny(nn.Module):
    def __init__(self, ch: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, 3, 3, padding=1)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x)))


def _sd():
    torch.manual_seed(0)
    return Tiny().state_dict()


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_atomic_save_replaces_the_file(tmp_path):
    path = tmp_path / "sub" / "w.pt"  # parent folder is created
    atomic_save({"a": torch.ones(2)}, path)
    atomic_save({"a": torch.zeros(3)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.zeros(3))
    assert os.listdir(path.parent) == ["w.pt"]


def test_atomic_save_never_leaves_a_torn_file(tmp_path, monkeypatch):
    path = tmp_path / "w.pt"
    atomic_save(_sd(), path)
    good = path.read_bytes()
    real_save = torch.save

    def crashing_save(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])  # half written ...
        raise OSError("disk full")  # ... then the crash

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"other": torch.ones(1000)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["w.pt"], "a temp file was left behind"
    assert _same(read_state_dict(path), _sd())


def test_atomic_save_interrupted_by_keyboard(tmp_path, monkeypatch):
    path = tmp_path / "w.pt"

    def interrupted(obj, f, *a, **k):
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_save(_sd(), path)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {f"module.{k}": v for k, v in sd.items()},
    lambda sd: {"state_dict": sd, "epoch": 12, "optimizer": {"lr": 0.1, "state": {}}},
    lambda sd: {"params": sd, "iter": 5},
    lambda sd: {"params_ema": sd, "params": {k: v * 0 for k, v in sd.items()}},  # EMA wins over params
    lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 1},
    lambda sd: {"state_dict": {"params": sd}, "meta": "x"},
], ids=["bare", "module-prefix", "state_dict+extras", "params", "params_ema", "model+module", "double-nest"])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_read_state_dict_unwraps(tmp_path, wrap, legacy):
    path = tmp_path / "w.pth"
    torch.save(wrap(_sd()), path, _use_new_zipfile_serialization=not legacy)
    sd = read_state_dict(path)
    assert _same(sd, _sd())
    load_strict(Tiny(), sd)  # loads


def test_legacy_file_is_really_legacy(tmp_path):
    torch.save(_sd(), tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    assert not (tmp_path / "old.pth").read_bytes().startswith(b"PK")  # not a zip archive


def test_file_without_tensors_names_the_file(tmp_path):
    path = tmp_path / "meta_only.pth"
    torch.save({"epoch": 3, "name": "x", "optimizer": {"lr": 0.1}}, path)
    with pytest.raises(CheckpointError, match=r"meta_only\.pth.*no state dict"):
        read_state_dict(path)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=r"list\.pth.*no state dict"):
        read_state_dict(tmp_path / "list.pth")
    torch.save({}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match=r"empty\.pth"):
        read_state_dict(tmp_path / "empty.pth")


@pytest.mark.parametrize("content", [b"", b"\x00garbage bytes" * 50, b"PK\x03\x04truncated zip"],
                         ids=["empty", "garbage", "torn-zip"])
def test_garbage_file(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        read_state_dict(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pth: no such checkpoint file"):
        read_state_dict(tmp_path / "nope.pth")


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _sd(), "obj": Tiny()}, path)  # a whole module: needs unpickling code
    with pytest.raises(CheckpointError, match=r"evil\.pth"):
        read_state_dict(path)


def test_load_strict_lists_missing_unexpected_and_shapes():
    sd = dict(_sd())
    sd.pop("conv2.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["conv1.weight"] = torch.zeros(5, 3, 3, 3)
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as e:
        load_strict(model, sd, "some.pth")
    msg = str(e.value)
    assert msg.startswith("some.pth does not fit Tiny")
    assert "1 missing: conv2.bias" in msg
    assert "1 unexpected: extra.weight" in msg
    assert "conv1.weight (5, 3, 3, 3) vs (4, 3, 3, 3)" in msg
    assert "\n" not in msg
    assert _same(model.state_dict(), before), "a failed load must not change the model"


def test_load_strict_shortens_long_lists():
    with pytest.raises(CheckpointError, match=r"4 missing: .*|missing"):
        load_strict(Tiny(), {"x": torch.zeros(1)})
    many = {f"k{i}": torch.zeros(1) for i in range(10)}
    with pytest.raises(CheckpointError, match=r"10 unexpected: k0, k1, k2, k3, k4, k5 \(\+4 more\)"):
        load_strict(Tiny(), {**_sd(), **many})


# --- srnas checkpoints --------------------------------------------------------------------------------------


def _roundtrip(tmp_path, model, spec):
    x = torch.rand(1, 3, 20, 24)  # ESA blocks (RLFN, DLSR) need >= 15 LR pixels
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, state_dict=model.state_dict(), spec=spec, config={"lr": 1e-3}, metrics={"psnr": 30.1},
                    step=42, note="hi")
    ck = read_checkpoint(path)
    assert ck["spec"] == spec and ck["config"] == {"lr": 1e-3} and ck["metrics"] == {"psnr": 30.1}
    assert ck["step"] == 42 and ck["note"] == "hi"
    loaded, ck2 = load_checkpoint_model(path)
    assert not loaded.training and ck2["spec"] == spec
    with torch.no_grad():
        a, b = model.eval()(x), loaded(x)
    assert a.shape == (1, 3, 20 * spec_scale(spec), 24 * spec_scale(spec))
    assert torch.equal(a, b)
    return path


def test_checkpoint_round_trip_arch_spec(tmp_path):
    spec = arch_spec("rlfn_s", 2)
    torch.manual_seed(1)
    model = build_model(spec)
    for p in model.parameters():  # not the initial values, so loading must really happen
        p.data.add_(torch.randn_like(p) * 0.01)
    _roundtrip(tmp_path, model, spec)


def test_checkpoint_round_trip_arch_spec_with_kwargs(tmp_path):
    spec = arch_spec("edsr_baseline", 3, n_resblocks=2, n_feats=16)
    torch.manual_seed(2)
    model = build_model(spec)
    assert sum(p.numel() for p in model.parameters()) < 100_000
    _roundtrip(tmp_path, model, spec)


def test_checkpoint_round_trip_genotype_spec(tmp_path):
    from search_spaces.genotype import load_genotype

    spec = genotype_spec(load_genotype("dlsr_x2"))
    torch.manual_seed(3)
    model = build_model(spec)
    for p in model.parameters():
        p.data.add_(torch.randn_like(p) * 0.01)
    _roundtrip(tmp_path, model, spec)
    assert spec_scale(spec) == 2


def test_checkpoint_with_mismatched_weights(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, state_dict=build_model(arch_spec("rlfn_s", 2)).state_dict(), spec=arch_spec("rlfn_s", 4))
    with pytest.raises(CheckpointError, match=r"c\.pt does not fit .*wrong shape"):
        load_checkpoint_model(path)


def test_bad_spec():
    with pytest.raises(CheckpointError, match="'arch' or a 'genotype'"):
        build_model({"name": "x"})


def test_read_checkpoint_on_a_bare_weight_file(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(_sd(), path)
    with pytest.raises(CheckpointError, match=r"weights\.pth: not an srnas checkpoint.*--weights"):
        read_checkpoint(path)
    torch.save({"format": ckpt_mod.FORMAT, "state_dict": _sd()}, tmp_path / "nospec.pt")
    with pytest.raises(CheckpointError, match="without 'spec'"):
        read_checkpoint(tmp_path / "nospec.pt")


def test_read_checkpoint_on_a_published_weight_file():
    path = require_shared("teachers", "imdn_x2.pth")
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    assert str(path) in str(e.value) and "not an srnas checkpoint" in str(e.value)
    with pytest.raises(CheckpointError, match="not an srnas checkpoint"):
        load_checkpoint_model(path)
