"""Data-parallel search (torchrun, gloo on CPU): 2 processes follow the 1-process trajectory."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from nas.config import SearchConfig
from nas.search import run_search
from srcore.checkpoint import load_file
from srcore.config import load_config, to_dict
from srcore.imageio import write_png

REPO = Path(__file__).resolve().parents[1]


def test_two_processes_match_one_on_the_same_global_batch(tmp_path):
    """The smoke search (HFEN with a batch-wide max, scale-free mixture, cost hinge, temperature, random
    smoothing, DLSR's exact arch step) on a global batch of 4: 2 gloo processes of 2 patches each against
    one process of 4.

    Tolerance: the two runs compute the same sums in a different order (two half-batch means averaged vs
    one mean over the batch; gradients all-reduced), so they differ by float32 rounding, ~1e-7 relative
    per operation, and Adam (arch lr 3e-3) turns each gradient into a step of about its learning rate
    whatever the gradient's size, so the differences do not shrink with it. Measured: after 9 steps (6
    arch steps) the alphas have moved by ~2e-2 and the two runs differ by 1.1e-6. atol 1e-5 leaves a
    factor 10 for other CPUs and BLAS builds and is still 300 times smaller than one arch step: a wrong
    gradient average, a missing all-reduce, a shard taken twice or a different batch moves an alpha by
    a whole step (3e-3) or more.
    """
    img = tmp_path / "img"
    img.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        write_png(img / f"{i}.png", rng.integers(0, 256, size=(40, 40, 3)).astype(np.uint8))
    sets = [f"data.train={img}", "data.batch_size=4", "data.repeat=2", "loop.epochs=3", "arch.smoothing=0.02"]
    cfg = load_config(SearchConfig, "smoke", sets, REPO / "configs" / "search")
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(REPO / "tools" / "search.py"), "--config", str(path), "--out", str(tmp_path / "ddp"),
           "--threads", "1", "--no-plot"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one = run_search(cfg, tmp_path / "one")
    assert one.status == "finished" and one.total_steps == 9  # 6 train images x 2 patches / 4, 3 epochs

    d, o = load_file(tmp_path / "ddp" / "checkpoint.pt"), load_file(tmp_path / "one" / "checkpoint.pt")
    assert d["search_state"]["world_size"] == 2 and o["search_state"]["world_size"] == 1
    for key in ("alphas", "betas.0"):
        torch.testing.assert_close(d["state_dict"][key], o["state_dict"][key], rtol=0, atol=1e-5)
    for key, v in o["state_dict"].items():
        torch.testing.assert_close(d["state_dict"][key], v, rtol=1e-3, atol=1e-5)

    def history(run):
        return [json.loads(line) for line in (tmp_path / run / "alpha_history.jsonl").read_text().splitlines()]

    hd, ho = history("ddp"), history("one")
    assert [h["step"] for h in hd] == [h["step"] for h in ho] == list(range(1, 10))
    first, last = np.array(ho[0]["alpha"]), np.array(ho[-1]["alpha"])
    assert np.abs(last - first).max() > 1e-3  # the alphas really moved
    for a, b in zip(hd, ho):
        np.testing.assert_allclose(a["alpha"], b["alpha"], rtol=0, atol=1e-5)
        assert a["arch_steps"] == b["arch_steps"]
        if b["arch_steps"]:
            np.testing.assert_allclose(a["grad_alpha_loss"], b["grad_alpha_loss"], rtol=1e-3, atol=1e-7)
    assert (tmp_path / "ddp" / "genotype.yaml").read_text() == (tmp_path / "one" / "genotype.yaml").read_text()
