"""tools/distill_table.py without training (its configs, statistics and markdown) and the t291 preset."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import import_tool, require_shared

from distill.config import TrainConfig
from srcore.config import load_config
from srcore.paths import expand


@pytest.fixture(scope="module")
def table():
    return import_tool("distill_table")


def test_method_configs_share_student_data_and_teacher(table):
    cfgs = {m: table.method_config(m, 1500, 1) for m in table.METHODS}
    for m, cfg in cfgs.items():
        assert cfg.loop.steps == 1500 and cfg.loop.seed == 1 and cfg.student.genotype == "rfdn_c32_x2", m
        assert cfg.data.train == cfgs["none"].data.train and cfg.optim == cfgs["none"].optim, m
        assert m == "none" or cfg.teacher[0].name == "rlfn_s_x2", m
    assert cfgs["dipnet"].stages[0].start == 750  # 500 of 1000 steps, scaled to the budget
    assert [t.kind for t in cfgs["none"].loss] == ["l1"]
    other = table.method_config("dipnet", 1000, 0, teacher="rlfn_x2")
    assert [t.name for t in other.teacher] == ["rlfn_x2", "rlfn_x2"]  # the first anchor replaced


def synthetic(seeds=(0, 1)):
    runs = []
    for seed in seeds:
        for m, gain in (("none", 0.0), ("output", 0.30), ("fitnet", 0.01)):
            base = 36.0 + 0.01 * seed
            runs.append({"method": m, "seed": seed, "steps": 10, "train_s": 100.0 * (1 + gain),
                         "s_per_step": 10.0 * (1 + gain), "params": 1000,
                         "sets": {s: {"psnr_y": base + gain + i, "ssim_y": 0.9}
                                  for i, s in enumerate(("Set5", "Set14", "B100"))}})
    meta = {"command": "python tools/distill_table.py ...", "date": "2026-01-01", "torch": "x", "cpu": "y",
            "jobs": 2, "threads": 1, "wall_s": 3600.0, "steps": 10, "teacher": "rlfn_s_x2"}
    refs = {"bicubic": {s: {"psnr_y": 30.0, "ssim_y": 0.8} for s in ("Set5", "Set14", "B100")}}
    return {"runs": runs, "references": refs, "meta": meta}


def test_gains_noise_and_verdicts(table):
    res = synthetic()
    by = {m: [r for r in res["runs"] if r["method"] == m] for m in ("none", "output", "fitnet")}
    assert table.gains(by)["output"] == pytest.approx([0.30, 0.30])
    assert table.noise_level(by) == pytest.approx(math.sqrt(0.5 * 0.01 ** 2))  # sd of (x, x + 0.01)
    md = table.render(res)
    assert "| output KD |" in md and "0.300 ± 0.000" in md and "| gain |" in md
    assert "| FitNet |" in md and "within noise" in md and "1.30x" in md
    one = table.render(synthetic(seeds=(0,)))
    assert "noise not measured" in one and "One seed only" in one


def test_estimate_hours(table):
    assert table.estimate_hours({"none": 1.0, "dukd": 3.0}, 10.0, 1000, 2, 2) == pytest.approx(
        (2 * (1000 + 10) + 2 * (3000 + 10)) / 2 / 3600)


def test_t291_preset_resolves_the_shared_folder():
    cfg = load_config(TrainConfig, "t291", preset_dir=Path(__file__).resolve().parents[1] / "configs" / "train")
    assert cfg.loop.steps == 1000 and cfg.teacher[0].name == "rlfn_s_x2" and cfg.optim.ema > 0
    assert all(p.startswith("${SRNAS_SHARED}/") for p in cfg.data.train)
    assert Path(expand(cfg.data.train[1])) == require_shared("data", "BSD200")


def test_a_run_saved_before_a_key_was_added_still_resumes(table):
    """A config saved by an older version lacks keys added since (with their defaults): it is the same run, and
    resume_diff names only keys that change the trajectory (not the checkpoint cadence)."""
    from distill.trainer import resume_diff
    from srcore.config import to_dict

    cfg = table.method_config("output", 20, 0, table.TEACHER)
    old = to_dict(cfg)
    del old["student"]["checkpoint"]  # a key added after the run was saved
    old["loop"]["save_every"] = 0
    assert resume_diff(old, cfg) == []
    old["loop"]["steps"] = 10
    old["optim"]["lr"] = 1.0
    assert resume_diff(old, cfg) == ["optim", "loop.steps"]
