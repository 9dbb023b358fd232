"""Hostile but realistic input to every CLI: exit status 2 and one stderr line naming the culprit, never a
traceback, never a half-written output folder. One parametrized table per CLI (all run in-process)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import import_tool
from test_run_safety import write_tiny

from distill import zoo
from nas.config import SearchConfig, SpaceConfig
from nas.supernet import SuperNet
from srcore.checkpoint import CheckpointError, load_strict, save_checkpoint
from srcore.config import to_dict
from srcore.data import BenchmarkSet
from srcore.evaluation import NonFiniteOutput, evaluate_model
from srcore.imageio import write_png
from srcore.modelspec import arch_spec

common = import_tool("common")
train_cli, search_cli, pipeline_cli = import_tool("train"), import_tool("search"), import_tool("pipeline")
evaluate_cli, derive_cli, bench_cli = import_tool("evaluate"), import_tool("derive"), import_tool("bench")
reproduce_cli, plot_cli = import_tool("reproduce"), import_tool("plot_genotype")

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a CPU-only torch")


def cli_error(main, argv: list[str], monkeypatch, capsys) -> str:
    """Run a CLI as its script does; assert exit status 2 and exactly one 'error:' line on stderr."""
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["tool", *argv])
    with pytest.raises(SystemExit) as e:
        common.run_cli(main)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert e.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny(tmp_path_factory.mktemp("tiny"))


# --- tools/train.py ------------------------------------------------------------------------------------------

TRAIN_BAD = [
    (["--set", "data.batch_size=0"], "train.yaml:data.batch_size = 0: must be >= 1"),
    (["--set", "loop.log_every=0"], "train.yaml:loop.log_every = 0: must be >= 1"),
    (["--set", "data.gt_size=-32"], "train.yaml:data.gt_size = -32: must be >= 2"),
    (["--set", "loop.steps=-5"], "train.yaml:loop.steps = -5: must be >= 1"),
    (["--set", "optim.lr=.nan"], "train.yaml:optim.lr: expected a finite number, got nan"),
    (["--set", "optim.ema=1.5"], "optim.ema = 1.5: must be in [0, 1)"),
    (["--set", "data.gt_size=16"], "data.gt_size = 16: the LR patch 8x8 is smaller than the networks' minimum "
                                   "input 15x15; use data.gt_size >= 30"),
    (["--set", "data.gt_size=42"], "im0.png: image 40x40 is smaller than the HR patch 42x42"),
    (["--device", "gpu"], "--device gpu: not a device name"),
    (["--threads", "0"], "--threads 0: must be >= 1"),
    (["--threads", "-1"], "--threads -1: must be >= 1"),
    (["--resume"], "last.pt: nothing to resume"),
    (["--resume", "--overwrite"], "--resume and --overwrite contradict each other"),
]


@pytest.mark.parametrize("extra,message", TRAIN_BAD, ids=[" ".join(a) for a, _ in TRAIN_BAD])
def test_train_hostile(tiny, tmp_path, monkeypatch, capsys, extra, message):
    out = tmp_path / "run"
    line = cli_error(train_cli.main, ["--config", str(tiny / "train.yaml"), "--out", str(out), *extra],
                     monkeypatch, capsys)
    assert message in line
    assert not out.exists()  # nothing half-written


@NO_CUDA
@pytest.mark.parametrize("main", [train_cli.main, search_cli.main, pipeline_cli.main])
def test_cuda_on_a_cpu_only_torch(main, tmp_path, monkeypatch, capsys):
    line = cli_error(main, ["--config", "smoke", "--out", str(tmp_path / "o"), "--device", "cuda"], monkeypatch, capsys)
    assert "--device cuda: CUDA is not available" in line


def test_train_refuses_an_existing_run_and_a_file(tiny, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    (out).mkdir()
    (out / "last.pt").write_bytes(b"a finished run")
    line = cli_error(train_cli.main, ["--config", str(tiny / "train.yaml"), "--out", str(out)], monkeypatch, capsys)
    assert f"{out} already holds a training run (last.pt); pass --resume" in line and "--overwrite" in line
    assert (out / "last.pt").read_bytes() == b"a finished run"
    line = cli_error(train_cli.main, ["--config", str(tiny / "train.yaml"), "--out", str(out / "last.pt")],
                     monkeypatch, capsys)
    assert "last.pt: is a file, expected a folder" in line


def test_train_yaml_bomb_and_markup_in_paths(tiny, tmp_path, monkeypatch, capsys):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB + "student: {genotype: dlsr_x2}\n")
    line = cli_error(train_cli.main, ["--config", str(bomb), "--out", str(tmp_path / "o")], monkeypatch, capsys)
    assert "bomb.yaml: the document expands to more than" in line
    weird = tmp_path / "[bold red]x[/] :train: [/].yaml"
    line = cli_error(train_cli.main, ["--config", str(weird), "--out", str(tmp_path / "o")], monkeypatch, capsys)
    assert f"{weird}: no such config file" in line  # printed literally: no markup, no emoji


# --- tools/search.py -----------------------------------------------------------------------------------------

SEARCH_BAD = [
    (["--config", "smoke", "--set", "data.gt_size=8"],
     "data.gt_size = 8: the LR patch 4x4 is smaller than the supernet's minimum input 15x15 (ESA in every cell); "
     "use data.gt_size >= 30"),
    (["--config", "smoke", "--set", "cost.input_size=[8, 8]"], "cost.input_size = [8, 8]: below the supernet's"),
    (["--config", "smoke", "--set", "space.num_cells=2"], "smoke.yaml:space.num_cells = 2: need >= 3"),
    (["--config", "smoke", "--device", "gpu"], "--device gpu: not a device name"),
    (["--config", "smoke", "--threads", "0"], "--threads 0: must be >= 1"),
    (["--resume"], "checkpoint.pt: nothing to resume"),
    (["--config", "smoke", "--resume", "--overwrite"], "contradict"),
]


@pytest.mark.parametrize("extra,message", SEARCH_BAD, ids=[" ".join(a) for a, _ in SEARCH_BAD])
def test_search_hostile(tmp_path, monkeypatch, capsys, extra, message):
    out = tmp_path / "run"
    line = cli_error(search_cli.main, ["--out", str(out), *extra], monkeypatch, capsys)
    assert message in line
    assert not out.exists()  # gt_size=8 used to leave alpha_history.jsonl and cost_table.json behind


def test_search_refuses_an_existing_search(tmp_path, monkeypatch, capsys):
    (tmp_path / "genotype.yaml").write_text("a finished search")
    line = cli_error(search_cli.main, ["--config", "smoke", "--out", str(tmp_path)], monkeypatch, capsys)
    assert "already holds a search run (genotype.yaml)" in line


# --- tools/pipeline.py ---------------------------------------------------------------------------------------

PIPELINE_BAD = [
    (["--threads", "-1"], "--threads -1: must be >= 1"),
    (["--threads", "0"], "--threads 0: must be >= 1"),
    (["--device", "gpu"], "--device gpu: not a device name"),
    (["--resume", "--overwrite"], "contradict"),
    (["--set", "evaluate.data=[]", "--set", "search.set=7"], "search.set: expected a list, got 7"),
]


@pytest.mark.parametrize("extra,message", PIPELINE_BAD, ids=[" ".join(a) for a, _ in PIPELINE_BAD])
def test_pipeline_hostile(tmp_path, monkeypatch, capsys, extra, message):
    out = tmp_path / "run"
    line = cli_error(pipeline_cli.main, ["--config", "smoke", "--out", str(out), *extra], monkeypatch, capsys)
    assert message in line
    assert not out.exists()


def test_pipeline_refuses_an_existing_run(tmp_path, monkeypatch, capsys):
    (tmp_path / "summary.json").write_text("{}")
    line = cli_error(pipeline_cli.main, ["--config", "smoke", "--out", str(tmp_path)], monkeypatch, capsys)
    assert f"{tmp_path} holds summary.json but no pipeline.json" in line and "--overwrite" in line
    assert (tmp_path / "summary.json").read_text() == "{}"


def test_pipeline_resume_keeps_finished_stages(tmp_path, monkeypatch):
    """Stage CLIs recorded, not run: --threads reaches every stage; after an interrupted distillation the same
    command skips the finished stages and continues it (--resume), or redoes it (--overwrite) when it left no
    checkpoint; --overwrite starts everything again."""
    calls = []
    out = tmp_path / "run"

    def stage(name, writes, rc=lambda: 0):
        def main(argv):
            calls.append((name, argv))
            for f in writes(argv):
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_text('{"results": []}')
            return rc()
        return main

    def after(flag):
        return lambda a: [Path(a[a.index(flag) + 1])]

    distill_rc = [130]  # the first distillation is interrupted (Ctrl-C) after its first checkpoint
    monkeypatch.setattr(pipeline_cli.search_tool, "main", stage("search", lambda a: [out / "search" / "genotype.yaml"]))
    monkeypatch.setattr(pipeline_cli.derive_tool, "main", stage("derive", after("--out")))
    monkeypatch.setattr(pipeline_cli.train_tool, "main",
                        stage("train", lambda a: [out / "distill" / "last.pt", out / "distill" / "best.pt"],
                              rc=lambda: distill_rc.pop() if distill_rc else 0))
    compressed = [out / "compress" / "deploy.pt", out / "compress" / "options.json"]
    monkeypatch.setattr(pipeline_cli.compress_tool, "main", stage("compress", lambda a: compressed))
    monkeypatch.setattr(pipeline_cli.evaluate_tool, "main", stage("evaluate", after("--json")))
    base = ["--config", "smoke", "--out", str(out), "--until", "evaluate", "--teacher", "none"]
    assert pipeline_cli.main([*base, "--threads", "1"]) == 130
    assert [c[0] for c in calls] == ["search", "derive", "train"]
    assert all(c[1][c[1].index("--threads") + 1] == "1" for c in calls if c[0] != "derive")
    assert "--resume" not in calls[2][1]
    calls.clear()
    assert pipeline_cli.main(base) == 0
    assert [c[0] for c in calls] == ["train", "compress"] + ["evaluate"] * 3  # bicubic, two students
    assert "--resume" in calls[0][1]
    state = json.loads((out / "pipeline.json").read_text())
    assert [state["stages"][n]["status"] for n in pipeline_cli.STAGES] == ["done"] * 5 + ["pending"]
    calls.clear()
    for name in ("compress", "evaluate"):
        state["stages"][name] = {"status": "pending"}
    state["stages"]["distill"]["status"] = "running"  # killed before its first checkpoint: redo it
    (out / "pipeline.json").write_text(json.dumps(state))
    (out / "distill" / "last.pt").unlink()
    assert pipeline_cli.main(base) == 0
    assert [c[0] for c in calls][:2] == ["train", "compress"] and "--overwrite" in calls[0][1]
    calls.clear()
    assert pipeline_cli.main([*base, "--overwrite"]) == 0
    assert [c[0] for c in calls][:4] == ["search", "derive", "train", "compress"]
    assert "--resume" not in calls[2][1]


# --- tools/evaluate.py ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny RLFN-S x2 checkpoint (ESA: 15x15 minimum input), NaN and Inf copies, odd-sized image sets."""
    root = tmp_path_factory.mktemp("eval")
    spec = arch_spec("rlfn_s", 2, nf=16, num_blocks=1)
    torch.manual_seed(0)
    sd = zoo.create("rlfn_s", 2, nf=16, num_blocks=1).state_dict()
    save_checkpoint(root / "ok.pt", state_dict=sd, spec=spec)
    for name, value in (("nan", math.nan), ("inf", math.inf)):
        bad = {k: v.clone() for k, v in sd.items()}
        bad["block_1.c1_r.weight"].view(-1)[3] = value
        save_checkpoint(root / f"{name}.pt", state_dict=bad, spec=spec)
    rng = np.random.default_rng(0)
    for name, side in (("one", 1), ("twelve", 12), ("small", 24)):
        write_png(root / name / "HR" / f"{name}.png", rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
    (root / "a_file").write_text("x")
    return root


EVAL_BAD = [
    (["--checkpoint", "{r}/ok.pt", "--data", "builtin", "--tile", "8"],
     "--tile 8 --tile-overlap 32: tile must be 0 (whole image) or an integer >= 16 LR pixels, got 8"),
    (["--checkpoint", "{r}/ok.pt", "--data", "builtin", "--tile", "32", "--tile-overlap", "-3"],
     "--tile-overlap -3: must be >= 0"),
    (["--checkpoint", "{r}/ok.pt", "--data", "builtin", "--tile", "-1"], "--tile -1: must be 0"),
    (["--arch", "bicubic", "--scale", "2", "--data", "{r}/one"], "one.png: image 1x1 is smaller than the scale x2"),
    (["--arch", "bicubic", "--scale", "2", "--data", "{r}/twelve"],
     "twelve.png: image 12x12 (LR 6x6) is too small to score at x2: at least 15x15 is needed"),
    (["--checkpoint", "{r}/ok.pt", "--data", "{r}/small"],
     "small.png: image 24x24 (LR 12x12) is too small to score at x2: at least 30x30 is needed"),
    (["--checkpoint", "{r}/nan.pt", "--data", "builtin"], "nan.pt: tensor block_1.c1_r.weight (16, 16, 3, 3) holds "
                                                           "1 NaN and 0 Inf values"),
    (["--checkpoint", "{r}/inf.pt", "--data", "builtin"], "inf.pt: tensor block_1.c1_r.weight (16, 16, 3, 3) holds "
                                                           "0 NaN and 1 Inf values"),
    (["--arch", "bicubic", "--scale", "2", "--data", "{r}/nowhere", "--json", "{r}"], "--json {r}: is a folder"),
    (["--arch", "bicubic", "--scale", "2", "--data", "{r}/nowhere", "--json", "{r}/a_file/x.json"],
     "--json {r}/a_file/x.json: its folder {r}/a_file is a file"),
    (["--arch", "bicubic", "--scale", "2", "--data", "{r}/nowhere", "--save-images", "{r}/a_file"],
     "--save-images {r}/a_file: is a file"),
    (["--arch", "bicubic", "--scale", "2", "--data", "builtin", "--device", "gpu"], "--device gpu: not a device"),
    (["--arch", "bicubic", "--scale", "2", "--data", "builtin", "--threads", "-1"], "--threads -1: must be >= 1"),
    (["--arch", "bicubic", "--scale", "2", "--data", "{r}/Set5 [x2]"], "{r}/Set5 [x2]: no such dataset folder"),
    (["--arch", "bicubic", "--scale", "2", "--data", "{r}/[/]"], "{r}/[/]: no such dataset folder"),
    (["--arch", "bicubic", "--scale", "2", "--data", "{r}/:train: [bold]"], "{r}/:train: [bold]: no such dataset"),
]


@pytest.mark.parametrize("argv,message", EVAL_BAD, ids=[str(i) for i in range(len(EVAL_BAD))])
def test_evaluate_hostile(files, monkeypatch, capsys, argv, message):
    line = cli_error(evaluate_cli.main, [a.replace("{r}", str(files)) for a in argv], monkeypatch, capsys)
    assert message.replace("{r}", str(files)) in line


def test_evaluate_genotype_yaml_bombs(tmp_path, monkeypatch, capsys):
    valid = "version: 1\nspace: dlsr\nscale: 2\nchannels: 8\nnum_cells: 3\nops: [conv_1x1]\ncell: [conv_1x1, " \
            "conv_1x1, conv_1x1]\n"
    (tmp_path / "bomb.yaml").write_text(BOMB.replace("a:", "x0:") + valid + "inputs: *i\n")
    (tmp_path / "loop.yaml").write_text(valid + "inputs: &l [[1, 2], *l]\n")
    for name, message in (("bomb.yaml", "expands to more than"), ("loop.yaml", "recursive structure")):
        line = cli_error(evaluate_cli.main, ["--genotype", str(tmp_path / name), "--weights", "w.pth", "--data",
                                             "builtin"], monkeypatch, capsys)
        assert f"{tmp_path / name}: " in line and message in line


def test_non_finite_output_is_an_error_naming_the_image():
    class Broken(torch.nn.Module):
        def forward(self, x):
            y = torch.nn.functional.interpolate(x, scale_factor=2)
            y[0, 0, 0, 0] = math.nan
            return y

    with pytest.raises(NonFiniteOutput, match=r"builtin:chelsea: the network output has 1 NaN and 0 Inf values"):
        evaluate_model(Broken(), BenchmarkSet("builtin", 2))


def test_load_strict_names_the_first_bad_tensor():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 1))
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    sd["1.bias"][2] = -math.inf
    sd["1.weight"][0, 0, 0, 0] = math.nan
    with pytest.raises(CheckpointError, match=r"w\.pth: tensor 1\.weight \(4, 4, 1, 1\) holds 1 NaN"):
        load_strict(net, sd, "w.pth")


