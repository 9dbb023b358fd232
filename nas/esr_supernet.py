"""The `esr` supernet: every discrete choice of the esr space relaxed, as the literature relaxes it.

Layout: the derived `search_spaces.esr_network.ESRNet` with `space.num_blocks` blocks, where
  * each conv of block i is a mixture over the conv types `space.convs` (DARTS: sum_j w_j conv_j(x); the
    three convs of a block share block i's weights, as DLSR's cells share theirs); the conv types are all
    linear maps of at most 3x3, so with `space.fuse` (default) the mixture runs as ONE 3x3 convolution whose
    kernel is sum_j w_j K_j(theta_j), each K_j composed differentiably from conv type j's own branches
    (`search_spaces.esr_ops.conv_kernel`): the same function and the same gradients as running every
    branch (OREPA's online re-parameterization, Hu et al. CVPR 2022), at the price of one conv;
  * the activation of block i is a mixture over `space.acts` (sum_j w_j act_j(h)) and its attention a
    mixture over `space.attns` (sum_j w_j attn_j(f, x + f));
  * depth (`space.depth`): each block that maps C -> C has a keep/drop gate, out = w_keep block(x) +
    w_drop x (FBNet's "skip" candidate, Wu et al. CVPR 2019, ProxylessNAS's zero-width layer): a derived
    network drops the blocks whose gate chooses drop, so the number of blocks is searched with one
    differentiable choice per block (block 1 without a head maps RGB -> C and is always kept);
  * the taps of the final fusion: every candidate tap point (head, each block output, each block's
    activated first conv with `space.tap_c1`, the body conv) feeds the fusion, weighted by softmax(beta)
    (DLSR's / PC-DARTS's edge weights); deriving keeps the `space.taps` largest (top-k). With conv1x1
    fusion the weights are folded into the 1x1 kernel's input columns (as nas/supernet.py's links); with
    `space.scale_free` each weighted edge W_j t_j is rescaled to the RMS of t_j, so the kernel cannot undo
    beta; with dwpw fusion each tap is scaled before the depthwise conv;
  * the image-space path is a mixture over `space.skips`: w_nearest * nearest anchor and w_conv_near *
    conv_near(x) added before the pixel shuffle (conv_near concatenated into the dwpw fusion), w_bicubic *
    bicubic(x) after it; `none` adds nothing. With any path besides none, the last conv starts at zero
    and conv_near at the nearest anchor, as in the derived network.
All mixture weights are softmax(alpha / tau) per choice (`temperature`, set by the search loop) plus
`noise` during a weight step (SDARTS random smoothing). Every architecture logit lives in ONE flat
parameter `alphas`, cut into segments (`layout`: one per block choice and one for the image-space path;
a choice with one candidate has no segment), so the search loop, the architect and the cost term treat
it as they treat the DLSR supernet's alphas; `betas` holds the one tap vector. Input and output are RGB
in [0, 1]; the features see (x - input_mean) * input_scale.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nas.config import ESRSpaceConfig
from nas.mixed import rescale_to
from search_spaces.esr_genotype import ESRGenotype
from search_spaces.esr_network import add_tail
from search_spaces.esr_ops import ACTS, ATTNS, SAME_SIZE_ONLY, build_conv, conv_kernel
from srcore.skip import BicubicUpsample, nearest_anchor

DEPTH = ("keep", "drop")


@dataclass(frozen=True)
class Segment:
    """One relaxed choice: its name (e.g. "block2.conv", "skip"), candidates, and its slice of `alphas`
    (start == stop for a choice with one candidate: fixed, no parameter)."""

    name: str
    candidates: tuple[str, ...]
    start: int
    stop: int


def first_block_rgb(space: ESRSpaceConfig) -> bool:
    return space.head == "none"


def layout(space: ESRSpaceConfig) -> list[Segment]:
    """The segments of `alphas`, in order: per block conv, act, attn, depth; then the image-space path."""
    segments, pos = [], 0

    def add(name: str, candidates: tuple[str, ...]) -> None:
        nonlocal pos
        size = len(candidates) if len(candidates) > 1 else 0
        segments.append(Segment(name, candidates, pos, pos + size))
        pos += size

    for i in range(1, space.num_blocks + 1):
        rgb = i == 1 and first_block_rgb(space)
        add(f"block{i}.conv", tuple(c for c in space.convs if not (rgb and c in SAME_SIZE_ONLY)))
        add(f"block{i}.act", tuple(space.acts))
        add(f"block{i}.attn", ("none",) if rgb else tuple(space.attns))
        add(f"block{i}.depth", DEPTH if space.depth and not rgb else ("keep",))
    add("skip", tuple(space.skips))
    return segments


def tap_candidates(space: ESRSpaceConfig) -> list[str]:
    """Every tap point the supernet's fusion sees, in the order of `betas[0]`."""
    names = ["head"] if space.head != "none" else []
    names += [f"block{i}" for i in range(1, space.num_blocks + 1)]
    if space.tap_c1:
        names += [f"block{i}.c1" for i in range(1, space.num_blocks + 1)]
    return names + (["body"] if space.body != "none" else [])


