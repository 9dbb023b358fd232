#!/usr/bin/env python
"""Super-resolve your own images with a trained model (PNG, JPEG, BMP, TIFF; 8/16-bit; gray, RGB, RGBA).

Examples:
  python tools/upscale.py --checkpoint runs/quickstart/compress/deploy.pt --input photos/ --out photos_x2/
  python tools/upscale.py --checkpoint runs/q/compress/model.onnx --scale 2 --input cat.png --out sr/ --tile 256
  python tools/upscale.py --checkpoint best.pt --input scans/ --out sr/ --self-ensemble --format png

--checkpoint takes an srnas checkpoint (it carries its network and scale), a deploy.pt from the compression
stage, or an ONNX model (srcore/modelfile.py); --scale is checked against it (and needed by nothing else).
--input is one image or a folder (its images, not its subfolders). Each output is OUT/<same file name>: the
same format, bit depth and layout as its input (16-bit in, 16-bit out; gray in, gray out; JPEG quality
--jpeg-quality). An alpha channel is enlarged with bicubic interpolation and re-attached (gray + alpha is
written as RGBA with equal colour channels); --format png|tif|jpg|bmp writes every image in one format
instead (JPEG/BMP hold 8 bits, JPEG drops alpha with a warning).
Images larger than --tile LR pixels go through overlapping windows blended into one image (bounded memory;
srcore/tiling.py); --tile 0 runs each image whole.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch
from common import console, progress, run_cli, setup_logging

import compress  # noqa: F401  (rebuilds compressed checkpoints: reparameterized, widths)
import distill  # noqa: F401  (registers the zoo architectures)
import search_spaces  # noqa: F401  (registers the builder of genotype checkpoints)
from srcore.imageio import IMAGE_EXTENSIONS, check_image_header, is_image_file, read_image, write_image
from srcore.modelfile import load_model_file
from srcore.tiling import check_tiling, count_windows
from srcore.upscale import describe, upscale_image

FORMATS = {"same": None, "png": ".png", "tif": ".tif", "jpg": ".jpg", "bmp": ".bmp"}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="srnas checkpoint, deploy.pt or model.onnx")
    p.add_argument("--scale", type=int, help="expected scale (checked against the model; read from it if omitted)")
    p.add_argument("--input", type=Path, required=True, help="an image, or a folder of images")
    p.add_argument("--out", type=Path, required=True, help="output folder (file names are kept)")
    p.add_argument("--tile", type=int, default=512, help="LR window size for large images (0: whole image)")
    p.add_argument("--tile-overlap", type=int, default=32, help="LR pixels neighbouring windows share (< tile / 2)")
    p.add_argument("--self-ensemble", action="store_true", help="x8 geometric self-ensemble (8x slower)")
    p.add_argument("--format", choices=list(FORMATS), default="same", help="output format (default: the input's)")
    p.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality of JPEG outputs (1-100)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    return p.parse_args(argv)


def list_inputs(path: Path) -> list[Path]:
    """The image files to process: `path` itself, or the images directly inside the folder `path`."""
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and is_image_file(f))
        if not files:
            raise ValueError(f"{path}: no images in this folder (expected {', '.join(IMAGE_EXTENSIONS)} files)")
        return files
    if not path.exists():
        raise ValueError(f"{path}: no such image or folder")
    if not is_image_file(path):
        raise ValueError(f"{path}: not an image file (expected one of {', '.join(IMAGE_EXTENSIONS)})")
    return [path]


def output_paths(files: list[Path], out: Path, fmt: str) -> list[Path]:
    """OUT/<name> for each input (extension replaced with --format); refuses collisions and overwriting inputs."""
    ext = FORMATS[fmt]
    paths = [out / (f.name if ext is None else f.stem + ext) for f in files]
    seen: dict[Path, Path] = {}
    for f, o in zip(files, paths, strict=True):
        if o.resolve() == f.resolve():
            raise ValueError(f"{o}: the output would overwrite its input; choose another --out folder")
        if o in seen:
            raise ValueError(f"{seen[o]} and {f} would both be written to {o}; use --format same or rename one")
        seen[o] = f
    return paths


def main(argv=None) -> int:
    args = parse_args(argv)
    log = setup_logging()
    logging.captureWarnings(True)  # warnings (e.g. alpha dropped for JPEG) go through the rich log
    if args.threads:
        torch.set_num_threads(args.threads)
    check_tiling(args.tile, args.tile_overlap)
    if not 1 <= args.jpeg_quality <= 100:
        raise ValueError(f"--jpeg-quality must be in 1..100, got {args.jpeg_quality}")
    files = list_inputs(args.input)
    for f in files:  # reject a bad file before any work (signatures only; decoding errors still name the file)
        check_image_header(f)
    outputs = output_paths(files, args.out, args.format)
    loaded = load_model_file(args.checkpoint, args.device, args.scale)
    s = loaded.scale
    log.info(f"{loaded.kind} {loaded.label}: x{s}; {len(files)} image(s) -> {args.out}"
             + (f"; tiles {args.tile} (overlap {args.tile_overlap})" if args.tile else "; whole images")
             + ("; self-ensemble x8" if args.self_ensemble else ""))
    t_all = time.perf_counter()
    with progress(remaining=True) as prog:
        images = prog.add_task("images", total=len(files))
        windows = prog.add_task("", total=1)
        for f, out in zip(files, outputs, strict=True):
            img = read_image(f, keep_alpha=True)
            h, w = img.shape[:2]
            n = count_windows(h, w, args.tile, args.tile_overlap) * (8 if args.self_ensemble else 1)
            prog.reset(windows, total=n, description=f"{f.name} ({w}x{h})")
            t0 = time.perf_counter()
            sr = upscale_image(loaded.model, img, s, tile=args.tile, overlap=args.tile_overlap,
                               self_ensemble=args.self_ensemble, device=args.device,
                               on_window=lambda d, _n: prog.update(windows, completed=d))
            write_image(out, sr, jpeg_quality=args.jpeg_quality)
            prog.advance(images)
            log.info(f"{f.name}: {w}x{h} {describe(img)} -> {out} ({sr.shape[1]}x{sr.shape[0]}, "
                     f"{n} pass{'es' if n > 1 else ''}, {time.perf_counter() - t0:.1f} s)")
    console.print(f"{len(files)} image(s) upscaled x{s} into {args.out} in {time.perf_counter() - t_all:.1f} s")
    return 0


if __name__ == "__main__":
    run_cli(main)
