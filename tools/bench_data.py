"""`tools/bench.py data`: what PatchDataset's two caches cost (srcore/data.py, srcore/decoded.py).

Each row runs in a fresh process on the same training folder(s): `ram` (every decoded pair in the process),
`disk` building its memory-mapped cache, and `disk` again mapping the cache built by the row before. Per row:
the seconds to build the dataset, the process's anonymous memory (RssAnon: what cannot be given back) and
file-backed resident memory (RssFile: page cache the OS reclaims under pressure) after building and after
drawing the patches, the peak RSS, and patches per second drawn (`--patches` items in a seeded random order,
the training loop's access pattern). The header-only estimate that `cache: ram` warns on is recorded beside.
"""
from __future__ import annotations

import multiprocessing
import random
import resource
import tempfile
import time
from pathlib import Path

DATA_COLUMNS = ("cache", "build (s)", "anon MB built", "file MB built", "anon MB after", "file MB after",
                "peak RSS MB", "patches / s")


def _rss() -> dict[str, float]:
    """RssAnon and RssFile of this process in bytes (Linux /proc/self/status)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            out[key] = float(value.split()[0]) * 1024
    return out


def data_worker(train: list[str], scale: int, gt_size: int, cache: str, cache_dir: str, patches: int) -> dict:
    import torch

    from srcore.data import PatchDataset

    torch.set_num_threads(1)
    base = _rss()
    t0 = time.perf_counter()
    ds = PatchDataset(train, scale, gt_size, cache=cache, cache_dir=cache_dir, seed=0)
    build_s = time.perf_counter() - t0
    built = _rss()
    order = random.Random(0).choices(range(len(ds)), k=patches)
    t0 = time.perf_counter()
    for i in order:
        ds[i]
    draw_s = time.perf_counter() - t0
    after = _rss()
    return {"cache": cache, "images": len(ds.images), "build_s": build_s,
            "anon_built": built["RssAnon"] - base["RssAnon"], "file_built": built["RssFile"] - base["RssFile"],
            "anon_after": after["RssAnon"] - base["RssAnon"], "file_after": after["RssFile"] - base["RssFile"],
            "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "patches_per_s": patches / draw_s}


def bench_data(args, log) -> dict:
    from srcore.data import _train_entries, decoded_bytes

    entries = _train_entries(args.train)
    estimate = decoded_bytes(entries, args.scale)
    ctx = multiprocessing.get_context("spawn")
    rows = []
    with tempfile.TemporaryDirectory(prefix="srnas-bench-data-") as cache_dir:
        for cache, label in (("ram", "ram"), ("disk", "disk (build)"), ("disk", "disk (reuse)")):
            log.info(f"{label}: {len(entries)} images x{args.scale}, {args.patches} patches of {args.gt_size} "
                     "(fresh process)")
            with ctx.Pool(1) as pool:
                r = pool.apply(data_worker, (args.train, args.scale, args.gt_size, cache, cache_dir, args.patches))
            rows.append({**r, "row": label})
        cache_bytes = sum(p.stat().st_size for p in Path(cache_dir).glob("*.u8"))
    return {"subcommand": "data", "train": args.train, "scale": args.scale, "gt_size": args.gt_size,
            "patches": args.patches, "estimated_decoded_bytes": estimate, "disk_cache_bytes": cache_bytes,
            "results": rows}


def data_cells(r: dict) -> list[str]:
    mb = 1e6
    return [r["row"], f"{r['build_s']:.2f}", f"{r['anon_built'] / mb:.1f}", f"{r['file_built'] / mb:.1f}",
            f"{r['anon_after'] / mb:.1f}", f"{r['file_after'] / mb:.1f}", f"{r['max_rss_bytes'] / mb:.0f}",
            f"{r['patches_per_s']:.0f}"]


def data_caption(p: dict) -> str:
    n = p["results"][0]["images"]
    return (f"PatchDataset caches: {n} images from {', '.join(p['train'])}, x{p['scale']}, HR patch {p['gt_size']}; "
            f"decoded pairs estimated from the headers at {p['estimated_decoded_bytes'] / 1e6:.1f} MB, disk cache "
            f"{p['disk_cache_bytes'] / 1e6:.1f} MB")


def data_markdown(p: dict, markdown_rows) -> str:
    lines = ["## PatchDataset memory: ram vs disk cache", "", data_caption(p) + ".", "",
             "MB are differences from the fresh process before the dataset was built; anon = RssAnon (private "
             "memory), file = RssFile (mapped cache pages, reclaimable page cache). `cache: ram` warns when the "
             "estimate exceeds 8 GiB (DF2K at x2: about 36 GB).", ""]
    lines += markdown_rows(DATA_COLUMNS, [data_cells(r) for r in p["results"]])
    return "\n".join(lines)
