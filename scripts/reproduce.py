#!/usr/bin/env python3
"""Reproduce DREAM's claims at small scale with dreamsr itself (issue 9): experiments E1-E5.

    E1  Table 1 analogue: p = 0 (DRM), 1, 2 (DREAM), inf (standard), same preset/data/seed/steps; held-out x4
        PSNR/SSIM (RGB and Y conventions), consistency, LPIPS/FID where their weights exist.
    E2  Convergence (Fig. 1/7): validation PSNR during training for p = 1 and p = inf; the step at which p = 1
        first reaches p = inf's final PSNR, as a speed-up factor.
    E3  Sampling steps (Fig. 8): PSNR/SSIM against the number of DDPM and DDIM steps for p = 1 and p = inf.
    E4  Training-sampling discrepancy (Fig. 3): MSE of x0_hat against y0 at each t when y_t is built from the
        ground truth ("training", Alg. 1 line 3) and when it comes from the sampler ("sampling", Alg. 2 line 4).
    E5  Beyond the paper: p = 1 vs p = inf with the residual target (the model only adds detail to bicubic).

Everything goes through dreamsr's own code: ``dreamsr.train.train`` (runs, validation curves, exported
``model.safetensors``), ``dreamsr.evaluate.evaluate`` (every table), ``dreamsr.samplers.ddpm_sample`` with its
per-step callback and ``dreamsr.diffusion.Schedule`` (E4). The script writes, under ``--out``::

    runs/<target>_p<p>/          training run folders (resumable: train(resume="auto"))
    evals/<experiment>/<name>/   evaluate() reports; a finished one (same weights sha256, same settings) is skipped
    data/eval_crops/             the held-out HR crops every evaluation uses (written once)
    e1_p_sweep.json ... e5_residual.json, run_info.json    results, one JSON per experiment
    e1_p_sweep.png ... e5_residual.png                      figures (skipped with a note without matplotlib)
    reproduction.md (or --doc)   the report, generated from the JSON files only

Compute (the experiments are six training runs plus evaluations):

    profile  UNet (params)   runs x steps (batch, crop)   evals                      2-core CPU     one H100
    ci       tiny (~10 k)    6 x 24 (2, 32 px)            2 crops, 2-4 steps         ~15-40 s       -
    smoke    small (2.6 M)   6 x 100 (4, 32 px)           4 crops, <= 50 steps       ~10-30 min     -
    full     small (2.6 M)   6 x 4000 (8, 64 px)          28 crops x 100 DDPM steps,  2 h 33 min    ~20-30 min
                                                          E3 4 crops x 1385 steps x 4, (measured,
                                                          E4 8 crops x 1000 steps x 4  bf16)

The full profile's CPU time was measured on 2026-11-26 on a 2-core Xeon with AMX-BF16, ``--precision bf16``:
two ``--train-only`` processes with ``--threads 1`` (0.4-0.6 s per batch-8 step each) trained the six runs in
2 h 01 min, then two ``--only`` processes (table,discrepancy and steps) evaluated in 32 min; fp32 steps are about
twice as slow there. The H100 figure assumes kernel-launch-bound steps of ~20 ms and forwards of ~4 ms and has
not been measured. Nothing else may run on the CPU meanwhile: on an oversubscribed machine torch's threads slow
down by an order of magnitude (use ``--threads 1`` per process when sharing).

Usage::

    python scripts/reproduce.py --profile full --out runs/reproduce-full --device cuda --doc docs/reproduction.md
    python scripts/reproduce.py --profile smoke --out runs/reproduce-smoke --threads 1 --doc docs/reproduction.md
    # the full profile on a 2-core CPU, as it was run for docs/reproduction.md (each line a background process):
    python scripts/reproduce.py --profile full --out OUT --precision bf16 --workers 0 --threads 1 \
        --train-only image_p1,image_p0,residual_pinf          # and, side by side:
    python scripts/reproduce.py ... --train-only image_pinf,image_p2,residual_p1
    python scripts/reproduce.py ... --only table,discrepancy  # and, side by side:  ... --only steps
    python scripts/reproduce.py --profile full --out OUT --precision bf16 --doc docs/reproduction.md
    python scripts/reproduce.py --profile ci --out /tmp/repro-ci --data-dir /path/with/train+val
    python scripts/reproduce.py --out runs/reproduce-full --doc-only --doc docs/reproduction.md   # re-render

An interrupted invocation is resumed by running the same command again.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from dreamsr.weights import sha256_file

__all__ = ["Profile", "PROFILES", "RunSpec", "RUNS", "convergence_speedup", "up_to_best", "steps_to_match", "paired_difference",
           "read_val_curve", "train_seconds", "discrepancy", "e4_train_noise", "prepare_eval_crops",
           "write_markdown", "reproduce", "main"]

INF = math.inf


# ---------------------------------------------------------------------------------------------- profiles
@dataclass(frozen=True)
class Profile:
    """Sizes of one reproduction: training runs, validation, evaluations. Stored in every JSON."""

    name: str
    preset: str  # UNet preset of every run
    patch: int  # HR training crop (px)
    batch_size: int  # training batch
    steps: int  # optimizer steps per run
    lr: float  # Adam learning rate (constant after warm-up)
    lr_warmup: int  # linear warm-up steps
    ema_decay: float  # EMA decay (with the loop's warm-up), the exported and validated weights
    save_every: int  # training-state checkpoint interval (resume granularity)
    val_every: int  # validation interval: the E2 convergence curve's resolution
    val_count: int  # held-out images in each validation
    val_crop: int  # validation centre crop (px)
    val_steps: int  # DDIM steps per validation image
    workers: int  # data-loader processes
    eval_images: int  # held-out HR crops evaluated in E1/E5
    eval_crop: int  # side of those crops (px)
    e1_sampler: str  # sampler of the E1/E5 tables
    e1_steps: int  # its steps
    e3_images: int  # crops (the first of the eval crops) used for E3
    e3_steps: tuple[int, ...]  # sampler steps swept in E3
    e3_samplers: tuple[str, ...]  # samplers swept in E3
    e4_images: int  # crops used for E4 (mean/std over these)
    e4_crop: int  # their side (px)
    e4_steps: int  # respaced DDPM steps of the E4 chain (T = 2000 trained steps)
    seed: int = 0  # training seed of every run (same data order, initial weights and noise for all p)
    scale: int = 4  # x4 throughout

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["e3_steps"] = list(self.e3_steps)
        d["e3_samplers"] = list(self.e3_samplers)
        return d


PROFILES: dict[str, Profile] = {
    "ci": Profile(name="ci", preset="tiny", patch=32, batch_size=2, steps=24, lr=1e-3, lr_warmup=0, ema_decay=0.9,
                  save_every=12, val_every=12, val_count=1, val_crop=32, val_steps=2, workers=0,
                  eval_images=2, eval_crop=32, e1_sampler="ddim", e1_steps=2, e3_images=1, e3_steps=(2, 4),
                  e3_samplers=("ddpm", "ddim"), e4_images=2, e4_crop=16, e4_steps=4),
    "smoke": Profile(name="smoke", preset="small", patch=32, batch_size=4, steps=100, lr=2e-4, lr_warmup=0,
                     ema_decay=0.999, save_every=50, val_every=25, val_count=2, val_crop=64, val_steps=5, workers=0,
                     eval_images=4, eval_crop=64, e1_sampler="ddpm", e1_steps=20, e3_images=2,
                     e3_steps=(5, 10, 20, 50), e3_samplers=("ddpm", "ddim"), e4_images=4, e4_crop=32, e4_steps=50),
    "full": Profile(name="full", preset="small", patch=64, batch_size=8, steps=4000, lr=2e-4, lr_warmup=100,
                    ema_decay=0.999, save_every=500, val_every=250, val_count=7, val_crop=128, val_steps=20,
                    workers=1, eval_images=28, eval_crop=128, e1_sampler="ddpm", e1_steps=100, e3_images=4,
                    e3_steps=(5, 10, 20, 50, 100, 200, 1000), e3_samplers=("ddpm", "ddim"), e4_images=8,
                    e4_crop=64, e4_steps=1000),
}

# Estimated cost of the full profile (see the module docstring for how it was derived); shown in the report.
FULL_COST = {"cpu": "2 h 33 min measured on an idle 2-core AMX-capable Xeon with `--precision bf16`, as two "
                    "`--threads 1` processes side by side (training 2 h 01 min, evaluations 32 min; 2026-11-26); "
                    "about twice that in fp32",
             "h100": "about 20-30 minutes on one H100 run after run (estimate); side by side on one H200 with "
                     "four other jobs the six runs took about 7.5 minutes to reach 3760-3960 of their 4000 steps "
                     "(0.10 s per step each; measured 2026-11-26), evaluations not timed"}


@dataclass(frozen=True)
class RunSpec:
    """One training run: the DREAM exponent and the diffused target."""

    p: float
    target: str  # "image" (the paper) or "residual"

    @property
    def p_label(self) -> str:
        return "inf" if math.isinf(self.p) else f"{self.p:g}"

    @property
    def name(self) -> str:
        return f"{self.target}_p{self.p_label}"

    @property
    def title(self) -> str:
        kind = {0.0: "DRM", INF: "standard"}.get(self.p, "DREAM")
        return f"{'∞' if math.isinf(self.p) else self.p_label} ({kind})"


EVAL_PARTS = ("table", "steps", "discrepancy")  # reproduce(only=...): E1/E5 tables, E3, E4
E1_RUNS = tuple(RunSpec(p, "image") for p in (0.0, 1.0, 2.0, INF))
E5_RUNS = (RunSpec(1.0, "residual"), RunSpec(INF, "residual"))
RUNS = E1_RUNS + E5_RUNS
P1, PINF = RunSpec(1.0, "image"), RunSpec(INF, "image")
R1, RINF = E5_RUNS

# Quoted from the paper (DIV2K x4, SR3 baseline column of Table 1; Sec. 4.3): the reference the text compares to.
PAPER = {
    "table1_div2k_sr3": {"0": (28.67, 0.81), "1": (28.10, 0.79), "2": (28.06, 0.79), "inf": (27.02, 0.76)},
    "train_speedup": "2-3x (Sec. 1, 4.3: PSNR 28.07 at 470k vs the baseline's 27.02 at 980k)",
    "sampling_speedup": "10-20x (Sec. 4.3, Fig. 8: 100 DREAM steps beat 2000 standard steps in SSIM)",
}
METRIC_COLUMNS = ("psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y", "consistency", "lpips", "fid")
DIGITS = {"psnr": 2, "ssim": 4, "consistency": 3, "lpips": 4, "fid": 2}


def _digits(column: str) -> int:
    return DIGITS[column.split("_")[0]]


# ---------------------------------------------------------------------------------------------- small helpers
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, data: Any) -> None:
    """Atomic JSON write; non-finite floats become the strings "inf"/"nan"."""

    def clean(o: Any) -> Any:
        if isinstance(o, float) and not math.isfinite(o):
            return "nan" if math.isnan(o) else ("inf" if o > 0 else "-inf")
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, Path):
            return str(o)
        return o

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(clean(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))



def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    vals = [float(v) for v in values]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def hardware() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu or "unknown", "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
                            "python": platform.python_version(), "torch": torch.__version__,
                            "platform": platform.platform(), "gpu": None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        from dreamsr import __version__

        info["dreamsr"] = __version__
    except ImportError:  # pragma: no cover
        info["dreamsr"] = "?"
    return info


# ---------------------------------------------------------------------------------------------- pure analysis
def read_val_curve(metrics_jsonl: str | os.PathLike, key: str = "psnr") -> list[tuple[int, float]]:
    """Validation curve [(step, value)] from a run's metrics.jsonl, sorted by step.

    A step validated twice (a run resumed from a checkpoint older than its last validation repeats it, exactly)
    keeps its last record. ``key``: "psnr" (Y, crop = scale), "psnr_rgb", "ssim" (Y).
    """
    by_step: dict[int, float] = {}
    with open(metrics_jsonl, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            if rec.get("event") == "val" and key in rec:
                by_step[int(rec["step"])] = float(rec[key])
    return sorted(by_step.items())


def train_seconds(metrics_jsonl: str | os.PathLike) -> float:
    """Training wall time of a run, summed over its sessions (each "resume" event starts a new ``elapsed``)."""
    total, last = 0.0, 0.0
    with open(metrics_jsonl, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            if rec.get("event") == "resume":
                total, last = total + last, 0.0
            elif "elapsed" in rec:
                last = float(rec["elapsed"])
    return total + last


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


def paired_difference(a: dict[str, float], b: dict[str, float]) -> dict[str, Any]:
    """Per-image paired difference a - b over the images both have: mean, standard error, and whether
    |mean| exceeds two standard errors (``significant``; None with fewer than 2 images)."""
    keys = sorted(set(a) & set(b))
    d = [a[k] - b[k] for k in keys if math.isfinite(a[k]) and math.isfinite(b[k])]
    if not d:
        return {"mean": None, "se": None, "n": 0, "significant": None}
    mean = statistics.fmean(d)
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else None
    return {"mean": mean, "se": se, "n": len(d), "significant": None if se is None else abs(mean) > 2 * se}


def _check(claim: str, holds: bool | None, detail: str, paper: str) -> dict[str, Any]:
    """One paper claim tested on our numbers: holds True / False / None (not measurable here)."""
    return {"claim": claim, "holds": holds, "detail": detail, "paper": paper}


# ---------------------------------------------------------------------------------------------- data
def _crop_positions(h: int, w: int, crop: int) -> list[tuple[int, int]]:
    """Top-left corners of the non-overlapping crop x crop cells of an h x w image, nearest the centre first."""
    rows, cols = h // crop, w // crop
    oy, ox = (h - rows * crop) // 2, (w - cols * crop) // 2
    cells = [(oy + r * crop, ox + c * crop) for r in range(rows) for c in range(cols)]
    cy, cx = (h - crop) / 2, (w - crop) / 2
    return sorted(cells, key=lambda t: ((t[0] - cy) ** 2 + (t[1] - cx) ** 2, t))


def held_out_crops(val_dir: Path, count: int, crop: int) -> list[tuple[str, torch.Tensor]]:
    """``count`` HR crops [3, crop, crop] in [0, 1] of the held-out photos, taken round-robin over the photos
    (each photo's centre crop first, then its cells nearest the centre), named ``NNN_<photo>_<y>_<x>``."""
    from dreamsr.data import find_images
    from dreamsr.images import load_rgb

    files = find_images(val_dir)
    if not files:
        raise SystemExit(f"no held-out photos in {val_dir}; build the corpus with scripts/build_corpus.py")
    photos = [(f.stem, load_rgb(f)) for f in files]
    queues = [[(name, img, pos) for pos in _crop_positions(img.shape[1], img.shape[2], crop)] for name, img in photos]
    out: list[tuple[str, torch.Tensor]] = []
    depth = 0
    while len(out) < count and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(out) < count:
                name, img, (y, x) = q[depth]
                out.append((f"{len(out):03d}_{name}_{y}_{x}", img[:, y:y + crop, x:x + crop].contiguous()))
        depth += 1
    if len(out) < count:
        raise SystemExit(f"{val_dir} yields only {len(out)} crops of {crop} px, {count} asked for")
    return out


def prepare_eval_crops(val_dir: Path, dest: Path, count: int, crop: int) -> Path:
    """Write the held-out HR crops as PNG files into ``dest`` (once; a manifest says what is there)."""
    from dreamsr.images import save_image

    manifest = {"val_dir": str(Path(val_dir).resolve()), "count": count, "crop": crop}
    mpath = dest / "manifest.json"
    if mpath.is_file() and _read_json(mpath).get("params") == manifest:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    names = []
    for name, img in held_out_crops(val_dir, count, crop):
        save_image(dest / f"{name}.png", img)
        names.append(name)
    _write_json(mpath, {"params": manifest, "files": names})
    return dest


# ---------------------------------------------------------------------------------------------- training
def train_config(spec: RunSpec, prof: Profile, run_dir: Path, data: Path, device: str, precision: str,
                 workers: int | None) -> Any:
    """The TrainConfig of one run: everything but p and the target is shared by all runs."""
    from dreamsr.train import TrainConfig

    return TrainConfig(
        dataset="folder", data_dir=str(data / "train"), val_dir=str(data / "val"), scale=prof.scale,
        patch=prof.patch, preset=prof.preset, target=spec.target, p=spec.p, steps=prof.steps,
        batch_size=prof.batch_size, lr=prof.lr, lr_warmup=prof.lr_warmup, ema_decay=prof.ema_decay, seed=prof.seed,
        device=device, precision=precision, run_dir=str(run_dir), save_every=prof.save_every, keep=2,
        log_every=max(1, min(10, prof.val_every)), val_every=prof.val_every, val_count=prof.val_count,
        val_crop=prof.val_crop, val_steps=prof.val_steps, workers=prof.workers if workers is None else workers,
        cache_mb=1024, resume="auto")


def cli_command(cfg: Any) -> str:
    """The ``dreamsr train`` command line equivalent to ``cfg`` (options that differ from the defaults)."""
    from dreamsr.train import TrainConfig

    default = TrainConfig()
    parts = ["dreamsr train"]
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if v == getattr(default, f.name) or isinstance(v, bool) or f.name in ("resume",):
            continue
        parts.append(f"--{f.name.replace('_', '-')} {f'{v:g}' if isinstance(v, float) else v}")
    parts.append("--resume auto")
    return " ".join(parts)


def _run_finished(run_dir: Path, steps: int) -> bool:
    from dreamsr.checkpoint import read_info
    from dreamsr.train import latest_checkpoint

    model = run_dir / "model.safetensors"
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None and int(ckpt.name[5:13]) > steps:
        raise SystemExit(f"{run_dir} was trained to {int(ckpt.name[5:13])} steps, more than the {steps} asked for; "
                         "pass --steps to match it or use another --out")
    if not model.is_file() or ckpt is None or int(ckpt.name[5:13]) < steps:
        return False
    return int(read_info(model).training.get("steps", -1)) == steps


def train_run(spec: RunSpec, prof: Profile, out: Path, data: Path, device: str, precision: str,
              workers: int | None, log: Callable[[str], None]) -> dict[str, Any]:
    """Train (or resume, or skip when finished) one run; returns its record for the JSONs."""
    from dreamsr.train import train

    run_dir = out / "runs" / spec.name
    cfg = train_config(spec, prof, run_dir, data, device, precision, workers)
    if _run_finished(run_dir, prof.steps):
        log(f"train {spec.name}: finished earlier, skipped")
    else:
        log(f"train {spec.name}: p={spec.p_label} target={spec.target} {prof.steps} steps")
        last = [time.perf_counter()]

        def cb(ev: Any) -> None:
            if ev.kind == "val":
                log(f"  {spec.name} step {ev.step}: val PSNR(Y) {ev.data['psnr']:.2f} dB "
                    f"(bicubic {ev.data['bicubic_psnr']:.2f})")
            elif ev.kind == "step" and time.perf_counter() - last[0] > 60:
                last[0] = time.perf_counter()
                log(f"  {spec.name} step {ev.step}/{ev.total_steps}: loss {ev.data['loss']:.4f}, "
                    f"{ev.data['step_time']:.2f} s/step")

        train(cfg, cb)
    metrics = run_dir / "metrics.jsonl"
    return {"name": spec.name, "p": spec.p_label, "target": spec.target, "run_dir": str(run_dir),
            "weights": str(run_dir / "model.safetensors"), "train_seconds": train_seconds(metrics),
            "command": cli_command(cfg)}


# ---------------------------------------------------------------------------------------------- evaluation
def run_eval(name: str, out_dir: Path, *, weights: Path | None, crops: Path, images: int, steps: int,
             sampler: str, metrics: tuple[str, ...], device: str, precision: str, metric_weights: str | None,
             grids: int, log: Callable[[str], None]) -> dict[str, Any]:
    """evaluate() one model (or bicubic when ``weights`` is None) on the held-out crops, unless the same
    evaluation of the same weights (sha256) finished before. Returns the summary plus per-image values."""
    from dreamsr.evaluate import EvalConfig, evaluate, finished_summary

    cfg = EvalConfig(set="folder", data_dir=str(crops), limit=images, model="bicubic" if weights is None else name,
                     weights=None if weights is None else str(weights), metrics=metrics, convention="both",
                     steps=steps, sampler=sampler, seed=0, samples=1, tile=0, overlap=0, merge="end", batch=1,
                     device=device, precision=precision, grids=grids, metric_weights=metric_weights,
                     command=f"reproduce.py eval {name}")
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


# ---------------------------------------------------------------------------------------------- E4
def e4_train_noise(seed: int, k: int, index: int, shape: Sequence[int]) -> torch.Tensor:
    """The eps of the "training" y_t of image ``index`` at respaced step ``k`` (its own generator)."""
    from dreamsr.data import mix_seed

    g = torch.Generator().manual_seed(mix_seed(seed, 41, k, index))
    return torch.randn(tuple(shape), generator=g)


def e4_sample_generators(seed: int, n: int) -> list[torch.Generator]:
    """One generator per image for the "sampling" chain (noise independent of how many images share a batch)."""
    from dreamsr.data import mix_seed

    return [torch.Generator().manual_seed(mix_seed(seed, 42, i)) for i in range(n)]


def _image_mse(y0_hat: torch.Tensor, hr_m: torch.Tensor, x0: torch.Tensor, diffusion: Any) -> torch.Tensor:
    """Per-image MSE [N] between the HR image implied by y0_hat (target space) and the HR, both in [0, 1]."""
    img = diffusion.from_target(y0_hat.float(), x0)
    return ((img - hr_m) / 2).pow(2).flatten(1).mean(1).cpu().double()


@torch.no_grad()
def discrepancy(weights: str | os.PathLike, images: Sequence[torch.Tensor], *, steps: int, seed: int = 0,
                device: str = "cpu", precision: str = "auto") -> dict[str, Any]:
    """E4 (paper Sec. 3.2, Fig. 3): MSE of x0_hat against y0 at every step t of a respaced DDPM chain.

    ``images``: HR crops [3, H, W] in [0, 1]; their LR is the antialiased bicubic x4 downsample rounded to 8 bits
    and the condition x0 its bicubic upsample, as in evaluation. "sampling": x0_hat of
    :func:`dreamsr.samplers.ddpm_sample`'s own per-step callback (y_t from the previous sampler step, Alg. 2);
    "training": x0_hat = Eq. (8) applied to y_t = q_sample(y0, gamma_t, eps) (Alg. 1 line 3) with fresh eps.
    Both x0_hat are clipped to [-1, 1] as the sampler clips, and measured as images in [0, 1].
    Returns per t (ascending): mean and std over images of both MSEs, and summaries of the gap.
    """
    from dreamsr.checkpoint import load_checkpoint
    from dreamsr.diffusion import Schedule
    from dreamsr.images import downsample, to_model, upsample
    from dreamsr.runtime import autocast, resolve_device, resolve_precision
    from dreamsr.samplers import ddpm_sample, randn_like

    t0 = time.perf_counter()
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    model, info = load_checkpoint(weights, device=dev)
    schedule = Schedule(info.diffusion)
    diff = info.diffusion
    s = info.scale
    hr = torch.stack(list(images)).to(dev)  # [N, 3, H, W] in [0, 1]
    lr = downsample(hr, s).clamp(0, 1).mul(255).round().div(255)
    x0 = upsample(to_model(lr), s)  # the SR3 condition, as the pipeline builds it
    hr_m = to_model(hr)
    y0 = diff.to_target(hr_m, x0)
    n = hr.shape[0]

    def eps_fn(y_t: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        with autocast(dev, prec):
            return model(y_t, x0, gamma).float()

    sched = schedule.respace(steps)
    K = len(sched)
    sampling = torch.zeros(K, n, dtype=torch.float64)

    def on_step(i: int, total: int, y_t: torch.Tensor, y0_hat: torch.Tensor) -> None:
        sampling[total - 1 - i] = _image_mse(y0_hat, hr_m, x0, diff)  # step i works at respaced level K-1-i

    gens = e4_sample_generators(seed, n)
    noise = randn_like(y0, gens).to(dev)
    ddpm_sample(eps_fn, noise, schedule, steps, generator=gens, clip=True, callback=on_step)

    training = torch.zeros(K, n, dtype=torch.float64)
    for k in range(K):
        gamma = torch.full((n,), float(sched.alpha_bar[k]) ** 0.5, dtype=torch.float32, device=dev)
        eps = torch.stack([e4_train_noise(seed, k, i, y0.shape[1:]) for i in range(n)]).to(dev)
        y_t = Schedule.q_sample(y0, gamma, eps)  # Alg. 1 line 3
        y0_hat = Schedule.predict_y0(y_t, eps_fn(y_t, gamma), gamma).clamp(-1, 1)  # Eq. (8)
        training[k] = _image_mse(y0_hat, hr_m, x0, diff)

    def stats(m: torch.Tensor) -> tuple[list[float], list[float]]:
        mean = m.mean(1)
        std = m.std(1, unbiased=True) if n > 1 else torch.zeros(K, dtype=torch.float64)
        return mean.tolist(), std.tolist()

    tr_mean, tr_std = stats(training)
    sa_mean, sa_std = stats(sampling)
    gap = [a - b for a, b in zip(sa_mean, tr_mean)]
    return {"t": sched.timesteps.tolist(), "train_mean": tr_mean, "train_std": tr_std, "sample_mean": sa_mean,
            "sample_std": sa_std, "images": n, "steps": K,
            "summary": {"train_mean_over_t": statistics.fmean(tr_mean), "sample_mean_over_t": statistics.fmean(sa_mean),
                        "gap_mean_over_t": statistics.fmean(gap),
                        "gap_share": statistics.fmean(gap) / statistics.fmean(sa_mean),
                        "frac_t_sample_above_train": sum(g > 0 for g in gap) / K,
                        "train_final": tr_mean[0], "sample_final": sa_mean[0]},
            "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------- figures
def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


NO_PLOT = "figure skipped: matplotlib is not installed (pip install 'dreamsr[plot]')"


def _save(fig: Any, plt: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_e1(e1: dict, path: Path) -> str | None:
    plt = _pyplot()
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
    return _save(fig, plt, path)


def plot_e2(e2: dict, path: Path, title: str | None = None) -> str | None:
    title = title or f"E2: convergence (validation {e2['key']})"
    plt = _pyplot()
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
    return _save(fig, plt, path)


def plot_e3(e3: dict, path: Path) -> str | None:
    plt = _pyplot()
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
    return _save(fig, plt, path)


def plot_e4(e4: dict, path: Path) -> str | None:
    plt = _pyplot()
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
    return _save(fig, plt, path)


def plot_e5(e5: dict, path: Path) -> str | None:
    plt = _pyplot()
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
    return _save(fig, plt, path)


# ---------------------------------------------------------------------------------------------- experiments
def _yn(b: bool | None) -> str:
    return "not measured" if b is None else ("yes" if b else "no")


def _fmt(v: Any, digits: int) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}"


def _row(label: str, run: str, res: dict, extra: dict | None = None) -> dict[str, Any]:
    return {"label": label, "run": run, "metrics": res["metrics"], "per_image": res["per_image"],
            "eval_seconds": res["seconds"], "eval_dir": res["dir"], **(extra or {})}


def experiment_e1(prof: Profile, trained: dict[str, dict], evals: dict[str, dict], bicubic: dict) -> dict:
    """E1 JSON: the p sweep table, paired differences and the paper's claims checked."""
    rows = [_row(spec.title, spec.name, evals[spec.name], {"p": spec.p_label,
                                                           "train_seconds": trained[spec.name]["train_seconds"],
                                                           "command": trained[spec.name]["command"]})
            for spec in E1_RUNS]
    rows.append(_row("bicubic", "bicubic", bicubic, {"p": None, "train_seconds": None, "command": None}))
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
        _check("p = 0 (DRM) has the highest PSNR of the four p", best == "0",
               f"highest: p = {best} ({psnr[best]:.2f} dB)", "yes (all four columns of Table 1)"),
        _check("p = ∞ (standard) has the lowest PSNR of the four p", worst == "inf",
               f"lowest: p = {worst} ({psnr[worst]:.2f} dB)", "yes (all four columns)"),
        _check("PSNR falls as p grows (p=0 ≥ 1 ≥ 2 ≥ ∞)", mono,
               " ≥ ".join(f"{psnr[p]:.2f}" for p in order) if mono else
               ", ".join(f"p={p}: {psnr[p]:.2f}" for p in order), "yes for p = 0, 1, 2, ∞ on DIV2K/SR3"),
        _check("p = 1 beats p = ∞ in PSNR", psnr["1"] > psnr["inf"],
               f"{psnr['1']:.2f} vs {psnr['inf']:.2f} dB", "yes (28.10 vs 27.02 dB on DIV2K/SR3)"),
        _check("… by more than two standard errors of the paired per-crop difference", d1["significant"],
               f"difference {_fmt(d1['mean'], 3)} ± {_fmt(d1['se'], 3)} dB (SE, {d1['n']} crops)", "not reported"),
        _check("p = 1 beats p = ∞ in SSIM", ssim["1"] > ssim["inf"], f"{ssim['1']:.4f} vs {ssim['inf']:.4f}",
               "yes (0.79 vs 0.76)"),
    ]
    for metric, paper in (("lpips", "yes (0.121 vs 0.189 on DIV2K/SR3)"), ("fid", "yes (14.32 vs 16.72)")):
        have = all(metric in evals[s.name]["metrics"] for s in (P1, RunSpec(0.0, "image")))
        v1 = evals[P1.name]["metrics"].get(metric, {}).get("mean") if have else None
        v0 = evals["image_p0"]["metrics"].get(metric, {}).get("mean") if have else None
        holds = None if v1 is None or v0 is None else v1 < v0
        checks.append(_check(f"p = 1 has better (lower) {metric.upper()} than p = 0 (the perception side of the "
                             f"trade-off)", holds,
                             f"{_fmt(v1, DIGITS[metric])} vs {_fmt(v0, DIGITS[metric])}" if holds is not None
                             else f"{metric.upper()} weights unavailable (see above)", paper))
    return {"experiment": "E1", "title": "Table 1 analogue: p sweep", "profile": prof.to_dict(),
            "eval": {"sampler": prof.e1_sampler, "steps": prof.e1_steps, "images": prof.eval_images,
                     "crop": prof.eval_crop, "seed": 0},
            "rows": rows, "paired": paired, "unavailable": unavailable, "checks": checks,
            "paper": PAPER["table1_div2k_sr3"]}


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
        _check(f"p = 1 reaches p = ∞'s final validation PSNR within the budget", reached,
               f"p = ∞ final {_fmt(sp['ref_final'], 2)} dB at step {sp['ref_final_step']}; p = 1 "
               + (f"reaches it at step {sp['reach_step']}" if reached else "never reaches it"),
               "yes (Fig. 1, 7)"),
        _check("training speed-up of p = 1 over p = ∞ is at least 2×", None if not reached else sp["speedup"] >= 2,
               f"speed-up ×{_fmt(sp['speedup'], 2)}" if reached else "no speed-up: never reached",
               PAPER["train_speedup"]),
        _check("speed-up of at least 2× against p = ∞'s best validation PSNR (a curve may peak and fall)",
               None if best["image"]["reach_step"] is None else best["image"]["speedup"] >= 2,
               f"p = ∞ best {_fmt(best['image']['ref_final'], 2)} dB at step {best['image']['ref_final_step']}; "
               + (f"p = 1 reaches it at step {best['image']['reach_step']} (×{_fmt(best['image']['speedup'], 2)})"
                  if best["image"]["reach_step"] else "p = 1 never reaches it"), PAPER["train_speedup"]),
        _check("same with validation PSNR on Y (BasicSR convention)", sp_y["reach_step"] is not None,
               f"speed-up ×{_fmt(sp_y['speedup'], 2)}" if sp_y["reach_step"] else "never reached", "-"),
    ]
    return {"experiment": "E2", "title": "convergence", "profile": prof.to_dict(), "key": key,
            "runs": [fast.name, ref.name], "curves": curves, "curves_y": curves_y, "speedup": sp,
            "speedup_y": sp_y, "speedup_best": best["image"], "residual": residual,
            "bicubic_psnr_y": bicubic_y[-1][1] if bicubic_y else None, "shapes": shapes, "val": {"every": prof.val_every, "count": prof.val_count, "crop": prof.val_crop,
                                       "steps": prof.val_steps, "sampler": "ddim"},
            "checks": checks}


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
            checks.append(_check(
                f"{sampler.upper()}: p = 1 reaches p = ∞'s {label} at {m['ref_steps']} steps with at most a tenth of "
                f"the steps", None if m["ref_steps"] is None else (m["match_steps"] is not None
                                                                   and m["match_steps"] * 10 <= m["ref_steps"]),
                (f"p = 1 needs {m['match_steps']} steps (×{m['speedup']:.2f} fewer)" if m["match_steps"]
                 else "p = 1 never reaches it"), PAPER["sampling_speedup"]))
        all_better = all(c1["values"][str(s)]["psnr_rgb"] > ci["values"][str(s)]["psnr_rgb"] for s in prof.e3_steps)
        checks.append(_check(f"{sampler.upper()}: p = 1 has higher PSNR than p = ∞ at every step count", all_better,
                             ", ".join(f"{s}: {c1['values'][str(s)]['psnr_rgb']:.2f}/"
                                       f"{ci['values'][str(s)]['psnr_rgb']:.2f}" for s in prof.e3_steps),
                             "yes (Fig. 8, 14)"))
        lo, hi = str(min(prof.e3_steps)), str(max(prof.e3_steps))
        confound = ci["values"][lo]["psnr_rgb"] > ci["values"][hi]["psnr_rgb"]
        checks.append(_check(f"{sampler.upper()}: p = ∞ has higher PSNR at {lo} steps than at {hi} (fewer steps "
                             f"give smoother images, so a PSNR gain at few steps is no quality gain)", confound,
                             f"{ci['values'][lo]['psnr_rgb']:.2f} vs {ci['values'][hi]['psnr_rgb']:.2f} dB",
                             "-"))
    return {"experiment": "E3", "title": "sampling steps", "profile": prof.to_dict(),
            "eval": {"images": prof.e3_images, "crop": prof.eval_crop, "steps": list(prof.e3_steps),
                     "samplers": list(prof.e3_samplers), "seed": 0},
            "curves": curves, "matches": matches, "checks": checks}


def experiment_e4(prof: Profile, models: list[dict]) -> dict:
    """E4 JSON: the discrepancy curves of p = 1 and p = ∞ and whether DREAM shrinks the gap."""
    by = {m["p"]: m["summary"] for m in models}
    inf_, one = by["inf"], by["1"]
    checks = [
        _check("p = ∞: the \"sampling\" x̂0 is worse than the \"training\" one (mean over t)",
               inf_["gap_mean_over_t"] > 0,
               f"MSE {inf_['sample_mean_over_t']:.3e} vs {inf_['train_mean_over_t']:.3e}; sampling worse at "
               f"{100 * inf_['frac_t_sample_above_train']:.0f}% of t", "yes (Fig. 3a)"),
        _check("DREAM (p = 1) has a smaller gap than p = ∞ (mean over t of sampling − training MSE)",
               one["gap_mean_over_t"] < inf_["gap_mean_over_t"],
               f"{one['gap_mean_over_t']:.3e} vs {inf_['gap_mean_over_t']:.3e}", "yes (Fig. 3b)"),
        _check("… and a smaller share of the sampling error (gap / sampling MSE, both averaged over t)",
               one["gap_share"] < inf_["gap_share"], f"{one['gap_share']:.3f} vs {inf_['gap_share']:.3f}",
               "yes (Fig. 3b)"),
        _check("DREAM's final sample is closer to y0 (\"sampling\" MSE at the last step)",
               one["sample_final"] < inf_["sample_final"],
               f"{one['sample_final']:.3e} vs {inf_['sample_final']:.3e}", "yes (Fig. 3, t → 0)"),
    ]
    return {"experiment": "E4", "title": "training-sampling discrepancy", "profile": prof.to_dict(),
            "setup": {"images": prof.e4_images, "crop": prof.e4_crop, "steps": prof.e4_steps, "sampler": "ddpm",
                      "mse": "per image, HR in [0, 1], x̂0 clipped to [-1, 1] as the sampler does"},
            "models": models, "checks": checks}


def experiment_e5(prof: Profile, trained: dict[str, dict], evals: dict[str, dict]) -> dict:
    """E5 JSON: p = 1 vs p = ∞ with the residual target, next to the image-target pair."""
    rows = [_row(f"{s.title}, {s.target}", s.name, evals[s.name],
                 {"p": s.p_label, "target": s.target, "train_seconds": trained[s.name]["train_seconds"],
                  "command": trained[s.name]["command"]}) for s in (P1, PINF, R1, RINF)]
    per = {s.name: evals[s.name]["per_image"] for s in (P1, PINF, R1, RINF)}
    gains = {"image": paired_difference(per[P1.name]["psnr_rgb"], per[PINF.name]["psnr_rgb"]),
             "residual": paired_difference(per[R1.name]["psnr_rgb"], per[RINF.name]["psnr_rgb"])}
    conv = experiment_e2(prof, trained, R1, RINF)
    gi, gr = gains["image"]["mean"], gains["residual"]["mean"]
    m = {s.name: evals[s.name]["metrics"]["psnr_rgb"]["mean"] for s in (P1, PINF, R1, RINF)}
    checks = [
        _check("residual target: p = 1 beats p = ∞ in PSNR", gr > 0,
               f"{m[R1.name]:.2f} vs {m[RINF.name]:.2f} dB (gain {gr:.3f} ± {_fmt(gains['residual']['se'], 3)} SE)",
               "not in the paper"),
        _check("… by more than two standard errors", gains["residual"]["significant"],
               f"{gains['residual']['n']} crops", "not in the paper"),
        _check("DREAM's PSNR gain is smaller with the residual target than with the image target", gr < gi,
               f"{gr:.3f} vs {gi:.3f} dB", "not in the paper"),
        _check("residual target: p = 1 reaches p = ∞'s final validation PSNR earlier",
               conv["speedup"]["reach_step"] is not None and conv["speedup"]["speedup"] > 1,
               f"speed-up ×{_fmt(conv['speedup']['speedup'], 2)}" if conv["speedup"]["reach_step"]
               else "never reached", "not in the paper"),
        _check("at p = ∞ the residual target beats the image target in PSNR", m[RINF.name] > m[PINF.name],
               f"{m[RINF.name]:.2f} vs {m[PINF.name]:.2f} dB", "not in the paper"),
    ]
    return {"experiment": "E5", "title": "residual target", "profile": prof.to_dict(),
            "eval": {"sampler": prof.e1_sampler, "steps": prof.e1_steps, "images": prof.eval_images,
                     "crop": prof.eval_crop}, "rows": rows, "gain_psnr_rgb": gains, "convergence": conv,
            "checks": checks}


# ---------------------------------------------------------------------------------------------- markdown
def _checks_md(checks: list[dict]) -> list[str]:
    lines = ["| claim | holds here | our numbers | paper |", "|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {c['claim']} | **{_yn(c['holds'])}** | {c['detail']} | {c['paper']} |")
    return lines


def _metric_cell(metrics: dict, col: str) -> str:
    e = metrics.get(col)
    if not e or e.get("mean") is None:
        return "-"
    d = _digits(col)
    s = _fmt(e["mean"], d)
    if e.get("std") is not None:
        s += f" ± {_fmt(e['std'], d)}"
    return s


def _fig(name: str | None, alt: str, fig_prefix: str) -> list[str]:
    return [f"![{alt}]({fig_prefix}{name})", ""] if name else [f"*{NO_PLOT}*", ""]


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def write_markdown(out: Path, doc: Path, fig_prefix: str = "") -> Path:
    """Render the report from the JSON files in ``out`` (nothing else) into ``doc``; figure links are
    ``fig_prefix`` + file name. Returns ``doc``."""
    info = _read_json(out / "run_info.json")
    e1, e2, e3, e4, e5 = (_read_json(out / f) for f in ("e1_p_sweep.json", "e2_convergence.json",
                                                         "e3_sampling_steps.json", "e4_discrepancy.json",
                                                         "e5_residual.json"))
    figs = info.get("figures", {})
    prof = e1["profile"]
    last = [inv for inv in info["invocations"] if "only" not in inv and "train_only" not in inv][-1]  # reporting
    hw = last["hardware"]
    L: list[str] = ["# Reproducing DREAM at small scale", ""]
    L.append("*Generated by `scripts/reproduce.py` from the JSON files it wrote; no number below was typed by "
             "hand. Re-render with `--doc-only`.*")
    L.append("")
    if prof["name"] != "full":
        L += [f"> **This is a `{prof['name']}` run: its numbers mean little.** The models trained for "
              f"{prof['steps']} steps on {prof['patch']} px crops (`{prof['preset']}` UNet), far too little for any "
              "claim below to be tested; the run only shows that every experiment, table and figure is produced "
              "end to end, and a \"yes\" below says no more than which objective learned faster in its first "
              "steps. **The full profile was not run in this session.** To run it:", ">",
              "> ```", "> python scripts/reproduce.py --profile full --out runs/reproduce-full --device cuda "
              "--doc docs/reproduction.md", "> ```", ">",
              "> On a 15-minute GPU lease, give the six runs the GPU to themselves, side by side, then evaluate: "
              "`JOBS=repro bash scripts/gpu_session.sh OUT CORPUS_DIR` (the report comes back in "
              "`results.tar.gz`).", ">",
              f"> Estimated cost of the full profile: {FULL_COST['cpu']}; {FULL_COST['h100']}.", ""]
    L += ["## Setting", "",
          f"- profile `{prof['name']}`: UNet preset `{prof['preset']}`, x{prof['scale']}, {prof['steps']} steps per "
          f"run, batch {prof['batch_size']}, HR crops {prof['patch']} px, Adam lr {prof['lr']:g} (warm-up "
          f"{prof['lr_warmup']}), EMA {prof['ema_decay']}, seed {prof['seed']} for every run (same data order, "
          "initial weights and noise for every p)",
          f"- data: training photos `{last['data']}/train` ({last.get('train_images', '?')} images), held-out photos "
          f"`{last['data']}/val`; evaluation on {prof['eval_images']} held-out HR crops of {prof['eval_crop']} px "
          "(LR = antialiased bicubic x4, 8-bit), each crop sampled whole (no tiling)",
          f"- hardware (reporting invocation; each invocation's threads and precision are on the next line): "
          f"{hw['cpu']}, {hw['cpu_count']} cores, "
          f"GPU {hw['gpu'] or 'none'}, device `{last['device']}`, precision `{last.get('precision', '?')}`; torch {hw['torch']}, dreamsr {hw['dreamsr']}, "
          f"Python {hw['python']}",
          "- wall time per invocation: " + "; ".join(
              f"{inv['started']} `{inv['profile']}`{_invocation_part(inv)} {_dur(inv['wall_seconds'])} "
              f"({inv['hardware']['threads']} thread{'s' if inv['hardware']['threads'] != 1 else ''}, "
              f"{inv.get('precision', '?')})" for inv in info["invocations"]),
          f"- compute in the results (per-run sums; runs trained side by side overlap in wall time): training {_dur(sum(r['train_seconds'] or 0 for r in e1['rows'] + e5['rows'][2:]))}"
          f", E1/E5 evaluations {_dur(sum(r['eval_seconds'] or 0 for r in e1['rows'] + e5['rows'][2:]))}, "
          f"E3 {_dur(sum(c['seconds'] for c in e3['curves']))}, E4 {_dur(sum(m['seconds'] for m in e4['models']))}",
          "- commands: " + "; ".join(f"`{inv['command']}`" for inv in info["invocations"]), ""]
    L += ["Equivalent training commands (one per run; the script calls `dreamsr.train.train` with these settings):",
          "", "```"] + [r["command"] for r in e1["rows"] if r["command"]] + \
         [r["command"] for r in e5["rows"][2:]] + ["```", ""]

    # E1
    ev = e1["eval"]
    L += ["## E1: the p sweep (Table 1 analogue)", "",
          f"{ev['sampler'].upper()} with {ev['steps']} steps, {ev['images']} crops, seed {ev['seed']}; mean ± std "
          "over crops. PSNR/SSIM in RGB on the whole image (SR3/DREAM code) and on BT.601 Y with a 4 px border "
          "cropped (BasicSR); consistency = MSE×1e5 between the LR and the downsampled SR.", "",
          "| p | PSNR RGB | PSNR Y | SSIM RGB | SSIM Y | consistency | LPIPS | FID | training |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in e1["rows"]:
        cells = [_metric_cell(r["metrics"], c) for c in METRIC_COLUMNS]
        L.append(f"| {r['label']} | " + " | ".join(cells) + f" | {_dur(r['train_seconds'])} |")
    L.append("")
    for metric, reason in e1["unavailable"].items():
        L.append(f"- {metric.upper()} not measured: {reason}")
    L.append("")
    p = e1["paper"]
    L.append("Paper, DIV2K x4 with SR3 (Table 1), PSNR / SSIM: " +
             ", ".join(f"p={k}: {v[0]} / {v[1]}" for k, v in p.items()) + ".")
    L.append("")
    L += _fig(figs.get("e1"), "E1", fig_prefix)
    L += _checks_md(e1["checks"]) + [""]

    # E2
    sp = e2["speedup"]
    L += ["## E2: convergence", "",
          f"Validation every {e2['val']['every']} steps on {e2['val']['count']} held-out centre crops of "
          f"{e2['val']['crop']} px (EMA weights, DDIM {e2['val']['steps']} steps). Speed-up = the step of p = ∞'s "
          "final validation PSNR / the first step at which p = 1 reaches it.", "",
          "| | p = ∞ step | p = ∞ PSNR (RGB) | p = 1 reaches it at | speed-up |", "|---|---:|---:|---:|---:|"]
    e2_rows = [("image target, p = ∞ final", sp), ("image target, p = ∞ best", e2.get("speedup_best"))]
    if e2.get("residual"):
        e2_rows += [("residual target, p = ∞ final", e2["residual"]["speedup"]),
                    ("residual target, p = ∞ best", e2["residual"]["speedup_best"])]
    for label, r in e2_rows:
        if r:
            L.append(f"| {label} | {r['ref_final_step']} | {_fmt(r['ref_final'], 2)} | {r['reach_step'] or 'never'} | "
                     f"{'×' + _fmt(r['speedup'], 2) if r['speedup'] else '-'} |")
    L.append("")
    if e2.get("bicubic_psnr_y") is not None:
        L += [f"For scale: bicubic on the same validation crops gives {_fmt(e2['bicubic_psnr_y'], 2)} dB PSNR on Y "
              f"(the Y-convention speed-up: ×{_fmt(e2['speedup_y']['speedup'], 2)} against p = ∞'s final value)."
              if e2["speedup_y"]["speedup"] else f"For scale: bicubic on the same validation crops gives "
              f"{_fmt(e2['bicubic_psnr_y'], 2)} dB PSNR on Y.", ""]
    if e2.get("shapes"):
        L += ["Each run's validation curve, peak and last value (a curve that falls after its peak makes \"reaches "
              "p = ∞'s final value\" an easy target; PSNR falling while SSIM rises means sharper, less averaged "
              "samples):", "", f"| run | PSNR peak ({e2['key']}) | at step | last | SSIM Y at peak | SSIM Y last |",
              "|---|---:|---:|---:|---:|---:|"]
        for name, c in e2["shapes"].items():
            L.append(f"| {name} | {_fmt(c['peak'], 2)} | {c['peak_step']} | {_fmt(c['last'], 2)} | "
                     f"{_fmt(c['ssim_y_at_peak'], 4)} | {_fmt(c['ssim_y_last'], 4)} |")
        L.append("")
    L += _fig(figs.get("e2"), "E2", fig_prefix)
    L += _checks_md(e2["checks"]) + [""]

    # E3
    L += ["## E3: sampling steps", "",
          f"{e3['eval']['images']} crops of {e3['eval']['crop']} px, seed 0; PSNR (RGB) / SSIM (RGB) per step count.",
          "", "| p | sampler | " + " | ".join(str(s) for s in e3["eval"]["steps"]) + " |",
          "|---|---|" + "---:|" * len(e3["eval"]["steps"])]
    for c in e3["curves"]:
        L.append(f"| {c['p']} | {c['sampler'].upper()} | " + " | ".join(
            f"{_fmt(c['values'][str(s)]['psnr_rgb'], 2)} / {_fmt(c['values'][str(s)]['ssim_rgb'], 4)}"
            for s in e3["eval"]["steps"]) + " |")
    L.append("")
    L += _fig(figs.get("e3"), "E3", fig_prefix)
    L += _checks_md(e3["checks"]) + [""]

    # E4
    su = e4["setup"]
    L += ["## E4: training-sampling discrepancy (Fig. 3)", "",
          f"{su['images']} held-out crops of {su['crop']} px; a {su['steps']}-step respaced DDPM chain over the T = "
          "2000 trained steps. \"Sampling\": x̂0 at each step of `ddpm_sample` (its callback); \"training\": x̂0 from "
          f"y_t = q_sample(y0, t, fresh noise). MSE {su['mse']}. Means over t; gap = sampling − training, gap "
          "share = gap / sampling MSE; the last two columns are the final step (t = 1, the sample itself):", "",
          "| p | training MSE | sampling MSE | gap | gap share | t where sampling is worse | final-step training "
          "| final-step sampling |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m in e4["models"]:
        s = m["summary"]
        L.append(f"| {m['p']} | {s['train_mean_over_t']:.3e} | {s['sample_mean_over_t']:.3e} | "
                 f"{s['gap_mean_over_t']:.3e} | {s['gap_share']:.3f} | "
                 f"{100 * s['frac_t_sample_above_train']:.0f}% | {s['train_final']:.3e} | {s['sample_final']:.3e} |")
    L.append("")
    L += _fig(figs.get("e4"), "E4", fig_prefix)
    L += _checks_md(e4["checks"]) + [""]

    # E5
    L += ["## E5: the residual target (beyond the paper)", "",
          "The model diffuses 1.5 × (HR − bicubic) instead of the HR image; same data, seed, steps and evaluation.",
          "", "| run | PSNR RGB | PSNR Y | SSIM RGB | SSIM Y | consistency | training |",
          "|---|---:|---:|---:|---:|---:|---:|"]
    for r in e5["rows"]:
        L.append(f"| {r['label']} | " + " | ".join(_metric_cell(r["metrics"], c) for c in METRIC_COLUMNS[:5])
                 + f" | {_dur(r['train_seconds'])} |")
    g = e5["gain_psnr_rgb"]
    L += ["", f"PSNR (RGB) gain of p = 1 over p = ∞: image target {_fmt(g['image']['mean'], 3)} ± "
              f"{_fmt(g['image']['se'], 3)} dB, residual target {_fmt(g['residual']['mean'], 3)} ± "
              f"{_fmt(g['residual']['se'], 3)} dB (paired over crops, ± one standard error).", ""]
    L += _fig(figs.get("e5"), "E5", fig_prefix)
    L += _checks_md(e5["checks"]) + [""]

    L += ["## Why the small setting may differ from the paper", "",
          f"- Scale: a `{prof['preset']}` UNet trained {prof['steps']} steps at batch {prof['batch_size']} on "
          f"{prof['patch']} px crops, against the paper's SR3 (about 100 M parameters) trained 400k-1M steps on "
          "DIV2K/CelebA-HQ. DREAM's effects are reported near convergence; early in training every curve is "
          "dominated by how fast the model learns the bicubic-like mean.",
          f"- Data: {last.get('train_images', '?')} photos for training and crops of {last.get('val_images', '?')} "
          "other photos for evaluation, not DIV2K's 800 + 100; the held-out set is small, so small differences are "
          "within the noise (see the paired standard errors).",
          "- Sampling: the tables use fewer sampler steps than the paper's 1000-2000 (E3 shows the dependence); "
          "each crop is sampled whole, without the paper's 40 px tiling.",
          "- LPIPS and FID need pretrained networks that cannot be downloaded here; where their weights are absent "
          "the perception side of the trade-off is not measured at all, and FID on a few dozen crops would be "
          "meaningless anyway.",
          f"- E2's validation PSNR comes from {e2['val']['count']} crops with a {e2['val']['steps']}-step DDIM "
          "sampler, so the step at which one curve crosses another is noisy."]
    # where the models stand against bicubic: every comparison above is between models of that quality
    bic = next((r for r in e1["rows"] if r["run"] == "bicubic"), None)
    models = [r for r in e1["rows"] + e5["rows"][2:] if r["run"] != "bicubic"]
    if bic is not None and models:
        gaps = {r["run"]: r["metrics"]["psnr_y"]["mean"] - bic["metrics"]["psnr_y"]["mean"] for r in models}
        below = sorted((n for n, g in gaps.items() if g < 0), key=gaps.get)
        if below:
            L.append(f"- Quality: {', '.join(f'{n} ({gaps[n]:+.2f} dB)' for n in below)} "
                     f"{'is' if len(below) == 1 else 'are'} below bicubic in PSNR (Y) after "
                     f"{prof['steps']} steps; the claims are tested between models this far from convergence, "
                     "where which objective learns the low frequencies first can decide the ranking (the paper "
                     "compares models that are well above bicubic).")
    falling = [n for n, c in (e2.get("shapes") or {}).items()
               if c["last"] < c["peak"] - 0.5 and None not in (c["ssim_y_last"], c["ssim_y_at_peak"])
               and c["ssim_y_last"] > c["ssim_y_at_peak"]]
    if falling:
        L.append(f"- Validation PSNR peaked and then fell while SSIM (Y) kept rising for {', '.join(falling)}. "
                 f"Our reading (not tested): the models learn to draw sharper detail, which a "
                 f"{e2['val']['steps']}-step DDIM sample places imprecisely, and PSNR rewards the blurry average; "
                 "the paper's models are trained far past this stage, while here the step budget ends inside it.")
    L.append("")
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(L) + "\n", encoding="utf-8")
    return doc


# ---------------------------------------------------------------------------------------------- driver
EXPERIMENTS = ("e1_p_sweep", "e2_convergence", "e3_sampling_steps", "e4_discrepancy", "e5_residual")


def _figures(out: Path, e1: dict, e2: dict, e3: dict, e4: dict, e5: dict) -> dict[str, str | None]:
    return {"e1": plot_e1(e1, out / "e1_p_sweep.png"), "e2": plot_e2(e2, out / "e2_convergence.png"),
            "e3": plot_e3(e3, out / "e3_sampling_steps.png"), "e4": plot_e4(e4, out / "e4_discrepancy.png"),
            "e5": plot_e5(e5, out / "e5_residual.png")}


def _render(out: Path, doc: Path, redraw: bool = False) -> Path:
    """Write ``doc``; when it lives outside ``out``, copy the figures to ``<doc dir>/<doc stem>/``. With ``redraw``
    the figures are first drawn again from OUT's experiment JSONs (when matplotlib is installed)."""
    if redraw and _pyplot() is not None:
        exps = [_read_json(out / f"{name}.json") for name in EXPERIMENTS]
        figures = _figures(out, *exps)
        path = out / "run_info.json"
        _write_json(path, {**_read_json(path), "figures": figures, "figures_note": None})
    info = _read_json(out / "run_info.json")
    prefix = ""
    if doc.resolve().parent != out.resolve():
        fig_dir = doc.parent / doc.stem
        fig_dir.mkdir(parents=True, exist_ok=True)
        for name in (info.get("figures") or {}).values():
            if name:
                shutil.copyfile(out / name, fig_dir / name)
        prefix = f"{doc.stem}/"
    return write_markdown(out, doc, prefix)


def _last_step(metrics_jsonl: Path) -> int:
    """The last optimizer step a run logged (its progress when it was stopped)."""
    last = 0
    with open(metrics_jsonl, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                last = max(last, int(json.loads(line).get("step", 0)))
    return last


def partial_curves(out: Path, doc: Path, profile: Profile, note: str = "") -> Path:
    """Report the validation curves of unfinished runs (E2 only): a run stopped before its budget still shows
    how each p converged up to there. Curves are cut at the last step every run validated, so the runs are
    compared at equal steps. Writes ``doc`` and ``<doc stem>.png`` beside it; every number comes from the runs'
    metrics.jsonl."""
    specs = [spec for spec in RUNS if (out / "runs" / spec.name / "metrics.jsonl").is_file()]
    if not specs:
        raise SystemExit(f"{out / 'runs'} holds no run with a metrics.jsonl")
    curves = {spec.name: read_val_curve(out / "runs" / spec.name / "metrics.jsonl", "psnr") for spec in specs}
    bicubic = [float(json.loads(line)["bicubic_psnr"])
               for spec in specs for line in open(out / "runs" / spec.name / "metrics.jsonl", encoding="utf-8")
               if '"event": "val"' in line and "bicubic_psnr" in line][:1]
    common = min(c[-1][0] for c in curves.values() if c) if all(curves.values()) else 0
    cut = {name: [(st, v) for st, v in c if st <= common] for name, c in curves.items()}
    reached = {spec.name: _last_step(out / "runs" / spec.name / "metrics.jsonl") for spec in specs}
    results: dict[str, Any] = {"profile": profile.to_dict(), "common_step": common, "reached": reached,
                               "curves": cut, "bicubic_psnr_y": bicubic[0] if bicubic else None, "pairs": {}}
    L = [f"# Reproduction, partial: validation curves of unfinished `{profile.name}` runs", "",
         "*Generated by `scripts/reproduce.py --partial-curves` from the runs' metrics.jsonl; no number below was "
         "typed by hand.*", ""]
    if note:
        L += [f"> {note}", ""]
    L += [f"> **The runs stopped before their {profile.steps}-step budget** (steps reached: "
          + ", ".join(f"{n} {st}" for n, st in reached.items()) + f"). Curves are compared up to step {common}, "
          "the last one every run validated. Only E2 (convergence) can be read from this; E1 and E3-E5 need the "
          "finished runs.", "",
          f"Validation: PSNR on Y (BT.601, crop {profile.scale}) of the EMA weights, DDIM {profile.val_steps} steps "
          f"(no back-projection), {profile.val_count} held-out photos, centre {profile.val_crop} px crops, every "
          f"{profile.val_every} steps. Bicubic on the same crops: "
          + (f"{bicubic[0]:.2f} dB." if bicubic else "not logged."), ""]
    names = [spec.name for spec in specs]
    steps = sorted({st for c in cut.values() for st, _ in c})
    L += ["| step | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    for st in steps:
        row = [dict(cut[n]).get(st) for n in names]
        L.append(f"| {st} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in row) + " |")
    L += ["", "Peak and last value of each curve (a curve that falls after its peak makes \"reaches p = ∞'s final "
          "value\" an easy target, so both are given):", ""]
    for n in names:
        if cut[n]:
            pk_step, pk = max(cut[n], key=lambda sv: sv[1])
            L.append(f"- {n}: peak {pk:.2f} dB at step {pk_step}, last {cut[n][-1][1]:.2f} dB at step {cut[n][-1][0]}"
                     + (f" ({cut[n][-1][1] - bicubic[0]:+.2f} dB vs bicubic)" if bicubic else ""))
    L += ["", "## E2 at equal steps", ""]
    for fast, ref in ((P1, PINF), (R1, RINF)):
        if fast.name not in cut or ref.name not in cut or not cut[ref.name]:
            continue
        final = convergence_speedup(cut[fast.name], cut[ref.name])
        best_step, best = max(cut[ref.name], key=lambda sv: sv[1])
        reach_best = next((st for st, v in cut[fast.name] if v >= best), None)
        above = sum(1 for (st, v) in cut[fast.name] if v > dict(cut[ref.name]).get(st, float("inf")))
        results["pairs"][f"{fast.name}_vs_{ref.name}"] = {"final": final, "ref_best": best,
                                                          "ref_best_step": best_step, "reach_best": reach_best,
                                                          "fast_above_ref_at": above, "compared": len(cut[ref.name])}
        L.append(f"- **{fast.name} vs {ref.name}**: p = 1 is above p = ∞ at {above} of {len(cut[ref.name])} "
                 f"validations. p = ∞ ends at {final['ref_final']:.2f} dB (step {final['ref_final_step']}); p = 1 "
                 + (f"first reaches that at step {final['reach_step']} (×{final['speedup']:.1f})"
                    if final["reach_step"] else "never reaches it")
                 + f". p = ∞'s best is {best:.2f} dB (step {best_step}); p = 1 "
                 + (f"first reaches it at step {reach_best} (×{best_step / reach_best:.1f})" if reach_best
                    else "never reaches it") + ".")
    plt = _pyplot()
    fig_name = None
    if plt is not None:
        fig, ax = plt.subplots(figsize=(7, 3.8))
        for i, n in enumerate(names):
            c = cut[n]
            ax.plot([st for st, _ in c], [v for _, v in c], "o-" if n.startswith("image") else "s--", ms=3,
                    label=n, color=f"C{i}")
        if bicubic:
            ax.axhline(bicubic[0], ls=":", c="gray", label="bicubic")
        ax.set_xlabel("training step")
        ax.set_ylabel("validation PSNR Y (dB)")
        ax.legend(fontsize=7, ncol=2)
        ax.set_title(f"unfinished {profile.name} runs: validation PSNR (DDIM {profile.val_steps})", fontsize=10)
        fig_name = f"{doc.stem}.png"
        doc.parent.mkdir(parents=True, exist_ok=True)
        _save(fig, plt, doc.parent / fig_name)
    L += ["", f"![validation curves]({fig_name})" if fig_name else NO_PLOT, ""]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(L) + "\n", encoding="utf-8")
    _write_json(doc.with_suffix(".json"), results)
    return doc


def _invocation_part(inv: dict[str, Any]) -> str:
    """' (train image_p1, image_p0 only)', ' (steps only)' or '' for a reporting invocation."""
    if inv.get("train_only"):
        return " (train " + ", ".join(inv["train_only"]) + " only)"
    if inv.get("only"):
        return " (" + ", ".join(inv["only"]) + " only)"
    return ""


def _record_invocation(out: Path, record: dict[str, Any], figures: dict[str, Any] | None = None) -> None:
    """Append one invocation (and, from a full one, the figure list) to OUT/run_info.json under a file lock:
    two ``--only`` processes may finish at the same time."""
    import fcntl

    with open(out / ".run_info.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = out / "run_info.json"
        info = _read_json(path) if path.is_file() else {"invocations": []}
        info.update(figures or {})
        info["invocations"].append(record)
        _write_json(path, info)


def reproduce(profile: Profile, out: Path, data: Path, *, device: str = "auto", precision: str = "auto",
              workers: int | None = None, metric_weights: str | None = None, doc: Path | None = None,
              command: str = "", log: Callable[[str], None] = print,
              only: Sequence[str] | None = None) -> dict[str, Any]:
    """Run (or resume) every experiment of ``profile`` into ``out``; write the JSONs, figures and the report.
    Returns {"doc": path, "json": {experiment: path}, "figures": {...}}.

    ``only``: a subset of EVAL_PARTS ("table": E1/E5 evaluations, "steps": E3, "discrepancy": E4) to run just
    those evaluations of runs that finished training, then return {"only": [...]} without JSONs or report, so
    that two processes can share the evaluations (a later plain invocation finds them done and reports)."""
    from dreamsr.data import find_images
    from dreamsr.runtime import resolve_device

    t_start = time.perf_counter()
    started = _now()
    out.mkdir(parents=True, exist_ok=True)
    if not (data / "train").is_dir() or not (data / "val").is_dir():
        raise SystemExit(f"{data} needs train/ and val/ photo folders; build them with "
                         f"`python scripts/build_corpus.py {data}`")
    stages: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        r = fn()
        stages[name] = round(time.perf_counter() - t, 3)
        return r

    parts = set(EVAL_PARTS if only is None else only)
    if not parts or parts - set(EVAL_PARTS):
        raise SystemExit(f"only: choose from {', '.join(EVAL_PARTS)}, got {', '.join(sorted(parts)) or '(none)'}")
    if only is not None:  # evaluations only: never train here (another process may be training)
        unfinished = [s.name for s in RUNS if not _run_finished(out / "runs" / s.name, profile.steps)]
        if unfinished:
            raise SystemExit(f"--only evaluates finished runs; still training: {', '.join(unfinished)}")
    ctx = dict(device=device, precision=precision)
    trained = {s.name: timed(f"train/{s.name}", lambda s=s: train_run(s, profile, out, data, device, precision,
                                                                       workers, log)) for s in RUNS}
    crops = prepare_eval_crops(data / "val", out / "data" / "eval_crops", profile.eval_images, profile.eval_crop)
    full_metrics = ("psnr", "ssim", "consistency", "lpips", "fid")
    evals: dict[str, dict] = {}
    bicubic: dict = {}
    e3_results: dict = {}
    e4_models: list = []
    if "table" in parts:
        evals = {s.name: timed(f"eval/{s.name}", lambda s=s: run_eval(
            s.name, out / "evals" / "table" / s.name, weights=Path(trained[s.name]["weights"]), crops=crops,
            images=profile.eval_images, steps=profile.e1_steps, sampler=profile.e1_sampler, metrics=full_metrics,
            metric_weights=metric_weights, grids=2, log=log, **ctx)) for s in RUNS}
        bicubic = timed("eval/bicubic", lambda: run_eval(
            "bicubic", out / "evals" / "table" / "bicubic", weights=None, crops=crops, images=profile.eval_images,
            steps=1, sampler="ddim", metrics=("psnr", "ssim", "consistency"), metric_weights=None, grids=0, log=log,
            **ctx))
    if "steps" in parts:
        for s in (P1, PINF):
            for sampler in profile.e3_samplers:
                for st in profile.e3_steps:
                    e3_results[(s.name, sampler, st)] = timed(f"e3/{s.name}/{sampler}{st}", lambda s=s, sampler=sampler,
                                                              st=st: run_eval(
                        f"{s.name}_{sampler}{st}", out / "evals" / "steps" / f"{s.name}_{sampler}_{st:04d}",
                        weights=Path(trained[s.name]["weights"]), crops=crops, images=profile.e3_images, steps=st,
                        sampler=sampler, metrics=("psnr", "ssim"), metric_weights=None, grids=0, log=log, **ctx))
    if "discrepancy" in parts:
        e4_crops = [img for _, img in held_out_crops(data / "val", profile.e4_images, profile.e4_crop)]
        for s in (PINF, P1):
            path = out / "evals" / "discrepancy" / f"{s.name}.json"
            weights = Path(trained[s.name]["weights"])
            key = {"weights_sha256": sha256_file(weights), "steps": profile.e4_steps, "images": profile.e4_images,
                   "crop": profile.e4_crop, "seed": 0}
            if path.is_file() and _read_json(path).get("key") == key:
                log(f"E4 {s.name}: finished earlier, skipped")
                res = _read_json(path)
            else:
                log(f"E4 {s.name}: {profile.e4_steps}-step DDPM chain on {profile.e4_images} crops")
                res = timed(f"e4/{s.name}", lambda s=s, weights=weights: discrepancy(
                    weights, e4_crops, steps=profile.e4_steps, seed=0, device=device, precision=precision))
                res.update({"key": key, "name": s.name, "p": s.p_label})
                _write_json(path, res)
            e4_models.append(res)

    if only is not None:
        _record_invocation(out, {
            "started": started, "command": command, "profile": profile.name, "only": sorted(parts),
            "device": str(resolve_device(device)), "precision": precision, "hardware": hardware(), "stages": stages,
            "wall_seconds": round(time.perf_counter() - t_start, 3)})
        return {"only": sorted(parts)}

    exps = {"e1_p_sweep": experiment_e1(profile, trained, evals, bicubic),
            "e2_convergence": experiment_e2(profile, trained),
            "e3_sampling_steps": experiment_e3(profile, e3_results),
            "e4_discrepancy": experiment_e4(profile, e4_models),
            "e5_residual": experiment_e5(profile, trained, evals)}
    paths = {}
    for name, data_ in exps.items():
        paths[name] = out / f"{name}.json"
        _write_json(paths[name], data_)
    figures = _figures(out, *exps.values())
    _record_invocation(out, {
        "started": started, "command": command, "profile": profile.name, "device": str(resolve_device(device)),
        "precision": precision, "data": str(data), "train_images": len(find_images(data / "train")),
        "val_images": len(find_images(data / "val")), "hardware": hardware(), "stages": stages,
        "wall_seconds": round(time.perf_counter() - t_start, 3)},
        figures={"figures": figures, "figures_note": None if all(figures.values()) else NO_PLOT})
    doc_path = _render(out, doc or out / "reproduction.md")
    return {"doc": doc_path, "json": paths, "figures": figures}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Profiles: " + "; ".join(
                                     f"{p.name}: {p.preset} UNet, {p.steps} steps x 6 runs" for p in PROFILES.values()))
    ap.add_argument("--profile", choices=sorted(PROFILES), default="smoke", help="experiment sizes (default: smoke)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: runs/reproduce-<profile>)")
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DREAMSR_CORPUS", "/work/corpus")),
                    help="corpus with train/ and val/ photo folders (scripts/build_corpus.py; default "
                         "$DREAMSR_CORPUS or /work/corpus)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps (default: auto)")
    ap.add_argument("--precision", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp16")
    ap.add_argument("--workers", type=int, default=None, help="data-loader processes (default: the profile's)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 when sharing the machine)")
    ap.add_argument("--steps", type=int, default=None, help="override the training steps of every run")
    ap.add_argument("--metric-weights", default=None, help="folder with LPIPS/FID backbone files")
    ap.add_argument("--doc", type=Path, default=None, help="where to write the report (default: OUT/reproduction.md; "
                                                           "figures are copied beside it)")
    ap.add_argument("--doc-only", action="store_true", help="only re-render the report from OUT's JSON files")
    ap.add_argument("--partial-curves", action="store_true",
                    help="only report the validation curves of OUT's (possibly unfinished) runs, up to the last "
                         "step all of them validated (E2 at equal steps), into --doc")
    ap.add_argument("--note", default="", help="a line for the --partial-curves report (where the runs ran)")
    ap.add_argument("--train-only", default=None, metavar="RUNS",
                    help="only train (or resume) these runs, comma-separated names (" + ", ".join(s.name for s in RUNS)
                         + "), then exit: one process per run trains them side by side on one GPU; a later plain "
                           "invocation finds them finished and runs the evaluations")
    ap.add_argument("--only", default=None, metavar="PARTS",
                    help="only run these evaluations of finished runs, comma-separated (" + ", ".join(EVAL_PARTS)
                         + "), then exit: two processes can share them; a later plain invocation reports")
    args = ap.parse_args(argv)
    prof = PROFILES[args.profile]
    if args.steps is not None:
        if args.steps < 1:
            ap.error("--steps must be >= 1")
        prof = dataclasses.replace(prof, steps=args.steps)
    out = args.out or Path("runs") / f"reproduce-{prof.name}"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.doc_only:
        print(_render(out, args.doc or out / "reproduction.md", redraw=True))
        return 0
    if args.partial_curves:
        print(partial_curves(out, args.doc or out / "partial.md", prof, args.note))
        return 0

    def log(msg: str) -> None:
        print(f"[{_dt.datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)

    if args.train_only:
        from dreamsr.runtime import resolve_device

        by_name = {s.name: s for s in RUNS}
        wanted = [n.strip() for n in args.train_only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in by_name]
        if unknown or not wanted:
            ap.error(f"--train-only: unknown run(s) {', '.join(unknown) or '(none given)'}; "
                     f"choose from {', '.join(by_name)}")
        t_start, started = time.perf_counter(), _now()
        for n in wanted:
            train_run(by_name[n], prof, out, args.data_dir, args.device, args.precision, args.workers, log)
        _record_invocation(out, {
            "started": started, "command": "python scripts/reproduce.py " + " ".join(
                sys.argv[1:] if argv is None else list(argv)), "profile": prof.name, "train_only": wanted,
            "device": str(resolve_device(args.device)), "precision": args.precision, "hardware": hardware(),
            "wall_seconds": round(time.perf_counter() - t_start, 3)})
        return 0

    command = "python scripts/reproduce.py " + " ".join(sys.argv[1:] if argv is None else list(argv))
    res = reproduce(prof, out, args.data_dir, device=args.device, precision=args.precision, workers=args.workers,
                    metric_weights=args.metric_weights, doc=args.doc, command=command.strip(), log=log,
                    only=None if args.only is None else [x.strip() for x in args.only.split(",") if x.strip()])
    if "only" in res:
        log(f"evaluated {', '.join(res['only'])}; run again without --only for the report")
        return 0
    for name, path in res["json"].items():
        checks = _read_json(path)["checks"]
        log(f"{name}: " + "; ".join(f"{c['claim']}: {_yn(c['holds'])}" for c in checks))
    log(f"report: {res['doc']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
