"""The `esr` genotype: a network of the efficient-SR space built from the NTIRE ESR winners, as YAML.

Same file format as the DLSR genotypes (search_spaces/genotype.py: versioned YAML, one-line errors naming the
file and the key, a canonical form that round-trips byte for byte), with its own `space: esr` and keys:

    version: 2
    space: esr
    scale: 4
    channels: 28                  # feature width C
    num_blocks: 6                 # = len(blocks)
    head: conv3xc                 # conv3x3 | conv3xc: RGB -> C before the blocks; none: block 1 takes RGB
    blocks:                       # per block: conv type (all three convs), activation, attention
    - {conv: conv3xc, act: silu, attn: spab}
    - ...
    body: conv3xc                 # none or a conv type: a C -> C conv on the last block's output (tap `body`)
    taps: [head, body, block1, block6.c1]   # what the final fusion concatenates, in order
    fusion: conv1x1               # conv1x1: 1x1 (k C -> C) then a 3x3 conv to 3 s^2 | dwpw: depthwise 3x3
                                  #   and 1x1 over the concat, straight to 3 s^2
    skip: none                    # image-space path: none | nearest | conv_near | bicubic
    bias: true                    # biases in the convs (SPANV2 has none)
    input_scale: 255              # the features see (x - input_mean) * input_scale; the output stays in [0, 1]
    input_mean: [0.4488, 0.4371, 0.4040]

A block (search_spaces/esr_network.py) is three convs of its conv type with its activation after the
first two; with C -> C it adds its input back and applies its attention, attn(f3, x + f3); block 1 without
a head maps RGB -> C, has no residual and ends with its activation (its attention must be `none`). Taps:
`head`, `body`, `block{i}` (block i's output) and `block{i}.c1` (block i's activated first conv, which
SPAN taps). Skips: `nearest` adds the nearest-neighbour upscaled input (fixed), `conv_near` a learnable
depthwise 3x3 anchor initialised to it (SPANV2: concatenated into the dwpw fusion; with conv1x1 fusion
added before the pixel shuffle), `bicubic` the MATLAB-bicubic upscaled input after the shuffle.
Named genotypes: span_x4, dscf_x4, spanv2_x4 (the published layouts).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from search_spaces.esr_ops import ACTS, ATTNS, CONVS, SAME_SIZE_ONLY
from search_spaces.schema import check_keys
from search_spaces.schema import is_int as _is_int
from search_spaces.schema import show as _show

SPACE = "esr"
VERSION = 2
SCALES = (2, 3, 4)
HEADS = ("conv3x3", "conv3xc", "none")
FUSIONS = ("conv1x1", "dwpw")
SKIPS = ("none", "nearest", "conv_near", "bicubic")
REQUIRED_KEYS = ("version", "space", "scale", "channels", "num_blocks", "head", "blocks", "body", "taps",
                 "fusion", "skip")
KEYS = REQUIRED_KEYS + ("bias", "input_scale", "input_mean")
BLOCK_KEYS = ("conv", "act", "attn")
_TAP = re.compile(r"block([1-9][0-9]*)(\.c1)?")


@dataclass(frozen=True)
class Block:
    conv: str
    act: str
    attn: str

    def to_dict(self) -> dict[str, str]:
        return {"conv": self.conv, "act": self.act, "attn": self.attn}


@dataclass(frozen=True)
class ESRGenotype:
    """A network of the `esr` space; fields mirror the YAML keys (tuples instead of lists)."""

    channels: int
    scale: int
    blocks: tuple[Block, ...]
    taps: tuple[str, ...]
    head: str = "conv3xc"
    body: str = "none"
    fusion: str = "conv1x1"
    skip: str = "none"
    bias: bool = True
    input_scale: float = 1.0
    input_mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    num_blocks: int | None = None  # filled in from blocks
    version: int = VERSION
    space: str = SPACE

    def __post_init__(self) -> None:
        raw = self.to_dict()
        for key, value in check_esr(raw, "ESRGenotype").items():
            object.__setattr__(self, key, value)

    def to_dict(self) -> dict[str, Any]:
        """The canonical YAML mapping (fixed key order, lists, integral numbers written as ints)."""
        blocks = [b.to_dict() if isinstance(b, Block) else b for b in self.blocks]
        return {"version": self.version, "space": self.space, "scale": self.scale, "channels": self.channels,
                "num_blocks": len(blocks) if self.num_blocks is None else self.num_blocks, "head": self.head,
                "blocks": blocks, "body": self.body, "taps": list(self.taps), "fusion": self.fusion,
                "skip": self.skip, "bias": self.bias, "input_scale": _num(self.input_scale),
                "input_mean": [_num(v) for v in self.input_mean]}


def _num(v: Any) -> Any:
    return int(v) if isinstance(v, float) and v.is_integer() else v


def tap_block(tap: str) -> tuple[int, bool] | None:
    """(block index, is the .c1 tap) of a block tap, None for head/body."""
    m = _TAP.fullmatch(tap)
    return (int(m.group(1)), m.group(2) is not None) if m else None


def _is_num(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and value == value


def check_esr(raw: Any, source: str) -> dict[str, Any]:
    """Check a raw `esr` genotype mapping; return normalised ESRGenotype fields or raise a one-line
    ValueError naming `source` and the key."""

    def fail(key: str, value: Any, problem: str):
        raise ValueError(f"{source}: {key} = {_show(value)}: {problem}")

    check_keys(raw, source, KEYS, REQUIRED_KEYS, "known keys of an esr genotype")
    if raw["version"] != VERSION or not _is_int(raw["version"]):
        fail("version", raw["version"], f"unsupported esr genotype version; this srnas reads version {VERSION}")
    if raw["space"] != SPACE:
        fail("space", raw["space"], f"an esr genotype has space: {SPACE}")
    scale = raw["scale"]
    if not _is_int(scale) or scale not in SCALES:
        fail("scale", scale, f"unsupported scale; supported: {', '.join(map(str, SCALES))}")
    c = raw["channels"]
    if not _is_int(c) or c < 4:
        fail("channels", c, "must be an integer >= 4")

    def choice(key: str, value: Any, known) -> str:
        if not isinstance(value, str) or value not in known:
            fail(key, value, f"unknown; known: {', '.join(known)}")
        return value

    head = choice("head", raw["head"], HEADS)
    body = choice("body", raw["body"], ("none", *CONVS))
    fusion = choice("fusion", raw["fusion"], FUSIONS)
    skip = choice("skip", raw["skip"], SKIPS)
    bias = raw.get("bias", True)
    if not isinstance(bias, bool):
        fail("bias", bias, "must be true or false")
    input_scale = raw.get("input_scale", 1)
    if not _is_num(input_scale) or not 0 < input_scale <= 65535:
        fail("input_scale", input_scale, "must be a number in (0, 65535] (1, or 255 as SPAN)")
    mean = raw.get("input_mean", [0, 0, 0])
    if not isinstance(mean, (list, tuple)) or len(mean) != 3 or not all(_is_num(v) and 0 <= v <= 1 for v in mean):
        fail("input_mean", mean, "must be a list of 3 numbers in [0, 1] (one per RGB channel)")

    n = raw["num_blocks"]
    if not _is_int(n) or n < 1:
        fail("num_blocks", n, "must be an integer >= 1")
    blocks_raw = raw["blocks"]
    if not isinstance(blocks_raw, (list, tuple)) or len(blocks_raw) != n:
        fail("blocks", blocks_raw, f"must be a list of {n} blocks (num_blocks = {n}), each "
                                   "{conv: ..., act: ..., attn: ...}")
    blocks = []
    for i, b in enumerate(blocks_raw):
        key = f"blocks[{i}]"
        if isinstance(b, Block):
            b = b.to_dict()
        if not isinstance(b, Mapping) or set(b) != set(BLOCK_KEYS):
            fail(key, b, f"a block is a mapping with exactly the keys {', '.join(BLOCK_KEYS)}")
        conv = choice(f"{key}.conv", b["conv"], tuple(CONVS))
        act = choice(f"{key}.act", b["act"], tuple(ACTS))
        attn = choice(f"{key}.attn", b["attn"], tuple(ATTNS))
        if i == 0 and head == "none":
            if conv in SAME_SIZE_ONLY:
                fail(f"{key}.conv", conv, "block 1 maps RGB -> C without a head (head: none); "
                                          f"{conv} maps C -> C only")
            if attn != "none":
                fail(f"{key}.attn", attn, "block 1 maps RGB -> C without a head (head: none): it has no residual "
                                          "to gate, so its attention must be none")
        blocks.append(Block(conv, act, attn))

    taps = raw["taps"]
    if not isinstance(taps, (list, tuple)) or not taps:
        fail("taps", taps, "must be a non-empty list of head, body, block<i> or block<i>.c1")
    for i, t in enumerate(taps):
        key = f"taps[{i}]"
        if not isinstance(t, str):
            fail(key, t, "a tap is head, body, block<i> or block<i>.c1")
        if t in taps[:i]:
            fail(key, t, "tapped twice")
        tb = tap_block(t)
        if t == "head":
            if head == "none":
                fail(key, t, "there is no head to tap (head: none)")
        elif t == "body":
            if body == "none":
                fail(key, t, "there is no body conv to tap (body: none)")
        elif tb is None:
            fail(key, t, "a tap is head, body, block<i> or block<i>.c1")
        elif tb[0] > n:
            fail(key, t, f"there are only {n} blocks")
    if body != "none" and "body" not in taps:
        fail("body", body, "the body conv's output must be tapped (add body to taps, or set body: none)")
    return dict(version=VERSION, space=SPACE, scale=scale, channels=c, num_blocks=n, head=head,
                blocks=tuple(blocks), body=body, taps=tuple(taps), fusion=fusion, skip=skip, bias=bias,
                input_scale=float(input_scale), input_mean=tuple(float(v) for v in mean))


def validate_esr(raw: Any, source: str = "genotype") -> ESRGenotype:
    return ESRGenotype(**check_esr(raw, source))
