"""The reproduction on ResShift, the default model's family (a model that ends above bicubic, unlike the small SR3
runs): E1-E4 rows from the paired DREAM experiment (docs/experiments/dream-resshift.md), placed beside the SR3
sections of the report.

Nothing here trains or measures by itself. With ``--resshift-train`` the experiment's own scripts run into the work
folder with a profile's sizes (``scripts/dream_experiment/train.sh`` then ``evaluate.py``; both resume and skip what
is done); otherwise an existing work folder is read (``--resshift-work /work/exp``). The evaluations
(WORK/eval/<arm>-s<seed>/<task>.json) are loaded and paired with ``scripts/dream_experiment/report.py``'s own
functions (``load``, ``arm_mean``, ``paired``, ``interval``, ``fmt_i``), summarised into one JSON (every number of
the rows, written beside the report as ``<doc stem>/resshift.json``) and rendered as Markdown blocks between
``<!-- resshift:KEY -->`` markers: a setting block before SR3's E1 and one block at the end of each of SR3's E1-E4
sections. The SR3 text is never changed: :func:`strip` of a spliced report gives it back byte for byte, and a
report whose SR3 JSONs are not at hand keeps its SR3 text as it is (:func:`render_into`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from dreamsr.files import atomic_write_text, load_json

from .common import now, without_home, write_json

__all__ = ["ROOT", "EXPERIMENT_DIR", "PLAN", "ResShiftProfile", "RESSHIFT_PROFILES", "ARM_ORDER", "KEYS",
           "experiment_report", "train_and_evaluate", "collect", "blocks", "strip", "splice", "summary_path",
           "render_into"]

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT_DIR = ROOT / "scripts" / "dream_experiment"
PLAN = ROOT / "docs" / "experiments" / "dream-resshift.md"
CARD = ROOT / "docs" / "models" / "dreamsr-x4-resshift.md"
ARM_ORDER = ("p0", "p1", "p1vp", "pinf")  # the SR3 tables' order: p = 0, 1, (1 with the VP rule), inf
PAIRS = (("p1", "pinf"), ("p0", "pinf"), ("p1", "p0"))
COLS = ("psnr_y", "ssim_y", "haarpsi", "hf")
KEYS = ("setting", "e1", "e2", "e3", "e4")
# each block goes just before the heading that follows its SR3 section
ANCHORS = {"setting": "## E1:", "e1": "## E2:", "e2": "## E3:", "e3": "## E4:", "e4": "## E5:"}
RENDER_COMMAND = "python scripts/reproduce --doc-only --resshift-work /work/exp --doc docs/reproduction.md"


@dataclass(frozen=True)
class ResShiftProfile:
    """Sizes of the experiment's runs: train.sh's STEPS and environment, evaluate.py's lists. ``full`` is the
    experiment exactly as planned (and train.sh's / evaluate.py's defaults); ``ci`` a tiny run for the tests."""

    name: str
    steps: int  # optimizer steps per run
    seeds: tuple[int, ...]  # training seeds (pairing)
    arms: tuple[str, ...]  # pinf, p1, p1vp, p0
    preset: str  # ResShift UNet preset
    patch: int  # HR crop (px)
    batch: int
    warmup: int  # lr warm-up steps
    save_every: int  # states kept for the curves
    ks: tuple[int, ...]  # K of the primary rows (E1, E3)
    secondary_ks: tuple[int, ...]  # K of the back-projection rows (not reported here)
    curve_at: tuple[int, ...]  # training steps of the curve states (E2), before the final one
    curve_ks: tuple[int, ...]  # K of the curves
    sample_seeds: int  # sampling seeds of the primary rows
    parallel: int = 2  # runs trained at a time

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RESSHIFT_PROFILES: dict[str, ResShiftProfile] = {
    "ci": ResShiftProfile(name="ci", steps=2, seeds=(1, 2), arms=("pinf", "p1", "p0"), preset="tiny", patch=32,
                          batch=2, warmup=0, save_every=1, ks=(1, 15), secondary_ks=(), curve_at=(1,),
                          curve_ks=(1, 15), sample_seeds=1),
    "full": ResShiftProfile(name="full", steps=3000, seeds=(1, 2, 3), arms=("pinf", "p1", "p0", "p1vp"),
                            preset="small", patch=64, batch=8, warmup=200, save_every=1000, ks=(1, 2, 4, 8, 15),
                            secondary_ks=(1, 15), curve_at=(1000, 2000), curve_ks=(1, 15), sample_seeds=4),
}


@functools.lru_cache(maxsize=1)
def experiment_report() -> ModuleType:
    """scripts/dream_experiment/report.py as a module (loaded by path: the folder is no package)."""
    spec = importlib.util.spec_from_file_location("dream_experiment_report", EXPERIMENT_DIR / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------- training
def train_and_evaluate(profile: ResShiftProfile, corpus: Path, work: Path, log: Callable[[str], None] = print) -> None:
    """Run the experiment's own train.sh and evaluate.py into ``work`` with ``profile``'s sizes (both skip what is
    done, so an interrupted invocation resumes). ``corpus`` needs train/ and val_crops/ (scripts/build_corpus.py)."""
    if not (corpus / "train").is_dir() or not (corpus / "val_crops").is_dir():
        raise SystemExit(f"{corpus} needs train/ and val_crops/ folders; build them with "
                         f"`python scripts/build_corpus.py {corpus}`")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": "1", "SEEDS": " ".join(map(str, profile.seeds)), "ARMS": " ".join(profile.arms),
           "PRESET": profile.preset, "PATCH": str(profile.patch), "BATCH": str(profile.batch),
           "WARMUP": str(profile.warmup), "SAVE_EVERY": str(profile.save_every)}
    log(f"resshift: training {len(profile.arms)} arms x {len(profile.seeds)} seeds x {profile.steps} steps "
        f"({profile.name}) into {work}")
    subprocess.run(["bash", str(EXPERIMENT_DIR / "train.sh"), str(corpus), str(work), str(profile.steps),
                    str(profile.parallel)], cwd=ROOT, env=env, check=True)
    missing = [f"{a}-s{s}" for a in profile.arms for s in profile.seeds if not (work / f"{a}-s{s}" / "DONE").exists()]
    if missing:
        raise SystemExit("resshift: training failed for " + ", ".join(missing) + f" (see {work}/<run>.log)")
    log("resshift: evaluating (scripts/dream_experiment/evaluate.py)")
    ints = lambda v: ",".join(map(str, v))  # noqa: E731
    subprocess.run([sys.executable, str(EXPERIMENT_DIR / "evaluate.py"), str(corpus), str(work),
                    "--ks", ints(profile.ks), "--secondary-ks", ints(profile.secondary_ks),
                    "--curve-at", ints(profile.curve_at), "--curve-ks", ints(profile.curve_ks),
                    "--sample-seeds", str(profile.sample_seeds)], cwd=ROOT, env=env, check=True)


# ---------------------------------------------------------------------------------------------- the numbers
def _clean(v: Any) -> Any:
    """NaN -> None, recursively (JSON without non-finite numbers)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def _bicubic(work: Path, corpus: Path | None, writable: bool) -> dict[str, float] | None:
    """Bicubic on the experiment's validation crops: report.py's cache in WORK/eval/bicubic.json, else computed
    with report.py's ``bicubic`` (cached in WORK only when ``writable``), else None."""
    cache = work / "eval" / "bicubic.json"
    if cache.is_file():
        return load_json(cache)
    if corpus is None or not (corpus / "val_crops").is_dir():
        return None
    rep = experiment_report()
    if writable:
        return rep.bicubic(corpus, work)
    with tempfile.TemporaryDirectory(prefix="resshift-bicubic-") as tmp:
        (Path(tmp) / "eval").mkdir()
        return rep.bicubic(corpus, Path(tmp))


