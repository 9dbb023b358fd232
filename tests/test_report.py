"""tools/report.py on a real (smoke) pipeline run: the inferred summary, the summary.json contract, absent
inputs, and the self-contained HTML."""
from __future__ import annotations

import json
import re
import shutil
import sys

import numpy as np
import pytest
from conftest import import_tool

from reporting.build import build_report, choose_crop
from reporting.document import Doc, to_html
from reporting.summary import FORMAT, ModelRecord, RunSummary, StageRecord, load_summary
from search_spaces.plot import plot_genotype
from srcore.config import ConfigError
from srcore.cost import count_params
from srcore.modelspec import load_checkpoint_model

report_cli = import_tool("report")
run_cli = import_tool("common").run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST = {"max_crops": 1, "lr_size": 32, "latency_repeats": 1, "threads": 1}  # keep the test quick


@pytest.fixture()
def smoke_run(smoke_pipeline):
    """`python tools/pipeline.py --config smoke --out DIR` (tests/conftest.py): every stage, summary.json."""
    return smoke_pipeline


def copy_run(src, dst):
    """The run without its report (OUT/report/, OUT/report.md, OUT/report.html; compress/report.json stays)."""
    top = str(src)
    shutil.copytree(src, dst, ignore=lambda d, names: [n for n in names if str(d) == top
                                                        and n in ("report", "report.md", "report.html")])
    return dst


def check_outputs(out, res) -> str:
    """report.md/html exist, every plot is a PNG under OUT/report that both documents show; returns the html."""
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert res.markdown == out / "report.md" and res.html == out / "report.html"
    assert res.pngs and len(set(res.pngs)) == len(res.pngs)
    for p in res.pngs:
        assert p.parent == out / "report" and p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000
        assert f"](report/{p.name})" in md
    assert sorted(p.name for p in (out / "report").iterdir()) == sorted(p.name for p in res.pngs)
    # self-contained: every image inlined, no reference to anything outside the file
    assert html.count('src="data:image/png;base64,') == len(res.pngs)
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html)
    assert all(r.startswith("data:") for r in refs), refs
    assert not re.search(r"<link|<script|@import|url\(", html)
    for section in ("Run", "Results", "Search", "Distillation", "Compression", "Visual comparison", "Reproduce"):
        assert f"## {section}\n" in md and f"<h2>{section}</h2>" in html
    return html


def test_report_of_a_smoke_pipeline_run_inferred_from_the_folder(smoke_run, tmp_path):
    out = copy_run(smoke_run, tmp_path / "run")
    (out / "summary.json").unlink()  # the report infers the same from the folder's layout
    s = load_summary(out)
    assert s.inferred and s.scale == 2 and s.val == ["builtin"]
    assert [st.name for st in s.stages] == ["search", "derive", "distill", "compress", "evaluate"]
    assert [st.status for st in s.stages] == ["done"] * 5
    assert s.stage("search").config["space"]["num_cells"] == 3 and s.stage("distill").config["loop"]["steps"] == 10
    assert [m.kind for m in s.models] == ["bicubic", "teacher", "student", "student"]

    res = build_report(out, plot_genotype=plot_genotype, **FAST)  # as tools/report.py draws it
    check_outputs(out, res)
    names = {p.name for p in res.pngs}
    assert {"genotype.png", "curves_search.png", "curves_distill.png", "quality_vs_size.png",
            "compress_rounds.png"} <= names
    assert {"crop_builtin_val_chelsea.png"} <= names  # max_crops = 1: the first validation image
    md = (out / "report.md").read_text()
    # the students' scores are the evaluate stage's (unmarked); bicubic and the teacher are measured here (*)
    eval_psnr = json.loads((out / "evaluate" / "distilled.json").read_text())["results"][0]["psnr_y"]
    student = next(line for line in md.splitlines() if line.startswith("| student (distilled)"))
    assert f"{eval_psnr:.3f} / " in student and "*" not in student
    bicubic = next(line for line in md.splitlines() if line.startswith("| bicubic"))
    assert re.search(r"\| 32\.9\d\d / 0\.9\d+\* \|$", bicubic), bicubic  # 32.93 dB: README's builtin bicubic (lr)
    assert "python tools/evaluate.py --arch bicubic --scale 2 --bicubic-source lr --data builtin" in md
    assert "### config: distill" in md and "loop:" in md