def segment_weights(alphas: torch.Tensor, segments: list[Segment], tau: float = 1.0,
                    noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """softmax(alpha / tau) (+ noise) of every segment, by name; a one-candidate choice gets [1]."""
    out = {}
    for seg in segments:
        if seg.stop == seg.start:
            out[seg.name] = alphas.new_ones(1)
            continue
        w = F.softmax(alphas[seg.start:seg.stop] / tau, dim=-1)
        out[seg.name] = w if noise is None else w + noise[seg.start:seg.stop].to(w)
    return out


class MixedConv(nn.Module):
    """sum_j w_j conv_j(x) over conv types `names` (c_in -> c); fused into one 3x3 conv by default."""

    def __init__(self, names: tuple[str, ...], c_in: int, c: int, bias: bool, fuse: bool, scale_free: bool):
        super().__init__()
        self.names = names
        self.ops = nn.ModuleList(build_conv(n, c_in, c, bias) for n in names)
        self.scale_free = scale_free
        self.fuse = fuse and not scale_free

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if len(self.ops) == 1:
            return self.ops[0](x)
        if self.fuse:
            kernel = bias = None
            for wj, op in zip(w, self.ops):
                k, b = conv_kernel(op)
                kernel = wj * k if kernel is None else kernel + wj * k
                bias = wj * b if bias is None else bias + wj * b
            return F.conv2d(x, kernel, bias, padding=1)
        if self.scale_free:
            return sum(wj * rescale_to(op(x), x) for wj, op in zip(w, self.ops))
        return sum(wj * op(x) for wj, op in zip(w, self.ops))


def mix(w: torch.Tensor, outs) -> torch.Tensor:
    """sum_j w_j outs_j (just outs_0 for a single candidate)."""
    outs = list(outs)
    return outs[0] if len(outs) == 1 else sum(wj * o for wj, o in zip(w, outs))


class SuperBlock(nn.Module):
    """A block with mixed conv types, activation and attention (and the depth gate, applied outside)."""

    def __init__(self, c_in: int, c: int, convs: tuple[str, ...], acts: tuple[str, ...], attns: tuple[str, ...],
                 space: ESRSpaceConfig):
        super().__init__()
        args = (space.bias, space.fuse, space.scale_free)
        self.c1 = MixedConv(convs, c_in, c, *args)
        self.c2 = MixedConv(convs, c, c, *args)
        self.c3 = MixedConv(convs, c, c, *args)
        self.acts = nn.ModuleList(ACTS[a]() for a in acts)
        self.residual = c_in == c
        self.attns = nn.ModuleList(ATTNS[a](c) for a in attns)

    def forward(self, x: torch.Tensor, w: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        def act(h: torch.Tensor) -> torch.Tensor:
            return mix(w["act"], (a(h) for a in self.acts))

        o1 = act(self.c1(x, w["conv"]))
        f = self.c3(act(self.c2(o1, w["conv"])), w["conv"])
        if not self.residual:
            return act(f), o1
        r = x + f
        out = mix(w["attn"], (m(f, r) for m in self.attns))
        if "depth" in w:
            out = w["depth"][0] * out + w["depth"][1] * x
        return out, o1


class ESRSuperNet(nn.Module):
    def __init__(self, space: ESRSpaceConfig, init_std: float = 1e-3):
        super().__init__()
        self.space = space
        self.layout = layout(space)
        self.segments = {s.name: s for s in self.layout}
        c, s, bias = space.channels, space.scale, space.bias
        self.input_scale = float(space.input_scale)
        self.register_buffer("mean", torch.tensor(space.input_mean).view(1, 3, 1, 1), persistent=False)
        self.head = build_conv(space.head, 3, c, bias) if space.head != "none" else None
        self.blocks = nn.ModuleList()
        for i in range(1, space.num_blocks + 1):
            seg = {k: self.segments[f"block{i}.{k}"].candidates for k in ("conv", "act", "attn")}
            c_in = 3 if i == 1 and self.head is None else c
            self.blocks.append(SuperBlock(c_in, c, seg["conv"], seg["act"], seg["attn"], space))
        self.body = build_conv(space.body, c, c, bias) if space.body != "none" else None
        self.tap_names = tap_candidates(space)
        skips = space.skips
        add_tail(self, space.fusion, len(self.tap_names) * c, c, s, bias, conv_near="conv_near" in skips,
                 skip=any(k != "none" for k in skips))
        self.bicubic = BicubicUpsample(s) if "bicubic" in skips else None
        n_alpha = self.layout[-1].stop
        self.alphas = nn.Parameter(init_std * torch.randn(n_alpha))
        self.betas = nn.ParameterList([nn.Parameter(init_std * torch.randn(len(self.tap_names)))])
        self.temperature = 1.0
        self.noise: torch.Tensor | None = None  # added to the mixture weights (random smoothing), alphas' shape

    # --- parameters ------------------------------------------------------------------------------------

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas, *self.betas]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def mixture_weights(self, alphas: torch.Tensor | None = None, tau: float | None = None,
                        noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """softmax(alpha / tau) (+ noise) of every segment, by segment name; a one-candidate choice gets [1]."""
        return segment_weights(self.alphas if alphas is None else alphas, self.layout,
                               self.temperature if tau is None else tau, noise)

    def tap_weights(self) -> torch.Tensor:
        return F.softmax(self.betas[0], dim=-1)

    # --- forward ---------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.mixture_weights(noise=self.noise)
        h = x - self.mean if any(self.space.input_mean) else x
        h = h * self.input_scale if self.input_scale != 1 else h
        taps: dict[str, torch.Tensor] = {}
        if self.head is not None:
            h = taps["head"] = self.head(h)
        for i, block in enumerate(self.blocks, start=1):
            bw = {k: w[f"block{i}.{k}"] for k in ("conv", "act", "attn")}
            if self.segments[f"block{i}.depth"].stop > self.segments[f"block{i}.depth"].start:
                bw["depth"] = w[f"block{i}.depth"]
            h, taps[f"block{i}.c1"] = block(h, bw)
            taps[f"block{i}"] = h
        if self.body is not None:
            taps["body"] = self.body(h)
        feats = [taps[t] for t in self.tap_names]
        b = self.tap_weights()
        ws = dict(zip(self.space.skips, w["skip"]))
        if self.space.fusion == "conv1x1":
            y = self.upsampler(self.fuse_taps(feats, b))
            if self.conv_near is not None:
                y = y + ws["conv_near"] * self.conv_near(x)
        else:
            parts = [bj * f for bj, f in zip(b, feats)]
            if self.conv_near is not None:
                parts.insert(0, ws["conv_near"] * self.conv_near(x))
            y = self.pw(self.dw(torch.cat(parts, 1)))
        if "nearest" in ws:
            y = y + ws["nearest"] * nearest_anchor(x, self.space.scale)
        out = F.pixel_shuffle(y, self.space.scale)
        return out + ws["bicubic"] * self.bicubic(x) if self.bicubic is not None else out

    def fuse_taps(self, feats: list[torch.Tensor], b: torch.Tensor) -> torch.Tensor:
        """conv1x1(concat_j b_j feats_j), the b_j folded into the kernel's columns; with `scale_free`,
        sum_j b_j rescale(W_j feats_j) + bias."""
        conv, c = self.fusion_conv, self.space.channels
        if self.space.scale_free:
            edges = [rescale_to(F.conv2d(f, conv.weight[:, j * c:(j + 1) * c]), f) for j, f in enumerate(feats)]
            out = sum(b[j] * e for j, e in enumerate(edges))
            return out + conv.bias[:, None, None] if conv.bias is not None else out
        scale = b.repeat_interleave(c)
        return F.conv2d(torch.cat(feats, 1), conv.weight * scale[:, None, None], conv.bias)

    # --- the discrete result -----------------------------------------------------------------------------

    def genotype(self, exclude: tuple[str, ...] = ()) -> ESRGenotype:
        """The argmax genotype of the current alphas and betas (see `nas.esr_derive`)."""
        from nas.esr_derive import derive_esr

        return derive_esr(self.alphas.detach(), [b.detach() for b in self.betas], self.space, exclude=exclude)
