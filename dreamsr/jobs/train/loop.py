"""The training loop: :func:`train` sets a run up once (:class:`_Run`) and takes ``config.steps`` optimizer steps.

One step (:meth:`_Run.step`): the batch of step k, its noise levels and noises from ``(seed, sample index)``,
the process's DREAM loss (Algorithm 3) on the family's network, Adam, EMA. Around the steps: logging, stop
requests, checkpoints with the export, and validation.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from dreamsr.checkpoint import load_state_strict
from dreamsr.data import SRTrainDataset, make_loader, mix_seed
from dreamsr.errors import ConfigError, TrainingError
from dreamsr.files import atomic_write_text, dumps_json
from dreamsr.images import resize, to_model
from dreamsr.processes import build_process
from dreamsr.processes.base import Process
from dreamsr.runtime import autocast, resolve_precision
from dreamsr.jobs.train.config import TrainConfig
from dreamsr.jobs.train.distributed import Dist, TrainNet, init_distributed
from dreamsr.jobs.train.state import (TrainState, check_resume_config, checkpoint_name, export_weights,
                                 list_checkpoints, load_init_weights, read_state, resolve_resume, save_state,
                                 stale_temporaries)
from dreamsr.jobs.train.validation import load_validation_images, validate

__all__ = ["TrainEvent", "TrainResult", "Callback", "train", "sample_noise"]


@dataclass
class TrainEvent:
    """What the loop reports to the callback.

    ``kind``: "start" (data: resumed_from, world_size, device, precision, parameters, images),
    "step" (every log interval; data: loss, lr, step_time, data_time, images_per_s),
    "val" (data: psnr, ssim, bicubic_psnr, bicubic_ssim, grid), "checkpoint" (data: path),
    "end" (data: export, stopped).
    """

    kind: str
    step: int
    total_steps: int
    data: dict = field(default_factory=dict)


@dataclass
class TrainResult:
    """Outcome of :func:`train`."""

    run_dir: Path
    step: int  # optimizer steps completed
    export: Path | None  # the inference checkpoint written (rank 0), or None
    checkpoint: Path | None  # the last training-state checkpoint written, or None
    last_loss: float | None  # mean loss of the last log interval
    last_val: dict | None  # metrics of the last validation
    stopped: bool = False  # True when a callback or the time limit stopped the run early
    model: nn.Module | None = field(default=None, repr=False)  # the trained network (this rank's copy, train mode)
    ema: nn.Module | None = field(default=None, repr=False)  # its EMA (eval mode)


Callback = Callable[[TrainEvent], "bool | None"]


def train(config: TrainConfig, callback: Callback | None = None) -> TrainResult:
    """Train (or resume) a DREAM super-resolution model as ``config`` says; see :mod:`dreamsr.jobs.train`.

    Raises ConfigError for bad options, DatasetError for missing data, CheckpointError for an unreadable
    checkpoint, TrainingError when the loss becomes NaN/inf (the last good checkpoint is kept) or a resume
    does not match the checkpoint's settings.
    """
    dist = init_distributed(config.device)
    try:
        # the loop re-seeds the global generators (weights init, per-step dropout): give the caller theirs back
        cuda_devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=cuda_devices):
            return _Run(config, dist, callback).fit()
    finally:
        dist.close()


def sample_noise(seed: int, indices: list[int], process: Process, shape: tuple[int, ...]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample level [B] and noise ε [B, *shape] (float32) of the global samples ``indices``.

    Sample g draws its level (``process.training_level``; Alg. 3 line 2) and then its ε from its own CPU
    generator seeded by (seed, g): the draws of a sample do not depend on the batch, the rank or a resume.
    """
    levels, epss = [], []
    for g in indices:
        gen = torch.Generator()
        gen.manual_seed(mix_seed(seed, 3, g))
        levels.append(process.training_level(1, gen))
        epss.append(torch.randn(shape, generator=gen))
    return torch.cat(levels), torch.stack(epss)


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(dumps_json(record) + "\n")


@dataclass
class _Interval:
    """Sums over one log interval; checkpoint and validation time ("aside") is left out of the step time."""

    start: float
    loss: float = 0.0
    n: int = 0
    data: float = 0.0
    aside: float = 0.0


