"""E1, the Table 1 analogue: p = 0 (DRM), 1, 2 (DREAM) and inf (standard), same preset, data, seed and steps;
held-out x4 PSNR/SSIM (RGB and Y conventions), consistency, LPIPS/FID where their weights exist.

Its evaluations ("table") also serve E5, which compares the residual-target pair on the same crops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .common import DIGITS, Timed, check, fmt, paired_difference, table_row
from .evaluation import run_eval
from .profiles import E1_RUNS, P1, PAPER, RUNS, Profile, RunSpec

__all__ = ["FULL_METRICS", "evaluate_table", "experiment_e1"]

FULL_METRICS = ("psnr", "ssim", "consistency", "lpips", "fid")


def evaluate_table(profile: Profile, out: Path, trained: dict[str, dict], crops: Path, *, device: str,
                   precision: str, metric_weights: str | None, log: Callable[[str], None],
                   timed: Timed) -> tuple[dict[str, dict], dict]:
    """Evaluate every run and bicubic on the profile's held-out crops (E1/E5 tables), each into
    ``out/evals/table/<name>``. Returns ({run name: run_eval result}, bicubic's result)."""
    ctx: dict[str, Any] = dict(device=device, precision=precision)
    evals = {s.name: timed(f"eval/{s.name}", lambda s=s: run_eval(
        s.name, out / "evals" / "table" / s.name, weights=Path(trained[s.name]["weights"]), crops=crops,
        images=profile.eval_images, steps=profile.e1_steps, sampler=profile.e1_sampler, metrics=FULL_METRICS,
        metric_weights=metric_weights, grids=2, log=log, **ctx)) for s in RUNS}
    bicubic = timed("eval/bicubic", lambda: run_eval(
        "bicubic", out / "evals" / "table" / "bicubic", weights=None, crops=crops, images=profile.eval_images,
        steps=1, sampler="ddim", metrics=("psnr", "ssim", "consistency"), metric_weights=None, grids=0, log=log,
        **ctx))
    return evals, bicubic


def experiment_e1(prof: Profile, trained: dict[str, dict], evals: dict[str, dict], bicubic: dict) -> dict:
    """E1 JSON: the p sweep table, paired differences and the paper's claims checked."""
    rows = [table_row(spec.title, spec.name, evals[spec.name], {"p": spec.p_label,
                                                           "train_seconds": trained[spec.name]["train_seconds"],
                                                           "command": trained[spec.name]["command"]})
            for spec in E1_RUNS]
    rows.append(table_row("bicubic", "bicubic", bicubic, {"p": None, "train_seconds": None, "command": None}))
    unavailable = {}
    for r in [evals[s.name] for s in E1_RUNS]:
        unavailable.update(r["unavailable"])
    psnr = {s.p_label: evals[s.name]["metrics"]["psnr_rgb"]["mean"] for s in E1_RUNS}
    ssim = {s.p_label: evals[s.name]["metrics"]["ssim_rgb"]["mean"] for s in E1_RUNS}
    per = {s.p_label: evals[s.name]["per_image"] for s in E1_RUNS}
    paired = {
        "p1_minus_pinf": {c: paired_difference(per["1"][c], per["inf"][c]) for c in ("psnr_rgb", "ssim_rgb")},
        "p0_minus_p1": {c: paired_difference(per["0"][c], per["1"][c]) for c in ("psnr_rgb", "ssim_rgb")},
    }
    order = ["0", "1", "2", "inf"]
    best = max(order, key=lambda p: psnr[p])
    worst = min(order, key=lambda p: psnr[p])
    mono = all(psnr[a] >= psnr[b] for a, b in zip(order, order[1:]))
    d1 = paired["p1_minus_pinf"]["psnr_rgb"]
    checks = [
        check("p = 0 (DRM) has the highest PSNR of the four p", best == "0",
               f"highest: p = {best} ({psnr[best]:.2f} dB)", "yes (all four columns of Table 1)"),
        check("p = ∞ (standard) has the lowest PSNR of the four p", worst == "inf",
               f"lowest: p = {worst} ({psnr[worst]:.2f} dB)", "yes (all four columns)"),
        check("PSNR falls as p grows (p=0 ≥ 1 ≥ 2 ≥ ∞)", mono,
               " ≥ ".join(f"{psnr[p]:.2f}" for p in order) if mono else
               ", ".join(f"p={p}: {psnr[p]:.2f}" for p in order), "yes for p = 0, 1, 2, ∞ on DIV2K/SR3"),
        check("p = 1 beats p = ∞ in PSNR", psnr["1"] > psnr["inf"],
               f"{psnr['1']:.2f} vs {psnr['inf']:.2f} dB", "yes (28.10 vs 27.02 dB on DIV2K/SR3)"),
        check("… by more than two standard errors of the paired per-crop difference", d1["significant"],
               f"difference {fmt(d1['mean'], 3)} ± {fmt(d1['se'], 3)} dB (SE, {d1['n']} crops)", "not reported"),
        check("p = 1 beats p = ∞ in SSIM", ssim["1"] > ssim["inf"], f"{ssim['1']:.4f} vs {ssim['inf']:.4f}",
               "yes (0.79 vs 0.76)"),
    ]
    for metric, paper in (("lpips", "yes (0.121 vs 0.189 on DIV2K/SR3)"), ("fid", "yes (14.32 vs 16.72)")):
        have = all(metric in evals[s.name]["metrics"] for s in (P1, RunSpec(0.0, "image")))
        v1 = evals[P1.name]["metrics"].get(metric, {}).get("mean") if have else None
        v0 = evals["image_p0"]["metrics"].get(metric, {}).get("mean") if have else None
        holds = None if v1 is None or v0 is None else v1 < v0
        checks.append(check(f"p = 1 has better (lower) {metric.upper()} than p = 0 (the perception side of the "
                             f"trade-off)", holds,
                             f"{fmt(v1, DIGITS[metric])} vs {fmt(v0, DIGITS[metric])}" if holds is not None
                             else f"{metric.upper()} weights unavailable (see above)", paper))
    return {"experiment": "E1", "title": "Table 1 analogue: p sweep", "profile": prof.to_dict(),
            "eval": {"sampler": prof.e1_sampler, "steps": prof.e1_steps, "images": prof.eval_images,
                     "crop": prof.eval_crop, "seed": 0},
            "rows": rows, "paired": paired, "unavailable": unavailable, "checks": checks,
            "paper": PAPER["table1_div2k_sr3"]}
