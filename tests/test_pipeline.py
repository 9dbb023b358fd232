"""tools/pipeline.py: the whole chain (search -> derive -> distill -> compress -> evaluate -> report) on the smoke
preset at x2 (in-process) and x4 (subprocesses killed at several points, then run again), resuming, --from /
--until, and the config checks."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, SHARED, SMOKE_PIPELINE, import_tool, require_shared

from reporting.summary import load_summary
from search_spaces.genotype import load_genotype
from srcore.checkpoint import read_checkpoint
from srcore.config import ConfigError
from srcore.data import DataError
from srcore.paths import expand

FAST = SMOKE_PIPELINE[2:]  # one thread, one crop per set
# every figure the report draws for a smoke run (one validation set: builtin-val, crops of its first image)
FIGURES = ("genotype.png", "curves_search.png", "curves_distill.png", "compress_rounds.png",
           "curves_compress_round_1_finetune.png", "quality_vs_size.png", "crop_builtin_val_chelsea.png")


@pytest.fixture(scope="module")
def pipeline():
    return import_tool("pipeline")


@pytest.fixture()
def smoke_x2(smoke_pipeline):
    """The smoke run at x2 of tests/conftest.py (the default teacher choice)."""
    return smoke_pipeline


def check_complete(out: Path, scale: int) -> dict:
    """A finished run: every stage done, the report and all its figures, students that are the derived genotype."""
    summary = load_summary(out)
    assert not summary.inferred and summary.scale == scale
    assert [(s.name, s.status) for s in summary.stages] == [(n, "done") for n in
                                                             ("search", "derive", "distill", "compress", "evaluate",
                                                              "report")]
    assert all(s.command and s.command.startswith("python tools/") for s in summary.stages)
    assert [m.kind for m in summary.models] == ["bicubic", "teacher", "student", "student"]
    assert summary.teacher_note
    for name in ("report.md", "report.html", "config.yaml"):
        assert (out / name).is_file(), name
    for fig in FIGURES:
        assert (out / "report" / fig).stat().st_size > 1000, fig
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= len(FIGURES) and "src=\"report/" not in html
    g = load_genotype(out / "derive" / "genotype.yaml")
    assert g.scale == scale
    spec = read_checkpoint(out / "distill" / "last.pt")["spec"]
    assert spec["genotype"]["inputs"] == [list(p) for p in g.inputs] and spec["genotype"]["scale"] == scale
    assert read_checkpoint(out / "compress" / "deploy.pt")["spec"]["widths"]
    assert (out / "compress" / "model.onnx").is_file()
    scores = {}
    for stem in ("bicubic", "teacher", "distilled", "compressed"):
        (res,) = json.loads((out / "evaluate" / f"{stem}.json").read_text())["results"]
        assert res["dataset"] == "builtin-val" and res["n_images"] == 2 and res["scale"] == scale
        scores[stem] = res["psnr_y"]
    md = (out / "report.md").read_text()
    assert f"{scores['compressed']:.3f}" in md and f"{scores['bicubic']:.3f}" in md
    # the photographs that choose best.pt are the ones reported on: the final weights are scored, and said so
    assert "Scored weights: the distilled student is its final weights (distill/last.pt" in md
    assert [m.checkpoint for m in summary.models if m.kind == "student"] == ["distill/last.pt", "compress/deploy.pt"]
    assert f"--checkpoint {out / 'distill' / 'last.pt'} " in summary.stage("compress").command
    assert f"--checkpoint {out / 'distill' / 'last.pt'} " in summary.models[2].eval_command
    return json.loads((out / "pipeline.json").read_text())


def test_smoke_pipeline_x2_writes_every_stage_and_the_report(smoke_x2):
    state = check_complete(smoke_x2, 2)
    assert all(state["stages"][n]["cpu_seconds"] > 0 for n in ("search", "distill", "compress"))
    note = load_summary(smoke_x2).teacher_note
    if (SHARED / "teachers" / "rlfn_s_x2.pth").is_file():
        assert state["teacher"]["kind"] == "registry" and "rlfn_s_x2" in note and "found on disk" in note
    else:
        assert state["teacher"]["kind"] == "train" and "not on disk" in note


def test_a_second_run_skips_finished_stages(pipeline, smoke_x2, tmp_path, caplog):
    out = tmp_path / "run"
    shutil.copytree(smoke_x2, out)
    # a run saved by an older version, before keys were added (at their defaults): still the same run
    state = json.loads((out / "pipeline.json").read_text())
    for stage, key in (("search", "derive"), ("compress", "int8"), ("evaluate", "tile")):
        del state["identity"][stage][key]
    del state["identity"]["distill"]["config"]["student"]["checkpoint"]
    (out / "pipeline.json").write_text(json.dumps(state))
    before = {p: p.stat().st_mtime_ns for p in (out / "distill" / "last.pt", out / "compress" / "deploy.pt")}
    with caplog.at_level("INFO"):
        assert pipeline.main(["--config", "smoke", "--out", str(out), *FAST]) == 0
    assert caplog.text.count("done earlier") == 6
    assert before == {p: p.stat().st_mtime_ns for p in before}


def test_a_changed_config_is_refused_naming_the_stage_and_key(pipeline, smoke_x2):
    with pytest.raises(ConfigError, match=r"compress stage used another config \(rounds: 1 there, 2 now\).*"
                                          r"--from compress"):
        pipeline.main(["--config", "smoke", "--out", str(smoke_x2), *FAST, "--set", "compress.rounds=2"])
    with pytest.raises(ConfigError, match=r"search stage used another config \(space\.scale: 2 there, 4 now\)"):
        pipeline.main(["--config", "smoke", "--out", str(smoke_x2), *FAST, "--scale", "4"])


def test_from_and_until_rerun_part_of_the_run(pipeline, smoke_x2, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(smoke_x2, out)
    kept = (out / "distill" / "last.pt").stat().st_mtime_ns
    old_deploy = (out / "compress" / "deploy.pt").stat().st_mtime_ns
    args = ["--config", "smoke", "--out", str(out), *FAST, "--set", "compress.prune_macs=0.6x"]
    assert pipeline.main([*args, "--from", "compress", "--until", "evaluate"]) == 0
    summary = load_summary(out)
    assert [s.status for s in summary.stages][-1] == "not run"  # the report: after --until
    assert not (out / "report").exists()
    assert (out / "distill" / "last.pt").stat().st_mtime_ns == kept
    assert (out / "compress" / "deploy.pt").stat().st_mtime_ns != old_deploy
    assert json.loads((out / "compress" / "options.json").read_text())["target"]["value"] == 0.6
    assert pipeline.main(args) == 0  # the same command without --from/--until: only the report is left to do
    check_complete(out, 2)
    with pytest.raises(ConfigError, match="--from report: .* holds no pipeline run"):
        pipeline.main(["--config", "smoke", "--out", str(tmp_path / "new"), "--from", "report"])


def test_pipeline_config_errors_are_caught_before_any_work(pipeline, tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("search: {config: smoke}\nevaluate: {self_ensembel: true}\n")
    with pytest.raises(ConfigError, match=r"evaluate\.self_ensembel: unknown key; did you mean 'self_ensemble'\?"):
        pipeline.main(["--config", str(bad), "--out", str(tmp_path / "o")])
    with pytest.raises(ConfigError, match=r"loop\.stepz: unknown key; did you mean 'steps'\?"):
        pipeline.main(["--config", "smoke", "--out", str(tmp_path / "o"), "--set", "distill.set=[loop.stepz=3]"])
    with pytest.raises(ConfigError, match="'quikstart' is neither .*; did you mean 'quickstart'"):
        pipeline.main(["--config", "quikstart", "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def _wait_running(proc: subprocess.Popen, out: Path, stage: str, ready: str, timeout: float = 300) -> None:
    """Block until `stage` is running in OUT/pipeline.json and OUT/<ready> exists (or the process ended)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"the pipeline ended (status {proc.returncode}) before {stage} was running")
        try:
            status = json.loads((out / "pipeline.json").read_text())["stages"].get(stage, {}).get("status")
        except (OSError, ValueError):
            status = None
        if status == "running" and (out / ready).exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"{stage} did not start within {timeout} s")


