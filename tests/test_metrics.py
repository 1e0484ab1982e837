"""Metric tests: closed forms, known shifts and parity with scikit-image (the reference implementation)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamsr import metrics
from dreamsr.errors import InputError
from dreamsr.images import downsample, resize, upsample
from tests._helpers import load_photo, save_random_weights

skimage_metrics = pytest.importorskip("skimage.metrics")


def _photo(name: str = "astronaut.png", size: int = 96) -> torch.Tensor:
    """A real photo from the scikit-image wheel, centre crop size x size, [3,H,W] in [0, 1]."""
    img = load_photo(name)
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
    g = metrics.gaussian_window().numpy()
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


# ---------------------------------------------------------------- VIF (torchmetrics VIF-p)
def _tm_vif():
    """torchmetrics' VIF-p, imported here independently of dreamsr (the test skips without torchmetrics)."""
    return pytest.importorskip("torchmetrics.functional.image").visual_information_fidelity


def _q8(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0, 1).mul(255).round().div(255)


def _blur(x: torch.Tensor) -> torch.Tensor:
    """3x3 box blur with replicated edges."""
    return torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x[None], (1, 1, 1, 1), mode="replicate"),
                                          3, stride=1)[0]


def test_vif_of_an_image_with_itself_is_one() -> None:
    _tm_vif()
    x = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))  # textured everywhere
    assert metrics.vif(x, x) == pytest.approx(1.0, abs=1e-6)
    assert metrics.vif(x, x.clone(), crop_border=4, y_channel=True) == pytest.approx(1.0, abs=1e-6)
    hr = _q8(_photo(size=64))
    assert metrics.vif(hr, hr) == pytest.approx(1.0, abs=1e-6)


def test_vif_falls_with_more_blur_and_with_noise() -> None:
    _tm_vif()
    hr = _q8(_photo(size=96))
    once, twice = _blur(hr), _blur(_blur(hr))
    for y in (False, True):
        v1, v2 = metrics.vif(_q8(once), hr, y_channel=y), metrics.vif(_q8(twice), hr, y_channel=y)
        assert 1.0 > v1 > v2 > 0.0
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(hr.shape, generator=g)
    v_small, v_big = (metrics.vif(_q8(hr + s * noise), hr, crop_border=4, y_channel=True) for s in (0.01, 0.05))
    assert 1.0 > v_small > v_big > 0.0
    # a bicubic x4 of the photo loses much of the information: well inside (0, 1)
    sr = _q8(upsample(_q8(downsample(hr, 4)), 4))
    assert 0.05 < metrics.vif(sr, hr, crop_border=4, y_channel=True) < 0.9


@pytest.mark.parametrize("crop", [0, 4])
def test_vif_conventions_equal_torchmetrics_on_hand_made_y_and_crops(crop: int) -> None:
    tm_vif = _tm_vif()
    sr, hr = (_q8(x) for x in _pair(size=64))
    c = slice(crop, -crop) if crop else slice(None)
    # Y: BT.601 written out (_y_np) on the cropped images, scaled to [0, 255], float64, SR as preds, HR as target
    ya, yb = (torch.from_numpy(_y_np(x[:, c, c].contiguous()) * 255)[None, None] for x in (sr, hr))
    expected_y = float(tm_vif(ya, yb))
    assert metrics.vif(sr, hr, crop_border=crop, y_channel=True) == pytest.approx(expected_y, abs=1e-12)
    # RGB: the cropped channels x 255 (torchmetrics averages the per-channel VIFs)
    a, b = (x[:, c, c].double()[None] * 255 for x in (sr, hr))
    assert metrics.vif(sr, hr, crop_border=crop) == pytest.approx(float(tm_vif(a, b)), abs=1e-12)
    assert expected_y != pytest.approx(float(tm_vif(a, b)), abs=1e-4)  # the two conventions do differ
    # the cropped border is ignored: garbage there changes nothing
    if crop:
        noisy = sr.clone()
        noisy[:, :crop, :] = torch.rand(3, crop, 64)
        noisy[:, :, -crop:] = 0.0
        for y in (False, True):
            assert metrics.vif(noisy, hr, crop_border=crop, y_channel=y) == metrics.vif(sr, hr, crop_border=crop,
                                                                                         y_channel=y)


