"""`dreamsr train`: DREAM training from the command line (single process, or DDP under ``python -m dreamsr.launch``).

Every option maps to a field of :class:`dreamsr.jobs.train.TrainConfig`; an option not given keeps the
TrainConfig default, or, with ``--resume``, the value stored in the checkpoint (so
``dreamsr train --resume runs/x --steps 40000`` continues a run with its own settings).
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Optional

import typer

from dreamsr.cli.common import console, fail, is_tty
from dreamsr.errors import ConfigError

def _parse_p(text: str) -> float:
    t = text.strip().lower()
    if t in ("inf", "infinity", "+inf"):
        return math.inf
    try:
        v = float(t)
    except ValueError:
        raise ConfigError(f"--p must be a number >= 0 or 'inf', got {text!r}") from None
    if not (v >= 0):
        raise ConfigError(f"--p must be >= 0 or 'inf', got {text!r}")
    return v


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _Display:
    """Turns TrainEvents into a rich live line (terminal) or plain log lines (pipes, files)."""

    def __init__(self, total: int, live: bool, threads: str = "") -> None:
        self.total = total
        self.threads = threads
        self.live = live
        self.step_time: float | None = None
        self.loss: float | None = None
        self.ips: float | None = None
        self.val: str = "-"
        self.last_val: dict[str, Any] | None = None  # the latest "val" event's data (psnr, bicubic_psnr, ...)
        self.stop_requested = False
        self.progress = None
        self.task = None

    def __enter__(self) -> "_Display":
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), console=console, transient=False)
            self.progress.__enter__()
            self.task = self.progress.add_task("train", total=self.total, info="starting")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def line(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, soft_wrap=True)
        else:
            console.print(text, soft_wrap=True, markup=False, highlight=False)

    def status(self, step: int) -> str:
        eta = (self.total - step) * self.step_time if self.step_time else float("nan")
        loss = f"{self.loss:.4f}" if self.loss is not None else "-"
        ips = f"{self.ips:.1f}" if self.ips is not None else "-"
        return f"loss {loss}  {ips} img/s  eta {_fmt_time(eta)}  val {self.val}"

    def below_bicubic(self) -> str | None:
        """One warning line when the latest validation put the model below bicubic in PSNR-Y, else None."""
        v = self.last_val
        if v is None or v["psnr"] >= v["bicubic_psnr"]:
            return None
        return (f"warning: at step {v['step']} the model is {v['bicubic_psnr'] - v['psnr']:.2f} dB below bicubic on "
                f"validation (PSNR-Y {v['psnr']:.2f} vs {v['bicubic_psnr']:.2f}): train longer before using it "
                f"(--resume with a larger --steps)")

    def __call__(self, ev: Any) -> bool:
        d = ev.data
        if ev.kind == "start":
            self.total = ev.total_steps
            what = f"resumed from {d['resumed_from']} at step {ev.step}" if d.get("resumed_from") else "started"
            self.line(f"train {what}: {d['images']} training images, {d['val_images']} validation images, "
                      f"{d['parameters'] / 1e6:.2f} M parameters, {d['device']} {d['precision']}"
                      f"{', ' + self.threads if d['device'] == 'cpu' and self.threads else ''}, "
                      f"{d['world_size']} process(es)")
            if self.progress is not None:
                self.progress.update(self.task, total=self.total, completed=ev.step)
        elif ev.kind == "step":
            st = d["step_time"]
            self.step_time = st if self.step_time is None else 0.8 * self.step_time + 0.2 * st
            self.loss, self.ips = d["loss"], d["images_per_s"]
            if self.progress is not None:
                self.progress.update(self.task, completed=ev.step, info=self.status(ev.step))
            else:
                self.line(f"step {ev.step}/{self.total}  loss {d['loss']:.4f}  lr {d['lr']:.3g}  "
                          f"{d['images_per_s']:.1f} img/s  {st:.3f} s/step  data {d['data_time'] * 1e3:.1f} ms  "
                          f"eta {_fmt_time((self.total - ev.step) * self.step_time)}")
        elif ev.kind == "val":
            self.val = f"{d['psnr']:.2f} dB (bicubic {d['bicubic_psnr']:.2f})"
            self.last_val = {**d, "step": ev.step}
            self.line(f"val step {ev.step}: PSNR-Y {d['psnr']:.2f} dB (bicubic {d['bicubic_psnr']:.2f}), "
                      f"SSIM-Y {d['ssim']:.4f} (bicubic {d['bicubic_ssim']:.4f}) -> {d['grid']}")
        elif ev.kind == "checkpoint":
            self.line(f"checkpoint step {ev.step}: {d['path']}")
        elif ev.kind == "end":
            how = "stopped" if d.get("stopped") else "finished"
            self.line(f"train {how} at step {ev.step}; model: {d.get('export')}")
            below = self.below_bicubic()
            if below is not None:
                self.line(below)
        return self.stop_requested


def train(
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Data set layout: div2k, flickr2k, df2k, ffhq, "
                                          "celebahq, folder, paired. (default: folder)", rich_help_panel="Data"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Root of the data set (default: $DREAMSR_DATA); "
                                            "for 'folder', the folder of HR images.", rich_help_panel="Data"),
    val_dir: Optional[Path] = typer.Option(None, "--val-dir", help="Folder of held-out HR images for validation.",
                                           rich_help_panel="Data"),
    val_dataset: Optional[str] = typer.Option(None, "--val-dataset", help="Use this layout's val split for "
                                              "validation (e.g. div2k).", rich_help_panel="Data"),
    scale: Optional[int] = typer.Option(None, "--scale", min=1, help="Upscaling factor. (default: 4)",
                                        rich_help_panel="Data"),
    patch: Optional[int] = typer.Option(None, "--patch", min=0, help="HR crop size (0: 160, faces 128). "
                                        "(default: 128, the default model's)", rich_help_panel="Data"),
    hr_downscale: Optional[int] = typer.Option(None, "--hr-downscale", min=1, help="Shrink training HR images by "
                                               "this factor first (clears JPEG artefacts). (default: 1)",
                                               rich_help_panel="Data"),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="Random flips/rotations. "
                                           "(default: augment)", rich_help_panel="Data"),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Loader processes. (default: 2)",
                                          rich_help_panel="Data"),
    cache_mb: Optional[int] = typer.Option(None, "--cache-mb", min=0, help="Decoded-image cache (MiB). "
                                           "(default: 4096)", rich_help_panel="Data"),
    family: Optional[str] = typer.Option(None, "--family", help="Model family: sr3 (a UNet on the bicubic "
                                         "upsample), idm (any scale up to --scale), resshift (few-step residual "
                                         "shifting). (default: resshift, the default model's family)", rich_help_panel="Model"),
    preset: Optional[str] = typer.Option(None, "--preset", help="The family's preset (sr3: tiny, small, base, "
                                         "sr3-div2k, sr3-face; idm: tiny, small, face; resshift: tiny, small, "
                                         "small-pixel, ...). (default: small)", rich_help_panel="Model"),
    process: Optional[str] = typer.Option(None, "--process", help="Diffusion process: gaussian or shift. "
                                          "(default: the family's own)", rich_help_panel="Model"),
    shift: Optional[str] = typer.Option(None, "--shift", help="Shift process schedule: v1 (15 steps) or v3 (4 "
                                        "steps). (default: v1)", rich_help_panel="Model"),
    mask_rule: Optional[str] = typer.Option(None, "--mask-rule", help="resshift: the shifted-window attention mask, "
                                            "swin (the Swin paper's mask) or release (what the released ResShift "
                                            "code computes; matches the released code). (default: swin)",
                                            rich_help_panel="Model"),
    resize_rule: Optional[str] = typer.Option(None, "--resize-rule", help="idm: the LR encoder's nearest-resize "
                                              "index, exact or release (the float32 index of the released IDM "
                                              "code; matches the released code). (default: exact)",
                                              rich_help_panel="Model"),
    max_scale: Optional[float] = typer.Option(None, "--max-scale", help="idm: the largest scale of the network's "
                                              "range (trained scales are drawn per step up to --scale). "
                                              "(default: the preset's)", rich_help_panel="Model"),
    dropout: Optional[float] = typer.Option(None, "--dropout", min=0.0, max=0.99, help="Override the preset's "
                                            "dropout.", rich_help_panel="Model"),
    embed_scale: Optional[float] = typer.Option(None, "--embed-scale", help="Override the preset's noise-level "
                                                "embedding scale.", rich_help_panel="Model"),
    target: Optional[str] = typer.Option(None, "--target", help="What is diffused: image (the paper) or residual "
                                         "(HR - bicubic; use it for small CPU-trained models). (default: image)",
                                         rich_help_panel="Model"),
    residual_scale: Optional[float] = typer.Option(None, "--residual-scale", help="Residual multiplier. "
                                                   "(default: 1.5)", rich_help_panel="Model"),
    p: Optional[str] = typer.Option(None, "--p", help="DREAM exponent: 0 (DRM), 1 (DREAM), 2, ..., inf (standard "
                                    "training). (default: 1)", rich_help_panel="Objective"),
    dream_lambda: Optional[str] = typer.Option(None, "--dream-lambda", help="lambda_t rule of the shift process: "
                                               "input (noise std of the scaled network input) or vp (the kernel "
                                               "rewritten as a variance-preserving process). (default: input)",
                                               rich_help_panel="Objective"),
    independent_noise: Optional[bool] = typer.Option(None, "--independent-noise/--same-noise", help="Fresh noise "
                                                     "for the rectified input (Eq. 13). (default: same-noise)",
                                                     rich_help_panel="Objective"),
    loss: Optional[str] = typer.Option(None, "--loss", help="l1 or l2. (default: the process's: l2 for shift, l1 "
                                       "for gaussian)", rich_help_panel="Objective"),
    steps: Optional[int] = typer.Option(None, "--steps", min=0, help="Total optimizer steps; the cosine "
                                        "schedule ends here. (default: 20000, about the default model's 22 829)",
                                        rich_help_panel="Optimisation"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Global batch (split over GPUs). "
                                             "(default: 8)", rich_help_panel="Optimisation"),
    lr: Optional[float] = typer.Option(None, "--lr", min=0.0, help="Adam learning rate (peak). (default: 2e-4)",
                                       rich_help_panel="Optimisation"),
    lr_warmup: Optional[int] = typer.Option(None, "--lr-warmup", min=0, help="Linear warm-up steps. (default: 200)",
                                            rich_help_panel="Optimisation"),
    lr_schedule: Optional[str] = typer.Option(None, "--lr-schedule", help="constant or cosine (to lr/10 at "
                                              "--steps). (default: cosine)", rich_help_panel="Optimisation"),
    grad_clip: Optional[float] = typer.Option(None, "--grad-clip", min=0.0, help="Max gradient norm (0: off). "
                                              "(default: 1.0)", rich_help_panel="Optimisation"),
    ema_decay: Optional[float] = typer.Option(None, "--ema-decay", min=0.0, max=0.999999, help="EMA decay. "
                                              "(default: 0.999)", rich_help_panel="Optimisation"),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of data, noise and weights. (default: 0)",
                                       rich_help_panel="Optimisation"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N, mps. (default: auto)",
                                         rich_help_panel="Hardware"),
    precision: Optional[str] = typer.Option(None, "--precision", help="auto, fp32, bf16, fp16 (CUDA). "
                                            "(default: auto)", rich_help_panel="Hardware"),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="NHWC layout "
                                                 "(default: on CUDA only).", rich_help_panel="Hardware"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for PyTorch (default: the "
                                          "cores other programs leave free when the run starts, kept for the whole "
                                          "run; OMP_NUM_THREADS is respected). Give the same value across --resume "
                                          "for bit-exact continuation.", rich_help_panel="Hardware"),
    run_dir: Optional[Path] = typer.Option(None, "--output", "-o", "--run-dir", help="Run folder: checkpoints, "
                                           "metrics, model.safetensors (--run-dir: the same). (default: runs/dreamsr)",
                                           rich_help_panel="Run"),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue exactly from a checkpoint file, a run "
                                         "folder (its latest checkpoint) or 'auto' (--output's, if any).",
                                         rich_help_panel="Run"),
    init_weights: Optional[Path] = typer.Option(None, "--init-weights", help="Start a new run from these "
                                                "weights (a dreamsr .safetensors with the same preset, target and "
                                                "scale): fine-tuning, with a fresh optimizer and step 0.",
                                                rich_help_panel="Run"),
    save_every: Optional[int] = typer.Option(None, "--save-every", min=0, help="Checkpoint interval. "
                                             "(default: 1000)", rich_help_panel="Run"),
    keep: Optional[int] = typer.Option(None, "--keep", min=1, help="Checkpoints kept. (default: 3)",
                                       rich_help_panel="Run"),
    log_every: Optional[int] = typer.Option(None, "--log-every", min=1, help="Metrics interval. (default: 10)",
                                            rich_help_panel="Run"),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", min=0.0, help="Stop cleanly after this many "
                                               "minutes (0: none).", rich_help_panel="Run"),
    stop_at: Optional[int] = typer.Option(None, "--stop-at", min=0, help="Stop cleanly after this step, keeping "
                                          "the learning-rate schedule of --steps; --resume continues (0: off).",
                                          rich_help_panel="Run"),
    export_dtype: Optional[str] = typer.Option(None, "--export-dtype", help="fp32, fp16 or bf16 for "
                                               "model.safetensors. (default: fp32)", rich_help_panel="Run"),
    export_ema: Optional[bool] = typer.Option(None, "--export-ema/--export-raw", help="Export EMA or raw weights. "
                                              "(default: export-ema)", rich_help_panel="Run"),
    export_only: bool = typer.Option(False, "--export-only", help="Only write model.safetensors from the --resume "
                                     "checkpoint (into --output, default: its run folder), then exit.",
                                     rich_help_panel="Run"),
    val_every: Optional[int] = typer.Option(None, "--val-every", min=0, help="Validation interval (0: never). "
                                            "(default: 1000)", rich_help_panel="Validation"),
    val_count: Optional[int] = typer.Option(None, "--val-count", min=0, help="Validation images. (default: 4)",
                                            rich_help_panel="Validation"),
    val_crop: Optional[int] = typer.Option(None, "--val-crop", min=0, help="Centre crop of each validation image "
                                           "(HR px, 0: whole). (default: 128)", rich_help_panel="Validation"),
    val_steps: Optional[int] = typer.Option(None, "--val-steps", min=1, help="Sampler steps. (default: 20; a shift process: its own T)",
                                            rich_help_panel="Validation"),
    val_sampler: Optional[str] = typer.Option(None, "--val-sampler", help="ddim or ddpm. (default: the process's: ddim, shift: ddpm)",
                                              rich_help_panel="Validation"),
) -> None:
    """Train a DREAM super-resolution model (resumable, validated, DDP over several processes).

    The defaults are the recipe of the default model dreamsr-x4-resshift: ResShift small on the shift process
    (v1: 15 steps, MSE to x0), 128² HR crops, batch 8, lr 2e-4 with 200 warm-up steps and a cosine decay to 2e-5,
    EMA 0.999, 20 000 steps from scratch (the default model had 22 829 in two stages; on one thread of a 2-core
    Xeon a step takes 0.25-0.33 s, so about 1.5-2 h), DREAM p = 1 (the shipped model: 22 829 standard steps,
    then 2000 DREAM steps, which beat 2000 more standard ones at 15 sampling steps). Give --val-dir
    or --val-dataset to see PSNR against bicubic as it trains.

    Examples:

      dreamsr train --dataset folder --data-dir photos/ --val-dir val/          (the default model's recipe)

      dreamsr train --family sr3 --target residual --dataset folder --data-dir photos/ --val-dir val/ --patch 64

      dreamsr train --resume runs/dreamsr --steps 40000          (continue a run with its own settings)

      python -m dreamsr.launch --standalone --nproc_per_node 4 train --dataset df2k --data-dir /data --p 1
      (DDP: torchrun's options before `train`, dreamsr's after it; see `python -m dreamsr.launch --help`)
    """
    from dreamsr.threads import setup as setup_threads

    thread_plan = setup_threads(threads)  # before torch loads (its OpenMP reads the waiting behaviour then)
    from dreamsr.jobs.train import TrainConfig, export_from_state, read_state_config, train as run_train

    given: dict[str, Any] = {
        "dataset": dataset, "data_dir": str(data_dir) if data_dir else None, "val_dir": str(val_dir) if val_dir else None,
        "val_dataset": val_dataset, "scale": scale, "patch": patch, "hr_downscale": hr_downscale, "augment": augment,
        "workers": workers, "cache_mb": cache_mb, "family": family, "preset": preset, "process": process,
        "shift": shift, "mask_rule": mask_rule, "resize_rule": resize_rule, "max_scale": max_scale, "dropout": dropout, "embed_scale": embed_scale,
        "target": target, "residual_scale": residual_scale, "p": _parse_p(p) if p is not None else None,
        "dream_lambda": dream_lambda, "independent_noise": independent_noise, "loss": loss, "steps": steps, "batch_size": batch_size, "lr": lr,
        "lr_warmup": lr_warmup, "lr_schedule": lr_schedule, "grad_clip": grad_clip, "ema_decay": ema_decay,
        "seed": seed, "device": device, "precision": precision, "channels_last": channels_last,
        "run_dir": str(run_dir) if run_dir else None, "save_every": save_every, "keep": keep, "log_every": log_every,
        "time_limit": time_limit * 60 if time_limit is not None else None, "stop_at": stop_at,
        "export_dtype": export_dtype, "export_ema": export_ema, "val_every": val_every, "val_count": val_count,
        "val_crop": val_crop, "val_steps": val_steps, "val_sampler": val_sampler,
        "init_weights": str(init_weights) if init_weights else None,
    }
    given = {k: v for k, v in given.items() if v is not None}

    base = TrainConfig()
    if resume is not None:
        src: Path | None = None
        if resume == "auto":
            from dreamsr.jobs.train import latest_checkpoint

            src = latest_checkpoint(given.get("run_dir", base.run_dir))
        else:
            src = Path(resume).expanduser()
        if src is not None:
            base = read_state_config(src)
            if "run_dir" not in given and resume != "auto":
                given["run_dir"] = str(src if src.is_dir() else src.parent.parent)
        given["resume"] = resume
        given.setdefault("stop_at", 0)  # --stop-at applies to one invocation; a resume trains on unless told

    if export_only:
        if resume is None or resume == "auto" and src is None:
            fail("--export-only needs --resume CHECKPOINT_OR_RUN_DIR", 2)
        cfg = dataclasses.replace(base, **given)
        out = export_from_state(resume if resume != "auto" else cfg.run_dir,
                                Path(cfg.run_dir) / "model.safetensors", dtype=cfg.export_dtype, ema=cfg.export_ema)
        console.print(f"exported {out}", soft_wrap=True)
        return

    cfg = dataclasses.replace(base, **given)
    live = is_tty() and int(os.environ.get("RANK", "0")) == 0
    display = _Display(cfg.steps, live, thread_plan.describe())

    def on_sigint(signum: int, frame: Any) -> None:
        if display.stop_requested:
            raise KeyboardInterrupt
        display.stop_requested = True
        display.line("stopping after this step (checkpoint + export); press Ctrl-C again to abort")

    previous = signal.signal(signal.SIGINT, on_sigint)
    t0 = time.perf_counter()
    try:
        with display:
            result = run_train(cfg, callback=display)
    finally:
        signal.signal(signal.SIGINT, previous)
    if int(os.environ.get("RANK", "0")) == 0:
        console.print(f"done in {_fmt_time(time.perf_counter() - t0)}: {result.step} steps, "
                      f"model {result.export}, run folder {result.run_dir}", soft_wrap=True)
