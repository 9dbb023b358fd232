"""Drawing a DLSR-space genotype: its distillation cell(s), its network-level links and, optionally, how the
search's architecture weights evolved (the library behind tools/plot_genotype.py and the run report).

The PNG has up to four sections, top to bottom:
  * the cell DAG: input -> three distillation stages (a 1x1 "distill" branch set aside, and the searched op
    on the remaining branch, plus the stage input) -> c4 3x3 -> concat -> c5 1x1 -> ESA -> output; one
    small panel per distinct cell when the genotype gives per-cell ops (`cells`);
  * the network-level graph: head -> cells 1..N (cell k >= 3 fed by a 1x1 conv over its two chosen
    earlier cells) -> concat + 1x1 -> LR conv 3x3 (+ head skip) -> pixel-shuffle upsampler xS, and the
    image-space skip from the LR input when the genotype has one (the nearest anchor added before the shuffle,
    or the bicubic upscaled input added after it);
  * with an alpha history: softmax(alpha) per edge (one line per op; one row of edges per cell when alpha is
    per-cell) and softmax(beta) per cell k >= 3 over its predecessors, against the logged step; the ops /
    inputs the genotype finally chose are drawn bold.

alpha_history.jsonl holds one JSON object per line:
  {"step": int, "epoch": int, "ops": [op names], "alpha": [3][n_ops] (shared) or [n_cells][3][n_ops],
   "beta": [[k-1 raw values over cells 1..k-1] for k = 3..N]}     (alpha and beta are pre-softmax)

    from search_spaces.plot import plot_genotype
    plot_genotype("dlsr_x2", "g.png", "runs/search/alpha_history.jsonl")

Only the Agg canvas is used (no pyplot state, no display, no graphviz binary).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import networkx as nx
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch
from matplotlib.ticker import MaxNLocator

from search_spaces.genotype import Genotype, load_genotype
from srcore.jsonl import read_jsonl_lines

COLORS = {  # node kind -> box face colour
    "io": "#e0e0e0", "conv": "#cfe2f3", "op": "#f9cb9c", "distill": "#d9ead3", "concat": "#fff2cc",
    "esa": "#d9d2e9", "cell": "#f9cb9c", "add": "#ffffff",
}
SHORT_OPS = {"conv_1x1": "1x1", "conv_3x3": "3x3", "conv_5x5": "5x5", "conv_7x7": "7x7",
             "sep_conv_3x3": "sep3", "sep_conv_5x5": "sep5", "sep_conv_7x7": "sep7",
             "dil_conv_3x3": "dil3", "dil_conv_5x5": "dil5", "identity": "id",
             "rep_conv_3x3": "rep3", "rep_conv_5x5": "rep5", "ecb_3x3": "ecb3", "rrrb_3x3": "rrrb3",
             "conv3xc_3x3": "3xc3"}


# ----------------------------------------------------------------------------------------------------
# graphs (networkx holds the structure; node attrs: pos, label, kind; edge attrs: rad, style)


def cell_graph(ops: Sequence[str], channels: int, compact: bool = False) -> nx.DiGraph:
    """The derived distillation cell as a DAG, laid out left to right (distill branches on top).

    `compact` drops the second line of the op boxes (for the small per-cell panels).
    """
    c, d = channels, channels // 2
    g = nx.DiGraph()
    g.add_node("in", pos=(0, 0), label=f"cell input\n{c} ch", kind="io")
    prev = "in"
    for k, op in enumerate(ops, start=1):
        x = 2.2 * k
        g.add_node(f"d{k}", pos=(x - 0.9, 1.25), label=f"c{k}_d 1x1\n{c}→{d}", kind="distill")
        g.add_node(f"r{k}", pos=(x, 0), label=op if compact else f"{op}\nstage {k}  (+ input)",
                   kind="op")
        g.add_edge(prev, f"d{k}")
        g.add_edge(prev, f"r{k}")
        prev = f"r{k}"
    g.add_node("c4", pos=(8.6, 0), label=f"c4 3x3\n{c}→{d}", kind="conv")
    g.add_node("cat", pos=(10.3, 0), label=f"concat\n4x{d}={4 * d}", kind="concat")
    g.add_node("c5", pos=(11.9, 0), label=f"c5 1x1\n{4 * d}→{c}", kind="conv")
    g.add_node("esa", pos=(13.3, 0), label="ESA", kind="esa")
    g.add_node("out", pos=(14.6, 0), label="cell\noutput", kind="io")
    g.add_edge(prev, "c4")
    for k in (1, 2, 3):  # distilled parts arc over the stages into the concat
        g.add_edge(f"d{k}", "cat", rad=-0.34 + 0.03 * k)
    g.add_edges_from([("c4", "cat"), ("cat", "c5"), ("c5", "esa"), ("esa", "out")])
    return g


def network_graph(genotype: Genotype) -> nx.DiGraph:
    """Head -> cells 1..N with their chosen inputs -> tail -> upsampler, laid out in two rows."""
    n, gap = genotype.num_cells, 1.5
    shared = genotype.cell is not None
    g = nx.DiGraph()
    g.add_node("lr", pos=(0, 0), label="LR input", kind="io")
    g.add_node("head", pos=(gap, 0), label=f"head 3x3\n3→{genotype.channels}", kind="conv")
    g.add_edge("lr", "head")
    cell_x = [2 * gap + gap * (k - 1) for k in range(1, n + 1)]
    for k in range(1, n + 1):
        label = f"cell {k}"
        if not shared:
            label += "\n" + "·".join(SHORT_OPS.get(op, op) for op in genotype.cell_ops(k))
        if k >= 3:
            a, b = genotype.cell_inputs(k)
            label += f"\n1x1[B{a},B{b}]"
        g.add_node(f"B{k}", pos=(cell_x[k - 1], 0), label=label, kind="cell")
    if n >= 1:
        g.add_edge("head", "B1")
    if n >= 2:
        g.add_edge("B1", "B2")
    for k in range(3, n + 1):
        for j, src in enumerate(genotype.cell_inputs(k)):
            rad = 0.0 if src == k - 1 else -0.55 + 0.05 * j  # skips arc above the chain
            g.add_edge(f"B{src}", f"B{k}", rad=rad)
    y = -1.7
    xs = [cell_x[0] + 0.3 * (cell_x[-1] - cell_x[0])] if n > 1 else [cell_x[0]]
    for _ in range(4):
        xs.append(xs[-1] + 1.6)
    g.add_node("cout", pos=(xs[0], y), label=f"concat B1..B{n}\n+ 1x1 (cout)" if n > 1 else "1x1 (cout)", kind="concat")
    g.add_node("lrconv", pos=(xs[1], y), label="LR_conv\n3x3", kind="conv")
    g.add_node("add", pos=(xs[2], y), label="+ head\n(skip)", kind="add")
    s, skip = genotype.scale, genotype.skip
    up_label = f"upsampler\nconv + shuffle x{s}" if skip != "nearest" else f"upsampler conv\n+ anchor, shuffle x{s}"
    g.add_node("up", pos=(xs[3], y), label=up_label, kind="conv")
    g.add_node("sr", pos=(xs[4] + (1.9 if skip == "bicubic" else 0.3), y), label=f"SR output\nx{s}", kind="io")
    for k in range(1, n + 1):
        g.add_edge(f"B{k}", "cout")
    g.add_edge("head", "add", rad=0.33, style="--")
    g.add_edges_from([("cout", "lrconv"), ("lrconv", "add"), ("add", "up")])
    if skip == "bicubic":  # image-space skip: the fixed bicubic upscaling added after the shuffle
        g.add_node("bicubic", pos=(xs[3], y - 1.3), label=f"image skip: bicubic x{s}\n(fixed, no weights)",
                   kind="io")
        g.add_node("addskip", pos=(xs[4] + 0.3, y), label="+ bicubic\n(skip)", kind="add")
        g.add_edge("lr", "bicubic", rad=0.12, style="--")
        g.add_edges_from([("up", "addskip"), ("bicubic", "addskip"), ("addskip", "sr")])
    elif skip == "nearest":  # the LR repeated s^2 times, added before the shuffle (ABPN's anchor)
        g.add_node("anchor", pos=(xs[3], y - 1.3), label=f"image skip: LR repeated x{s * s}\n(nearest anchor)",
                   kind="io")
        g.add_edge("lr", "anchor", rad=0.12, style="--")
        g.add_edges_from([("anchor", "up"), ("up", "sr")])
    else:
        g.add_edge("up", "sr")
    return g


def graph_extent(g: nx.DiGraph, pad_x: float = 0.8, pad_y: float = 0.45) -> tuple[float, float, float, float]:
    """Data limits holding every node box (approximately: `pad_*` around centres) and every arc's peak."""
    pts = list(nx.get_node_attributes(g, "pos").values())
    for u, v, attrs in g.edges(data=True):
        (xa, ya), (xb, yb), rad = g.nodes[u]["pos"], g.nodes[v]["pos"], attrs.get("rad", 0.0)
        # matplotlib's arc3 is a quadratic Bezier with control point mid + rad * (dy, -dx); its peak is
        # halfway between the chord's middle and the control point
        pts.append(((xa + xb) / 2 + 0.5 * rad * (yb - ya), (ya + yb) / 2 - 0.5 * rad * (xb - xa)))
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return min(xs) - pad_x, max(xs) + pad_x, min(ys) - pad_y, max(ys) + pad_y


