#!/usr/bin/env python3
"""The perception-distortion figure of a model card: PSNR-Y (distortion) against MDSI and HaarPSI (perception) and
the HF ratio (texture) for one model across its sampling settings, with bicubic and other models as points.

    python scripts/perception_distortion.py OUT.png CANDIDATES.json [CANDIDATES.json ...] [--title TEXT]

Reads the ``candidates.json`` files that ``scripts/compare_candidates.py --perceptual`` writes. Rows whose label
starts with "steps " are the model's sampling sweep (joined by a line, with and without back-projection);
every other row is a labelled point.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("candidates", type=Path, nargs="+")
    ap.add_argument("--title", default="")
    args = ap.parse_args()
    rows = [r for path in args.candidates for r in json.loads(path.read_text())["rows"]]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("MDSI", "MDSI (lower is better)", True), ("HaarPSI", "HaarPSI (higher is better)", False),
              ("HF ratio", "HF ratio (1 = HR's texture energy)", False))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, (key, label, invert) in zip(axes, panels):
        for bp in (False, True):
            sweep = [r for r in rows if r["label"].startswith("steps ") and ("+ BP" in r["label"]) == bp]
            sweep.sort(key=lambda r: int(r["label"].split()[1]))
            if sweep:
                xs = [r["metrics"]["PSNR-Y"] for r in sweep]
                ys = [r["metrics"][key] for r in sweep]
                ax.plot(xs, ys, marker="o", label="K steps" + (" + BP" if bp else ""))
                for r, x, y in zip(sweep, xs, ys):
                    ax.annotate(r["label"].split()[1], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        for r in rows:
            if not r["label"].startswith("steps "):
                ax.scatter([r["metrics"]["PSNR-Y"]], [r["metrics"][key]], marker="s", s=30)
                ax.annotate(r["label"], (r["metrics"]["PSNR-Y"], r["metrics"][key]), fontsize=7,
                            xytext=(3, -9), textcoords="offset points")
        ax.set_xlabel("PSNR-Y (dB, higher is better)")
        ax.set_ylabel(label)
        if invert:
            ax.invert_yaxis()  # better is up in every panel
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if args.title:
        fig.suptitle(args.title, fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
