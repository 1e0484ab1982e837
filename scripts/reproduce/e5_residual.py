"""E5, beyond the paper: p = 1 vs p = inf with the residual target (the model diffuses 1.5 x (HR - bicubic) and only
adds detail to bicubic), next to the image-target pair: the PSNR gain of DREAM by target, and convergence."""

from __future__ import annotations

from .common import check, fmt, paired_difference, table_row
from .e2_convergence import experiment_e2
from .profiles import P1, PINF, R1, RINF, Profile

__all__ = ["experiment_e5"]


def experiment_e5(prof: Profile, trained: dict[str, dict], evals: dict[str, dict]) -> dict:
    """E5 JSON: p = 1 vs p = ∞ with the residual target, next to the image-target pair."""
    rows = [table_row(f"{s.title}, {s.target}", s.name, evals[s.name],
                 {"p": s.p_label, "target": s.target, "train_seconds": trained[s.name]["train_seconds"],
                  "command": trained[s.name]["command"]}) for s in (P1, PINF, R1, RINF)]
    per = {s.name: evals[s.name]["per_image"] for s in (P1, PINF, R1, RINF)}
    gains = {"image": paired_difference(per[P1.name]["psnr_rgb"], per[PINF.name]["psnr_rgb"]),
             "residual": paired_difference(per[R1.name]["psnr_rgb"], per[RINF.name]["psnr_rgb"])}
    conv = experiment_e2(prof, trained, R1, RINF)
    gi, gr = gains["image"]["mean"], gains["residual"]["mean"]
    m = {s.name: evals[s.name]["metrics"]["psnr_rgb"]["mean"] for s in (P1, PINF, R1, RINF)}
    checks = [
        check("residual target: p = 1 beats p = ∞ in PSNR", gr > 0,
               f"{m[R1.name]:.2f} vs {m[RINF.name]:.2f} dB (gain {gr:.3f} ± {fmt(gains['residual']['se'], 3)} SE)",
               "not in the paper"),
        check("… by more than two standard errors", gains["residual"]["significant"],
               f"{gains['residual']['n']} crops", "not in the paper"),
        check("DREAM's PSNR gain is smaller with the residual target than with the image target", gr < gi,
               f"{gr:.3f} vs {gi:.3f} dB", "not in the paper"),
        check("residual target: p = 1 reaches p = ∞'s final validation PSNR earlier",
               conv["speedup"]["reach_step"] is not None and conv["speedup"]["speedup"] > 1,
               f"speed-up ×{fmt(conv['speedup']['speedup'], 2)}" if conv["speedup"]["reach_step"]
               else "never reached", "not in the paper"),
        check("at p = ∞ the residual target beats the image target in PSNR", m[RINF.name] > m[PINF.name],
               f"{m[RINF.name]:.2f} vs {m[PINF.name]:.2f} dB", "not in the paper"),
    ]
    return {"experiment": "E5", "title": "residual target", "profile": prof.to_dict(),
            "eval": {"sampler": prof.e1_sampler, "steps": prof.e1_steps, "images": prof.eval_images,
                     "crop": prof.eval_crop}, "rows": rows, "gain_psnr_rgb": gains, "convergence": conv,
            "checks": checks}