def graph_height(g: nx.DiGraph, width_in: float) -> float:
    """Inches of height that `g` needs at `width_in` inches wide with square data units."""
    x0, x1, y0, y1 = graph_extent(g)
    return width_in * (y1 - y0) / (x1 - x0)


def draw_graph(ax, g: nx.DiGraph, fontsize: float = 8.0) -> None:
    """Nodes as labelled boxes, edges as arrows clipped to the boxes (arcs where an edge has `rad`)."""
    boxes = {}
    for node, attrs in g.nodes(data=True):
        x, y = attrs["pos"]
        boxes[node] = ax.text(x, y, attrs["label"], ha="center", va="center", fontsize=fontsize, zorder=3,
                              bbox=dict(boxstyle="round,pad=0.35", fc=COLORS[attrs["kind"]], ec="#555555", lw=0.8))
    for u, v, attrs in g.edges(data=True):
        # arrows draw after the boxes (higher zorder), so each box's patch is placed before clipping
        ax.add_patch(FancyArrowPatch(g.nodes[u]["pos"], g.nodes[v]["pos"], patchA=boxes[u].get_bbox_patch(),
                                     patchB=boxes[v].get_bbox_patch(), arrowstyle="-|>", mutation_scale=9,
                                     connectionstyle=f"arc3,rad={attrs.get('rad', 0.0)}", lw=0.9,
                                     linestyle=attrs.get("style", "-"), color="#333333", shrinkA=1, shrinkB=1,
                                     zorder=4))
    x0, x1, y0, y1 = graph_extent(g)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal", adjustable="box")  # arcs are drawn in display space: keep data units square
    ax.axis("off")


