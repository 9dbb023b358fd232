"""From the esr supernet's `alphas` and tap `beta` to an `ESRGenotype`, and the esr collapse report.

Rules (a pure function of alphas, beta and the space):
  * every choice (a segment of `alphas`: a block's conv type, activation, attention and keep/drop gate,
    and the image-space path) keeps its candidate of largest alpha (ties: the first listed); `exclude`
    forbids candidates when another remains;
  * blocks whose gate says drop are dropped (if every gated block says drop, the one most inclined to
    keep stays: a network has at least one block); the rest are renumbered in order;
  * taps: the candidates in order of decreasing beta, each mapped onto the derived network (the output of
    a dropped block is the output of the last kept block before it, or the head; a dropped block's first
    conv no longer exists), until `space.taps` distinct taps are found; they are listed in the candidate
    order (head, block outputs, first convs, body). The body conv is kept only if it is tapped.
The genotype keeps the space's fixed parts (width, head, body, fusion, biases, input normalisation).
Nothing of the search machinery (mixtures, gates, beta, scale-free rescaling) is in the derived network.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from nas.config import ESRSpaceConfig
from nas.esr_supernet import layout, tap_candidates
from search_spaces.esr_genotype import Block, ESRGenotype, tap_block


def _argmax(values: Sequence[float], candidates: Sequence[str], exclude: Sequence[str]) -> str:
    allowed = [i for i, c in enumerate(candidates) if c not in exclude] or list(range(len(candidates)))
    return candidates[max(allowed, key=lambda i: (values[i], -i))]


def choices(alphas: torch.Tensor, space: ESRSpaceConfig, exclude: Sequence[str] = ()) -> dict[str, str]:
    """The argmax candidate of every segment, by segment name."""
    segs = layout(space)
    if alphas.numel() != segs[-1].stop:
        raise ValueError(f"alphas with {alphas.numel()} values do not fit the esr space ({segs[-1].stop} expected)")
    a = alphas.detach().double().cpu().tolist()
    return {s.name: _argmax(a[s.start:s.stop], s.candidates, exclude) if s.stop > s.start else s.candidates[0]
            for s in segs}


def kept_blocks(alphas: torch.Tensor, space: ESRSpaceConfig, chosen: dict[str, str]) -> list[int]:
    """1-based indices of the supernet blocks the derived network keeps."""
    n = space.num_blocks
    kept = [i for i in range(1, n + 1) if chosen[f"block{i}.depth"] == "keep"]
    if kept:
        return kept
    segs = {s.name: s for s in layout(space)}
    a = alphas.detach().double().cpu()

    def keep_margin(i: int) -> float:
        s = segs[f"block{i}.depth"]
        return float(a[s.start] - a[s.start + 1]) if s.stop > s.start else math.inf

    return [max(range(1, n + 1), key=lambda i: (keep_margin(i), -i))]


def map_tap(tap: str, kept: list[int], has_head: bool) -> str | None:
    """The derived network's name for a supernet tap, or None if it no longer exists."""
    tb = tap_block(tap)
    if tb is None:
        return tap
    i, c1 = tb
    if i in kept:
        return f"block{kept.index(i) + 1}" + (".c1" if c1 else "")
    if c1:
        return None
    before = [j for j in kept if j < i]
    if before:
        return f"block{kept.index(before[-1]) + 1}"
    return "head" if has_head else None


def derive_taps(beta: torch.Tensor, space: ESRSpaceConfig, kept: list[int]) -> tuple[str, ...]:
    names = tap_candidates(space)
    values = beta.detach().double().cpu().tolist()
    if len(values) != len(names):
        raise ValueError(f"beta with {len(values)} values does not fit the esr space's {len(names)} tap candidates")
    order = sorted(range(len(names)), key=lambda j: (-values[j], j))
    picked: dict[str, int] = {}
    for j in order:
        t = map_tap(names[j], kept, space.head != "none")
        if t is not None and t not in picked:
            picked[t] = j
        if len(picked) == space.taps:
            break
    return tuple(sorted(picked, key=tap_order))


def tap_order(tap: str) -> tuple[int, int]:
    """The canonical order of taps: head, block outputs, blocks' first convs, body (the supernet's order)."""
    tb = tap_block(tap)
    if tb is None:
        return (0, 0) if tap == "head" else (3, 0)
    return (2 if tb[1] else 1, tb[0])


def derive_esr(alphas: torch.Tensor, betas: Sequence[torch.Tensor], space: ESRSpaceConfig, *,
               exclude: Sequence[str] = ()) -> ESRGenotype:
    """The genotype of raw `alphas` (the flat vector of nas/esr_supernet.py) and `betas` ([tap beta])."""
    unknown = [name for name in exclude if name not in space.candidates()]
    if unknown:
        raise ValueError(f"exclude: {unknown} are not candidates of the esr space")
    if len(betas) != 1:
        raise ValueError(f"the esr supernet has one beta vector (the taps), got {len(betas)}")
    chosen = choices(alphas, space, exclude)
    kept = kept_blocks(alphas, space, chosen)
    blocks = tuple(Block(chosen[f"block{i}.conv"], chosen[f"block{i}.act"], chosen[f"block{i}.attn"]) for i in kept)
    taps = derive_taps(betas[0], space, kept)
    return ESRGenotype(channels=space.channels, scale=space.scale, blocks=blocks, taps=taps, head=space.head,
                       body=space.body if "body" in taps else "none", fusion=space.fusion, skip=chosen["skip"],
                       bias=space.bias, input_scale=space.input_scale, input_mean=tuple(space.input_mean))


