"""tools/plot_genotype.py (genotype and alpha-history figures) and tools/bench.py (JSON + docs sections)."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from conftest import import_tool, require_shared

from search_spaces.genotype import load_genotype, validate

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tools():
    """The two tool modules (tools/ is a folder of scripts that import `common` by name)."""
    return types.SimpleNamespace(bench=import_tool("bench"), plot=import_tool("plot_genotype"))


def history(g, steps=(0, 10, 20), per_cell=False) -> list[dict]:
    """A small synthetic alpha history for genotype g: the chosen ops and inputs slowly win."""
    def alphas(ops, t):
        return [[0.1 * t if op == chosen else -0.05 * t for op in g.ops] for chosen in ops]

    recs = []
    for t, step in enumerate(steps):
        alpha = [alphas(g.cell_ops(k), t) for k in range(1, g.num_cells + 1)] if per_cell else alphas(g.cell_ops(1), t)
        beta = [[0.2 * t if j in g.cell_inputs(k) else 0.0 for j in range(1, k)] for k in range(3, g.num_cells + 1)]
        recs.append({"step": step, "epoch": t, "ops": list(g.ops), "alpha": alpha, "beta": beta})
    return recs


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 10_000 and path.read_bytes()[:8] == PNG_MAGIC


# --- plot_genotype -------------------------------------------------------------------------------------


def test_plot_dlsr_genotype_with_and_without_history(tools, tmp_path):
    g = load_genotype("dlsr_x2")
    plain = tools.plot.plot_genotype("dlsr_x2", tmp_path / "sub" / "g.png")
    assert plain == tmp_path / "sub" / "g.png" and is_png(plain)
    hist = write_jsonl(tmp_path / "alpha_history.jsonl", history(g))
    with_alphas = tools.plot.plot_genotype(g, tmp_path / "ga.png", hist)
    assert is_png(with_alphas) and with_alphas.stat().st_size > plain.stat().st_size


def test_plot_per_cell_genotype_with_per_cell_alphas(tools, tmp_path):
    raw = load_genotype("dlsr_x2").to_dict()
    raw.pop("cell")
    raw.update(num_cells=4, inputs=[[1, 2], [1, 3]],
               cells=[["conv_1x1", "sep_conv_7x7", "sep_conv_5x5"], ["conv_3x3", "dil_conv_3x3", "conv_5x5"],
                      ["conv_1x1", "sep_conv_7x7", "sep_conv_5x5"], ["conv_7x7", "conv_3x3", "sep_conv_3x3"]])
    g = validate(raw)
    out = tools.plot.plot_genotype(g, tmp_path / "pc.png", history(g, per_cell=True))  # records, not a file
    assert is_png(out)


@pytest.mark.parametrize("mutate,message", [
    (lambda lines: lines[:1] + ['{"step": 5, "epoch"'] + lines[1:], r"h\.jsonl:2: not a JSON object"),
    (lambda lines: [json.dumps({**json.loads(lines[0]), "alpha": [[0.0] * 9] * 2})],
     r"h\.jsonl:1: 'alpha' must be numbers of shape \[3\]\[9\]"),
    (lambda lines: [json.dumps({k: v for k, v in json.loads(lines[0]).items() if k != "beta"})],
     r"h\.jsonl:1: missing key 'beta'"),
    (lambda lines: [json.dumps({**json.loads(lines[0]), "beta": [[0.0, 1.0]] * 4})],
     r"h\.jsonl:1: 'beta' must hold, for each cell k = 3\.\.6, a list of k-1 numbers"),
    (lambda lines: lines + [json.dumps({**json.loads(lines[0]), "ops": ["conv_1x1"]})],
     r"h\.jsonl:4: 'ops' differs from the first record's"),
    (lambda lines: [], r"h\.jsonl: no records"),
])
def test_malformed_history_is_a_one_line_error(tools, tmp_path, mutate, message):
    lines = [json.dumps(r) for r in history(load_genotype("dlsr_x2"))]
    bad = tmp_path / "h.jsonl"
    bad.write_text("\n".join(mutate(lines)) + "\n")
    with pytest.raises(ValueError, match=message) as e:
        tools.plot.read_alpha_history(bad, 6)
    assert "\n" not in str(e.value)


def test_plot_cli_errors_are_one_red_line(tools, tmp_path, monkeypatch, capsys):
    for argv, message in ((["nope_genotype"], "nope_genotype: no such genotype file"),
                          (["dlsr_x2", "--alphas", str(tmp_path / "missing.jsonl")], "no such alpha history file")):
        monkeypatch.setattr(sys, "argv", ["plot_genotype.py", *argv, "--out", str(tmp_path / "x.png")])
        with pytest.raises(SystemExit) as e:
            tools.plot.run_cli(tools.plot.main)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


# --- bench ---------------------------------------------------------------------------------------------


def test_bench_models_tiny_run_writes_json_and_its_docs_section(tools, tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nintro kept\n\n<!-- bench:models -->\nstale table\n<!-- /bench:models -->\n\n"
                   "<!-- bench:search-step -->\nother section kept\n<!-- /bench:search-step -->\n")
    out = tmp_path / "bench" / "models.json"
    assert tools.bench.main(["models", "--models", "rlfn_s", "--scale", "2", "--lr-size", "16", "--repeats", "1",
                             "--warmup", "0", "--threads", "1", "--json", str(out), "--doc", str(doc)]) == 0
    p = json.loads(out.read_text())
    assert p["subcommand"] == "models" and p["input_shape"] == [1, 3, 16, 16]
    assert {"cpu", "cores", "torch", "threads", "date"} <= set(p["machine"]) and p["machine"]["threads"] == 1
    (r,) = p["results"]
    assert {"model", "scale", "params", "macs", "flops", "activations", "conv_layers", "peak_memory_bytes",
            "cpu_latency_s", "cuda_latency_s"} <= set(r)
    assert (r["model"], r["scale"], r["params"]) == ("rlfn_s", 2, 454_620)  # PROVENANCE's count
    assert r["flops"] == 2 * r["macs"] > 0 and r["cpu_latency_s"] > 0 and r["cuda_latency_s"] is None
    text = doc.read_text()
    assert "intro kept" in text and "other section kept" in text and "stale table" not in text
    assert text.count("<!-- bench:models -->") == 1 and text.count("<!-- /bench:models -->") == 1
    section = text.split("<!-- bench:models -->")[1].split("<!-- /bench:models -->")[0]
    assert "| rlfn_s | x2 | 454,620 |" in section and "Machine:" in section


def test_bench_doc_section_appends_and_rejects_unpaired_markers(tools, tmp_path):
    doc = tmp_path / "new" / "b.md"
    tools.bench.write_doc_section(doc, "x", "body one")
    tools.bench.write_doc_section(doc, "y", "body two")
    tools.bench.write_doc_section(doc, "x", "body three")
    text = doc.read_text()
    assert "body one" not in text and text.index("body three") < text.index("body two")
    doc.write_text("<!-- bench:x -->\nno end marker\n")
    with pytest.raises(ValueError, match="unpaired"):
        tools.bench.write_doc_section(doc, "x", "body")



def test_bench_latency_section_writes_a_second_table_beside_the_first(tools, tmp_path):
    """`latency --section latency_x4`: the x4 table (the NTIRE winners) in its own section and JSON, the x2 kept."""
    bench = tools.bench
    assert bench.parse_args(["latency"]).json == bench.JSON_DIR / "latency.json"
    assert bench.parse_args(["latency", "--section", "latency_x4"]).json == bench.JSON_DIR / "latency_x4.json"
    with pytest.raises(ValueError, match="--section '../x'"):
        bench.parse_args(["latency", "--section", "../x"])
    doc, js = tmp_path / "benchmarks.md", tmp_path / "l4.json"
    doc.write_text("# B\n\n<!-- bench:latency -->\nthe x2 table\n<!-- /bench:latency -->\n")
    assert bench.main(["latency", "--models", "spanv2", "--scale", "4", "--section", "latency_x4", "--lr-size", "24",
                       "--repeats", "1", "--warmup", "0", "--threads", "1", "--no-onnx", "--psnr-data", "builtin",
                       "--json", str(js), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert "the x2 table" in text and "<!-- bench:latency_x4 -->" in text and "## Latency side by side, x4" in text
    row = json.loads(js.read_text())["results"][0]
    assert row["model"] == "spanv2" and row["scale"] == 4 and row["torch_latency_s"] > 0
    bicubic = json.loads(js.read_text())["settings"]["bicubic_psnr_y"]
    assert 10 < bicubic < 60 and f"| bicubic (no network) | 0 | - | - | - | {bicubic:.3f} |" in text


def test_bench_finds_the_registered_weights_of_the_winners(tools):
    """The NTIRE winners' files are named by their registry entry (spanv2 x4: spanv2_ntire26_x4.pth)."""
    require_shared("teachers", "spanv2_ntire26_x4.pth")
    assert tools.bench.official_weights("spanv2", 4).name == "spanv2_ntire26_x4.pth"
    assert tools.bench.official_weights("imdn", 4).name == "imdn_x4.pth"
    assert tools.bench.official_weights("rfdn", 2) is None  # RFDN's official file is x4 only


