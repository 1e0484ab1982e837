"""The six training runs: one ``dreamsr.jobs.train.train`` call each (resumed, or skipped when finished), the
equivalent ``dreamsr train`` command line, and what a run's metrics.jsonl says about its time and progress."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable

from .common import jsonl_records
from .profiles import Profile, RunSpec

__all__ = ["train_config", "cli_command", "run_finished", "train_run", "train_seconds", "last_step"]


def train_config(spec: RunSpec, prof: Profile, run_dir: Path, data: Path, device: str, precision: str,
                 workers: int | None) -> Any:
    """The TrainConfig of one run: everything but p and the target is shared by all runs."""
    from dreamsr.jobs.train import TrainConfig

    return TrainConfig(
        dataset="folder", data_dir=str(data / "train"), val_dir=str(data / "val"), scale=prof.scale,
        patch=prof.patch, family="sr3", preset=prof.preset, target=spec.target, p=spec.p, steps=prof.steps,
        lr_schedule="constant",
        batch_size=prof.batch_size, lr=prof.lr, lr_warmup=prof.lr_warmup, ema_decay=prof.ema_decay, seed=prof.seed,
        device=device, precision=precision, run_dir=str(run_dir), save_every=prof.save_every, keep=2,
        log_every=max(1, min(10, prof.val_every)), val_every=prof.val_every, val_count=prof.val_count,
        val_crop=prof.val_crop, val_steps=prof.val_steps, workers=prof.workers if workers is None else workers,
        cache_mb=1024, resume="auto")


def cli_command(cfg: Any) -> str:
    """The ``dreamsr train`` command line equivalent to ``cfg`` (options that differ from the defaults)."""
    from dreamsr.jobs.train import TrainConfig

    default = TrainConfig()
    parts = ["dreamsr train"]
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if v == getattr(default, f.name) or isinstance(v, bool) or f.name in ("resume",):
            continue
        parts.append(f"--{f.name.replace('_', '-')} {f'{v:g}' if isinstance(v, float) else v}")
    parts.append("--resume auto")
    return " ".join(parts)


def run_finished(run_dir: Path, steps: int) -> bool:
    """Whether the run in ``run_dir`` finished ``steps`` steps (its last checkpoint and its exported
    model.safetensors say so). SystemExit when it was trained past them (another profile's run)."""
    from dreamsr.checkpoint import read_info
    from dreamsr.jobs.train import latest_checkpoint

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
    from dreamsr.jobs.train import train

    run_dir = out / "runs" / spec.name
    cfg = train_config(spec, prof, run_dir, data, device, precision, workers)
    if run_finished(run_dir, prof.steps):
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


def train_seconds(metrics_jsonl: str | os.PathLike) -> float:
    """Training wall time of a run, summed over its sessions (each "resume" event starts a new ``elapsed``)."""
    total, last = 0.0, 0.0
    for rec in jsonl_records(metrics_jsonl):
        if rec.get("event") == "resume":
            total, last = total + last, 0.0
        elif "elapsed" in rec:
            last = float(rec["elapsed"])
    return total + last


def last_step(metrics_jsonl: Path) -> int:
    """The last optimizer step a run logged (its progress when it was stopped)."""
    return max((int(rec.get("step", 0)) for rec in jsonl_records(metrics_jsonl)), default=0)
