"""What an evaluation writes and how it reads back: metrics.csv, summary.json, summary.md, comparison grids,
and the comparison of several summaries (``dreamsr eval --compare``).

summary.json is strict JSON: a non-finite number (PSNR of an identical image, an undefined std) is the string
``"inf"``, ``"-inf"`` or ``"nan"`` (:mod:`dreamsr.files`); :func:`load_summary` turns means and stds back into
floats. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dreamsr.errors import ConfigError, InputError
from dreamsr.files import atomic_write, atomic_write_json, atomic_write_text, load_json, unfinite

__all__ = ["METRICS", "CONVENTION_TEXT", "DIRECTIONS", "format_metric", "metric_label", "markdown", "write_csv",
           "write_summary", "write_png", "write_grid", "load_summary", "compare", "compare_markdown"]

METRICS = ("psnr", "ssim", "vif", "haarpsi", "gmsd", "mdsi", "hf", "consistency", "lpips", "fid")

#: Which way each metric is better (summary.json's ``direction`` of every entry).
DIRECTIONS = {"psnr": "higher", "ssim": "higher", "vif": "higher", "haarpsi": "higher", "gmsd": "lower",
              "mdsi": "lower", "hf": "1 = HR (< 1 blur, > 1 noise; not a quality score)", "consistency": "lower",
              "lpips": "lower", "fid": "lower"}

CONVENTION_TEXT = {
    "vif": "VIF-p (Sheikh & Bovik 2006, torchmetrics, sigma_n^2 = 2) on the 8-bit values in [0, 255]; RGB: mean "
           "of per-channel VIFs",
    "haarpsi": "HaarPSI (Reisenhofer et al. 2018, piq defaults), RGB in [0, 1], whole image; higher is better, "
               "1 = copy",
    "gmsd": "GMSD (Xue et al. 2014, piq defaults), RGB in [0, 1], whole image; lower is better, 0 = copy",
    "mdsi": "MDSI (Nafchi et al. 2016, piq defaults), RGB in [0, 1], whole image; lower is better, 0 = copy",
    "hf": "HF ratio E[(Y - G*Y)^2] SR / HR, G Gaussian sigma 1.5 px (11 taps, valid region), BT.601 Y, "
          "crop_border = {crop}; mean of per-image ratios; 1 = as much high-frequency energy as HR, < 1 blur, "
          "> 1 noise (not a quality score)",
    "consistency": "MSE x 1e5 between LR and the bicubic-downsampled SR, RGB in [0, 1] (DREAM Table 2)",
    "lpips": "LPIPS v0.1 ({net}), inputs in [-1, 1], whole image",
    "fid": "FID, pytorch-fid InceptionV3 pool3 (2048-d), SR set vs HR set, resized to 299x299",
}


# ---------------------------------------------------------------------------------------------- numbers
def format_metric(v: Any, metric: str) -> str:
    """A metric value for a table: fixed digits per metric, "-" for missing/nan, "inf"/"-inf"."""
    v = unfinite(v)
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, float) and math.isnan(v):
        return "-"
    digits = {"psnr": 2, "ssim": 4, "vif": 4, "haarpsi": 4, "gmsd": 4, "mdsi": 4, "hf": 3, "lpips": 4, "fid": 2,
              "consistency": 3}.get(metric, 4)
    return f"{v:.{digits}f}"


def metric_label(entry: dict[str, Any]) -> str:
    """The row label of a summary's metric entry, e.g. "PSNR (Y)"; the piq measures carry their direction
    ("GMSD ↓": lower is better)."""
    m, c = entry["metric"], entry.get("convention", "rgb")
    if m in ("psnr", "ssim", "vif"):
        return f"{m.upper()} ({'Y' if c == 'y' else 'RGB'})"
    return {"haarpsi": "HaarPSI ↑", "gmsd": "GMSD ↓", "mdsi": "MDSI ↓", "hf": "HF ratio (Y)",
            "consistency": "Consistency", "lpips": "LPIPS", "fid": "FID"}[m]


# ---------------------------------------------------------------------------------------------- files
def write_csv(path: Path, rows: list[dict[str, Any]], cols: list[tuple[str, str, str]]) -> None:
    """metrics.csv: one row per image and seed (``cols``: (column, metric, convention)); floats as repr."""
    fields = ["image", "sample", "seed", "lr_size", "hr_size"] + [c[0] for c in cols] + ["seconds", "error"]
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (repr(v) if isinstance(v, float) and math.isfinite(v) else
                        ("inf" if v == math.inf else v)) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """summary.md and then summary.json (strict JSON, non-finite numbers as strings), each atomically: the JSON
    is written last, so a summary.json exists only for a finished evaluation."""
    atomic_write_text(path.with_suffix(".md"), markdown(summary))
    atomic_write_json(path, summary, indent=2)


def markdown(s: dict[str, Any]) -> str:
    """summary.md of a summary: the settings, conventions and the metrics table."""
    model = s["model"]
    lines = [f"# dreamsr eval: {model.get('name')} on {s['set']} (x{s['scale']})", ""]
    lines.append(f"- images: {s['count']} evaluated of {s['images']}; errors: {s['n_errors']}")
    if model.get("kind") == "diffusion":
        smp = model.get("sampling", {})
        lines.append(f"- sampling: {s['sampler']}, {s['steps']} steps, seed {s['seed']}, {s['samples']} sample(s) "
                     f"per image, tiles {smp.get('tile')} px / overlap {smp.get('overlap')} px, merge "
                     f"{smp.get('merge')}"
                     + (f", truncated start at t0 = {smp['start']}" if smp.get("start") else "")
                     + (", back-projection" if smp.get("back_project") else "")
                     + (f", self-ensemble of {smp['ensemble']}" if (smp.get("ensemble") or 1) > 1 else ""))
        lines.append(f"- weights: {model.get('weights')} (sha256 {str(model.get('sha256'))[:12]})")
    else:
        lines.append(f"- reference upscaler: {model.get('description')}")
    lines.append(f"- protocol: {s['protocol']['name']} — {s['protocol']['description']}"
                 + (f" ({s['protocol']['note']})" if s["protocol"].get("note") else ""))
    lines.append(f"- RGB convention: {s['conventions']['rgb']}")
    lines.append(f"- Y convention: {s['conventions']['y']}")
    lines.append(f"- {s['conventions']['sr_quantized']}")
    lines.append(f"- dreamsr {s['dreamsr_version']}, {s['created']}")
    if s.get("command"):
        lines.append(f"- command: `{s['command']}`")
    lines += ["", "| metric | mean | std | count | convention |", "|---|---:|---:|---:|---|"]
    for e in s["metrics"]:
        if e.get("available") is False:
            lines.append(f"| {metric_label(e)} | unavailable | | | {e['reason']} |")
            continue
        std = format_metric(e.get("std"), e["metric"])
        if e.get("std_over") and std != "-":
            std += f" ({e['std_over'].split(' (')[0]})"
        lines.append(f"| {metric_label(e)} | {format_metric(e['mean'], e['metric'])} | {std} | {e['count']} | "
                     f"{e.get('convention_text', '')} |")
    if s["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in s["warnings"]]
    if s["errors"]:
        lines += ["", "## Errors", ""] + [f"- `{e['image']}`: {e['error']}" for e in s["errors"]]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- images
def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [0, 1] -> [H, W, 3] uint8 (rounded)."""
    return x.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()