# ----------------------------------------------------------------------------------------------------
# alpha history


def _num_list(v: Any, n: int | None) -> bool:
    return (isinstance(v, list) and (n is None or len(v) == n)
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v))


def read_alpha_history(history: str | Path | Sequence[dict], num_cells: int) -> list[dict]:
    """Read and check alpha_history.jsonl (or a list of its records); problems are one-line ValueErrors."""
    if isinstance(history, (str, Path)):
        path = Path(history)
        if not path.is_file():
            raise ValueError(f"{history}: no such alpha history file")
        # a torn last line (a search killed mid-write, or still writing) is dropped with a warning
        records = [(f"{history}:{i}", r) for i, r in read_jsonl_lines(path)]
    else:
        records = [(f"alpha history record {i}", r) for i, r in enumerate(history, start=1)]
    if not records:
        raise ValueError(f"{history if isinstance(history, (str, Path)) else 'alpha history'}: no records")

    for where, r in records:
        if not isinstance(r, dict):
            raise ValueError(f"{where}: each line must be a JSON object, got {type(r).__name__}")
    first_where, first = records[0]
    ops = first.get("ops")
    if not (isinstance(ops, list) and ops and all(isinstance(o, str) for o in ops)):
        raise ValueError(f"{first_where}: 'ops' must be a non-empty list of op names")
    n_ops = len(ops)
    alpha0 = first.get("alpha")
    per_cell = isinstance(alpha0, list) and bool(alpha0) and isinstance(alpha0[0], list) and bool(alpha0[0]) \
        and isinstance(alpha0[0][0], list)
    out = []
    for where, r in records:
        for key in ("step", "epoch", "ops", "alpha", "beta"):
            if key not in r:
                raise ValueError(f"{where}: missing key '{key}' (need step, epoch, ops, alpha, beta)")
        if not all(isinstance(r[k], int) and not isinstance(r[k], bool) for k in ("step", "epoch")):
            raise ValueError(f"{where}: 'step' and 'epoch' must be integers")
        if r["ops"] != ops:
            raise ValueError(f"{where}: 'ops' differs from the first record's ({', '.join(ops)})")
        alpha = r["alpha"]
        if per_cell:
            ok = isinstance(alpha, list) and len(alpha) == num_cells and all(
                isinstance(c, list) and len(c) == 3 and all(_num_list(e, n_ops) for e in c) for c in alpha)
            shape = f"[{num_cells}][3][{n_ops}]"
        else:
            ok = isinstance(alpha, list) and len(alpha) == 3 and all(_num_list(e, n_ops) for e in alpha)
            shape = f"[3][{n_ops}]"
        if not ok:
            raise ValueError(f"{where}: 'alpha' must be numbers of shape {shape} "
                             f"({'per cell, ' if per_cell else ''}{n_ops} ops, genotype has {num_cells} cells)")
        beta = r["beta"]
        if not (isinstance(beta, list) and len(beta) == max(num_cells - 2, 0)
                and all(_num_list(b, k - 1) for k, b in zip(range(3, num_cells + 1), beta, strict=False))):
            raise ValueError(f"{where}: 'beta' must hold, for each cell k = 3..{num_cells}, a list of k-1 numbers "
                             f"(one per earlier cell)")
        out.append({"step": r["step"], "epoch": r["epoch"], "ops": ops,
                    "alpha": alpha if per_cell else [alpha], "beta": beta, "per_cell": per_cell})
    return out


