"""DREAM training: the loop, EMA, mixed precision, DDP, exact resume, validation and export.

``train(TrainConfig(...), callback)`` runs ``config.steps`` optimizer steps of Algorithm 3 (``p = inf`` is
standard SR3 training) and leaves a run folder::

    run_dir/config.json                    the TrainConfig plus what was resolved (model, device, world size)
    run_dir/metrics.jsonl                  one JSON object per log interval / validation / resume
    run_dir/checkpoints/step_00001000.safetensors   full training state (see below), the last ``keep`` kept
    run_dir/val/step_00001000.png          validation grid, one row per image: LR | bicubic | SR | HR
    run_dir/model.safetensors              inference checkpoint (EMA weights by default) for ``dreamsr upscale``

Exact resume. Every random draw of step ``k`` derives from ``(seed, k)`` or from the global sample index
``g = k * batch + j`` (data order, crops, flips, the noise level gamma and the noise eps of each sample; dropout
from the global generator re-seeded with ``(seed, k, rank)`` before the step), so a run resumed from the
checkpoint of step ``N`` repeats exactly what the uninterrupted run did after step ``N``: on the CPU the
weights are bit-for-bit equal. Under DDP the global batch is split over the ranks by sample index, so the
union of the ranks' batches and noises equals the single-process batch of the same step (except the extra
noise of ``independent_noise``, drawn per step and rank). Bit-exact CPU resume also needs the same number of
intra-op threads as the interrupted run. Each rank keeps its own decoded-image cache.

Training-state checkpoints are one safetensors file each, written atomically (temporary file, fsync,
rename): tensors ``model/*``, ``ema/*``, ``optim/<i>/<name>`` (Adam moments and step counts), ``rng/cpu``;
metadata (JSON strings) ``format = dreamsr.train-state``, ``config``, ``step``, ``optim`` (param groups and
non-tensor state), ``scaler``, ``unet``, ``diffusion``. No pickles anywhere.

Library code never prints: progress goes to ``callback(TrainEvent)``; a callback returning True asks the loop
to stop after the current step (after the next one for a "val" event); a checkpoint and the export are
written first.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from dreamsr import losses
from dreamsr.checkpoint import CheckpointInfo, load_state_strict, save_checkpoint
from dreamsr.config import from_dict_strict
from dreamsr.data import (FACE_LAYOUTS, DataConfig, SRTrainDataset, load_val_images, make_loader, mix_seed,
                          resolve_layout, find_images)
from dreamsr.diffusion import DiffusionConfig, Schedule
from dreamsr.errors import CheckpointError, ConfigError, TrainingError
from dreamsr.images import to_model, upsample
from dreamsr.options import SamplingOptions
from dreamsr.runtime import autocast, resolve_device, resolve_precision
from dreamsr.unet import UNet, UNetConfig, preset

__all__ = ["TrainConfig", "TrainEvent", "TrainResult", "train", "latest_checkpoint", "read_state_config",
           "export_from_state", "RESUMABLE_FIELDS", "STATE_FORMAT"]

STATE_FORMAT = "dreamsr.train-state"
STATE_FORMAT_VERSION = "1"


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Saved in ``config.json`` and in every checkpoint."""

    # --- data ---
    dataset: str = "folder"  # layout name: div2k, flickr2k, df2k, ffhq, celebahq, folder, paired
    data_dir: str | None = None  # layout root (None: $DREAMSR_DATA)
    val_dir: str | None = None  # folder of held-out HR images for validation (None: val_dataset or none)
    val_dataset: str | None = None  # layout name whose "val" split is used for validation (if val_dir is None)
    scale: int = 4  # LR -> HR factor
    patch: int = 0  # HR crop size in pixels (0: 128 for face layouts, else 160)
    hr_downscale: int = 1  # shrink every training HR image by this factor before cropping (JPEG artefacts)
    augment: bool = True  # random flips / 90-degree rotations (faces: horizontal flips only)
    cache_mb: int = 4096  # decoded-image cache budget in MiB (uint8), shared by the loader workers
    workers: int = 2  # loader worker processes per rank (0: load in the training process)
    # --- model and objective ---
    preset: str = "small"  # UNet preset: tiny, small, base, sr3-div2k, sr3-face
    dropout: float | None = None  # override the preset's dropout (None: keep it)
    embed_scale: float | None = None  # override the preset's noise-level embedding scale (None: keep it)
    target: Literal["image", "residual"] = "image"  # diffuse the HR image (paper) or the scaled HR - bicubic
    residual_scale: float = 1.5  # residual target: multiplier of HR - bicubic
    num_steps: int = 2000  # T, trained diffusion timesteps
    beta_start: float = 1e-6  # linear beta schedule start
    beta_end: float = 1e-2  # linear beta schedule end
    p: float = 1.0  # DREAM exponent of lambda_t = sqrt(1 - alpha_bar)^p; 0 = DRM, inf = standard training
    independent_noise: bool = False  # fresh eps' for the rectified input (Eq. 13; drawn per step and rank)
    loss: Literal["l1", "l2"] = "l1"  # per-pixel loss
    # --- optimisation ---
    steps: int = 100_000  # total optimizer steps (resume continues up to this number)
    batch_size: int = 8  # global batch (split evenly over DDP ranks)
    lr: float = 1e-4  # Adam learning rate (constant, as the paper)
    lr_warmup: int = 0  # linear warm-up steps from 0 to lr
    lr_schedule: Literal["constant", "cosine"] = "constant"  # cosine: decay to lr * lr_min_ratio at `steps`
    lr_min_ratio: float = 0.1  # final lr / lr for the cosine schedule
    adam_beta1: float = 0.9  # Adam beta1
    adam_beta2: float = 0.999  # Adam beta2
    weight_decay: float = 0.0  # Adam (L2) weight decay
    grad_clip: float = 1.0  # max global gradient norm (0: no clipping)
    ema_decay: float = 0.9999  # EMA decay of the weights (0: EMA = current weights)
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
    val_steps: int = 20  # sampler steps for validation
    val_sampler: Literal["ddim", "ddpm"] = "ddim"  # validation sampler
    val_seed: int = 0  # sampling seed for validation

    def __post_init__(self) -> None:
        checks = [
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
            (self.loss in ("l1", "l2"), f"loss must be l1 or l2, got {self.loss!r}"),
            (self.patch >= 0, "patch must be >= 0"),
            (self.workers >= 0, "workers must be >= 0"),
            (self.save_every >= 0 and self.val_every >= 0, "save_every and val_every must be >= 0"),
            (self.keep >= 1, "keep must be >= 1"),
            (self.log_every >= 1, "log_every must be >= 1"),
            (self.val_count >= 0 and self.val_steps >= 1, "val_count must be >= 0 and val_steps >= 1"),
            (self.val_sampler in ("ddim", "ddpm"), f"val_sampler must be ddim or ddpm, got {self.val_sampler!r}"),
            (self.export_dtype in ("fp32", "fp16", "bf16"), f"export_dtype must be fp32, fp16 or bf16"),
            (self.time_limit >= 0, "time_limit must be >= 0"),
            (self.stop_at >= 0, f"stop_at must be >= 0, got {self.stop_at}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)

    # --- derived ---
    @property
    def hr_patch(self) -> int:
        """The HR crop size actually used."""
        if self.patch:
            return self.patch
        return 128 if self.dataset in FACE_LAYOUTS else 160

    def unet_config(self) -> UNetConfig:
        """The preset with this config's overrides."""
        cfg = preset(self.preset)
        changes: dict[str, Any] = {}
        if self.dropout is not None:
            changes["dropout"] = self.dropout
        if self.embed_scale is not None:
            changes["embed_scale"] = self.embed_scale
        return dataclasses.replace(cfg, **changes) if changes else cfg

    def diffusion_config(self) -> DiffusionConfig:
        return DiffusionConfig(num_steps=self.num_steps, beta_start=self.beta_start, beta_end=self.beta_end,
                               target=self.target, residual_scale=self.residual_scale)

    def data_config(self) -> DataConfig:
        return DataConfig(dataset=self.dataset, data_dir=self.data_dir, scale=self.scale, patch=self.hr_patch,
                          hr_downscale=self.hr_downscale, augment=self.augment, cache_mb=self.cache_mb,
                          seed=self.seed)

    def to_dict(self) -> dict:
        """JSON-safe dict (p = inf is written as the string "inf")."""
        d = dataclasses.asdict(self)
        if math.isinf(self.p):
            d["p"] = "inf"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        d = dict(d)
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
    model: UNet | None = field(default=None, repr=False)  # the trained network (this rank's copy, train mode)
    ema: UNet | None = field(default=None, repr=False)  # its EMA (eval mode)


Callback = Callable[[TrainEvent], "bool | None"]


# --- distributed context ------------------------------------------------------------------------------------

@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def _init_distributed(device_name: str) -> _Dist:
    """Join the process group described by torchrun's environment (WORLD_SIZE > 1), else single process."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        use_nccl = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
        if use_nccl:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_nccl else "gloo", init_method="env://")
        owns = True
    return _Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank, owns_group=owns)


class _Net:
    """The denoiser as dream_loss sees it: the DDP wrapper when gradients flow, the bare module otherwise."""

    def __init__(self, module: UNet, wrapped: torch.nn.Module, channels_last: bool) -> None:
        self.module, self.wrapped, self.channels_last = module, wrapped, channels_last

    @property
    def training(self) -> bool:
        return self.module.training

    def train(self, mode: bool = True) -> "_Net":
        self.module.train(mode)
        return self

    def __call__(self, y_t: torch.Tensor, x0: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            y_t = y_t.contiguous(memory_format=torch.channels_last)
        net = self.wrapped if torch.is_grad_enabled() else self.module
        return net(y_t, x0, gamma)


# --- small helpers ------------------------------------------------------------------------------------------

def _publish_mode(path: str | os.PathLike) -> None:
    """Give a file written through mkstemp (0600) the usual 0666 & ~umask permissions."""
    mask = os.umask(0)
    os.umask(mask)
    try:
        os.chmod(path, 0o666 & ~mask)
    except OSError:
        pass


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _publish_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Atomic safetensors write: temporary file in the same folder, fsync, rename, fsync the folder."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        _publish_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, float) and math.isinf(o):
        return "inf"
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based)."""
    lr = cfg.lr
    if cfg.lr_schedule == "cosine" and cfg.steps > 0:
        t = min(step / cfg.steps, 1.0)
        lr = lr * (cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
    if cfg.lr_warmup and step < cfg.lr_warmup:
        lr = lr * (step + 1) / cfg.lr_warmup
    return lr


def _sample_noise(seed: int, indices: list[int], schedule: Schedule, shape: tuple[int, ...]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample gamma [B] (float64) and eps [B, *shape] (float32), each from a generator seeded by (seed, g)."""
    gammas, epss = [], []
    for g in indices:
        gen = torch.Generator()
        gen.manual_seed(mix_seed(seed, 3, g))
        gammas.append(schedule.sample_gamma(1, gen))
        epss.append(torch.randn(shape, generator=gen))
    return torch.cat(gammas), torch.stack(epss)


# --- checkpoints ------------------------------------------------------------------------------------------

def _ckpt_name(step: int) -> str:
    return f"step_{step:08d}.safetensors"


def _list_checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step_*.safetensors") if p.name[5:13].isdigit())


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest training-state checkpoint of a run folder (``run_dir/checkpoints``), or None."""
    found = _list_checkpoints(Path(run_dir) / "checkpoints")
    return found[-1] if found else None


def _resolve_resume(resume: str, run_dir: Path) -> Path | None:
    if resume == "auto":
        return latest_checkpoint(run_dir)
    p = Path(resume).expanduser()
    if p.is_dir():
        found = latest_checkpoint(p) if (p / "checkpoints").is_dir() else (
            _list_checkpoints(p)[-1] if _list_checkpoints(p) else None)
        if found is None:
            raise CheckpointError(f"--resume {p}: no training checkpoint (checkpoints/step_*.safetensors) in it")
        return found
    if not p.is_file():
        raise CheckpointError(f"--resume {p}: no such checkpoint file or run folder")
    return p


def _read_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a readable training checkpoint ({err})") from None
    if meta.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not a dreamsr training checkpoint (format {meta.get('format')!r}); "
                              "inference checkpoints (model.safetensors) cannot be resumed")
    if meta.get("format_version") != STATE_FORMAT_VERSION:
        raise CheckpointError(f"{path}: training checkpoint version {meta.get('format_version')!r} is not "
                              f"supported (expects {STATE_FORMAT_VERSION})")
    return tensors, meta


def read_state_config(path: str | os.PathLike) -> TrainConfig:
    """The TrainConfig stored in a training checkpoint (file or run folder: its latest checkpoint)."""
    p = Path(path)
    resolved = _resolve_resume(str(p), p if p.is_dir() else p.parent)
    if resolved is None:
        raise CheckpointError(f"{path}: no training checkpoint found")
    try:
        with safe_open(str(resolved), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{resolved}: not a readable training checkpoint ({err})") from None
    if meta.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{resolved}: not a dreamsr training checkpoint")
    return TrainConfig.from_dict(json.loads(meta["config"]))


def _optim_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state dict -> (tensors named optim/<param>/<key>, JSON-safe rest)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim/{idx}/{k}"] = v.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optim_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        _, idx, key = name.split("/", 2)
        state.setdefault(int(idx), {})[key] = t
    for idx, st in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(st)
    groups = meta["param_groups"]
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


def _model_info(cfg: TrainConfig, step: int) -> CheckpointInfo:
    from dreamsr import __version__

    training = {
        "p": "inf" if math.isinf(cfg.p) else cfg.p, "steps": step, "dataset": cfg.dataset, "patch": cfg.hr_patch,
        "batch_size": cfg.batch_size, "lr": cfg.lr, "preset": cfg.preset, "ema_decay": cfg.ema_decay,
        "ema": cfg.export_ema, "seed": cfg.seed, "loss": cfg.loss, "hr_downscale": cfg.hr_downscale,
        "init_weights": Path(cfg.init_weights).name if cfg.init_weights else None,
    }
    return CheckpointInfo(network=cfg.unet_config(), diffusion=cfg.diffusion_config(), scale=cfg.scale,
                          training=training, dreamsr_version=__version__)


def _init_from_weights(cfg: TrainConfig, model: UNet, ema: UNet) -> None:
    """Load ``cfg.init_weights`` (an inference checkpoint) into ``model`` and ``ema``, strictly.

    The checkpoint must describe the same UNet, diffusion and scale as ``cfg``: fine-tuning continues the same
    model, so a mismatch is an error naming every differing field rather than a partial load."""
    from dreamsr.checkpoint import load_checkpoint

    src, info = load_checkpoint(cfg.init_weights)
    for what, theirs, ours in (("UNet", info.network, cfg.unet_config()),
                               ("diffusion", info.diffusion, cfg.diffusion_config())):
        if theirs != ours:
            diff = [f.name for f in dataclasses.fields(ours) if getattr(theirs, f.name) != getattr(ours, f.name)]
            raise ConfigError(f"--init-weights {cfg.init_weights}: its {what} differs from this run's in "
                              f"{', '.join(diff)} ({', '.join(f'{d}={getattr(theirs, d)!r}' for d in diff)}); "
                              "pass matching --preset/--target/--embed-scale options")
    if info.scale != cfg.scale:
        raise ConfigError(f"--init-weights {cfg.init_weights} is a x{info.scale} model; this run trains x{cfg.scale}")
    state = src.state_dict()
    load_state_strict(model, state, str(cfg.init_weights))
    load_state_strict(ema, state, str(cfg.init_weights))


def _save_state(path: Path, cfg: TrainConfig, step: int, model: UNet, ema: UNet, opt: torch.optim.Optimizer,
                scaler: "torch.amp.GradScaler | None", world: int) -> None:
    from dreamsr import __version__

    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model/{k}"] = v.detach().to("cpu", torch.float32).contiguous()
    for k, v in ema.state_dict().items():
        tensors[f"ema/{k}"] = v.detach().to("cpu", torch.float32).contiguous()
    opt_tensors, opt_meta = _optim_to_flat(opt)
    tensors.update(opt_tensors)
    tensors["rng/cpu"] = torch.get_rng_state()
    meta = {
        "format": STATE_FORMAT,
        "format_version": STATE_FORMAT_VERSION,
        "config": json.dumps(cfg.to_dict(), sort_keys=True),
        "step": str(step),
        "optim": json.dumps(opt_meta, sort_keys=True, default=_json_default),
        "scaler": json.dumps(scaler.state_dict() if scaler is not None else None),
        "unet": json.dumps(cfg.unet_config().to_dict(), sort_keys=True),
        "diffusion": json.dumps(cfg.diffusion_config().to_dict(), sort_keys=True),
        "world_size": str(world),
        "dreamsr_version": __version__,
    }
    _write_safetensors(path, tensors, meta)


def _split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    n = len(prefix)
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}


def export_from_state(state: str | os.PathLike, out: str | os.PathLike, *, dtype: str = "fp32",
                      ema: bool = True) -> Path:
    """Write an inference checkpoint (``dreamsr upscale --weights``) from a training checkpoint.

    ``state``: a training checkpoint file or run folder (its latest checkpoint); ``ema``: export the EMA
    weights (else the raw ones); ``dtype``: storage precision. Returns the path written.
    """
    p = Path(state)
    path = _resolve_resume(str(p), p if p.is_dir() else p.parent)
    if path is None:
        raise CheckpointError(f"{state}: no training checkpoint found")
    tensors, meta = _read_state(path)
    cfg = TrainConfig.from_dict(json.loads(meta["config"]))
    model = UNet(cfg.unet_config())
    load_state_strict(model, _split_prefix(tensors, "ema/" if ema else "model/"), str(path))
    info = _model_info(dataclasses.replace(cfg, export_ema=ema), int(meta["step"]))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = save_checkpoint(out, model, info, dtype=dtype)
    _publish_mode(written)
    return written


# --- validation ---------------------------------------------------------------------------------------------

def _val_files(cfg: TrainConfig) -> list[Path]:
    if cfg.val_count == 0:
        return []
    if cfg.val_dir is not None:
        files = find_images(cfg.val_dir)
        if not files:
            raise ConfigError(f"validation folder {cfg.val_dir} holds no images")
        return files
    if cfg.val_dataset is not None:
        return list(resolve_layout(cfg.val_dataset, cfg.data_dir, "val").hr)
    return []


def _save_grid(path: Path, rows: list[list[torch.Tensor]], gap: int = 2) -> None:
    """PNG of rows of [3, H, W] images in [0, 1], white gaps, each row padded to the widest (atomic)."""
    from dreamsr.images import save_image

    heights = [max(t.shape[1] for t in r) for r in rows]
    widths = [sum(t.shape[2] for t in r) + gap * (len(r) - 1) for r in rows]
    canvas = torch.ones(3, sum(heights) + gap * (len(rows) - 1), max(widths))
    y = 0
    for r, h in zip(rows, heights):
        x = 0
        for t in r:
            canvas[:, y:y + t.shape[1], x:x + t.shape[2]] = t.clamp(0, 1)
            x += t.shape[2] + gap
        y += h + gap
    save_image(path, canvas, overwrite=True)


def _validate(model: UNet, cfg: TrainConfig, images: list[tuple[str, torch.Tensor]], device: torch.device,
              precision: str, channels_last: bool, step: int, out_dir: Path) -> dict:
    """Upscale each held-out LR with the (EMA) model through the pipeline; PSNR/SSIM on Y, crop = scale."""
    from dreamsr.images import downsample
    from dreamsr.metrics import psnr, ssim
    from dreamsr.pipeline import Upscaler

    info = _model_info(cfg, step)
    was_training = model.training
    model.eval()
    try:
        up = Upscaler(model, info, device=device, precision=precision, channels_last=channels_last)
        # small centre crops go through in one piece; whole images in the default tiles
        opts = SamplingOptions(steps=cfg.val_steps, sampler=cfg.val_sampler, seed=cfg.val_seed,
                               **({"tile": 0} if cfg.val_crop else {}))
        rows, ps, ss, bps, bss, prgb = [], [], [], [], [], []
        for _name, hr in images:
            lr = downsample(hr, cfg.scale).clamp(0, 1).mul(255).round().div(255)
            sr = up.upscale(lr, opts).cpu()
            bic = upsample(lr, cfg.scale).clamp(0, 1)
            ps.append(psnr(sr, hr, crop_border=cfg.scale, y_channel=True))
            ss.append(ssim(sr, hr, crop_border=cfg.scale, y_channel=True))
            bps.append(psnr(bic, hr, crop_border=cfg.scale, y_channel=True))
            bss.append(ssim(bic, hr, crop_border=cfg.scale, y_channel=True))
            prgb.append(psnr(sr, hr))
            lr_big = torch.nn.functional.interpolate(lr[None], scale_factor=cfg.scale, mode="nearest")[0]
            rows.append([lr_big, bic, sr, hr])
    finally:
        model.train(was_training)
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = out_dir / f"step_{step:08d}.png"
    _save_grid(grid, rows)
    n = len(images)
    return {"psnr": sum(ps) / n, "ssim": sum(ss) / n, "bicubic_psnr": sum(bps) / n, "bicubic_ssim": sum(bss) / n,
            "psnr_rgb": sum(prgb) / n, "images": n, "grid": str(grid)}


# --- the loop -----------------------------------------------------------------------------------------------

def _check_resume_config(saved: TrainConfig, cfg: TrainConfig, path: Path) -> None:
    diffs = [f.name for f in dataclasses.fields(TrainConfig)
             if f.name not in RESUMABLE_FIELDS and getattr(saved, f.name) != getattr(cfg, f.name)]
    if diffs:
        detail = ", ".join(f"{k}: checkpoint {getattr(saved, k)!r} vs now {getattr(cfg, k)!r}" for k in diffs)
        raise TrainingError(f"cannot resume {path}: the run was trained with different settings ({detail}); "
                            "drop those options or start a new --run-dir")


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=_json_default) + "\n")


def train(config: TrainConfig, callback: Callback | None = None) -> TrainResult:
    """Train (or resume) a DREAM super-resolution model as ``config`` says; see the module docstring.

    Raises ConfigError for bad options, DatasetError for missing data, CheckpointError for an unreadable
    checkpoint, TrainingError when the loss becomes NaN/inf (the last good checkpoint is kept) or a resume
    does not match the checkpoint's settings.
    """
    cfg = config
    dist_ctx = _init_distributed(cfg.device)
    try:
        # the loop re-seeds the global generators (weights init, per-step dropout): give the caller theirs back
        cuda_devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=cuda_devices):
            return _train(cfg, dist_ctx, callback)
    finally:
        if dist_ctx.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(cfg: TrainConfig, dctx: _Dist, callback: Callback | None) -> TrainResult:
    import torch.distributed as dist

    if dctx.enabled and cfg.device in ("auto", "cuda") and torch.cuda.is_available():
        device = torch.device("cuda", dctx.local_rank)
    else:
        device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("fp16 training needs a CUDA device; use bf16 or fp32")
    channels_last = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    if cfg.batch_size % dctx.world:
        raise ConfigError(f"batch size {cfg.batch_size} is not divisible by the {dctx.world} processes")

    unet_cfg = cfg.unet_config()
    patch = cfg.hr_patch
    if patch % cfg.scale or patch % unet_cfg.size_multiple:
        raise ConfigError(f"patch {patch} must be a multiple of the scale {cfg.scale} and of "
                          f"{unet_cfg.size_multiple} (the {cfg.preset} UNet's size multiple)")
    schedule = Schedule(cfg.diffusion_config())
    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"

    # resume
    resume_path: Path | None = None
    if cfg.resume:
        resume_path = _resolve_resume(cfg.resume, run_dir)
    state_tensors: dict[str, torch.Tensor] = {}
    state_meta: dict[str, str] = {}
    start_step = 0
    if resume_path is not None:
        state_tensors, state_meta = _read_state(resume_path)
        saved = TrainConfig.from_dict(json.loads(state_meta["config"]))
        _check_resume_config(saved, cfg, resume_path)
        start_step = int(state_meta["step"])

    # model, EMA, optimizer
    torch.manual_seed(mix_seed(cfg.seed, 0))  # initial weights
    model = UNet(unet_cfg)
    ema = UNet(unet_cfg)
    ema.load_state_dict(model.state_dict())
    if resume_path is not None:
        load_state_strict(model, _split_prefix(state_tensors, "model/"), str(resume_path))
        load_state_strict(ema, _split_prefix(state_tensors, "ema/"), str(resume_path))
    elif cfg.init_weights:
        _init_from_weights(cfg, model, ema)  # a fine-tuning run: both start from the given weights
    model.to(device)
    ema.to(device).eval().requires_grad_(False)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        ema.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                           weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    if resume_path is not None:
        _optim_from_flat(opt, {k: v for k, v in state_tensors.items() if k.startswith("optim/")},
                         json.loads(state_meta["optim"]))
        if scaler is not None and state_meta.get("scaler") not in (None, "null"):
            scaler.load_state_dict(json.loads(state_meta["scaler"]))
        if "rng/cpu" in state_tensors:
            torch.set_rng_state(state_tensors["rng/cpu"])
        del state_tensors
    wrapped: torch.nn.Module = model
    if dctx.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        wrapped = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                      broadcast_buffers=False)
    net = _Net(model, wrapped, channels_last)

    # data
    dataset = SRTrainDataset(cfg.data_config(), workers=cfg.workers)
    if cfg.cache_mb > 0:
        dataset.preload()  # before the workers fork, so they share the decoded images
    loader = make_loader(dataset, cfg.batch_size, start_step, cfg.steps, workers=cfg.workers, rank=dctx.rank,
                         world=dctx.world, pin_memory=device.type == "cuda")
    val_images: list[tuple[str, torch.Tensor]] = []
    if dctx.main and cfg.val_every > 0:
        val_images = load_val_images(_val_files(cfg), cfg.val_count, cfg.val_crop,
                                     cfg.scale * unet_cfg.size_multiple)
        if val_images:
            try:
                from dreamsr.pipeline import Upscaler  # noqa: F401 - fail now, not after hours of training
            except ImportError as err:
                raise ConfigError(f"validation needs dreamsr.pipeline ({err}); use --val-every 0") from None

    # run folder
    metrics_path = run_dir / "metrics.jsonl"
    if dctx.main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        for stale in [*ckpt_dir.glob(".step_*.tmp"), *run_dir.glob(".model.safetensors.*.tmp")]:
            stale.unlink(missing_ok=True)  # left by a run killed while saving
        from dreamsr import __version__

        resolved = {"config": cfg.to_dict(), "unet": unet_cfg.to_dict(), "diffusion": cfg.diffusion_config().to_dict(),
                    "hr_patch": patch, "device": str(device), "precision": precision, "channels_last": channels_last,
                    "world_size": dctx.world, "train_images": len(dataset), "val_images": [n for n, _ in val_images],
                    "parameters": model.num_parameters(), "torch": torch.__version__, "dreamsr": __version__,
                    "resumed_from": str(resume_path) if resume_path else None, "start_step": start_step}
        _atomic_write_bytes(run_dir / "config.json", json.dumps(resolved, indent=2, default=_json_default).encode())
        if resume_path is not None:
            _append_jsonl(metrics_path, {"event": "resume", "step": start_step, "from": str(resume_path)})

    def emit(kind: str, step: int, data: dict) -> bool:
        if callback is None or not dctx.main:
            return False
        return bool(callback(TrainEvent(kind, step, cfg.steps, data)))

    emit("start", start_step, {"resumed_from": str(resume_path) if resume_path else None, "world_size": dctx.world,
                               "device": str(device), "precision": precision, "parameters": model.num_parameters(),
                               "images": len(dataset), "val_images": len(val_images)})

    last_ckpt: Path | None = resume_path
    export_path: Path | None = None
    last_loss: float | None = None
    last_val: dict | None = None
    stopped = False
    step = start_step
    params = [p for p in model.parameters()]
    ema_params = [p for p in ema.parameters()]
    local_b = cfg.batch_size // dctx.world
    shape = (unet_cfg.out_channels, patch, patch)
    t_start = time.perf_counter()

    def save(step_done: int) -> Path:
        nonlocal last_ckpt, export_path
        path = ckpt_dir / _ckpt_name(step_done)
        _save_state(path, cfg, step_done, model, ema, opt, scaler, dctx.world)
        for old in _list_checkpoints(ckpt_dir)[:-cfg.keep]:
            old.unlink(missing_ok=True)
        last_ckpt = path
        export_path = _export(step_done)
        emit("checkpoint", step_done, {"path": str(path), "export": str(export_path)})
        return path

    def _export(step_done: int) -> Path:
        src = ema if cfg.export_ema else model
        out = run_dir / "model.safetensors"
        copy = UNet(unet_cfg)
        copy.load_state_dict({k: v.detach().to("cpu", torch.float32) for k, v in src.state_dict().items()})
        written = save_checkpoint(out, copy, _model_info(cfg, step_done), dtype=cfg.export_dtype)
        _publish_mode(written)
        return written

    def validate(step_done: int) -> bool:
        nonlocal last_val
        if not val_images:
            return False
        res = _validate(ema, cfg, val_images, device, precision, channels_last, step_done, run_dir / "val")
        last_val = res
        _append_jsonl(metrics_path, {"event": "val", "step": step_done, **res})
        return emit("val", step_done, res)

    # --stop-at ends this invocation early without changing the schedule; a checkpoint already past it trains
    # nothing (so a script replaying a run in parts can be rerun after an interruption)
    end_step = min(cfg.steps, max(cfg.stop_at, start_step)) if cfg.stop_at else cfg.steps
    acc_loss, acc_n, acc_data, t_log, t_other = 0.0, 0, 0.0, time.perf_counter(), 0.0
    pending_stop = False
    it = iter(loader)
    try:
        for k in range(start_step, end_step):
            t_data = time.perf_counter()
            hr, _lr, cond = next(it)
            acc_data += time.perf_counter() - t_data
            base = k * cfg.batch_size + dctx.rank * local_b
            gamma, eps = _sample_noise(cfg.seed, list(range(base, base + local_b)), schedule, shape)
            hr = to_model(hr.to(device, non_blocking=True))
            x0 = to_model(cond.to(device, non_blocking=True))
            eps = eps.to(device, non_blocking=True)
            if channels_last:
                x0 = x0.contiguous(memory_format=torch.channels_last)
            y0 = schedule.config.to_target(hr, x0)
            torch.manual_seed(mix_seed(cfg.seed, 4, k, dctx.rank))  # dropout of this step
            indep_gen = None
            if cfg.independent_noise:
                indep_gen = torch.Generator()
                indep_gen.manual_seed(mix_seed(cfg.seed, 5, k, dctx.rank))
            lr_now = _lr_at(cfg, k)
            for g in opt.param_groups:
                g["lr"] = lr_now

            with autocast(device, precision):
                per = losses.dream_loss(net, y0, x0, schedule, cfg.p, generator=indep_gen, gamma=gamma, eps=eps,
                                        independent_noise=cfg.independent_noise, loss=cfg.loss)
            loss = per.mean()
            loss_val = loss.detach().float()
            if dctx.enabled:
                loss_val = loss_val.clone()
                dist.all_reduce(loss_val)
                loss_val /= dctx.world
            loss_f = float(loss_val)
            if not math.isfinite(loss_f):
                where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was saved yet"
                raise TrainingError(f"loss became {loss_f} at step {k + 1}; training stopped and {where}. "
                                    "Resume from it with a lower --lr, --precision fp32 or bf16, or a --grad-clip")

            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            if cfg.grad_clip > 0:
                gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                if scaler is None and not bool(torch.isfinite(gnorm)):
                    where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was saved yet"
                    raise TrainingError(f"gradient norm became {float(gnorm)} at step {k + 1}; training stopped "
                                        f"and {where}. Resume from it with a lower --lr or --precision fp32")
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()

            # EMA (warm-up as in common practice: short runs still get a meaningful average)
            d = cfg.ema_decay
            if cfg.ema_warmup:
                d = min(d, (1 + k) / (10 + k))
            with torch.no_grad():
                for e, p in zip(ema_params, params):
                    e.lerp_(p.detach(), 1.0 - d)
            step = k + 1

            acc_loss += loss_f
            acc_n += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                now = time.perf_counter()
                step_time = (now - t_log - t_other) / acc_n  # checkpoint and validation time left out
                last_loss = acc_loss / acc_n
                rec = {"step": step, "loss": last_loss, "lr": lr_now, "step_time": step_time,
                       "data_time": acc_data / acc_n, "images_per_s": cfg.batch_size / step_time,
                       "elapsed": now - t_start}
                if dctx.main:
                    _append_jsonl(metrics_path, rec)
                stop = emit("step", step, rec)
                acc_loss, acc_n, acc_data, t_log, t_other = 0.0, 0, 0.0, now, 0.0
            else:
                stop = False
            if cfg.time_limit and time.perf_counter() - t_start >= cfg.time_limit:
                stop = True
            if step == end_step < cfg.steps:
                stop = True  # --stop-at reached: checkpoint + export, --resume continues the schedule
            stop = stop or pending_stop
            if dctx.enabled:
                flag = torch.tensor([1.0 if stop else 0.0], device=device)
                dist.all_reduce(flag)  # any rank asking to stop stops all of them at the same step
                stop = bool(flag.item() > 0)

            last = step == cfg.steps
            t_aside = time.perf_counter()
            if dctx.main and (last or stop or (cfg.save_every and step % cfg.save_every == 0)):
                save(step)
            if dctx.main and cfg.val_every and (last or step % cfg.val_every == 0) and not stop:
                pending_stop = validate(step)  # honoured at the next step, on every rank
            t_other += time.perf_counter() - t_aside
            if stop:
                stopped = True
                break
    finally:
        del it

    if dctx.main and start_step >= end_step and resume_path is not None:
        export_path = _export(start_step)  # nothing left to train: still give the user the export
    if dctx.enabled:
        dist.barrier()
    emit("end", step, {"export": str(export_path) if export_path else None, "stopped": stopped,
                       "checkpoint": str(last_ckpt) if last_ckpt else None})
    return TrainResult(run_dir=run_dir, step=step, export=export_path, checkpoint=last_ckpt, last_loss=last_loss,
                       last_val=last_val, stopped=stopped, model=model, ema=ema)