def test_vif_too_small_images_and_bad_inputs_raise_input_error() -> None:
    _tm_vif()
    with pytest.raises(InputError, match="at least 41x41"):
        metrics.vif(torch.rand(3, 40, 64), torch.rand(3, 40, 64))
    with pytest.raises(InputError, match=r"at least 41x41 \(after cropping\), got 40x40"):
        metrics.vif(torch.rand(3, 48, 48), torch.rand(3, 48, 48), crop_border=4, y_channel=True)
    with pytest.raises(InputError, match="sizes differ"):
        metrics.vif(torch.rand(3, 48, 48), torch.rand(3, 48, 49))


def test_vif_without_torchmetrics_says_what_to_install(monkeypatch) -> None:
    import sys

    for name in ("torchmetrics", "torchmetrics.functional", "torchmetrics.functional.image"):
        monkeypatch.setitem(sys.modules, name, None)  # a None entry makes the import raise ImportError
    x = torch.rand(3, 48, 48)
    with pytest.raises(metrics.MetricUnavailableError, match=r'pip install "dreamsr\[perceptual\]"') as err:
        metrics.vif(x, x)
    assert "torchmetrics" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- HaarPSI / GMSD / MDSI (piq), HF ratio
def _piq():
    """piq, imported here independently of dreamsr (the test skips without piq)."""
    return pytest.importorskip("piq")


def _gauss_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of [3,H,W] (kernel written here, radius 3 sigma, replicated edges), float64."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-t**2 / (2 * sigma**2))
    k = torch.outer(g, g) / g.sum() ** 2
    xp = torch.nn.functional.pad(x.double()[:, None], (r, r, r, r), mode="replicate")
    return torch.nn.functional.conv2d(xp, k[None, None])[:, 0]


def _hf_ratio_np(sr: torch.Tensor, hr: torch.Tensor, crop: int) -> float:
    """The HF ratio written out: BT.601 Y of the cropped images, a direct 2-D 11x11 Gaussian (sigma 1.5)
    correlation over the valid region (every tap a shifted slice), mean squared residual of SR over HR."""
    t = np.arange(11) - 5.0
    g = np.exp(-t**2 / (2 * 1.5**2))
    k = np.outer(g, g) / g.sum() ** 2

    def energy(x: torch.Tensor) -> float:
        y = _y_np(x[:, crop:x.shape[1] - crop, crop:x.shape[2] - crop])
        h, w = y.shape
        low = np.zeros((h - 10, w - 10))
        for i in range(11):
            for j in range(11):
                low += k[i, j] * y[i:i + h - 10, j:j + w - 10]
        return float(np.mean((y[5:h - 5, 5:w - 5] - low) ** 2))

    return energy(sr) / energy(hr)


def test_piq_measures_of_an_image_with_itself_are_one_zero_zero() -> None:
    _piq()
    for x in (_q8(_photo(size=64)), torch.rand(3, 48, 40, generator=torch.Generator().manual_seed(0))):
        assert metrics.haarpsi(x, x.clone()) == pytest.approx(1.0, abs=1e-9)
        assert metrics.gmsd(x, x.clone()) == pytest.approx(0.0, abs=1e-12)
        assert metrics.mdsi(x, x.clone()) == pytest.approx(0.0, abs=1e-12)


def test_piq_measures_equal_piq_called_directly_single_and_batched() -> None:
    piq = _piq()
    sr, hr = (_q8(x) for x in _pair(size=64))
    sr2 = _q8(_blur(hr))
    a, b = sr.double()[None], hr.double()[None]
    for name in ("haarpsi", "gmsd", "mdsi"):
        fn = getattr(piq, name)
        expected = float(fn(a, b))  # piq's defaults, SR as x, HR as the reference y
        assert getattr(metrics, name)(sr, hr) == pytest.approx(expected, abs=1e-12), name
        assert getattr(metrics, name)(sr.float(), hr.float()) == pytest.approx(expected, abs=1e-6), name
        # a batch: the mean of the per-image values, and perceptual_scores gives each of them
        batch_sr, batch_hr = torch.stack([sr, sr2]), torch.stack([hr, hr])
        per_image = fn(batch_sr.double(), batch_hr.double(), reduction="none").tolist()
        assert per_image[0] != pytest.approx(per_image[1], abs=1e-4)
        assert getattr(metrics, name)(batch_sr, batch_hr) == pytest.approx(np.mean(per_image), abs=1e-12)
        assert metrics.perceptual_scores(batch_sr, batch_hr, measures=(name,))[name] == pytest.approx(
            per_image, abs=1e-12)


