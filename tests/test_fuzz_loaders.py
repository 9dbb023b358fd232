"""Fuzzing the loaders: random mutations of the smoke configs (train, search, pipeline) and of a genotype, as
structures and as YAML text. Each must end, within a time bound, in a valid object or in a one-line
ValueError that starts with the file's name; anything else (another exception, a hang, a multi-line message,
an object with a value out of range) fails the test and prints the offending document."""
from __future__ import annotations

import math
import random
import signal
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, import_tool

from distill.config import TrainConfig
from nas.config import SearchConfig
from search_spaces.genotype import Genotype, parse_genotype, validate
from srcore.config import from_dict, load_config, to_dict
from srcore.yamlio import safe_load

PipelineConfig = import_tool("pipeline").PipelineConfig

CASES = 300
PER_CASE_S = 2.0  # a hang (an alias bomb walked by repr or asdict) would blow this
HOSTILE = [None, 0, -1, -32, 1, 7, 2**63, 10**30, 0.5, -1e-9, 1e308, True, False, "", "x" * 300, "[bold]x[/]",
           "[/]", ":train:", "../../etc/passwd", "3e-4", "null", "builtin:nope", [], {}, [1, 2], [[1, 2], [3]],
           {"a": 1}, [[[[[]]]]], ["identity"] * 3, {"name": "l1", "kind": "l1"}, "conv_3x3", "dlsr_x2"]
YAML_NOISE = "abc019:-[]{},#&*!|>'\"%@`?. \n\t\\"
BASES = {
    "train": (TrainConfig, REPO / "configs" / "train" / "smoke.yaml"),
    "search": (SearchConfig, REPO / "configs" / "search" / "smoke.yaml"),
    "pipeline": (PipelineConfig, REPO / "configs" / "pipeline" / "smoke.yaml"),
    "genotype": (Genotype, REPO / "search_spaces" / "genotypes" / "dlsr_x2.yaml"),
}


def _paths(node, prefix=()):
    """Every (path, value) of a nested structure."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _set(root, path, value):
    node = root
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


def mutate_structure(rng: random.Random, data) -> str:
    data = safe_load(yaml.safe_dump(data))  # a deep copy
    for _ in range(rng.choice((1, 1, 2, 3))):
        path, value = rng.choice([pv for pv in _paths(data) if pv[0]])
        parent = data
        for p in path[:-1]:
            parent = parent[p]
        op = rng.randrange(6)
        if op == 0 and isinstance(parent, dict):
            del parent[path[-1]]
        elif op == 1 and isinstance(parent, dict):
            parent[rng.choice(["bogus", "Steps", path[-1] + "_", "[x]"])] = rng.choice(HOSTILE)
        elif op == 2:
            _set(data, path, [value])
        elif op == 3 and isinstance(value, (int, float)) and not isinstance(value, bool):
            _set(data, path, rng.choice([-value, value * 1000, value + 1, 0, -1, float(value) / 3]))
        else:
            _set(data, path, rng.choice(HOSTILE))
    return yaml.safe_dump(data, sort_keys=False)


def mutate_text(rng: random.Random, text: str) -> str:
    op = rng.randrange(6)
    if op == 0:  # cut off mid-document (a torn write)
        return text[:rng.randrange(len(text))]
    if op == 1:  # random characters
        chars = list(text)
        for _ in range(rng.randint(1, 6)):
            chars.insert(rng.randrange(len(chars) + 1), rng.choice(YAML_NOISE))
        return "".join(chars)
    lines = text.splitlines()
    i = rng.randrange(len(lines))
    key, sep, _ = lines[i].partition(":")
    if not sep or lines[i].lstrip().startswith(("-", "#")):
        return text + "\n" + rng.choice(["]", "{", "&a [*a]", "? [1]\n: 2", "*undefined"])
    if op == 2:  # an alias bomb in place of a value
        bomb = "&a [x, x, x, x, x, x, x, x]" + "".join(
            f", &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]" for p, c in zip("abcdefg", "bcdefgh"))
        lines[i] = f"{key}: [{bomb}]"
    elif op == 3:  # a value that contains itself
        lines[i] = f"{key}: &loop [1, *loop]"
    elif op == 4:  # nesting far deeper than any config
        depth = rng.choice((50, 150, 2000))
        lines[i] = f"{key}: " + "[" * depth + "]" * depth
    else:  # a duplicate key
        lines.insert(i, lines[i])
    return "\n".join(lines) + "\n"


def _finite(node) -> bool:
    return all(not isinstance(v, float) or math.isfinite(v) for _, v in _paths(node))


def check_valid(kind: str, obj) -> None:
    """A loaded object must be usable: ranges hold, numbers are finite, it survives a dump and reload."""
    if kind == "genotype":
        assert validate(obj.to_dict()) == obj
        return
    d = to_dict(obj)
    assert _finite(d)
    assert from_dict(type(obj), safe_load(yaml.safe_dump(d))) == obj
    if kind == "train":
        assert obj.data.batch_size >= 1 and obj.data.gt_size >= 2 and obj.loop.steps >= 1 and obj.loop.log_every >= 1
        assert obj.optim.lr > 0 and 0 <= obj.optim.ema < 1
    if kind == "search":
        assert obj.data.batch_size >= 1 and obj.loop.epochs >= 1 and obj.space.num_cells >= 3


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout


def load(kind: str, text: str, path: Path):
    cls, _ = BASES[kind]
    if kind == "genotype":
        return parse_genotype(text, str(path))
    path.write_text(text, encoding="utf-8")
    return load_config(cls, path)


def test_fuzzed_configs_and_genotypes_end_in_an_object_or_one_line(tmp_path):
    rng = random.Random(8)
    texts = {k: p.read_text() for k, (_, p) in BASES.items()}
    datas = {k: safe_load(t) for k, t in texts.items()}
    outcomes = {"valid": 0, "error": 0}
    slowest, t_all = 0.0, time.perf_counter()
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        for case in range(CASES):
            kind = rng.choice(list(BASES))
            text = mutate_structure(rng, datas[kind]) if rng.random() < 0.5 else mutate_text(rng, texts[kind])
            path = tmp_path / f"{kind}-{case}.yaml"
            t0 = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, PER_CASE_S)
            try:
                obj = load(kind, text, path)
                signal.setitimer(signal.ITIMER_REAL, 0)
                check_valid(kind, obj)
                outcomes["valid"] += 1
            except _Timeout:
                pytest.fail(f"case {case} ({kind}) took over {PER_CASE_S} s:\n{text[:2000]}")
            except ValueError as e:
                signal.setitimer(signal.ITIMER_REAL, 0)
                msg = str(e)
                assert msg.startswith(str(path)) and "\n" not in msg and len(msg) < 1000, \
                    f"case {case} ({kind}): bad message {msg!r} for:\n{text[:2000]}"
                outcomes["error"] += 1
            except Exception as e:  # noqa: BLE001 - the point: anything else is a bug
                signal.setitimer(signal.ITIMER_REAL, 0)
                pytest.fail(f"case {case} ({kind}): {type(e).__name__}: {e}\n{text[:2000]}")
            slowest = max(slowest, time.perf_counter() - t0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert outcomes["valid"] > 20 and outcomes["error"] > CASES / 2, outcomes  # the fuzz reaches both outcomes
    assert slowest < PER_CASE_S and time.perf_counter() - t_all < 60
