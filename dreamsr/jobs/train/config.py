"""`TrainConfig`: everything a training run depends on (saved in ``config.json`` and in every state file)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dreamsr.checkpoint import CheckpointInfo
from dreamsr.config import from_dict_strict
from dreamsr.data import FACE_LAYOUTS, DataConfig
from dreamsr.diffusion import DiffusionConfig
from dreamsr.errors import ConfigError
from dreamsr.families import FAMILIES, Family, get_family
from dreamsr.families.idm.network import RESIZE_RULES
from dreamsr.families.resshift.network import MASK_RULES
from dreamsr.processes import get_process

__all__ = ["TrainConfig", "RESUMABLE_FIELDS", "PROCESS", "VAL_STEPS", "LEGACY_DEFAULTS"]

# the default process, and the one runs from before families were stored trained (SR3's Gaussian ε process)
PROCESS = "gaussian"
# What a field missing from a stored config meant when it was written: the defaults before the shipped default
# model's recipe became TrainConfig's (an SR3 UNet on the Gaussian process, 160² crops, constant lr 1e-4, EMA
# 0.9999, 100 000 steps). Every config written since stores every field, so only older states read these.
LEGACY_DEFAULTS: dict[str, Any] = {"family": "sr3", "patch": 0, "lr": 1e-4, "lr_warmup": 0,
                                   "lr_schedule": "constant", "ema_decay": 0.9999, "steps": 100_000}
# validation sampler steps of the Gaussian process when not given (a shift process samples its own T steps)
VAL_STEPS = 20


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Saved in ``config.json`` and in every checkpoint.

    The defaults are the recipe of the shipped default model ``dreamsr-x4-resshift`` (its second stage): ResShift
    ``small`` on the shift process (v1, T = 15, MSE to x0), 128² HR crops, batch 8, Adam lr 2e-4 with 200 warm-up
    steps and a cosine decay to 2e-5, EMA 0.999, here from scratch for 20 000 steps; DREAM p = 1 (the shipped model
    used p = inf, 0.10 dB higher on validation; see docs/models/dreamsr-x4-resshift.md).
    """

    # --- data ---
    dataset: str = "folder"  # layout name: div2k, flickr2k, df2k, ffhq, celebahq, folder, paired
    data_dir: str | None = None  # layout root (None: $DREAMSR_DATA)
    val_dir: str | None = None  # folder of held-out HR images for validation (None: val_dataset or none)
    val_dataset: str | None = None  # layout name whose "val" split is used for validation (if val_dir is None)
    scale: int = 4  # LR -> HR factor
    patch: int = 128  # HR crop size in pixels (0: 128 for face layouts, else 160, the size before 128 was default)
    hr_downscale: int = 1  # shrink every training HR image by this factor before cropping (JPEG artefacts)
    augment: bool = True  # random flips / 90-degree rotations (faces: horizontal flips only)
    cache_mb: int = 4096  # decoded-image cache budget in MiB (uint8), shared by the loader workers
    workers: int = 2  # loader worker processes per rank (0: load in the training process)
    # --- model and objective ---
    family: str = "resshift"  # model family (a key of dreamsr.families.FAMILIES); states from before it: sr3
    preset: str = "small"  # the family's preset (ResShift: tiny, small, small-pixel, ...; SR3: tiny, small, base, ...)
    process: str | None = None  # diffusion process (None: the family's own: gaussian for sr3/idm, shift for resshift)
    shift: Literal["v1", "v3"] = "v1"  # shift process: ResShift's schedule (v1: T = 15, v3: T = 4)
    max_scale: float | None = None  # continuous-scale families (idm): the largest trained scale (None: the preset's)
    dropout: float | None = None  # override the preset's dropout (None: keep it)
    embed_scale: float | None = None  # override the preset's noise-level embedding scale (None: keep it)
    mask_rule: str | None = None  # resshift: the Swin shifted-window mask, "swin" or "release" (None: "swin")
    resize_rule: str | None = None  # idm: the LR encoder's nearest-resize index, "exact" or "release" (None: "exact")
    target: Literal["image", "residual"] = "image"  # diffuse the HR image (paper) or the scaled HR - bicubic
    residual_scale: float = 1.5  # residual target: multiplier of HR - bicubic
    num_steps: int = 2000  # T, trained diffusion timesteps
    beta_start: float = 1e-6  # linear beta schedule start
    beta_end: float = 1e-2  # linear beta schedule end
    p: float = 1.0  # DREAM exponent of lambda_t = sqrt(1 - alpha_bar)^p; 0 = DRM, inf = standard training
    dream_lambda: Literal["input", "vp"] = "input"  # shift process: lambda_t rule (ShiftProcess.lambda_t); Gaussian: same
    independent_noise: bool = False  # fresh eps' for the rectified input (Eq. 13; drawn per step and rank)
    loss: Literal["l1", "l2"] | None = None  # per-pixel loss (None: the process's: l1 gaussian (paper), l2 shift)
    # --- optimisation ---
    steps: int = 20_000  # total optimizer steps (resume continues up to this number; the cosine ends here)
    batch_size: int = 8  # global batch (split evenly over DDP ranks)
    lr: float = 2e-4  # Adam learning rate (peak; the paper: 1e-4 constant)
    lr_warmup: int = 200  # linear warm-up steps from 0 to lr
    lr_schedule: Literal["constant", "cosine"] = "cosine"  # cosine: decay to lr * lr_min_ratio at `steps`
    lr_min_ratio: float = 0.1  # final lr / lr for the cosine schedule
    adam_beta1: float = 0.9  # Adam beta1
    adam_beta2: float = 0.999  # Adam beta2
    weight_decay: float = 0.0  # Adam (L2) weight decay
    grad_clip: float = 1.0  # max global gradient norm (0: no clipping)
    ema_decay: float = 0.999  # EMA decay of the weights (0: EMA = current weights)
    ema_warmup: bool = True  # use min(ema_decay, (1 + k) / (10 + k)) so short runs get a useful EMA
    seed: int = 0  # seeds data, noise and initial weights
    # --- hardware ---
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps (under torchrun: cuda:LOCAL_RANK)
    precision: str = "auto"  # auto (bf16/fp16 on CUDA, fp32 elsewhere), fp32, bf16, fp16 (CUDA, with loss scaling)
    channels_last: bool | None = None  # NHWC memory format (None: on CUDA only)
    # --- run folder, checkpoints, logging ---
    run_dir: str = "runs/dreamsr"  # output folder
    save_every: int = 1000  # checkpoint every this many steps (and at the end; 0: only at the end)
    keep: int = 3  # training-state checkpoints kept (the newest)
    log_every: int = 10  # write a metrics.jsonl line every this many steps
    time_limit: float = 0.0  # stop cleanly (checkpoint + export) after this many seconds (0: no limit)
    stop_at: int = 0  # stop cleanly (checkpoint + export) after this step, keeping the lr schedule of `steps` (0: off)
    resume: str | None = None  # checkpoint file, run folder (its latest checkpoint), or "auto" (run_dir's, if any)
    init_weights: str | None = None  # start a new run from these inference weights (fine-tuning; fresh optimizer)
    export_dtype: Literal["fp32", "fp16", "bf16"] = "fp32"  # storage dtype of run_dir/model.safetensors
    export_ema: bool = True  # export the EMA weights (False: the raw weights)
    # --- validation ---
    val_every: int = 1000  # validate every this many steps (and at the end; 0: never)
    val_count: int = 4  # held-out images used
    val_crop: int = 128  # centre crop of each validation HR image (pixels; 0: whole image)
    val_steps: int | None = None  # sampler steps for validation (None: VAL_STEPS, or a shift process's own T)
    val_sampler: Literal["ddim", "ddpm"] | None = None  # validation sampler (None: the process's default)
    val_seed: int = 0  # sampling seed for validation

    def __post_init__(self) -> None:
        checks = [
            (self.family in FAMILIES, f"family must be one of {', '.join(sorted(FAMILIES))}, got {self.family!r}"),
            (self.steps >= 0, f"steps must be >= 0, got {self.steps}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.lr_warmup >= 0, "lr_warmup must be >= 0"),
            (self.lr_schedule in ("constant", "cosine"), f"lr_schedule must be constant or cosine, "
                                                          f"got {self.lr_schedule!r}"),
            (0 <= self.lr_min_ratio <= 1, "lr_min_ratio must be in [0, 1]"),
            (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1, "Adam betas must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.grad_clip >= 0, "grad_clip must be >= 0"),
            (0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
            (math.isinf(self.p) or self.p >= 0, f"p must be >= 0 or inf, got {self.p}"),
            (self.target in ("image", "residual"), f"target must be image or residual, got {self.target!r}"),
            (self.loss in (None, "l1", "l2"), f"loss must be l1 or l2, got {self.loss!r}"),
            (self.dream_lambda in ("input", "vp"), f"dream_lambda must be input or vp, got {self.dream_lambda!r}"),
            (self.patch >= 0, "patch must be >= 0"),
            (self.workers >= 0, "workers must be >= 0"),
            (self.save_every >= 0 and self.val_every >= 0, "save_every and val_every must be >= 0"),
            (self.keep >= 1, "keep must be >= 1"),
            (self.log_every >= 1, "log_every must be >= 1"),
            (self.val_count >= 0 and (self.val_steps is None or self.val_steps >= 1),
             "val_count must be >= 0 and val_steps >= 1"),
            (self.val_sampler in (None, "ddim", "ddpm"), f"val_sampler must be ddim or ddpm, got {self.val_sampler!r}"),
            (self.shift in ("v1", "v3"), f"shift must be v1 or v3, got {self.shift!r}"),
            (self.mask_rule in (None, *MASK_RULES), f"mask_rule must be one of {', '.join(MASK_RULES)}, "
                                                    f"got {self.mask_rule!r}"),
            (self.resize_rule in (None, *RESIZE_RULES), f"resize_rule must be one of {', '.join(RESIZE_RULES)}, "
                                                        f"got {self.resize_rule!r}"),
            (self.export_dtype in ("fp32", "fp16", "bf16"), "export_dtype must be fp32, fp16 or bf16"),
            (self.time_limit >= 0, "time_limit must be >= 0"),
            (self.stop_at >= 0, f"stop_at must be >= 0, got {self.stop_at}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        self.model_family().check_process(self.process_name())

    # --- derived ---
    def process_name(self) -> str:
        """The diffusion process trained: ``process``, else the family's own (the first it runs)."""
        return self.process or self.model_family().processes[0]

    @property
    def hr_patch(self) -> int:
        """The HR crop size actually used."""
        if self.patch:
            return self.patch
        return 128 if self.dataset in FACE_LAYOUTS else 160

    def model_family(self) -> Family:
        return get_family(self.family)

    def network_config(self) -> Any:
        """The family's preset with this config's overrides (``dropout``, ``embed_scale``, ``max_scale``,
        ``mask_rule`` (ResShift), ``resize_rule`` (IDM); SR3: a UNetConfig)."""
        cfg = self.model_family().preset(self.preset)
        changes: dict[str, Any] = {}
        if self.mask_rule is not None:
            if dataclasses.is_dataclass(getattr(cfg, "unet", None)):  # ResShift: the rule of its Swin-UNet
                cfg = dataclasses.replace(cfg, unet=dataclasses.replace(cfg.unet, mask_rule=self.mask_rule))
            else:
                changes["mask_rule"] = self.mask_rule
        if self.resize_rule is not None:
            changes["resize_rule"] = self.resize_rule
        if self.dropout is not None:
            changes["dropout"] = self.dropout
        if self.embed_scale is not None:
            changes["embed_scale"] = self.embed_scale
        if self.max_scale is not None:
            changes["max_scale"] = float(self.max_scale)
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(cfg)})
        if unknown:
            raise ConfigError(f"the {self.family} family's network has no {', '.join(unknown)} to override")
        return dataclasses.replace(cfg, **changes) if changes else cfg

    def diffusion_config(self) -> Any:
        """The config of the process trained (Gaussian: schedule and target; shift: ResShift's v1/v3 schedule)."""
        if self.process_name() == "shift":
            from dreamsr.processes.shift import ShiftConfig

            return ShiftConfig.v1() if self.shift == "v1" else ShiftConfig.v3()
        return DiffusionConfig(num_steps=self.num_steps, beta_start=self.beta_start, beta_end=self.beta_end,
                               target=self.target, residual_scale=self.residual_scale)

    def data_config(self) -> DataConfig:
        return DataConfig(dataset=self.dataset, data_dir=self.data_dir, scale=self.scale, patch=self.hr_patch,
                          hr_downscale=self.hr_downscale, augment=self.augment, cache_mb=self.cache_mb,
                          seed=self.seed)

    def model_info(self, step: int) -> CheckpointInfo:
        """What the inference checkpoint exported after ``step`` optimizer steps says about itself."""
        from dreamsr import __version__

        training = {
            "p": "inf" if math.isinf(self.p) else self.p, "dream_lambda": self.dream_lambda, "steps": step, "dataset": self.dataset,
            "patch": self.hr_patch, "batch_size": self.batch_size, "lr": self.lr, "preset": self.preset,
            "ema_decay": self.ema_decay, "ema": self.export_ema, "seed": self.seed,
            "loss": self.loss or get_process(self.process_name()).build(self.diffusion_config(), None).default_loss,
            "hr_downscale": self.hr_downscale,
            "init_weights": Path(self.init_weights).name if self.init_weights else None,
        }
        return CheckpointInfo(network=self.network_config(), diffusion=self.diffusion_config(), scale=self.scale,
                              training=training, dreamsr_version=__version__, family=self.family,
                              process=self.process_name())

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then constant or cosine decay."""
        lr = self.lr
        if self.lr_schedule == "cosine" and self.steps > 0:
            t = min(step / self.steps, 1.0)
            lr = lr * (self.lr_min_ratio + (1 - self.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
        if self.lr_warmup and step < self.lr_warmup:
            lr = lr * (step + 1) / self.lr_warmup
        return lr

    def to_dict(self) -> dict:
        """JSON-safe dict (p = inf is written as the string "inf")."""
        d = dataclasses.asdict(self)
        if math.isinf(self.p):
            d["p"] = "inf"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error. A missing key takes the value it had when the
        config was written: :data:`LEGACY_DEFAULTS` for the fields whose default has changed, else its default."""
        d = {**LEGACY_DEFAULTS, **d}
        if "p" in d:
            d["p"] = float(d["p"])
        return from_dict_strict(cls, d)


# Fields that may differ between a checkpoint's config and the config resuming it: they do not change the
# training trajectory up to the checkpoint (lr and ema_decay do change what follows, on purpose).
RESUMABLE_FIELDS = frozenset({
    "data_dir", "val_dir", "val_dataset", "cache_mb", "workers", "steps", "device", "run_dir", "save_every", "keep",
    "log_every", "time_limit", "stop_at", "resume", "export_dtype", "export_ema", "val_every", "val_count", "val_crop",
    "val_steps", "val_sampler", "val_seed", "lr", "ema_decay", "lr_warmup", "lr_schedule", "lr_min_ratio",
})
