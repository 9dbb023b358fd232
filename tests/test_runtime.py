"""srcore.runtime: the allocator settings every CLI applies at start-up (glibc only)."""
from __future__ import annotations

import subprocess
import sys

from conftest import REPO

CODE = ("import json, srcore.runtime as r; s = r.configure_allocator(); "
        "assert r.configure_allocator() is s; print(json.dumps(s.as_dict()))")


def _state(env_extra: dict) -> dict:
    import json
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.update(env_extra, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_allocator_tuned_on_glibc_unless_opted_out():
    import platform

    state = _state({"SRNAS_ALLOCATOR": ""})
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert state["applied"] and state["reason"].startswith("glibc")
        assert state["settings"] == {"M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": 2**31 - 1}
    else:
        assert not state["applied"]
    assert _state({"SRNAS_ALLOCATOR": "default"}) == {"applied": False, "reason": "SRNAS_ALLOCATOR=default",
                                                      "settings": {}}
    user = _state({"MALLOC_ARENA_MAX": "2"})
    assert not user["applied"] and "MALLOC_ARENA_MAX" in user["reason"]
