"""The evaluation cache: one ``dreamsr.jobs.evaluate.evaluate`` call per model and setting on the held-out crops,
skipped when the same evaluation of the same weights (sha256) finished before."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Callable

from .common import METRIC_COLUMNS

__all__ = ["run_eval"]


def run_eval(name: str, out_dir: Path, *, weights: Path | None, crops: Path, images: int, steps: int,
             sampler: str, metrics: tuple[str, ...], device: str, precision: str, metric_weights: str | None,
             grids: int, log: Callable[[str], None]) -> dict[str, Any]:
    """evaluate() one model (or bicubic when ``weights`` is None) on the held-out crops, unless the same
    evaluation of the same weights (sha256) finished before. Returns the summary plus per-image values."""
    from dreamsr.jobs.evaluate import EvalConfig, evaluate, finished_summary

    cfg = EvalConfig(set="folder", data_dir=str(crops), limit=images, model="bicubic" if weights is None else name,
                     weights=None if weights is None else str(weights), metrics=metrics, convention="both",
                     steps=steps, sampler=sampler, seed=0, samples=1, tile=0, overlap=0, merge="end", batch=1,
                     device=device, precision=precision, grids=grids, metric_weights=metric_weights,
                     command=f"scripts/reproduce eval {name}")
    summary = finished_summary(cfg, out_dir)  # the same settings and weights (sha256) finished: reuse
    if summary is None:
        log(f"eval {name}: {sampler} {steps} steps on {images} crop(s)")
        summary = evaluate(cfg, out_dir).summary
    else:
        log(f"eval {name}: finished earlier, skipped")
    res: dict[str, Any] = {"metrics": {}, "per_image": {}, "unavailable": {}, "seconds": summary.get("seconds"),
                           "count": summary.get("count"), "dir": str(out_dir)}
    for e in summary["metrics"]:
        col = e.get("column", e["metric"])
        if e.get("available") is False:
            res["unavailable"][e["metric"]] = e.get("reason", "")
            continue
        mean, std = e.get("mean"), e.get("std")
        res["metrics"][col] = {"mean": None if mean in (None, "nan") else float(mean),
                               "std": None if std in (None, "nan") else float(std)}
    with open(out_dir / "metrics.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row.get("error"):
                continue
            for col in METRIC_COLUMNS:
                if row.get(col) not in (None, ""):
                    res["per_image"].setdefault(col, {})[row["image"]] = float(row[col])
    return res