def softmax(v: Sequence[float]) -> list[float]:
    m = max(v)
    e = [math.exp(x - m) for x in v]
    s = sum(e)
    return [x / s for x in e]


def draw_alphas(fig, history: list[dict], genotype: Genotype) -> None:
    """softmax(alpha) per (cell,) edge, one line per op; genotype's chosen op bold."""
    ops = history[0]["ops"]
    steps = [r["step"] for r in history]
    rows = len(history[0]["alpha"])  # 1 (shared) or num_cells
    colors = [f"C{i % 10}" for i in range(len(ops))]
    styles = ["-" if i < 10 else "--" for i in range(len(ops))]
    axes = fig.subplots(rows, 3, squeeze=False, sharex=True, sharey=True)
    for ci in range(rows):
        cell_k = ci + 1
        chosen_ops = genotype.cell_ops(cell_k) if rows > 1 else genotype.cell_ops(1)
        for e in range(3):
            ax = axes[ci][e]
            probs = [softmax(r["alpha"][ci][e]) for r in history]
            for i, op in enumerate(ops):
                bold = op == chosen_ops[e]
                ax.plot(steps, [p[i] for p in probs], color=colors[i], linestyle=styles[i],
                        lw=2.4 if bold else 1.0, label=op, marker="o" if len(steps) == 1 else None)
            title = f"stage {e + 1}" if rows == 1 else f"cell {cell_k}, stage {e + 1}"
            ax.set_title(f"{title}: chose {SHORT_OPS.get(chosen_ops[e], chosen_ops[e])}", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            if e == 0:
                ax.set_ylabel("softmax(α)", fontsize=8)
            if ci == rows - 1:
                ax.set_xlabel("step", fontsize=8)
    handles = [Line2D([], [], color=colors[i], linestyle=styles[i], lw=1.5) for i in range(len(ops))]
    h = fig.get_window_extent().height / fig.dpi  # this section's height in inches
    fig.suptitle("cell-level weights α over the search (bold: the genotype's op)", fontsize=10,
                 y=1 - 0.08 / h, va="top")
    fig.legend(handles, ops, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.38 / h), ncol=min(len(ops), 9),
               fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.05, right=0.99, top=1 - 0.95 / h, bottom=0.5 / h, hspace=0.55, wspace=0.06)


