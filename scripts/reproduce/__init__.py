"""Reproduce DREAM's claims at small scale with dreamsr itself (issue 9): experiments E1-E5.

    E1  Table 1 analogue: p = 0 (DRM), 1, 2 (DREAM), inf (standard), same preset/data/seed/steps; held-out x4
        PSNR/SSIM (RGB and Y conventions), consistency, LPIPS/FID where their weights exist.
    E2  Convergence (Fig. 1/7): validation PSNR during training for p = 1 and p = inf; the step at which p = 1
        first reaches p = inf's final PSNR, as a speed-up factor.
    E3  Sampling steps (Fig. 8): PSNR/SSIM against the number of DDPM and DDIM steps for p = 1 and p = inf.
    E4  Training-sampling discrepancy (Fig. 3): MSE of x0_hat against y0 at each t when y_t is built from the
        ground truth ("training", Alg. 1 line 3) and when it comes from the sampler ("sampling", Alg. 2 line 4).
    E5  Beyond the paper: p = 1 vs p = inf with the residual target (the model only adds detail to bicubic).

Beside the SR3 sections of E1-E4, rows for ResShift small (the default model's family, a model above bicubic) from
the paired DREAM experiment (docs/experiments/dream-resshift.md): ``--resshift-work WORK`` reads its evaluations
(and ``--resshift-train`` first runs its own ``scripts/dream_experiment/train.sh`` and ``evaluate.py`` into WORK
with the sizes of ``--resshift-profile``: ``full`` = the experiment, 4 arms x 3 seeds x 3000 steps; ``ci`` = 3 arms
x 2 seeds x 2 steps of the tiny preset). See ``resshift.py``.

Everything goes through dreamsr's own code: ``dreamsr.jobs.train.train`` (runs, validation curves, exported
``model.safetensors``), ``dreamsr.jobs.evaluate.evaluate`` (every table), ``dreamsr.samplers.ddpm_sample`` with its
per-step callback and ``dreamsr.diffusion.Schedule`` (E4). The package writes, under ``--out``::

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

Usage (``python -m scripts.reproduce ...`` from the repository root works the same)::

    python scripts/reproduce --profile full --out runs/reproduce-full --device cuda --doc docs/reproduction.md
    python scripts/reproduce --profile smoke --out runs/reproduce-smoke --threads 1 --doc docs/reproduction.md
    # the full profile on a 2-core CPU, as it was run for docs/reproduction.md (each line a background process):
    python scripts/reproduce --profile full --out OUT --precision bf16 --workers 0 --threads 1 \
        --train-only image_p1,image_p0,residual_pinf          # and, side by side:
    python scripts/reproduce ... --train-only image_pinf,image_p2,residual_p1
    python scripts/reproduce ... --only table,discrepancy  # and, side by side:  ... --only steps
    python scripts/reproduce --profile full --out OUT --precision bf16 --doc docs/reproduction.md
    python scripts/reproduce --profile ci --out /tmp/repro-ci --data-dir /path/with/train+val
    python scripts/reproduce --out runs/reproduce-full --doc-only --doc docs/reproduction.md   # re-render
    python scripts/reproduce --doc-only --resshift-work /work/exp --doc docs/reproduction.md  # ResShift rows only
    python scripts/reproduce --resshift-only --resshift-train --resshift-profile ci --resshift-work /tmp/rs-ci \
        --data-dir CORPUS --doc /tmp/rs-ci.md                   # the ResShift path end to end, tiny

An interrupted invocation is resumed by running the same command again.

Modules (imports point from the driver down to the parts; none reaches into dreamsr's private names):

    profiles.py           Profile, PROFILES (ci, smoke, full), the six runs (RunSpec), the paper's quoted numbers
    common.py             JSON files, clock, hardware record, number formatting, paired difference, a checked claim
    crops.py              the held-out HR crops every evaluation uses
    training.py           the training runs: dreamsr.jobs.train.train per run, resumed or skipped when finished
    evaluation.py         the evaluation cache: dreamsr.jobs.evaluate.evaluate per model, skipped when done before
    e1_p_sweep.py ... e5_residual.py   one module per experiment: its evaluations, analysis and JSON
    figures.py            the figures (matplotlib optional)
    report.py             the Markdown report, one small writer per section
    partial.py            --partial-curves: E2 from unfinished runs
    resshift.py           the ResShift rows: the paired experiment's scripts run or read, its report.py's pairing
    driver.py             one invocation: train, evaluate, write JSONs, figures and report; run_info.json
    cli.py, __main__.py   the command line
"""

from __future__ import annotations

from .common import paired_difference
from .crops import held_out_crops, prepare_eval_crops
from .driver import reproduce
from .e2_convergence import convergence_speedup, read_val_curve, up_to_best
from .e3_sampling_steps import steps_to_match
from .e4_discrepancy import discrepancy, e4_sample_generators, e4_train_noise
from .figures import NO_PLOT
from .partial import partial_curves
from .profiles import PROFILES, RUNS, Profile, RunSpec
from .report import render, write_markdown
from .training import run_finished, train_seconds
from .cli import main  # noqa: E402  (last: cli reads this package's docstring)

__all__ = ["Profile", "PROFILES", "RunSpec", "RUNS", "convergence_speedup", "up_to_best", "steps_to_match",
           "paired_difference", "read_val_curve", "train_seconds", "run_finished", "discrepancy", "e4_train_noise",
           "e4_sample_generators", "held_out_crops", "prepare_eval_crops", "NO_PLOT", "write_markdown", "render",
           "partial_curves", "reproduce", "main"]
