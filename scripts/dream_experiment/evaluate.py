#!/usr/bin/env python3
"""The paired DREAM experiment (docs/experiments/dream-resshift.md): every measurement of its trained runs.

    python scripts/dream_experiment/evaluate.py CORPUS WORK [--shard I/N]
        [--ks 1,2,4,8,15] [--secondary-ks 1,15] [--curve-at 1000,2000] [--curve-ks 1,15] [--sample-seeds 4]
        [--start WEIGHTS]

For every finished run WORK/<arm>-s<seed> (train.sh's layout) it writes WORK/eval/<run>/<task>.json, skipping
tasks already written (so it resumes, and N processes with --shard 0/N .. N-1/N share the work):

- ``final-k<K>``: the final EMA weights on the validation crops at K ancestral steps, 4 sampling seeds, no
  back-projection, no ensemble, whole image (tile 0) -- the primary rows (K in 1, 2, 4, 8, 15);
- ``final-bp-k<K>``: the same with back-projection and a 2-member ensemble, seed 0 (secondary rows; K 1, 15);
- ``curve-<step>-k<K>``: the EMA weights of the 1000- and 2000-step states at K = 1 and 15, seed 0;
- ``diag``: the paper's Fig. 3 per t: PSNR-Y of the x0 estimate from the true x_t (the kernel applied to the HR
  signal, noise seed 0) and along the sampling chain from the prior (noise seed 0), mean over the crops.

Measures: PSNR/SSIM on BT.601 Y (border 4), HaarPSI (piq, RGB) and the HF ratio (Y), through dreamsr's own
evaluator (``dreamsr.jobs.evaluate.evaluate``), so the numbers are the ones ``dreamsr eval`` prints.

``--start WEIGHTS`` also measures the file every run started from (experiment B: the shipped weights) as the run
``start-s0``: the final and secondary rows and the diagnostic, no curves.

The optional lists change which K, states and sampling seeds are measured (for a tiny run, e.g. scripts/reproduce's
ci profile); their defaults are the experiment's, above.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from dreamsr.files import atomic_write_text
from dreamsr.images import from_model, load_rgb, resize, to_model
from dreamsr.jobs.evaluate import EvalConfig, evaluate
from dreamsr.jobs.pipeline import Upscaler
from dreamsr.jobs.train import export_from_state
from dreamsr.metrics import psnr

STEPS = (1, 2, 4, 8, 15)
SECONDARY_STEPS = (1, 15)
CURVE_STEPS = (1, 15)
CURVE_AT = (1000, 2000)
SEEDS = 4
METRICS = ("psnr", "ssim", "haarpsi", "hf")


def summarise(summary: dict) -> dict:
    """{column: {"mean", "per_seed_mean"}} of an evaluator summary."""
    return {m["column"]: {"mean": m["mean"], "per_seed_mean": m.get("per_seed_mean", [m["mean"]])}
            for m in summary["metrics"]}


def run_eval(weights: Path, val: Path, *, steps: int, seeds: int, back_project: bool, ensemble: int) -> dict:
    cfg = EvalConfig(set="folder", data_dir=str(val), weights=str(weights), metrics=METRICS, convention="y",
                     steps=steps, seed=0, samples=seeds, tile=0, back_project=back_project, ensemble=ensemble,
                     grids=0, device="cpu", precision="fp32")
    with tempfile.TemporaryDirectory(prefix="dream-exp-") as tmp:
        report = evaluate(cfg, Path(tmp) / "eval")
    if report.summary["n_errors"]:
        raise RuntimeError(f"{weights}: {report.summary['errors']}")
    return {"weights": str(weights), "steps": steps, "seeds": seeds, "back_project": back_project,
            "ensemble": ensemble, "images": report.summary["count"], "metrics": summarise(report.summary)}


def _lr_of(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """The evaluator's LR: antialiased bicubic, rounded to 8 bits ([3, h, w] in [0, 1])."""
    h, w = hr.shape[-2] // scale, hr.shape[-1] // scale
    return (resize(hr, (h, w)).clamp(0, 1) * 255).round() / 255


