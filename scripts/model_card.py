#!/usr/bin/env python3
"""Measure a x4 checkpoint on the held-out photos and write the model card's tables (no number typed by hand).

Finished evaluations (the same settings and weights sha256) are reused, so the work can be split over processes that
share OUT and a final run with every option only assembles the tables. Runs ``dreamsr.jobs.evaluate.evaluate`` (the same code as ``dreamsr eval``) for bicubic and for the model at
10/20/50/100 steps with DDIM and DDPM, plus the sampling options (truncated start, back-projection) at the
card's default step count, and writes ``OUT/card_tables.md`` and ``OUT/card.json``; the comparison figure
(LR | bicubic | dreamsr | HR) is copied from the evaluation's grids to ``OUT/figure.png``.

Usage::

    python scripts/model_card.py WEIGHTS VAL_DIR OUT [--steps 10,20,50,100] [--option-steps 10,20] [--ensemble 4,8]
        [--seed 0] [--threads 1] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from dreamsr.jobs.evaluate import EvalConfig, evaluate, finished_summary

HEADERS = ("PSNR RGB", "SSIM RGB", "PSNR Y (crop 4)", "SSIM Y (crop 4)", "consistency ×1e5")


# evaluate()'s summary columns -> the card's headers
COLUMNS = {"psnr_rgb": "PSNR RGB", "ssim_rgb": "SSIM RGB", "psnr_y": "PSNR Y (crop 4)", "ssim_y": "SSIM Y (crop 4)",
           "consistency": "consistency ×1e5"}


def _row(summary: dict) -> dict[str, float]:
    return {COLUMNS[e["column"]]: e["mean"] for e in summary["metrics"] if e.get("column") in COLUMNS}


def _fmt(key: str, v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if key.startswith("PSNR") or key.startswith("consistency") else f"{v:.4f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", type=Path)
    ap.add_argument("val_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", default="10,20,50,100")
    ap.add_argument("--option-steps", default="20",
                    help="comma-separated DDIM step counts at which start/back-projection are measured, the "
                         "recommended one first (its grids make the figure); 0: skip them")
    ap.add_argument("--start", type=int, default=500, help="truncated start t0 to measure")
    ap.add_argument("--ensemble", default="",
                    help="comma-separated self-ensemble sizes (2, 4, 8) measured on top of the recommended setting "
                         "(first --option-steps, start, back-projection)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: cpu)")
    ap.add_argument("--only-cached", action="store_true", help="assemble the tables from finished runs only")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    base = dict(set="folder", data_dir=str(args.val_dir), scale=4, metrics=("psnr", "ssim", "consistency"),
                convention="both", seed=args.seed, device=args.device, precision="fp32", grids=3)
    runs: list[tuple[str, dict]] = [("bicubic", dict(model="bicubic"))]
    for s in [int(x) for x in args.steps.split(",")]:
        for sampler in ("ddim", "ddpm"):
            runs.append((f"{sampler} {s}", dict(weights=str(args.weights), steps=s, sampler=sampler)))
    option_steps = [int(x) for x in str(args.option_steps).split(",") if int(x) > 0]
    for k in option_steps:
        w = str(args.weights)
        runs += [(f"ddim {k} + back-projection", dict(weights=w, steps=k, back_project=True)),
                 (f"ddim {k} + start {args.start}", dict(weights=w, steps=k, start=args.start)),
                 (f"ddim {k} + start {args.start} + back-projection",
                  dict(weights=w, steps=k, start=args.start, back_project=True))]
    k = option_steps[0] if option_steps else 20  # the recommended setting's step count: its grids make the figure
    for e in [int(x) for x in str(args.ensemble).split(",") if x.strip()]:
        runs.append((f"ddim {k} + start {args.start} + back-projection + ensemble {e}",
                     dict(weights=str(args.weights), steps=k, start=args.start, back_project=True, ensemble=e)))
    results = []
    for label, kw in runs:
        folder = args.out / label.replace(" + ", "_").replace(" ", "-")
        cfg = EvalConfig(**base, **kw)
        summary = finished_summary(cfg, folder)  # the same settings and weights (sha256) finished: reuse
        if summary is None:
            if args.only_cached:
                continue
            summary = evaluate(cfg, folder).summary
        results.append({"label": label, "folder": folder.name, "metrics": _row(summary),
                        "count": summary["count"],
                        # the evaluation's own wall time, also when it was reused from an earlier process
                        "seconds": round(float(summary["seconds"]), 1)})
        print(f"{label}: {results[-1]['metrics']}", flush=True)
    bic = results[0]["metrics"]
    lines = ["| sampling | " + " | ".join(HEADERS) + " | ΔPSNR Y vs bicubic |",
             "|---|" + "---:|" * (len(HEADERS) + 1)]
    for r in results:
        m = r["metrics"]
        delta = m.get("PSNR Y (crop 4)", float("nan")) - bic.get("PSNR Y (crop 4)", float("nan"))
        lines.append(f"| {r['label']} | " + " | ".join(_fmt(h, m.get(h)) for h in HEADERS) + f" | {delta:+.2f} |")
    (args.out / "card_tables.md").write_text("\n".join(lines) + "\n")
    (args.out / "card.json").write_text(json.dumps({"weights": str(args.weights), "val_dir": str(args.val_dir),
                                                    "seed": args.seed, "results": results}, indent=2))
    # the figure shows the recommended sampling (back-projection) when it was measured
    grids = next((g for g in (sorted((args.out / name / "grids").glob("*.png")) for name in (
        f"ddim-{k}_start-{args.start}_back-projection", f"ddim-{k}_back-projection", f"ddim-{k}")) if g), [])
    if grids:
        shutil.copyfile(grids[0], args.out / "figure.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
