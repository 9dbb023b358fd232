"""tools/gpu_check.py on the CPU (--quick): every check runs except the CUDA calls, which are 'skipped' rows; a
check that raises is a 'failed' row (exit status 1) and the others still run; the JSON copy holds the table."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import import_tool

gpu_check = import_tool("gpu_check")

CUDA_ONLY = {"CUDA device", "DDP all-reduce (nccl, 1 process)", "CUDA-event latency"}


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    rc = gpu_check.main(["--device", "cpu", "--quick", "--threads", "1", "--out", str(out)])
    return rc, json.loads((out / "gpu_check.json").read_text())


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path of a machine without CUDA")
def test_cpu_path_runs_every_check_but_the_cuda_calls(cpu_run):
    rc, report = cpu_run
    assert rc == 0 and report["device"] == "cpu", report["rows"]
    assert report["device"] == "cpu" and report["quick"]
    status = {r["check"]: r["status"] for r in report["rows"]}
    assert {c for c, s in status.items() if s == "skipped"} == CUDA_ONLY
    assert all(s == "ok" for c, s in status.items() if c not in CUDA_ONLY), status
    for check in ("search step", "AMP training", "DDP all-reduce (gloo, 1 process)", "compression",
                  "latency student (trained)", "latency student (compressed)"):
        assert check in status, check
    rows = {r["check"]: r for r in report["rows"]}
    assert rows["AMP training"]["amp"] is False and rows["AMP training"]["final_loss"] > 0
    comp = rows["compression"]["rounds"]
    assert comp[-1]["macs"] < comp[0]["macs"]  # pruned
    assert rows["latency student (compressed)"]["fp32_s"] > 0


def test_a_failing_check_is_a_row_and_the_rest_still_run(tmp_path, monkeypatch):
    def boom(self):
        raise RuntimeError("CUDA error: an illegal memory access\nsecond line")

    for name in ("search_step", "amp_training", "compression", "latency"):  # keep it to the cheap checks
        monkeypatch.setattr(gpu_check.Check, name, boom if name == "search_step" else lambda self: [])
    rc = gpu_check.main(["--device", "cpu", "--quick", "--out", str(tmp_path), "--json", str(tmp_path / "g.json")])
    rows = json.loads((tmp_path / "g.json").read_text())["rows"]
    assert rc == 1
    failed = [r for r in rows if r["status"] == "failed"]
    assert [(r["check"], r["result"]) for r in failed] == [
        ("search step", "RuntimeError: CUDA error: an illegal memory access")]
    assert any(r["check"].startswith("DDP all-reduce (gloo") and r["status"] == "ok" for r in rows)