class _Run:
    """One call of :func:`train`: set up once (device, network, process, optimizer, data, run folder), then
    :meth:`fit` loops over :meth:`step`."""

    def __init__(self, cfg: TrainConfig, dist: Dist, callback: Callback | None) -> None:
        self.cfg, self.dist, self.callback = cfg, dist, callback
        self.device = dist.device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        if self.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("fp16 training needs a CUDA device; use bf16 or fp32")
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else self.device.type == "cuda"
        if cfg.batch_size % dist.world:
            raise ConfigError(f"batch size {cfg.batch_size} is not divisible by the {dist.world} processes")

        self.family = cfg.model_family()
        self.net_config = cfg.network_config()
        # HR pixels an HR side must be a multiple of: the network's size multiple in the signal space
        multiple = self.family.size_multiple(self.net_config) * self.family.factor(self.net_config)
        if cfg.hr_patch % cfg.scale or cfg.hr_patch % multiple:
            raise ConfigError(f"patch {cfg.hr_patch} must be a multiple of the scale {cfg.scale} and of "
                              f"{multiple} (the {cfg.preset} network's size multiple)")
        lo, hi = self.family.scales(self.net_config, cfg.scale)
        if lo < hi and not lo <= cfg.scale <= hi:
            raise ConfigError(f"--scale {cfg.scale} (the largest scale trained) is outside the {cfg.family} "
                              f"network's range x{lo:g} to x{hi:g}")
        # a continuous-scale family trains on a scale drawn per step in [lo, scale] (IDM); None: the fixed scale
        self.scale_range = (lo, float(cfg.scale)) if lo < hi else None
        self.run_dir = Path(cfg.run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"

        self.resume_path = resolve_resume(cfg.resume, self.run_dir) if cfg.resume else None
        saved: TrainState | None = None
        if self.resume_path is not None:
            saved = read_state(self.resume_path)
            check_resume_config(saved.config, cfg, self.resume_path)
        self.start_step = saved.step if saved is not None else 0
        self._build_model(saved)
        del saved
        # the process runs in the signal space of the network's first stage (pixels for sr3/idm)
        self.process = build_process(cfg.process_name(), cfg.diffusion_config(), self.family.space_of(self.model))

        self.dataset = SRTrainDataset(cfg.data_config(), workers=cfg.workers)
        if cfg.cache_mb > 0:
            self.dataset.preload()  # before the workers fork, so they share the decoded images
        self.loader = make_loader(self.dataset, cfg.batch_size, self.start_step, cfg.steps, workers=cfg.workers,
                                  rank=dist.rank, world=dist.world, pin_memory=self.device.type == "cuda")
        self.val_images: list[tuple[str, torch.Tensor]] = []
        if dist.main and cfg.val_every > 0:
            self.val_images = load_validation_images(cfg, multiple)

        self.metrics_path = self.run_dir / "metrics.jsonl"
        if dist.main:
            self._prepare_run_folder()

        self.step_done = self.start_step
        self.last_ckpt: Path | None = self.resume_path
        self.export_path: Path | None = None
        self.last_loss: float | None = None
        self.last_val: dict | None = None
        self.stopped = False

    # --- set-up ---------------------------------------------------------------------------------------------
    def _build_model(self, saved: TrainState | None) -> None:
        """Network, EMA, optimizer (and loss scaler) as new, as saved, or from ``init_weights``."""
        cfg = self.cfg
        torch.manual_seed(mix_seed(cfg.seed, 0))  # initial weights
        model = self.family.build(self.net_config)
        ema = self.family.build(self.net_config)
        ema.load_state_dict(model.state_dict())
        if saved is not None:
            load_state_strict(model, saved.weights("model"), str(saved.path))
            load_state_strict(ema, saved.weights("ema"), str(saved.path))
        elif cfg.init_weights:
            load_init_weights(cfg, model, ema)  # a fine-tuning run: both start from the given weights
        model.to(self.device)
        ema.to(self.device).eval().requires_grad_(False)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
            ema.to(memory_format=torch.channels_last)
        model.train()
        self.opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                    weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        if saved is not None:
            saved.restore_training(self.opt, self.scaler)
        self.model, self.ema = model, ema
        self.params = list(model.parameters())
        self.ema_params = list(ema.parameters())
        self.n_params = sum(p.numel() for p in self.params)
        self.net = TrainNet(model, self.dist.wrap(model, self.device), self.channels_last)

    def _prepare_run_folder(self) -> None:
        cfg = self.cfg
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        for stale in stale_temporaries(self.run_dir):
            stale.unlink(missing_ok=True)  # left by a run killed while saving
        from dreamsr import __version__

        resolved = {"config": cfg.to_dict(), "family": cfg.family, "process": cfg.process_name(),
                    "network": self.net_config.to_dict(), "diffusion": cfg.diffusion_config().to_dict(),
                    "hr_patch": cfg.hr_patch, "device": str(self.device), "precision": self.precision,
                    "channels_last": self.channels_last, "world_size": self.dist.world,
                    "train_images": len(self.dataset), "val_images": [n for n, _ in self.val_images],
                    "parameters": self.n_params, "torch": torch.__version__, "dreamsr": __version__,
                    "resumed_from": str(self.resume_path) if self.resume_path else None,
                    "start_step": self.start_step}
        atomic_write_text(self.run_dir / "config.json", dumps_json(resolved, indent=2))
        if self.resume_path is not None:
            _append_jsonl(self.metrics_path, {"event": "resume", "step": self.start_step,
                                              "from": str(self.resume_path)})

    # --- the loop -------------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg, dist = self.cfg, self.dist
        self._emit("start", self.start_step, {
            "resumed_from": str(self.resume_path) if self.resume_path else None, "world_size": dist.world,
            "device": str(self.device), "precision": self.precision, "parameters": self.n_params,
            "images": len(self.dataset), "val_images": len(self.val_images)})
        # --stop-at ends this invocation early without changing the schedule; a checkpoint already past it trains
        # nothing (so a script replaying a run in parts can be rerun after an interruption)
        end_step = min(cfg.steps, max(cfg.stop_at, self.start_step)) if cfg.stop_at else cfg.steps
        t_start = time.perf_counter()
        self.interval = _Interval(time.perf_counter())
        pending_stop = False  # a "val" callback asked to stop: honoured after the next step, on every rank
        batches = iter(self.loader)
        try:
            for k in range(self.start_step, end_step):
                t_data = time.perf_counter()
                batch = next(batches)
                self.interval.data += time.perf_counter() - t_data
                loss, lr_now = self.step(k, batch)
                self.step_done = step = k + 1
                self.interval.loss += loss
                self.interval.n += 1

                stop = False
                if step % cfg.log_every == 0 or step == cfg.steps:
                    stop = self._log(step, lr_now, t_start)
                if cfg.time_limit and time.perf_counter() - t_start >= cfg.time_limit:
                    stop = True
                if step == end_step < cfg.steps:
                    stop = True  # --stop-at reached: checkpoint + export, --resume continues the schedule
                stop = dist.any(stop or pending_stop, self.device)

                last = step == cfg.steps
                t_aside = time.perf_counter()
                if dist.main and (last or stop or (cfg.save_every and step % cfg.save_every == 0)):
                    self._save(step)
                if dist.main and cfg.val_every and (last or step % cfg.val_every == 0) and not stop:
                    pending_stop = self._validate(step)
                self.interval.aside += time.perf_counter() - t_aside
                if stop:
                    self.stopped = True
                    break
        finally:
            del batches

        if dist.main and self.start_step >= end_step and self.resume_path is not None:
            self.export_path = self._export(self.start_step)  # nothing left to train: still give the user the export
        dist.barrier()
        self._emit("end", self.step_done, {"export": str(self.export_path) if self.export_path else None,
                                           "stopped": self.stopped,
                                           "checkpoint": str(self.last_ckpt) if self.last_ckpt else None})
        return TrainResult(run_dir=self.run_dir, step=self.step_done, export=self.export_path,
                           checkpoint=self.last_ckpt, last_loss=self.last_loss, last_val=self.last_val,
                           stopped=self.stopped, model=self.model, ema=self.ema)

    def _rescale(self, k: int, hr: torch.Tensor, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A continuous-scale family's batch at step ``k``'s scale s ~ U[lo, scale] (one draw per step, the same on
        every rank, seeded by (seed, k)): the HR crop resized to round(s * LR side) (antialiased bicubic), the
        bicubic upsample of the LR crop at that size; the LR crop is kept (IDM's training: LR fixed, HR varies)."""
        assert self.scale_range is not None
        lo, hi = self.scale_range
        gen = torch.Generator().manual_seed(mix_seed(self.cfg.seed, 6, k))
        s = lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))
        size = (max(1, round(s * lr.shape[-2])), max(1, round(s * lr.shape[-1])))
        return resize(hr, size).clamp(0, 1), resize(lr, size)  # the upsample is not clamped, as the loader's

    def step(self, k: int, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> tuple[float, float]:
        """Optimizer step ``k`` (0-based) on its batch (HR, LR, bicubic upsample; [0, 1]): Alg. 3, Adam, EMA.
        Returns (the loss averaged over the ranks, the learning rate used)."""
        cfg, dev = self.cfg, self.device
        hr, lr, up = batch
        if self.scale_range is not None:
            hr, up = self._rescale(k, hr, lr)
        up = to_model(up.to(dev, non_blocking=True))
        if self.channels_last:
            up = up.contiguous(memory_format=torch.channels_last)
        y0 = self.process.to_signal(to_model(hr.to(dev, non_blocking=True)), up)  # what is diffused
        anchor = self.process.anchor(up)
        # what the network sees (at the signal's size for a family whose condition lives there)
        cond = self.family.condition(to_model(lr.to(dev, non_blocking=True)), up, tuple(y0.shape[-2:]))
        if self.channels_last:
            cond = cond.contiguous(memory_format=torch.channels_last)
        local_b = cfg.batch_size // self.dist.world
        base = k * cfg.batch_size + self.dist.rank * local_b  # global index of this rank's first sample
        level, eps = sample_noise(cfg.seed, list(range(base, base + local_b)), self.process, tuple(y0.shape[1:]))
        eps = eps.to(dev, non_blocking=True)
        torch.manual_seed(mix_seed(cfg.seed, 4, k, self.dist.rank))  # dropout of this step
        indep_gen = None
        if cfg.independent_noise:
            indep_gen = torch.Generator()
            indep_gen.manual_seed(mix_seed(cfg.seed, 5, k, self.dist.rank))
        lr_now = cfg.lr_at(k)
        for g in self.opt.param_groups:
            g["lr"] = lr_now

        with autocast(dev, self.precision):
            per = self.process.loss(self.net, y0, cond, anchor, cfg.p, level=level, eps=eps, generator=indep_gen,
                                    independent_noise=cfg.independent_noise, dream_lambda=cfg.dream_lambda,
                                    **({} if cfg.loss is None else {"loss": cfg.loss}))
        loss = per.mean()
        loss_f = float(self.dist.mean(loss.detach().float()))
        if not math.isfinite(loss_f):
            raise TrainingError(f"loss became {loss_f} at step {k + 1}; training stopped and {self._last_good()}. "
                                "Resume from it with a lower --lr, --precision fp32 or bf16, or a --grad-clip")

        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
        else:
            loss.backward()
        if cfg.grad_clip > 0:
            gnorm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            if self.scaler is None and not bool(torch.isfinite(gnorm)):
                raise TrainingError(f"gradient norm became {float(gnorm)} at step {k + 1}; training stopped "
                                    f"and {self._last_good()}. Resume from it with a lower --lr or --precision fp32")
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()

        # EMA (warm-up as in common practice: short runs still get a meaningful average)
        d = cfg.ema_decay
        if cfg.ema_warmup:
            d = min(d, (1 + k) / (10 + k))
        with torch.no_grad():
            for e, p in zip(self.ema_params, self.params):
                e.lerp_(p.detach(), 1.0 - d)
        return loss_f, lr_now

    # --- around the steps -----------------------------------------------------------------------------------
    def _emit(self, kind: str, step: int, data: dict) -> bool:
        """Report to the callback (rank 0); True when it asks to stop."""
        if self.callback is None or not self.dist.main:
            return False
        return bool(self.callback(TrainEvent(kind, step, self.cfg.steps, data)))

    def _last_good(self) -> str:
        return f"the last good checkpoint is {self.last_ckpt}" if self.last_ckpt else "no checkpoint was saved yet"

    def _log(self, step: int, lr_now: float, t_start: float) -> bool:
        """Close the log interval: a metrics.jsonl line and a "step" event. True when the callback asks to stop."""
        cfg, iv = self.cfg, self.interval
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        step_time = (now - iv.start - iv.aside) / iv.n  # checkpoint and validation time left out
        self.last_loss = iv.loss / iv.n
        rec = {"step": step, "loss": self.last_loss, "lr": lr_now, "step_time": step_time,
               "data_time": iv.data / iv.n, "images_per_s": cfg.batch_size / step_time, "elapsed": now - t_start}
        if self.dist.main:
            _append_jsonl(self.metrics_path, rec)
        self.interval = _Interval(now)
        return self._emit("step", step, rec)

    def _save(self, step: int) -> Path:
        """State of ``step``, the oldest states beyond ``keep`` removed, and the export."""
        path = self.ckpt_dir / checkpoint_name(step)
        save_state(path, self.cfg, step, self.model, self.ema, self.opt, self.scaler, self.dist.world)
        for old in list_checkpoints(self.ckpt_dir)[:-self.cfg.keep]:
            old.unlink(missing_ok=True)
        self.last_ckpt = path
        self.export_path = self._export(step)
        self._emit("checkpoint", step, {"path": str(path), "export": str(self.export_path)})
        return path

    def _export(self, step: int) -> Path:
        """``run_dir/model.safetensors``: the EMA (or raw) weights as an inference checkpoint."""
        src = self.ema if self.cfg.export_ema else self.model
        return export_weights(src.state_dict(), self.cfg, step, self.run_dir / "model.safetensors",
                              dtype=self.cfg.export_dtype, source="the trained network")

    def _validate(self, step: int) -> bool:
        """Validate the EMA; True when the callback asks to stop."""
        if not self.val_images:
            return False
        res = validate(self.ema, self.cfg, self.val_images, self.device, self.precision, self.channels_last, step,
                       self.run_dir / "val")
        self.last_val = res
        _append_jsonl(self.metrics_path, {"event": "val", "step": step, **res})
        return self._emit("val", step, res)
