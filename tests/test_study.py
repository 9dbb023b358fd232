"""The NAS evaluation study: random genotypes at matched parameters (nas/sample.py), the supernet's view
(nas/proxy.py), the study config, and a seconds-long end-to-end study that stops, resumes and reuses."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, import_tool
from PIL import Image

from distill.trainer import Trainer
from nas.config import SpaceConfig
from nas.proxy import rank_correlation
from nas.sample import ParamCounter, genotype_params, random_genotype, sample_matched
from search_spaces.genotype import validate
from search_spaces.network import DLSRNet
from search_spaces.ops import DLSR_PRIMITIVES
from srcore.config import ConfigError
from srcore.cost import count_params

SPACE = SpaceConfig(ops=DLSR_PRIMITIVES, num_cells=4, channels=32, skip="bicubic")


@pytest.fixture(scope="module")
def study():
    return import_tool("study")


# --- random genotypes ------------------------------------------------------------------------------------------


def test_sampler_matches_parameters_and_is_deterministic():
    res = sample_matched(SPACE, 150_000, 0.10, 5, seed=0)
    assert len(res.genotypes) == len(set(res.genotypes)) == 5 and res.draws > 5  # distinct, some rejected
    for g, p in zip(res.genotypes, res.params):
        assert p == count_params(DLSRNet(g))  # the count without building is exact
        assert abs(p / 150_000 - 1) <= 0.10
        # a valid genotype of the same space: same ops list, width, depth, skip, one shared cell
        assert validate(g.to_dict()) == g
        assert (g.ops, g.channels, g.num_cells, g.skip, g.cells) == (SPACE.ops, 32, 4, "bicubic", None)
        assert all(a < b < k for k, (a, b) in enumerate(g.inputs, start=3))
    again = sample_matched(SPACE, 150_000, 0.10, 5, seed=0)
    assert again.genotypes == res.genotypes and again.draws == res.draws
    other = sample_matched(SPACE, 150_000, 0.10, 5, seed=1)
    assert other.genotypes != res.genotypes
    # an excluded genotype is never accepted
    first = sample_matched(SPACE, 150_000, 0.10, 1, seed=0).genotypes[0]
    assert first not in sample_matched(SPACE, 150_000, 0.10, 3, seed=0, exclude=[first]).genotypes


def test_sampler_per_cell_space_and_errors():
    space = dataclasses.replace(SPACE, shared_alphas=False)
    res = sample_matched(space, 200_000, 0.05, 3, seed=2)
    for g, p in zip(res.genotypes, res.params):
        assert g.cell is None and len(g.cells) == 4 and p == count_params(DLSRNet(g))
    lo, hi = ParamCounter(SPACE).range()
    assert (lo, hi) == (79_180, 669_004)
    with pytest.raises(ValueError, match="outside the space's range"):
        sample_matched(SPACE, 20_000, 0.10, 1)
    with pytest.raises(ValueError, match="found only"):
        sample_matched(SPACE, lo, 0.0, 2, max_draws=200)  # one genotype has exactly the minimum
    import random

    g = random_genotype(SPACE, random.Random(0))
    assert genotype_params(SPACE, g) == count_params(DLSRNet(g))


def test_rank_correlation():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank_correlation([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert rank_correlation([1, 1], [1, 2]) is None


# --- the config ---------------------------------------------------------------------------------------------------


def test_study_config_loads_and_resolves(study, tmp_path):
    cfg = study.load_study_config(REPO / "configs" / "study" / "t291_x2.yaml")
    assert cfg.recipe.kd == "none" and cfg.recipe.seeds == [0, 1] and cfg.random.count >= 5
    assert cfg.random.tolerance == 0.10 and cfg.baselines.published == "dlsr_x2"
    scfgs = {v.name: study.search_config(cfg, v, 1, "cpu") for v in cfg.search.variants}
    assert scfgs["cost"].cost.kind == "params" and scfgs["cost"].cost.target == 150_000
    assert scfgs["nocost"].cost.kind == "none" and scfgs["nocost"].space == scfgs["cost"].space
    space = scfgs["cost"].space
    assert (space.num_cells, space.channels, space.skip, space.ops) == (4, 32, "bicubic", DLSR_PRIMITIVES)
    assert [Path(p).name for p in scfgs["cost"].data.train] == ["T91", "BSD200"]
    # every row gets t291's recipe without its teacher: L1 only, the study's budget and seed
    g = tmp_path / "g.yaml"
    g.write_text((REPO / "search_spaces" / "genotypes" / "rfdn_c32_x2.yaml").read_text())
    t = study.train_config(cfg, g, 2, 1)
    assert t.teacher == [] and [x.kind for x in t.loss] == ["l1"] and t.val.data == []
    assert (t.loop.steps, t.loop.seed, t.student.genotype) == (cfg.recipe.steps, 1, str(g.resolve()))
    assert t.data.gt_size == 64 and t.optim.ema == 0.999 and t.loop.save_every == cfg.recipe.save_every
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: {match: nope}\n")
    with pytest.raises(ConfigError, match="search.match"):
        study.load_study_config(bad)
    bad.write_text("recipe: {steps: 10, oops: 1}\n")
    with pytest.raises(ConfigError, match="oops"):
        study.load_study_config(bad)


def test_baseline_genotypes_at_the_space_width(study):
    from search_spaces.genotype import load_genotype

    dlsr = study.at_width(load_genotype("dlsr_x2"), 32, 4, "bicubic")
    assert dlsr.cell == ("conv_1x1", "sep_conv_7x7", "sep_conv_5x5") and dlsr.inputs == ((1, 2), (2, 3))
    assert (dlsr.channels, dlsr.skip, dlsr.rgb_range) == (32, "bicubic", 1.0)
    hand = study.matched_width(load_genotype("rfdn_c32_x2"), 150_000)
    assert hand.channels == 30 and abs(count_params(DLSRNet(hand)) - 150_000) < 6_000


# --- a seconds-long study ---------------------------------------------------------------------------------------


def _images(folder: Path, n: int, size: int, seed: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):  # smooth random images: low-resolution noise, upscaled
        small = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.BICUBIC).save(folder / f"im{i}.png")


@pytest.fixture()
def tiny(tmp_path):
    _images(tmp_path / "train", 8, 48, 0)
    _images(tmp_path / "test" / "HR", 2, 48, 1)
    (tmp_path / "recipe.yaml").write_text(f"""
