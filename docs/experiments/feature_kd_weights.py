"""Tables of docs/experiments/feature_kd_weights.md from the runs (nothing is typed in):

    python tools/distill_table.py --calibrate 0.25 --methods output fitnet facd lsfd --steps 1000 --seeds 0
    python docs/experiments/feature_kd_weights.py --calibration runs/distill_table/calibration.json \
        --first runs/distill_table_w0 --baseline runs/distill_table/none

--first holds the distill_table runs made with the first table's weights (moved aside when the weights changed).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from multirun import mean_psnr  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calibration", type=Path, required=True)
    p.add_argument("--first", type=Path, required=True)
    p.add_argument("--baseline", type=Path, required=True)
    a = p.parse_args()
    cal = json.loads(a.calibration.read_text())
    print(f"Gradient norms at step 0 (seed {cal['seed']}, 4 training batches), ratio {cal['ratio']}:\n")
    print("| method | term | grad norm, unweighted | L1's | configured weight when measured | x L1 at that weight "
          "| weight for the ratio |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for m, r in cal["methods"].items():
        ref = r["norms"]["l1"]
        for k, w in r["suggested"].items():
            n, now = r["norms"][k], r["weights"][k]
            print(f"| {m} | {k} | {n:.4g} | {ref:.4g} | {now:g} | {now * n / ref:.1f} | {w:.3g} |")
    base = {d.name: mean_psnr(json.loads((d / "result.json").read_text()))
            for d in sorted(a.baseline.glob("seed*")) if (d / "result.json").exists()}
    print("\nWith the first table's weights, 1,000 steps (mean PSNR-Y over Set5/Set14/B100; Δ against no KD, "
          "same seed):\n")
    print("| method | terms | seed | Set5 | Set14 | B100 | mean | Δ vs no KD | training (s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for f in sorted(a.first.glob("*/seed*/result.json")):
        r = json.loads(f.read_text())
        seed = f.parent.name
        d = mean_psnr(r) - base[seed] if seed in base else float("nan")
        sets = " | ".join(f"{r['sets'][s]['psnr_y']:.2f}" for s in ("Set5", "Set14", "B100"))
        print(f"| {r['method']} | {', '.join(r['terms'])} | {seed[4:]} | {sets} | {mean_psnr(r):.3f} | {d:+.3f} "
              f"| {r['train_s']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