def describe_esr(g: ESRGenotype) -> str:
    """A one-line summary for progress displays."""
    blocks = " ".join(f"{b.conv}/{b.act}/{b.attn}" for b in g.blocks)
    return f"{len(g.blocks)} blocks: {blocks} | taps {','.join(g.taps)} | skip {g.skip}"


# ----------------------------------------------------------------------------------------------------
# the collapse report


def esr_report(alphas: torch.Tensor, beta: torch.Tensor, space: ESRSpaceConfig, tau: float,
               conv_costs: dict[str, float], *, decided_prob: float = 0.5, cost_unit: str = "params",
               genotype: ESRGenotype | None = None, exclude: Sequence[str] = ()) -> dict:
    """How decided every choice is and whether the result is degenerate (the shape of nas/report.py's).

    Per choice ("edge"): mixture weights softmax(alpha / tau), the chosen candidate, p_top, margin, the
    entropy normalised to [0, 1], decided (p_top >= decided_prob). Conv choices also say whether they are
    the cheapest conv type (`conv_costs`, deployed), the others whether their choice is parameter-free
    (none, spab, the activations, skip paths other than conv_near). Taps ("links"): softmax(beta), the kept
    candidates, decided when the weakest kept weighs at least twice the best dropped one. Degenerate: every
    conv choice on the cheapest conv type, or every gated block skipped (the DARTS collapse, with the
    cost term winning).
    """
    segs = layout(space)
    a = alphas.detach().double().cpu()
    chosen = choices(alphas, space, exclude)
    cheapest = min(conv_costs[c] for c in space.convs)
    param_free = {"none", "spab", "silu", "relu", "lrelu", "nearest", "bicubic", "keep", "drop"}
    edges = []
    for s in segs:
        if s.stop == s.start:
            continue
        row = torch.softmax(a[s.start:s.stop] / tau, dim=-1)
        top2 = torch.topk(row, min(2, len(row)))
        p = row.clamp_min(1e-300)
        op = chosen[s.name]
        kind = s.name.rsplit(".", 1)[-1]
        edges.append({"edge": s.name, "op": op, "weights": dict(zip(s.candidates, map(float, row))),
                      "p_top": float(top2.values[0]), "p_second": float(top2.values[1]),
                      "margin": float(top2.values[0] - top2.values[1]),
                      "entropy": float(-(p * p.log()).sum()) / math.log(len(row)),
                      "decided": float(top2.values[0]) >= decided_prob,
                      "cheapest": kind == "conv" and conv_costs[op] == cheapest,
                      "param_free": kind != "conv" and op in param_free})
    names = tap_candidates(space)
    b = torch.softmax(beta.detach().double().cpu(), dim=-1)
    order = sorted(range(len(names)), key=lambda j: (-float(b[j]), j))
    kept_j, dropped = order[:space.taps], order[space.taps:]
    weakest = min(float(b[j]) for j in kept_j)
    best_dropped = max((float(b[j]) for j in dropped), default=0.0)
    links = [{"cell": "taps", "weights": [float(x) for x in b], "candidates": names,
              "inputs": list(genotype.taps) if genotype is not None else [names[j] for j in sorted(kept_j)],
              "margin": weakest - best_dropped if dropped else None,
              "decided": not dropped or weakest >= 2 * best_dropped}]
    conv_edges = [e for e in edges if e["edge"].endswith(".conv")]
    gates = [s.name for s in segs if s.name.endswith(".depth") and s.stop > s.start]
    undecided = [e["edge"] for e in edges if not e["decided"]]
    reasons = []
    if conv_edges and all(e["cheapest"] for e in conv_edges) and len(space.convs) > 1:
        reasons.append(f"every conv choice takes the cheapest conv type (by {cost_unit}): the cost term has "
                       "collapsed the search")
    if gates and all(chosen[g] == "drop" for g in gates):
        reasons.append("every gated block is dropped")
    warnings = list(reasons)
    if undecided:
        warnings.append(f"{len(undecided)} of {len(edges)} choices undecided (top mixture weight < {decided_prob:g}): "
                        "search longer or anneal the temperature (arch.tau_end)")
    if not links[0]["decided"]:
        warnings.append("the taps are undecided (the weakest kept tap weighs less than twice the best dropped one)")
    n = max(len(edges), 1)
    summary = {"edges": len(edges), "distinct_ops": len({e["op"] for e in edges}),
               "share_cheapest": sum(e["cheapest"] for e in conv_edges) / max(len(conv_edges), 1),
               "share_param_free": sum(e["param_free"] for e in edges) / n, "undecided": len(undecided),
               "undecided_links": int(not links[0]["decided"]),
               "mean_entropy": sum(e["entropy"] for e in edges) / n,
               "min_margin": min((e["margin"] for e in edges), default=1.0),
               "min_p_top": min((e["p_top"] for e in edges), default=1.0),
               "decided_prob": decided_prob, "cost_unit": cost_unit}
    decided = not undecided and links[0]["decided"]
    taps = "decided" if links[0]["decided"] else "undecided"
    verdict = ("degenerate: " + "; ".join(reasons)) if reasons else (
        "decided and not degenerate" if decided else
        f"not degenerate, but undecided ({len(undecided)} of {len(edges)} choices; taps {taps})")
    return {"space": "esr", "edges": edges, "links": links, "summary": summary, "degenerate": bool(reasons),
            "decided": decided, "warnings": warnings, "verdict": verdict}