def _metric_rows(rep: ModuleType, data: dict, arms: list[str], ks: tuple[int, ...], cols: tuple[str, ...]) -> list:
    rows = []
    for k in ks:
        for a in arms:
            vals = {c: rep.arm_mean(data, a, f"final-k{k}", c) for c in cols}
            rows.append({"arm": a, "k": k, "seeds": vals[cols[0]][1], "mean": {c: v for c, (v, _) in vals.items()}})
    return rows


def _diff_rows(rep: ModuleType, data: dict, ks: tuple[int, ...], cols: tuple[str, ...],
               pairs: tuple[tuple[str, str], ...] = PAIRS) -> list:
    rows = []
    for a, b in pairs:
        if a not in data or b not in data:
            continue
        for k in ks:
            ivs = {c: rep.paired(data, a, b, f"final-k{k}", c) for c in cols}
            rows.append({"a": a, "b": b, "k": k, "seeds": ivs[cols[0]]["n"], "interval": ivs})
    return rows


def _gaps(run: dict) -> list[float]:
    return [x - y for x, y in zip(run["psnr_y_true_xt"], run["psnr_y_chain"])]


def collect(work: Path, profile: ResShiftProfile, corpus: Path | None = None, writable: bool = False) -> dict:
    """Every number of the ResShift rows, from WORK/eval (report.py's ``load``, ``arm_mean``, ``paired`` and
    ``interval``): E1 (means and seed-paired differences at K = 15 and 1), E2 (PSNR-Y of the curve states and the
    final weights, sampling seed 0), E3 (PSNR-Y and HaarPSI at every K), E4 (Fig. 3's gap per t)."""
    rep = experiment_report()
    data = rep.load(work) if (work / "eval").is_dir() else {}
    arms = [a for a in ARM_ORDER if a in data]
    res: dict[str, Any] = {
        "source": {"work": str(work), "plan": "docs/experiments/dream-resshift.md", "collected": now(),
                   "scripts": ["scripts/dream_experiment/train.sh", "scripts/dream_experiment/evaluate.py"]},
        "profile": profile.to_dict(), "arms": arms,
        "seeds": {a: sorted(data[a]) for a in arms},
        "runs_planned": len(profile.arms) * len(profile.seeds),
        "bicubic": _bicubic(work, corpus, writable)}
    e1_ks = tuple(dict.fromkeys((max(profile.ks), min(profile.ks))))  # K = 15 and 1
    res["e1"] = {"ks": list(e1_ks), "rows": _metric_rows(rep, data, arms, e1_ks, COLS),
                 "differences": _diff_rows(rep, data, e1_ks, COLS)}
    steps = [*profile.curve_at, profile.steps]
    e2_rows, e2_diffs = [], []
    for k in profile.curve_ks:
        tasks = [(f"curve-{s}-k{k}", None) for s in profile.curve_at] + [(f"final-k{k}", 0)]
        for a in arms:
            cells = [rep.arm_mean(data, a, t, "psnr_y", i) for t, i in tasks]
            e2_rows.append({"arm": a, "k": k, "psnr_y": [v for v, _ in cells], "seeds": [n for _, n in cells]})
        if "p1" in data and "pinf" in data:
            e2_diffs.append({"a": "p1", "b": "pinf", "k": k,
                             "interval": [rep.paired(data, "p1", "pinf", t, "psnr_y", i) for t, i in tasks]})
    res["e2"] = {"steps": steps, "rows": e2_rows, "differences": e2_diffs}
    e3_cols = ("psnr_y", "haarpsi")
    e3_rows = []
    for c in e3_cols:
        for a in arms:
            cells = [rep.arm_mean(data, a, f"final-k{k}", c) for k in profile.ks]
            e3_rows.append({"arm": a, "metric": c, "values": [v for v, _ in cells], "seeds": [n for _, n in cells]})
    e3_diffs = [{"a": "p1", "b": "pinf", "metric": c,
                 "interval": [rep.paired(data, "p1", "pinf", f"final-k{k}", c) for k in profile.ks]}
                for c in e3_cols if "p1" in data and "pinf" in data]
    res["e3"] = {"ks": list(profile.ks), "rows": e3_rows, "differences": e3_diffs}
    diag = {a: {s: data[a][s]["diag"] for s in sorted(data[a]) if "diag" in data[a][s]} for a in arms}
    diag = {a: runs for a, runs in diag.items() if runs}
    e4: dict[str, Any] = {"t": [], "arms": {}, "differences": []}
    if diag:
        T = len(next(iter(next(iter(diag.values())).values()))["t"])
        e4["t"] = list(range(1, T + 1))
        for a, runs in diag.items():
            per_seed = [_gaps(r) for r in runs.values()]
            gap = [statistics.fmean(g[i] for g in per_seed) for i in range(T)]
            e4["arms"][a] = {"seeds": sorted(runs), "gap": gap, "mean_gap": statistics.fmean(gap[:-1]),
                             "true": [statistics.fmean(r["psnr_y_true_xt"][i] for r in runs.values())
                                      for i in range(T)],
                             "chain": [statistics.fmean(r["psnr_y_chain"][i] for r in runs.values())
                                       for i in range(T)]}
        for a, b in PAIRS:
            if a in diag and b in diag:
                common = sorted(set(diag[a]) & set(diag[b]))
                ga = {s: _gaps(diag[a][s]) for s in common}
                gb = {s: _gaps(diag[b][s]) for s in common}
                e4["differences"].append({
                    "a": a, "b": b, "per_t": [rep.interval([ga[s][i] - gb[s][i] for s in common]) for i in range(T)],
                    "mean": rep.interval([statistics.fmean(ga[s][:-1]) - statistics.fmean(gb[s][:-1])
                                          for s in common])})
    res["e4"] = e4
    return _clean(res)


