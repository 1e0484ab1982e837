#!/usr/bin/env python3
"""Side-by-side crops of candidates from their evaluation grids (each grid: LR | bicubic | model | HR, as
``dreamsr eval`` writes them): [LR,] bicubic, each candidate's SR, HR.

Usage::

    python scripts/candidates_figure.py OUT.jpg IMAGE[,IMAGE...] "LABEL=EVAL_DIR" ... [--lr]
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw


def main(argv: list[str]) -> int:
    with_lr = "--lr" in argv
    argv = [a for a in argv if a != "--lr"]
    out, names, specs = Path(argv[0]), argv[1].split(","), [a.partition("=") for a in argv[2:]]
    first = Path(specs[0][2])  # LR, bicubic and HR come from the first evaluation's grids
    cols = [("LR (nearest)", first, 0)] * with_lr + [("bicubic", first, 1)] + \
        [(lab, Path(d), 2) for lab, _, d in specs] + [("HR", first, 3)]
    rows = []
    for name in names:
        panels = []
        for _, folder, k in cols:
            g = Image.open(folder / "grids" / name).convert("RGB")
            pw = g.size[0] // 4  # the grid's four columns
            panels.append(g.crop((k * pw, 0, (k + 1) * pw, g.size[1])))
        rows.append(panels)
    pw, ph = rows[0][0].size
    fig = Image.new("RGB", (pw * len(cols), ph * len(rows) + 18), "white")
    draw = ImageDraw.Draw(fig)
    for j, (label, _, _) in enumerate(cols):
        draw.text((j * pw + 4, 2), label, fill="black")
    for i, panels in enumerate(rows):
        for j, p in enumerate(panels):
            fig.paste(p, (j * pw, 18 + i * ph))
    fig.save(out, quality=90)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