def test_bench_search_step_tiny_real_engine(tools, tmp_path):
    """A tiny real run: DLSR's step re-implemented, then srnas rows (same algorithm, cheaper one, K=2), written
    to JSON and the doc, each row labelled and its GFLOP/s from the FLOPs it computes (unfused or fused)."""
    doc = tmp_path / "b.md"
    doc.write_text("# b\n<!-- bench:models -->\nkept\n<!-- /bench:models -->\n")
    args = ["search-step", "--space", "dlsr", "--batch", "1", "--lr-patch", "16", "--channels", "8", "--num-cells", "3",
            "--variants", "dlsr_exact", "dlsr_reuse:2", "--steps", "1", "--matmul-size", "64", "--threads", "1",
            "--json", str(tmp_path / "s.json"), "--doc", str(doc)]
    assert tools.bench.main(args) == 0
    p = json.loads((tmp_path / "s.json").read_text())
    rows = p["rows"]
    assert [(r["algorithm"], r["partial_channels"], r["reference_algorithm"], r["fused"]) for r in rows] == \
        [("dlsr_exact", 1, True, False), ("dlsr_exact", 1, False, True), ("dlsr_reuse", 2, False, True)]
    assert rows[0]["weight_step_flops"] > rows[1]["weight_step_flops"]  # the unfused row counts the unfused ops
    for r in rows:
        assert r["weight_step_s"] > 0 and r["arch_step_s"] > 0 and r["peak_memory_bytes"] > 0
        assert r["step_s"] == pytest.approx(r["weight_step_s"] + r["arch_step_s"])
        assert r["ratio_to_released"]["step_s"] == pytest.approx(r["step_s"] / 7.4)
        assert r["weight_step_gflops_per_s"] == pytest.approx(r["weight_step_flops"] / r["weight_step_s"] / 1e9)
    assert rows[0]["ratio_to_measured_dlsr"]["step_s"] == pytest.approx(1.0)
    assert "issue #10" in p["reference"]["source"] and p["reference_same_setting"] is False
    text = doc.read_text()
    assert "<!-- bench:search-step -->" in text and "kept" in text and "re-implemented" in text
    assert "DLSR's algorithm (dlsr_exact) on the srnas engine" in text and "approximate supernet" in text
    with pytest.raises(ValueError, match="--variants"):
        tools.bench.main([a if a != "dlsr_reuse:2" else "dlsr" for a in args])
