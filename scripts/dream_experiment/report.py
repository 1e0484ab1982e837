#!/usr/bin/env python3
"""Tables, intervals, verdicts and figures of the paired DREAM experiment (docs/experiments/dream-resshift.md).

    python scripts/dream_experiment/report.py CORPUS WORK OUT_STEM

Reads WORK/eval/<arm>-s<seed>/*.json (scripts/dream_experiment/evaluate.py) and writes OUT_STEM.md (the results
section: every table with the mean over training seeds and a 95 % Student-t interval of each seed-paired
difference, and the verdict of each pre-registered hypothesis), OUT_STEM.json (every number) and
OUT_STEM-curves.png / OUT_STEM-fig3.png. Only seeds present in both arms of a difference are paired.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path
from typing import Any

ARMS = ("start", "pinf", "p1", "p1vp", "p0")
LABEL = {"start": "the common start (experiment B)", "pinf": "p = inf (standard)", "p1": "p = 1 (DREAM, input λ)", "p1vp": "p = 1 (DREAM, VP λ)",
         "p0": "p = 0 (DRM)"}
STEPS = (1, 2, 4, 8, 15)
COLS = ("psnr_y", "ssim_y", "haarpsi", "hf")
HEAD = {"psnr_y": "PSNR-Y", "ssim_y": "SSIM-Y", "haarpsi": "HaarPSI", "hf": "HF ratio"}
FMT = {"psnr_y": "{:.2f}", "ssim_y": "{:.4f}", "haarpsi": "{:.4f}", "hf": "{:.3f}"}
DFMT = {"psnr_y": "{:+.3f}", "ssim_y": "{:+.4f}", "haarpsi": "{:+.4f}", "hf": "{:+.3f}"}
# Student t 0.975 quantiles by degrees of freedom (scipy.stats.t.ppf(0.975, df)); also used by
# scripts/profiles_external.py for its 10 photos
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086}
PAIRS = (("p1", "pinf"), ("p0", "pinf"), ("p1", "p0"), ("p1vp", "p1"))


def load(work: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """{arm: {seed: {task: result}}}"""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for run in sorted((work / "eval").iterdir()):
        if not run.is_dir() or "-s" not in run.name:
            continue
        arm, seed = run.name.rsplit("-s", 1)
        out.setdefault(arm, {})[int(seed)] = {p.stem: json.loads(p.read_text()) for p in run.glob("*.json")}
    return out


def value(res: dict[str, Any], task: str, col: str, seed_index: int | None = None) -> float | None:
    r = res.get(task)
    if r is None:
        return None
    m = r["metrics"][col]
    return m["mean"] if seed_index is None else m["per_seed_mean"][seed_index]


def interval(diffs: list[float]) -> dict[str, Any]:
    n = len(diffs)
    mean = statistics.fmean(diffs) if diffs else math.nan
    if n < 2:
        return {"n": n, "mean": mean, "lo": math.nan, "hi": math.nan, "diffs": diffs}
    half = T975[n - 1] * statistics.stdev(diffs) / math.sqrt(n)
    return {"n": n, "mean": mean, "lo": mean - half, "hi": mean + half, "diffs": diffs}


def paired(data: dict, a: str, b: str, task: str, col: str, seed_index: int | None = None) -> dict[str, Any]:
    seeds = sorted(set(data.get(a, {})) & set(data.get(b, {})))
    diffs = []
    for s in seeds:
        va, vb = value(data[a][s], task, col, seed_index), value(data[b][s], task, col, seed_index)
        if va is not None and vb is not None:
            diffs.append(va - vb)
    return interval(diffs)


def arm_mean(data: dict, arm: str, task: str, col: str, seed_index: int | None = None) -> tuple[float, int]:
    vals = [v for s in sorted(data.get(arm, {})) if (v := value(data[arm][s], task, col, seed_index)) is not None]
    return (statistics.fmean(vals) if vals else math.nan), len(vals)


def fmt_i(iv: dict, col: str) -> str:
    if iv["n"] == 0:
        return "-"
    if iv["n"] < 2:
        return DFMT[col].format(iv["mean"]) + " (1 seed)"
    return f"{DFMT[col].format(iv['mean'])} [{DFMT[col].format(iv['lo'])}, {DFMT[col].format(iv['hi'])}]"


def verdict(iv: dict, direction: str = ">") -> str:
    """holds / does not hold / not resolved for "difference > 0" (or "< 0", or "contains 0")."""
    if iv["n"] < 2 or math.isnan(iv["lo"]):
        return "not resolved (fewer than 2 paired seeds)"
    if direction == "contains0":
        return "holds" if iv["lo"] <= 0 <= iv["hi"] else "does not hold"
    above, below = iv["lo"] > 0, iv["hi"] < 0
    if direction == ">":
        return "holds" if above else ("does not hold" if below else "not resolved (interval spans 0)")
    return "holds" if below else ("does not hold" if above else "not resolved (interval spans 0)")


def bicubic(corpus: Path, work: Path) -> dict[str, float]:
    cache = work / "eval" / "bicubic.json"
    if cache.exists():
        return json.loads(cache.read_text())
    from dreamsr.jobs.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(set="folder", data_dir=str(corpus / "val_crops"), model="bicubic", scale=4,
                     metrics=("psnr", "ssim", "haarpsi", "hf"), convention="y", grids=0)
    with tempfile.TemporaryDirectory() as tmp:
        s = evaluate(cfg, Path(tmp) / "e").summary
    out = {m["column"]: m["mean"] for m in s["metrics"]}
    cache.write_text(json.dumps(out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("work", type=Path)
    ap.add_argument("out", type=Path, help="output stem, e.g. docs/experiments/dream-resshift-results")
    ap.add_argument("--title", default="Results", help="the report's heading")
    ap.add_argument("--curve-at", default="1000,2000", help="training steps of the curve states (evaluate.py's)")
    ap.add_argument("--final-step", type=int, default=3000, help="the runs' last training step")
    args = ap.parse_args()
    curve_at = tuple(int(v) for v in args.curve_at.split(",") if v.strip())
    data = load(args.work)
    bic = bicubic(args.corpus, args.work)
    arms = [a for a in ARMS if a in data]
    seeds = {a: sorted(data[a]) for a in arms}
    lines: list[str] = []
    js: dict[str, Any] = {"seeds": seeds, "bicubic": bic, "means": {}, "differences": {}, "verdicts": {}}
    say = lines.append

    say(f"## {args.title}\n")
    say("Generated by `scripts/dream_experiment/report.py` from the runs' evaluations "
        f"({', '.join(f'{a}: seeds {seeds[a]}' for a in arms)}). Validation crops (7 × 256², x4). Intervals: "
        "95 % Student-t over the training seeds of the seed-paired difference. Arms without runs are left out.\n")
    # --- primary table: means
    say("### Arm means at K ancestral steps (no back-projection, no ensemble; 4 sampling seeds per model)\n")
    say("| arm | K | " + " | ".join(HEAD[c] for c in COLS) + " |")
    say("|---|---:|" + "---:|" * len(COLS))
    say("| bicubic | - | " + " | ".join(FMT[c].format(bic[c]) for c in COLS) + " |")
    for a in arms:
        for k in STEPS:
            vals = [arm_mean(data, a, f"final-k{k}", c) for c in COLS]
            js["means"].setdefault(a, {})[f"k{k}"] = {c: v for c, (v, _) in zip(COLS, vals)}
            say(f"| {LABEL[a]} | {k} | " + " | ".join(FMT[c].format(v) for c, (v, _) in zip(COLS, vals)) + " |")
    say("")
    # --- differences
    say("### Seed-paired differences (mean [95 % interval])\n")
    say("| difference | K | " + " | ".join(HEAD[c] for c in COLS) + " |")
    say("|---|---:|" + "---:|" * len(COLS))
    for a, b in PAIRS:
        if a not in data or b not in data:
            continue
        for k in STEPS:
            ivs = {c: paired(data, a, b, f"final-k{k}", c) for c in COLS}
            js["differences"].setdefault(f"{a}-{b}", {})[f"k{k}"] = ivs
            say(f"| {a} − {b} | {k} | " + " | ".join(fmt_i(ivs[c], c) for c in COLS) + " |")
    say("")
    # --- secondary rows
    say("### Secondary rows: back-projection + 2-member ensemble (sampling seed 0)\n")
    say("| arm | K | " + " | ".join(HEAD[c] for c in COLS) + " |")
    say("|---|---:|" + "---:|" * len(COLS))
    for a in arms:
        for k in (1, 15):
            vals = [arm_mean(data, a, f"final-bp-k{k}", c) for c in COLS]
            js["means"].setdefault(a, {})[f"bp-k{k}"] = {c: v for c, (v, _) in zip(COLS, vals)}
            say(f"| {LABEL[a]} | {k} | " + " | ".join(FMT[c].format(v) for c, (v, _) in zip(COLS, vals)) + " |")
    for a, b in PAIRS[:1]:
        for k in (1, 15):
            ivs = {c: paired(data, a, b, f"final-bp-k{k}", c) for c in COLS}
            js["differences"].setdefault(f"{a}-{b}", {})[f"bp-k{k}"] = ivs
            say(f"| {a} − {b} | {k} | " + " | ".join(fmt_i(ivs[c], c) for c in COLS) + " |")
    say("")
    # --- curves (seed 0 of sampling at every point)
    say(f"### Convergence: EMA weights at steps {', '.join(str(s) for s in (*curve_at, args.final_step))} "
        "(sampling seed 0)\n")
    say("| arm | K | metric | " + " | ".join(str(s) for s in (*curve_at, args.final_step)) + " |")
    say("|---|---:|---|" + "---:|" * (len(curve_at) + 1))
    curves: dict[str, Any] = {}
    for a in arms:
        if a == "start":
            continue  # one file, no training states
        for k in (1, 15):
            for c in ("psnr_y", "haarpsi"):
                row = [arm_mean(data, a, f"curve-{s}-k{k}", c)[0] for s in curve_at]
                row.append(arm_mean(data, a, f"final-k{k}", c, seed_index=0)[0])
                curves.setdefault(a, {})[f"k{k}-{c}"] = row
                say(f"| {LABEL[a]} | {k} | {HEAD[c]} | " + " | ".join(FMT[c].format(v) for v in row) + " |")
    js["curves"] = curves
    say("")
    conv = {}
    for s in curve_at:
        conv[s] = paired(data, "p1", "pinf", f"curve-{s}-k15", "psnr_y")
    # --- Fig. 3
    say("### The paper's Fig. 3 diagnostic: PSNR-Y of the x0 estimate per trained index t\n")
    say("From the true x_t (the kernel applied to the HR signal) vs along the 15-step sampling chain from the "
        "prior; mean over seeds and crops. gap = true − chain (how much the chain's inputs cost).\n")
    fig3: dict[str, Any] = {}
    say("| arm | " + " | ".join(f"t={t}" for t in (15, 12, 9, 6, 3, 1)) + " | mean gap |")
    say("|---|" + "---:|" * 7)
    for a in arms:
        runs = [data[a][s]["diag"] for s in seeds[a] if "diag" in data[a][s]]
        if not runs:
            continue
        T = len(runs[0]["t"])
        true = [statistics.fmean(r["psnr_y_true_xt"][i] for r in runs) for i in range(T)]
        chain = [statistics.fmean(r["psnr_y_chain"][i] for r in runs) for i in range(T)]
        gap = [x - y for x, y in zip(true, chain)]
        fig3[a] = {"true": true, "chain": chain, "gap": gap, "seeds": len(runs)}
        cells = [f"{gap[t - 1]:+.2f}" for t in (15, 12, 9, 6, 3, 1)]
        say(f"| {LABEL[a]} | " + " | ".join(cells) + f" | {statistics.fmean(gap[:-1]):+.3f} |")
    js["fig3"] = fig3
    gap_diff = None
    if "p1" in fig3 and "pinf" in fig3:
        per_seed = []
        for s in sorted(set(seeds["p1"]) & set(seeds["pinf"])):
            d1, d0 = data["p1"][s].get("diag"), data["pinf"][s].get("diag")
            if d1 and d0:
                g1 = statistics.fmean(x - y for x, y in zip(d1["psnr_y_true_xt"][:-1], d1["psnr_y_chain"][:-1]))
                g0 = statistics.fmean(x - y for x, y in zip(d0["psnr_y_true_xt"][:-1], d0["psnr_y_chain"][:-1]))
                per_seed.append(g1 - g0)
        gap_diff = interval(per_seed)
    say("")
    # --- verdicts
    say("### Verdicts\n")
    d = js["differences"]

    def get(key: str, k: str, c: str) -> dict:
        return d.get(key, {}).get(k, {}).get(c, interval([]))

    h: list[tuple[str, str, str]] = []
    h.append(("H1 (primary): at K = 15, p1 − pinf > 0 on HaarPSI", fmt_i(get("p1-pinf", "k15", "haarpsi"), "haarpsi"),
              verdict(get("p1-pinf", "k15", "haarpsi"))))
    h.append(("H1: at K = 15, p1 − pinf > 0 on PSNR-Y", fmt_i(get("p1-pinf", "k15", "psnr_y"), "psnr_y"),
              verdict(get("p1-pinf", "k15", "psnr_y"))))
    k1 = get("p1-pinf", "k1", "psnr_y")
    h.append(("H2: at K = 1, p1 − pinf on PSNR-Y is not above 0", fmt_i(k1, "psnr_y"),
              "holds" if k1["n"] >= 2 and not k1["lo"] > 0 else ("does not hold" if k1["n"] >= 2 else "not resolved")))
    loss = {}
    for a in ("p1", "pinf"):
        loss[a] = [value(data[a][s], "final-k1", "psnr_y") - value(data[a][s], "final-k15", "psnr_y")
                   for s in seeds.get(a, []) if "final-k1" in data[a][s] and "final-k15" in data[a][s]]
    common = sorted(set(seeds.get("p1", [])) & set(seeds.get("pinf", [])))
    l3 = interval([(value(data["pinf"][s], "final-k1", "psnr_y") - value(data["pinf"][s], "final-k15", "psnr_y"))
                   - (value(data["p1"][s], "final-k1", "psnr_y") - value(data["p1"][s], "final-k15", "psnr_y"))
                   for s in common if all(t in data[a][s] for a in ("p1", "pinf") for t in ("final-k1", "final-k15"))])
    h.append(("H3: the PSNR-Y lost from K = 1 to 15 is smaller for p1 (pinf's loss − p1's loss > 0)",
              fmt_i(l3, "psnr_y"), verdict(l3)))
    if "p0" in data:
        h.append(("H4: at K = 15, p1 − p0 > 0 on HaarPSI", fmt_i(get("p1-p0", "k15", "haarpsi"), "haarpsi"),
                  verdict(get("p1-p0", "k15", "haarpsi"))))
        best_k1 = max(arms, key=lambda a: arm_mean(data, a, "final-k1", "psnr_y")[0])
        h.append(("H4: p0 has the highest PSNR-Y at K = 1", f"highest: {best_k1}",
                  "holds" if best_k1 == "p0" else "does not hold"))
    for s in curve_at:
        h.append((f"H5: at {s} steps, p1 − pinf > 0 on PSNR-Y at K = 15 (seed-0 sampling)", fmt_i(conv[s], "psnr_y"),
                  verdict(conv[s])))
    if gap_diff is not None:
        h.append(("H6: along the chain p1 loses less PSNR-Y than pinf (gap p1 − gap pinf < 0, t = 1..14)",
                  fmt_i(gap_diff, "psnr_y"), verdict(gap_diff, "<")))
    if "p1vp" in data:
        for c in COLS:
            h.append((f"H7: p1vp − p1 at K = 15 contains 0 on {HEAD[c]}", fmt_i(get("p1vp-p1", "k15", c), c),
                      verdict(get("p1vp-p1", "k15", c), "contains0")))
    say("| hypothesis | measured | verdict |")
    say("|---|---|---|")
    for name, meas, v in h:
        say(f"| {name} | {meas} | {v} |")
        js["verdicts"][name] = {"measured": meas, "verdict": v}
    say("")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(js, indent=1, default=float), encoding="utf-8")
    _figures(args.out, curves, fig3, arms, (*curve_at, args.final_step))
    print("\n".join(lines))


def _figures(out: Path, curves: dict, fig3: dict, arms: list[str], at: tuple[int, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, k in zip(axes, (1, 15)):
        for a in arms:
            if a in curves:
                ax.plot(at, curves[a][f"k{k}-psnr_y"], marker="o", label=LABEL[a])
        ax.set_title(f"validation PSNR-Y at K = {k}")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out.parent / (out.name + "-curves.png"), dpi=110)
    plt.close(fig)
    if fig3:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for a in arms:
            if a in fig3:
                t = list(range(1, len(fig3[a]["true"]) + 1))
                line, = ax.plot(t, fig3[a]["true"], label=f"{a}: from true x_t")
                ax.plot(t, fig3[a]["chain"], ls="--", color=line.get_color(), label=f"{a}: along the chain")
        ax.set_xlabel("trained index t (15 = the prior)")
        ax.set_ylabel("PSNR-Y of the x0 estimate")
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        fig.savefig(out.parent / (out.name + "-fig3.png"), dpi=110)
        plt.close(fig)


if __name__ == "__main__":
    main()
