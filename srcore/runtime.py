"""CPU runtime settings every srnas CLI applies at start-up: keep glibc from returning activations to the OS.

The problem (issue #9): glibc's malloc serves every allocation above `M_MMAP_THRESHOLD` (dynamic, at most
32 MiB by default) with a fresh mmap and unmaps it on free; blocks freed at the top of the heap beyond
`M_TRIM_THRESHOLD` are handed back too. An SR network's activations are tens of MB each (IMDN x2 on a
512x384 LR image: 64 x 512 x 384 fp32 = 50 MB per feature map), so every forward pass maps, zero-fills
(page-faults) and unmaps hundreds of MB: measured here 1.3 million minor page faults and more system time
than user time per forward.

The fix, through `mallopt` (ctypes) in the running process, before the first large allocation:
  * `M_MMAP_MAX = 0`: no allocation is served by its own mmap, so large blocks come from the heap and are
    reused by the next forward pass;
  * `M_TRIM_THRESHOLD = 2 GiB - 1` (mallopt takes an int): freed memory stays with the process.
`tools/bench.py runtime` measures it against glibc's defaults and against the MALLOC_MMAP_THRESHOLD_ /
MALLOC_TRIM_THRESHOLD_ environment variables of issue #9 (which only act when set before the process starts),
each in a fresh process: IMDN x2 on a 384x512 LR image, 1 thread, went from 2.5 s user + 2.1 s system time
and 1.3 million minor page faults per forward to 2.5 s user + 0.3 s system and 25 thousand faults (0 in other
runs). The cost: the process keeps its peak heap until it exits.

Nothing is changed when the C library is not glibc, when another allocator is preloaded (jemalloc,
tcmalloc, mimalloc in LD_PRELOAD), when the user set any MALLOC_* tuning variable or glibc tunables, or
when SRNAS_ALLOCATOR=default.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from dataclasses import asdict, dataclass

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # mallopt's argument is a C int

_STATE: RuntimeState | None = None


@dataclass
class RuntimeState:
    applied: bool
    reason: str
    settings: dict

    def as_dict(self) -> dict:
        return asdict(self)


def _glibc():
    if platform.system() != "Linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:  # no loadable C library by that name (a non-glibc Linux): leave the allocator alone
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None  # musl and friends
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    return libc


def _skip_reason() -> str | None:
    if os.environ.get("SRNAS_ALLOCATOR", "") == "default":
        return "SRNAS_ALLOCATOR=default"
    preload = os.environ.get("LD_PRELOAD", "")
    for name in ("jemalloc", "tcmalloc", "mimalloc"):
        if name in preload:
            return f"{name} is preloaded"
    user = sorted(k for k in os.environ if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES")
    if user:
        return f"the environment sets {', '.join(user)}"
    return None


def configure_allocator() -> RuntimeState:
    """Apply the allocator settings once per process (later calls return the first call's result)."""
    global _STATE
    if _STATE is not None:
        return _STATE
    skip = _skip_reason()
    libc = None if skip else _glibc()
    if skip:
        _STATE = RuntimeState(False, skip, {})
    elif libc is None:
        _STATE = RuntimeState(False, "not glibc", {})
    else:
        ok = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        version = libc.gnu_get_libc_version().decode()
        _STATE = RuntimeState(ok, f"glibc {version}" + ("" if ok else ": mallopt refused"),
                              {"M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": TRIM_THRESHOLD})
    return _STATE


def runtime_state() -> RuntimeState | None:
    """What `configure_allocator` did in this process (None if it was not called)."""
    return _STATE
