"""Sizes and names of a reproduction: the profiles (ci, smoke, full), the six training runs and the experiments.

Every experiment JSON stores its profile (``Profile.to_dict``), so a report is rendered from the JSON alone.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["INF", "Profile", "PROFILES", "FULL_COST", "RunSpec", "EVAL_PARTS", "E1_RUNS", "E5_RUNS", "RUNS", "P1",
           "PINF", "R1", "RINF", "PAPER", "EXPERIMENTS"]

INF = math.inf


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

# Estimated cost of the full profile (the package docstring says how it was derived); shown in the report.
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

# The experiments' JSON (and figure) names under OUT, in report order.
EXPERIMENTS = ("e1_p_sweep", "e2_convergence", "e3_sampling_steps", "e4_discrepancy", "e5_residual")
