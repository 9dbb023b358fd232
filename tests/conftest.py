"""Shared test helpers: where ../shared is, and skip-or-fail when it is absent."""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

# One BLAS/OpenMP thread per test process: the suite runs on 2 cores, some tests start several processes,
# and oversubscribed threads made it 3x slower there. Set before torch starts its thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SRNAS_SHARED", REPO.parent / "shared"))


def require_shared(*parts: str) -> Path:
    """The path SHARED/parts...; skips the test on a laptop without it, fails under CI=true."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        msg = f"{path} not found (set SRNAS_SHARED to the folder holding data/ and teachers/)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def import_tool(name: str):
    """Import a script from tools/ (the scripts import `common` by name, so tools/ is on sys.path meanwhile)."""
    sys.path.insert(0, str(REPO / "tools"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO / "tools"))


def texture_images(folder: Path, n: int = 8, size: int = 48, seed: int = 0) -> Path:
    """`n` small random-texture RGB PNGs (size x size, blocks of size/12 pixels plus noise) in `folder`: a
    training set that loads in milliseconds."""
    import numpy as np

    from srcore.imageio import write_png

    rng = np.random.default_rng(seed)
    for i in range(n):
        base = rng.integers(0, 256, size=(12, 12, 3)).astype(np.float64)
        img = np.kron(base, np.ones((size // 12, size // 12, 1))) + rng.normal(0, 8, size=(size, size, 3))
        write_png(folder / f"img{i}.png", np.clip(img, 0, 255).astype(np.uint8))
    return folder
SMOKE_PIPELINE = ["--config", "smoke", "--threads", "1", "--set", "report.crops=1"]


@pytest.fixture(scope="session")
def smoke_pipeline(tmp_path_factory):
    """One `tools/pipeline.py --config smoke` run at x2 (seconds), shared by the tests that read it: copy it
    before changing it. The teacher is the default choice: the registry's rlfn_s_x2 when ../shared holds it,
    else a tiny one trained here (cached in the run's own cache folder)."""
    root = tmp_path_factory.mktemp("smoke_pipeline")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SRNAS_CACHE", str(root / "cache"))
        assert import_tool("pipeline").main([*SMOKE_PIPELINE, "--out", str(root / "run")]) == 0
    return root / "run"
