"""tools/compress.py end to end on a tiny network: rounds, fine-tuning, deploy.pt alone, ONNX against PyTorch,
evaluate --onnx / --checkpoint deploy.pt, resuming after a kill, and one-line errors for bad input."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys

import pytest
import torch
from conftest import REPO, import_tool

from search_spaces.genotype import load_genotype
from srcore.checkpoint import CheckpointError, load_file, save_checkpoint
from srcore.modelspec import build_model, genotype_spec, load_checkpoint_model

pytest.importorskip("onnxruntime")
torch.set_num_threads(1)


def _compress_cli():
    """tools/compress.py (named like the `compress` package, so it is loaded from its file)."""
    sys.path.insert(0, str(REPO / "tools"))
    try:
        spec = importlib.util.spec_from_file_location("compress_cli", REPO / "tools" / "compress.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(REPO / "tools"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny training and validation folders (crops of scikit-image photographs): fast to degrade and score."""
    from srcore.data import builtin_image
    from srcore.imageio import write_png

    root = tmp_path_factory.mktemp("data")
    img = builtin_image("astronaut")
    for i in range(4):
        write_png(root / "train" / f"t{i}.png", img[64 * i:64 * i + 96, 100:196])
    for i in range(2):
        write_png(root / "val" / "HR" / f"v{i}.png", img[300 + 60 * i:360 + 60 * i, 200:264])
    return root


@pytest.fixture(scope="module")
def student(tmp_path_factory, data):
    g = load_genotype("dlsr_x2")
    cell = ("rep_conv_3x3", "conv_3x3", "sep_conv_3x3")
    g = dataclasses.replace(g, channels=16, num_cells=2, inputs=(), cell=cell, ops=tuple(dict.fromkeys(g.ops + cell)),
                            rgb_range=1)
    spec = genotype_spec(g)
    torch.manual_seed(0)
    model = build_model(spec)
    path = tmp_path_factory.mktemp("student") / "student.pt"
    save_checkpoint(path, state_dict=model.state_dict(), spec=spec,
                    config={"data": {"train": str(data / "train")}})
    return path


def _args(student, out, data, *extra):
    val = str(data / "val")
    return ["--checkpoint", str(student), "--out", str(out), "--reparam", "--prune-macs", "0.5x", "--rounds", "2",
            "--finetune-steps", "2", "--lr-size", "32", "--val", val, "--latency-repeats", "1",
            "--threads", "1", "--set", "data.gt_size=32", "data.batch_size=2", "data.repeat=1", *extra]


