"""E3, sampling steps (Fig. 8): PSNR/SSIM against the number of DDPM and DDIM steps for p = 1 and p = inf, and
the fewest steps at which p = 1 matches p = inf's quality at its most steps (the sampling speed-up)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .common import Timed, check
from .evaluation import run_eval
from .profiles import P1, PAPER, PINF, Profile

__all__ = ["steps_to_match", "evaluate_steps", "experiment_e3"]


def steps_to_match(fast: dict[int, float], ref: dict[int, float]) -> dict[str, Any]:
    """E3: the fewest sampling steps at which ``fast`` reaches ``ref``'s value at ref's most steps;
    speed-up = ref's most steps / that number (None when never reached)."""
    if not fast or not ref:
        return {"ref_steps": None, "ref_value": None, "match_steps": None, "speedup": None}
    ref_steps = max(ref)
    target = ref[ref_steps]
    match = next((s for s in sorted(fast) if fast[s] >= target), None)
    return {"ref_steps": ref_steps, "ref_value": target, "match_steps": match,
            "speedup": (ref_steps / match) if match else None}


def evaluate_steps(profile: Profile, out: Path, trained: dict[str, dict], crops: Path, *, device: str,
                   precision: str, log: Callable[[str], None], timed: Timed) -> dict[tuple[str, str, int], dict]:
    """Evaluate p = 1 and p = inf with every sampler and step count of the profile on its first ``e3_images``
    crops, each into ``out/evals/steps/<run>_<sampler>_<steps>``. Returns {(run, sampler, steps): result}."""
    ctx: dict[str, Any] = dict(device=device, precision=precision)
    results: dict[tuple[str, str, int], dict] = {}
    for s in (P1, PINF):
        for sampler in profile.e3_samplers:
            for st in profile.e3_steps:
                results[(s.name, sampler, st)] = timed(f"e3/{s.name}/{sampler}{st}", lambda s=s, sampler=sampler,
                                                       st=st: run_eval(
                    f"{s.name}_{sampler}{st}", out / "evals" / "steps" / f"{s.name}_{sampler}_{st:04d}",
                    weights=Path(trained[s.name]["weights"]), crops=crops, images=profile.e3_images, steps=st,
                    sampler=sampler, metrics=("psnr", "ssim"), metric_weights=None, grids=0, log=log, **ctx))
    return results


def experiment_e3(prof: Profile, results: dict[tuple[str, str, int], dict]) -> dict:
    """E3 JSON: metric against sampling steps per (p, sampler), and the sampling speed-up of p = 1."""
    curves = []
    for spec in (P1, PINF):
        for sampler in prof.e3_samplers:
            values = {str(st): {c: results[(spec.name, sampler, st)]["metrics"][c]["mean"]
                                for c in ("psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y")} for st in prof.e3_steps}
            curves.append({"p": spec.p_label, "run": spec.name, "sampler": sampler, "values": values,
                           "seconds": sum(results[(spec.name, sampler, st)]["seconds"] or 0 for st in prof.e3_steps)})
    checks, matches = [], {}
    for sampler in prof.e3_samplers:
        c1 = next(c for c in curves if c["p"] == "1" and c["sampler"] == sampler)
        ci = next(c for c in curves if c["p"] == "inf" and c["sampler"] == sampler)
        for col in ("psnr_rgb", "ssim_rgb"):
            m = steps_to_match({int(s): v[col] for s, v in c1["values"].items()},
                               {int(s): v[col] for s, v in ci["values"].items()})
            matches[f"{sampler}_{col}"] = m
            label = col.split("_")[0].upper()
            checks.append(check(
                f"{sampler.upper()}: p = 1 reaches p = ∞'s {label} at {m['ref_steps']} steps with at most a tenth of "
                f"the steps", None if m["ref_steps"] is None else (m["match_steps"] is not None
                                                                   and m["match_steps"] * 10 <= m["ref_steps"]),
                (f"p = 1 needs {m['match_steps']} steps (×{m['speedup']:.2f} fewer)" if m["match_steps"]
                 else "p = 1 never reaches it"), PAPER["sampling_speedup"]))
        all_better = all(c1["values"][str(s)]["psnr_rgb"] > ci["values"][str(s)]["psnr_rgb"] for s in prof.e3_steps)
        checks.append(check(f"{sampler.upper()}: p = 1 has higher PSNR than p = ∞ at every step count", all_better,
                             ", ".join(f"{s}: {c1['values'][str(s)]['psnr_rgb']:.2f}/"
                                       f"{ci['values'][str(s)]['psnr_rgb']:.2f}" for s in prof.e3_steps),
                             "yes (Fig. 8, 14)"))
        lo, hi = str(min(prof.e3_steps)), str(max(prof.e3_steps))
        confound = ci["values"][lo]["psnr_rgb"] > ci["values"][hi]["psnr_rgb"]
        checks.append(check(f"{sampler.upper()}: p = ∞ has higher PSNR at {lo} steps than at {hi} (fewer steps "
                             f"give smoother images, so a PSNR gain at few steps is no quality gain)", confound,
                             f"{ci['values'][lo]['psnr_rgb']:.2f} vs {ci['values'][hi]['psnr_rgb']:.2f} dB",
                             "-"))
    return {"experiment": "E3", "title": "sampling steps", "profile": prof.to_dict(),
            "eval": {"images": prof.e3_images, "crop": prof.eval_crop, "steps": list(prof.e3_steps),
                     "samplers": list(prof.e3_samplers), "seed": 0},
            "curves": curves, "matches": matches, "checks": checks}
