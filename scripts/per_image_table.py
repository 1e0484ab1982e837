#!/usr/bin/env python3
"""Per-image PSNR-Y / SSIM-Y of several evaluations of the same set (their metrics.csv), as one Markdown table.

Usage::

    python scripts/per_image_table.py OUT.md "LABEL=EVAL_DIR" ...
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    out, specs = Path(argv[0]), [a.partition("=") for a in argv[1:]]
    tables = []
    for label, _, folder in specs:
        with open(Path(folder) / "metrics.csv", newline="") as fh:
            tables.append((label, {r["image"]: r for r in csv.DictReader(fh) if not r.get("error")}))
    images = sorted(tables[0][1])
    head = "| image | size (HR) | " + " | ".join(f"{label} PSNR-Y / SSIM-Y" for label, _ in tables) + " |"
    lines = [head, "|---|---|" + "---:|" * len(tables)]
    for name in images:
        cells = [f"{float(t[name]['psnr_y']):.2f} / {float(t[name]['ssim_y']):.4f}" if name in t else "-"
                 for _, t in tables]
        lines.append(f"| {name} | {tables[0][1][name]['hr_size']} | " + " | ".join(cells) + " |")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
