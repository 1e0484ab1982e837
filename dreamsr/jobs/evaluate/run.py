"""The evaluation run: :class:`EvalConfig`, :func:`evaluate` (an upscaler over a set, per-image metrics,
aggregates, the report files) and the reuse of a finished evaluation (:func:`finished_summary`,
:func:`evaluate_cached`). Conventions and outputs: :mod:`dreamsr.jobs.evaluate`."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dreamsr import metrics as M
from dreamsr.data import data_root
from dreamsr.errors import ConfigError, DreamSRError, InputError
from dreamsr.jobs.evaluate.reports import (CONVENTION_TEXT, DIRECTIONS, METRICS, write_csv, write_grid, write_png,
                                           write_summary)
from dreamsr.jobs.evaluate.sets import PROTOCOLS, SETS, EvalItem, Protocol, resolve_set
from dreamsr.files import dumps_json, load_json, sha256_file
from dreamsr.images import load_rgb, resize, resize_pil_bicubic
from dreamsr.jobs.pipeline import output_size
from dreamsr.options import SamplingOptions

__all__ = ["EvalConfig", "Progress", "ProgressFn", "EvalReport", "REFERENCE_MODELS", "evaluate", "evaluate_cached",
           "finished_summary"]

REFERENCE_MODELS = ("bicubic", "nearest")
Convention = Literal["rgb", "y", "both"]
LRProtocol = Literal["dreamsr", "release"]
LR_PROTOCOLS: tuple[str, ...] = ("dreamsr", "release")


# ---------------------------------------------------------------------------------------------- config
@dataclass
class EvalConfig:
    """Everything that decides an evaluation's numbers (stored in summary.json)."""

    set: str = "folder"  # a name of SETS
    data_dir: str | None = None  # root of the sets (default $DREAMSR_DATA)
    limit: int | None = None  # first N items of the set
    model: str | None = None  # bicubic | nearest | a registry name or hf:// URL; None: the registry's default for
    #                           the scale, as `dreamsr upscale` picks it (jobs.weights.default_model_for)
    weights: str | None = None  # a dreamsr .safetensors checkpoint (overrides model)
    scale: float | None = None  # default: the model's native scale (diffusion) or the set's (references); any scale
    #                              in a continuous-scale model's range (IDM), an integer otherwise
    metrics: tuple[str, ...] = ("psnr", "ssim", "consistency")
    convention: Convention = "both"  # PSNR/SSIM/VIF conventions to report
    crop_border: int | None = None  # Y convention border; default = scale
    lr_protocol: LRProtocol = "dreamsr"  # how LR images (and consistency's downsample) are made: "dreamsr" (torch's
    #   antialiased bicubic in float, then 8 bits) | "release" (the released SR3/DREAM code: PIL bicubic on 8 bits)
    # sampling (dreamsr.options.SamplingOptions fields): None = not given, i.e. the model's recommendation, else
    # SamplingOptions' default -- what `dreamsr upscale` uses (merge "end" given: the paper's protocol)
    steps: int | None = None  # sampler steps
    sampler: str | None = None  # ddim | ddpm
    eta: float | None = None  # None: the sampler's default
    seed: int | None = None  # first seed; sample k uses seed + k
    samples: int = 1  # K super-resolutions per image (diffusion models)
    tile: int | None = None  # LR tile side (0: the whole image)
    overlap: int | None = None  # LR tile overlap
    merge: str | None = None  # "step" | "end" (the paper's protocol: tiles sampled independently)
    batch: int | None = None  # tiles per network call (does not change results)
    start: int | None = None  # truncated start: trained step t0 to begin from the noised condition (0: full chain)
    back_project: bool | None = None  # LR back-projection of every x0 estimate (pipeline option)
    ensemble: int | None = None  # geometric self-ensemble members averaged per super-resolution: 1, 2, 4 or 8
    profile: str | None = None  # a named sampling profile of the model (CheckpointInfo.profiles); None: its default
    metric_weights: str | None = None  # folder with LPIPS/FID backbone files (else the torch hub cache)
    lpips_net: str = "alex"  # LPIPS backbone
    device: str = "auto"
    precision: str = "auto"
    grids: int = 4  # comparison grids for the first N images
    save_images: bool = False  # also write the SR images (sample 0) to sr/
    command: str | None = None  # the command line, for the record

    def validate(self) -> None:
        """Raise ConfigError for any out-of-range option (before any work)."""
        if self.set not in SETS:
            raise ConfigError(f"unknown set {self.set!r}; choose one of {', '.join(SETS)}")
        bad = [m for m in self.metrics if m not in METRICS]
        if bad or not self.metrics:
            raise ConfigError(f"unknown metric(s) {', '.join(bad) or '(none)'}; choose from {', '.join(METRICS)}")
        if self.convention not in ("rgb", "y", "both"):
            raise ConfigError(f"convention must be rgb, y or both, got {self.convention!r}")
        for name, v, lo in (("limit", self.limit, 1), ("scale", self.scale, 1.0), ("crop_border", self.crop_border, 0),
                            ("samples", self.samples, 1), ("grids", self.grids, 0)):
            if v is not None and v < lo:
                raise ConfigError(f"{name} must be >= {lo}, got {v}")
        if self.start is not None and self.start < 0:
            raise ConfigError(f"start must be >= 0 (0: the full chain), got {self.start}")
        SamplingOptions.check_given(**self.sampling_given())
        if self.lpips_net not in M.LPIPS_FILES:
            raise ConfigError(f"LPIPS network must be one of {', '.join(M.LPIPS_FILES)}, got {self.lpips_net!r}")
        if self.lr_protocol not in LR_PROTOCOLS:
            raise ConfigError(f"lr_protocol must be one of {', '.join(LR_PROTOCOLS)}, got {self.lr_protocol!r}")

    def resolved(self) -> "EvalConfig":
        """This config with ``model`` named: without ``model`` and ``weights``, the registry's default model for
        ``scale`` (:func:`dreamsr.jobs.weights.default_model_for`, the rule of ``dreamsr upscale``). Raises
        ModelNotFoundError when the registry has no default."""
        if self.model is not None or self.weights is not None:
            return self
        from dreamsr.jobs.weights import default_model_for

        return replace(self, model=default_model_for(self.scale))

    def sampling_given(self) -> dict[str, Any]:
        """The sampling fields as given (None: not given), for :meth:`dreamsr.jobs.pipeline.Upscaler.options`."""
        return {name: getattr(self, name) for name in ("steps", "sampler", "eta", "seed", "tile", "overlap", "batch",
                                                       "merge", "start", "back_project", "ensemble")}