def test_compress_end_to_end_and_resume(student, data, tmp_path):
    cli = _compress_cli()
    out = tmp_path / "c"
    assert cli.main(_args(student, out, data, "--export", "onnx,torchscript")) == 0
    report = json.loads((out / "report.json").read_text())
    rounds = report["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[2]["macs"] <= 0.5 * rounds[0]["macs"] < rounds[1]["macs"] < rounds[0]["macs"]
    assert rounds[2]["params"] < rounds[0]["params"] and rounds[2]["widths"]
    assert report["onnx"]["check"]["max_abs_diff"] < 1e-4 and abs(report["onnx"]["check"]["psnr_y_diff"]) < 1e-3
    for k in (1, 2):
        assert (out / f"round_{k}" / "finetune" / "last.pt").exists()

    # deploy.pt alone rebuilds the network (weights_only load inside), equal to the last round's model
    raw = load_file(out / "deploy.pt")
    assert raw["spec"]["reparameterized"] is True and raw["spec"]["widths"] == rounds[2]["widths"]
    deployed, _ = load_checkpoint_model(out / "deploy.pt")
    last, _ = load_checkpoint_model(out / "round_2" / "model.pt")
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        assert torch.equal(deployed(x), last(x))
        assert torch.allclose(torch.jit.load(str(out / "model.ts"))(x), last(x), atol=1e-6)

    # a kill during round 2: its metrics and model are missing; the rerun redoes round 2 only
    stamp = (out / "round_1" / "model.pt").stat().st_mtime_ns
    for name in ("metrics.json", "model.pt"):
        (out / "round_2" / name).unlink()
    with pytest.raises(ValueError, match="already holds a compression run.*--resume"):
        cli.main(_args(student, out, data))
    assert cli.main(_args(student, out, data, "--resume")) == 0
    assert (out / "round_1" / "model.pt").stat().st_mtime_ns == stamp
    assert json.loads((out / "round_2" / "metrics.json").read_text())["widths"] == rounds[2]["widths"]

    # the same --out with other settings is refused
    args = _args(student, out, data, "--resume")
    args[args.index("--rounds") + 1] = "3"
    with pytest.raises(ValueError, match="other settings.*rounds"):
        cli.main(args)

    # evaluate scores deploy.pt and the ONNX file like any model
    evaluate = import_tool("evaluate")
    for what in (["--checkpoint", str(out)], ["--onnx", str(out / "model.onnx")]):
        js = tmp_path / f"{what[0][2:]}.json"
        assert evaluate.main([*what, "--data", str(data / "val"), "--json", str(js)]) == 0
        assert json.loads(js.read_text())["results"][0]["psnr_y"] == pytest.approx(rounds[2]["psnr"]["val"],
                                                                                  abs=1e-3)
    with pytest.raises(ValueError, match="--scale 3 but .*x2"):
        evaluate.main(["--onnx", str(out / "model.onnx"), "--scale", "3", "--data", str(data / "val")])


def test_onnx_that_does_not_match_the_model(student, data, tmp_path):
    from compress.deploy import OnnxModule, compare_onnx, export_onnx
    from srcore.data import BenchmarkSet

    model, _ = load_checkpoint_model(student)
    other = build_model(load_file(student)["spec"]).eval()  # same architecture, other weights
    path = export_onnx(other, tmp_path / "other.onnx", torch.rand(1, 3, 32, 32))
    with pytest.raises(CheckpointError, match="does not match the model: max abs difference"):
        compare_onnx(model, OnnxModule(path), BenchmarkSet(data / "val", 2))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(CheckpointError, match="not a loadable ONNX model"):
        OnnxModule(bad)


def test_bad_inputs_one_line(student, data, tmp_path):
    cli = _compress_cli()
    unknown = tmp_path / "unknown.pt"
    save_checkpoint(unknown, state_dict={}, spec={"arch": "no_such_net", "scale": 2})
    with pytest.raises(ValueError, match="unknown architecture .no_such_net."):
        cli.main(["--checkpoint", str(unknown), "--out", str(tmp_path / "u"), "--prune-ratio", "0.5"])
    base = ["--checkpoint", str(student), "--val", str(data / "val"), "--lr-size", "32", "--latency-repeats", "1"]
    with pytest.raises(ValueError, match="not below the network's"):
        cli.main([*base, "--out", str(tmp_path / "a"), "--prune-to", "1e9"])
    with pytest.raises(ValueError, match="width multiple 64 cannot be met"):
        cli.main([*base, "--out", str(tmp_path / "b"), "--prune-ratio", "0.5", "--multiple", "64"])
    with pytest.raises(ValueError, match="--prune-macs 2x"):
        cli.main([*base, "--out", str(tmp_path / "c"), "--prune-macs", "2x"])
    with pytest.raises(ValueError, match="nothing to do"):
        cli.main([*base, "--out", str(tmp_path / "d")])


def test_int8_export_reports_drop_and_speed(student, data, tmp_path):
    cli = _compress_cli()
    out = tmp_path / "q"
    assert cli.main(["--checkpoint", str(student), "--out", str(out), "--prune-ratio", "0.5", "--int8",
                     "--val", str(data / "val"), "--lr-size", "32",
                     "--latency-repeats", "1", "--threads", "1"]) == 0
    q = json.loads((out / "report.json").read_text())["int8"]
    assert (out / "model_int8.onnx").exists() and q["latency_s"] > 0 and q["speedup_vs_fp32_onnx"] > 0
    assert abs(q["psnr_y_drop"]) < 5.0 and q["psnr_y_fp32"] - q["psnr_y_drop"] == pytest.approx(q["psnr_y_int8"])


def test_bench_latency_students_beside_zoo(student, data, tmp_path):
    """bench latency: a student and a zoo model timed in one process, eager and ORT, written to JSON + docs."""
    bench = import_tool("bench")
    js, doc = tmp_path / "latency.json", tmp_path / "benchmarks.md"
    assert bench.main(["latency", "--students", str(student), "--models", "rlfn_s", "--lr-size", "24",
                       "--repeats", "1", "--warmup", "0", "--threads", "1", "--psnr-data", str(data / "val"),
                       "--json", str(js), "--doc", str(doc)]) == 0
    p = json.loads(js.read_text())
    rows = {r["kind"]: r for r in p["results"]}
    assert set(rows) == {"student", "zoo"} and p["reference"] == "rlfn_s"
    assert rows["zoo"]["torch_speedup_vs_reference"] == 1.0 and rows["student"]["onnx_latency_s"] > 0
    assert rows["student"]["psnr_y"] is not None and rows["student"]["params"] < rows["zoo"]["params"]
    assert p["runtime"]["reason"] and "<!-- bench:latency -->" in doc.read_text()


def test_a_round_whose_target_is_already_met_prunes_nothing(student, tmp_path):
    """Width multiple 8 on 16 channels: round 1 overshoots round 2's target (0.6^(2/3) of the MACs); round 2
    is recorded as already met (the same network, not pruned) and round 3 prunes on to the final target."""
    from compress.iterative import Compressor, CompressSettings, RoundRecord
    from compress.prune import Target

    settings = CompressSettings(checkpoint=str(student), target=Target("macs", 0.6), rounds=3, lr_size=32,
                                latency_repeats=1, threads=1, multiple=8)
    history = Compressor(settings, tmp_path / "c").run()
    macs = [r.macs for r in history]
    assert [r.already_met for r in history] == [False, False, True, False]
    assert macs[2] == macs[1] <= macs[0] * 0.6 ** (2 / 3) and macs[3] <= 0.6 * macs[0] < macs[2]
    assert history[2].ratio == 0.0 and history[2].target["value"] == pytest.approx(macs[0] * 0.6 ** (2 / 3))
    assert not (tmp_path / "c" / "round_2" / "pruned.pt").exists()
    a, _ = load_checkpoint_model(tmp_path / "c" / "round_1" / "model.pt")
    b, _ = load_checkpoint_model(tmp_path / "c" / "round_2" / "model.pt")
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    again = Compressor(settings, tmp_path / "c").run()  # finished rounds are read back as recorded
    assert again == history and RoundRecord(**json.loads((tmp_path / "c" / "round_2" / "metrics.json")
                                                         .read_text())).already_met
