"""E2, convergence (Fig. 1/7): validation PSNR during training for p = 1 and p = inf, and the step at which
p = 1 first reaches p = inf's final (and best) PSNR, as a speed-up factor. Every number comes from the runs'
metrics.jsonl (the validations ``dreamsr.jobs.train.train`` logged)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from .common import check, fmt, jsonl_records
from .profiles import P1, PAPER, PINF, R1, RINF, Profile, RunSpec

__all__ = ["read_val_curve", "convergence_speedup", "up_to_best", "experiment_e2"]


def read_val_curve(metrics_jsonl: str | os.PathLike, key: str = "psnr") -> list[tuple[int, float]]:
    """Validation curve [(step, value)] from a run's metrics.jsonl, sorted by step.

    A step validated twice (a run resumed from a checkpoint older than its last validation repeats it, exactly)
    keeps its last record. ``key``: "psnr" (Y, crop = scale), "psnr_rgb", "ssim" (Y).
    """
    by_step = {int(rec["step"]): float(rec[key]) for rec in jsonl_records(metrics_jsonl)
               if rec.get("event") == "val" and key in rec}  # a later record of a step replaces an earlier one
    return sorted(by_step.items())


def convergence_speedup(fast: Sequence[tuple[int, float]], ref: Sequence[tuple[int, float]]) -> dict[str, Any]:
    """E2: the first step at which ``fast`` reaches ``ref``'s final value; speed-up = ref's final step / that step.

    Curves are [(step, value)] sorted by step (higher is better). ``reach_step``/``speedup`` are None when
    ``fast`` never gets there.
    """
    if not ref or not fast:
        return {"ref_final_step": None, "ref_final": None, "reach_step": None, "speedup": None}
    ref_step, ref_final = ref[-1]
    reach = next((s for s, v in fast if v >= ref_final), None)
    return {"ref_final_step": int(ref_step), "ref_final": float(ref_final), "reach_step": reach,
            "speedup": (ref_step / reach) if reach else None}


def up_to_best(curve: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    """The curve cut after its (first) maximum, so that its "final" value is its best."""
    if not curve:
        return []
    i = max(range(len(curve)), key=lambda k: (curve[k][1], -k))
    return list(curve[:i + 1])


def experiment_e2(prof: Profile, trained: dict[str, dict], fast: RunSpec = P1, ref: RunSpec = PINF,
                  key: str = "psnr_rgb") -> dict:
    """E2 JSON: validation curves of ``fast`` and ``ref`` and the speed-up of fast over ref."""
    curves = {f"p={s.p_label}": read_val_curve(Path(trained[s.name]["run_dir"]) / "metrics.jsonl", key)
              for s in (fast, ref)}
    curves_y = {f"p={s.p_label}": read_val_curve(Path(trained[s.name]["run_dir"]) / "metrics.jsonl", "psnr")
                for s in (fast, ref)}
    sp = convergence_speedup(curves[f"p={fast.p_label}"], curves[f"p={ref.p_label}"])
    sp_y = convergence_speedup(curves_y[f"p={fast.p_label}"], curves_y[f"p={ref.p_label}"])
    # p = inf's best validation instead of its last: robust when a curve peaks and falls
    best = {"image": convergence_speedup(curves[f"p={fast.p_label}"], up_to_best(curves[f"p={ref.p_label}"]))}
    residual = {}
    if R1.name in trained and RINF.name in trained:  # E5's pair, the same measure
        rc = {s.p_label: read_val_curve(Path(trained[s.name]["run_dir"]) / "metrics.jsonl", key) for s in (R1, RINF)}
        residual = {"curves": {f"p={k}": v for k, v in rc.items()},
                    "speedup": convergence_speedup(rc["1"], rc["inf"]),
                    "speedup_best": convergence_speedup(rc["1"], up_to_best(rc["inf"]))}
    bicubic_y = read_val_curve(Path(trained[ref.name]["run_dir"]) / "metrics.jsonl", "bicubic_psnr")
    shapes = {}  # each run's validation curve: its PSNR peak and last value, with SSIM (Y) at both
    for name, rec in trained.items():
        metrics = Path(rec["run_dir"]) / "metrics.jsonl"
        ps, ss = read_val_curve(metrics, key), dict(read_val_curve(metrics, "ssim"))
        if ps:
            pk_step, pk = max(ps, key=lambda sv: (sv[1], -sv[0]))
            shapes[name] = {"peak_step": pk_step, "peak": pk, "last_step": ps[-1][0], "last": ps[-1][1],
                            "ssim_y_at_peak": ss.get(pk_step), "ssim_y_last": ss.get(ps[-1][0])}
    reached = sp["reach_step"] is not None
    checks = [
        check(f"p = 1 reaches p = ∞'s final validation PSNR within the budget", reached,
               f"p = ∞ final {fmt(sp['ref_final'], 2)} dB at step {sp['ref_final_step']}; p = 1 "
               + (f"reaches it at step {sp['reach_step']}" if reached else "never reaches it"),
               "yes (Fig. 1, 7)"),
        check("training speed-up of p = 1 over p = ∞ is at least 2×", None if not reached else sp["speedup"] >= 2,
               f"speed-up ×{fmt(sp['speedup'], 2)}" if reached else "no speed-up: never reached",
               PAPER["train_speedup"]),
        check("speed-up of at least 2× against p = ∞'s best validation PSNR (a curve may peak and fall)",
               None if best["image"]["reach_step"] is None else best["image"]["speedup"] >= 2,
               f"p = ∞ best {fmt(best['image']['ref_final'], 2)} dB at step {best['image']['ref_final_step']}; "
               + (f"p = 1 reaches it at step {best['image']['reach_step']} (×{fmt(best['image']['speedup'], 2)})"
                  if best["image"]["reach_step"] else "p = 1 never reaches it"), PAPER["train_speedup"]),
        check("same with validation PSNR on Y (BasicSR convention)", sp_y["reach_step"] is not None,
               f"speed-up ×{fmt(sp_y['speedup'], 2)}" if sp_y["reach_step"] else "never reached", "-"),
    ]
    return {"experiment": "E2", "title": "convergence", "profile": prof.to_dict(), "key": key,
            "runs": [fast.name, ref.name], "curves": curves, "curves_y": curves_y, "speedup": sp,
            "speedup_y": sp_y, "speedup_best": best["image"], "residual": residual,
            "bicubic_psnr_y": bicubic_y[-1][1] if bicubic_y else None, "shapes": shapes,
            "val": {"every": prof.val_every, "count": prof.val_count, "crop": prof.val_crop, "steps": prof.val_steps,
                    "sampler": "ddim"},
            "checks": checks}