@dataclass(frozen=True)
class Progress:
    """A progress event: ``done`` of ``total`` (image, seed) runs finished; ``item`` is being worked on.
    ``calls``/``calls_total`` count the network calls of the current run (0/0 for reference upscalers)."""

    done: int
    total: int
    item: str
    stage: str  # "start" (item: the resolved sampling, once) | "upscale" | "metrics" | "fid" | "done" | "error"
    calls: int = 0
    calls_total: int = 0


ProgressFn = Callable[[Progress], None]


@dataclass
class EvalReport:
    """What :func:`evaluate` wrote and found."""

    out_dir: Path
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    files: dict[str, Path] = field(default_factory=dict)  # csv, json, md, grids (first), sr dir

    @property
    def errors(self) -> list[dict[str, str]]:
        return self.summary["errors"]


# ---------------------------------------------------------------------------------------------- upscalers
def _plain(scale: float) -> float:
    """An integer-valued scale as an int (reports say x4, not x4.0)."""
    return int(scale) if float(scale).is_integer() else float(scale)


class _Reference:
    """bicubic / nearest: deterministic reference upscalers at any scale (output round(scale x side), the
    pipeline's rule)."""

    stochastic = False

    def __init__(self, name: str, scale: float) -> None:
        self.name, self.scale = name, _plain(scale)

    def upscale(self, lr: torch.Tensor, seed: int, callback: Callable[[int, int], None] | None) -> torch.Tensor:
        size = output_size(int(lr.shape[-2]), int(lr.shape[-1]), self.scale)
        if self.name == "bicubic":
            return resize(lr, size).clamp(0, 1)  # = upsample(lr, scale) at an integer scale
        return F.interpolate(lr.unsqueeze(0), size=size, mode="nearest").squeeze(0)

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "reference", "scale": self.scale,
                "description": "antialiased bicubic (dreamsr.images.upsample)" if self.name == "bicubic"
                else "nearest neighbour"}


