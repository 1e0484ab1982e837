#!/usr/bin/env python3
"""Read the default model's two sampling profiles once on the untouched external set (docs/models/profiles/external.md).

Runs ``dreamsr eval`` (the library call behind it) on EXT_DIR for ``bicubic`` and the default model at
``--profile fidelity`` and ``--profile detail`` (2 sampling seeds, sampled as ``dreamsr upscale`` samples), into
WORK/<label>/ (a finished run is reused), then reads the per-image metrics.csv files and writes OUT.json with the
pre-registered statistics: per-photo means over seeds, paired detail − fidelity and detail − bicubic differences
with 95 % t-intervals over photos, and the Spearman correlation between each HR photo's high-frequency RMS and its
MDSI difference with an exact one-sided permutation p-value.

Usage::

    python scripts/build_external_test.py EXT_DIR
    python scripts/profiles_external.py EXT_DIR WORK docs/models/profiles/external.json [--samples 2]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from dream_experiment.report import interval  # scripts/ is on sys.path when this file runs as a script
from dreamsr.images import load_rgb
from dreamsr.jobs.evaluate import EvalConfig, evaluate, finished_summary
from dreamsr.metrics import HF_SIGMA, HF_WINDOW, gaussian_window

METRICS = ("psnr", "ssim", "haarpsi", "mdsi", "gmsd", "hf")
COLS = ("psnr_y", "ssim_y", "haarpsi", "mdsi", "gmsd", "hf")


def ranks(v: list[float]) -> list[int]:
    """0-based ranks of ``v`` (no ties expected: continuous measures)."""
    r = [0] * len(v)
    for i, k in enumerate(sorted(range(len(v)), key=v.__getitem__)):
        r[k] = i
    return r


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (no ties expected: continuous measures)."""
    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return num / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))


def permutation_p_below(x: list[float], y: list[float]) -> float:
    """Exact one-sided p-value of Spearman's rho being this low: the share of all n! pairings of the ranks with
    rho <= the observed one. Without ties rho = 1 - 6 sum(d^2) / (n (n^2 - 1)), so a lower rho is a larger
    sum of squared rank differences."""
    n = len(x)
    rank_x, rank_y = ranks(x), ranks(y)
    obs = sum((a - b) ** 2 for a, b in zip(rank_x, rank_y))
    hits = total = 0
    for perm in itertools.permutations(range(n)):
        total += 1
        hits += sum((a - b) ** 2 for a, b in zip(rank_x, perm)) >= obs
    return hits / total


def hf_rms(path: Path) -> float:
    """RMS, in 8-bit levels, of BT.601 Y (MATLAB rgb2ycbcr) minus its Gaussian blur (the HF ratio's filter: 11 taps,
    sigma 1.5 px), over the interior where the window fits."""
    x = load_rgb(path).double()
    y = (16 + 65.481 * x[0] + 128.553 * x[1] + 24.966 * x[2])[None, None]
    g = gaussian_window(HF_WINDOW, HF_SIGMA).double()
    blur = F.conv2d(F.conv2d(y, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))
    c = HF_WINDOW // 2
    high = y[..., c:-c, c:-c] - blur
    return float(torch.sqrt(torch.mean(high * high)))


def per_photo(run: Path) -> dict[str, dict[str, float]]:
    """{photo: {column: mean over sampling seeds}} from an eval run's metrics.csv."""
    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with open(run / "metrics.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for c in COLS:
                acc[row["image"]][c].append(float(row[c]))
    return {img: {c: statistics.fmean(v) for c, v in cols.items()} for img, cols in acc.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ext_dir", type=Path)
    ap.add_argument("work", type=Path)
    ap.add_argument("out", type=Path, help="JSON file to write")
    ap.add_argument("--samples", type=int, default=2)
    args = ap.parse_args(argv)
    base = dict(set="folder", data_dir=str(args.ext_dir), metrics=METRICS, convention="both", seed=0,
                device="cpu", precision="fp32", grids=0)
    runs = {"bicubic": EvalConfig(**base, model="bicubic", scale=4),
            "fidelity": EvalConfig(**base, samples=args.samples, profile="fidelity"),
            "detail": EvalConfig(**base, samples=args.samples, profile="detail")}
    data = {}
    for label, cfg in runs.items():
        folder = args.work / label
        summary = finished_summary(cfg, folder) or evaluate(cfg, folder).summary
        data[label] = per_photo(folder)
        print(f"{label}: {summary['count']} photos", flush=True)
    photos = sorted(data["bicubic"])
    texture = {p: hf_rms(args.ext_dir / f"{p}.png") for p in photos}
    diff = {c: [data["detail"][p][c] - data["fidelity"][p][c] for p in photos] for c in COLS}
    above_bicubic = [data["detail"][p]["psnr_y"] - data["bicubic"][p]["psnr_y"] for p in photos]
    x = [texture[p] for p in photos]
    result = {
        "set": str(args.ext_dir), "photos": photos, "samples": args.samples,
        "per_photo": {p: {"hr_hf_rms": texture[p], **{f"{k}_{c}": data[k][p][c] for k in data for c in COLS}}
                      for p in photos},
        "means": {k: {c: statistics.fmean(data[k][p][c] for p in photos) for c in COLS} for k in data},
        "detail_minus_fidelity": {c: interval(diff[c]) for c in COLS},
        "detail_minus_bicubic_psnr_y": interval(above_bicubic),
        "spearman_texture_vs_mdsi_diff": {"rho": spearman(x, diff["mdsi"]),
                                          "p_one_sided_below": permutation_p_below(x, diff["mdsi"])},
        "cpu_flags": sorted({f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
                             if f" {f}" in Path("/proc/cpuinfo").read_text()}),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("means", "detail_minus_fidelity", "detail_minus_bicubic_psnr_y",
                                             "spearman_texture_vs_mdsi_diff")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