def test_killed_x4_pipeline_runs_again_to_a_complete_report(tmp_path):
    """x4 on a machine without registry teachers (the teacher is trained here): killed during the search, the
    distillation and the compression, each time run again with the same command; the last run finishes."""
    env = {**os.environ, "SRNAS_SHARED": str(tmp_path / "no_shared"), "SRNAS_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": str(REPO)}
    out = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "tools" / "pipeline.py"), "--config", "smoke", "--out", str(out), "--scale",
           "4", *FAST]
    for stage, ready in (("search", "search/metrics.jsonl"), ("distill", "distill"), ("compress", "compress")):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
        try:
            _wait_running(proc, out, stage, ready)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        state = json.loads((out / "pipeline.json").read_text())
        assert state["stages"][stage]["status"] == "running"  # killed: nothing could record the end
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    state = check_complete(out, 4)
    assert state["teacher"]["kind"] == "train" and "not on disk" in state["teacher"]["note"]
    assert read_checkpoint(out / "compress" / "deploy.pt")["spec"]["genotype"]["scale"] == 4


def test_scale_data_and_val_reach_the_stage_configs(pipeline, tmp_path):
    """--scale, --data and --val set the search's and the distillation's data and scale; a missing training
    folder is a one-line error naming it, before any work."""
    hr = tmp_path / "photos" / "HR"
    hr.mkdir(parents=True)
    bench = tmp_path / "bench"
    (bench / "HR").mkdir(parents=True)
    args = pipeline.parse_args(["--config", "quickstart", "--out", str(tmp_path / "o"), "--scale", "3",
                                "--data", str(hr.parent), "--val", str(bench)])
    plan = pipeline.make_plan(pipeline.load_pipeline_config(args), tmp_path / "o")
    assert plan.search_cfg.space.scale == 3 and plan.distill_cfg.student.scale == 3
    assert plan.search_cfg.data.train == str(hr.parent) == plan.distill_cfg.data.train
    assert plan.distill_cfg.val.data == [str(bench)]
    assert plan.distill_cfg.student.genotype == str(tmp_path / "o" / "derive" / "genotype.yaml")
    with pytest.raises(DataError, match=f"{tmp_path / 'nowhere'}: no such dataset folder"):
        pipeline.main(["--config", "smoke", "--out", str(tmp_path / "o2"), "--data", str(tmp_path / "nowhere")])
    assert not (tmp_path / "o2").exists()