def test_report_from_the_summary_contract_with_compression_rounds(smoke_run, tmp_path):
    out = copy_run(smoke_run, tmp_path / "run")
    # a compression stage written by hand: per-round rows, per-round fine-tuning logs
    shutil.rmtree(out / "compress")
    (out / "compress" / "round_1").mkdir(parents=True)
    shutil.copy(out / "distill" / "metrics.jsonl", out / "compress" / "round_1" / "metrics.jsonl")
    shutil.copy(out / "distill" / "best.pt", out / "compress" / "round_1" / "best.pt")
    (out / "compress" / "report.json").write_text(json.dumps({"rounds": [
        {"round": 0, "params": 4612, "macs": 265e6, "psnr_y": 10.8},
        {"round": 1, "params": 3000, "macs": 170e6, "psnr_y": 10.7}]}))
    teacher = load_summary(out).models[1]
    summary = RunSummary(
        scale=2, val=["builtin"], teacher_note="rlfn_s trained here and cached: no registry teacher on disk",
        stages=[StageRecord("search", "search", command=f"python tools/search.py --config smoke --out {out}/search",
                            config={"space": {"channels": 8}}, seconds=3.5),
                StageRecord("distill", "distill", command="python tools/train.py --config smoke --out OUT/distill",
                            config={"loop": {"steps": 10}}, checkpoint="distill/best.pt"),
                StageRecord("compress", "compress", command="python tools/compress.py --checkpoint OUT/train/best.pt",
                            config={"prune_ratio": 0.35}),
                StageRecord("evaluate", status="done", command="python tools/evaluate.py ... --json OUT/eval.json"),
                StageRecord("export", status="not run")],
        models=[ModelRecord("bicubic", "bicubic"),
                ModelRecord("teacher rlfn_s (trained here)", "teacher", checkpoint=teacher.checkpoint,
                            arch=teacher.arch, weights=teacher.weights),
                ModelRecord("student (distilled)", "student", checkpoint="distill/best.pt",
                            eval="evaluate/distilled.json",
                            eval_command="python tools/evaluate.py --checkpoint OUT/train/best.pt --data builtin"),
                ModelRecord("student (compressed)", "student", checkpoint="compress/round_1/best.pt",
                            stage="compress")])
    (out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2))
    s = load_summary(out)
    assert not s.inferred and s == summary and json.loads((out / "summary.json").read_text())["format"] == FORMAT

    res = build_report(out, **FAST)
    check_outputs(out, res)
    md = (out / "report.md").read_text()
    assert {"compress_rounds.png", "curves_compress_round_1.png"} <= {p.name for p in res.pngs}
    for cmd in ("python tools/search.py --config smoke", "python tools/compress.py --checkpoint OUT/train/best.pt",
                "python tools/evaluate.py --checkpoint OUT/train/best.pt --data builtin"):
        assert cmd in md
    assert "prune_ratio: 0.35" in md and "### config: export\n\nnot run." in md
    assert "| 1 | 3000 | 1.7e+08 | 10.7 |" in md  # the per-round table
    n_params = count_params(load_checkpoint_model(out / "compress" / "round_1" / "best.pt")[0])
    assert f"| student (compressed) | {n_params:,} |" in md and md.count("| student (") == 2
    assert "rlfn_s trained here and cached" in md


def test_every_section_degrades_when_its_inputs_are_absent(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    res = build_report(out, **FAST)
    md = (out / "report.md").read_text()
    for section in ("Results", "Search", "Distillation", "Compression", "Visual comparison"):
        body = md.split(f"## {section}\n\n", 1)[1]
        assert body.startswith("not run"), section
    assert res.pngs == [] and (out / "report.html").is_file()


def test_bad_summary_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "summary.json").write_text(json.dumps({"format": FORMAT, "version": 1, "scale": 2,
                                                       "stages": [{"name": "search", "statsu": "done"}]}))
    with pytest.raises(ConfigError, match=r"stages\[0\]\.statsu: unknown key"):
        load_summary(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"format": FORMAT, "version": 1,
                                                       "models": [{"label": "x", "kind": "teachr"}]}))
    monkeypatch.setattr(sys, "argv", ["report.py", str(tmp_path)])
    with pytest.raises(SystemExit) as e:
        run_cli(report_cli.main)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "kind must be one of" in " ".join(err.split()) and "Traceback" not in err


def test_crop_goes_where_the_models_differ():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (120, 160, 3)).astype(np.uint8)
    good = gt.copy()
    bad = gt.copy()
    bad[70:90, 20:40] = 255 - bad[70:90, 20:40]  # one model is wrong only here
    y, x = choose_crop(gt, [good, bad], 24)
    assert 70 - 24 < y <= 70 and 20 - 24 < x <= 20 and y + 24 <= 120 and x + 24 <= 160
    assert choose_crop(gt, [good, good.copy()], 24) == (48, 68)  # no difference: the centre


def test_html_escapes_text():
    doc = Doc("t <b>")
    doc.p('<script src="http://x"></script>')
    doc.table(["a|b"], [["<i>"]])
    html = to_html(doc)
    assert "<script" not in html and "&lt;script src=&quot;http://x&quot;&gt;" in html and "&lt;i&gt;" in html


def test_search_metrics_log_is_trimmed_on_resume(tmp_path):
    search_cli = import_tool("search")
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss/train": 1.0 / s}) + "\n" for s in range(1, 6)))
    search_cli.start_metrics(log, 3)  # resumed from the step-3 checkpoint: steps 4 and 5 are redone
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1, 2, 3]
    search_cli.start_metrics(log, None)  # a fresh search
    assert log.read_text() == ""
    rec = search_cli.metrics_record({"step": 7, "epoch": 1, "lr": 1e-3, "loss": 0.5, "val_loss": 0.6,
                                     "penalty": 0.01, "val_psnr": 20.0, "genotype": "x", "arch": True})
    assert rec == {"step": 7, "epoch": 1, "lr": 1e-3, "loss/train": 0.5, "loss/val": 0.6, "loss/cost_penalty": 0.01}
