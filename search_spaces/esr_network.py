"""The derived `esr` network: an `ESRGenotype` (search_spaces/esr_genotype.py) turned into an nn.Module.

    features = (x - input_mean) * input_scale
    head:    conv (RGB -> C), or none (block 1 takes RGB)
    block i: o1 = act(c1(h)); f = c3(act(c2(o1)));  C -> C: h = attn(f, h + f);  RGB -> C: h = act(f)
    body:    conv (C -> C) on the last block's output, or none
    fusion:  conv1x1: y = upsampler(fusion_conv(cat[taps])) (1x1 k C -> C, then 3x3 C -> 3 s^2)
             dwpw:    y = pw(dw(cat[anchor?, taps]))    (depthwise 3x3, then 1x1 -> 3 s^2)
    skip:    nearest: y += nearest anchor of x;  conv_near: a learned depthwise 3x3 anchor of x, concatenated
             first into dwpw's input or added to y;  bicubic: MATLAB-bicubic x added after the shuffle
    output = PixelShuffle(s)(y) (+ bicubic): RGB in [0, 1]; the output is not rescaled by input_scale (SPAN's
    convention: with input_scale 255 its last conv learns to give [0, 1] values).

With a skip, the untrained network outputs it: the upsampler (conv1x1) or the pointwise conv (dwpw) starts at
zero, and `conv_near` starts as the nearest anchor (with dwpw, its path through dw and pw starts as the
identity). `deploy=False` (default) builds the training-time conv types (Conv3XC and RRRB branches), which
run, with `online=True` (default), as the one 3x3 convolution their branches compose to, differentiably
(OREPA's online re-parameterization, Hu et al. CVPR 2022): the same function and the same gradients in the
same parameters as running every branch, at about a quarter of the cost;
`compress.reparam.reparameterize` fuses them into plain 3x3 convolutions, and `deploy=True` builds that fused
layout directly. State-dict keys: `head`, `blocks.{i}.c{1,2,3}`, `blocks.{i}.attn`, `body`, `fusion_conv`,
`upsampler`, `dw`, `pw`, `conv_near`.

The published layouts are `esr` genotypes (search_spaces/genotypes/span_x4.yaml, dscf_x4.yaml, spanv2_x4.yaml);
`load_official` renames the keys of their released (deployed) files one to one onto this layout and loads
them strictly.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from compress.blocks import RRRB, Conv3XC
from search_spaces.esr_genotype import Block, ESRGenotype
from search_spaces.esr_ops import ACTS, ATTNS, build_conv, conv3x3, conv_kernel
from srcore.checkpoint import CheckpointError, load_strict, read_state_dict
from srcore.skip import BicubicUpsample, nearest_anchor


def run_conv(module: nn.Module, x: torch.Tensor, online: bool) -> torch.Tensor:
    """module(x); a multi-branch block (Conv3XC, RRRB in training form) with `online` runs as the one 3x3 conv
    its branches compose to (`esr_ops.conv_kernel`): the same function and gradients, at one conv's cost."""
    if online and isinstance(module, (Conv3XC, RRRB)) and not module.deployed:
        return conv3x3(x, conv_kernel(module))
    return module(x)


class ESRBlock(nn.Module):
    """Three convs of one conv type with the activation after the first two; a residual + attention when
    c_in == c, else the activation after the third (see the module docstring). Returns (output, o1)."""

    def __init__(self, c_in: int, c: int, block: Block, bias: bool = True, deploy: bool = False,
                 online: bool = True):
        super().__init__()
        self.online = online
        self.c1 = build_conv(block.conv, c_in, c, bias, deploy)
        self.c2 = build_conv(block.conv, c, c, bias, deploy)
        self.c3 = build_conv(block.conv, c, c, bias, deploy)
        self.act = ACTS[block.act]()
        self.residual = c_in == c
        self.attn = ATTNS[block.attn](c)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        o1 = self.act(run_conv(self.c1, x, self.online))
        f = run_conv(self.c3, self.act(run_conv(self.c2, o1, self.online)), self.online)
        if not self.residual:
            return self.act(f), o1
        return self.attn(f, x + f), o1