def test_time_left_counts_a_teacher_trained_here_until_it_is_cached(pipeline, tmp_path):
    eta_s = {"search": 100.0, "distill": 300.0, "teacher": 245.0}
    cached = tmp_path / "teacher.pt"
    to_train = pipeline.Teacher("train", "rlfn_s", checkpoint=str(cached))
    assert pipeline.eta_hints(eta_s, to_train) == {"search": 100.0, "distill": 545.0}
    cached.write_bytes(b"x")
    assert pipeline.eta_hints(eta_s, to_train)["distill"] == 300.0
    assert pipeline.eta_hints(eta_s, pipeline.Teacher("registry", "rlfn_s_x2"))["distill"] == 300.0
    assert pipeline.eta_hints(eta_s, None) == {"search": 100.0, "distill": 300.0}
    with pytest.raises(ConfigError, match="eta_s.teachr: not a stage"):
        pipeline.PipelineConfig(eta_s={"teachr": 1.0})


def test_the_quickstart_scores_the_shared_benchmarks_that_exist(pipeline, tmp_path):
    require_shared("data", "Set5")
    args = pipeline.parse_args(["--config", "quickstart", "--out", str(tmp_path)])
    cfg = pipeline.load_pipeline_config(args)
    have, missing = pipeline.present_benchmarks(cfg)
    assert [Path(expand(h)).name for h in have] == ["Set5", "Set14", "B100"] and missing == []
    cfg = pipeline.load_pipeline_config(pipeline.parse_args(
        ["--config", "quickstart", "--out", str(tmp_path), "--set", f"data.benchmarks=[{SHARED}/data/Set5, "
                                                                      f"{tmp_path}/Set99]"]))
    assert pipeline.present_benchmarks(cfg) == ([f"{SHARED}/data/Set5"], [f"{tmp_path}/Set99"])