def test_piq_measures_rank_a_gaussian_blur_below_the_original() -> None:
    _piq()
    hr = _q8(_photo(size=96))
    mild, strong = _q8(_gauss_blur(hr, 1.0)), _q8(_gauss_blur(hr, 2.5))
    h = [metrics.haarpsi(x, hr) for x in (hr, mild, strong)]
    g = [metrics.gmsd(x, hr) for x in (hr, mild, strong)]
    m = [metrics.mdsi(x, hr) for x in (hr, mild, strong)]
    assert h[0] == pytest.approx(1.0) and 1.0 > h[1] > h[2] > 0.0  # higher is better
    assert g[0] == pytest.approx(0.0) and 0.0 < g[1] < g[2]  # lower is better
    assert m[0] == pytest.approx(0.0) and 0.0 < m[1] < m[2]  # lower is better


def test_hf_ratio_equals_a_direct_convolution_and_is_one_for_a_copy() -> None:
    sr, hr = (_q8(x) for x in _pair(size=64))
    for crop in (0, 4):
        assert metrics.hf_ratio(sr, hr, crop_border=crop) == pytest.approx(_hf_ratio_np(sr, hr, crop), rel=1e-10)
        assert metrics.hf_ratio(hr, hr.clone(), crop_border=crop) == 1.0
    # [B,3,H,W]: the mean of the per-image ratios; perceptual_scores gives each one
    other = _q8(_photo("coffee.png", size=64))
    both = metrics.perceptual_scores(torch.stack([sr, hr]), torch.stack([hr, other]), crop_border=4,
                                     measures=("hf",))["hf"]
    expected = [_hf_ratio_np(sr, hr, 4), _hf_ratio_np(hr, other, 4)]
    assert both == pytest.approx(expected, rel=1e-10)
    assert metrics.hf_ratio(torch.stack([sr, hr]), torch.stack([hr, other]), crop_border=4) == pytest.approx(
        np.mean(expected), rel=1e-10)
    # the cropped border is ignored
    noisy = sr.clone()
    noisy[:, :4, :] = torch.rand(3, 4, 64)
    assert metrics.hf_ratio(noisy, hr, crop_border=4) == metrics.hf_ratio(sr, hr, crop_border=4)


def test_hf_ratio_is_below_one_for_blur_and_above_one_for_noise() -> None:
    hr = _q8(_photo(size=96))
    mild, strong = (metrics.hf_ratio(_q8(_gauss_blur(hr, s)), hr, crop_border=4) for s in (1.0, 2.5))
    assert 1.0 > mild > strong > 0.0
    assert 0.0 < metrics.hf_ratio(_q8(upsample(_q8(downsample(hr, 4)), 4)), hr, crop_border=4) < 0.8  # bicubic x4
    noise = torch.randn(hr.shape, generator=torch.Generator().manual_seed(2))
    small, big = (metrics.hf_ratio(_q8(hr + s * noise), hr, crop_border=4) for s in (0.02, 0.08))
    assert 1.0 < small < big
    flat = torch.full((3, 32, 32), 0.5)
    assert math.isnan(metrics.hf_ratio(hr[:, :32, :32], flat))  # no HF energy in HR: undefined


def test_perceptual_measures_reject_bad_inputs_with_input_error() -> None:
    _piq()
    with pytest.raises(InputError, match=r"HaarPSI needs images of at least 16x16 .*got 15x40"):
        metrics.haarpsi(torch.rand(3, 15, 40), torch.rand(3, 15, 40))
    assert metrics.gmsd(torch.rand(3, 15, 40), torch.rand(3, 15, 40)) > 0  # no size limit of its own
    with pytest.raises(InputError, match=r"in \[0, 1\]; SR spans"):
        metrics.gmsd(torch.rand(3, 32, 32) * 1.1, torch.rand(3, 32, 32))
    with pytest.raises(InputError, match="sizes differ"):
        metrics.mdsi(torch.rand(3, 32, 32), torch.rand(3, 32, 33))
    with pytest.raises(InputError, match="RGB images"):
        metrics.haarpsi(torch.rand(1, 32, 32), torch.rand(1, 32, 32))
    with pytest.raises(InputError, match=r"HF ratio needs images of at least 11x11 \(after cropping\), got 10x10"):
        metrics.hf_ratio(torch.rand(3, 18, 18), torch.rand(3, 18, 18), crop_border=4)
    with pytest.raises(InputError, match="unknown measure"):
        metrics.perceptual_scores(torch.rand(3, 32, 32), torch.rand(3, 32, 32), measures=("niqe",))