class _Diffusion:
    """A dreamsr diffusion model through :class:`dreamsr.jobs.pipeline.Upscaler` (never a private sampler)."""

    stochastic = True

    def __init__(self, upscaler: Any, cfg: EvalConfig, protocol: Protocol, source: dict[str, Any]) -> None:
        self.up, self.cfg, self.protocol, self.source = upscaler, cfg, protocol, source
        lo, hi = upscaler.scales
        # a continuous-scale model is evaluated at the asked scale (checked against its range), others at theirs
        self.scale = _plain(cfg.scale if cfg.scale is not None and lo < hi else upscaler.scale)
        upscaler.family.check_scale(upscaler.info.network, upscaler.scale, self.scale)
        # what `dreamsr upscale` would use: the defaults, the model's recommendation, then what was given
        # (Upscaler.options); the set's protocol decides the images, not the sampling
        self.given = {k: v for k, v in cfg.sampling_given().items() if v is not None}
        self.options: SamplingOptions = upscaler.options(profile=cfg.profile, **self.given)

    def header(self) -> str:
        """The run header: the sampling used and where each setting came from (one line)."""
        rec = self.up.info.sampling_for(self.cfg.profile)
        whose = f"the model's {self.cfg.profile!r} profile is" if self.cfg.profile else "the model recommends"
        parts = [f"{whose} {', '.join(f'{k} {v}' for k, v in sorted(rec.items()))}" if rec
                 else "the model recommends nothing"]
        if self.given:
            parts.append(f"given: {', '.join(f'{k} {v}' for k, v in self.given.items())}, which override it")
        else:
            parts.append("as dreamsr upscale samples it")
        if self.options.merge == "end":
            parts.append("merge end: tiles sampled independently, the paper's protocol (Sec. 6.2)")
        return f"sampling: {self.options.describe()} ({'; '.join(parts)})"

    def upscale(self, lr: torch.Tensor, seed: int, callback: Callable[[int, int], None] | None) -> torch.Tensor:
        return self.up.upscale(lr, self.options, scale=self.scale, seed=seed, callback=callback)

    def metadata(self) -> dict[str, Any]:
        info = self.up.info
        return {**self.source, "kind": "diffusion", "scale": self.scale, "family": info.family,
                "process": info.process, "network": info.network.to_dict(),
                "diffusion": info.diffusion.to_dict(), "training": info.training,
                "checkpoint_dreamsr_version": info.dreamsr_version, "device": str(self.up.device),
                "precision": self.up.precision, "sampling": self.options.to_dict(),
                "recommended_sampling": dict(info.sampling_for(self.cfg.profile)), "profile": self.cfg.profile}



def _make_upscaler(cfg: EvalConfig, protocol: Protocol, upscaler: Any | None) -> _Reference | _Diffusion:
    if upscaler is None and cfg.weights is None and cfg.model in REFERENCE_MODELS:
        return _Reference(cfg.model, cfg.scale or SETS[cfg.set].scale)
    if upscaler is None:
        from dreamsr.jobs.pipeline import Upscaler
        from dreamsr.jobs.weights import resolve_weights

        path = resolve_weights(weights=cfg.weights, model=None if cfg.weights else cfg.model)
        upscaler = Upscaler.from_checkpoint(path, device=cfg.device, precision=cfg.precision)
        source = {"name": cfg.model if cfg.weights is None else Path(cfg.weights).stem, "weights": str(path),
                  "sha256": sha256_file(Path(path))}
    else:
        source = {"name": cfg.model if cfg.model not in (*REFERENCE_MODELS, None) else "custom", "weights": None}
    run = _Diffusion(upscaler, cfg, protocol, source)
    if cfg.scale is not None and cfg.scale != run.scale:
        raise ConfigError(f"model {source['name']} serves x{run.scale:g} only; drop --scale or pass "
                          f"--scale {run.scale:g}")
    return run


