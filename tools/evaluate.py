#!/usr/bin/env python
"""Score a network (or the bicubic baseline) on SR benchmark folders: PSNR/SSIM on Y and RGB.

Examples:
  python tools/evaluate.py --arch imdn --weights ../shared/teachers/imdn_x2.pth --scale 2 \
      --data ../shared/data/Set5 ../shared/data/Set14 --json out.json
  python tools/evaluate.py --genotype dlsr_x2 --weights ../shared/teachers/dlsr_x2.pth --scale 2 \
      --data ../shared/data/Set5
  python tools/evaluate.py --checkpoint runs/train/best.pt --data ../shared/data/Set5
  python tools/evaluate.py --checkpoint runs/compress/deploy.pt --data ../shared/data/Set5
  python tools/evaluate.py --onnx runs/compress/model.onnx --data ../shared/data/Set5
  python tools/evaluate.py --arch bicubic --scale 4 --data ../shared/data/B100
  python tools/evaluate.py --arch bicubic --scale 2 --data builtin      # no download needed
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from common import console, progress, run_cli, setup_logging, setup_runtime
from rich.table import Table
from rich.text import Text

import compress  # noqa: F401  (rebuilds compressed checkpoints: reparameterized, widths)
import search_spaces  # noqa: F401  (registers the builder of genotype checkpoints)
from distill import zoo
from srcore.checkpoint import load_strict, read_state_dict
from srcore.data import BenchmarkSet, check_scale
from srcore.evaluation import evaluate_bicubic, evaluate_model
from srcore.imageio import write_png
from srcore.layers import min_input_size
from srcore.modelspec import load_checkpoint_model, spec_scale
from srcore.rundir import check_output_dir, check_output_file
from srcore.tiling import check_tiling


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--arch", help=f"zoo architecture or 'bicubic' ({', '.join(zoo.list_models())})")
    what.add_argument("--genotype", help="named genotype (e.g. dlsr_x2) or genotype YAML file")
    what.add_argument("--checkpoint", help="srnas checkpoint (carries its network spec and scale), e.g. a "
                      "compressed OUT/deploy.pt (or the folder OUT)")
    what.add_argument("--onnx", help="ONNX model written by tools/compress.py (run with onnxruntime on the CPU)")
    p.add_argument("--weights", help="published weight file for --arch/--genotype")
    p.add_argument("--scale", type=int, help="2, 3 or 4 (taken from the checkpoint/genotype if omitted)")
    p.add_argument("--data", nargs="+", required=True,
                   help="benchmark folders (HR/ + LR_bicubic/X{s}/, DIV2K layout, or HR-only), or 'builtin'")
    p.add_argument("--self-ensemble", action="store_true", help="x8 geometric self-ensemble")
    p.add_argument("--tile", type=int, default=0,
                   help="LR window size for large images, blended where windows overlap (0: whole image)")
    p.add_argument("--tile-overlap", type=int, default=32,
                   help="LR pixels two neighbouring windows share (< tile / 2; see srcore/tiling.py)")
    p.add_argument("--round-y", action="store_true", help="round Y to 8 bits before scoring (some MATLAB scripts)")
    p.add_argument("--bicubic-source", choices=("hr-y", "lr"), default="hr-y",
                   help="bicubic baseline: 'hr-y' = the published Y-channel protocol, 'lr' = upsample the RGB LR files")
    p.add_argument("--gray", choices=("luma", "rgb"), default="luma",
                   help="gray images: score gray values (luma, MATLAB tables) or as 3-channel Y (rgb, python scripts)")
    p.add_argument("--save-images", type=Path, help="write SR images to DIR/<dataset>/x<s>/<name>.png")
    p.add_argument("--per-image", action="store_true", help="also print a table with every image's scores")
    p.add_argument("--json", type=Path, help="write results (per set and per image) to this JSON file")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    return p.parse_args(argv)


def build(args) -> tuple[torch.nn.Module | None, int, str]:
    """The network (None for bicubic), its scale and a label."""
    if args.onnx:
        from compress.deploy import OnnxModule

        model = OnnxModule(args.onnx, threads=args.threads)
        scale = model.infer_scale()
        if args.scale and args.scale != scale:
            raise ValueError(f"--scale {args.scale} but {args.onnx} upscales x{scale}")
        return model, scale, f"{args.onnx} (onnxruntime)"
    if args.checkpoint:
        if Path(args.checkpoint).is_dir() and (Path(args.checkpoint) / "deploy.pt").is_file():
            args.checkpoint = str(Path(args.checkpoint) / "deploy.pt")
        model, ckpt = load_checkpoint_model(args.checkpoint, args.device)
        scale = spec_scale(ckpt["spec"])
        if args.scale and args.scale != scale:
            raise ValueError(f"--scale {args.scale} but {args.checkpoint} holds a x{scale} network")
        return model, scale, str(args.checkpoint)
    if args.genotype:
        from search_spaces.genotype import load_genotype
        from search_spaces.network import build_network

        g = load_genotype(args.genotype)
        if args.scale and args.scale != g.scale:
            raise ValueError(f"--scale {args.scale} but genotype {args.genotype} is for x{g.scale}")
        model = build_network(g)
        if not args.weights:
            raise ValueError("--genotype needs --weights (or evaluate a trained --checkpoint)")
        load_strict(model, read_state_dict(args.weights), str(args.weights))
        return model.eval().to(args.device), g.scale, f"genotype {args.genotype}"
    if not args.scale:
        raise ValueError("--scale is required with --arch")
    check_scale(args.scale)
    if args.arch == "bicubic":
        return None, args.scale, f"bicubic ({args.bicubic_source})"
    if not args.weights:
        raise ValueError(f"--arch {args.arch} needs --weights FILE")
    from distill.pretrained import load_pretrained

    return load_pretrained(args.arch, args.weights, args.scale, args.device), args.scale, args.arch


def fmt(v: float, nd: int) -> str:
    return "-" if math.isnan(v) else f"{v:.{nd}f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_runtime(args)
    if args.tile < 0:
        raise ValueError(f"--tile {args.tile}: must be 0 (whole images) or a positive LR tile size")
    if args.tile_overlap < 0:
        raise ValueError(f"--tile-overlap {args.tile_overlap}: must be >= 0")
    try:
        check_tiling(args.tile, args.tile_overlap)
    except ValueError as e:
        raise ValueError(f"--tile {args.tile} --tile-overlap {args.tile_overlap}: {e}") from None
    if args.json:  # before any work: a bad output path is found now, not after the whole evaluation
        check_output_file(args.json, "--json")
    if args.save_images:
        check_output_dir(args.save_images, "--save-images")
    log = setup_logging()
    model, scale, label = build(args)
    need = min_input_size(model) if model is not None else 1
    if 0 < args.tile < need:
        raise ValueError(f"--tile {args.tile}: smaller than the network's minimum input {need}x{need}; "
                         f"use --tile 0 (whole images) or --tile >= {need}")
    sets = [BenchmarkSet(d, scale) for d in args.data]
    results = []
    for ds in sets:
        on_image = None
        if args.save_images:
            out_dir = args.save_images / ds.name / f"x{scale}"

            def on_image(sample, sr, out_dir=out_dir):
                write_png(out_dir / f"{sample.name}.png", sr)

        t0 = time.perf_counter()
        if model is None:
            res = evaluate_bicubic(ds, source=args.bicubic_source, round_y=args.round_y,
                                       gray_mode=args.gray, on_image=on_image)
        else:
            with progress() as prog:
                task = prog.add_task(f"{ds.name} x{scale}", total=len(ds))

                def tick(it, prog=prog, task=task):
                    for x in it:
                        yield x
                        prog.advance(task)

                res = evaluate_model(model, ds, device=args.device, self_ensemble=args.self_ensemble,
                                     tile=args.tile, overlap=args.tile_overlap, round_y=args.round_y,
                                     gray_mode=args.gray, on_image=on_image, progress=tick)
        log.info(f"{ds.name} x{scale}: PSNR-Y {res.psnr_y:.3f} dB, SSIM-Y {res.ssim_y:.4f} "
                 f"({len(ds)} images, {time.perf_counter() - t0:.1f} s)")
        results.append(res)

    # user strings (paths, folder and image names) go in as Text: never read as Rich markup
    table = Table(title=Text(f"{label}  x{scale}" + ("  (self-ensemble x8)" if args.self_ensemble else "")))
    for col in ("dataset", "images", "PSNR-Y", "SSIM-Y", "PSNR-RGB", "SSIM-RGB"):
        table.add_column(col, justify="left" if col == "dataset" else "right")
    for r in results:
        table.add_row(Text(r.dataset), str(r.n_images), fmt(r.psnr_y, 3), fmt(r.ssim_y, 4), fmt(r.psnr_rgb, 3),
                      fmt(r.ssim_rgb, 4))
    console.print(table)
    if args.per_image:
        for r in results:
            per = Table(title=Text(f"{r.dataset} x{scale}: per image"))
            for col in ("image", "PSNR-Y", "SSIM-Y", "PSNR-RGB", "SSIM-RGB"):
                per.add_column(col, justify="left" if col == "image" else "right")
            for im in r.images:
                per.add_row(Text(im["name"]), fmt(im["psnr_y"], 3), fmt(im["ssim_y"], 4), fmt(im["psnr_rgb"], 3),
                            fmt(im["ssim_rgb"], 4))
            console.print(per)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"model": label, "scale": scale, "self_ensemble": args.self_ensemble, "tile": args.tile,
                   "tile_overlap": args.tile_overlap, "round_y": args.round_y, "gray": args.gray,
                   "results": [r.as_dict() for r in results]}
        if model is None:
            payload["bicubic_source"] = args.bicubic_source
        args.json.write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")
        log.info(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run_cli(main)
