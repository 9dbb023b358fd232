"""The report of tools/study.py: the verdict statistics, the markdown and the PSNR-versus-cost plot, as pure
functions of the study's results (the dict written to docs/study.json)."""
from __future__ import annotations

import math
import statistics
from pathlib import Path

from multirun import fmt_ms, mean_psnr

# --- statistics and the verdict ------------------------------------------------------------------------------------


def compare(a: list[float], b: list[float], sigma: float | None) -> dict:
    """Difference of the means of two rows' seed scores, its threshold (twice the standard deviation of a
    difference of two n-seed means, sigma * sqrt(1/n_a + 1/n_b)) and the verdict."""
    d = statistics.fmean(a) - statistics.fmean(b)
    if sigma is None:
        return {"delta": d, "threshold": None, "verdict": "noise not measured (one seed)"}
    thr = 2 * sigma * math.sqrt(1 / len(a) + 1 / len(b))
    return {"delta": d, "threshold": thr, "verdict": "better" if d > thr else "worse" if d < -thr else "within noise"}


def verdicts(variants: list[str], scores: dict[str, list[float]], sigma: float | None) -> dict:
    """Each searched row (`searched_<variant>`) against the best random row, the median random row and the
    other baselines; `scores` holds each row's per-seed mean PSNR."""
    randoms = {n: s for n, s in scores.items() if n.startswith("random_")}
    out = {}
    for v in variants:
        me = scores.get(f"searched_{v}")
        if not me:
            continue
        res = {}
        if randoms:
            means = {n: statistics.fmean(s) for n, s in randoms.items()}
            ranked = sorted(means, key=means.get)
            best = ranked[-1]
            res["best_random"] = {"row": best, **compare(me, randoms[best], sigma)}
            # the median row (an odd count) or the two middle rows (even): their seeds' scores together
            k = len(ranked)
            middle = ranked[k // 2:k // 2 + 1] if k % 2 else ranked[k // 2 - 1:k // 2 + 1]
            res["median_random"] = {"rows": middle, "mean": statistics.median(means.values()),
                                    **compare(me, [x for n in middle for x in randoms[n]], sigma)}
            res["rank"] = 1 + sum(m > statistics.fmean(me) for m in means.values())
            res["of"] = len(means) + 1
        for other in ("published", "hand", *(f"searched_{w}" for w in variants if w != v)):
            if scores.get(other):
                res[other] = {"row": other, **compare(me, scores[other], sigma)}
        out[v] = res
    return out


# --- the markdown and the plot ---------------------------------------------------------------------------------

KIND_STYLE = {"searched": ("*", "#d62728", 14), "random": ("o", "#7f7f7f", 7), "published": ("^", "#1f77b4", 9),
              "hand": ("s", "#2ca02c", 8)}


def plot(results: dict, path: Path) -> Path:
    """Mean PSNR-Y over the sets against parameters and against CPU latency, one point per row (the mean of
    its seeds; the bar spans the seeds)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in results["rows"] if r["runs"]]
    h, w = (results["meta"]["scale"] * x for x in results["meta"]["cost_input"])
    panels = [("params", "parameters (thousands)", 1e-3), ("macs", f"MACs of a {w}x{h} output (G)", 1e-9),
              ("latency_ms", f"CPU latency, {results['meta']['latency_threads']} thread (ms)", 1.0)]
    panels = [p for p in panels if all(r.get(p[0]) is not None for r in rows)]
    fig = Figure(figsize=(5.2 * len(panels), 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (key, xlabel, k) in zip(axes, panels):
        seen = set()
        for r in rows:
            ys = [mean_psnr(run) for run in r["runs"]]
            y, x = statistics.fmean(ys), r[key] * k
            marker, color, size = KIND_STYLE[r["kind"]]
            label = {"searched": "searched", "random": "random (matched params)", "published": "published genotype",
                     "hand": "hand-designed"}[r["kind"]]
            ax.errorbar([x], [y], yerr=[[y - min(ys)], [max(ys) - y]], fmt=marker, color=color, markersize=size,
                        capsize=3, label=None if label in seen else label)
            seen.add(label)
            if r["kind"] != "random":
                ax.annotate(r["short"], (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"mean PSNR-Y over {', '.join(results['meta']['sets'])} (dB)")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"x{results['meta']['scale']}, {results['meta']['steps']} steps, "
                 f"{len(results['meta']['seeds'])} seeds (bars: the seeds' range)", fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def _cell(values: list[float], nd: int) -> str:
    return fmt_ms(values, nd) if values else "—"


def render(results: dict) -> str:
    meta, rows, refs = results["meta"], results["rows"], results["references"]
    sets, sigma, sp = meta["sets"], results["sigma"], meta["space"]
    n = len(meta["seeds"])
    lines = [
        "# Does the search beat chance? The NAS evaluation study",
        "",
        f"Generated by `{meta['command']}` (torch {meta['torch']}, {meta['cpu']}, {meta['jobs']} run(s) at a "
        f"time, {meta['threads']} thread(s) each). Study wall time {meta['wall_s'] / 3600:.2f} h over "
        f"{meta['sessions']} session(s), {meta['first_start']} to {meta['date']}; the 1-minute load average "
        f"ranged {meta['load_min']:.1f}-{meta['load_max']:.1f} on this {meta['cores']}-core machine (other jobs "
        "shared it, so every time below is inflated). Run time summed over the runs: searches "
        f"{sum(s['search_s'] for s in results['searches'].values()) / 3600:.2f} h, training "
        f"{sum(x['train_s'] for r in rows for x in r['runs']) / 3600:.2f} h, evaluation "
        f"{sum(x.get('eval_s', 0) for r in rows for x in r['runs']) / 3600:.2f} h. Do not edit by hand: re-run the "
        "command (finished runs are reused).",
        "",
        "## Setup",
        "",
        f"**Space** (the search's, `{meta['search_config']}`): {sp['num_cells']} distillation cells, C="
        f"{sp['channels']}, x{sp['scale']}, {sp['skip']} image-space skip; each of the three stages of "
        + ("the cell (one cell shared by every position, as DLSR)" if sp["shared_alphas"] else "each cell")
        + f" takes one of {', '.join(sp['ops'])}; cell k >= 3 reads two earlier cells.",
        "",
        f"**Training recipe, the same for every row**: `configs/train/{meta['recipe']}.yaml` "
        f"({meta['recipe_text']}), **{meta['steps']} steps**, seeds {', '.join(map(str, meta['seeds']))}, "
        f"{'no distillation (L1 only)' if meta['kd'] == 'none' else 'output KD from ' + meta['teacher']}; "
        "scores of the final EMA weights: PSNR/SSIM on Y at "
        f"x{meta['scale']} (border {meta['scale']} shaved, SR rounded to 8 bits) on {', '.join(sets)}. "
        f"Cost: parameters; MACs of one {meta['cost_input'][1] * meta['scale']}x{meta['cost_input'][0] * meta['scale']}"
        f" output (LR {meta['cost_input'][1]}x{meta['cost_input'][0]}); CPU latency of that forward pass, "
        f"median of {meta['latency_repeats']} after a warm-up, {meta['latency_threads']} thread (measured after "
        "the training, on the shared machine: compare rows, not machines).",
        "",
    ]
    for s in results["searches"].values():
        lines.append(f"**{s['label']}** (`{s['command']}`): {s['steps']} steps in {s['search_s'] / 60:.1f} min "
                     f"(1 thread, shared machine); {s['params']:,} parameters; collapse report: {s['verdict']}.")
    rr = results.get("random")
    if rr:
        lines += ["", f"**Random rows**: {rr['accepted']} distinct genotypes of the same space (ops drawn uniformly "
                  f"per edge, two distinct earlier cells per cell k >= 3) with parameters within "
                  f"{rr['tolerance']:.0%} of the matched search's {rr['target']:,.0f}, rejection-sampled with "
                  f"`random.Random({rr['seed']})` (the searched genotype excluded): **{rr['draws']} drawn** for "
                  f"{rr['accepted']} accepted."]
    lines += ["", "## Results", "",
              "Mean ± standard deviation over the seeds. Δ: mean PSNR-Y over the sets minus the searched "
              f"(`{meta['match_label']}`) row's.", "",
              "| row | genotype | params | MACs (G) | latency (ms) | "
              + " | ".join(f"{s} PSNR / SSIM" for s in sets) + " | mean PSNR | Δ (dB) | seeds |",
              "|---|---|---|---|---|" + "---|" * len(sets) + "---|---|---|"]
    ref = next((r for r in rows if r["name"] == f"searched_{meta['match']}"), None)
    ref_mean = statistics.fmean(mean_psnr(x) for x in ref["runs"]) if ref and ref["runs"] else None
    for r in rows:
        runs = r["runs"]
        cells = [f"{_cell([x['sets'][s]['psnr_y'] for x in runs], 2)} / "
                 f"{_cell([x['sets'][s]['ssim_y'] for x in runs], 4)}" for s in sets]
        means = [mean_psnr(x) for x in runs]
        delta = f"{statistics.fmean(means) - ref_mean:+.3f}" if means and ref_mean is not None else "—"
        lat = f"{r['latency_ms']:.0f}" if r.get("latency_ms") is not None else "—"
        macs = f"{r['macs'] / 1e9:.1f}" if r.get("macs") is not None else "—"
        params = f"{r['params']:,}" if r.get("params") is not None else "—"
        lines.append(f"| {r['label']} | {r['genotype_text']} | {params} | {macs} | {lat} | " + " | ".join(cells)
                     + f" | {_cell(means, 3)} | {delta} | {len(runs)}/{n} |")
    for name, sc in refs.items():
        cells = [f"{sc[s]['psnr_y']:.2f} / {sc[s]['ssim_y']:.4f}" for s in sets]
        mean = statistics.fmean(sc[s]["psnr_y"] for s in sets)
        delta = f"{mean - ref_mean:+.3f}" if ref_mean is not None else ""
        lines.append(f"| *{name}* | | 0 | | | " + " | ".join(cells) + f" | {mean:.3f} | {delta} | |")
    lines += ["", f"![PSNR against cost]({meta['plot']})", "", "## Verdict (generated)", ""]
    if sigma is None:
        lines.append("One seed only: the run-to-run noise is not measured, so no difference can be called real.")
    else:
        lines.append(f"Seed-to-seed noise: the standard deviation of a run's mean PSNR-Y between seeds, pooled over "
                     f"the rows, is σ = {sigma:.4f} dB. A difference of two rows' {n}-seed means has a standard "
                     f"deviation of about σ·√(2/{n}) = {sigma * math.sqrt(2 / n):.4f} dB; it counts as real only "
                     f"beyond twice that, {2 * sigma * math.sqrt(2 / n):.4f} dB.")
        rand = [statistics.fmean(mean_psnr(x) for x in r["runs"]) for r in rows if r["kind"] == "random" and r["runs"]]
        if len(rand) > 1:
            lines.append(f"How much the architecture matters at matched parameters: the random rows' means spread "
                         f"over {max(rand) - min(rand):.3f} dB (standard deviation {statistics.stdev(rand):.4f} dB) "
                         f"against σ/√{n} = {sigma / math.sqrt(n):.4f} dB that seed noise alone would give a row's "
                         "mean.")
    lines.append("")
    labels = {r["name"]: r["label"] for r in rows}
    for v, res in results["verdicts"].items():
        name = labels[f"searched_{v}"]
        if "best_random" in res:
            b, m = res["best_random"], res["median_random"]
            lines.append(f"- **{name}**: rank {res['rank']} of {res['of']} among itself and the random rows; "
                         f"against the best random row ({labels[b['row']]}): {b['delta']:+.3f} dB, **{b['verdict']}**; "
                         f"against the median random row ({m['mean']:.3f} dB): {m['delta']:+.3f} dB, "
                         f"**{m['verdict']}**.")
        for key in ("published", "hand", *(k for k in res if k.startswith("searched_"))):
            if key in res:
                c = res[key]
                lines.append(f"  - against {labels[c['row']]}: {c['delta']:+.3f} dB, {c['verdict']}.")
    lines += ["", "## What the searches decided (generated)", ""]
    for s in results["searches"].values():
        lines += [f"**{s['label']}**: {s['verdict']}. Final temperature τ = {s['tau_end']:g}; "
                  "p_top: the chosen op's mixture weight at the final τ (what the supernet computed with); "
                  "p_top(τ=1): the same from the raw α, i.e. how strongly the architecture gradient itself "
                  f"preferred it (1/{len(sp['ops'])} = {1 / len(sp['ops']):.3f} is a coin toss).", "",
                  "| edge | op | p_top | p_top(τ=1) | runner-up (τ=1) | entropy |", "|---|---|---|---|---|---|"]
        for e in s["edges"]:
            lines.append(f"| {e['edge']} | {e['op']} | {e['p_top']:.3f} | {e['p_top_tau1']:.3f} | "
                         f"{e['second_tau1']} {e['p_second_tau1']:.3f} | {e['entropy']:.3f} |")
        for link in s["links"]:
            w = ", ".join(f"{x:.2f}" for x in link["weights"])
            lines.append(f"\nCell {link['cell']} reads cells {tuple(link['inputs'])} (softmax(β) = [{w}], "
                         f"{'decided' if link['decided'] else 'undecided'}).")
        h = s["history"]
        if h["first_arch_step"] is not None:
            cost = f", of the cost gradient {h['grad_cost']:.3g}" if h["grad_cost"] is not None else ""
            lines.append(f"\nArchitecture steps from step {h['first_arch_step']} to {h['last_step']}: mean norm of the "
                         f"loss gradient on α {h['grad_loss']:.3g}{cost} (per logged interval); the argmax ops "
                         f"changed {h['changes']} time(s) between the {h['logged']} logged steps and are the final "
                         f"ones from step {h['settled_step']} on.")
        lines.append("")
    if results["proxy"]:
        lines += ["## Does the supernet rank genotypes as training does? (generated)", "",
                  "The trained supernet's own validation loss (L1 + HFEN of the search) for each genotype of its "
                  "space, run with that genotype's ops and links only (nas/proxy.py), against the mean PSNR-Y "
                  "the genotype reaches when trained alone. Kendall's τ of (−loss, PSNR): +1 when the supernet "
                  "orders the genotypes exactly as training does, 0 when its order says nothing.", "",
                  "| row | trained mean PSNR | " + " | ".join(f"supernet loss ({v})" for v in results["proxy"]) + " |",
                  "|---|---|" + "---|" * len(results["proxy"])]
        names = sorted({k for p in results["proxy"].values() for k in p}, key=list(labels).index)
        trained = {r["name"]: statistics.fmean(mean_psnr(x) for x in r["runs"]) for r in rows if r["runs"]}
        for k in names:
            lines.append(f"| {labels[k]} | {trained[k]:.3f} | " if k in trained else f"| {labels[k]} | — | ")
            lines[-1] += " | ".join(f"{p[k]:.6g}" if k in p else "—" for p in results["proxy"].values()) + " |"
        lines.append("")
        for v, tau in results["proxy_tau"].items():
            lines.append(f"- Kendall's τ, supernet `{v}` against training: "
                         + (f"**{tau['tau']:+.2f}** over {tau['n']} genotypes." if tau["tau"] is not None
                            else "not defined."))
        lines.append("")
    if results["missing"]:
        lines += ["## Missing runs", "", "These runs had not finished when this file was written (resume with the "
                  "command above):", ""] + [f"- `{m}`" for m in results["missing"]] + [""]
    if results.get("notes"):
        lines += [f"## Analysis (written after the run, from `{meta['notes']}`)", "", results["notes"].strip(), ""]
    lines += ["## Reproduce", "", "```bash", meta["command"],
              "# resumable: the same command continues after any stop; --report-only rewrites this file", "```", ""]
    return "\n".join(lines)