# ---------------------------------------------------------------------------------------------- Markdown
def _num(v: float | None, col: str) -> str:
    return "-" if v is None else experiment_report().FMT[col].format(v)


def _iv(iv: dict, col: str) -> str:
    rep = experiment_report()
    return rep.fmt_i({**iv, "lo": math.nan if iv["lo"] is None else iv["lo"],
                      "hi": math.nan if iv["hi"] is None else iv["hi"]}, col)


def _seeds(ns: list[int]) -> str:
    lo, hi = min(ns), max(ns)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _link(doc: Path, target: Path = PLAN) -> str:
    try:
        return os.path.relpath(target, doc.resolve().parent)
    except ValueError:  # another drive
        return str(target)


def blocks(res: dict, doc: Path) -> dict[str, list[str]]:
    """The Markdown of the ResShift rows, one list of lines per KEYS entry (no markers)."""
    rep = experiment_report()
    label, head = rep.LABEL, rep.HEAD
    prof = res["profile"]
    link = _link(doc)
    card = _link(doc, CARD)
    exp = f"[the paired DREAM experiment]({link})"
    evaluated = sum(len(v) for v in res["seeds"].values())
    seeds = "; ".join(f"{a}: seed{'s' if len(res['seeds'][a]) != 1 else ''} "
                      f"{', '.join(map(str, res['seeds'][a]))}" for a in res["arms"]) or "none yet"
    out: dict[str, list[str]] = {}
    out["setting"] = [
        "### The ResShift rows (the default model's family)", "",
        f"Each of E1-E4 below ends with rows for **ResShift small** (shift v1, T = 15, x4 pixel-unshuffle space: "
        f"the family, process and space of the default model `dreamsr-x4-resshift`, which, trained longer and "
        f"sampled with back-projection and an ensemble, is above bicubic: [its card]({card})). **These rows come "
        f"from {exp}**, not from this script's SR3 runs: its "
        "own scripts trained and measured them (`scripts/dream_experiment/train.sh`, `evaluate.py`), and "
        "`scripts/reproduce` only reads the evaluations and pairs them with the experiment's `report.py`.",
        "",
        f"- runs: arms {', '.join(f'`{a}`' for a in prof['arms'])} (p = ∞, 1, 0 and p = 1 with the VP λ rule) × "
        f"training seeds {', '.join(map(str, prof['seeds']))}, {prof['steps']} steps from scratch each, "
        f"`{prof['preset']}` preset, {prof['patch']} px HR crops, batch {prof['batch']}; seed s gives every arm the "
        "same initial weights, crops, t and ε (the arms are paired by seed)",
        f"- evaluated so far: {evaluated} of the {res['runs_planned']} planned runs ({seeds}); every table gives the "
        "number of training seeds behind each number",
        "- measures (the experiment's, not the SR3 rows'): PSNR / SSIM on BT.601 Y with a 4 px border shaved, "
        "HaarPSI (RGB, higher is better), HF ratio (high-frequency energy of SR / HR: < 1 blur), on the 7 "
        "validation crops of 256 px (x4); K = ancestral steps of the 15-step shift chain, no back-projection or "
        f"ensemble, {prof['sample_seeds']} sampling seed{'s' if prof['sample_seeds'] != 1 else ''} per model "
        "averaged (E2: seed 0). Compare the arms within a family, not ResShift numbers with SR3 ones",
        "- means over training seeds; a difference a − b is taken per seed and given as its mean with a 95 % "
        "Student-t interval over the seeds, [low, high] (\"1 seed\": no interval yet). The experiment's verdicts "
        f"on its hypotheses are in {exp.replace('the paired DREAM experiment', 'its results')}",
        f"- every number: `{Path(doc.stem) / 'resshift.json'}` beside this report; re-render with "
        f"`{RENDER_COMMAND}`"]
    top = [r for r in res["e1"]["rows"] if r["k"] == max(res["e1"]["ks"]) and r["mean"]["psnr_y"] is not None]
    bic = (res.get("bicubic") or {}).get("psnr_y")
    if top and bic is not None:
        below = [r for r in top if r["mean"]["psnr_y"] < bic]
        best = max(top, key=lambda r: r["mean"]["psnr_y"])
        out["setting"].append(
            f"- against bicubic ({bic:.2f} dB PSNR-Y on these crops): after {prof['steps']} steps "
            + (f"{len(below)} of the {len(top)} arms evaluated are still below it at K = {best['k']} (best: "
               f"{label[best['arm']]}, {best['mean']['psnr_y']:.2f} dB), so these models too are compared short of "
               "convergence" if below else f"every arm evaluated is above it at K = {best['k']}"))

    e1 = res["e1"]
    L = ["### E1 on ResShift (from the paired experiment)", "",
         f"The p sweep at K = {' and K = '.join(map(str, e1['ks']))} ancestral steps; mean over training seeds.", "",
         "| p | K | seeds | " + " | ".join(head[c] for c in COLS) + " |", "|---|---:|---:|" + "---:|" * len(COLS)]
    if res.get("bicubic"):
        L.append("| bicubic | - | - | " + " | ".join(_num(res["bicubic"].get(c), c) for c in COLS) + " |")
    for r in e1["rows"]:
        L.append(f"| {label[r['arm']]} | {r['k']} | {r['seeds']} | "
                 + " | ".join(_num(r["mean"][c], c) for c in COLS) + " |")
    L += ["", "Seed-paired differences (mean [95 % interval]):", "",
          "| difference | K | seeds | " + " | ".join(head[c] for c in COLS) + " |",
          "|---|---:|---:|" + "---:|" * len(COLS)]
    for d in e1["differences"]:
        L.append(f"| {d['a']} − {d['b']} | {d['k']} | {d['seeds']} | "
                 + " | ".join(_iv(d["interval"][c], c) for c in COLS) + " |")
    out["e1"] = L

    e2 = res["e2"]
    steps = e2["steps"]
    L = ["### E2 on ResShift (from the paired experiment)", "",
         "PSNR-Y of the EMA weights at " + ", ".join(map(str, steps)) + " training steps (sampling seed 0; the last "
         "column is the final weights); mean over training seeds.", "",
         "| p | K | seeds | " + " | ".join(str(s) for s in steps) + " |", "|---|---:|---:|" + "---:|" * len(steps)]
    for r in e2["rows"]:
        L.append(f"| {label[r['arm']]} | {r['k']} | {_seeds(r['seeds'])} | "
                 + " | ".join(_num(v, "psnr_y") for v in r["psnr_y"]) + " |")
    for d in e2["differences"]:
        L.append(f"| {d['a']} − {d['b']} | {d['k']} | {_seeds([iv['n'] for iv in d['interval']])} | "
                 + " | ".join(_iv(iv, "psnr_y") for iv in d["interval"]) + " |")
    out["e2"] = L

    e3 = res["e3"]
    ks = e3["ks"]
    L = ["### E3 on ResShift (from the paired experiment)", "",
         "PSNR-Y and HaarPSI against K, the ancestral steps of the 15-step chain; mean over training seeds, and "
         "the seed-paired difference p1 − pinf.", "",
         "| p | metric | seeds | " + " | ".join(f"K = {k}" for k in ks) + " |", "|---|---|---:|" + "---:|" * len(ks)]
    for r in e3["rows"]:
        L.append(f"| {label[r['arm']]} | {head[r['metric']]} | {_seeds(r['seeds'])} | "
                 + " | ".join(_num(v, r["metric"]) for v in r["values"]) + " |")
    for d in e3["differences"]:
        L.append(f"| {d['a']} − {d['b']} | {head[d['metric']]} | {_seeds([iv['n'] for iv in d['interval']])} | "
                 + " | ".join(_iv(iv, d["metric"]) for iv in d["interval"]) + " |")
    out["e3"] = L

    e4 = res["e4"]
    L = ["### E4 on ResShift (from the paired experiment)", ""]
    if not e4["t"]:
        L.append("No run has its Fig. 3 diagnostic yet.")
    else:
        arms = list(e4["arms"])
        T = len(e4["t"])
        L += ["The paper's Fig. 3 on the shift chain: PSNR-Y of the x0 estimate from the true x_t (the kernel "
              "applied to the HR signal) minus the same along the 15-step sampling chain from the prior, per "
              f"trained index t (t = {T} is the prior, t = 1 the last step); a larger gap = more lost to the "
              "chain's own inputs. Mean over the crops and training seeds; the last rows are the seed-paired "
              f"differences of the gaps. \"mean\": over t = 1..{T - 1}.", "",
              "| t | " + " | ".join(f"{label[a]} ({len(e4['arms'][a]['seeds'])} seed"
                                    f"{'s' if len(e4['arms'][a]['seeds']) != 1 else ''})" for a in arms)
              + "".join(f" | {d['a']} − {d['b']}" for d in e4["differences"]) + " |",
              "|---:|" + "---:|" * (len(arms) + len(e4["differences"]))]
        for i in reversed(range(T)):
            L.append(f"| {e4['t'][i]} | " + " | ".join(f"{e4['arms'][a]['gap'][i]:+.3f}" for a in arms)
                     + "".join(f" | {_iv(d['per_t'][i], 'psnr_y')}" for d in e4["differences"]) + " |")
        L.append("| mean | " + " | ".join(f"{e4['arms'][a]['mean_gap']:+.3f}" for a in arms)
                 + "".join(f" | {_iv(d['mean'], 'psnr_y')}" for d in e4["differences"]) + " |")
    out["e4"] = L
    return out


