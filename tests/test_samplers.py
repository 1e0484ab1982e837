"""Samplers: oracle recovery, DDIM(eta=1) == DDPM, truncated start, x0 correction, per-sample generators."""

import math

import numpy as np
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


# ---- every step against the closed form, with a network that is NOT the oracle ----------------------------------
# The oracle tests above cannot see an error in an intermediate step: whatever the chain does, an oracle pulls it
# back to y0. Here eps is a fixed linear function of y_t and gamma, so every step's output is a known function of
# its input. The trained alpha_bar are recomputed with numpy, and the kept timesteps are written out by hand:
# 4 steps over T = 2000 keep round(linspace(1, 2000, 4)) = 1, 667, 1334, 2000.
_AB = np.cumprod(1.0 - np.linspace(1e-6, 1e-2, 2000))  # alpha_bar_t for t = 1..2000, float64
_KEPT = (2000, 1334, 667, 1)  # the order the sampler walks them


def _linear_net(calls: list):
    def net(y_t: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        calls.append((y_t.clone(), gamma.clone()))
        return 0.8 * y_t - 0.5 * gamma.view(-1, 1, 1, 1) + 0.1
    return net


def _y0_hat(y: torch.Tensor, ab: float) -> torch.Tensor:
    """Eq. (8) with the linear network, clipped to [-1, 1] (float64)."""
    eps = 0.8 * y - 0.5 * math.sqrt(ab) + 0.1
    return ((y - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).clamp(-1, 1)


def _tol(i: int) -> float:
    """The samplers work in float32: 1e-6 here, but at the last kept step (t = 1, 1 - ab = 1e-6) the float32 gamma
    leaves sqrt(1 - gamma^2) ~3% off, i.e. ~3e-5 in y0_hat. Dropping the recomputed eps' moves step 3 by 9e-4."""
    return 1e-4 if i == len(_KEPT) - 1 else 2e-6


def _walk(sample, eta: float, seed: int):
    calls, seen = [], []
    noise = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    sample(_linear_net(calls), noise, Schedule(), 4, eta=eta, generator=torch.Generator().manual_seed(seed),
           callback=lambda i, n, y, y0_hat: seen.append(y.clone()))
    assert len(calls) == len(seen) == 4
    assert torch.equal(calls[0][0], noise)  # the chain starts from the noise
    for i, (y_t, gamma) in enumerate(calls):
        assert float(gamma[0]) == pytest.approx(math.sqrt(_AB[_KEPT[i] - 1]), rel=1e-6)  # the kept timestep
        if i:
            assert torch.equal(y_t, seen[i - 1])  # each call sees the previous step's output
    return calls, seen


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_each_ddim_step_is_the_closed_form_update(eta: float) -> None:
    """y_prev = sqrt(ab') y0c + sqrt(1 - ab' - sigma^2) eps' + sigma z (Song et al. 2021, Eq. 12), where y0c is
    Eq. (8) clipped to [-1, 1], eps' = (y_t - sqrt(ab) y0c) / sqrt(1 - ab) is recomputed from it, and
    sigma = eta sqrt((1 - ab') / (1 - ab)) sqrt(1 - ab / ab'); z is the generator's next draw (none at the end)."""
    calls, seen = _walk(ddim_sample, eta, seed=3)
    z_gen = torch.Generator().manual_seed(3)
    clipped = []
    for i, ((y_t, _), y_next) in enumerate(zip(calls, seen)):
        ab = _AB[_KEPT[i] - 1]
        abp = _AB[_KEPT[i + 1] - 1] if i + 1 < len(_KEPT) else 1.0
        y = y_t.double()
        y0c = _y0_hat(y, ab)
        clipped.append(float((y0c.abs() == 1).double().mean()))
        eps = (y - math.sqrt(ab) * y0c) / math.sqrt(1 - ab)
        sigma = eta * math.sqrt((1 - abp) / (1 - ab)) * math.sqrt(1 - ab / abp)
        want = math.sqrt(abp) * y0c + math.sqrt(max(1 - abp - sigma ** 2, 0.0)) * eps
        if sigma > 0 and i + 1 < len(_KEPT):
            want = want + sigma * torch.randn(y.shape, generator=z_gen, dtype=torch.float32).double()
        torch.testing.assert_close(y_next.double(), want, rtol=0, atol=_tol(i))
    # the clip is active on part of the image in the middle steps, so the recomputed eps' matters
    assert any(0.1 < c < 0.9 for c in clipped), clipped


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_each_ddpm_step_is_the_posterior_mean_plus_its_noise(eta: float) -> None:
    """y_prev = mu + eta sqrt(var) z with the posterior q(y_prev | y_t, y0c) between the kept levels (Eq. 6-7):
    beta = 1 - ab / ab', mu = sqrt(ab') beta / (1 - ab) y0c + sqrt(1 - beta) (1 - ab') / (1 - ab) y_t,
    var = beta (1 - ab') / (1 - ab); no noise at the last step. eta = 0 leaves the mean alone."""
    calls, seen = _walk(ddpm_sample, eta, seed=4)
    z_gen = torch.Generator().manual_seed(4)
    for i, ((y_t, _), y_next) in enumerate(zip(calls, seen)):
        ab = _AB[_KEPT[i] - 1]
        abp = _AB[_KEPT[i + 1] - 1] if i + 1 < len(_KEPT) else 1.0
        y = y_t.double()
        beta = 1 - ab / abp
        want = math.sqrt(abp) * beta / (1 - ab) * _y0_hat(y, ab) + math.sqrt(1 - beta) * (1 - abp) / (1 - ab) * y
        if i + 1 < len(_KEPT):
            z = torch.randn(y.shape, generator=z_gen, dtype=torch.float32).double()  # drawn whatever eta
            want = want + eta * math.sqrt(beta * (1 - abp) / (1 - ab)) * z
        torch.testing.assert_close(y_next.double(), want, rtol=0, atol=_tol(i))
