"""srcore.yamlio.safe_load: PyYAML's safe loader, with alias bombs, recursion, deep nesting and huge documents
refused in bounded time; and no other YAML reader anywhere in the repository."""
from __future__ import annotations

import re
import time

import pytest
from conftest import REPO

from srcore.config import ConfigError, apply_overrides
from srcore.yamlio import MAX_NODES, YAMLLoadError, safe_load


def bomb(levels: int, fanout: int = 9) -> str:
    names = [f"l{i}" for i in range(levels)]
    lines = [f"{names[0]}: &{names[0]} [{', '.join(['x'] * fanout)}]"]
    lines += [f"{c}: &{c} [{', '.join([f'*{p}'] * fanout)}]" for p, c in zip(names, names[1:])]
    return "\n".join(lines) + "\n"


def test_ordinary_documents_and_moderate_aliases_load():
    assert safe_load("a: 1\nb: [x, {c: 3e-4}]\n") == {"a": 1, "b": ["x", {"c": "3e-4"}]}
    assert safe_load("") is None and safe_load("# only a comment\n") is None
    merged = safe_load("base: &b {lr: 1, steps: 2}\nrun: {<<: *b, steps: 3}\n")
    assert merged["run"] == {"lr": 1, "steps": 3}
    assert len(safe_load(bomb(4))["l3"]) == 9  # 9^4 = 6561 values: allowed


@pytest.mark.parametrize("text,message", [
    (bomb(9), f"expands to more than {MAX_NODES} values"),
    ("a: &a [1, *a]\n", "recursive structure"),
    ("a: &a {b: *a}\n", "recursive structure"),
    ("a: " + "[" * 5000 + "]" * 5000, "nested more than 100 levels"),
    ("a:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 300)), "nested more than 100 levels"),
    ("a: [" + ", ".join(["1"] * 400_000) + "]", "more than the 1000000 a config"),
    ("a: [1, 2\n", "not valid YAML (expected ',' or ']', but got '<stream end>' at line 2, column 1)"),
    ("a: *nowhere\n", "not valid YAML (found undefined alias 'nowhere'"),
    ("!!python/object:os.system {}\n", "not valid YAML (could not determine a constructor"),
])
def test_hostile_documents_are_refused_quickly(text, message):
    t0 = time.perf_counter()
    with pytest.raises(YAMLLoadError) as e:
        safe_load(text, "doc.yaml")
    assert time.perf_counter() - t0 < 1.5
    assert str(e.value).startswith("doc.yaml: ") and message in str(e.value) and "\n" not in str(e.value)


def test_set_values_go_through_the_same_loader():
    with pytest.raises(ConfigError, match=r"--set loss\.params: the document expands"):
        apply_overrides({}, ["loss.params=" + "{" + bomb(9).replace("\n", ", ") + "}"])


def test_no_other_yaml_reader_in_the_repository():
    """Every YAML read goes through srcore.yamlio (tests read their fixtures with it too)."""
    offenders = []
    for path in REPO.rglob("*.py"):
        if ".venv" in path.parts or path.name in ("yamlio.py", "test_yamlio.py"):
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"yaml\.(safe_load|load|full_load|unsafe_load|load_all|safe_load_all)\(", line):
                offenders.append(f"{path.relative_to(REPO)}:{i}")
    assert not offenders, offenders