@torch.no_grad()
def fig3(weights: Path, val: Path) -> dict:
    """Per trained index t: PSNR-Y of the x0 estimate from the true x_t vs along the sampling chain (Fig. 3)."""
    up = Upscaler.from_checkpoint(weights, device="cpu", precision="fp32")
    net, proc, fam = up.model.eval(), up.process, up.family
    T = proc.chain
    true_t: list[list[float]] = [[] for _ in range(T)]
    chain_t: list[list[float]] = [[] for _ in range(T)]
    for path in sorted(val.glob("*.png")):
        hr01 = load_rgb(path)
        lr01 = _lr_of(hr01, up.scale)
        hr = to_model(hr01)[None]
        lr = to_model(lr01)[None]
        upm = resize(lr, tuple(hr.shape[-2:]))  # the bicubic estimate, in [-1, 1], as the pipeline makes it
        y0 = proc.to_signal(hr, upm)
        y = proc.anchor(upm)
        cond = fam.condition(lr, upm, tuple(y.shape[-2:]))
        eps = torch.randn(y.shape, generator=torch.Generator().manual_seed(0))

        def score(y0_hat: torch.Tensor) -> float:
            img = from_model(proc.from_signal(y0_hat.clamp(-1, 1), upm)[0]).clamp(0, 1)
            return psnr(img, hr01, crop_border=up.scale, y_channel=True)

        for t in range(T):
            x_t = proc.q_sample(y0, y, t, eps)
            level = torch.full((1,), float(t))
            true_t[t].append(score(net(proc.scale_input(x_t, t), cond, level)))
        seen: list[torch.Tensor] = []
        proc.sample(lambda x, level: net(x, cond, level), eps, y, steps=T,
                    generator=torch.Generator().manual_seed(0), callback=lambda i, n, x, y0_hat: seen.append(y0_hat))
        for i, y0_hat in enumerate(seen):  # step i of the chain sees trained index T - 1 - i
            chain_t[T - 1 - i].append(score(y0_hat))
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return {"weights": str(weights), "t": list(range(1, T + 1)), "psnr_y_true_xt": [mean(v) for v in true_t],
            "psnr_y_chain": [mean(v) for v in chain_t], "images": len(true_t[0])}


def tasks(work: Path, ks: tuple[int, ...] = STEPS, secondary_ks: tuple[int, ...] = SECONDARY_STEPS,
          curve_at: tuple[int, ...] = CURVE_AT, curve_ks: tuple[int, ...] = CURVE_STEPS,
          start: bool = False) -> list[tuple[str, str]]:
    """(run, task) pairs of every finished run (and of the ``start`` file when given)."""
    out = []
    if start:
        out += [("start-s0", f"final-k{k}") for k in ks] + [("start-s0", f"final-bp-k{k}") for k in secondary_ks]
        out.append(("start-s0", "diag"))
    for run in sorted(p for p in work.iterdir() if (p / "DONE").exists()):
        out += [(run.name, f"final-k{k}") for k in ks]
        out += [(run.name, f"final-bp-k{k}") for k in secondary_ks]
        out += [(run.name, f"curve-{s}-k{k}") for s in curve_at for k in curve_ks]
        out.append((run.name, "diag"))
    return out


def do(work: Path, val: Path, run: str, task: str, sample_seeds: int = SEEDS, start: Path | None = None) -> dict:
    model = start if run == "start-s0" and start is not None else work / run / "model.safetensors"
    if task == "diag":
        return fig3(model, val)
    if task.startswith("final-bp-k"):
        return run_eval(model, val, steps=int(task[10:]), seeds=1, back_project=True, ensemble=2)
    if task.startswith("final-k"):
        return run_eval(model, val, steps=int(task[7:]), seeds=sample_seeds, back_project=False, ensemble=1)
    step, k = task[len("curve-"):].split("-k")
    state = work / run / "checkpoints" / f"step_{int(step):08d}.safetensors"
    with tempfile.TemporaryDirectory(prefix="dream-exp-") as tmp:
        exported = export_from_state(state, Path(tmp) / "model.safetensors")
        res = run_eval(exported, val, steps=int(k), seeds=1, back_project=False, ensemble=1)
    res["train_step"] = int(step)
    return res


def _ints(text: str) -> tuple[int, ...]:
    """"1,2,4" -> (1, 2, 4); "" -> () (no such rows)."""
    return tuple(int(v) for v in text.split(",") if v.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("work", type=Path)
    ap.add_argument("--shard", default="0/1", help="I/N: this process does every N-th task from the I-th")
    ap.add_argument("--ks", type=_ints, default=STEPS, help="K of the primary rows (default 1,2,4,8,15)")
    ap.add_argument("--secondary-ks", type=_ints, default=SECONDARY_STEPS,
                    help="K of the back-projection rows (default 1,15)")
    ap.add_argument("--curve-at", type=_ints, default=CURVE_AT, help="training steps of the curve states (default "
                                                                     "1000,2000; they must have been saved)")
    ap.add_argument("--curve-ks", type=_ints, default=CURVE_STEPS, help="K of the curve rows (default 1,15)")
    ap.add_argument("--sample-seeds", type=int, default=SEEDS, help="sampling seeds of the primary rows (default 4)")
    ap.add_argument("--start", type=Path, default=None, help="also measure this file (the runs' common start) as "
                                                             "the run 'start-s0'")
    args = ap.parse_args()
    i, n = (int(v) for v in args.shard.split("/"))
    val = args.corpus / "val_crops"
    todo = tasks(args.work, args.ks, args.secondary_ks, args.curve_at, args.curve_ks, args.start is not None)[i::n]
    for run, task in todo:
        out = args.work / "eval" / run / f"{task}.json"
        if out.exists():
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        res = do(args.work, val, run, task, args.sample_seeds, args.start)
        atomic_write_text(out, json.dumps(res, indent=1))
        print(f"{run} {task} done", flush=True)


if __name__ == "__main__":
    main()