student: {{genotype: rfdn_c32_x2, scale: 2}}
data: {{train: {tmp_path / 'train'}, gt_size: 32, batch_size: 4, repeat: 1}}
optim: {{lr: 1.0e-3, ema: 0.9}}
schedule: {{warmup_steps: 1}}
loop: {{steps: 4, log_every: 2}}
""")
    (tmp_path / "study.yaml").write_text(f"""
recipe: {{config: {tmp_path / 'recipe.yaml'}, steps: 4, seeds: [0, 1], save_every: 2, log_every: 2}}
search:
  config: smoke
  variants:
    - {{name: cost, label: "searched, cost", set: ["data.train={tmp_path / 'train'}"]}}
    - {{name: nocost, label: "searched, no cost", set: ["data.train={tmp_path / 'train'}", "cost.kind=none"]}}
random: {{count: 2, tolerance: 0.2}}
baselines: {{published: null, hand: rfdn_c32_x2}}
eval: {{sets: ["{tmp_path / 'test'}"], cost_input: [16, 16], latency_repeats: 1, proxy_batches: 1}}
""")
    return tmp_path


def test_tiny_study_stops_resumes_and_reuses(study, tiny, monkeypatch):
    out, doc = tiny / "out", tiny / "doc" / "study.md"
    argv = ["--config", str(tiny / "study.yaml"), "--out", str(out), "--doc", str(doc)]
    # 1) every run stops at step 2: the searches are checkpointed, so nothing that needs them trains yet
    assert study.main([*argv, "--stop-at", "2"]) == 1  # the rows waiting on the searches are reported
    for v in ("cost", "nocost"):
        assert torch.load(out / "search" / v / "checkpoint.pt", weights_only=False)["step"] == 2
        assert not (out / "search" / v / "result.json").exists()
    assert "## Missing runs" in doc.read_text() and "`search:cost`" in doc.read_text()

    # 2) the same command without --stop-at resumes the searches and trains every row and seed
    assert study.main(argv) == 0
    res = json.loads(doc.with_suffix(".json").read_text())
    assert res["missing"] == [] and res["errors"] == {}
    names = [r["name"] for r in res["rows"]]
    assert names == ["searched_cost", "searched_nocost", "hand", "random_1", "random_2"]
    target = res["rows"][0]["params"]
    for r in res["rows"]:
        assert [x["seed"] for x in r["runs"]] == [0, 1] and all(x["steps"] == 4 for x in r["runs"])
        assert r["params"] == r["runs"][0]["params"] and r["macs"] > 0 and r["latency_ms"] > 0
        if r["kind"] == "random":
            assert abs(r["params"] / target - 1) <= 0.2
    assert res["random"]["draws"] >= 2 and res["random"]["accepted"] == 2
    assert set(res["proxy"]) == {"cost", "nocost"} and "random_1" in res["proxy"]["cost"]
    assert res["sigma"] is not None and "best_random" in res["verdicts"]["cost"]
    text = doc.read_text()
    assert "| *bicubic* |" in text and "## Verdict (generated)" in text and doc.with_suffix(".png").stat().st_size
    metrics = [json.loads(x) for x in (out / "search" / "cost" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["step"] == 1 and metrics[-1]["step"] == 9  # continued from the step-2 checkpoint

    # 3) a third run trains and searches nothing: every finished run is reused
    def refuse(*a, **k):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(study, "run_search", refuse)
    monkeypatch.setattr(Trainer, "fit", refuse)
    assert study.main(argv) == 0
    again = json.loads(doc.with_suffix(".json").read_text())
    assert [r["runs"] for r in again["rows"]] == [r["runs"] for r in res["rows"]]