_BLOCK = re.compile(r"<!-- resshift:(\w+) [^\n]*-->\n.*?<!-- /resshift:\1 -->\n\n", re.S)


def strip(md: str) -> str:
    """``md`` without its ResShift blocks (what :func:`splice` added), byte for byte."""
    return _BLOCK.sub("", md)


def splice(md: str, parts: dict[str, list[str]]) -> str:
    """``md`` (a report) with its ResShift blocks replaced by ``parts``, each just before the heading that follows
    its SR3 section (appended at the end when that heading is absent); the rest of ``md`` is left as it is."""
    text = strip(md)
    for key in KEYS:
        if key not in parts:
            continue
        chunk = (f"<!-- resshift:{key} (rendered by scripts/reproduce from the paired experiment's evaluations; "
                 f"do not edit) -->\n" + "\n".join(parts[key]) + f"\n<!-- /resshift:{key} -->\n\n")
        m = re.search(r"^" + re.escape(ANCHORS[key]), text, re.M)
        if m:
            text = text[:m.start()] + chunk + text[m.start():]
        else:
            text = (text if text.endswith("\n") or not text else text + "\n") + chunk
    return text


def summary_path(doc: Path) -> Path:
    """Where the ResShift numbers of ``doc`` are kept: ``<doc dir>/<doc stem>/resshift.json``."""
    return doc.parent / doc.stem / "resshift.json"


def render_into(doc: Path, res: dict) -> Path:
    """Splice the ResShift blocks into an existing report (its SR3 text kept as it is, for when its SR3 JSONs are
    not at hand), or start one with just a title; write ``res`` beside it. Returns ``doc``."""
    text = doc.read_text(encoding="utf-8") if doc.is_file() else "# Reproducing DREAM at small scale\n\n"
    write_json(summary_path(doc), res)
    atomic_write_text(doc, without_home(splice(text, blocks(res, doc))))
    return doc
