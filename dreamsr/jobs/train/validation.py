"""Validation during training: the (EMA) model upscales held-out images through the real pipeline.

Each held-out HR image (a centre crop, ``val_crop``) is downsampled by the training LR synthesis, rounded to
8 bits, upscaled with :class:`dreamsr.jobs.pipeline.Upscaler` and measured (PSNR/SSIM on Y, crop = scale, and PSNR
on RGB) against the HR image and bicubic; a grid ``val/step_XXXXXXXX.png`` shows LR | bicubic | SR | HR.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dreamsr.data import find_images, load_val_images, resolve_layout
from dreamsr.errors import ConfigError
from dreamsr.images import downsample, save_image, upsample
from dreamsr.jobs.train.config import VAL_STEPS, TrainConfig

__all__ = ["val_files", "load_validation_images", "save_grid", "validate"]


def val_files(cfg: TrainConfig) -> list[Path]:
    """The held-out HR files: ``val_dir``'s images, else ``val_dataset``'s val split, else none."""
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


def load_validation_images(cfg: TrainConfig, size_multiple: int) -> list[tuple[str, torch.Tensor]]:
    """(name, HR [3, H, W] in [0, 1]) of the first ``val_count`` held-out images, cropped to ``val_crop`` and to
    multiples of ``scale * size_multiple``. Checks now that the pipeline imports (not after hours of training)."""
    images = load_val_images(val_files(cfg), cfg.val_count, cfg.val_crop, cfg.scale * size_multiple)
    if images:
        try:
            from dreamsr.jobs.pipeline import Upscaler  # noqa: F401
        except ImportError as err:
            raise ConfigError(f"validation needs dreamsr.jobs.pipeline ({err}); use --val-every 0") from None
    return images


def save_grid(path: Path, rows: list[list[torch.Tensor]], gap: int = 2) -> None:
    """PNG of rows of [3, H, W] images in [0, 1], white gaps, each row padded to the widest (atomic)."""
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


def validate(model: nn.Module, cfg: TrainConfig, images: list[tuple[str, torch.Tensor]], device: torch.device,
             precision: str, channels_last: bool, step: int, out_dir: Path) -> dict:
    """Upscale each held-out LR with ``model`` through the pipeline; PSNR/SSIM on Y, crop = scale.

    Returns the mean metrics (``psnr``, ``ssim``, ``bicubic_psnr``, ``bicubic_ssim``, ``psnr_rgb``), ``images``
    and the ``grid`` written. ``model`` is left in the train/eval mode it had.
    """
    from dreamsr.metrics import psnr, ssim
    from dreamsr.jobs.pipeline import Upscaler

    info = cfg.model_info(step)
    was_training = model.training
    model.eval()
    try:
        up = Upscaler(model, info, device=device, precision=precision, channels_last=channels_last)
        # small centre crops go through in one piece; whole images in the default tiles. Steps/sampler: as given,
        # else the process's own (a shift process: all T ancestral steps), else VAL_STEPS respaced DDIM steps
        steps = cfg.val_steps or (None if up.process.sampling_defaults else VAL_STEPS)
        opts = up.options(steps=steps, sampler=cfg.val_sampler, seed=cfg.val_seed, tile=0 if cfg.val_crop else None)
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
    save_grid(grid, rows)
    n = len(images)
    return {"psnr": sum(ps) / n, "ssim": sum(ss) / n, "bicubic_psnr": sum(bps) / n, "bicubic_ssim": sum(bss) / n,
            "psnr_rgb": sum(prgb) / n, "images": n, "grid": str(grid)}