@torch.no_grad()
def nearest_init(conv: nn.Conv2d) -> None:
    """A depthwise 3x3 conv RGB -> 3 s^2 (groups 3) that gives the nearest anchor: centre taps of 1."""
    conv.weight.zero_()
    conv.weight[:, 0, 1, 1] = 1.0


@torch.no_grad()
def skip_init(dw: nn.Conv2d, pw: nn.Conv2d, anchor: int) -> None:
    """dwpw fusion with a skip: pw starts at zero, except that the first `anchor` channels (conv_near's)
    pass through dw and pw unchanged (dw centre tap 1, pw identity)."""
    pw.weight.zero_()
    if pw.bias is not None:
        pw.bias.zero_()
    if anchor:
        dw.weight[:anchor].zero_()
        dw.weight[:anchor, 0, 1, 1] = 1.0
        if dw.bias is not None:
            dw.bias[:anchor].zero_()
        pw.weight[torch.arange(anchor), torch.arange(anchor), 0, 0] = 1.0


def add_tail(net: nn.Module, fusion: str, n_in: int, c: int, scale: int, bias: bool, conv_near: bool,
             skip: bool) -> None:
    """Give `net` its fusion of `n_in` tapped channels (conv1x1: `fusion_conv` + `upsampler`; dwpw: `dw` + `pw`)
    and its `conv_near` (or None), initialised as the module docstring says when it has a skip."""
    up = 3 * scale * scale
    net.conv_near = nn.Conv2d(3, up, 3, padding=1, groups=3, bias=False) if conv_near else None
    if conv_near:
        nearest_init(net.conv_near)
    if fusion == "conv1x1":
        net.fusion_conv = nn.Conv2d(n_in, c, 1, bias=bias)
        net.upsampler = nn.Conv2d(c, up, 3, padding=1, bias=bias)
        if skip:
            nn.init.zeros_(net.upsampler.weight)
            if bias:
                nn.init.zeros_(net.upsampler.bias)
    else:
        anchor = up if conv_near else 0
        net.dw = nn.Conv2d(anchor + n_in, anchor + n_in, 3, padding=1, groups=anchor + n_in, bias=bias)
        net.pw = nn.Conv2d(anchor + n_in, up, 1, bias=bias)
        if skip:
            skip_init(net.dw, net.pw, anchor)


class ESRNet(nn.Module):
    """An SR network of the `esr` space (see the module docstring)."""

    def __init__(self, genotype: ESRGenotype, deploy: bool = False, online: bool = True):
        super().__init__()
        g = self.genotype = genotype
        self.online = online
        c, s, bias = g.channels, g.scale, g.bias
        self.scale = s
        self.input_scale = float(g.input_scale)
        self.register_buffer("mean", torch.tensor(g.input_mean).view(1, 3, 1, 1), persistent=False)
        self.shift = any(g.input_mean)
        self.head = build_conv(g.head, 3, c, bias, deploy) if g.head != "none" else None
        self.blocks = nn.ModuleList(ESRBlock(3 if i == 0 and self.head is None else c, c, b, bias, deploy, online)
                                    for i, b in enumerate(g.blocks))
        self.body = build_conv(g.body, c, c, bias, deploy) if g.body != "none" else None
        add_tail(self, g.fusion, len(g.taps) * c, c, s, bias, conv_near=g.skip == "conv_near", skip=g.skip != "none")
        self.bicubic = BicubicUpsample(s) if g.skip == "bicubic" else None
        self.needed = set(g.taps)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The tapped feature maps, in the genotype's tap order."""
        h = x - self.mean if self.shift else x
        h = h * self.input_scale if self.input_scale != 1 else h
        taps: dict[str, torch.Tensor] = {}
        if self.head is not None:
            h = taps["head"] = run_conv(self.head, h, self.online)
        for i, block in enumerate(self.blocks, start=1):
            h, o1 = block(h)
            if f"block{i}" in self.needed:
                taps[f"block{i}"] = h
            if f"block{i}.c1" in self.needed:
                taps[f"block{i}.c1"] = o1
        if self.body is not None:
            taps["body"] = run_conv(self.body, h, self.online)
        return [taps[t] for t in self.genotype.taps]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.features(x)
        if self.genotype.fusion == "conv1x1":
            y = self.upsampler(self.fusion_conv(torch.cat(feats, 1) if len(feats) > 1 else feats[0]))
            if self.conv_near is not None:
                y = y + self.conv_near(x)
        else:
            parts = ([self.conv_near(x)] if self.conv_near is not None else []) + feats
            y = self.pw(self.dw(torch.cat(parts, 1) if len(parts) > 1 else parts[0]))
        if self.genotype.skip == "nearest":
            y = y + nearest_anchor(x, self.scale)
        out = F.pixel_shuffle(y, self.scale)
        return out + self.bicubic(x) if self.bicubic is not None else out


