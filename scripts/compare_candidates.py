#!/usr/bin/env python3
"""Compare x4 candidate models on held-out photos: quality, speed and FLOPs at each one's sampling.

Every number comes from the code users run: ``dreamsr.jobs.evaluate.evaluate`` (the same as ``dreamsr eval``) for
PSNR/SSIM in both conventions, consistency and (with ``--vif``) the weight-free perceptual VIF-p (Y, torchmetrics),
``Upscaler.upscale`` for the seconds per output megapixel (fp32, on
this machine, after a warm-up call) and ``torch.utils.flop_counter`` around the same call for the FLOPs per output
pixel (convolutions, linear layers and attention matmuls; 2 FLOPs per multiply-add).

Usage::

    python scripts/compare_candidates.py VAL_DIR OUT NAME=WEIGHTS[@key=value,...] ... [--threads 2] [--seed 0]
        [--time-size 128] [--flop-size 64] [--scale 2.5] [--vif] [--no-speed]

``@key=value`` pairs are sampling options (steps, sampler, start, back_project, tile, ...) over the model's own
recommendation; without them a model samples as it recommends. ``--scale`` also evaluates the continuous-scale
models (and bicubic) at that non-integer scale. Writes ``OUT/candidates.json`` and ``OUT/candidates.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from dreamsr.jobs.evaluate import EvalConfig, evaluate, finished_summary
from dreamsr.jobs.pipeline import Upscaler
from dreamsr.options import SamplingOptions

COLUMNS = {"psnr_y": "PSNR-Y", "ssim_y": "SSIM-Y", "psnr_rgb": "PSNR RGB", "ssim_rgb": "SSIM RGB",
           "consistency": "consistency ×1e5", "vif_y": "VIF-Y", "haarpsi": "HaarPSI", "mdsi": "MDSI",
           "gmsd": "GMSD", "hf": "HF ratio"}


def _parse_candidate(text: str) -> tuple[str, Path, dict[str, Any]]:
    name, _, rest = text.partition("=")
    path, _, opts = rest.partition("@")
    given: dict[str, Any] = {}
    for pair in filter(None, opts.split(",")):
        k, _, v = pair.partition("=")
        field = SamplingOptions.__dataclass_fields__[k]  # KeyError names an unknown option
        given[k] = (v.lower() in ("1", "true", "yes")) if "bool" in str(field.type) else \
            (float(v) if k == "eta" else v if k in ("sampler", "merge") else int(v))
    return name, Path(path), given


def _metrics(summary: dict) -> dict[str, float]:
    return {COLUMNS[e["column"]]: e["mean"] for e in summary["metrics"] if e.get("column") in COLUMNS}


def _speed(weights: Path, given: dict[str, Any], size: int, scale: float | None, seed: int) -> tuple[float, str]:
    """Seconds per output megapixel of one fp32 upscale of a ``size``² LR image (after a warm-up call)."""
    up = Upscaler.from_checkpoint(weights, device="cpu", precision="fp32")
    lr = torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))
    opts = up.options(**given)
    up.upscale(lr, opts.replace(steps=1, start=None), scale=scale)  # warm-up: first-call set-up off the clock
    t0 = time.perf_counter()
    sr = up.upscale(lr, opts, scale=scale)
    return (time.perf_counter() - t0) / (sr.shape[-1] * sr.shape[-2] / 1e6), opts.describe()


def _flops(weights: Path, given: dict[str, Any], size: int, scale: float | None) -> float:
    """FLOPs per output pixel of the whole upscale (every step, tile and ensemble member) of a ``size``² image."""
    from torch.utils.flop_counter import FlopCounterMode

    up = Upscaler.from_checkpoint(weights, device="cpu", precision="fp32")
    lr = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        sr = up.upscale(lr, up.options(**given), scale=scale)
    return counter.get_total_flops() / (sr.shape[-1] * sr.shape[-2])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("val_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("candidates", nargs="+", help="NAME=WEIGHTS[@key=value,...]")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-size", type=int, default=128, help="LR side of the timed upscale")
    ap.add_argument("--flop-size", type=int, default=64, help="LR side of the FLOP-counted upscale")
    ap.add_argument("--scale", type=float, default=None, help="also a non-integer scale (continuous models)")
    ap.add_argument("--vif", action="store_true",
                    help="also VIF-p (needs torchmetrics: pip install 'dreamsr[perceptual]')")
    ap.add_argument("--perceptual", action="store_true",
                    help="also HaarPSI, MDSI, GMSD (piq: pip install 'dreamsr[perceptual]') and the HF ratio")
    ap.add_argument("--samples", type=int, default=1, help="sampling seeds per image (seed, seed + 1, ...)")
    ap.add_argument("--no-speed", action="store_true", help="skip the timing (e.g. while other work shares the CPU)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    metrics = ("psnr", "ssim", "consistency") + (("vif",) if args.vif else ()) + \
        (("haarpsi", "mdsi", "gmsd", "hf") if args.perceptual else ())
    base = dict(set="folder", data_dir=str(args.val_dir), metrics=metrics, convention="both", seed=args.seed,
                samples=args.samples,
                device="cpu", precision="fp32", grids=3)
    scales: list[float | None] = [None] + ([args.scale] if args.scale else [])
    rows: list[dict[str, Any]] = []
    for scale in scales:
        jobs = [("bicubic", None, {})] + [_parse_candidate(c) for c in args.candidates]
        for name, weights, given in jobs:
            if weights is not None and scale is not None:
                lo, hi = Upscaler.from_checkpoint(weights, device="cpu", precision="fp32").scales
                if not lo <= scale <= hi:
                    continue  # a fixed-scale model has no non-integer row
            label = name if scale is None else f"{name} x{scale:g}"
            folder = args.out / label.replace(" ", "_")
            kw: dict[str, Any] = dict(model="bicubic", scale=scale or 4) if weights is None else \
                dict(weights=str(weights), scale=scale, **given)
            cfg = EvalConfig(**base, **kw)
            summary = finished_summary(cfg, folder) or evaluate(cfg, folder).summary
            row: dict[str, Any] = {"label": label, "scale": scale or 4, "metrics": _metrics(summary),
                                   "images": summary["count"]}
            if weights is not None:
                row["sampling"] = SamplingOptions.from_dict(summary["model"]["sampling"]).describe()
                if not args.no_speed:
                    row["s_per_out_mp"], _ = _speed(weights, given, args.time_size, scale, args.seed)
                row["flops_per_out_px"] = _flops(weights, given, args.flop_size, scale)
                row["family"], row["training"] = summary["model"]["family"], summary["model"]["training"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    shown = [c for c in COLUMNS.values() if c in rows[0]["metrics"]]
    lines = ["| candidate | scale | " + " | ".join(shown) + " | ΔPSNR-Y | s / out MP | MFLOP / out px |"
             " sampling |", "|---|---:|" + "---:|" * (len(shown) + 3) + "---|"]
    for r in rows:
        bic = next(b for b in rows if b["label"].startswith("bicubic") and b["scale"] == r["scale"])
        m = r["metrics"]
        delta = m["PSNR-Y"] - bic["metrics"]["PSNR-Y"]
        cells = [f"{m[c]:.2f}" if c.startswith(("PSNR", "consistency")) else f"{m[c]:.3f}" if c == "HF ratio"
                 else f"{m[c]:.4f}" for c in shown]
        speed = f"{r['s_per_out_mp']:.1f}" if "s_per_out_mp" in r else "-"
        lines.append(f"| {r['label']} | x{r['scale']:g} | " + " | ".join(cells) + f" | {delta:+.2f} | "
                     + (f"{speed} | {r['flops_per_out_px'] / 1e6:.2f} | {r['sampling']} |"
                        if "sampling" in r else "- | - | - |"))
    cpu = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = sorted({f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in cpu})
    (args.out / "candidates.json").write_text(json.dumps({"val_dir": str(args.val_dir), "seed": args.seed,
                                                          "threads": torch.get_num_threads(), "cpu_flags": flags,
                                                          "rows": rows}, indent=2))
    (args.out / "candidates.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
