"""The figures of E1-E5, drawn from the experiment JSONs only (so ``--doc-only`` can draw them again). Without
matplotlib every figure is skipped and the report says so (:data:`NO_PLOT`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["NO_PLOT", "pyplot", "save", "plot_e1", "plot_e2", "plot_e3", "plot_e4", "plot_e5", "draw_all"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


NO_PLOT = "figure skipped: matplotlib is not installed (pip install 'dreamsr[plot]')"


def save(fig: Any, plt: Any, path: Path) -> str:
    """Lay out ``fig``, write it to ``path`` (110 dpi) and close it; returns the file name."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_e1(e1: dict, path: Path) -> str | None:
    plt = pyplot()
    if plt is None:
        return None
    rows = [r for r in e1["rows"] if r["run"] != "bicubic"]
    bic = next((r for r in e1["rows"] if r["run"] == "bicubic"), None)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, col, lab in ((axes[0], "psnr_rgb", "PSNR (RGB) dB"), (axes[1], "ssim_rgb", "SSIM (RGB)")):
        xs = list(range(len(rows)))
        ms = [r["metrics"][col]["mean"] for r in rows]
        sd = [r["metrics"][col]["std"] or 0.0 for r in rows]
        ax.errorbar(xs, ms, yerr=sd, fmt="o-", capsize=4, label="diffusion (mean ± std over crops)")
        if bic is not None:
            ax.axhline(bic["metrics"][col]["mean"], ls="--", c="gray", label="bicubic")
        ax.set_xticks(xs, [r["label"] for r in rows])
        ax.set_xlabel("p")
        ax.set_ylabel(lab)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"E1: p sweep, x4, {e1['eval']['sampler'].upper()} {e1['eval']['steps']} steps", fontsize=10)
    return save(fig, plt, path)


def plot_e2(e2: dict, path: Path, title: str | None = None) -> str | None:
    title = title or f"E2: convergence (validation {e2['key']})"
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, curve in e2["curves"].items():
        if curve:
            ax.plot([s for s, _ in curve], [v for _, v in curve], "o-", ms=3, label=name)
    sp = e2["speedup"]
    if sp["ref_final"] is not None:
        ax.axhline(sp["ref_final"], ls=":", c="gray", label="p=∞ final")
    if sp["reach_step"]:
        ax.axvline(sp["reach_step"], ls="--", c="C0", alpha=0.6, label=f"p=1 reaches it (×{sp['speedup']:.2f})")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"validation {e2['key']} (dB)")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    return save(fig, plt, path)


def plot_e3(e3: dict, path: Path) -> str | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, col, lab in ((axes[0], "psnr_rgb", "PSNR (RGB) dB"), (axes[1], "ssim_rgb", "SSIM (RGB)")):
        for curve in e3["curves"]:
            pts = sorted((int(s), v[col]) for s, v in curve["values"].items())
            ax.plot([s for s, _ in pts], [v for _, v in pts], "o-" if curve["sampler"] == "ddpm" else "s--", ms=3,
                    label=f"p={curve['p']} {curve['sampler'].upper()}")
        ax.set_xscale("log")
        steps = sorted({int(st) for curve in e3["curves"] for st in curve["values"]})
        ax.set_xticks(steps, [str(st) for st in steps])
        ax.minorticks_off()
        ax.set_xlabel("sampling steps")
        ax.set_ylabel(lab)
    axes[0].legend(fontsize=7)
    fig.suptitle("E3: quality against sampling steps", fontsize=10)
    return save(fig, plt, path)


def plot_e4(e4: dict, path: Path) -> str | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, len(e4["models"]), figsize=(5 * len(e4["models"]), 3.6), sharey=True, squeeze=False)
    for ax, m in zip(axes[0], e4["models"]):
        t = m["t"]
        for kind, c in (("train", "C0"), ("sample", "C3")):
            mean = torch.tensor(m[f"{kind}_mean"])
            std = torch.tensor(m[f"{kind}_std"])
            ax.plot(t, mean, c=c, label='"training"' if kind == "train" else '"sampling"')
            # a linear axis: on a log axis mean - std < 0 wherever the spread exceeds the mean, and the band breaks
            ax.fill_between(t, (mean - std).clamp_min(0.0), mean + std, color=c, alpha=0.2)
        ax.set_ylim(bottom=0.0)
        ax.set_xlabel("t")
        ax.set_title(f"p = {m['p']} ({m['name']})", fontsize=9)
    axes[0][0].set_ylabel("MSE of x̂0 vs y0 ([0,1] image)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("E4: training-sampling discrepancy (mean ± std over crops, band cut at 0)", fontsize=10)
    return save(fig, plt, path)


def plot_e5(e5: dict, path: Path) -> str | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, curve in e5["convergence"]["curves"].items():
        if curve:
            axes[0].plot([s for s, _ in curve], [v for _, v in curve], "o-", ms=3, label=name)
    axes[0].set_xlabel("training step")
    axes[0].set_ylabel(f"validation {e5['convergence']['key']} (dB)")
    axes[0].legend(fontsize=7)
    axes[0].set_title("residual target: convergence", fontsize=9)
    gains = e5["gain_psnr_rgb"]
    labels = ["image target", "residual target"]
    vals = [gains["image"]["mean"] or 0.0, gains["residual"]["mean"] or 0.0]
    errs = [2 * (gains["image"]["se"] or 0.0), 2 * (gains["residual"]["se"] or 0.0)]
    axes[1].bar(labels, vals, yerr=errs, capsize=5, color=["C0", "C2"])
    axes[1].axhline(0, c="k", lw=0.8)
    axes[1].set_ylabel("p=1 minus p=∞ PSNR (dB, ±2 SE)")
    axes[1].set_title("DREAM's gain by target", fontsize=9)
    fig.suptitle("E5: p = 1 vs p = ∞ with the residual target", fontsize=10)
    return save(fig, plt, path)


def draw_all(out: Path, e1: dict, e2: dict, e3: dict, e4: dict, e5: dict) -> dict[str, str | None]:
    """Draw every figure into ``out``; {"e1": file name or None (skipped), ...}."""
    return {"e1": plot_e1(e1, out / "e1_p_sweep.png"), "e2": plot_e2(e2, out / "e2_convergence.png"),
            "e3": plot_e3(e3, out / "e3_sampling_steps.png"), "e4": plot_e4(e4, out / "e4_discrepancy.png"),
            "e5": plot_e5(e5, out / "e5_residual.png")}
