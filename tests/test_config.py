"""Typed YAML configs: nested dataclasses, strict keys and types, --set overrides, presets, round trips."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from srcore.config import ConfigError, apply_overrides, from_dict, load_config, resolve_preset, to_dict
from srcore.yamlio import safe_load


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    milestones: list[int] = field(default_factory=lambda: [100, 200])


@dataclass
class Train:
    optim: Optim = field(default_factory=Optim)
    epochs: int = 10
    amp: bool = False
    loss: Literal["l1", "l2"] = "l1"


@dataclass
class Exp:
    name: str  # required
    scales: tuple[int, ...] = (2,)
    genotype: str | None = "dlsr_x2"
    train: Train = field(default_factory=Train)
    extra: dict[str, Any] = field(default_factory=dict)


YAML = """\
name: run1
scales: [2, 4]
train:
  epochs: 5
  optim:
    lr: 2.0e-4
    betas: [0.8, 0.99]
"""


def _write(tmp_path, text, name="exp.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_typed_loading_of_nested_dataclasses(tmp_path):
    cfg = load_config(Exp, _write(tmp_path, YAML))
    assert isinstance(cfg, Exp) and isinstance(cfg.train, Train) and isinstance(cfg.train.optim, Optim)
    assert cfg.name == "run1" and cfg.scales == (2, 4)
    assert cfg.train.epochs == 5 and cfg.train.optim.lr == 2e-4 and cfg.train.optim.betas == (0.8, 0.99)
    assert cfg.train.optim.milestones == [100, 200] and cfg.train.amp is False  # defaults kept
    assert cfg.genotype == "dlsr_x2"


def test_int_and_exponent_without_dot_are_accepted_for_float(tmp_path):
    cfg = load_config(Exp, _write(tmp_path, "name: a\ntrain: {optim: {lr: 1}}\n"))
    assert cfg.train.optim.lr == 1.0 and isinstance(cfg.train.optim.lr, float)
    # PyYAML (YAML 1.1) reads 3e-4 as the string '3e-4'; a float field must still take it
    cfg = load_config(Exp, _write(tmp_path, "name: a\ntrain: {optim: {lr: 3e-4}}\n"))
    assert cfg.train.optim.lr == 3e-4
    assert load_config(Exp, _write(tmp_path, "name: a\ntrain: {optim: {lr: -1E+2}}\n")).train.optim.lr == -100.0
    # ...but only a float field: a string field keeps its text
    assert load_config(Exp, _write(tmp_path, "name: 1e5\n")).name == "1e5"


def test_unknown_key_names_file_and_dotted_key(tmp_path):
    p = _write(tmp_path, "name: a\ntrain:\n  optim:\n    lrr: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(Exp, p)
    msg = str(e.value)
    assert str(p) in msg and "train.optim.lrr: unknown key; did you mean 'lr'?" in msg
    with pytest.raises(ConfigError, match=r"exp\.yaml:bogus: unknown key \(known"):  # nothing close: no guess
        load_config(Exp, _write(tmp_path, "name: a\nbogus: 1\n"))


@pytest.mark.parametrize("text,where", [
    ("name: a\ntrain: {epochs: 2.5}\n", "train.epochs"),
    ("name: a\ntrain: {epochs: true}\n", "train.epochs"),  # bool is not an int
    ("name: a\ntrain: {amp: 1}\n", "train.amp"),
    ("name: a\ntrain: {optim: {lr: fast}}\n", "train.optim.lr"),
    ("name: 3\n", "name"),
    ("name: a\nscales: 2\n", "scales"),
    ("name: a\nscales: [2, x]\n", "scales[1]"),
    ("name: a\ntrain: {optim: {betas: [0.9]}}\n", "train.optim.betas"),
    ("name: a\ntrain: {loss: l3}\n", "train.loss"),
    ("name: a\ntrain: 5\n", "train"),
    ("name: a\ngenotype: 5\n", "genotype"),
])
def test_wrong_type(tmp_path, text, where):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(Exp, p)
    assert f"{p}:{where}" in str(e.value)


def test_missing_required_key(tmp_path):
    with pytest.raises(ConfigError, match=r"exp\.yaml:name: required key is missing"):
        load_config(Exp, _write(tmp_path, "scales: [2]\n"))


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Exp, _write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Exp, _write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(Exp, tmp_path / "absent.yaml")


def test_set_overrides_are_parsed_as_yaml(tmp_path):
    p = _write(tmp_path, YAML)
    cfg = load_config(Exp, p, ["train.optim.lr=3e-4", "scales=[3, 4]", "genotype=null", "train.epochs=7",
                               "train.amp=true", "train.optim.milestones=[]", "extra.note=hello=world",
                               "name=run2"])
    assert cfg.train.optim.lr == 3e-4 and cfg.scales == (3, 4) and cfg.genotype is None
    assert cfg.train.epochs == 7 and cfg.train.amp is True and cfg.train.optim.milestones == []
    assert cfg.extra == {"note": "hello=world"} and cfg.name == "run2"


def test_override_errors(tmp_path):
    p = _write(tmp_path, YAML)
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(Exp, p, ["train.epochs"])
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(Exp, p, ["train.epochs=many"])
    with pytest.raises(ConfigError, match=r"train\.optim\.nope: unknown key"):
        load_config(Exp, p, ["train.optim.nope=1"])
    with pytest.raises(ConfigError, match="not a section"):
        load_config(Exp, p, ["name.sub=1"])
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Exp, p, ["scales=[2,"])


def test_overrides_do_not_mutate_the_input():
    data = {"name": "a", "train": {"optim": {"lr": 0.1}}}
    before = copy.deepcopy(data)
    out = apply_overrides(data, ["train.optim.lr=0.5", "train.epochs=3", "new.deep.key=1"])
    assert data == before
    assert out["train"]["optim"]["lr"] == 0.5 and out["train"]["epochs"] == 3 and out["new"]["deep"]["key"] == 1
    cfg = from_dict(Exp, data)
    cfg.train.optim.milestones.append(300)
    assert data == before and Optim().milestones == [100, 200]


def test_presets(tmp_path):
    presets = tmp_path / "presets"
    presets.mkdir()
    _write(presets, YAML, "small.yaml")
    _write(presets, "name: big\n", "big.yaml")
    assert resolve_preset("small", presets) == presets / "small.yaml"
    cfg = load_config(Exp, "small", ["train.epochs=1"], preset_dir=presets)
    assert cfg.name == "run1" and cfg.train.epochs == 1
    direct = _write(tmp_path, "name: direct\n", "direct.yaml")
    assert load_config(Exp, str(direct), preset_dir=presets).name == "direct"
    with pytest.raises(ConfigError) as e:
        resolve_preset("medium", presets)
    assert "medium" in str(e.value) and "big, small" in str(e.value)
    with pytest.raises(ConfigError, match="no such config file"):
        resolve_preset(tmp_path / "missing.yaml", presets)


def test_to_dict_from_dict_round_trip(tmp_path):
    cfg = load_config(Exp, _write(tmp_path, YAML), ["extra.k=[1, 2]"])
    d = to_dict(cfg)
    assert d["scales"] == [2, 4] and d["train"]["optim"]["betas"] == [0.8, 0.99]  # plain lists for YAML/JSON
    assert d["extra"] == {"k": [1, 2]}
    again = from_dict(Exp, d)
    assert again == cfg
    assert to_dict(again) == d
    import yaml

    assert from_dict(Exp, safe_load(yaml.safe_dump(d))) == cfg  # survives a YAML dump
