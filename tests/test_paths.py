"""$SRNAS_SHARED/ paths in configs: expanded from the environment variable (default <repo>/../shared) where
files are opened, so the presets work from any working directory."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, require_shared

from distill.config import TrainConfig
from srcore.checkpoint import CheckpointError, load_file
from srcore.config import load_config
from srcore.data import BenchmarkSet, DataError, PatchDataset
from srcore.paths import expand, shared_dir


def test_expansion_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SRNAS_SHARED", str(tmp_path))
    assert expand("$SRNAS_SHARED/data/Set5") == str(tmp_path / "data" / "Set5")
    assert expand("../shared/data/Set5") == "../shared/data/Set5"  # other paths are left alone
    assert expand(Path("x/y")) == "x/y"
    monkeypatch.delenv("SRNAS_SHARED")
    assert shared_dir() == REPO.parent / "shared"


def _shared_paths(cfg: TrainConfig) -> list[str]:
    train = cfg.data.train if isinstance(cfg.data.train, (list, tuple)) else [cfg.data.train]
    user_data = [p for p in [*train, *cfg.val.data] if p.startswith("/data/")]  # the user's own DIV2K, not shared
    return [t.weights for t in cfg.teacher if t.weights] + [p for p in [*train, *cfg.val.data] if p not in user_data]


@pytest.mark.parametrize("preset", ["kd_none", "kd_output", "kd_fitnet", "kd_facd", "kd_lsfd", "kd_dukd", "kd_dipnet",
                                    "paper", "t291"])
def test_presets_name_shared_files_portably(preset):
    cfg = load_config(TrainConfig, preset, preset_dir=REPO / "configs" / "train")
    paths = _shared_paths(cfg)
    assert paths or preset == "paper", preset  # paper reads only the user's DIV2K and a registered teacher
    assert all(p.startswith("${SRNAS_SHARED}/") for p in paths), paths
    assert all(t.name or t.checkpoint for t in cfg.teacher), cfg.teacher  # weights by registered name
    require_shared("teachers")
    for p in paths:
        assert Path(expand(p)).exists(), p


def test_shared_files_open_from_any_working_directory(tmp_path, monkeypatch):
    set5 = require_shared("data", "Set5")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SRNAS_SHARED", str(set5.parent.parent))
    assert len(BenchmarkSet("$SRNAS_SHARED/data/Set5", 2)) == 5
    assert BenchmarkSet("$SRNAS_SHARED/data/Set5", 2).name == "Set5"
    assert load_file("$SRNAS_SHARED/teachers/rlfn_s_x2.pth")


def test_missing_shared_files_name_both_forms(tmp_path, monkeypatch):
    monkeypatch.setenv("SRNAS_SHARED", str(tmp_path))
    with pytest.raises(DataError, match=rf"\$SRNAS_SHARED/data/T91 \(= {tmp_path}/data/T91\): no such training"):
        PatchDataset("$SRNAS_SHARED/data/T91", 2, 32)
    with pytest.raises(DataError, match=rf"\(= {tmp_path}/data/Set5\): no such dataset folder"):
        BenchmarkSet("$SRNAS_SHARED/data/Set5", 2)
    with pytest.raises(CheckpointError, match=rf"\(= {tmp_path}/teachers/x.pth\): no such checkpoint file"):
        load_file("$SRNAS_SHARED/teachers/x.pth")
