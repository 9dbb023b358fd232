"""The collapse report: how decided each searched choice is, and whether the genotype is degenerate.

    report = collapse_report(weights, betas, space, op_costs, op_params, decided_prob=0.5)

`weights` are the op mixture weights the supernet computes with at the end (softmax(alpha / tau)),
shape (3, |ops|) shared or (N, 3, |ops|) per cell; `betas` the raw link parameters. Per searched edge
(a distillation stage; with shared alphas one edge stands for that stage in every cell):
  op       the chosen op (largest weight; `chosen` overrides it, e.g. after perturbation selection),
  p_top    its weight, p_second the runner-up's, margin = p_top - p_second,
  entropy  of the weights, normalised to [0, 1] (1 = uniform, 0 = one-hot),
  decided  p_top >= decided_prob (the chosen op carries most of the mixture: what the supernet
           computes is close to what is derived; 1/|ops| is a coin toss);
and whether it is the cheapest op (smallest cost in `op_costs`: the cost table's unit, or parameters)
or a parameter-free one (no parameters in `op_params`). Per cell k >= 3 the link weights
softmax(beta), the two kept inputs, the margin between the weaker kept and the best dropped input,
and whether the pair is decided (the weaker kept input weighs at least twice the best dropped one;
a cell with two earlier cells keeps both and has nothing to decide).

The genotype is degenerate when every edge takes the cheapest op, or every edge takes a
parameter-free op, or every edge takes the same op while some choice is undecided (the classic DARTS
collapse and the coin toss of an unfinished search); each reason is a warning. Undecided edges, and
undecided links, are warnings on their own; `decided` means every edge and every link is decided.
`format_report` renders the report as text for terminals and logs (with the derived genotype's cost when the
search derive added one, `nas.cost.CostModel.genotype_cost`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from nas.config import SpaceConfig


def _edge_names(space: SpaceConfig) -> list[str]:
    if space.shared_alphas:
        return [f"stage {s + 1} (all cells)" for s in range(3)]
    return [f"cell {k + 1} stage {s + 1}" for k in range(space.num_cells) for s in range(3)]


def collapse_report(weights: torch.Tensor, betas: Sequence[torch.Tensor], space: SpaceConfig,
                    op_costs: dict[str, float], op_params: dict[str, float], *, decided_prob: float = 0.5,
                    chosen: Sequence[str] | None = None, inputs: Sequence[Sequence[int]] | None = None,
                    cost_unit: str = "params") -> dict:
    """The report (a JSON-ready dict) described in the module docstring."""
    ops = tuple(space.ops)
    probs = weights.detach().double().cpu().reshape(-1, len(ops))
    cheapest_cost = min(op_costs[o] for o in ops)
    param_free = {o for o in ops if op_params[o] == 0}
    edges = []
    for i, (name, row) in enumerate(zip(_edge_names(space), probs)):
        top2 = torch.topk(row, min(2, len(ops)))
        p_top = float(top2.values[0])
        p_second = float(top2.values[1]) if len(ops) > 1 else 0.0
        op = chosen[i] if chosen is not None else ops[int(top2.indices[0])]
        p = row.clamp_min(1e-300)
        entropy = float(-(p * p.log()).sum()) / math.log(len(ops)) if len(ops) > 1 else 0.0
        edges.append({"edge": name, "op": op, "weights": dict(zip(ops, map(float, row))), "p_top": p_top,
                      "p_second": p_second, "margin": p_top - p_second, "entropy": entropy,
                      "decided": p_top >= decided_prob, "cheapest": op_costs[op] == cheapest_cost,
                      "param_free": op in param_free})
    links = []
    for k, beta in enumerate(betas, start=3):
        b = F.softmax(beta.detach().double().cpu(), dim=-1)
        order = sorted(range(len(b)), key=lambda j: (-float(b[j]), j))
        keep = tuple(inputs[k - 3]) if inputs is not None else tuple(sorted(j + 1 for j in order[:2]))
        kept = sorted((float(b[j - 1]) for j in keep), reverse=True)
        dropped = [float(b[j]) for j in range(len(b)) if j + 1 not in keep]
        links.append({"cell": k, "weights": [float(x) for x in b], "inputs": list(keep),
                      "margin": kept[-1] - max(dropped) if dropped else None,
                      "decided": not dropped or kept[-1] >= 2 * max(dropped)})
    n = len(edges)
    chosen_ops = [e["op"] for e in edges]
    undecided = [e["edge"] for e in edges if not e["decided"]]
    undecided_links = [link["cell"] for link in links if not link["decided"]]
    summary = {"edges": n, "distinct_ops": len(set(chosen_ops)),
               "share_cheapest": sum(e["cheapest"] for e in edges) / n,
               "share_param_free": sum(e["param_free"] for e in edges) / n,
               "undecided": len(undecided), "undecided_links": len(undecided_links),
               "mean_entropy": sum(e["entropy"] for e in edges) / n,
               "min_margin": min(e["margin"] for e in edges), "min_p_top": min(e["p_top"] for e in edges),
               "decided_prob": decided_prob, "cost_unit": cost_unit}
    reasons = []
    if all(e["cheapest"] for e in edges):
        which = chosen_ops[0] if len(set(chosen_ops)) == 1 else "by " + cost_unit
        reasons.append(f"every edge takes the cheapest op ({which}): the cost term has collapsed the search")
    if param_free and all(e["param_free"] for e in edges):
        reasons.append("every edge takes a parameter-free op")
    if len(set(chosen_ops)) == 1 and undecided and n > 1:
        reasons.append(f"every edge takes {chosen_ops[0]} while {len(undecided)} of {n} choices are undecided: "
                       "the same op everywhere from a coin toss")
    warnings = list(reasons)
    if undecided:
        warnings.append(f"{len(undecided)} of {n} edges undecided (top mixture weight < {decided_prob:g}, "
                        f"lowest {summary['min_p_top']:.3f} against 1/{len(ops)} = {1 / len(ops):.3f} for a coin "
                        "toss): search longer or anneal the temperature (arch.tau_end)")
    if undecided_links:
        warnings.append(f"the inputs of cell(s) {', '.join(map(str, undecided_links))} are undecided (the weaker "
                        "kept input weighs less than twice the best dropped one)")
    decided = not undecided and not undecided_links
    verdict = ("degenerate: " + "; ".join(reasons)) if reasons else (
        "decided and not degenerate" if decided else
        f"not degenerate, but undecided ({len(undecided)} of {n} edges, {len(undecided_links)} of {len(links)} links)")
    return {"edges": edges, "links": links, "summary": summary, "degenerate": bool(reasons),
            "decided": decided, "warnings": warnings, "verdict": verdict}


def format_report(report: dict) -> str:
    """A plain-text table of the report (one line per edge and per link) with its verdict."""
    lines = [f"{'edge':<22} {'op':<14} {'p_top':>6} {'2nd':>6} {'margin':>6} {'entropy':>7}  flags"]
    for e in report["edges"]:
        flags = [f for f, on in (("undecided", not e["decided"]), ("cheapest", e["cheapest"]),
                                 ("param-free", e["param_free"])) if on]
        lines.append(f"{e['edge']:<22} {e['op']:<14} {e['p_top']:6.3f} {e['p_second']:6.3f} {e['margin']:6.3f} "
                     f"{e['entropy']:7.3f}  {', '.join(flags)}")
    for link in report["links"]:
        w = " ".join(f"{x:.2f}" for x in link["weights"])
        margin = "-" if link["margin"] is None else f"{link['margin']:.3f}"
        flag = "" if link["decided"] else "  undecided"
        where = "taps" if link["cell"] == "taps" else f"cell {link['cell']} inputs"  # taps: the esr space's fusion
        lines.append(f"{where} {tuple(link['inputs'])}: softmax(beta) [{w}], margin {margin}{flag}")
    s = report["summary"]
    lines.append(f"{s['distinct_ops']} distinct ops on {s['edges']} edges; cheapest op on {s['share_cheapest']:.0%}, "
                 f"parameter-free on {s['share_param_free']:.0%}; {s['undecided']} undecided edges, "
                 f"{s['undecided_links']} undecided links; mean entropy {s['mean_entropy']:.3f}")
    cost = report.get("derived_cost")
    if cost is not None:
        lines.append(f"derived genotype costs {cost['value']:.6g} {cost['unit']} ({cost['kind']} table; target "
                     f"{cost['target']:.6g}, {cost['ratio_to_target']:.2f}x)")
    lines.append(f"verdict: {report['verdict']}")
    return "\n".join(lines)
