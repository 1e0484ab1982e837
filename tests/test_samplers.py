"""Samplers: oracle recovery, DDIM(eta=1) == DDPM, truncated start, x0 correction, per-sample generators."""

import pytest
import torch

from dreamsr.diffusion import Schedule
from dreamsr.errors import ConfigError
from dreamsr.samplers import ddim_sample, ddpm_sample


@pytest.fixture
def y0():
    return torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 1.8 - 0.9


def oracle(y0):
    """The true eps for a known y0: eps = (y_t - gamma y0) / sqrt(1 - gamma^2)."""
    return lambda y_t, gamma: Schedule.predict_eps(y_t, y0, gamma)


@pytest.mark.parametrize("steps", [1, 10, 100, 2000])
def test_ddim_oracle_recovers_y0(y0, steps):
    noise = torch.randn(y0.shape, generator=torch.Generator().manual_seed(1))
    out = ddim_sample(oracle(y0), noise, Schedule(), steps)
    assert (out - y0).abs().max() < 1e-4


@pytest.mark.parametrize("steps", [1, 10, 100])
def test_ddpm_oracle_recovers_y0(y0, steps):
    noise = torch.randn(y0.shape, generator=torch.Generator().manual_seed(1))
    out = ddpm_sample(oracle(y0), noise, Schedule(), steps, generator=torch.Generator().manual_seed(2))
    assert (out - y0).abs().max() < 1e-3


def test_ddim_eta1_equals_ddpm():
    """DDIM with eta = 1 is ancestral DDPM with the posterior variance (same noise draws)."""
    net = lambda y_t, gamma: 0.3 * y_t + 0.1  # a deterministic stand-in network
    noise = torch.randn(1, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    a = ddpm_sample(net, noise, Schedule(), 25, generator=torch.Generator().manual_seed(3))
    b = ddim_sample(net, noise, Schedule(), 25, eta=1.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_ddim_eta0_is_deterministic_and_ddpm_depends_on_seed():
    net = lambda y_t, gamma: 0.3 * y_t
    noise = torch.randn(1, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    s = Schedule()
    assert torch.equal(ddim_sample(net, noise, s, 10), ddim_sample(net, noise, s, 10))
    a = ddpm_sample(net, noise, s, 10, generator=torch.Generator().manual_seed(1))
    b = ddpm_sample(net, noise, s, 10, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(a, b)


def test_clipping_keeps_prediction_in_range():
    net = lambda y_t, gamma: -5 * torch.ones_like(y_t)  # predicts wildly: y0_hat far outside [-1, 1]
    seen = []
    ddim_sample(net, torch.zeros(1, 3, 4, 4), Schedule(), 5, callback=lambda i, n, y, x0h: seen.append(x0h))
    assert len(seen) == 5 and all(x.abs().max() <= 1 for x in seen)


def test_truncated_start_and_x0_fn(y0):
    s = Schedule()
    noise = torch.randn(y0.shape, generator=torch.Generator().manual_seed(1))
    gammas = []

    def net(y_t, gamma):
        gammas.append(float(gamma[0]))
        return Schedule.predict_eps(y_t, y0, gamma)

    out = ddim_sample(net, noise, s, 10, start=499, init=torch.zeros_like(y0))
    assert abs(gammas[0] - float(s.alpha_bar[498].sqrt())) < 1e-6  # first call at the start level
    assert (out - y0).abs().max() < 1e-4
    with pytest.raises(ConfigError, match="init"):
        ddim_sample(net, noise, s, 10, start=499)
    # x0_fn replaces each estimate: forcing y0_hat = c makes the chain land on c
    c = torch.full_like(y0, 0.25)
    out = ddpm_sample(lambda y, g: 0.0 * y, noise, s, 8, generator=torch.Generator().manual_seed(0),
                      x0_fn=lambda x: c)
    torch.testing.assert_close(out, c)


def test_per_sample_generators_make_samples_independent_of_batch():
    net = lambda y_t, gamma: 0.5 * y_t
    s = Schedule()
    noise = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    gens = lambda: [torch.Generator().manual_seed(10 + i) for i in range(3)]
    full = ddpm_sample(net, noise, s, 6, generator=gens())
    one = ddpm_sample(net, noise[1:2], s, 6, generator=[gens()[1]])
    torch.testing.assert_close(full[1:2], one)
    with pytest.raises(ConfigError, match="generators"):
        ddpm_sample(net, noise, s, 6, generator=gens()[:2])
