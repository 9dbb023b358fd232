"""Genotype: the discrete result of a DLSR-style search, as a small versioned YAML file.

(This file is the `dlsr` space's schema and the loader of every genotype: a file with `space: esr` is checked
by search_spaces/esr_genotype.py instead and loads as an `ESRGenotype`.)

A genotype says which network the search found, at both of DLSR's levels:
  * cell level: the three searched ops of the distillation cell (one per distillation stage), either
    shared by every cell (`cell: [op1, op2, op3]`) or given per cell (`cells: [[...], [...], ...]`,
    one list per cell); exactly one of the two keys is present;
  * network level: for every cell k >= 3, the two earlier cells whose outputs are concatenated and fused
    by a 1x1 conv into cell k's input (`inputs`, 1-based cell indices, in concat order; cell 1 always
    takes the head's output and cell 2 cell 1's output, so `inputs[0]` is cell 3's pair).
It also records the op set the search chose from (`ops`), the width (`channels`), the number of cells
(`num_cells`), the upscaling factor (`scale`), the pixel range the published weights expect
(`rgb_range`: 1 for [0,1], 255 for [0,255]; optional, default 1) and, from version 2 on, the image-space
skip (`skip`: none, nearest or bicubic; see srcore/skip.py). Version-1 files have no `skip` key and load
as `skip: none` (DLSR's published network has no image-space path); version 2 requires it.

Example (search_spaces/genotypes/dlsr_x2.yaml):

    version: 1
    space: dlsr
    scale: 2
    channels: 48
    num_cells: 6
    ops: [conv_1x1, sep_conv_7x7, sep_conv_5x5]
    cell: [conv_1x1, sep_conv_7x7, sep_conv_5x5]
    inputs:
    - [1, 2]
    - [2, 3]
    - [2, 4]
    - [4, 5]
    rgb_range: 255

Every problem (bad YAML, missing or unknown key, wrong type, unknown op, op outside the op set, wrong
arity, input pointing forward / to itself / out of range, unsupported version, space or scale) is a
one-line ValueError that names the file and the key. A `Genotype` object is always valid: the dataclass
checks itself on construction. `save_genotype` writes a canonical form, and loading it gives back an
equal `Genotype` (save(load(x)) reproduces a canonical file byte for byte).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from search_spaces.esr_genotype import ESRGenotype, validate_esr
from search_spaces.ops import OPS
from search_spaces.schema import check_keys
from search_spaces.schema import is_int as _is_int
from search_spaces.schema import show as _show
from srcore.skip import SKIPS
from srcore.yamlio import safe_load

VERSION = 2  # written by this srnas; versions 1 (no skip) and 2 are read
VERSIONS = (1, 2)
SPACES = ("dlsr", "esr")  # esr: search_spaces/esr_genotype.py (its own keys)
SCALES = (2, 3, 4)
GENOTYPE_DIR = Path(__file__).resolve().parent / "genotypes"  # named genotypes shipped with the package

REQUIRED_KEYS = ("version", "space", "scale", "channels", "num_cells", "ops", "inputs")
KEYS = ("version", "space", "scale", "channels", "num_cells", "ops", "cell", "cells", "inputs", "rgb_range",
        "skip")


@dataclass(frozen=True)
class Genotype:
    """A searched DLSR-space network; fields mirror the YAML keys (tuples instead of lists)."""

    ops: tuple[str, ...]
    inputs: tuple[tuple[int, int], ...]
    channels: int
    num_cells: int
    scale: int
    cell: tuple[str, str, str] | None = None
    cells: tuple[tuple[str, str, str], ...] | None = None
    rgb_range: float = 1.0
    skip: str = "none"
    version: int = VERSION
    space: str = "dlsr"

    def __post_init__(self) -> None:
        raw = {k: getattr(self, k) for k in KEYS if getattr(self, k) is not None}
        for key, value in _check(raw, "Genotype").items():
            object.__setattr__(self, key, value)  # normalise lists to tuples, ints to float, ...

    def cell_ops(self, k: int) -> tuple[str, str, str]:
        """The three stage ops of cell k (1-based)."""
        return self.cell if self.cell is not None else self.cells[k - 1]

    def cell_inputs(self, k: int) -> tuple[int, int] | None:
        """The two earlier cells feeding cell k (1-based); None for cells 1 and 2 (a plain chain)."""
        return self.inputs[k - 3] if k >= 3 else None

    def to_dict(self) -> dict[str, Any]:
        """The canonical YAML mapping: fixed key order, lists, integral rgb_range written as an int."""
        d: dict[str, Any] = {
            "version": self.version,
            "space": self.space,
            "scale": self.scale,
            "channels": self.channels,
            "num_cells": self.num_cells,
            "ops": list(self.ops),
        }
        if self.cell is not None:
            d["cell"] = list(self.cell)
        else:
            d["cells"] = [list(c) for c in self.cells]
        d["inputs"] = [list(p) for p in self.inputs]
        d["rgb_range"] = int(self.rgb_range) if self.rgb_range.is_integer() else self.rgb_range
        if self.version >= 2:
            d["skip"] = self.skip
        return d


# ----------------------------------------------------------------------------------------------------
# checking a raw mapping


def _check(raw: Any, source: str) -> dict[str, Any]:
    """Check a raw genotype mapping; return normalised Genotype fields or raise a one-line ValueError."""

    def fail(key: str, value: Any, problem: str):
        raise ValueError(f"{source}: {key} = {_show(value)}: {problem}")

    check_keys(raw, source, KEYS, REQUIRED_KEYS)
    if ("cell" in raw) == ("cells" in raw):
        problem = "both are given" if "cell" in raw else "neither is given"
        raise ValueError(f"{source}: cell/cells: give a shared 'cell' or per-cell 'cells', {problem}")

    version = raw["version"]
    if not _is_int(version) or version not in VERSIONS:
        fail("version", version, f"unsupported genotype version; this srnas reads versions "
                                 f"{', '.join(map(str, VERSIONS))}")
    if version == 1:
        skip = raw.get("skip", "none")
        if skip != "none":
            fail("skip", skip, "version 1 genotypes have no image-space skip; write version: 2 to use one")
    elif "skip" not in raw:
        raise ValueError(f"{source}: missing key 'skip' (version 2 genotypes give it: {', '.join(SKIPS)})")
    else:
        skip = raw["skip"]
    if not isinstance(skip, str) or skip not in SKIPS:
        fail("skip", skip, f"unknown image-space skip; known: {', '.join(SKIPS)}")
    space = raw["space"]
    if space != "dlsr":
        fail("space", space, f"unsupported search space; known: {', '.join(SPACES)}")
    scale = raw["scale"]
    if not _is_int(scale) or scale not in SCALES:
        fail("scale", scale, f"unsupported scale; supported: {', '.join(map(str, SCALES))}")
    channels = raw["channels"]
    if not _is_int(channels) or channels < 4 or channels % 2:
        fail("channels", channels, "must be an even integer >= 4 (cells split C into C/2 distilled parts)")
    n = raw["num_cells"]
    if not _is_int(n) or n < 1:
        fail("num_cells", n, "must be an integer >= 1")
    rgb_range = raw.get("rgb_range", 1)
    if not (_is_int(rgb_range) or isinstance(rgb_range, float)) or not 0 < rgb_range <= 65535:
        fail("rgb_range", rgb_range, "must be a number in (0, 65535] (1 for [0,1] weights, 255 for [0,255])")

    op_set = raw["ops"]
    if not isinstance(op_set, (list, tuple)) or not op_set:
        fail("ops", op_set, "must be a non-empty list of op names (the op set the search chose from)")
    for i, name in enumerate(op_set):
        if not isinstance(name, str) or name not in OPS:
            fail(f"ops[{i}]", name, f"unknown op; known ops: {', '.join(OPS)}")
        if name in op_set[:i]:
            fail(f"ops[{i}]", name, "listed twice")

    def check_stage_ops(key: str, ops: Any) -> tuple[str, str, str]:
        if not isinstance(ops, (list, tuple)) or len(ops) != 3:
            fail(key, ops, "must be a list of exactly 3 op names, one per distillation stage")
        for i, name in enumerate(ops):
            if not isinstance(name, str) or name not in OPS:
                fail(f"{key}[{i}]", name, f"unknown op; known ops: {', '.join(OPS)}")
            if name not in op_set:
                fail(f"{key}[{i}]", name, f"not in the op set 'ops' ({', '.join(op_set)})")
        return tuple(ops)

    cell, cells = None, None
    if "cell" in raw:
        cell = check_stage_ops("cell", raw["cell"])
    else:
        cells = raw["cells"]
        if not isinstance(cells, (list, tuple)) or len(cells) != n:
            fail("cells", cells, f"must be a list of {n} op lists, one per cell (num_cells = {n})")
        cells = tuple(check_stage_ops(f"cells[{k}]", ops) for k, ops in enumerate(cells))

    inputs = raw["inputs"]
    n_pairs = max(n - 2, 0)
    if not isinstance(inputs, (list, tuple)) or len(inputs) != n_pairs:
        fail("inputs", inputs, f"must be a list of {n_pairs} pairs of earlier cells, one for each of "
                               f"cells 3..{n} (num_cells = {n})")
    pairs = []
    for i, pair in enumerate(inputs):
        k, key = i + 3, f"inputs[{i}]"
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(_is_int(j) for j in pair):
            fail(key, pair, f"cell {k} needs exactly 2 input cells, as a list of two integers")
        if max(pair) >= k:
            fail(key, list(pair), f"cell {k} takes input from cell {k} or later; "
                                  f"inputs must point to earlier cells (1..{k - 1})")
        if min(pair) < 1:
            fail(key, list(pair), f"cell indices start at 1; inputs must point to earlier cells (1..{k - 1})")
        if pair[0] == pair[1]:
            fail(key, list(pair), f"cell {k} must take two different earlier cells")
        pairs.append((pair[0], pair[1]))

    return dict(version=version, space=space, scale=scale, channels=channels, num_cells=n, ops=tuple(op_set),
                cell=cell, cells=cells, inputs=tuple(pairs), rgb_range=float(rgb_range), skip=skip)


def validate(raw: Any, source: str = "genotype") -> Genotype | ESRGenotype:
    """Check a raw mapping (as read from YAML) and return its genotype, a `Genotype` (space: dlsr) or an
    `ESRGenotype` (space: esr, search_spaces/esr_genotype.py); `source` names it in errors."""
    if isinstance(raw, Mapping) and raw.get("space") == "esr":
        return validate_esr(raw, source)
    return Genotype(**_check(raw, source))


# ----------------------------------------------------------------------------------------------------
# files and named genotypes


def list_genotypes() -> list[str]:
    """Names of the genotypes shipped in search_spaces/genotypes/ (usable with load_genotype)."""
    return sorted(p.stem for p in GENOTYPE_DIR.glob("*.yaml"))


def parse_genotype(text: str, source: str = "genotype") -> Genotype | ESRGenotype:
    """Parse genotype YAML text; any problem is a one-line ValueError starting with `source`."""
    raw = safe_load(text, source)  # srcore.yamlio: alias bombs and recursive aliases are refused
    return validate(raw, source)


def load_genotype(path_or_name: str | Path) -> Genotype | ESRGenotype:
    """Load a genotype (either space) from a YAML file, or by name from the shipped genotypes (e.g. "dlsr_x2",
    "span_x4")."""
    path = Path(path_or_name)
    if not path.is_file():
        named = GENOTYPE_DIR / f"{path_or_name}.yaml"
        if isinstance(path_or_name, str) and path.name == path_or_name and named.is_file():
            path = named
        else:
            raise ValueError(f"{path_or_name}: no such genotype file, and not a named genotype "
                             f"(named: {', '.join(list_genotypes()) or '(none)'})")
    return parse_genotype(path.read_text(encoding="utf-8"), str(path_or_name))


def dump_genotype(g: Genotype | ESRGenotype) -> str:
    """The canonical YAML text of a genotype (flow-style op lists and input pairs)."""
    return yaml.safe_dump(g.to_dict(), sort_keys=False, default_flow_style=None)


def save_genotype(g: Genotype | ESRGenotype, path: str | Path) -> Path:
    """Write `g` as canonical YAML to `path`; returns the path."""
    path = Path(path)
    path.write_text(dump_genotype(g), encoding="utf-8")
    return path