# --- tools/derive.py, bench.py, reproduce.py, plot_genotype.py -----------------------------------------------


@pytest.fixture(scope="module")
def search_ckpt(tmp_path_factory):
    cfg = SearchConfig(space=SpaceConfig(ops=("identity", "conv_1x1", "conv_3x3"), num_cells=3, channels=8))
    path = tmp_path_factory.mktemp("search") / "checkpoint.pt"
    save_checkpoint(path, state_dict=SuperNet(cfg.space).state_dict(), spec={}, config=to_dict(cfg), step=0,
                    total_steps=10, search_state={})
    return path


DERIVE_BAD = [
    (["--exclude", "identity", "conv_1x1", "conv_3x3"], "--exclude identity conv_1x1 conv_3x3: excludes every op"),
    (["--exclude", "sep_conv_9x9"], "--exclude sep_conv_9x9: not an op of this search"),
    (["--out", "{d}"], "--out {d}: is a folder"),
    (["--step", "5"], "alpha_history.jsonl: no alpha history"),
]


@pytest.mark.parametrize("extra,message", DERIVE_BAD, ids=[" ".join(a) for a, _ in DERIVE_BAD])
def test_derive_hostile(search_ckpt, monkeypatch, capsys, extra, message):
    d = str(search_ckpt.parent)
    argv = [str(search_ckpt), "--out", f"{d}/g.yaml"] + [a.replace("{d}", d) for a in extra]
    line = cli_error(derive_cli.main, argv, monkeypatch, capsys)
    assert message.replace("{d}", d) in line