def write_png(path: Path, x: torch.Tensor) -> None:
    """``x`` [3, H, W] in [0, 1] as an 8-bit PNG (folders created), atomically."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(to_uint8(x))
    atomic_write(path, lambda fh: img.save(fh, format="PNG"))


def _crop_box(hr: torch.Tensor, bic: torch.Tensor) -> tuple[int, int, int]:
    """(top, left, side) of the zoom crop: a square 1/4 of the short side where bicubic errs most."""
    H, W = hr.shape[-2:]
    side = max(8, min(H, W) // 4)
    err = (hr - bic).abs().mean(0, keepdim=True).unsqueeze(0)
    pooled = F.avg_pool2d(err, side, stride=max(1, side // 2))
    idx = int(pooled.flatten().argmax())
    pw = pooled.shape[-1]
    top, left = (idx // pw) * max(1, side // 2), (idx % pw) * max(1, side // 2)
    return min(top, H - side), min(left, W - side), side


def write_grid(path: Path, lr: torch.Tensor, bic: torch.Tensor, sr: torch.Tensor, hr: torch.Tensor,
                sr_label: str, captions: dict[str, str]) -> None:
    """LR (nearest, HR size) | bicubic | SR | HR on top; the same zoomed crop of each below; labels above."""
    from PIL import Image, ImageDraw

    H, W = hr.shape[-2:]
    lr_big = F.interpolate(lr.unsqueeze(0), size=(H, W), mode="nearest").squeeze(0)
    panels = [("LR", lr_big), ("bicubic", bic), (sr_label, sr), ("HR", hr)]
    top, left, side = _crop_box(hr, bic)
    zs = min(H, W)  # the zoom is a square as wide as the panel's short side
    label_h, pad = 18, 4
    canvas = Image.new("RGB", (4 * W + 5 * pad, label_h + H + zs + 3 * pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, img) in enumerate(panels):
        x = pad + i * (W + pad)
        canvas.paste(Image.fromarray(to_uint8(img)), (x, label_h + pad))
        crop = img[:, top:top + side, left:left + side].unsqueeze(0)
        zoom = F.interpolate(crop, size=(zs, zs), mode="nearest").squeeze(0)
        canvas.paste(Image.fromarray(to_uint8(zoom)), (x, label_h + H + 2 * pad))
        draw.rectangle([x + left, label_h + pad + top, x + left + side - 1, label_h + pad + top + side - 1],
                       outline=(255, 0, 0), width=max(1, min(H, W) // 128))
        text = name + (f"  {captions[name]}" if name in captions else "")
        draw.text((x, 3), text, fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: canvas.save(fh, format="PNG"))


# ---------------------------------------------------------------------------------------------- compare
def load_summary(path: str | os.PathLike) -> dict[str, Any]:
    """Read a summary.json written by :func:`evaluate` (non-finite numbers restored). InputError if unusable."""
    p = Path(path)
    if p.is_dir():
        p = p / "summary.json"
    try:
        data = load_json(p)
    except (OSError, ValueError) as err:
        raise InputError(f"{p}: cannot read an eval summary ({err})") from None
    if not isinstance(data, dict) or "metrics" not in data or "model" not in data:
        raise InputError(f"{p}: not a dreamsr eval summary.json")
    for e in data["metrics"]:
        for k in ("mean", "std"):
            e[k] = unfinite(e.get(k))
    data["_path"] = str(p)
    return data


def compare(paths: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """Line up several summaries: ``{"runs": [{label, set, scale, model, count, ...}], "rows": [{"metric",
    "convention", "label", "values": [(mean, std) or None per run]}], "warnings": [...]}``.

    Rows are matched by (metric, convention); a warning is added when the runs differ in set, scale, count or
    crop border, since their numbers are then not directly comparable.
    """
    if len(paths) < 1:
        raise ConfigError("compare needs at least one summary.json")
    sums = [load_summary(p) for p in paths]
    runs = []
    for s in sums:
        label = f"{s['model'].get('name')} ({Path(s['_path']).parent.name})"
        runs.append({"label": label, "path": s["_path"], "set": s["set"], "scale": s["scale"], "count": s["count"],
                     "samples": s.get("samples"), "steps": s.get("steps"), "crop_border": s.get("crop_border")})
    keys: list[tuple[str, str]] = []
    for s in sums:
        for e in s["metrics"]:
            key = (e["metric"], e.get("convention", "rgb"))
            if key not in keys:
                keys.append(key)
    order = {m: i for i, m in enumerate(METRICS)}
    keys.sort(key=lambda k: (order.get(k[0], 99), k[1]))
    rows = []
    for metric, conv in keys:
        values: list[tuple[Any, Any] | None] = []
        label = ""
        for s in sums:
            e = next((e for e in s["metrics"] if e["metric"] == metric and e.get("convention", "rgb") == conv), None)
            if e is not None:
                label = metric_label(e)
            values.append(None if e is None or e.get("available") is False else (e["mean"], e.get("std")))
        rows.append({"metric": metric, "convention": conv, "label": label, "values": values})
    warnings = []
    for key in ("set", "scale", "count", "crop_border"):
        vals = {str(r[key]) for r in runs}
        if len(vals) > 1:
            warnings.append(f"runs differ in {key}: {', '.join(str(r[key]) for r in runs)}")
    return {"runs": runs, "rows": rows, "warnings": warnings}


def compare_markdown(table: dict[str, Any]) -> str:
    """A Markdown table of :func:`compare`'s result (mean ± std per run)."""
    head = "| metric | " + " | ".join(r["label"] for r in table["runs"]) + " |"
    sep = "|---|" + "---:|" * len(table["runs"])
    lines = [head, sep]
    for row in table["rows"]:
        cells = []
        for v in row["values"]:
            if v is None:
                cells.append("-")
            else:
                mean, std = v
                s = format_metric(mean, row["metric"])
                std_s = format_metric(std, row["metric"])
                cells.append(s if std_s == "-" else f"{s} ± {std_s}")
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    lines += [f"\n> {w}" for w in table["warnings"]]
    return "\n".join(lines) + "\n"