def test_piq_measures_without_piq_say_what_to_install_and_hf_needs_nothing(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "piq", None)  # a None entry makes the import raise ImportError
    x = torch.rand(3, 32, 32)
    for fn in (metrics.haarpsi, metrics.gmsd, metrics.mdsi):
        with pytest.raises(metrics.MetricUnavailableError, match=r'pip install "dreamsr\[perceptual\]"') as err:
            fn(x, x)
        assert "'piq'" in str(err.value) and "\n" not in str(err.value)
    assert metrics.hf_ratio(x, x) == 1.0


# ---------------------------------------------------------------- consistency
def test_consistency_is_mse_times_1e5_against_the_bicubic_downsample() -> None:
    hr = _photo(size=64)
    lr = downsample(hr, 4).clamp(0, 1)
    assert metrics.consistency(hr, lr) == 0.0  # HR is perfectly consistent with its own LR
    # a flat SR image at 0.5 against a flat LR at 0.5 + 0.01: MSE 1e-4 -> 10 (x 1e5)
    sr = torch.full((3, 32, 32), 0.5, dtype=torch.float64)
    # (bicubic resizing runs in float32: 1e-5 relative)
    assert metrics.consistency(sr, torch.full((3, 8, 8), 0.51, dtype=torch.float64)) == pytest.approx(10.0, rel=1e-5)
    # bicubic upsampling is not a perfect inverse: a small, positive number
    c = metrics.consistency(upsample(lr, 4).clamp(0, 1), lr)
    assert 0 < c < 1e3
    with pytest.raises(InputError, match="one scale"):
        metrics.consistency(torch.zeros(3, 30, 32), torch.zeros(3, 8, 8))
    # a continuous-scale model's x2.5 output (23x37 -> 58x92) is measured against the LR resized straight to it
    sr25, lr25 = torch.rand(3, 58, 92, dtype=torch.float64), torch.rand(3, 23, 37, dtype=torch.float64)
    expect = torch.mean((resize(sr25, (23, 37)).clamp(0, 1) - lr25) ** 2).item() * 1e5
    assert metrics.consistency(sr25, lr25) == pytest.approx(expect, rel=1e-9)


# ---------------------------------------------------------------- LPIPS / FID weights (random stand-ins)
@pytest.fixture
def torch_home(random_metric_weights: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(random_metric_weights))
    return random_metric_weights


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path


def test_missing_weights_are_reported_unavailable_with_the_file_to_fetch(empty_torch_home) -> None:
    with pytest.raises(metrics.MetricUnavailableError, match="alexnet-owt-7be5be79.pth.*download.pytorch.org"):
        metrics.LPIPS()
    with pytest.raises(metrics.MetricUnavailableError, match="pt_inception-2015-12-05-6726825d.pth.*pytorch-fid"):
        metrics.InceptionFeatures()


@pytest.mark.filterwarnings("ignore::UserWarning")  # lpips passes torchvision's deprecated pretrained=
@pytest.mark.parametrize("net", ["squeeze", pytest.param("alex", marks=pytest.mark.slow)])
def test_lpips_matches_the_lpips_package_fed_minus_one_to_one(net, torch_home, tmp_path, monkeypatch) -> None:
    import lpips

    if net != "squeeze":  # the shared folder holds squeezenet (4.8 MB); alexnet (233 MB) goes to a temporary one
        save_random_weights(tmp_path / "hub" / "checkpoints", lpips_net=net, fid=False)
        monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ours = metrics.LPIPS(net)
    # the package's own loader finds the same (random) backbone in $TORCH_HOME and never downloads
    ref = lpips.LPIPS(net=net, verbose=False).eval()
    sr, hr = _pair(size=64)
    want = ref(hr.unsqueeze(0) * 2 - 1, sr.unsqueeze(0) * 2 - 1).item()
    assert ours(sr, hr) == pytest.approx(want, rel=1e-5)
    assert ours(sr, hr) != pytest.approx(ref(hr.unsqueeze(0), sr.unsqueeze(0)).item(), rel=1e-3)  # not [0,1]
    assert ours(hr, hr) == 0.0


def test_lpips_weights_from_a_metric_weights_dir(tmp_path, empty_torch_home) -> None:
    save_random_weights(tmp_path / "w", fid=False)
    d = metrics.LPIPS("squeeze", weights_dir=tmp_path / "w")
    sr, hr = _pair(size=48)
    assert d(sr, hr) > 0 and d(hr, hr) == 0.0


