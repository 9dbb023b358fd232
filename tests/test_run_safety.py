"""No run, however it is started, interrupted or raced, loses or mixes up another run's results: two processes
on one --out, kill -9 during a checkpoint save, Ctrl-C, torn last lines of the JSON logs."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, import_tool
from test_rundir import start_holder

from srcore.checkpoint import read_checkpoint
from srcore.imageio import write_png
from srcore.rundir import LOCK_NAME

train_cli, search_cli, pipeline_cli = import_tool("train"), import_tool("search"), import_tool("pipeline")
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}

# train.py in a process that SIGKILLs itself inside its second checkpoint save (after the temp file is written,
# before the rename), as a power cut or the OOM killer would
KILLED_IN_SAVE = """
import os, signal, sys
sys.path.insert(0, os.path.join(sys.argv[1], "tools"))
import train
calls, real = [0], os.fsync
def fsync(fd):
    calls[0] += 1
    if calls[0] == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    real(fd)
os.fsync = fsync
sys.exit(train.main(sys.argv[2:]))
"""


def write_tiny(root):
    """Four 40x40 training images and a 6-step training config on them (checkpoint every 2 steps, no teacher)."""
    rng = np.random.default_rng(1)
    for i in range(4):
        write_png(root / "hr" / f"im{i}.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    (root / "train.yaml").write_text(
        f"student: {{genotype: dlsr_x2, scale: 2, channels: 8, num_cells: 2}}\n"
        f"data: {{train: {root / 'hr'}, gt_size: 32, batch_size: 2}}\n"
        "loss: [{name: l1, kind: l1}]\nloop: {steps: 6, log_every: 2, save_every: 2}\n")
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny(tmp_path_factory.mktemp("tiny"))


def train_argv(tiny, out) -> list[str]:
    return ["--config", str(tiny / "train.yaml"), "--out", str(out), "--threads", "1"]


@pytest.fixture(scope="module")
def reference(tiny):
    """The uninterrupted 6-step run every interrupted one must reproduce exactly."""
    out = tiny / "reference"
    assert train_cli.main(train_argv(tiny, out)) == 0
    return read_checkpoint(out / "last.pt")


def assert_same_run(out, reference):
    ck = read_checkpoint(out / "last.pt")
    assert ck["step"] == reference["step"] == 6
    for k, v in reference["train_state"]["student"].items():
        assert torch.equal(ck["train_state"]["student"][k], v), k
    steps = [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    assert steps == [2, 4, 6]  # each logged step once: nothing redone twice, nothing from another run
    assert not list(out.glob(".*.tmp")) and not (out / LOCK_NAME).exists()


def test_kill_9_during_a_save_then_resume(tiny, reference, tmp_path, caplog):
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-c", KILLED_IN_SAVE, str(REPO), *train_argv(tiny, out)],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert read_checkpoint(out / "last.pt")["step"] == 2  # the last good checkpoint survived the kill
    assert len(list(out.glob(".last.pt.*.tmp"))) == 1 and (out / LOCK_NAME).exists()  # what kill -9 leaves
    with caplog.at_level(logging.WARNING, logger="srnas"):
        assert train_cli.main([*train_argv(tiny, out), "--resume"]) == 0
    assert "left by a save that was killed" in caplog.text and "no longer running" in caplog.text
    assert_same_run(out, reference)


def test_ctrl_c_saves_prints_the_resume_command_and_resumes_exactly(tiny, reference, tmp_path, monkeypatch,
                                                                    caplog):
    out = tmp_path / "run"
    on_step_end = train_cli.RichProgress.on_step_end

    def press_ctrl_c_at_step_3(self, trainer, step, losses):
        on_step_end(self, trainer, step, losses)
        if step == 3:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(train_cli.RichProgress, "on_step_end", press_ctrl_c_at_step_3)
    with caplog.at_level(logging.WARNING, logger="srnas"):
        assert train_cli.main(train_argv(tiny, out)) == 130
    assert read_checkpoint(out / "last.pt")["step"] == 3  # saved at the step boundary, not at the last save (2)
    assert f"continue with: python tools/train.py --config {tiny / 'train.yaml'} --out {out} --threads 1 --resume" \
        in caplog.text
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is restored
    monkeypatch.undo()
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "lr": 0.0001, "loss/l')  # a torn last line, as a crash mid-write leaves it
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="srnas"):
        assert train_cli.main([*train_argv(tiny, out), "--resume"]) == 0
    assert "metrics.jsonl:2: dropped a torn last line" in caplog.text
    assert_same_run(out, reference)


def test_two_train_processes_started_together(tiny, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "tools" / "train.py"), *train_argv(tiny, out)]
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=ENV)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read(), p.pid) for p in procs]
    assert sorted(rc for rc, _, _ in results) == [0, 2], results
    (_, _, winner), (_, err, _) = sorted(results, key=lambda r: r[0])
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    # the loser either met the lock (naming the winner) or, if it came later, the finished run
    assert f"in use by pid {winner} " in lines[0] or "already holds a training run" in lines[0]
    ck = read_checkpoint(out / "last.pt")
    assert ck["step"] == 6
    steps = [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    assert steps == [2, 4, 6] and not (out / LOCK_NAME).exists()


@pytest.mark.parametrize("tool,argv", [
    (train_cli, ["--config", "smoke", "--resume"]),
    (search_cli, ["--config", "smoke"]),
    (pipeline_cli, ["--config", "smoke", "--resume"]),
])
def test_a_second_process_gets_an_error_naming_the_holder(tool, argv, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    holder = start_holder(out)
    try:
        (out / "last.pt").write_bytes(b"the holder's work")
        monkeypatch.setattr(sys, "argv", ["tool", *argv, "--out", str(out)])
        with pytest.raises(SystemExit) as e:
            import_tool("common").run_cli(tool.main)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and "\n" not in err
        assert err.startswith(f"error: {out} is in use by pid {holder.pid} on ")
        assert (out / "last.pt").read_bytes() == b"the holder's work"
    finally:
        holder.kill()
        holder.wait()


def test_search_resumes_over_a_torn_alpha_history(tiny, tmp_path, caplog):
    out = tmp_path / "search"
    base = ["--config", "smoke", "--out", str(out), "--threads", "1", "--no-plot", "--set",
            f"data.train={tiny / 'hr'}", "--set", "data.repeat=2", "--set", "loop.epochs=1"]
    assert search_cli.main([*base, "--stop-at", "2"]) == 0
    history = out / "alpha_history.jsonl"
    with open(history, "a") as f:
        f.write('{"step": 3, "epoch": 0, "ops": ["iden')
    with caplog.at_level(logging.WARNING, logger="srnas"):
        assert search_cli.main([*base, "--resume"]) == 0
    assert "alpha_history.jsonl:3: dropped a torn last line" in caplog.text
    steps = [json.loads(line)["step"] for line in history.read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == read_checkpoint(out / "checkpoint.pt")["step"]
