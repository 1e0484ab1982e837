"""Schedule: closed forms, SR3's continuous gamma draws, respacing over the trained alpha_bar."""

import math

import numpy as np
import pytest
import torch

from dreamsr.diffusion import DiffusionConfig, Schedule
from dreamsr.errors import ConfigError


def test_linear_schedule_matches_numpy():
    s = Schedule(DiffusionConfig(num_steps=2000, beta_start=1e-6, beta_end=1e-2))
    betas = np.linspace(1e-6, 1e-2, 2000, dtype=np.float64)
    ab = np.cumprod(1 - betas)
    np.testing.assert_allclose(s.alpha_bar.numpy(), ab, rtol=1e-12)
    assert s.alpha_bar_ext[0] == 1.0
    assert math.isclose(float(s.alpha_bar[-1]), 4.386e-5, rel_tol=1e-3)  # alpha_bar_T of the SR3/DREAM schedule


def test_q_sample_closed_form_and_inverses():
    g = torch.Generator().manual_seed(0)
    y0 = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1
    eps = torch.randn(4, 3, 8, 8, generator=g)
    gamma = torch.tensor([0.01, 0.3, 0.7, 0.999])
    y_t = Schedule.q_sample(y0, gamma, eps)
    for i, gm in enumerate(gamma.tolist()):  # Eq. (3) by hand
        expect = gm * y0[i] + math.sqrt(1 - gm * gm) * eps[i]
        torch.testing.assert_close(y_t[i], expect)
    torch.testing.assert_close(Schedule.predict_y0(y_t, eps, gamma), y0, atol=2e-4, rtol=0)
    torch.testing.assert_close(Schedule.predict_eps(y_t, y0, gamma), eps, atol=1e-4, rtol=0)


def test_sample_gamma_lies_in_its_sr3_interval():
    s = Schedule()
    g = torch.Generator().manual_seed(0)
    gam = s.sample_gamma(20000, g)
    sqrt_ab = s.alpha_bar_ext.sqrt()
    assert gam.min() >= sqrt_ab[-1] and gam.max() <= 1.0
    # the draw is continuous and roughly uniform over t: its mean matches the mean over t of interval midpoints
    mids = (sqrt_ab[1:] + sqrt_ab[:-1]) / 2
    assert abs(float(gam.mean()) - float(mids.mean())) < 0.01
    # reproducible from the generator
    torch.testing.assert_close(s.sample_gamma(5, torch.Generator().manual_seed(3)),
                               s.sample_gamma(5, torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("steps", [1, 2, 10, 100, 1000, 2000])
def test_respace_uses_trained_alpha_bar(steps):
    s = Schedule()
    r = s.respace(steps)
    assert len(r) == steps
    assert int(r.timesteps[-1]) == s.T
    assert float(r.alpha_bar[-1]) == float(s.alpha_bar[-1])  # last alpha_bar is the trained one
    torch.testing.assert_close(r.alpha_bar, s.alpha_bar_ext[r.timesteps])
    # recomputed betas chain back to the kept alpha_bar: prod(1 - beta') == alpha_bar at each kept step
    torch.testing.assert_close(torch.cumprod(1 - r.betas, 0), r.alpha_bar)
    assert torch.all(r.timesteps[1:] > r.timesteps[:-1])


def test_respace_truncated_start():
    s = Schedule()
    r = s.respace(10, start_step=500)
    assert int(r.timesteps[-1]) == 500 and int(r.timesteps[0]) == 1
    with pytest.raises(ConfigError):
        s.respace(0)
    with pytest.raises(ConfigError):
        s.respace(10, start_step=2001)
    with pytest.raises(ConfigError):
        s.respace(600, start_step=500)


def test_posterior_matches_ddpm_formula():
    s = Schedule()
    g = torch.Generator().manual_seed(1)
    y0, y_t = torch.randn(1, 3, 4, 4, generator=g), torch.randn(1, 3, 4, 4, generator=g)
    t = 700  # consecutive trained steps: posterior coefficients of Ho et al. Eq. (7)
    ab, abp, beta = s.alpha_bar[t - 1], s.alpha_bar[t - 2], s.betas[t - 1]
    mean, var = Schedule.posterior(y0, y_t, ab.reshape(1), abp.reshape(1))
    expect = (abp.sqrt() * beta / (1 - ab)) * y0 + ((1 - beta).sqrt() * (1 - abp) / (1 - ab)) * y_t
    torch.testing.assert_close(mean, expect.float())
    assert math.isclose(float(var), float(beta * (1 - abp) / (1 - ab)), rel_tol=1e-5)


def test_residual_parameterisation_round_trip():
    cfg = DiffusionConfig(target="residual", residual_scale=1.5)
    hr, x0 = torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 8, 8) * 2 - 1
    y0 = cfg.to_target(hr, x0)
    torch.testing.assert_close(y0, (hr - x0) * 1.5)
    torch.testing.assert_close(cfg.from_target(y0, x0), hr)
    img = DiffusionConfig(target="image")
    assert torch.equal(img.to_target(hr, x0), hr) and torch.equal(img.from_target(hr, x0), hr)
    assert DiffusionConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError):
        DiffusionConfig(target="latent")