# ----------------------------------------------------------------------------------------------------
# the published layouts: released (deployed) files -> this layout, key by key


def _shift(m: re.Match) -> str:
    return str(int(m.group(1)) - 1)


# (pattern, replacement) per layout; block indices are 1-based in the files, 0-based here
OFFICIAL_LAYOUTS: dict[str, list[tuple[str, str]]] = {
    "span": [  # SPAN (NTIRE 2024) and DSCF (NTIRE 2025): hongyuanyu/SPAN's deployed keys
        (r"^conv_1\.", "head."),
        (r"^block_(\d+)\.c(\d)_r\.", "blocks.{i}.c{2}."),
        (r"^conv_2\.", "body."),
        (r"^conv_cat\.", "fusion_conv."),
        (r"^upsampler\.0\.", "upsampler."),
    ],
    "spanv2": [  # SPANV2 (NTIRE 2026): team22's deployed keys
        (r"^block_(\d+)\.c(\d)\.conv\.", "blocks.{i}.c{2}.eval_conv."),
        (r"^block_(\d+)\.guidance_map_conv\.", "blocks.{i}.attn.conv."),
        (r"^depthwise_conv\.", "dw."),
        (r"^pointwise_conv\.", "pw."),
        (r"^conv_near\.", "conv_near."),
    ],
}

# named genotype -> (layout, official file in $SRNAS_SHARED/teachers, registered weights name)
OFFICIAL_FILES = {
    "span_x4": ("span", "span_ntire24_x4.pth"),
    "dscf_x4": ("span", "dscf_ntire25_x4.pth"),
    "spanv2_x4": ("spanv2", "spanv2_ntire26_x4.pth"),
}


def rename_official(state_dict: dict[str, torch.Tensor], layout: str, source: str = "checkpoint") -> dict:
    """The released file's tensors under this network's keys; every key must match one rule."""
    if layout not in OFFICIAL_LAYOUTS:
        raise ValueError(f"unknown official layout {layout!r}; known: {', '.join(OFFICIAL_LAYOUTS)}")
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in OFFICIAL_LAYOUTS[layout]:
            m = re.match(pattern, key)
            if m:
                new = repl.replace("{i}", _shift(m)) if "{i}" in repl else repl
                new = new.replace("{2}", m.group(2)) if "{2}" in new else new
                out[new + key[m.end():]] = value
                break
        else:
            raise CheckpointError(f"{source}: key {key!r} is not part of the {layout} layout")
    return out


def load_official(model: ESRNet, file: str | Path, layout: str) -> ESRNet:
    """Load a released deployed file of `layout` (span, spanv2) into a deployed `model`, strictly."""
    load_strict(model, rename_official(read_state_dict(file), layout, str(file)), str(file))
    return model