def test_derive_excluding_some_ops_still_works(search_ckpt):
    from search_spaces.genotype import load_genotype

    out = search_ckpt.parent / "g.yaml"
    assert derive_cli.main([str(search_ckpt), "--out", str(out), "--exclude", "identity", "conv_1x1"]) == 0
    assert set(load_genotype(out).cell) == {"conv_3x3"}


OTHER_BAD = [
    (bench_cli, ["search-step", "--lr-patch", "8"], "--lr-patch 8: smaller than the networks' minimum input 15x15"),
    (bench_cli, ["models", "--lr-size", "4"], "--lr-size 4: smaller than the networks' minimum input"),
    (bench_cli, ["models", "--threads", "0"], "--threads must be >= 1"),
    (bench_cli, ["models", "--device", "gpu"], "--device gpu: not a device name"),
    (bench_cli, ["models", "--json", "{t}"], "--json {t}: is a folder"),
    (reproduce_cli, ["--shared", "{t}/nowhere"], "{t}/nowhere/teachers/PROVENANCE.md: not found"),
    (reproduce_cli, ["--threads", "0", "--shared", "{t}"], "--threads 0: must be >= 1"),
    (plot_cli, ["dlsr_x2", "--out", "{t}"], "--out {t}: is a folder"),
]


@pytest.mark.parametrize("tool,argv,message", OTHER_BAD, ids=[" ".join(a) for _, a, _ in OTHER_BAD])
def test_other_clis_hostile(tool, argv, message, tmp_path, monkeypatch, capsys):
    line = cli_error(tool.main, [a.replace("{t}", str(tmp_path)) for a in argv], monkeypatch, capsys)
    assert message.replace("{t}", str(tmp_path)) in line


def test_reproduce_without_shared_data_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SRNAS_SHARED", str(tmp_path / "none"))  # the default --shared follows it
    line = cli_error(reproduce_cli.main, [], monkeypatch, capsys)
    assert f"{tmp_path / 'none'}/teachers/PROVENANCE.md: not found" in line and "SRNAS_SHARED" in line


# --- the error printer ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("message", ["Set5 [x2]/HR/bad.png", "a [/] b", "[bold red]x[/bold red]", ":train: :)",
                                     "[link=file:///etc/passwd]click[/link]", "multi\nline\r\nmessage", "\\[x]"])
def test_error_printer_prints_user_strings_literally(message, capsys):
    common.print_error("error", message)
    err = capsys.readouterr().err
    assert err.strip() == "error: " + " ".join(message.split())
