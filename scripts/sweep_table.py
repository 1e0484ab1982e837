#!/usr/bin/env python3
"""Compare several x4 checkpoints on the held-out crops with one sampling setting (the model card's sweep table).

Each checkpoint's training settings (target, crop, batch, lr, embedding scale, steps) are read from its own
metadata, so the table cannot disagree with the weights. Evaluations run through ``dreamsr.jobs.evaluate.evaluate``
(the code of ``dreamsr eval``) and are reused when the same settings and weights sha256 finished under OUT, so a rerun only adds what is new.

Usage::

    python scripts/sweep_table.py VAL_DIR OUT LABEL=WEIGHTS [LABEL=WEIGHTS ...] [--steps 20] [--back-project]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dreamsr.checkpoint import read_info
from dreamsr.jobs.evaluate import EvalConfig, evaluate_cached
from dreamsr.jobs.weights import sha256_file

# evaluate()'s summary columns -> the table's headers
COLUMNS = {"psnr_y": "PSNR Y", "ssim_y": "SSIM Y", "psnr_rgb": "PSNR RGB", "ssim_rgb": "SSIM RGB",
           "consistency": "consistency ×1e5"}


def metrics_of(summary: dict) -> dict[str, float]:
    """{header: mean} from an evaluate() summary."""
    return {COLUMNS[e["column"]]: e["mean"] for e in summary["metrics"] if e.get("column") in COLUMNS}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("val_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("models", nargs="+", help="LABEL=WEIGHTS pairs")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sampler", default="ddim", choices=("ddim", "ddpm"))
    ap.add_argument("--back-project", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = []
    for m in args.models:
        label, sep, path = m.partition("=")
        if not sep or not Path(path).is_file():
            ap.error(f"{m!r}: expected LABEL=WEIGHTS with an existing file")
        pairs.append((label, Path(path)))
    base = dict(set="folder", data_dir=str(args.val_dir), scale=4, metrics=("psnr", "ssim", "consistency"),
                convention="both", seed=args.seed, device="cpu", precision="fp32", grids=0)
    setting = f"{args.sampler}-{args.steps}" + ("_bp" if args.back_project else "")
    t0 = time.perf_counter()
    bic = metrics_of(evaluate_cached(EvalConfig(**base, model="bicubic"), args.out / "bicubic")[0])
    rows = []
    for label, path in pairs:
        info = read_info(path)
        sha = sha256_file(path)
        kw = dict(weights=str(path), steps=args.steps, sampler=args.sampler, back_project=args.back_project)
        m = metrics_of(evaluate_cached(EvalConfig(**base, **kw), args.out / f"{label}_{setting}")[0])
        tr = info.training
        rows.append({"label": label, "weights": path.name, "sha256": sha, "target": info.diffusion.target,
                     "patch": tr.get("patch"), "batch": tr.get("batch_size"), "lr": tr.get("lr"),
                     "embed_scale": info.network.embed_scale, "p": tr.get("p"), "steps": tr.get("steps"),
                     "init_weights": tr.get("init_weights"), "metrics": m})
        print(f"{label}: {m}", flush=True)
    cols = ("PSNR Y", "SSIM Y", "PSNR RGB", "SSIM RGB", "consistency ×1e5")
    lines = [f"Sampling: {args.sampler.upper()} {args.steps} steps" + (" + back-projection" if args.back_project
                                                                        else "") + f", seed {args.seed}.", "",
             "| run | target | crop | batch | lr | embed scale | steps | " + " | ".join(cols) + " | ΔPSNR Y |",
             "|---|---|---:|---:|---:|---:|---:|" + "---:|" * (len(cols) + 1),
             "| bicubic | | | | | | | " + " | ".join(_fmt(c, bic.get(c)) for c in cols) + " | +0.00 |"]
    for r in rows:
        m = r["metrics"]
        settings = [r["target"], r["patch"], r["batch"], r["lr"], r["embed_scale"], r["steps"]]
        lines.append(f"| {r['label']} | " + " | ".join("-" if v is None else f"{v:g}" if isinstance(v, float)
                                                       else str(v) for v in settings) + " | "
                     + " | ".join(_fmt(c, m.get(c)) for c in cols)
                     + f" | {m['PSNR Y'] - bic['PSNR Y']:+.2f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"sweep_{setting}.md").write_text("\n".join(lines) + "\n")
    (args.out / f"sweep_{setting}.json").write_text(json.dumps(
        {"setting": setting, "seed": args.seed, "val_dir": str(args.val_dir), "bicubic": bic, "rows": rows,
         "seconds": round(time.perf_counter() - t0, 1)}, indent=2))
    print("\n".join(lines))
    return 0


def _fmt(col: str, v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.4f}" if col.startswith("SSIM") else f"{v:.2f}"


if __name__ == "__main__":
    raise SystemExit(main())