# ---------------------------------------------------------------------------------------------- helpers
def _quantize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] float -> nearest 8-bit level, as a saved PNG (float32, [0, 1])."""
    return x.clamp(0, 1).mul(255).round().div(255)


def _shrink(x: torch.Tensor, size: tuple[int, int], lr_protocol: LRProtocol) -> torch.Tensor:
    """``x`` [3,H,W] in [0, 1] resized to ``size`` = (h, w) and rounded to 8 bits, the ``lr_protocol``'s way:
    dreamsr's antialiased bicubic in float (:func:`dreamsr.images.resize`), or the release's PIL bicubic on the
    8-bit image (:func:`dreamsr.images.resize_pil_bicubic`)."""
    if lr_protocol == "release":
        return resize_pil_bicubic(x, size)
    return _quantize(resize(x, size))


def _prepare_pair(item: EvalItem, scale: float, protocol: Protocol,
                  lr_protocol: LRProtocol = "dreamsr") -> tuple[torch.Tensor, torch.Tensor]:
    """Load (LR, HR) of an item as 8-bit-valued float [3,h,w], [3,h*s,w*s] in [0, 1]; InputError per file.

    A non-integer scale a/b (a continuous-scale model) crops the HR bottom/right to multiples of a, so the LR
    (h = H b / a) enlarged by the scale is exactly the HR's size. Every resize is :func:`_shrink`'s under
    ``lr_protocol``. Under ``"release"`` a protocol with ``hr_size`` (faces) makes the HR and the LR each from the
    file, as the release's ``prepare_data.py`` does (file -> 128 px, file -> 16 px); a file already ``hr_size``
    px is the HR itself and the LR is made from it."""
    if item.error:
        raise InputError(item.error)
    assert item.hr is not None
    hr = load_rgb(item.hr)
    if protocol.hr_size is not None and tuple(hr.shape[-2:]) != (protocol.hr_size, protocol.hr_size):
        if lr_protocol == "release" and item.lr is None and float(scale) == int(scale) \
                and protocol.hr_size % int(scale) == 0:
            side = protocol.hr_size // int(scale)
            return resize_pil_bicubic(hr, (side, side)), resize_pil_bicubic(hr, (protocol.hr_size,) * 2)
        hr = _shrink(hr, (protocol.hr_size, protocol.hr_size), lr_protocol)
    if float(scale) != int(scale):
        if item.lr is not None:
            raise InputError(f"{item.lr}: paired LR files are evaluated at integer scales only (x{scale:g} asked)")
        frac = Fraction(scale).limit_denominator(100)
        a, b = frac.numerator, frac.denominator
        H, W = hr.shape[-2:]
        H, W = H - H % a, W - W % a
        if min(H, W) * b // a < 4:
            raise InputError(f"{item.hr}: {hr.shape[-1]}x{hr.shape[-2]} is too small for x{scale:g}")
        hr = hr[:, :H, :W].contiguous()
        return _shrink(hr, (H * b // a, W * b // a), lr_protocol), hr
    scale = int(scale)
    if item.lr is not None:
        lr = load_rgb(item.lr)
        (H, W), (h, w) = hr.shape[-2:], lr.shape[-2:]
        if not (h * scale <= H < (h + 1) * scale and w * scale <= W < (w + 1) * scale):
            raise InputError(f"{item.lr}: LR is {w}x{h} but HR {item.hr} is {W}x{H}; at x{scale} the HR must be "
                             f"{w * scale}x{h * scale} (pairs must come from the same image)")
        hr = hr[:, :h * scale, :w * scale]  # GTmod crop
        return lr, hr
    H, W = hr.shape[-2:]
    H, W = H - H % scale, W - W % scale  # GTmod: crop bottom/right to a multiple of the scale
    if min(H, W) // scale < 4:
        raise InputError(f"{item.hr}: {hr.shape[-1]}x{hr.shape[-2]} is too small for x{scale} "
                         f"(the LR image would be under 4x4 px)")
    hr = hr[:, :H, :W].contiguous()
    return _shrink(hr, (H // scale, W // scale), lr_protocol), hr  # dreamsr: = downsample(hr, scale)


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    a = np.asarray(values, dtype=np.float64)
    if np.isinf(a).any():
        mean = float(np.mean(a))  # +inf when an image is identical (PSNR): reported as such
        return mean, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def _columns(metrics: Sequence[str], convention: str) -> list[tuple[str, str, str]]:
    """(csv column, metric, convention) for the per-image metrics, in report order."""
    convs = ["rgb", "y"] if convention == "both" else [convention]
    cols = []
    for m in ("psnr", "ssim", "vif"):
        if m in metrics:
            cols += [(f"{m}_{c}", m, c) for c in convs]
    for m in M.PIQ_MEASURES:  # piq's measures: RGB, whole image, whatever the convention
        if m in metrics:
            cols.append((m, m, "rgb"))
    if "hf" in metrics:  # the HF ratio: always the Y convention (its crop), whatever --convention says
        cols.append(("hf", "hf", "y"))
    if "consistency" in metrics:
        cols.append(("consistency", "consistency", "rgb"))
    if "lpips" in metrics:
        cols.append(("lpips", "lpips", "rgb"))
    return cols


# ---------------------------------------------------------------------------------------------- evaluate
def evaluate(config: EvalConfig, out_dir: str | os.PathLike, *, progress: ProgressFn | None = None,
             upscaler: Any | None = None) -> EvalReport:
    """Super-resolve every item of ``config.set`` and write the report into ``out_dir`` (created).

    ``upscaler``: an already built :class:`dreamsr.jobs.pipeline.Upscaler` to use instead of ``config.model`` /
    ``config.weights`` (a training loop evaluating its own model). Per-file problems (unreadable files, missing
    pairs, size mismatches) are recorded as errors and counted in the summary; they never stop the run.
    Raises ConfigError for bad options and DatasetError when the set is not found.
    """
    t_start = time.perf_counter()
    cfg = config
    cfg.validate()
    if upscaler is None:
        cfg = cfg.resolved()  # no model named: the registry's default, as `dreamsr upscale` picks it
    spec = SETS[cfg.set]
    protocol = PROTOCOLS[spec.protocol]
    items = resolve_set(cfg.set, cfg.data_dir, limit=cfg.limit)
    run = _make_upscaler(cfg, protocol, upscaler)
    scale = run.scale
    if protocol.hr_size is not None and protocol.hr_size % scale:
        raise ConfigError(f"set {cfg.set} is {protocol.hr_size}x{protocol.hr_size} HR; x{scale} does not divide it")
    samples = cfg.samples if run.stochastic else 1
    first_seed = run.options.seed if isinstance(run, _Diffusion) else (cfg.seed or 0)
    crop = math.ceil(scale) if cfg.crop_border is None else cfg.crop_border  # BasicSR's crop_border = scale
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = getattr(getattr(run, "up", None), "device", None)
    if device is None:
        from dreamsr.runtime import resolve_device

        device = resolve_device(cfg.device)

    # metric networks, built once; absent weights -> unavailable, the rest still runs
    unavailable: dict[str, str] = {}
    lpips_fn = feats = None
    if "vif" in cfg.metrics:
        try:
            M.vif_backend()
        except M.MetricUnavailableError as err:
            unavailable["vif"] = str(err)
    for m in M.PIQ_MEASURES:
        if m in cfg.metrics:
            try:
                M.piq_backend(m)
            except M.MetricUnavailableError as err:
                unavailable[m] = str(err)
    if "lpips" in cfg.metrics:
        try:
            lpips_fn = M.LPIPS(cfg.lpips_net, weights_dir=cfg.metric_weights, device=device)
        except M.MetricUnavailableError as err:
            unavailable["lpips"] = str(err)
    if "fid" in cfg.metrics:
        try:
            feats = M.InceptionFeatures(weights_dir=cfg.metric_weights, device=device)
        except M.MetricUnavailableError as err:
            unavailable["fid"] = str(err)
    cols = [c for c in _columns(cfg.metrics, cfg.convention) if c[1] not in unavailable]
    sr_name = str(run.metadata().get("name") or "SR")

    rows: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    hr_feats: list[np.ndarray] = []
    sr_feats: list[list[np.ndarray]] = [[] for _ in range(samples)]
    grid_paths: list[Path] = []
    total = len(items) * samples
    done = 0
    ok_images = 0

    def emit(item: str, stage: str, calls: int = 0, calls_total: int = 0) -> None:
        if progress is not None:
            progress(Progress(done, total, item, stage, calls, calls_total))

    if isinstance(run, _Diffusion):  # the run header: what will sample, before any work
        emit(run.header(), "start")
    for item in items:
        label = item.name
        try:
            lr, hr = _prepare_pair(item, scale, protocol, cfg.lr_protocol)
            border = crop if any(c[2] == "y" for c in cols) else 0
            if min(hr.shape[-2:]) - 2 * border < 11 and any(c[1] == "ssim" for c in cols):
                raise InputError(f"{item.hr or item.lr}: {hr.shape[-1]}x{hr.shape[-2]} leaves under 11x11 px for "
                                 f"SSIM after cropping {border} px")
            if min(hr.shape[-2:]) - 2 * border < M.VIF_MIN_SIZE and any(c[1] == "vif" for c in cols):
                raise InputError(f"{item.hr or item.lr}: {hr.shape[-1]}x{hr.shape[-2]} leaves under "
                                 f"{M.VIF_MIN_SIZE}x{M.VIF_MIN_SIZE} px for VIF after cropping {border} px")
            if min(hr.shape[-2:]) < M.HAARPSI_MIN_SIZE and any(c[1] == "haarpsi" for c in cols):
                raise InputError(f"{item.hr or item.lr}: {hr.shape[-1]}x{hr.shape[-2]} is under "
                                 f"{M.HAARPSI_MIN_SIZE}x{M.HAARPSI_MIN_SIZE} px, too small for HaarPSI")
            if min(hr.shape[-2:]) - 2 * crop < M.HF_WINDOW and any(c[1] == "hf" for c in cols):
                raise InputError(f"{item.hr or item.lr}: {hr.shape[-1]}x{hr.shape[-2]} leaves under "
                                 f"{M.HF_WINDOW}x{M.HF_WINDOW} px for the HF ratio after cropping {crop} px")
        except DreamSRError as err:
            errors.append({"image": label, "error": str(err)})
            rows.append({"image": label, "sample": "", "seed": "", "error": str(err)})
            done += samples
            emit(label, "error")
            continue
        bic = resize(lr, tuple(hr.shape[-2:])).clamp(0, 1)  # the bicubic column of the grids
        image_rows: list[dict[str, Any]] = []
        image_feats: list[np.ndarray] = []  # SR features per seed, kept only if the whole image succeeds
        sr0: torch.Tensor | None = None
        try:
            for k in range(samples):
                seed = first_seed + k
                t0 = time.perf_counter()
                emit(label, "upscale")
                sr = run.upscale(lr.to(device), seed,
                                 lambda c, t, label=label: emit(label, "upscale", c, t)).float().cpu()
                seconds = time.perf_counter() - t0
                if tuple(sr.shape) != tuple(hr.shape):
                    raise InputError(f"{label}: the model returned {tuple(sr.shape)}, expected {tuple(hr.shape)}")
                sr = _quantize(sr)
                emit(label, "metrics")
                row: dict[str, Any] = {"image": label, "sample": k, "seed": seed if run.stochastic else "",
                                       "lr_size": f"{lr.shape[-1]}x{lr.shape[-2]}",
                                       "hr_size": f"{hr.shape[-1]}x{hr.shape[-2]}"}
                for col, metric, conv in cols:
                    border = crop if conv == "y" else 0
                    if metric == "psnr":
                        row[col] = M.psnr(sr, hr, crop_border=border, y_channel=conv == "y")
                    elif metric == "ssim":
                        row[col] = M.ssim(sr, hr, crop_border=border, y_channel=conv == "y")
                    elif metric == "vif":
                        row[col] = M.vif(sr, hr, crop_border=border, y_channel=conv == "y")
                    elif metric in M.PIQ_MEASURES:
                        row[col] = M.perceptual_scores(sr, hr, measures=(metric,))[metric][0]
                    elif metric == "hf":
                        row[col] = M.hf_ratio(sr, hr, crop_border=border)
                    elif metric == "consistency":
                        row[col] = M.consistency(sr, lr, rule=cfg.lr_protocol)
                    elif metric == "lpips":
                        row[col] = lpips_fn(sr, hr)  # type: ignore[misc]
                row["seconds"] = round(seconds, 4)
                row["error"] = ""
                image_rows.append(row)
                if feats is not None:
                    image_feats.append(feats(sr))
                if k == 0:
                    sr0 = sr
                done += 1
                emit(label, "done")
            hr_feat = feats(hr) if feats is not None else None
        except DreamSRError as err:
            errors.append({"image": label, "error": str(err)})
            rows.append({"image": label, "sample": "", "seed": "", "error": str(err)})
            done += samples - len(image_rows)
            emit(label, "error")
            continue
        if hr_feat is not None:
            hr_feats.append(hr_feat)
            for k in range(samples):
                sr_feats[k].append(image_feats[k])
        rows.extend(image_rows)
        ok_images += 1
        if cfg.save_images and sr0 is not None:
            write_png(out / "sr" / f"{label}.png", sr0)
        if len(grid_paths) < cfg.grids and sr0 is not None:
            r0 = image_rows[0]
            cap = {}
            for c in ("psnr_y", "psnr_rgb"):
                if c in r0:
                    sr_val = r0[c]
                    b = M.psnr(_quantize(bic), hr, crop_border=crop if c == "psnr_y" else 0,
                               y_channel=c == "psnr_y")
                    cap = {"bicubic": f"{b:.2f} dB", sr_name: f"{sr_val:.2f} dB"}
                    break
            gp = out / "grids" / f"{label.replace('/', '__')}.png"
            write_grid(gp, lr, bic, sr0, hr, sr_name, cap)
            grid_paths.append(gp)

    # ----------------------------------------------------------------------------- aggregate
    ok_rows = [r for r in rows if not r.get("error")]
    results: list[dict[str, Any]] = []
    for col, metric, conv in cols:
        per_seed = [[r[col] for r in ok_rows if r["sample"] == k] for k in range(samples)]
        all_vals = [v for seed_vals in per_seed for v in seed_vals]
        mean, std_images = _mean_std(all_vals)
        entry: dict[str, Any] = {"metric": metric, "column": col, "convention": conv, "mean": mean,
                                 "count": len(per_seed[0]) if per_seed else 0, "samples": samples,
                                 "direction": DIRECTIONS[metric]}
        if metric in ("psnr", "ssim", "vif"):
            entry["crop_border"] = crop if conv == "y" else 0
            entry["convention_text"] = M.CONVENTIONS[conv].replace("= scale", f"= {crop}")
            if metric == "vif":  # the PSNR/SSIM conventions' pixels, the VIF range (not "data range 1")
                entry["convention_text"] = ("RGB, whole image (crop_border=0)" if conv == "rgb" else
                                            f"BT.601 Y (MATLAB rgb2ycbcr), crop_border = {crop} before conversion"
                                            ) + f"; {CONVENTION_TEXT['vif']}"
            entry["convention_short"] = "RGB, whole image" if conv == "rgb" else f"Y BT.601, crop {crop}"
        else:
            if metric == "hf":
                entry["crop_border"] = crop
            entry["convention_text"] = CONVENTION_TEXT[metric].format(net=cfg.lpips_net, crop=crop)
            entry["convention_short"] = {"consistency": "MSE x1e5, [0,1]", "lpips": f"{cfg.lpips_net}, [-1,1]",
                                         "haarpsi": "piq, RGB [0,1]; higher better, 1 = copy",
                                         "gmsd": "piq, RGB [0,1]; lower better, 0 = copy",
                                         "mdsi": "piq, RGB [0,1]; lower better, 0 = copy",
                                         "hf": f"Y BT.601, crop {crop}; 1 = HR, <1 blur, >1 noise"}[metric]
        if samples > 1:
            seed_means = [_mean_std(v)[0] for v in per_seed]
            entry["std"] = _mean_std(seed_means)[1]
            entry["std_over"] = f"{samples} seeds (std of per-seed set means)"
            entry["per_seed_mean"] = seed_means
            entry["std_images"] = std_images
        else:
            entry["std"] = std_images
            entry["std_over"] = "images"
        results.append(entry)

    warnings: list[str] = []
    if "fid" in cfg.metrics and "fid" not in unavailable:
        emit("FID", "fid")
        n = len(hr_feats)
        entry = {"metric": "fid", "column": "fid", "convention": "rgb", "count": n, "samples": samples,
                 "direction": DIRECTIONS["fid"],
                 "convention_text": CONVENTION_TEXT["fid"], "convention_short": "pool3 2048-d"}
        if n < 2:
            entry.update(mean=math.nan, std=math.nan, available=False,
                         reason=f"FID needs at least 2 images, {n} evaluated")
        else:
            hr_all = np.concatenate(hr_feats)
            fids = [M.fid_from_features(np.concatenate(sr_feats[k]), hr_all) for k in range(samples)]
            entry["mean"] = float(np.mean(fids))
            entry["std"] = float(np.std(fids, ddof=1)) if samples > 1 else math.nan
            entry["std_over"] = f"{samples} seeds" if samples > 1 else "n/a (one value per set)"
            if samples > 1:
                entry["per_seed_mean"] = fids
            w = M.fid_warning(n)
            if w:
                entry["warning"] = w
                warnings.append(w)
        results.append(entry)
    for metric, reason in unavailable.items():
        results.append({"metric": metric, "available": False, "reason": reason, "mean": None, "std": None,
                        "count": 0, "convention": "rgb"})
        warnings.append(f"{metric} unavailable: {reason}")
    if errors:
        warnings.append(f"{len(errors)} of {len(items)} file(s) failed; see errors")
    if samples != cfg.samples:
        warnings.append(f"{cfg.model} is deterministic: samples={cfg.samples} reduced to 1")

    from dreamsr import __version__

    summary: dict[str, Any] = {
        "dreamsr_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": cfg.command,
        "set": cfg.set,
        "data_dir": str(data_root(cfg.data_dir)),
        "protocol": {"name": protocol.name, "hr_size": protocol.hr_size, "description": protocol.description,
                     "paper_sampling": {"tile": protocol.tile, "overlap": protocol.overlap, "merge": protocol.merge},
                     **({"tile": run.options.tile, "overlap": run.options.overlap, "merge": run.options.merge}
                        if isinstance(run, _Diffusion) else
                        {"tile": 0, "overlap": 0, "note": "reference upscalers run on the whole image (tiling does "
                         "not apply)"})},
        "scale": scale,
        "model": run.metadata(),
        "seed": first_seed,
        "samples": samples,
        "steps": run.options.steps if isinstance(run, _Diffusion) else None,
        "sampler": run.options.sampler if isinstance(run, _Diffusion) else None,
        "lr_protocol": cfg.lr_protocol,
        "conventions": {"rgb": M.CONVENTIONS["rgb"], "y": M.CONVENTIONS["y"].replace("= scale", f"= {crop}"),
                        "sr_quantized": "SR rounded to 8 bits before metrics; " + (
                            "LR synthesised by antialiased bicubic (torch, float) and rounded to 8 bits"
                            if cfg.lr_protocol == "dreamsr" else
                            "LR (and a resized HR) made the released SR3/DREAM code's way: PIL bicubic on 8-bit "
                            "images; consistency downsamples the SR image by PIL bicubic")},
        "crop_border": crop,
        "images": len(items),
        "count": ok_images,
        "n_errors": len(errors),
        "errors": errors,
        "metrics": results,
        "warnings": warnings,
        "seconds": round(time.perf_counter() - t_start, 3),
        "config": asdict(cfg),
    }

    files = {"csv": out / "metrics.csv", "json": out / "summary.json", "md": out / "summary.md"}
    write_csv(files["csv"], rows, cols)
    write_summary(files["json"], summary)  # summary.md, then summary.json last
    if grid_paths:
        files["grids"] = grid_paths[0].parent
    if cfg.save_images:
        files["sr"] = out / "sr"
    return EvalReport(out, summary, rows, files)


def _comparable_config(config: dict[str, Any]) -> dict[str, Any]:
    """A config as summary.json stores it, without the command line (it does not change results)."""
    return {k: v for k, v in json.loads(dumps_json(config)).items() if k != "command"}


def finished_summary(config: EvalConfig, out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The summary of a finished evaluation of the same thing in ``out_dir``, or None.

    "The same" means summary.json's config equals ``config`` in every field but ``command`` and, for a
    checkpoint file (``config.weights``), its recorded sha256 equals the file's sha256 now (a retrained file at
    the same path does not match; a registry name is matched by name; a config without a model is matched as
    :meth:`EvalConfig.resolved` names it, so a changed registry default does not match). summary.json is written
    last and atomically, so an interrupted evaluation never matches.
    """
    path = Path(out_dir) / "summary.json"
    if not path.is_file():
        return None
    config = config.resolved()
    try:
        cached = load_json(path)
    except (OSError, ValueError):
        return None
    # a field added to EvalConfig after the summary was written is absent there: its default is what ran
    stored = {**asdict(EvalConfig()), **cached.get("config", {})}
    if _comparable_config(stored) != _comparable_config(asdict(config)):
        return None
    if config.weights and cached.get("model", {}).get("sha256") != sha256_file(Path(config.weights)):
        return None
    return cached


def evaluate_cached(config: EvalConfig, out_dir: str | os.PathLike, *,
                    progress: ProgressFn | None = None) -> tuple[dict[str, Any], bool]:
    """:func:`evaluate` unless :func:`finished_summary` finds the same evaluation done in ``out_dir``.
    Returns (summary, reused)."""
    cached = finished_summary(config, out_dir)
    if cached is not None:
        return cached, True
    return evaluate(config, out_dir, progress=progress).summary, False
