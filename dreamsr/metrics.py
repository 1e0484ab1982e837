"""Image-quality metrics for super-resolution: PSNR, SSIM, consistency, LPIPS and FID.

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

LPIPS and FID need pretrained backbones that are not shipped; they are looked up in the torch hub cache
(``$TORCH_HOME/hub/checkpoints``) or a user-given folder and, when absent, raise
:class:`MetricUnavailableError` naming the file to fetch. Heavy imports happen inside the functions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dreamsr.errors import DreamSRError, InputError
from dreamsr.images import rgb_to_y

__all__ = ["psnr", "ssim", "CONVENTIONS"]

#: Human-readable statement of each PSNR/SSIM convention, printed in report headers.
CONVENTIONS: dict[str, str] = {
    "rgb": "RGB, whole image (crop_border=0), data range 1; SSIM = mean of per-channel SSIMs (SR3/DREAM code)",
    "y": "BT.601 Y (MATLAB rgb2ycbcr), crop_border = scale before conversion, data range 1 (BasicSR)",
}

_SSIM_K1, _SSIM_K2, _SSIM_SIGMA, _SSIM_WIN = 0.01, 0.03, 1.5, 11


class MetricUnavailableError(DreamSRError):
    """A metric cannot be computed here (its pretrained weights are missing); the message names the file."""


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


def _gaussian_window(size: int = _SSIM_WIN, sigma: float = _SSIM_SIGMA) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps (cv2.getGaussianKernel / scipy truncate=3.5 at sigma 1.5)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM of [C,H,W] float64 images (data range 1) over the valid region: [C,H-10,W-10]."""
    c = a.shape[0]
    g = _gaussian_window()
    kh = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    kw = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)

    def filt(x: torch.Tensor) -> torch.Tensor:  # separable Gaussian, 'valid' (no padding)
        return F.conv2d(F.conv2d(x.unsqueeze(0), kh, groups=c), kw, groups=c).squeeze(0)

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
