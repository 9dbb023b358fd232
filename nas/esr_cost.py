"""The cost term of the esr search: the expected cost of the DEPLOYED derived network under the mixtures.

A derived esr network is deployed with its multi-branch conv types fused (`compress.reparam`): conv3x3,
conv3xc and rrrb all become one plain 3x3 convolution, dsconv stays a depthwise 3x3 + a 1x1, conv1x1 a
1x1. The table therefore holds the cost of each choice's deployed form, measured (latency, on the search
device, at `cost.input_size`) or counted (params, MACs):

    conv:<type>      one conv of that type, C -> C, deployed (conv_rgb:<type>: RGB -> C, block 1 without a head);
                     conv types that deploy to the same convolution share one measurement;
    act:<name>       the activation on C channels;
    attn:<name>      the attention with its residual add, attn(f, x + f) (none: the add alone);
    skip:<name>      the image-space path (none: 0);
    fixed            head, body conv, the fusion of `space.taps` taps, the upsampler and the pixel shuffle.

The cost is additive over these parts (FBNet's latency lookup table): with w the mixture weights and
g_i block i's keep weight,

    E = fixed + sum_i g_i [ sum over its 3 convs of w_conv . conv + n_act w_act . act + w_attn . attn ] + w_skip . skip

(n_act = 2 for a C -> C block, 3 for block 1 without a head), differentiable in `alphas`. The tap choice
does not change the cost (k taps are always kept; the body conv is counted whether it is tapped or not).
The penalty is the hinge (or two-sided) of nas/cost.py around `cost.target`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compress.reparam import reparameterize
from nas.config import CostConfig, ESRSpaceConfig
from nas.cost import UNITS, CostTable, _median_ms
from nas.esr_supernet import first_block_rgb, layout, segment_weights, tap_candidates
from search_spaces.esr_genotype import ESRGenotype
from search_spaces.esr_ops import ACTS, ATTNS, build_conv
from srcore.cost import count_flops, count_params
from srcore.skip import BicubicUpsample, nearest_anchor


def deployed(module: nn.Module) -> nn.Module:
    """A module's deployed form (multi-branch blocks fused), in eval mode."""
    return reparameterize(module).eval()


class _Attn(nn.Module):
    def __init__(self, attn: nn.Module):
        super().__init__()
        self.attn = attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x + x)


class _Skip(nn.Module):
    """The image-space path `kind` on an LR image x, added to a (pre-allocated) upsampler output."""

    def __init__(self, kind: str, space: ESRSpaceConfig, size: tuple[int, int]):
        super().__init__()
        self.kind = kind
        self.scale = s = space.scale
        up = 3 * s * s
        h, w = size
        self.register_buffer("y", torch.zeros(1, up, h, w), persistent=False)
        self.register_buffer("hr", torch.zeros(1, 3, h * s, w * s), persistent=False)
        if kind == "conv_near":
            self.conv_near = nn.Conv2d(3, up, 3, padding=1, groups=3, bias=False)
            if space.fusion == "dwpw":  # conv_near's channels go through the depthwise and pointwise convs too
                self.dw = nn.Conv2d(up, up, 3, padding=1, groups=up, bias=space.bias)
                self.pw = nn.Conv2d(up, up, 1, bias=False)  # the pointwise conv's bias is counted in `fixed`
        self.bicubic = BicubicUpsample(s) if kind == "bicubic" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "nearest":
            return self.y + nearest_anchor(x, self.scale)
        if self.kind == "conv_near":
            a = self.conv_near(x)
            return self.y + (self.pw(self.dw(a)) if hasattr(self, "pw") else a)
        if self.kind == "bicubic":
            return self.hr + self.bicubic(x)
        return self.y


