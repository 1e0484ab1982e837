"""Evaluation: run an upscaler over a named set, aggregate metrics, and write a report people can trust.

Sets (under ``data_dir`` or ``$DREAMSR_DATA``; :data:`SETS` lists the accepted folder names):

============== ======================================================================= ======== ==========
set            layout                                                                  scale    protocol
============== ======================================================================= ======== ==========
div2k-val      ``DIV2K/DIV2K_valid_HR/*.png`` (100 images)                              4        div2k
celebahq       ``celeba_hq/*`` or ``CelebA-HQ-img/*``: the last 100 files (sorted)      8        faces
set5 / set14   ``Set5/HR/*`` (or ``Set5/GTmod12``, ``Set5/original``, ``benchmark/Set5/HR``)  4  div2k
bsd100         ``BSD100/HR`` (or ``B100``, ``BSDS100``)                                 4        div2k
urban100       ``Urban100/HR``                                                          4        div2k
cat            ``cat/*`` (or ``CAT``, ``cats``)                                         4        div2k
lsun-bedroom   ``lsun/bedroom/*`` (or ``lsun_bedroom``, ``bedroom``)                    4        div2k
lsun-tower     ``lsun/tower/*`` (or ``lsun_tower``, ``tower``)                          4        div2k
folder         ``data_dir`` itself, every image below it is an HR image                 4        div2k
paired         ``data_dir/HR/<name>`` and ``data_dir/LR/<name>`` (same stem)            (files)  div2k
============== ======================================================================= ======== ==========

LR synthesis (every set but ``paired``): the HR image is cropped at the bottom/right to a multiple of the scale
(BasicSR's "GTmod"), downsampled with :func:`dreamsr.images.downsample` (the antialiased bicubic used in
training) and rounded to 8 bits as a saved LR file would be. The ``div2k`` and ``celebahq`` validation files are
the ones :func:`dreamsr.data.resolve_layout` holds out of training.

Protocols (paper Sec. 6.2): ``div2k`` -- the LR image is super-resolved in 40x40 LR tiles with 5 px overlap,
tiles sampled independently and merged at the end; ``faces`` -- HR resized to 128x128 (16x16 LR at x8), the
whole image in one piece. Reference upscalers (``bicubic``, ``nearest``) ignore tiling.

Metrics: SR outputs are rounded to 8 bits before any metric (as the SR3/DREAM and BasicSR code measure saved
images). Conventions: ``rgb`` = RGB on the whole image; ``y`` = BT.601 Y with ``crop_border`` (default = scale)
cropped first (:mod:`dreamsr.metrics`). With ``samples`` K > 1 every image is super-resolved with seeds
``seed .. seed+K-1``; the summary ``mean`` is over all images and seeds and ``std`` is the standard deviation of
the K per-seed set means (with K = 1, ``std`` is over images).

Output folder: ``metrics.csv`` (one row per image and seed, failed files included with their error),
``summary.json``, ``summary.md`` and ``grids/*.png`` (LR | bicubic | SR | HR with a zoomed crop) for the first
images. The library never prints; ``progress`` receives :class:`Progress` events.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dreamsr import metrics as M
from dreamsr.errors import ConfigError, DatasetError, DreamSRError, InputError
from dreamsr.images import downsample, load_rgb, resize, upsample
from dreamsr.options import SamplingOptions
from dreamsr.weights import sha256_file

__all__ = [
    "SETS", "SetSpec", "Protocol", "PROTOCOLS", "EvalItem", "EvalConfig", "Progress", "EvalReport",
    "METRICS", "REFERENCE_MODELS", "resolve_set", "evaluate", "evaluate_cached", "finished_summary", "compare", "compare_markdown", "load_summary",
    "format_metric", "metric_label",
    "IMAGE_EXTENSIONS",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
METRICS = ("psnr", "ssim", "consistency", "lpips", "fid")
REFERENCE_MODELS = ("bicubic", "nearest")
Convention = Literal["rgb", "y", "both"]


# ---------------------------------------------------------------------------------------------- sets
@dataclass(frozen=True)
class Protocol:
    """How a set is super-resolved: tiling of the LR input and the HR size (None: the file's own size)."""

    name: str
    tile: int  # LR tile side in px (0: whole image)
    overlap: int  # LR px shared by neighbouring tiles
    merge: Literal["step", "end"]  # pipeline merge mode ("end": tiles sampled independently, paper Sec. 6.2)
    hr_size: int | None = None  # HR resized to hr_size x hr_size before LR synthesis (faces)
    description: str = ""


PROTOCOLS: dict[str, Protocol] = {
    "div2k": Protocol("div2k", 40, 5, "end", None, "40x40 LR tiles, 5 px overlap, merged at the end (paper 6.2)"),
    "faces": Protocol("faces", 0, 0, "end", 128, "HR resized to 128x128, whole image in one piece (paper 6.2)"),
}


@dataclass(frozen=True)
class SetSpec:
    """A named evaluation set: where its HR files live, its default scale and protocol."""

    name: str
    dirs: tuple[str, ...]  # folders under the data root tried in order ("." = the root itself)
    scale: int  # default factor
    protocol: str
    layout: str  # what a user must put where (shown in errors)
    source: str  # where the official files are published


SETS: dict[str, SetSpec] = {s.name: s for s in (
    SetSpec("div2k-val", ("DIV2K/DIV2K_valid_HR",), 4, "div2k", "DIV2K/DIV2K_valid_HR/*.png (100 images)",
            "https://data.vision.ee.ethz.ch/cvl/DIV2K/ (DIV2K_valid_HR.zip)"),
    SetSpec("celebahq", ("celeba_hq",), 8, "faces", "celeba_hq/*.png|jpg or CelebA-HQ-img/*.jpg (last 100 sorted)",
            "https://github.com/switchablenorms/CelebAMask-HQ"),
    SetSpec("set5", ("Set5/HR", "Set5/GTmod12", "Set5/original", "benchmark/Set5/HR", "Set5"), 4, "div2k",
            "Set5/HR/*.png (or Set5/GTmod12, Set5/original, benchmark/Set5/HR)",
            "https://github.com/XPixelGroup/BasicSR/blob/master/docs/DatasetPreparation.md"),
    SetSpec("set14", ("Set14/HR", "Set14/GTmod12", "Set14/original", "benchmark/Set14/HR", "Set14"), 4, "div2k",
            "Set14/HR/*.png (or Set14/GTmod12, Set14/original, benchmark/Set14/HR)",
            "https://github.com/XPixelGroup/BasicSR/blob/master/docs/DatasetPreparation.md"),
    SetSpec("bsd100", ("BSD100/HR", "B100/HR", "BSDS100/HR", "benchmark/B100/HR", "BSD100", "B100", "BSDS100"), 4,
            "div2k", "BSD100/HR/*.png (or B100/HR, BSDS100/HR, benchmark/B100/HR)",
            "https://github.com/XPixelGroup/BasicSR/blob/master/docs/DatasetPreparation.md"),
    SetSpec("urban100", ("Urban100/HR", "benchmark/Urban100/HR", "Urban100"), 4, "div2k",
            "Urban100/HR/*.png (or benchmark/Urban100/HR)",
            "https://github.com/XPixelGroup/BasicSR/blob/master/docs/DatasetPreparation.md"),
    SetSpec("cat", ("cat", "CAT", "cats"), 4, "div2k", "cat/*.png|jpg (the 100 validation images you chose)",
            "https://github.com/Ree1s/IDM (CAT validation split)"),
    SetSpec("lsun-bedroom", ("lsun/bedroom", "lsun_bedroom", "bedroom"), 4, "div2k",
            "lsun/bedroom/*.png|jpg (LSUN bedroom validation images)", "https://github.com/fyu/lsun"),
    SetSpec("lsun-tower", ("lsun/tower", "lsun_tower", "tower"), 4, "div2k",
            "lsun/tower/*.png|jpg (LSUN tower validation images)", "https://github.com/fyu/lsun"),
    SetSpec("folder", (".",), 4, "div2k", "any folder of HR images (searched recursively)", "your own photos"),
    SetSpec("paired", (".",), 4, "div2k", "HR/<name>.png and LR/<name>.png, LR exactly HR/scale",
            "your own pairs"),
)}


@dataclass(frozen=True)
class EvalItem:
    """One entry of a set: an HR file, its LR partner (``paired``) or an error found while listing."""

    name: str  # relative path without extension: unique within the set
    hr: Path | None
    lr: Path | None = None
    error: str | None = None  # e.g. "no LR partner": reported per file, never fatal


def _find_images(folder: Path, recursive: bool = True) -> list[Path]:
    it = folder.rglob("*") if recursive else folder.iterdir()
    files = [p for p in it if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _data_root(data_dir: str | os.PathLike | None) -> Path | None:
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("DREAMSR_DATA")
    return Path(env).expanduser() if env else None


def _missing(spec: SetSpec, root: Path | None, detail: str = "") -> DatasetError:
    at = f"under {root}" if root is not None else "(no --data-dir given and DREAMSR_DATA is not set)"
    extra = f" {detail}" if detail else ""
    return DatasetError(f"set {spec.name!r} not found {at}.{extra} Expected layout: {spec.layout}. "
                        f"Files: {spec.source}.")


def _stem(path: Path, base: Path) -> str:
    return path.relative_to(base).with_suffix("").as_posix()


def resolve_set(name: str, data_dir: str | os.PathLike | None = None, *, limit: int | None = None) -> list[EvalItem]:
    """List the items of set ``name`` (sorted, the first ``limit``). Raises DatasetError naming the expected
    layout when the set is not there, ConfigError for an unknown name. Missing pairs become items with an error."""
    if name not in SETS:
        raise ConfigError(f"unknown set {name!r}; choose one of {', '.join(SETS)}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    spec = SETS[name]
    root = _data_root(data_dir)
    if root is None or not root.is_dir():
        raise _missing(spec, root)

    items: list[EvalItem]
    if name in ("div2k-val", "celebahq"):
        # the same held-out files as training's validation split (one rule, in dreamsr.data)
        from dreamsr.data import resolve_layout

        try:
            layout = resolve_layout("div2k" if name == "div2k-val" else "celebahq", root, split="val")
        except DatasetError as err:
            raise DatasetError(f"set {name!r}: {err}") from None
        base = os.path.commonpath([str(p.parent) for p in layout.hr])
        items = [EvalItem(_stem(p, Path(base)), p) for p in layout.hr]
    elif name == "paired":
        hr_dir = next((root / d for d in ("HR", "hr", "GT", "gt") if (root / d).is_dir()), None)
        lr_dir = next((root / d for d in ("LR", "lr") if (root / d).is_dir()), None)
        if hr_dir is None or lr_dir is None:
            raise _missing(spec, root, "Need HR/ and LR/ sub-folders.")
        hr_by = {_stem(p, hr_dir): p for p in _find_images(hr_dir)}
        lr_by = {_stem(p, lr_dir): p for p in _find_images(lr_dir)}
        if not hr_by and not lr_by:
            raise _missing(spec, root, "HR/ and LR/ hold no images.")
        items = []
        for key in sorted(set(hr_by) | set(lr_by)):
            if key not in lr_by:
                items.append(EvalItem(key, hr_by[key], None, f"no LR partner {lr_dir / key}.* for {hr_by[key]}"))
            elif key not in hr_by:
                items.append(EvalItem(key, None, lr_by[key], f"no HR partner {hr_dir / key}.* for {lr_by[key]}"))
            else:
                items.append(EvalItem(key, hr_by[key], lr_by[key]))
    else:
        if name == "folder":
            folder: Path | None = root if _find_images(root) else None
            recursive = True
        else:
            # the set's folder under the root, or the root itself being the set's folder (--data-dir .../Set5)
            cands = [root / d for d in spec.dirs]
            for d in spec.dirs:
                top, _, rest = d.partition("/")
                if root.name.lower() == top.lower():
                    cands.append(root / rest if rest else root)
            folder = next((c for c in cands if c.is_dir() and _find_images(c, recursive=False)), None)
            recursive = False
        if folder is None:
            raise _missing(spec, root, "No images found.")
        items = [EvalItem(_stem(p, folder), p) for p in _find_images(folder, recursive)]
    return items[:limit] if limit else items


# ---------------------------------------------------------------------------------------------- config
@dataclass
class EvalConfig:
    """Everything that decides an evaluation's numbers (stored in summary.json)."""

    set: str = "folder"  # a name of SETS
    data_dir: str | None = None  # root of the sets (default $DREAMSR_DATA)
    limit: int | None = None  # first N items of the set
    model: str = "bicubic"  # bicubic | nearest | a registry name or hf:// URL
    weights: str | None = None  # a dreamsr .safetensors checkpoint (overrides model)
    scale: int | None = None  # default: the model's native scale (diffusion) or the set's (references)
    metrics: tuple[str, ...] = ("psnr", "ssim", "consistency")
    convention: Convention = "both"  # PSNR/SSIM conventions to report
    crop_border: int | None = None  # Y convention border; default = scale
    # sampling (dreamsr.options.SamplingOptions fields): None = not given, i.e. the model's recommendation, else
    # SamplingOptions' default (tile/overlap/merge: the set's protocol)
    steps: int | None = None  # sampler steps
    sampler: str | None = None  # ddim | ddpm
    eta: float | None = None  # None: the sampler's default
    seed: int | None = None  # first seed; sample k uses seed + k
    samples: int = 1  # K super-resolutions per image (diffusion models)
    tile: int | None = None  # LR tile side; None: the protocol's
    overlap: int | None = None  # LR tile overlap; None: the protocol's
    merge: str | None = None  # "step" | "end"; None: the protocol's
    batch: int | None = None  # tiles per network call (does not change results)
    start: int | None = None  # truncated start: trained step t0 to begin from the noised condition (0: full chain)
    back_project: bool | None = None  # LR back-projection of every x0 estimate (pipeline option)
    ensemble: int | None = None  # geometric self-ensemble members averaged per super-resolution: 1, 2, 4 or 8
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
        for name, v, lo in (("limit", self.limit, 1), ("scale", self.scale, 1), ("crop_border", self.crop_border, 0),
                            ("samples", self.samples, 1), ("grids", self.grids, 0)):
            if v is not None and v < lo:
                raise ConfigError(f"{name} must be >= {lo}, got {v}")
        if self.start is not None and self.start < 0:
            raise ConfigError(f"start must be >= 0 (0: the full chain), got {self.start}")
        SamplingOptions.check_given(**self.sampling_given())
        if self.lpips_net not in M.LPIPS_FILES:
            raise ConfigError(f"LPIPS network must be one of {', '.join(M.LPIPS_FILES)}, got {self.lpips_net!r}")


    def sampling_given(self) -> dict[str, Any]:
        """The sampling fields as given (None: not given), for :meth:`dreamsr.pipeline.Upscaler.options`."""
        return {name: getattr(self, name) for name in ("steps", "sampler", "eta", "seed", "tile", "overlap", "batch",
                                                       "merge", "start", "back_project", "ensemble")}


@dataclass(frozen=True)
class Progress:
    """A progress event: ``done`` of ``total`` (image, seed) runs finished; ``item`` is being worked on.
    ``calls``/``calls_total`` count the network calls of the current run (0/0 for reference upscalers)."""

    done: int
    total: int
    item: str
    stage: str  # "upscale" | "metrics" | "fid" | "done"
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
class _Reference:
    """bicubic / nearest: deterministic reference upscalers at any integer scale."""

    stochastic = False

    def __init__(self, name: str, scale: int) -> None:
        self.name, self.scale = name, scale

    def upscale(self, lr: torch.Tensor, seed: int, callback: Callable[[int, int], None] | None) -> torch.Tensor:
        if self.name == "bicubic":
            return upsample(lr, self.scale).clamp(0, 1)
        return F.interpolate(lr.unsqueeze(0), scale_factor=self.scale, mode="nearest").squeeze(0)

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "reference", "scale": self.scale,
                "description": "antialiased bicubic (dreamsr.images.upsample)" if self.name == "bicubic"
                else "nearest neighbour"}


class _Diffusion:
    """A dreamsr diffusion model through :class:`dreamsr.pipeline.Upscaler` (never a private sampler)."""

    stochastic = True

    def __init__(self, upscaler: Any, cfg: EvalConfig, protocol: Protocol, source: dict[str, Any]) -> None:
        self.up, self.cfg, self.protocol, self.source = upscaler, cfg, protocol, source
        self.scale = int(upscaler.scale)
        given = cfg.sampling_given()
        for name in ("tile", "overlap", "merge"):  # the set's protocol unless given
            given[name] = getattr(protocol, name) if given[name] is None else given[name]
        # the model's recommended sampling under what was given (Upscaler.options)
        self.options: SamplingOptions = upscaler.options(**given)

    def upscale(self, lr: torch.Tensor, seed: int, callback: Callable[[int, int], None] | None) -> torch.Tensor:
        return self.up.upscale(lr, self.options, seed=seed, callback=callback)

    def metadata(self) -> dict[str, Any]:
        info = self.up.info
        return {**self.source, "kind": "diffusion", "scale": self.scale, "family": info.family,
                "process": info.process, "network": info.network.to_dict(),
                "diffusion": info.diffusion.to_dict(), "training": info.training,
                "checkpoint_dreamsr_version": info.dreamsr_version, "device": str(self.up.device),
                "precision": self.up.precision, "sampling": self.options.to_dict(),
                "recommended_sampling": dict(info.sampling)}



def _make_upscaler(cfg: EvalConfig, protocol: Protocol, upscaler: Any | None) -> _Reference | _Diffusion:
    if upscaler is None and cfg.weights is None and cfg.model in REFERENCE_MODELS:
        return _Reference(cfg.model, cfg.scale or SETS[cfg.set].scale)
    if upscaler is None:
        from dreamsr.pipeline import Upscaler
        from dreamsr.weights import resolve_weights

        path = resolve_weights(weights=cfg.weights, model=None if cfg.weights else cfg.model)
        upscaler = Upscaler.from_checkpoint(path, device=cfg.device, precision=cfg.precision)
        source = {"name": cfg.model if cfg.weights is None else Path(cfg.weights).stem, "weights": str(path),
                  "sha256": sha256_file(Path(path))}
    else:
        source = {"name": cfg.model if cfg.model not in REFERENCE_MODELS else "custom", "weights": None}
    run = _Diffusion(upscaler, cfg, protocol, source)
    if cfg.scale is not None and cfg.scale != run.scale:
        raise ConfigError(f"model {source['name']} serves x{run.scale} only; drop --scale or pass --scale {run.scale}")
    return run


# ---------------------------------------------------------------------------------------------- helpers
def _quantize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] float -> nearest 8-bit level, as a saved PNG (float32, [0, 1])."""
    return x.clamp(0, 1).mul(255).round().div(255)


def _prepare_pair(item: EvalItem, scale: int, protocol: Protocol) -> tuple[torch.Tensor, torch.Tensor]:
    """Load (LR, HR) of an item as 8-bit-valued float [3,h,w], [3,h*s,w*s] in [0, 1]; InputError per file."""
    if item.error:
        raise InputError(item.error)
    assert item.hr is not None
    hr = load_rgb(item.hr)
    if protocol.hr_size is not None and tuple(hr.shape[-2:]) != (protocol.hr_size, protocol.hr_size):
        hr = _quantize(resize(hr, (protocol.hr_size, protocol.hr_size)))
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
    return _quantize(downsample(hr, scale)), hr


def _finite(v: float) -> float | str:
    """JSON-safe number: inf/nan become the strings "inf", "-inf", "nan"."""
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def _unfinite(v: Any) -> Any:
    if isinstance(v, str) and v in ("inf", "-inf", "nan"):
        return float(v)
    return v


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
    for m in ("psnr", "ssim"):
        if m in metrics:
            cols += [(f"{m}_{c}", m, c) for c in convs]
    if "consistency" in metrics:
        cols.append(("consistency", "consistency", "rgb"))
    if "lpips" in metrics:
        cols.append(("lpips", "lpips", "rgb"))
    return cols


CONVENTION_TEXT = {
    "consistency": "MSE x 1e5 between LR and the bicubic-downsampled SR, RGB in [0, 1] (DREAM Table 2)",
    "lpips": "LPIPS v0.1 ({net}), inputs in [-1, 1], whole image",
    "fid": "FID, pytorch-fid InceptionV3 pool3 (2048-d), SR set vs HR set, resized to 299x299",
}


# ---------------------------------------------------------------------------------------------- grids
def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return x.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()


def _crop_box(hr: torch.Tensor, bic: torch.Tensor) -> tuple[int, int, int]:
    """(top, left, side) of the zoom crop: a square 1/4 of the short side where bicubic errs most."""
    H, W = hr.shape[-2:]
    side = max(8, min(H, W) // 4)
    err = (hr - bic).abs().mean(0, keepdim=True).unsqueeze(0)
    pooled = F.avg_pool2d(err, side, stride=max(1, side // 2))
    idx = int(pooled.flatten().argmax())
    pw = pooled.shape[-1]
    top, left = (idx // pw) * max(1, side // 2), (idx % pw) * max(1, side // 2)
    return min(top, H - side), min(left, W - side), side


def _write_grid(path: Path, lr: torch.Tensor, bic: torch.Tensor, sr: torch.Tensor, hr: torch.Tensor,
                sr_label: str, captions: dict[str, str]) -> None:
    """LR (nearest, HR size) | bicubic | SR | HR on top; the same zoomed crop of each below; labels above."""
    from PIL import Image, ImageDraw

    H, W = hr.shape[-2:]
    lr_big = F.interpolate(lr.unsqueeze(0), size=(H, W), mode="nearest").squeeze(0)
    panels = [("LR", lr_big), ("bicubic", bic), (sr_label, sr), ("HR", hr)]
    top, left, side = _crop_box(hr, bic)
    zs = min(H, W)  # the zoom is a square as wide as the panel's short side
    label_h, pad = 18, 4
    canvas = Image.new("RGB", (4 * W + 5 * pad, label_h + H + zs + 3 * pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, img) in enumerate(panels):
        x = pad + i * (W + pad)
        canvas.paste(Image.fromarray(_to_uint8(img)), (x, label_h + pad))
        crop = img[:, top:top + side, left:left + side].unsqueeze(0)
        zoom = F.interpolate(crop, size=(zs, zs), mode="nearest").squeeze(0)
        canvas.paste(Image.fromarray(_to_uint8(zoom)), (x, label_h + H + 2 * pad))
        draw.rectangle([x + left, label_h + pad + top, x + left + side - 1, label_h + pad + top + side - 1],
                       outline=(255, 0, 0), width=max(1, min(H, W) // 128))
        text = name + (f"  {captions[name]}" if name in captions else "")
        draw.text((x, 3), text, fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    canvas.save(tmp, format="PNG")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------- evaluate
def evaluate(config: EvalConfig, out_dir: str | os.PathLike, *, progress: ProgressFn | None = None,
             upscaler: Any | None = None) -> EvalReport:
    """Super-resolve every item of ``config.set`` and write the report into ``out_dir`` (created).

    ``upscaler``: an already built :class:`dreamsr.pipeline.Upscaler` to use instead of ``config.model`` /
    ``config.weights`` (a training loop evaluating its own model). Per-file problems (unreadable files, missing
    pairs, size mismatches) are recorded as errors and counted in the summary; they never stop the run.
    Raises ConfigError for bad options and DatasetError when the set is not found.
    """
    t_start = time.perf_counter()
    cfg = config
    cfg.validate()
    spec = SETS[cfg.set]
    protocol = PROTOCOLS[spec.protocol]
    items = resolve_set(cfg.set, cfg.data_dir, limit=cfg.limit)
    run = _make_upscaler(cfg, protocol, upscaler)
    scale = run.scale
    if protocol.hr_size is not None and protocol.hr_size % scale:
        raise ConfigError(f"set {cfg.set} is {protocol.hr_size}x{protocol.hr_size} HR; x{scale} does not divide it")
    samples = cfg.samples if run.stochastic else 1
    first_seed = run.options.seed if isinstance(run, _Diffusion) else (cfg.seed or 0)
    crop = scale if cfg.crop_border is None else cfg.crop_border
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = getattr(getattr(run, "up", None), "device", None)
    if device is None:
        from dreamsr.runtime import resolve_device

        device = resolve_device(cfg.device)

    # metric networks, built once; absent weights -> unavailable, the rest still runs
    unavailable: dict[str, str] = {}
    lpips_fn = feats = None
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

    for item in items:
        label = item.name
        try:
            lr, hr = _prepare_pair(item, scale, protocol)
            border = crop if any(c[2] == "y" for c in cols) else 0
            if min(hr.shape[-2:]) - 2 * border < 11 and any(c[1] == "ssim" for c in cols):
                raise InputError(f"{item.hr or item.lr}: {hr.shape[-1]}x{hr.shape[-2]} leaves under 11x11 px for "
                                 f"SSIM after cropping {border} px")
        except DreamSRError as err:
            errors.append({"image": label, "error": str(err)})
            rows.append({"image": label, "sample": "", "seed": "", "error": str(err)})
            done += samples
            emit(label, "error")
            continue
        bic = upsample(lr, scale).clamp(0, 1)
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
                    elif metric == "consistency":
                        row[col] = M.consistency(sr, lr)
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
            from PIL import Image

            dst = out / "sr" / f"{label}.png"
            dst.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_to_uint8(sr0)).save(dst)
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
            _write_grid(gp, lr, bic, sr0, hr, sr_name, cap)
            grid_paths.append(gp)

    # ----------------------------------------------------------------------------- aggregate
    ok_rows = [r for r in rows if not r.get("error")]
    results: list[dict[str, Any]] = []
    for col, metric, conv in cols:
        per_seed = [[r[col] for r in ok_rows if r["sample"] == k] for k in range(samples)]
        all_vals = [v for seed_vals in per_seed for v in seed_vals]
        mean, std_images = _mean_std(all_vals)
        entry: dict[str, Any] = {"metric": metric, "column": col, "convention": conv, "mean": mean,
                                 "count": len(per_seed[0]) if per_seed else 0, "samples": samples}
        if metric in ("psnr", "ssim"):
            entry["crop_border"] = crop if conv == "y" else 0
            entry["convention_text"] = M.CONVENTIONS[conv].replace("= scale", f"= {crop}")
            entry["convention_short"] = "RGB, whole image" if conv == "rgb" else f"Y BT.601, crop {crop}"
        else:
            entry["convention_text"] = CONVENTION_TEXT[metric].format(net=cfg.lpips_net)
            entry["convention_short"] = {"consistency": "MSE x1e5, [0,1]",
                                         "lpips": f"{cfg.lpips_net}, [-1,1]"}[metric]
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
        "data_dir": str(_data_root(cfg.data_dir)),
        "protocol": {**asdict(protocol), **({"tile": run.options.tile, "overlap": run.options.overlap,
                                             "merge": run.options.merge} if isinstance(run, _Diffusion)
                                            else {"tile": 0, "overlap": 0, "note": "reference upscalers run on "
                                                  "the whole image (tiling does not apply)"})},
        "scale": scale,
        "model": run.metadata(),
        "seed": first_seed,
        "samples": samples,
        "steps": run.options.steps if isinstance(run, _Diffusion) else None,
        "sampler": run.options.sampler if isinstance(run, _Diffusion) else None,
        "conventions": {"rgb": M.CONVENTIONS["rgb"], "y": M.CONVENTIONS["y"].replace("= scale", f"= {crop}"),
                        "sr_quantized": "SR rounded to 8 bits before metrics; LR synthesised by antialiased "
                                        "bicubic and rounded to 8 bits"},
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
    _write_csv(files["csv"], rows, cols)
    _write_json(files["json"], summary)
    files["md"].write_text(_markdown(summary), encoding="utf-8")
    if grid_paths:
        files["grids"] = grid_paths[0].parent
    if cfg.save_images:
        files["sr"] = out / "sr"
    return EvalReport(out, summary, rows, files)


def _write_csv(path: Path, rows: list[dict[str, Any]], cols: list[tuple[str, str, str]]) -> None:
    fields = ["image", "sample", "seed", "lr_size", "hr_size"] + [c[0] for c in cols] + ["seconds", "error"]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (repr(v) if isinstance(v, float) and math.isfinite(v) else
                            ("inf" if v == math.inf else v)) for k, v in r.items()})
    os.replace(tmp, path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return _finite(obj)
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _comparable_config(config: dict[str, Any]) -> dict[str, Any]:
    """A config as summary.json stores it, without the command line (it does not change results)."""
    return {k: v for k, v in json.loads(json.dumps(_jsonable(config))).items() if k != "command"}


def finished_summary(config: EvalConfig, out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The summary of a finished evaluation of the same thing in ``out_dir``, or None.

    "The same" means summary.json's config equals ``config`` in every field but ``command`` and, for a
    checkpoint file (``config.weights``), its recorded sha256 equals the file's sha256 now (a retrained file at
    the same path does not match; a registry name is matched by name). summary.json is written last and
    atomically, so an interrupted evaluation never matches.
    """
    path = Path(out_dir) / "summary.json"
    if not path.is_file():
        return None
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
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


def _write_json(path: Path, summary: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(summary), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def format_metric(v: Any, metric: str) -> str:
    v = _unfinite(v)
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, float) and math.isnan(v):
        return "-"
    digits = {"psnr": 2, "ssim": 4, "lpips": 4, "fid": 2, "consistency": 3}.get(metric, 4)
    return f"{v:.{digits}f}"


def metric_label(entry: dict[str, Any]) -> str:
    m, c = entry["metric"], entry.get("convention", "rgb")
    if m in ("psnr", "ssim"):
        return f"{m.upper()} ({'Y' if c == 'y' else 'RGB'})"
    return {"consistency": "Consistency", "lpips": "LPIPS", "fid": "FID"}[m]


def _markdown(s: dict[str, Any]) -> str:
    model = s["model"]
    lines = [f"# dreamsr eval: {model.get('name')} on {s['set']} (x{s['scale']})", ""]
    lines.append(f"- images: {s['count']} evaluated of {s['images']}; errors: {s['n_errors']}")
    if model.get("kind") == "diffusion":
        smp = model.get("sampling", {})
        lines.append(f"- sampling: {s['sampler']}, {s['steps']} steps, seed {s['seed']}, {s['samples']} sample(s) "
                     f"per image, tiles {smp.get('tile')} px / overlap {smp.get('overlap')} px, merge "
                     f"{smp.get('merge')}"
                     + (f", truncated start at t0 = {smp['start']}" if smp.get("start") else "")
                     + (", back-projection" if smp.get("back_project") else "")
                     + (f", self-ensemble of {smp['ensemble']}" if (smp.get("ensemble") or 1) > 1 else ""))
        lines.append(f"- weights: {model.get('weights')} (sha256 {str(model.get('sha256'))[:12]})")
    else:
        lines.append(f"- reference upscaler: {model.get('description')}")
    lines.append(f"- protocol: {s['protocol']['name']} — {s['protocol']['description']}"
                 + (f" ({s['protocol']['note']})" if s["protocol"].get("note") else ""))
    lines.append(f"- RGB convention: {s['conventions']['rgb']}")
    lines.append(f"- Y convention: {s['conventions']['y']}")
    lines.append(f"- {s['conventions']['sr_quantized']}")
    lines.append(f"- dreamsr {s['dreamsr_version']}, {s['created']}")
    if s.get("command"):
        lines.append(f"- command: `{s['command']}`")
    lines += ["", "| metric | mean | std | count | convention |", "|---|---:|---:|---:|---|"]
    for e in s["metrics"]:
        if e.get("available") is False:
            lines.append(f"| {metric_label(e)} | unavailable | | | {e['reason']} |")
            continue
        std = format_metric(e.get("std"), e["metric"])
        if e.get("std_over") and std != "-":
            std += f" ({e['std_over'].split(' (')[0]})"
        lines.append(f"| {metric_label(e)} | {format_metric(e['mean'], e['metric'])} | {std} | {e['count']} | "
                     f"{e.get('convention_text', '')} |")
    if s["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in s["warnings"]]
    if s["errors"]:
        lines += ["", "## Errors", ""] + [f"- `{e['image']}`: {e['error']}" for e in s["errors"]]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- compare
def load_summary(path: str | os.PathLike) -> dict[str, Any]:
    """Read a summary.json written by :func:`evaluate` (non-finite numbers restored). InputError if unusable."""
    p = Path(path)
    if p.is_dir():
        p = p / "summary.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{p}: cannot read an eval summary ({err})") from None
    if not isinstance(data, dict) or "metrics" not in data or "model" not in data:
        raise InputError(f"{p}: not a dreamsr eval summary.json")
    for e in data["metrics"]:
        for k in ("mean", "std"):
            e[k] = _unfinite(e.get(k))
    data["_path"] = str(p)
    return data


def compare(paths: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """Line up several summaries: ``{"runs": [{label, set, scale, model, count, ...}], "rows": [{"metric",
    "convention", "label", "values": [(mean, std) or None per run]}], "warnings": [...]}``.

    Rows are matched by (metric, convention); a warning is added when the runs differ in set, scale, count or
    crop border, since their numbers are then not directly comparable.
    """
    if len(paths) < 1:
        raise ConfigError("compare needs at least one summary.json")
    sums = [load_summary(p) for p in paths]
    runs = []
    for s in sums:
        label = f"{s['model'].get('name')} ({Path(s['_path']).parent.name})"
        runs.append({"label": label, "path": s["_path"], "set": s["set"], "scale": s["scale"], "count": s["count"],
                     "samples": s.get("samples"), "steps": s.get("steps"), "crop_border": s.get("crop_border")})
    keys: list[tuple[str, str]] = []
    for s in sums:
        for e in s["metrics"]:
            key = (e["metric"], e.get("convention", "rgb"))
            if key not in keys:
                keys.append(key)
    order = {m: i for i, m in enumerate(METRICS)}
    keys.sort(key=lambda k: (order.get(k[0], 99), k[1]))
    rows = []
    for metric, conv in keys:
        values: list[tuple[Any, Any] | None] = []
        label = ""
        for s in sums:
            e = next((e for e in s["metrics"] if e["metric"] == metric and e.get("convention", "rgb") == conv), None)
            if e is not None:
                label = metric_label(e)
            values.append(None if e is None or e.get("available") is False else (e["mean"], e.get("std")))
        rows.append({"metric": metric, "convention": conv, "label": label, "values": values})
    warnings = []
    for key in ("set", "scale", "count", "crop_border"):
        vals = {str(r[key]) for r in runs}
        if len(vals) > 1:
            warnings.append(f"runs differ in {key}: {', '.join(str(r[key]) for r in runs)}")
    return {"runs": runs, "rows": rows, "warnings": warnings}


def compare_markdown(table: dict[str, Any]) -> str:
    """A Markdown table of :func:`compare`'s result (mean ± std per run)."""
    head = "| metric | " + " | ".join(r["label"] for r in table["runs"]) + " |"
    sep = "|---|" + "---:|" * len(table["runs"])
    lines = [head, sep]
    for row in table["rows"]:
        cells = []
        for v in row["values"]:
            if v is None:
                cells.append("-")
            else:
                mean, std = v
                s = format_metric(mean, row["metric"])
                std_s = format_metric(std, row["metric"])
                cells.append(s if std_s == "-" else f"{s} ± {std_s}")
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    lines += [f"\n> {w}" for w in table["warnings"]]
    return "\n".join(lines) + "\n"
