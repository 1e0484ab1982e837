"""Image-quality metrics for super-resolution: PSNR, SSIM, VIF, HaarPSI, GMSD, MDSI, the HF ratio, consistency,
LPIPS and FID.

Conventions (stated in every report header, see :data:`CONVENTIONS`):

* ``rgb`` -- PSNR/SSIM on the three RGB channels of the whole image (``crop_border=0``), as the SR3 and
  DREAM reference code compute them; SSIM is the mean of the per-channel SSIMs.
* ``y``   -- PSNR/SSIM on the BT.601 luma Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255 (MATLAB
  ``rgb2ycbcr``) after cropping ``crop_border`` = scale pixels from every edge, as BasicSR computes them.
  The border is cropped *before* the colour conversion (BasicSR's order).

Images are float tensors [C, H, W] in [0, 1] (C = 3 for RGB; C = 1 accepted when ``y_channel`` is False).
SSIM is the standard Gaussian-window SSIM of Wang et al. (2004): 11x11 window, sigma = 1.5, K1 = 0.01,
K2 = 0.03, data range 1, population (not sample) covariances, averaged over the "valid" region where the
window fits -- the same numbers as MATLAB ``ssim_index``, BasicSR ``calculate_ssim`` and scikit-image's
``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)``.

VIF is pixel-domain Visual Information Fidelity (VIF-p, Sheikh & Bovik 2006), weight-free, computed by torchmetrics
(an optional dependency: ``pip install "dreamsr[perceptual]"``) in the same two conventions as PSNR/SSIM.

HaarPSI (Reisenhofer et al. 2018; higher is better, 1 for a copy), GMSD (Xue et al. 2014; lower is better, 0 for a
copy) and MDSI (Nafchi et al. 2016; lower is better, 0 for a copy) are weight-free full-reference perceptual
measures computed by ``piq`` (the same optional extra) with piq's defaults, on the RGB image in [0, 1], whole image
(piq converts to its own YIQ luma/chroma inside). No network, no download; piq's implementations are tested against
the authors' reference code. The HF ratio (:func:`hf_ratio`) is not a quality score but a texture gauge: the
high-frequency energy of SR over that of HR on the "y" convention's luma (1 = as much as the original).

LPIPS and FID need pretrained backbones that are not shipped; they are looked up in the torch hub cache
(``$TORCH_HOME/hub/checkpoints``) or a user-given folder and, when absent, raise
:class:`MetricUnavailableError` naming the file to fetch. Heavy imports happen inside the functions.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dreamsr.errors import DreamSRError, InputError
from dreamsr.images import downsample, resize, resize_pil_bicubic, rgb_to_y

__all__ = [
    "psnr", "ssim", "vif", "vif_backend", "consistency", "CONVENTIONS", "VIF_MIN_SIZE", "MetricUnavailableError",
    "haarpsi", "gmsd", "mdsi", "hf_ratio", "perceptual_scores", "piq_backend", "PIQ_MEASURES", "HAARPSI_MIN_SIZE",
    "HF_SIGMA", "HF_WINDOW",
    "LPIPS", "LPIPS_FILES", "InceptionFeatures", "FID_FILE", "FID_URL", "FID_MIN_IMAGES", "frechet_distance",
    "fid_from_features", "fid_warning", "find_metric_weights", "gaussian_window", "build_fid_inception",
]

#: Human-readable statement of each PSNR/SSIM convention, printed in report headers.
CONVENTIONS: dict[str, str] = {
    "rgb": "RGB, whole image (crop_border=0), data range 1; SSIM = mean of per-channel SSIMs (SR3/DREAM code)",
    "y": "BT.601 Y (MATLAB rgb2ycbcr), crop_border = scale before conversion, data range 1 (BasicSR)",
}

_SSIM_K1, _SSIM_K2, _SSIM_SIGMA, _SSIM_WIN = 0.01, 0.03, 1.5, 11

#: torchmetrics' VIF needs images of at least this side (its coarsest scale's 'valid' 17x17 window).
VIF_MIN_SIZE = 41

#: The perceptual measures computed by piq (weight-free, full reference), each with its name in piq.
PIQ_MEASURES: dict[str, str] = {"haarpsi": "HaarPSI", "gmsd": "GMSD", "mdsi": "MDSI"}
#: piq's HaarPSI (3 scales) needs images of at least this side: its coarsest Haar filter is 2^(3+1) = 16 px.
HAARPSI_MIN_SIZE = 16
#: The HF ratio's low-pass: a Gaussian of sigma 1.5 px, HF_WINDOW taps (SSIM's window), applied where it fits.
HF_SIGMA, HF_WINDOW = 1.5, 11
_HF_FLAT = 1e-20  # HR high-pass energy at or below this (RMS 1e-10, float64 rounding of a flat image) counts as none


class MetricUnavailableError(DreamSRError):
    """A metric cannot be computed here (its pretrained weights or its package are missing); the message names
    the file or the package to install."""


def _prepare(sr: torch.Tensor, hr: torch.Tensor, crop_border: int, y_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a pair of [C,H,W] images, crop the border, then (optionally) convert to Y; float64 out."""
    if not isinstance(sr, torch.Tensor) or not isinstance(hr, torch.Tensor):
        raise InputError("metrics take torch tensors [C,H,W] in [0, 1]")
    if sr.dim() != 3 or hr.dim() != 3:
        raise InputError(f"metrics take [C,H,W] images, got shapes {tuple(sr.shape)} and {tuple(hr.shape)}")
    if sr.shape != hr.shape:
        raise InputError(f"image sizes differ: SR {tuple(sr.shape)} vs HR {tuple(hr.shape)}")
    if crop_border < 0:
        raise InputError(f"crop_border must be >= 0, got {crop_border}")
    if y_channel and sr.shape[0] != 3:
        raise InputError(f"the Y convention needs RGB images (3 channels), got {sr.shape[0]}")
    h, w = sr.shape[-2:]
    if 2 * crop_border >= min(h, w):
        raise InputError(f"crop_border {crop_border} leaves nothing of a {h}x{w} image")
    sr = sr.detach().to("cpu", torch.float64)
    hr = hr.detach().to("cpu", torch.float64)
    if crop_border:  # BasicSR: crop first, then convert
        sr = sr[:, crop_border:-crop_border, crop_border:-crop_border]
        hr = hr[:, crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        sr, hr = rgb_to_y(sr), rgb_to_y(hr)
    return sr, hr


def psnr(sr: torch.Tensor, hr: torch.Tensor, *, crop_border: int = 0, y_channel: bool = False) -> float:
    """Peak signal-to-noise ratio in dB, data range 1.

    Args:
        sr, hr: [C,H,W] float tensors in [0, 1] of the same shape (any device/dtype; computed in float64 on CPU).
        crop_border: pixels removed from each edge before the metric (and before the Y conversion).
        y_channel: compute on BT.601 Y (MATLAB ``rgb2ycbcr``, range [16/255, 235/255]) instead of RGB.

    Returns:
        ``10 * log10(1 / MSE)`` with MSE over all pixels (and channels); ``inf`` for identical images.
    """
    a, b = _prepare(sr, hr, crop_border, y_channel)
    mse = torch.mean((a - b) ** 2).item()
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(1.0 / mse)


def gaussian_window(size: int = _SSIM_WIN, sigma: float = _SSIM_SIGMA) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps (cv2.getGaussianKernel / scipy truncate=3.5 at sigma 1.5)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(x: torch.Tensor, g: list[float]) -> torch.Tensor:
    """Separable filter of [..., H, W] by the 1-D taps ``g`` (n of them) along both axes, 'valid' (no padding):
    [..., H-n+1, W-n+1]. Written as shifted multiply-adds: float64 conv2d is slow on the CPU."""
    n = len(g)
    h, w = x.shape[-2:]
    rows = x[..., 0:h - n + 1, :] * g[0]
    for k in range(1, n):
        rows.add_(x[..., k:h - n + 1 + k, :], alpha=g[k])
    out = rows[..., 0:w - n + 1] * g[0]
    for k in range(1, n):
        out.add_(rows[..., k:w - n + 1 + k], alpha=g[k])
    return out


def _ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM of [C,H,W] float64 images (data range 1) over the valid region: [C,H-10,W-10]."""
    g = gaussian_window().tolist()

    def filt(x: torch.Tensor) -> torch.Tensor:
        return _filter_valid(x, g)

    c1, c2 = _SSIM_K1**2, _SSIM_K2**2
    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    # Wang et al. 2004, Eq. (13)
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def ssim(sr: torch.Tensor, hr: torch.Tensor, *, crop_border: int = 0, y_channel: bool = False) -> float:
    """Structural similarity (Gaussian window 11x11, sigma 1.5, K1 0.01, K2 0.03, data range 1).

    Args:
        sr, hr: [C,H,W] float tensors in [0, 1] of the same shape, at least 11x11 after cropping.
        crop_border: pixels removed from each edge before the metric (and before the Y conversion).
        y_channel: compute on BT.601 Y (MATLAB ``rgb2ycbcr``) instead of RGB.

    Returns:
        Mean SSIM over the valid region (where the window fits), averaged over channels; 1 for identical images.
    """
    a, b = _prepare(sr, hr, crop_border, y_channel)
    if min(a.shape[-2:]) < _SSIM_WIN:
        raise InputError(f"SSIM needs images of at least {_SSIM_WIN}x{_SSIM_WIN} (after cropping), "
                         f"got {a.shape[-2]}x{a.shape[-1]}")
    return _ssim_map(a, b).mean().item()


def vif_backend():
    """torchmetrics' ``visual_information_fidelity``; MetricUnavailableError when torchmetrics is not installed."""
    try:
        from torchmetrics.functional.image import visual_information_fidelity
    except ImportError as err:
        raise MetricUnavailableError(f"VIF needs the 'torchmetrics' package ({err}); "
                                     'pip install "dreamsr[perceptual]" (or pip install torchmetrics)') from None
    return visual_information_fidelity


def vif(sr: torch.Tensor, hr: torch.Tensor, *, crop_border: int = 0, y_channel: bool = False) -> float:
    """Visual information fidelity in the pixel domain (VIF-p, Sheikh & Bovik 2006) of ``sr`` against ``hr``.

    Computed by torchmetrics' ``visual_information_fidelity`` (4 scales, Gaussian windows 17/9/5/3, visual noise
    variance sigma_n^2 = 2) in float64 on the images scaled to [0, 255] (x 255: the 8-bit range sigma_n^2 = 2 was
    set for; VIF is not scale-invariant, so the range matters). Pass the same 8-bit-quantised images PSNR gets.

    Args:
        sr, hr: [C,H,W] float tensors in [0, 1] of the same shape, at least 41x41 after cropping.
        crop_border: pixels removed from each edge before the metric (and before the Y conversion).
        y_channel: compute on BT.601 Y (MATLAB ``rgb2ycbcr``, so values in [16, 235] after x 255) instead of RGB.

    Returns:
        VIF (higher is better): 1 for identical images, below 1 for blur and noise (above 1 only for contrast
        enhancement); the mean of the per-channel VIFs in RGB. nan when ``hr`` is flat (VIF is 0 / 0 then).

    Raises:
        MetricUnavailableError: torchmetrics is not installed.
    """
    a, b = _prepare(sr, hr, crop_border, y_channel)
    if min(a.shape[-2:]) < VIF_MIN_SIZE:
        raise InputError(f"VIF needs images of at least {VIF_MIN_SIZE}x{VIF_MIN_SIZE} (after cropping), "
                         f"got {a.shape[-2]}x{a.shape[-1]}")
    fn = vif_backend()
    try:
        value = fn((a * 255).unsqueeze(0), (b * 255).unsqueeze(0))  # preds = SR, target = HR (the reference)
    except ValueError as err:  # the library's own input checks
        raise InputError(f"VIF: {err}") from None
    return float(value.item())

# ---------------------------------------------------------------------------------------------- piq measures, HF
def piq_backend(measure: str) -> Callable[..., torch.Tensor]:
    """piq's function for ``measure`` (a key of :data:`PIQ_MEASURES`); MetricUnavailableError when piq is not
    installed."""
    if measure not in PIQ_MEASURES:
        raise InputError(f"unknown piq measure {measure!r}; choose one of {', '.join(PIQ_MEASURES)}")
    try:
        import piq
    except ImportError as err:
        raise MetricUnavailableError(f"{PIQ_MEASURES[measure]} needs the 'piq' package ({err}); "
                                     'pip install "dreamsr[perceptual]" (or pip install piq)') from None
    return getattr(piq, measure)


def _batch_pair(sr: torch.Tensor, hr: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate SR/HR as [3,H,W] or [B,3,H,W] RGB in [0, 1] of one shape; float64 [B,3,H,W] on the CPU out."""
    if not isinstance(sr, torch.Tensor) or not isinstance(hr, torch.Tensor):
        raise InputError(f"{what} takes torch tensors [3,H,W] or [B,3,H,W] in [0, 1]")
    if sr.shape != hr.shape:
        raise InputError(f"image sizes differ: SR {tuple(sr.shape)} vs HR {tuple(hr.shape)}")
    if sr.dim() not in (3, 4) or sr.shape[-3] != 3:
        raise InputError(f"{what} takes RGB images [3,H,W] or [B,3,H,W], got shape {tuple(sr.shape)}")
    a = sr.detach().to("cpu", torch.float64)
    b = hr.detach().to("cpu", torch.float64)
    if a.dim() == 3:
        a, b = a.unsqueeze(0), b.unsqueeze(0)
    if a.numel() == 0:
        raise InputError(f"{what}: empty images {tuple(sr.shape)}")
    for name, x in (("SR", a), ("HR", b)):
        lo, hi = float(x.min()), float(x.max())
        if not (0.0 <= lo and hi <= 1.0):  # also catches nan
            raise InputError(f"{what} takes images in [0, 1]; {name} spans [{lo:.6g}, {hi:.6g}] (clamp it first)")
    return a, b


def _piq_scores(measure: str, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Per-image [B] float64 values of a piq measure (x = SR, the distorted image; y = HR, the reference)."""
    name = PIQ_MEASURES.get(measure, measure)
    a, b = _batch_pair(sr, hr, name)
    if measure == "haarpsi" and min(a.shape[-2:]) < HAARPSI_MIN_SIZE:
        raise InputError(f"HaarPSI needs images of at least {HAARPSI_MIN_SIZE}x{HAARPSI_MIN_SIZE} (piq's coarsest "
                         f"Haar filter), got {a.shape[-2]}x{a.shape[-1]}")
    fn = piq_backend(measure)
    try:
        return fn(a, b, reduction="none").reshape(-1)  # piq's defaults otherwise (data_range 1)
    except (ValueError, AssertionError) as err:  # the library's own input checks
        raise InputError(f"{name}: {err}") from None


def haarpsi(sr: torch.Tensor, hr: torch.Tensor) -> float:
    """Haar wavelet-based perceptual similarity index (HaarPSI, Reisenhofer et al. 2018) of ``sr`` against ``hr``.

    Computed by piq's ``haarpsi`` with its defaults (3 scales, subsampling, C = 30, alpha = 4.2, data range 1) in
    float64 on the RGB image (piq converts to YIQ: Haar responses on Y, chroma from I and Q), whole image.

    Args:
        sr, hr: [3,H,W] or [B,3,H,W] float tensors in [0, 1] of one shape, at least 16x16.

    Returns:
        HaarPSI in [0, 1], higher is better, 1 for a copy; for a batch, the mean of the per-image values.

    Raises:
        InputError: shapes, range or size (under :data:`HAARPSI_MIN_SIZE`) not accepted.
        MetricUnavailableError: piq is not installed.
    """
    return float(_piq_scores("haarpsi", sr, hr).mean())


def gmsd(sr: torch.Tensor, hr: torch.Tensor) -> float:
    """Gradient magnitude similarity deviation (GMSD, Xue et al. 2014) of ``sr`` against ``hr``.

    Computed by piq's ``gmsd`` with its defaults (t = 170 / 255^2, data range 1) in float64 on the RGB image (piq
    takes the YIQ luma, averages 2x2 and compares Prewitt gradient magnitudes), whole image.

    Args:
        sr, hr: [3,H,W] or [B,3,H,W] float tensors in [0, 1] of one shape.

    Returns:
        GMSD >= 0, lower is better, 0 for a copy; for a batch, the mean of the per-image values.

    Raises:
        InputError: shapes or range not accepted. MetricUnavailableError: piq is not installed.
    """
    return float(_piq_scores("gmsd", sr, hr).mean())


def mdsi(sr: torch.Tensor, hr: torch.Tensor) -> float:
    """Mean deviation similarity index (MDSI, Nafchi et al. 2016) of ``sr`` against ``hr``.

    Computed by piq's ``mdsi`` with its defaults (C1 140, C2 55, C3 550, 'sum' combination, alpha 0.6, data range
    1) in float64 on the RGB image (gradient similarity on luma, chromaticity similarity), whole image.

    Args:
        sr, hr: [3,H,W] or [B,3,H,W] float tensors in [0, 1] of one shape.

    Returns:
        MDSI >= 0, lower is better, 0 for a copy; for a batch, the mean of the per-image values.

    Raises:
        InputError: shapes or range not accepted. MetricUnavailableError: piq is not installed.
    """
    return float(_piq_scores("mdsi", sr, hr).mean())


def _hf_energy(y: torch.Tensor) -> float:
    """E[(Y - G * Y)^2] of a [1,H,W] float64 luma over the region where the Gaussian window fits."""
    g = gaussian_window(HF_WINDOW, HF_SIGMA).tolist()
    c = HF_WINDOW // 2
    high = y[..., c:y.shape[-2] - c, c:y.shape[-1] - c] - _filter_valid(y, g)
    return torch.mean(high * high).item()


def _hf_ratios(sr: torch.Tensor, hr: torch.Tensor, crop_border: int) -> list[float]:
    a, b = _batch_pair(sr, hr, "HF ratio")
    out: list[float] = []
    for x, ref in zip(a, b):
        ys, yh = _prepare(x, ref, crop_border, True)  # the "y" convention: crop, then BT.601 Y
        if min(ys.shape[-2:]) < HF_WINDOW:
            raise InputError(f"the HF ratio needs images of at least {HF_WINDOW}x{HF_WINDOW} (after cropping), "
                             f"got {ys.shape[-2]}x{ys.shape[-1]}")
        den = _hf_energy(yh)
        out.append(_hf_energy(ys) / den if den > _HF_FLAT else math.nan)
    return out


def hf_ratio(sr: torch.Tensor, hr: torch.Tensor, *, crop_border: int = 0) -> float:
    """High-frequency energy ratio: E[(Y - G * Y)^2] of ``sr`` divided by the same of ``hr``. A texture gauge,
    not a quality score (noise raises it).

    Y is the evaluator's "y" convention: ``crop_border`` pixels cropped from every edge, then BT.601 luma (MATLAB
    ``rgb2ycbcr``, [16/255, 235/255]; the ratio is the same for any affine luma scale, e.g. full-range Y in [0, 1]).
    G is the normalised Gaussian of sigma :data:`HF_SIGMA` = 1.5 px over :data:`HF_WINDOW` = 11 taps
    (:func:`gaussian_window`, SSIM's), applied separably where it fits (no padding: the mean is over the
    [H-10, W-10] interior of the cropped image, so no border rule enters).

    Args:
        sr, hr: [3,H,W] or [B,3,H,W] float tensors in [0, 1] of one shape, at least 11x11 after cropping.
        crop_border: pixels removed from each edge before the conversion (the eval uses the PSNR-Y border).

    Returns:
        1 for as much high-frequency energy as the original, < 1 blur, > 1 added noise or ringing; nan when
        ``hr`` has none (flat: high-pass RMS under 1e-10); for a batch, the mean of the per-image ratios.

    Raises:
        InputError: shapes, range or size not accepted.
    """
    return float(np.mean(_hf_ratios(sr, hr, crop_border)))


def perceptual_scores(sr: torch.Tensor, hr: torch.Tensor, *, crop_border: int = 0,
                      measures: Sequence[str] = ("haarpsi", "gmsd", "mdsi", "hf")) -> dict[str, list[float]]:
    """Per-image values of the perceptual measures: ``{measure: [value per image]}``.

    Args:
        sr, hr: [3,H,W] (one image) or [B,3,H,W] float tensors in [0, 1] of one shape.
        crop_border: the HF ratio's border (the piq measures always take the whole image).
        measures: any of "haarpsi", "gmsd", "mdsi" (piq, see :func:`haarpsi`) and "hf" (:func:`hf_ratio`).

    Raises:
        InputError: an unknown measure, or images not accepted. MetricUnavailableError: piq is needed and absent.
    """
    bad = [m for m in measures if m not in PIQ_MEASURES and m != "hf"]
    if bad:
        raise InputError(f"unknown measure(s) {', '.join(bad)}; choose from {', '.join([*PIQ_MEASURES, 'hf'])}")
    out: dict[str, list[float]] = {}
    for m in measures:
        out[m] = _hf_ratios(sr, hr, crop_border) if m == "hf" else _piq_scores(m, sr, hr).tolist()
    return out


# ---------------------------------------------------------------------------------------------- consistency
def consistency(sr: torch.Tensor, lr: torch.Tensor, *, rule: Literal["dreamsr", "release"] = "dreamsr") -> float:
    """Consistency of Table 2 of the DREAM paper: MSE x 1e5 between the LR input and the downsampled SR output.

    Args:
        sr: [3, s*h, s*w] super-resolved image in [0, 1].
        lr: [3, h, w] low-resolution input in [0, 1]; the factor is read from the shapes (integer, or any factor
            of a continuous-scale model: the SR image is then resized straight to h x w).
        rule: how the SR image is downsampled. ``"dreamsr"``: the same antialiased bicubic that synthesises LR
            images everywhere in dreamsr (:func:`dreamsr.images.downsample`, :func:`dreamsr.images.resize`),
            clamped to [0, 1]. ``"release"``: DREAM's ``calculate_consistency``, PIL's bicubic on the SR image
            rounded to 8 bits (:func:`dreamsr.images.resize_pil_bicubic`; the result holds 8-bit levels).

    No border is cropped, no colour conversion; the MSE is taken on [0, 1] values in float64.
    """
    if rule not in ("dreamsr", "release"):
        raise InputError(f"consistency rule must be dreamsr or release, got {rule!r}")
    if sr.dim() != 3 or lr.dim() != 3 or sr.shape[0] != lr.shape[0]:
        raise InputError(f"consistency takes [C,H,W] images, got {tuple(sr.shape)} and {tuple(lr.shape)}")
    (H, W), (h, w) = sr.shape[-2:], lr.shape[-2:]
    lo, hi = max((H - 0.5) / h, (W - 0.5) / w), min((H + 0.5) / h, (W + 0.5) / w)
    if lo > hi or hi < 1:  # no scale s >= 1 with round(s h) = H and round(s w) = W
        raise InputError(f"SR {H}x{W} is not LR {h}x{w} enlarged by one scale")
    if rule == "release":
        down = resize_pil_bicubic(sr, (h, w)).to(torch.float64)
    else:
        down = resize(sr.detach().to("cpu", torch.float64), (h, w)).clamp(0, 1)  # = downsample(sr, H // h) if integer
    return torch.mean((down - lr.detach().to("cpu", torch.float64)) ** 2).item() * 1e5


# ---------------------------------------------------------------------------------------------- weights
#: LPIPS backbone -> (file name in the torch hub cache, download URL); the linear heads ship with ``lpips``.
LPIPS_FILES: dict[str, tuple[str, str]] = {
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
    "squeeze": ("squeezenet1_1-b8a52dc0.pth", "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth"),
}
#: pytorch-fid's port of the TensorFlow FID InceptionV3 (the weights every published FID uses).
FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_FILE}"
#: FID compares 2048-d features; with fewer images the covariance is rank-deficient and FID is biased upwards.
FID_MIN_IMAGES = 2048


def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_metric_weights(filename: str, url: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """Locate a pretrained metric backbone: ``weights_dir/filename`` (or ``weights_dir/hub/checkpoints``), then
    the torch hub cache ``$TORCH_HOME/hub/checkpoints/filename``. Never downloads.

    Raises MetricUnavailableError naming the file, where to get it and where to put it.
    """
    candidates: list[Path] = []
    if weights_dir is not None:
        d = Path(weights_dir).expanduser()
        candidates += [d / filename, d / "hub" / "checkpoints" / filename]
    candidates.append(_hub_checkpoints() / filename)
    for c in candidates:
        if c.is_file():
            return c
    where = f"{Path(weights_dir)} or " if weights_dir is not None else ""
    raise MetricUnavailableError(f"{filename} not found in {where}{_hub_checkpoints()}; fetch it from {url} "
                                 f"into {_hub_checkpoints()} or pass --metric-weights DIR")


def _load_state(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling/IO failure means "not usable"
        raise MetricUnavailableError(f"{path}: cannot read the {what} weights ({err})") from None
    if not isinstance(state, dict):
        raise MetricUnavailableError(f"{path}: not a state dict of {what} weights")
    return state


def _load_strict(module: torch.nn.Module, state: dict, path: Path, what: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0:2]
        raise MetricUnavailableError(f"{path}: not the {what} weights ({' '.join(first)})") from None


# ---------------------------------------------------------------------------------------------- LPIPS
class LPIPS:
    """LPIPS v0.1 distance (Zhang et al. 2018) through the ``lpips`` package; the network is built once.

    Inputs are [3,H,W] images in [0, 1], converted here to the [-1, 1] that LPIPS expects (the DREAM reference code
    feeds [0, 1] and rebuilds the network per image; this does neither). The backbone (``net`` = alex, the paper's
    choice, vgg or squeeze) is loaded from :func:`find_metric_weights` with strict key matching; the calibrated
    linear heads come with the ``lpips`` package. Raises MetricUnavailableError when the backbone file is absent.
    """

    def __init__(self, net: str = "alex", *, weights_dir: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu") -> None:
        if net not in LPIPS_FILES:
            raise InputError(f"unknown LPIPS network {net!r}; choose one of {', '.join(LPIPS_FILES)}")
        filename, url = LPIPS_FILES[net]
        path = find_metric_weights(filename, url, weights_dir)
        try:
            import lpips as _lpips
            import torchvision
        except ImportError as err:
            raise MetricUnavailableError(f"LPIPS needs the 'lpips' package ({err}); pip install lpips") from None

        backbone = {"alex": torchvision.models.alexnet, "vgg": torchvision.models.vgg16,
                    "squeeze": torchvision.models.squeezenet1_1}[net](weights=None)
        _load_strict(backbone, _load_state(path, f"torchvision {net}"), path, f"torchvision {net}")
        with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=` flag
            warnings.simplefilter("ignore")
            model = _lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
        # the lpips trunk holds torchvision's `features` layers under their original indices, split into slices
        for part in model.net.children():
            for idx, layer in part.named_children():
                layer.load_state_dict(backbone.features[int(idx)].state_dict(), strict=True)
        heads_path = Path(_lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
        heads = _load_state(heads_path, "LPIPS linear-head")
        missing, unexpected = model.load_state_dict(heads, strict=False)
        lin_missing = [k for k in missing if k.startswith("lin") and not k.startswith("lins.")]
        if unexpected or lin_missing:
            raise MetricUnavailableError(f"{heads_path}: LPIPS heads do not match (missing {lin_missing}, "
                                         f"unexpected {unexpected})")
        self.net = net
        self.device = torch.device(device)
        self.model = model.eval().requires_grad_(False).to(self.device)

    @torch.no_grad()
    def __call__(self, sr: torch.Tensor, hr: torch.Tensor) -> float:
        """LPIPS distance between [3,H,W] images in [0, 1] (lower is more similar; 0 for identical images)."""
        if sr.shape != hr.shape or sr.dim() != 3 or sr.shape[0] != 3:
            raise InputError(f"LPIPS takes two [3,H,W] images of one size, got {tuple(sr.shape)}, {tuple(hr.shape)}")
        a = sr.to(self.device, torch.float32).unsqueeze(0) * 2 - 1
        b = hr.to(self.device, torch.float32).unsqueeze(0) * 2 - 1
        return float(self.model(a, b).item())


# ---------------------------------------------------------------------------------------------- FID
def build_fid_inception() -> torch.nn.Module:
    """torchvision's Inception3 patched into the TensorFlow FID graph (pytorch-fid's layout and parameter names).

    Parameters are exactly those of ``Inception3(num_classes=1008, aux_logits=False)``, so the pytorch-fid file
    loads with strict key matching. The patches change only the forward: the pool branch of the A, C and first E
    blocks averages without counting zero padding (TensorFlow's average pool), and the last E block max-pools.
    """
    import torchvision.models.inception as tvi

    class _A(tvi.InceptionA):
        def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
            return [self.branch1x1(x), b5, b3, pool]

    class _C(tvi.InceptionC):
        def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            d = x
            for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                          self.branch7x7dbl_5):
                d = layer(d)
            pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
            return [self.branch1x1(x), b7, d, pool]

    class _E(tvi.InceptionE):
        def __init__(self, in_channels: int, max_pool: bool) -> None:
            super().__init__(in_channels)
            self.max_pool = max_pool

        def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            b3 = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
            d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
            if self.max_pool:  # TF FID graph: max pool in the last block
                p = F.max_pool2d(x, 3, stride=1, padding=1)
            else:
                p = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
            return [self.branch1x1(x), b3, d, self.branch_pool(p)]

    net = tvi.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = _A(192, 32), _A(256, 64), _A(288, 64)
    net.Mixed_6b, net.Mixed_6c, net.Mixed_6d, net.Mixed_6e = _C(768, 128), _C(768, 160), _C(768, 160), _C(768, 192)
    net.Mixed_7b, net.Mixed_7c = _E(1280, max_pool=False), _E(2048, max_pool=True)
    return net


class InceptionFeatures:
    """2048-d pool3 features of the FID InceptionV3 (pytorch-fid's weights file, strict key matching).

    Images [N,3,H,W] (or one [3,H,W]) in [0, 1] are resized bilinearly to 299x299 (no antialias, as pytorch-fid)
    and scaled to [-1, 1]. Raises MetricUnavailableError when the weights file is absent or not the right one.
    """

    def __init__(self, *, weights_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 batch: int = 8) -> None:
        path = find_metric_weights(FID_FILE, FID_URL, weights_dir)
        net = build_fid_inception()
        _load_strict(net, _load_state(path, "FID InceptionV3"), path, "FID InceptionV3 (pytorch-fid)")
        self.device = torch.device(device)
        self.net = net.eval().requires_grad_(False).to(self.device)
        self.batch = max(1, int(batch))

    def pool3(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.Conv2d_2b_3x3(n.Conv2d_2a_3x3(n.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(n.Conv2d_4a_3x3(n.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(n, name)(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor | list[torch.Tensor]) -> np.ndarray:
        """[N, 2048] float64 features of images in [0, 1] ([N,3,H,W], one [3,H,W], or a list of [3,H,W])."""
        if isinstance(images, torch.Tensor):
            images = [images] if images.dim() == 3 else list(images)
        out: list[np.ndarray] = []
        for i in range(0, len(images), self.batch):
            chunk = [F.interpolate(im.to(self.device, torch.float32).unsqueeze(0), size=(299, 299),
                                   mode="bilinear", align_corners=False) for im in images[i:i + self.batch]]
            x = torch.cat(chunk) * 2 - 1
            out.append(self.pool3(x).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 2048))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between Gaussians: |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)).

    Tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1^(1/2) S2 S1^(1/2), a symmetric PSD
    matrix with the same spectrum as S1 S2, so two symmetric eigen-decompositions replace scipy's sqrtm (and stay
    real and stable for the rank-deficient covariances of small sets). Rounding below 0 is clamped to 0.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise InputError(f"Fréchet distance: shapes differ ({mu1.shape}, {s1.shape}) vs ({mu2.shape}, {s2.shape})")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ s2 @ root1
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(ev, 0, None)).sum())
    diff = mu1 - mu2
    return max(0.0, float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean))


def fid_from_features(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID between two feature sets [N, D] (N >= 2 each) with unbiased covariances (``np.cov``), as pytorch-fid.

    With fewer images than dimensions (the usual case: 100 images, D = 2048) the same number is computed in the
    N-dimensional sample space: with centred features A (D x Na) and B (D x Nb) scaled by 1/sqrt(N-1),
    S1 = A A^T, S2 = B B^T, and the non-zero eigenvalues of S1 S2 are the squared singular values of A^T B, so
    Tr((S1 S2)^(1/2)) is the nuclear norm of A^T B -- exact, and a small SVD instead of 2048 x 2048 ones.
    """
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise InputError(f"FID needs two [N>=2, D] feature sets, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    if max(len(a), len(b)) >= a.shape[1]:
        return frechet_distance(mu_a, np.cov(a, rowvar=False), mu_b, np.cov(b, rowvar=False))
    ca = (a - mu_a) / math.sqrt(len(a) - 1)  # rows: samples, so S1 = ca^T ca
    cb = (b - mu_b) / math.sqrt(len(b) - 1)
    tr_covmean = float(np.linalg.svd(ca @ cb.T, compute_uv=False).sum())
    diff = mu_a - mu_b
    return max(0.0, float(diff @ diff + (ca * ca).sum() + (cb * cb).sum() - 2 * tr_covmean))


def fid_warning(n: int) -> str | None:
    """The warning to show next to an FID computed on ``n`` images (None when n >= 2048)."""
    if n >= FID_MIN_IMAGES:
        return None
    return (f"FID on {n} images (< {FID_MIN_IMAGES}, the feature dimension) is biased upwards and only "
            f"comparable with FIDs on the same number of images (the paper used 100)")