class _Fixed(nn.Module):
    """Input normalisation, head, body conv, fusion of k taps, upsampler, pixel shuffle (deployed)."""

    def __init__(self, space: ESRSpaceConfig, size: tuple[int, int]):
        super().__init__()
        c, s, bias = space.channels, space.scale, space.bias
        self.space = space
        self.k = min(space.taps, len(tap_candidates(space)))
        self.head = deployed(build_conv(space.head, 3, c, bias)) if space.head != "none" else None
        self.body = deployed(build_conv(space.body, c, c, bias)) if space.body != "none" else None
        self.register_buffer("feat", torch.zeros(1, c, *size), persistent=False)
        up = 3 * s * s
        if space.fusion == "conv1x1":
            self.fusion = nn.Sequential(nn.Conv2d(self.k * c, c, 1, bias=bias),
                                        nn.Conv2d(c, up, 3, padding=1, bias=bias))
        else:
            n = self.k * c
            self.fusion = nn.Sequential(nn.Conv2d(n, n, 3, padding=1, groups=n, bias=bias),
                                        nn.Conv2d(n, up, 1, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = (x - 0.5) * self.space.input_scale
        f = self.head(h) if self.head is not None else self.feat
        taps = [f] * self.k
        if self.body is not None:
            taps[-1] = self.body(f)
        return F.pixel_shuffle(self.fusion(torch.cat(taps, 1)), self.space.scale)


def _signature(module: nn.Module) -> tuple:
    """What a deployed module computes with, for sharing one latency measurement between equal modules."""
    return tuple((m.in_channels, m.out_channels, m.kernel_size, m.groups, m.bias is not None)
                 for m in module.modules() if isinstance(m, nn.Conv2d))


def build_esr_cost_table(space: ESRSpaceConfig, cost: CostConfig, device: str | torch.device = "cpu") -> CostTable:
    """Measure (latency) or count (params, MACs) every deployed choice of the esr space on `device`."""
    kind = cost.kind
    if kind not in UNITS:
        raise ValueError(f"cost.kind = {kind!r}: no table to build (expected one of {', '.join(UNITS)})")
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        return _build(space, cost, kind, device)


def _build(space: ESRSpaceConfig, cost: CostConfig, kind: str, device: torch.device) -> CostTable:
    c, size = space.channels, tuple(cost.input_size)
    memo: dict[tuple, float] = {}

    def measure(module: nn.Module, channels: int, share: bool = False) -> float:
        module = module.to(device).eval()
        x = torch.full((1, channels, *size), 0.5, device=device)
        if kind == "params":
            return float(count_params(module))
        if kind == "macs":
            return float(count_flops(module, x)["macs"])
        key = (_signature(module), channels) if share else None
        if key is None or key not in memo:
            value = _median_ms(module, x, cost.latency_repeats)
            if key is None:
                return value
            memo[key] = value
        return memo[key]

    ops: dict[str, float] = {}
    for name in space.convs:
        ops[f"conv:{name}"] = measure(deployed(build_conv(name, c, c, space.bias)), c, share=True)
        if first_block_rgb(space) and name != "rrrb":
            ops[f"conv_rgb:{name}"] = measure(deployed(build_conv(name, 3, c, space.bias)), 3, share=True)
    for name in space.acts:
        ops[f"act:{name}"] = measure(ACTS[name](), c)
    for name in space.attns:
        ops[f"attn:{name}"] = measure(_Attn(ATTNS[name](c)), c)
    for name in space.skips:
        ops[f"skip:{name}"] = 0.0 if name == "none" else measure(_Skip(name, space, size), 3)
    fixed = measure(_Fixed(space, size), 3)
    return CostTable(kind, UNITS[kind], ops, fixed, c, space.num_blocks, size, str(device),
                     torch.get_num_threads() if device.type == "cpu" else 0)


class ESRCostModel(nn.Module):
    """E[cost](alphas) and the penalty of `CostConfig` for the esr supernet; no parameters of its own."""

    def __init__(self, table: CostTable, space: ESRSpaceConfig, cfg: CostConfig):
        super().__init__()
        self.table, self.space, self.cfg = table, space, cfg
        if cfg.target is None:
            raise ValueError("cost.target is needed for a cost penalty")
        self.target = cfg.target  # absolute, in the table's unit
        self.layout = layout(space)
        self.segments = {s.name: s for s in self.layout}
        self.costs: dict[str, torch.Tensor] = {}
        rgb = first_block_rgb(space)
        for seg in self.layout:
            kind = seg.name.rsplit(".", 1)[-1]
            if kind in ("conv", "act", "attn", "skip") and not (rgb and seg.name == "block1.attn"):
                self.costs[seg.name] = torch.tensor([table.ops[f"{kind}:{n}"] for n in seg.candidates],
                                                    dtype=torch.float64)
        if rgb:
            seg = self.segments["block1.conv"]
            self.costs["block1.conv_rgb"] = torch.tensor([table.ops[f"conv_rgb:{n}"] for n in seg.candidates],
                                                         dtype=torch.float64)

        if cfg.reference is not None:
            self.target = cfg.target * self.derived_cost(reference_genotype(cfg.reference, space))

    def expected(self, alphas: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
        """The expected deployed cost (module docstring), differentiable in alphas."""
        w = segment_weights(alphas.double(), self.layout, tau)
        total = alphas.new_tensor(self.table.fixed, dtype=torch.float64)
        for i in range(1, self.space.num_blocks + 1):
            conv, act = self.dot(w, f"block{i}.conv", alphas), self.dot(w, f"block{i}.act", alphas)
            if i == 1 and first_block_rgb(self.space):
                block = self.dot(w, "block1.conv", alphas, "block1.conv_rgb") + 2 * conv + 3 * act
            else:
                block = 3 * conv + 2 * act + self.dot(w, f"block{i}.attn", alphas)
            total = total + w[f"block{i}.depth"][0] * block
        return total + self.dot(w, "skip", alphas)

    def dot(self, w: dict[str, torch.Tensor], name: str, like: torch.Tensor, costs: str | None = None) -> torch.Tensor:
        """Mixture weights of choice `name` . its cost vector (`costs` names another vector of the same choice)."""
        return (w[name] * self.costs[costs or name].to(like.device)).sum()

    def penalty(self, alphas: torch.Tensor, tau: float = 1.0, ramp: float = 1.0) -> torch.Tensor:
        """weight * ramp * relu(E / target - 1) (hinge) or |E / target - 1| (two_sided), in alphas' dtype."""
        gap = self.expected(alphas, tau) / self.target - 1.0
        gap = F.relu(gap) if self.cfg.mode == "hinge" else gap.abs()
        return (self.cfg.weight * ramp * gap).to(alphas.dtype)

    def derived_cost(self, g: ESRGenotype) -> float:
        """The table's cost of a derived genotype of this space."""
        ops, total = self.table.ops, self.table.fixed
        for i, b in enumerate(g.blocks, start=1):
            if i == 1 and g.head == "none":
                total += ops[f"conv_rgb:{b.conv}"] + 2 * ops[f"conv:{b.conv}"] + 3 * ops[f"act:{b.act}"]
            else:
                total += 3 * ops[f"conv:{b.conv}"] + 2 * ops[f"act:{b.act}"] + ops[f"attn:{b.attn}"]
        return total + ops[f"skip:{g.skip}"]

    def genotype_cost(self, g: ESRGenotype) -> dict:
        """The table's cost of a derived genotype beside the (absolute) target, for the derive report (the shape
        of `nas.cost.CostModel.genotype_cost`)."""
        value = self.derived_cost(g)
        return {"kind": self.table.kind, "unit": self.table.unit, "value": value, "target": self.target,
                "ratio_to_target": value / self.target}


def reference_genotype(name: str, space: ESRSpaceConfig) -> ESRGenotype:
    """`cost.reference` loaded and checked against the space: its fixed parts must be the space's and its
    choices in the table, so that its table cost is the cost of the network it names."""
    from search_spaces.genotype import load_genotype

    g = load_genotype(name)
    if not isinstance(g, ESRGenotype):
        raise ValueError(f"cost.reference = {name!r}: not an esr genotype")
    for key in ("channels", "scale", "head", "fusion", "bias"):
        if getattr(g, key) != getattr(space, key):
            raise ValueError(f"cost.reference = {name!r}: its {key} ({getattr(g, key)!r}) differs from the space's "
                             f"({getattr(space, key)!r}); the table would not price it")
    if g.body not in ("none", space.body) or len(g.taps) != space.taps:
        raise ValueError(f"cost.reference = {name!r}: its body conv and number of taps must be the space's "
                         f"({space.body}, {space.taps})")
    missing = sorted({v for b in g.blocks for v, known in ((b.conv, space.convs), (b.act, space.acts),
                                                               (b.attn, space.attns)) if v not in known}
                     | ({g.skip} - set(space.skips)))
    if missing:
        raise ValueError(f"cost.reference = {name!r}: uses {', '.join(missing)}, not candidates of the space")
    return g


def conv_costs(table: CostTable | None, space: ESRSpaceConfig) -> tuple[dict[str, float], str]:
    """Per conv type cost for "cheapest" in the report: the table's, or deployed parameters without one."""
    if table is not None:
        return {n: table.ops[f"conv:{n}"] for n in space.convs}, table.unit
    with torch.random.fork_rng(devices=[]):
        c = space.channels
        return {n: float(count_params(deployed(build_conv(n, c, c, space.bias)))) for n in space.convs}, "params"