def draw_betas(fig, history: list[dict], genotype: Genotype) -> None:
    """softmax(beta) per cell k >= 3, one line per earlier cell; the genotype's two inputs bold."""
    n = genotype.num_cells
    steps = [r["step"] for r in history]
    cols = min(4, n - 2)
    rows = math.ceil((n - 2) / cols)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    for idx, k in enumerate(range(3, n + 1)):
        ax = axes[idx // cols][idx % cols]
        probs = [softmax(r["beta"][k - 3]) for r in history]
        chosen = genotype.cell_inputs(k)
        for j in range(1, k):
            bold = j in chosen
            ax.plot(steps, [p[j - 1] for p in probs], color=f"C{(j - 1) % 10}", lw=2.4 if bold else 1.0,
                    label=f"B{j}", marker="o" if len(steps) == 1 else None)
        ax.set_title(f"cell {k} inputs: chose B{chosen[0]},B{chosen[1]}", fontsize=8)
        ax.legend(fontsize=6, ncol=2, loc="upper left", frameon=False)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        if idx % cols == 0:
            ax.set_ylabel("softmax(β)", fontsize=8)
        if idx // cols == rows - 1:
            ax.set_xlabel("step", fontsize=8)
    for idx in range(n - 2, rows * cols):
        axes[idx // cols][idx % cols].axis("off")
    h = fig.get_window_extent().height / fig.dpi  # this section's height in inches
    fig.suptitle("network-level weights β over the search (bold: the genotype's inputs)", fontsize=10,
                 y=1 - 0.08 / h, va="top")
    fig.subplots_adjust(left=0.05, right=0.99, top=1 - 0.65 / h, bottom=0.5 / h, hspace=0.55, wspace=0.06)


# ----------------------------------------------------------------------------------------------------
# the figure


def _title(genotype: Genotype, name: str) -> str:
    try:
        from search_spaces.network import build_network

        params = f", {sum(p.numel() for p in build_network(genotype).parameters()):,} params"
    except Exception:  # the drawing does not depend on it
        params = ""
    return (f"{name}: space {genotype.space}, x{genotype.scale}, C={genotype.channels}, "
            f"N={genotype.num_cells} cells, skip {genotype.skip}{params}")


def plot_genotype(genotype: Genotype | str | Path, out_png: str | Path,
                  alpha_history: str | Path | Sequence[dict] | None = None, name: str | None = None) -> Path:
    """Draw `genotype` (object, YAML file or shipped name) into `out_png`; returns the path written.

    `alpha_history`: an alpha_history.jsonl path or its records (dicts); adds the alpha/beta panels.
    """
    if name is None:
        name = Path(str(genotype)).stem if not isinstance(genotype, Genotype) else "genotype"
    if not isinstance(genotype, Genotype):
        genotype = load_genotype(genotype)
    if not isinstance(genotype, Genotype):
        raise ValueError(f"{name}: an {genotype.space} genotype; plot_genotype draws dlsr genotypes only")
    history = read_alpha_history(alpha_history, genotype.num_cells) if alpha_history is not None else None

    # distinct cells, in order of first use
    distinct: dict[tuple[str, ...], list[int]] = {}
    for k in range(1, genotype.num_cells + 1):
        distinct.setdefault(tuple(genotype.cell_ops(k)), []).append(k)
    cell_cols = 1 if len(distinct) == 1 else 2
    cell_rows = math.ceil(len(distinct) / cell_cols)

    width = 15.0
    cell_graphs = [cell_graph(ops, genotype.channels, compact=cell_cols > 1) for ops in distinct]
    net = network_graph(genotype)
    cell_h = max(graph_height(cg, width / cell_cols * 0.97) for cg in cell_graphs) + 0.35  # + panel title
    sections = [("title", 0.45), ("cells", cell_h * cell_rows), ("net", graph_height(net, width * 0.97) + 0.35)]
    if history is not None:
        sections.append(("alpha", 1.45 + 1.9 * len(history[0]["alpha"])))
        if genotype.num_cells >= 3:
            sections.append(("beta", 1.15 + 2.1 * math.ceil((genotype.num_cells - 2) / 4)))
    fig = Figure(figsize=(width, sum(h for _, h in sections)), dpi=110)
    FigureCanvasAgg(fig)
    subfigs = fig.subfigures(len(sections), 1, height_ratios=[h for _, h in sections])
    for (kind, h), sf in zip(sections, subfigs, strict=True):
        if kind == "title":
            sf.text(0.5, 0.5, _title(genotype, name), ha="center", va="center", fontsize=13, fontweight="bold")
        elif kind == "cells":
            axes = sf.subplots(cell_rows, cell_cols, squeeze=False)
            for i, ((ops, ks), cg) in enumerate(zip(distinct.items(), cell_graphs, strict=True)):
                ax = axes[i // cell_cols][i % cell_cols]
                draw_graph(ax, cg, fontsize=8 if cell_cols == 1 else 6)
                which = f"all {len(ks)} cells" if len(ks) == genotype.num_cells > 1 else \
                    "cell" + ("s " if len(ks) > 1 else " ") + ",".join(map(str, ks))
                ax.set_title(f"distillation cell ({which}): {' / '.join(ops)}", fontsize=10 if cell_cols == 1 else 8)
            for i in range(len(distinct), cell_rows * cell_cols):
                axes[i // cell_cols][i % cell_cols].axis("off")
            sf.subplots_adjust(left=0.015, right=0.985, top=1 - 0.35 / cell_h / cell_rows, bottom=0.0,
                               hspace=0.45 / (cell_h - 0.35), wspace=0.03)
        elif kind == "net":
            ax = sf.subplots()
            draw_graph(ax, net, fontsize=8)
            ax.set_title("network level: cell k ≥ 3 takes a 1x1 conv over the concat of its two chosen cells",
                         fontsize=10)
            sf.subplots_adjust(left=0.015, right=0.985, top=1 - 0.35 / h, bottom=0.0)
        elif kind == "alpha":
            draw_alphas(sf, history, genotype)
        else:
            draw_betas(sf, history, genotype)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, facecolor="white")
    return out
