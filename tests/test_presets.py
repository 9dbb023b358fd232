"""Every preset in configs/ is a complete, commented YAML that loads (tools/presets.py, srcore/configdoc.py), and
srcore.configdoc writes one out without changing what it says."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from conftest import REPO, import_tool

from srcore.config import from_dict, load_config, to_dict
from srcore.configdoc import complete_yaml, missing_keys, uncommented_keys
from srcore.yamlio import safe_load

presets = import_tool("presets")
PRESETS = sorted((REPO / "configs").glob("*/*.yaml"))


def test_every_preset_is_complete_and_commented():
    assert presets.incomplete_presets() == {}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_preset_loads(path):
    cls = presets.config_classes().get(path.parent.name)
    if cls is None:
        pytest.skip(f"configs/{path.parent.name}: not a folder of tools/presets.py")
    # the fine-tune preset is completed by tools/compress.py, which names the student checkpoint
    sets = ["student.checkpoint=x.pt", "student.genotype=null"] if path.stem == "finetune" else []
    assert to_dict(load_config(cls, path, sets))


@dataclass
class Inner:
    lr: float = 0.1  # the step size
    steps: int = 10  # how many


@dataclass
class Outer:
    name: str = "x"  # a name
    inner: Inner = field(default_factory=Inner)
    extra: Inner | None = None  # optional section
    tags: list[str] = field(default_factory=list)  # labels


def test_complete_yaml_writes_every_key_keeps_comments_and_meaning():
    text = "# header line\n\ninner:\n  # why 0.5\n  lr: 0.5\nname: y  # mine\n"
    out = complete_yaml(Outer, text)
    assert out.startswith("# header line\n")
    assert missing_keys(Outer, safe_load(text)) == ["inner.steps", "extra", "tags"]
    assert missing_keys(Outer, safe_load(out)) == [] and uncommented_keys(out) == []
    assert "  # why 0.5\n  lr: 0.5\n" in out and "name: y  # mine" in out and "steps: 10  # how many" in out
    assert "extra: null  # optional section" in out
    assert from_dict(Outer, safe_load(out)) == from_dict(Outer, safe_load(text))
    assert complete_yaml(Outer, out) == out  # idempotent
    with pytest.raises(ValueError, match="inner.bogus: unknown key"):
        complete_yaml(Outer, "inner: {bogus: 1}\n")