def test_a_wrong_weights_file_is_unavailable_not_a_partial_load(tmp_path, empty_torch_home) -> None:
    import torchvision

    bad = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict()
    torch.save(bad, tmp_path / metrics.FID_FILE)  # torchvision's own Inception: aux head and 1000 classes
    with pytest.raises(metrics.MetricUnavailableError, match="not the FID InceptionV3"):
        metrics.InceptionFeatures(weights_dir=tmp_path)


def test_fid_network_has_pytorch_fid_parameter_layout() -> None:
    import torchvision

    ours = metrics.build_fid_inception().state_dict()
    ref = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False,
                                          num_classes=1008).state_dict()
    assert list(ours) == list(ref)
    assert all(ours[k].shape == ref[k].shape for k in ref)
    assert ours["fc.weight"].shape == (1008, 2048)


def test_fid_blocks_use_tensorflow_pooling() -> None:
    import torchvision.models.inception as tvi

    torch.manual_seed(0)
    net = metrics.build_fid_inception().eval()
    ref = tvi.InceptionA(192, pool_features=32).eval()
    ref.load_state_dict(net.Mixed_5b.state_dict())
    x = torch.rand(1, 192, 9, 9)
    with torch.no_grad():
        a, b = net.Mixed_5b(x), ref(x)
    # average pool without counting the zero padding: same inside, different on the border
    torch.testing.assert_close(a[..., 1:-1, 1:-1], b[..., 1:-1, 1:-1])
    assert (a[..., 0, :] - b[..., 0, :]).abs().max() > 1e-4
    assert net.Mixed_7c.max_pool and not net.Mixed_7b.max_pool


def test_fid_features_and_distance_through_the_real_file_path(torch_home) -> None:
    feats = metrics.InceptionFeatures(batch=2)
    imgs = torch.stack([_photo(name, size=64) for name in ("astronaut.png", "coffee.png")])
    f = feats(imgs)
    assert f.shape == (2, 2048) and np.isfinite(f).all()
    assert metrics.fid_from_features(f, f) == pytest.approx(0.0, abs=1e-6)
    g = feats([imgs[1].flip(-1), imgs[0].flip(-1)])  # a list of [3,H,W] works too
    assert g.shape == (2, 2048)
    assert metrics.fid_from_features(f, g) > 0
    assert "biased" in metrics.fid_warning(2) and metrics.fid_warning(2048) is None


# ---------------------------------------------------------------- Fréchet distance
def test_frechet_distance_matches_closed_forms() -> None:
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 2, size=d), rng.uniform(0.1, 2, size=d)
    want = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    # diagonal covariances
    assert metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-10)
    # commuting covariances in a rotated basis give the same value
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    assert metrics.frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T) == pytest.approx(
        want, rel=1e-9)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert metrics.frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])) == (
        pytest.approx(4.0 + 1.0))


def test_frechet_distance_matches_scipy_sqrtm_on_non_commuting_covariances() -> None:
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 8)), rng.normal(size=(30, 8)) @ rng.normal(size=(8, 8))
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    mu1, mu2 = x.mean(0), y.mean(0)
    covmean = linalg.sqrtm(s1 @ s2).real
    want = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-8)
    assert metrics.fid_from_features(x, y) == pytest.approx(want, rel=1e-8)
    # rank-deficient (fewer samples than dimensions): finite, non-negative, 0 against itself
    z = rng.normal(size=(5, 8))
    assert metrics.fid_from_features(z, z) == pytest.approx(0.0, abs=1e-9)
    assert metrics.fid_from_features(z, x) > 0


def test_small_set_fid_in_sample_space_equals_the_covariance_formula() -> None:
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(6, 32)), rng.normal(size=(9, 32)) * 1.5 + 0.3  # N < D: the nuclear-norm route
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    via_cov = metrics.frechet_distance(a.mean(0), s1, b.mean(0), s2)
    d = a.mean(0) - b.mean(0)
    via_scipy = d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real)
    # (the eigen route takes square roots of rounding-level eigenvalues of the rank-deficient product: ~1e-8)
    assert metrics.fid_from_features(a, b) == pytest.approx(via_cov, rel=1e-7)
    assert metrics.fid_from_features(a, b) == pytest.approx(via_scipy, rel=1e-6)
