"""Metric tests: closed forms, known shifts and parity with scikit-image (the reference implementation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dreamsr import metrics
from dreamsr.errors import InputError
from dreamsr.images import downsample, load_rgb, upsample

skimage_metrics = pytest.importorskip("skimage.metrics")


def _photo(name: str = "astronaut.png", size: int = 96) -> torch.Tensor:
    """A real photo from the scikit-image wheel, centre crop size x size, [3,H,W] in [0, 1]."""
    import skimage

    from pathlib import Path

    img = load_rgb(Path(skimage.__file__).parent / "data" / name)
    h, w = img.shape[-2:]
    t, l = (h - size) // 2, (w - size) // 2
    return img[:, t:t + size, l:l + size].contiguous()


def _pair(size: int = 96, scale: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """(bicubic SR, HR) of a real photo at x scale."""
    hr = _photo(size=size)
    sr = upsample(downsample(hr, scale), scale).clamp(0, 1)
    return sr, hr


def _sk_ssim(a: np.ndarray, b: np.ndarray, channel_axis: int | None) -> float:
    return float(skimage_metrics.structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
        channel_axis=channel_axis))


def _y_np(x: torch.Tensor) -> np.ndarray:
    """BT.601 Y written out from the coefficients (independent of dreamsr.images)."""
    r, g, b = x.double().numpy()
    return (16.0 + 65.481 * r + 128.553 * g + 24.966 * b) / 255.0


# ---------------------------------------------------------------- PSNR / SSIM: identities and known values
def test_identical_images_give_inf_psnr_and_unit_ssim() -> None:
    hr = _photo(size=32)
    assert metrics.psnr(hr, hr) == math.inf
    assert metrics.psnr(hr, hr.clone(), crop_border=4, y_channel=True) == math.inf
    assert metrics.ssim(hr, hr) == pytest.approx(1.0, abs=1e-12)
    assert metrics.ssim(hr, hr, crop_border=4, y_channel=True) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("delta,expected_db", [(0.1, 20.0), (0.01, 40.0), (1 / 255, 20 * math.log10(255))])
def test_constant_shift_gives_known_psnr(delta: float, expected_db: float) -> None:
    hr = torch.full((3, 16, 16), 0.5, dtype=torch.float64)
    assert metrics.psnr(hr + delta, hr) == pytest.approx(expected_db, abs=1e-9)
    # on Y a shift of every channel by d shifts Y by d * (65.481 + 128.553 + 24.966) / 255 = d * 219 / 255
    y_delta = delta * 219.0 / 255.0
    assert metrics.psnr(hr + delta, hr, y_channel=True) == pytest.approx(-20 * math.log10(y_delta), abs=1e-9)


def test_constant_images_give_closed_form_ssim() -> None:
    # flat images: variances and covariance are 0, so SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)
    c1 = 0.01**2
    a, b = (torch.full((3, 16, 16), v, dtype=torch.float64) for v in (0.5, 0.6))
    expected = (2 * 0.5 * 0.6 + c1) / (0.5**2 + 0.6**2 + c1)
    assert metrics.ssim(a, b) == pytest.approx(expected, abs=1e-12)


def test_one_pixel_roll_of_a_stripe_pattern_gives_closed_form_ssim() -> None:
    # vertical stripes 0/1 of period 2 rolled by one pixel = the inverted image: mu 0.5 everywhere, sigma^2 ~ 0.25,
    # covariance ~ -0.25 (the Gaussian window has an odd number of taps, so the local mean is not exactly 0.5).
    x = (torch.arange(32) % 2).float().expand(3, 32, 32).contiguous()
    y = torch.roll(x, 1, dims=-1)
    g = metrics._gaussian_window().numpy()
    m = float(g[0::2].sum())  # local mean where the centre pixel is 1 (weights on even offsets)
    # at every valid pixel one of x,y has local mean m and the other 1-m; variances m(1-m), covariance -m(1-m)
    c1, c2 = 0.01**2, 0.03**2
    v = m * (1 - m)
    expected = ((2 * m * (1 - m) + c1) * (-2 * v + c2)) / ((m**2 + (1 - m) ** 2 + c1) * (2 * v + c2))
    assert metrics.ssim(y, x) == pytest.approx(expected, abs=1e-9)
    assert metrics.psnr(y, x) == pytest.approx(0.0, abs=1e-12)  # MSE = 1


# ---------------------------------------------------------------- parity with scikit-image
def test_psnr_and_ssim_match_skimage_in_rgb_on_a_real_photo() -> None:
    sr, hr = _pair()
    a, b = sr.double().permute(1, 2, 0).numpy(), hr.double().permute(1, 2, 0).numpy()
    assert metrics.psnr(sr, hr) == pytest.approx(skimage_metrics.peak_signal_noise_ratio(b, a, data_range=1.0),
                                                 abs=1e-4)
    assert metrics.ssim(sr, hr) == pytest.approx(_sk_ssim(a, b, channel_axis=2), abs=1e-4)


@pytest.mark.parametrize("crop", [0, 4])
def test_psnr_and_ssim_match_skimage_on_y_with_crop(crop: int) -> None:
    sr, hr = _pair()
    ya, yb = _y_np(sr), _y_np(hr)
    if crop:
        ya, yb = ya[crop:-crop, crop:-crop], yb[crop:-crop, crop:-crop]
    got_p = metrics.psnr(sr, hr, crop_border=crop, y_channel=True)
    got_s = metrics.ssim(sr, hr, crop_border=crop, y_channel=True)
    assert got_p == pytest.approx(skimage_metrics.peak_signal_noise_ratio(yb, ya, data_range=1.0), abs=1e-4)
    assert got_s == pytest.approx(_sk_ssim(ya, yb, channel_axis=None), abs=1e-4)


def test_y_convention_uses_bt601_coefficients() -> None:
    # pure primaries land on the MATLAB rgb2ycbcr values: Y(R)=81.481, Y(G)=144.553, Y(B)=40.966 (of 255)
    black = torch.zeros(3, 12, 12)
    for ch, y255 in enumerate([16 + 65.481, 16 + 128.553, 16 + 24.966]):
        img = black.clone()
        img[ch] = 1.0
        # PSNR between the primary and black on Y: MSE = ((y255 - 16) / 255)^2
        expected = -20 * math.log10((y255 - 16) / 255)
        assert metrics.psnr(img, black, y_channel=True) == pytest.approx(expected, abs=1e-9)
    # and against skimage.color.rgb2ycbcr on a real photo
    from skimage.color import rgb2ycbcr

    hr = _photo(size=24)
    sk_y = rgb2ycbcr(hr.double().permute(1, 2, 0).numpy())[..., 0] / 255.0
    np.testing.assert_allclose(_y_np(hr), sk_y, atol=1e-12)


def test_crop_border_is_applied_before_conversion_and_ignores_the_border() -> None:
    sr, hr = _pair(size=48)
    noisy = sr.clone()
    noisy[:, :4, :] = torch.rand(3, 4, 48)  # garbage only inside the 4-px border
    noisy[:, :, -4:] = 0.0
    for y in (False, True):
        assert metrics.psnr(noisy, hr, crop_border=4, y_channel=y) == metrics.psnr(sr, hr, crop_border=4, y_channel=y)
        assert metrics.ssim(noisy, hr, crop_border=4, y_channel=y) == metrics.ssim(sr, hr, crop_border=4, y_channel=y)
    # cropping then converting equals the BasicSR order computed by hand
    ya, yb = _y_np(sr[:, 4:-4, 4:-4]), _y_np(hr[:, 4:-4, 4:-4])
    mse = float(np.mean((ya - yb) ** 2))
    assert metrics.psnr(sr, hr, crop_border=4, y_channel=True) == pytest.approx(10 * math.log10(1 / mse), abs=1e-9)


def test_bad_inputs_raise_input_error() -> None:
    with pytest.raises(InputError, match="sizes differ"):
        metrics.psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 9))
    with pytest.raises(InputError, match="at least 11x11"):
        metrics.ssim(torch.zeros(3, 10, 10), torch.zeros(3, 10, 10))
    with pytest.raises(InputError, match="leaves nothing"):
        metrics.psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8), crop_border=4)
    with pytest.raises(InputError, match="3 channels"):
        metrics.psnr(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), y_channel=True)
