#!/usr/bin/env python
"""Evaluate every official teacher checkpoint and the bicubic baseline on the benchmark sets and write
the reproduction table (docs/reproduction.md and a JSON file).

Examples:
  python tools/reproduce.py --shared ../shared --sets Set5 Set14 B100 --out docs/reproduction.md
  python tools/reproduce.py --only span_ntire24_x4.pth pfdn_ntire23_x4.pth   # re-run these rows, keep the rest
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch
from common import REPO, console, run_cli, setup_logging, setup_runtime
from rich.table import Table

from distill.pretrained import load_pretrained, provenance_cells, provenance_psnr
from srcore.checkpoint import load_strict, read_state_dict
from srcore.data import BenchmarkSet
from srcore.evaluation import evaluate_bicubic, evaluate_model
from srcore.paths import shared_dir
from srcore.rundir import check_output_file

# file in shared/teachers, architecture (or genotype:<name>), scales
TEACHERS = [
    ("imdn_x2.pth", "imdn", (2,)), ("imdn_x4.pth", "imdn", (4,)), ("imdn_aim19_x4.pth", "imdn_aim19", (4,)),
    ("rfdn_x4.pth", "rfdn", (4,)), ("rlfn_x2.pth", "rlfn", (2,)), ("rlfn_x4.pth", "rlfn", (4,)),
    ("rlfn_s_x2.pth", "rlfn_s", (2,)), ("rlfn_s_x4.pth", "rlfn_s", (4,)), ("pan_x2.pth", "pan", (2,)),
    ("pan_x4.pth", "pan", (4,)), ("carn_m_x2x3x4.pth", "carn_m", (2, 3, 4)), ("a2n_x2.pth", "a2n", (2,)),
    ("dlsr_x2.pth", "genotype:dlsr_x2", (2,)),
    ("span_ntire24_x4.pth", "span", (4,)), ("dscf_ntire25_x4.pth", "dscf", (4,)),
    ("spanv2_ntire26_x4.pth", "spanv2", (4,)), ("pfdn_ntire23_x4.pth", "pfdn", (4,)),
]
PUBLISHED_BICUBIC = "Set5 33.66 / 30.39 / 28.42, Set14 30.24 / 27.55 / 26.00, B100 29.56 / 27.21 / 25.96"


def provenance_set5(text: str, file: str, scale: int) -> str:
    """The Set5 figure of `file` in shared/teachers/PROVENANCE.md, as written there ('?' without a row)."""
    try:
        cells = provenance_cells(text, file)
        if "Set5 Y-PSNR measured" in cells:
            return re.sub(r"\*\*", "", cells["Set5 Y-PSNR measured"])
        return f"{provenance_psnr(text, file, scale):.3f}"
    except KeyError:
        return "?"


def check_shared(shared: Path, sets: list[str]) -> None:
    """Everything the table needs, before any work: one line naming what is missing."""
    need = [shared / "teachers" / "PROVENANCE.md"] + [shared / "teachers" / f for f, _, _ in TEACHERS] \
        + [shared / "data" / s for s in sets]
    missing = [p for p in need if not p.exists()]
    if missing:
        raise ValueError(f"{missing[0]}: not found ({len(missing)} of the {len(need)} shared files and folders "
                         "are missing); give --shared DIR or set SRNAS_SHARED to the folder holding data/ and "
                         "teachers/")


def load(arch: str, path: Path, scale: int) -> torch.nn.Module:
    if arch.startswith("genotype:"):
        from search_spaces.network import build_network

        model = build_network(arch.split(":", 1)[1])
        load_strict(model, read_state_dict(path), str(path))
        return model.eval()
    return load_pretrained(arch, path, scale)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", type=Path, default=shared_dir(),
                   help="folder with data/ and teachers/ (default $SRNAS_SHARED, else ../shared)")
    p.add_argument("--sets", nargs="+", default=["Set5", "Set14", "B100"])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "reproduction.md")
    p.add_argument("--json", type=Path, default=REPO / "docs" / "reproduction.json")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", nargs="+", metavar="FILE",
                   help="evaluate only these weight files and merge their rows into the existing --json "
                        "(the bicubic and other rows are kept from it); --out is rewritten from the merged rows")
    args = p.parse_args(argv)
    setup_runtime(args)
    known = [t[0] for t in TEACHERS]
    for f in args.only or []:
        if f not in known:
            raise ValueError(f"--only {f}: not a known teacher file; known: {', '.join(known)}")
    check_shared(args.shared, args.sets)
    check_output_file(args.out, "--out")
    check_output_file(args.json, "--json")
    log = setup_logging()
    prov = (args.shared / "teachers" / "PROVENANCE.md").read_text()
    rows = []
    cols = list(args.sets) + (["Set14 (gray as RGB)"] if "Set14" in args.sets else [])

    def run_sets(evaluate, scale):
        res = {s: evaluate(BenchmarkSet(args.shared / "data" / s, scale)) for s in args.sets}
        if "Set14" in args.sets:
            res["Set14 (gray as RGB)"] = evaluate(BenchmarkSet(args.shared / "data" / "Set14", scale), "rgb")
        return res

    if args.only:
        try:
            rows = json.loads(args.json.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"--only needs the rows of a previous run in {args.json}: {e}") from None
        missing = [c for c in cols if rows and c not in rows[0]]
        if missing:
            raise ValueError(f"{args.json} has no {', '.join(missing)} columns; run without --only")
    else:
        for scale in (2, 3, 4):
            res = run_sets(lambda ds, g="luma": evaluate_bicubic(ds, gray_mode=g), scale)
            rows.append({"model": "bicubic (published Y protocol)", "file": "-", "scale": scale,
                         "provenance": "-", **{s: (r.psnr_y, r.ssim_y) for s, r in res.items()}})
    for file, arch, scales in TEACHERS:
        if args.only and file not in args.only:
            continue
        rows = [r for r in rows if r["file"] != file]
        for scale in scales:
            t0 = time.perf_counter()
            model = load(arch, args.shared / "teachers" / file, scale).to(memory_format=torch.channels_last)
            res = run_sets(lambda ds, g="luma", m=model: evaluate_model(m, ds, gray_mode=g), scale)
            prov_cell = provenance_set5(prov, file, scale)
            rows.append({"model": arch, "file": file, "scale": scale, "provenance": prov_cell,
                         **{s: (r.psnr_y, r.ssim_y) for s, r in res.items()}})
            log.info(f"{file} x{scale}: " + ", ".join(f"{s} {r.psnr_y:.3f}" for s, r in res.items())
                     + f" ({time.perf_counter() - t0:.0f} s)")
    rows.sort(key=lambda r: (known.index(r["file"]) + 1 if r["file"] in known else 0, r["scale"]))

    table = Table(title="Y-PSNR / SSIM (crop = scale)")
    for col in ["model", "x", "Set5 (PROVENANCE)"] + cols:
        table.add_column(col)
    md = ["# Reproduction of published numbers", "",
          f"Made by `python tools/reproduce.py --shared ../shared --sets {' '.join(args.sets)}` "
          f"(torch {torch.__version__}, CPU, fp32, whole image per forward pass).", "",
          "PSNR/SSIM on Y (MATLAB `rgb2ycbcr` BT.601, float), `crop_border = scale`, SR rounded to 8 bits; "
          "grayscale images (Set14 `bridge`) on gray values. The bicubic rows use the published Y-channel "
          f"protocol (see `srcore/evaluation.py`); published bicubic: {PUBLISHED_BICUBIC}. "
          "'PROVENANCE' is the Set5 figure measured in `shared/teachers/PROVENANCE.md`. "
          "'Set14 (gray as RGB)' scores the gray `bridge` as a 3-channel image (`--gray rgb`), the convention "
          "behind most network papers' Set14 numbers.", "",
          "| model | weights | scale | Set5 in PROVENANCE | " + " | ".join(cols) + " |",
          "|---|---|---|---|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r[s][0]:.3f} / {r[s][1]:.4f}" for s in cols]
        table.add_row(r["model"], str(r["scale"]), r["provenance"], *cells)
        md.append(f"| {r['model']} | {r['file']} | x{r['scale']} | {r['provenance']} | " + " | ".join(cells) + " |")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(md) + "\n")
    args.json.write_text(json.dumps(rows, indent=1) + "\n")
    log.info(f"wrote {args.out} and {args.json}")
    return 0


if __name__ == "__main__":
    run_cli(main)
