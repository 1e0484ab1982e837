"""ResShift's shift process against closed forms, an oracle network and a hand-written DREAM loss;
the pixel-unshuffle space's round trip."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dreamsr.errors import ConfigError, InputError
from dreamsr.first_stages.unshuffle import PixelUnshuffle, UnshuffleConfig
from dreamsr.processes.shift import ShiftConfig, ShiftProcess, eta_schedule

# sqrt(eta_t) of the v1 release (T = 15, kappa = 2, p = 0.3, min_noise 0.04), from reference/resshift.md
V1_SQRT_ETAS = [0.02, 0.117, 0.176, 0.234, 0.292, 0.351, 0.412, 0.476, 0.542, 0.610, 0.681, 0.754, 0.830,
                0.909, 0.99]


def _pair(shape=(2, 3, 4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    y0 = torch.rand(shape, generator=g) * 2 - 1
    y = torch.rand(shape, generator=g) * 2 - 1
    return y0, y


# --- schedule and config ------------------------------------------------------------------------------------

def test_v1_schedule_matches_the_release_values():
    got = eta_schedule(ShiftConfig.v1())
    assert got.dtype == torch.float64 and got.shape == (15,)
    torch.testing.assert_close(got, torch.tensor(V1_SQRT_ETAS, dtype=torch.float64), atol=5e-4, rtol=0)
    assert got[0].item() == pytest.approx(0.02, abs=1e-15) and got[-1].item() == pytest.approx(0.99, abs=1e-12)
    assert ShiftConfig() == ShiftConfig.v1()


def test_v3_schedule_by_the_formula():
    c = ShiftConfig.v3()
    assert (c.num_steps, c.kappa, c.min_noise) == (4, 2.0, 0.2)
    s1 = min(0.2 / 2.0, 0.2)  # HEAD: no sqrt(0.001) cap
    want = [s1 * (0.99 / s1) ** (((t - 1) / 3) ** 0.3) for t in range(1, 5)]  # sqrt(eta_1) b^{(T-1)((t-1)/(T-1))^p}
    torch.testing.assert_close(eta_schedule(c), torch.tensor(want, dtype=torch.float64), atol=1e-12, rtol=0)
    capped = ShiftConfig(num_steps=4, min_noise=0.2, sqrt_eta1_cap=math.sqrt(0.001))
    assert eta_schedule(capped)[0].item() == pytest.approx(math.sqrt(0.001))


def test_config_round_trip_and_errors():
    c = ShiftConfig.v3()
    assert ShiftConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown keys"):
        ShiftConfig.from_dict({**c.to_dict(), "kapa": 1.0})
    for bad in ({"num_steps": 1}, {"kappa": 0.0}, {"etas_end": 1.0}, {"input_scaling": "minmax"},
                {"min_noise": 5.0, "sqrt_eta1_cap": None}):
        with pytest.raises(ConfigError):
            ShiftConfig(**bad)


# --- the kernel ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("t", [0, 7, 14])
def test_forward_marginal_empirical_moments(t):
    proc = ShiftProcess(ShiftConfig.v1())
    y0, y = _pair(shape=(1, 2, 3, 3))
    n = 40000
    g = torch.Generator().manual_seed(1)
    eps = torch.randn((n, *y0.shape[1:]), generator=g)
    x_t = proc.q_sample(y0.expand(n, -1, -1, -1), y.expand(n, -1, -1, -1), t, eps)
    eta = V1_SQRT_ETAS[t] ** 2
    mean, var = y0[0] + eta * (y[0] - y0[0]), 4.0 * eta  # N(y0 + eta (y - y0), kappa^2 eta I)
    se = math.sqrt(var / n)
    assert (x_t.mean(0) - mean).abs().max() < 5 * se  # 5 standard errors
    assert (x_t.var(0) / var - 1).abs().max() < 5 * math.sqrt(2 / n) + 1e-3
    m2, v2 = proc.q_mean_variance(y0, y, t)
    torch.testing.assert_close(m2, y0 + eta * (y - y0), atol=2e-3, rtol=0)  # eta from the 3-digit table
    torch.testing.assert_close(v2.flatten(), torch.full((1,), 4.0 * eta), atol=2e-3, rtol=0)


def test_posterior_is_the_bayes_posterior():
    proc = ShiftProcess(ShiftConfig.v1())
    k2 = 4.0
    etas = [s * s for s in eta_schedule(ShiftConfig.v1()).tolist()]
    y0, y = _pair()
    y0, y = y0.double(), y.double()
    x_t = torch.randn(y0.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for i in range(1, 15):
        e, ep = etas[i], etas[i - 1]
        a = e - ep
        # prior q(x_{t-1} | y0, y) = N(y0 + ep (y - y0), k2 ep);
        # likelihood q(x_t | x_{t-1}) = N(x_{t-1} + a (y - y0), k2 a), as a function of x_{t-1}
        m1, v1 = y0 + ep * (y - y0), k2 * ep
        m2, v2 = x_t - a * (y - y0), k2 * a
        prec = 1 / v1 + 1 / v2
        want_mean, want_var = (m1 / v1 + m2 / v2) / prec, 1 / prec
        mean, var, logvar = proc.posterior(y0, x_t, torch.full((2,), i))
        torch.testing.assert_close(mean, want_mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(var.flatten(), torch.full((2,), want_var, dtype=torch.float64), rtol=1e-12, atol=0)
        torch.testing.assert_close(logvar.flatten().exp(), var.flatten(), rtol=1e-12, atol=0)
    mean, var, logvar = proc.posterior(y0, x_t, 0)  # index 0: the mean is y0, variance 0, log-variance clipped
    torch.testing.assert_close(mean, y0, rtol=0, atol=0)
    assert (var == 0).all()
    torch.testing.assert_close(logvar, proc.posterior(y0, x_t, 1)[2])


def test_prior_and_input_scaling():
    proc = ShiftProcess(ShiftConfig.v1())
    y0, y = _pair()
    noise = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(proc.prior(y, noise), y + 2.0 * 0.99 * noise)
    # the prior is the forward marginal at T with y0 replaced by y
    torch.testing.assert_close(proc.prior(y, noise), proc.q_sample(y, y, 14, noise))
    x = torch.ones(2, 3, 4, 4)
    torch.testing.assert_close(proc.scale_input(x, 14), x / math.sqrt(4 * 0.99 ** 2 + 1))
    pmax = ShiftProcess(ShiftConfig(input_scaling="max"))
    torch.testing.assert_close(pmax.scale_input(x, 14), x / (3 * 2 * 0.99 + 1))
    with pytest.raises(InputError, match="0..14"):
        proc.q_sample(y0, y, 15, noise)
    with pytest.raises(InputError, match="integer"):
        proc.q_sample(y0, y, torch.tensor([0.5, 1.0]), noise)


# --- sampling -------------------------------------------------------------------------------------------------

def _oracle(proc, y0, log):
    def model_fn(x_scaled, level):
        log.append((x_scaled.clone(), level.clone()))
        return y0.clone()
    return model_fn


@pytest.mark.parametrize("config", [ShiftConfig.v1(), ShiftConfig.v3()], ids=["T15", "T4"])
def test_oracle_sampler_lands_exactly_on_x0(config):
    proc = ShiftProcess(config)
    T = config.num_steps
    y0, y = _pair()
    y0 = y0 * 0.9  # inside [-1, 1], so the default pixel-space clip changes nothing
    noise = torch.randn(y.shape, generator=torch.Generator().manual_seed(4))
    log: list = []
    steps_seen = []
    out = proc.sample(_oracle(proc, y0, log), noise, y, generator=torch.Generator().manual_seed(5),
                      callback=lambda i, n, x, y0h: steps_seen.append((i, n)))
    assert torch.equal(out, y0)
    assert len(log) == T and steps_seen == [(i, T) for i in range(T)]
    assert [int(lv[0]) for _, lv in log] == list(range(T - 1, -1, -1))  # the network sees t = T-1 .. 0 as float
    assert all(lv.dtype == torch.float32 and lv.shape == (2,) for _, lv in log)
    # first input: the prior x_T = y + kappa sqrt(eta_T) eps, scaled by 1 / sqrt(kappa^2 eta_T + 1)
    torch.testing.assert_close(log[0][0], (y + 2 * 0.99 * noise) / math.sqrt(4 * 0.99 ** 2 + 1))
    # respaced chains and truncated starts land on x0 too, calling the net at kept trained indices
    for steps, start, want in [(5, None, [14, 10, 7, 4, 0]), (1, None, [14]), (3, 8, [7, 4, 0])] if T == 15 else \
            [(2, None, [3, 0]), (1, 2, [1])]:
        log = []
        out = proc.sample(_oracle(proc, y0, log), noise, y, steps=steps, start=start,
                          generator=torch.Generator().manual_seed(5))
        assert torch.equal(out, y0)
        assert [int(lv[0]) for _, lv in log] == want


def test_oracle_chain_has_the_forward_marginals():
    """With the true x0, ancestral sampling draws x_t exactly from q(x_t | y0, y): empirical moments per step."""
    proc = ShiftProcess(ShiftConfig.v3())
    n = 20000
    y0 = torch.tensor([0.5, -0.3]).reshape(1, 2, 1, 1).expand(n, -1, -1, -1)
    y = torch.tensor([-0.2, 0.4]).reshape(1, 2, 1, 1).expand(n, -1, -1, -1)
    noise = torch.randn(y.shape, generator=torch.Generator().manual_seed(6))
    seen = {}
    proc.sample(lambda x, t: y0, noise, y, generator=torch.Generator().manual_seed(7),
                callback=lambda i, k, x, y0h: seen.__setitem__(i, x.clone()))
    for i in (0, 1):  # after step i the chain is at index T-2-i
        eta = float(proc.etas[4 - 2 - i])
        x = seen[i]
        mean, var = y0[0] + eta * (y[0] - y0[0]), 4 * eta
        assert (x.mean(0) - mean).abs().max() < 5 * math.sqrt(var / n)
        assert (x.var(0) / var - 1).abs().max() < 5 * math.sqrt(2 / n)


def test_sampler_options_and_refusals():
    proc = ShiftProcess(ShiftConfig.v1())
    y0, y = _pair()
    noise = torch.zeros_like(y)
    big = torch.full_like(y, 3.0)
    out = proc.sample(lambda x, t: big, noise, y)  # pixel space clips ŷ0 to [-1, 1] by default
    assert torch.equal(out, torch.ones_like(y))
    assert torch.equal(proc.sample(lambda x, t: big, noise, y, clip=False), big)
    assert torch.equal(proc.sample(lambda x, t: y0, noise, y, x0_fn=lambda z: z * 0.5), y0 * 0.5)
    for kw, msg in [({"sampler": "ddim"}, "ancestral"), ({"steps": 16}, "1..15"), ({"steps": 0}, "1..15"),
                    ({"start": 0}, "1..15"), ({"start": 3, "steps": 4}, "1..3"), ({"eta": 0.0}, "eta")]:
        with pytest.raises(ConfigError, match=msg):
            proc.sample(lambda x, t: y0, noise, y, **kw)
    assert proc.chain == proc.sampling_defaults["steps"] == 15 and proc.prediction == "x0" and proc.name == "shift"


# --- DREAM loss -----------------------------------------------------------------------------------------------

class StandIn(nn.Module):
    """ŷ0 = a x + b cond + c t (+ d while training, a stand-in for dropout); logs (training, grad, input)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.6))
        self.b = nn.Parameter(torch.tensor(0.3))
        self.c = nn.Parameter(torch.tensor(-0.02))
        self.d = 0.05
        self.calls: list[tuple[bool, bool, torch.Tensor]] = []

    def forward(self, x, cond, t):
        self.calls.append((self.training, torch.is_grad_enabled(), x.detach().clone()))
        out = self.a * x + self.b * cond + self.c * t[:, None, None, None]
        return out + self.d if self.training else out


def reference(net: StandIn, y0, cond, y, t, eps, p, eps2=None):
    """The x0-form of Alg. 3 for the shift kernel, written out (docs/resshift-dream.md); per-sample MSE."""
    s = torch.tensor(V1_SQRT_ETAS_EXACT)[t][:, None, None, None]
    eta, k = s * s, 2.0
    x_t = y0 + eta * (y - y0) + k * s * eps  # line 3
    div = (k * k * eta + 1).sqrt()
    tt = t.float()[:, None, None, None]
    a, b, c = net.a.detach(), net.b.detach(), net.c.detach()
    est = a * x_t / div + b * cond + c * tt  # line 4: first pass, eval mode (no d), no gradient
    lam = torch.zeros_like(s) if math.isinf(p) else (k * s / div) ** p
    mix = y0 + lam * (est - y0)  # Eq. 12
    if eps2 is None:
        x_hat = (1 - eta) * mix + eta * y + k * s * eps  # Eq. 13 with eps' = eps
    else:
        x_hat = (1 - eta) * mix + eta * y + k * s * eps2
    pred = net.a * x_hat / div + net.b * cond + net.c * tt + net.d  # line 6, training mode
    return ((pred - y0) ** 2).flatten(1).mean(1)


V1_SQRT_ETAS_EXACT = eta_schedule(ShiftConfig.v1()).float().tolist()


@pytest.mark.parametrize("p", [0.0, 1.0, 2.0, math.inf])
def test_dream_loss_matches_hand_computation(p):
    proc = ShiftProcess(ShiftConfig.v1())
    y0, y = _pair(shape=(3, 3, 4, 4))
    cond = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(8))
    eps = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(9))
    t = torch.tensor([0, 6, 14])
    net, ref_net = StandIn().train(), StandIn().train()
    loss = proc.loss(net, y0, cond, y, p, level=t.float(), eps=eps)
    ref = reference(ref_net, y0, cond, y, t, eps, p)
    torch.testing.assert_close(loss, ref)
    loss.sum().backward()
    ref.sum().backward()
    for name in ("a", "b", "c"):  # gradients through the second pass only
        torch.testing.assert_close(getattr(net, name).grad, getattr(ref_net, name).grad)
    if math.isinf(p):
        assert [c[:2] for c in net.calls] == [(True, True)]  # standard ResShift training: one forward pass
    else:
        assert [c[:2] for c in net.calls] == [(False, False), (True, True)]  # eval + no grad, then train
        assert net.training


def test_dream_p0_is_drm_and_independent_noise():
    """p = 0: the second input is the forward kernel applied to the network's own estimate (same ε)."""
    proc = ShiftProcess(ShiftConfig.v1())
    y0, y = _pair(shape=(2, 3, 4, 4))
    eps = torch.randn(y.shape, generator=torch.Generator().manual_seed(10))
    t = torch.tensor([3, 11])
    net = StandIn().train()
    proc.loss(net, y0, y, y, 0.0, level=t, eps=eps)
    div = (4 * proc.etas[t] + 1).sqrt().float()[:, None, None, None]
    x_t = net.calls[0][2] * div
    with torch.no_grad():
        est = net.eval()(x_t / div, y, t.float())
    torch.testing.assert_close(net.calls[1][2] * div, proc.q_sample(est, y, t, eps))
    # Eq. 13 with a fresh eps': the generator's next draw after eps (given) is eps'
    g = torch.Generator().manual_seed(11)
    net, ref_net = StandIn().train(), StandIn().train()
    got = proc.loss(net, y0, y, y, 1.0, level=t, eps=eps, generator=g, independent_noise=True)
    eps2 = torch.randn(y.shape, generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(got, reference(ref_net, y0, y, y, t, eps, 1.0, eps2=eps2))


def test_dream_lambda_and_loss_errors():
    proc = ShiftProcess(ShiftConfig.v1())
    lam = proc.lambda_t(torch.arange(15), 1.0)
    assert (lam.diff() > 0).all() and 0 < lam[0] < lam[-1] < 1
    torch.testing.assert_close(proc.lambda_t(torch.arange(15), 0.0), torch.ones(15, dtype=torch.float64))
    assert (proc.lambda_t(torch.arange(15), math.inf) == 0).all()
    y0, y = _pair()
    with pytest.raises(ConfigError):
        proc.loss(StandIn(), y0, y, y, -1.0)
    with pytest.raises(ConfigError):
        proc.loss(StandIn(), y0, y, y, 1.0, loss="huber")
    with pytest.raises(InputError):
        proc.loss(StandIn(), y0, y, y[:, :2], 1.0)
    g = torch.Generator().manual_seed(0)
    lv = proc.training_level(1000, g)
    assert lv.dtype == torch.float32 and set(lv.long().tolist()) == set(range(15))


# --- the pixel-unshuffle space ----------------------------------------------------------------------------------

def test_unshuffle_round_trip_layout_and_condition():
    space = PixelUnshuffle()
    hr = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(12)) * 2 - 1
    z = space.encode(hr)
    assert z.shape == (2, 48, 4, 6) and space.latent_channels == 48
    assert torch.equal(space.decode(z), hr)  # lossless
    # layout: channel c*16 + i*4 + j at (h, w) is pixel (4h + i, 4w + j) of channel c
    assert z[1, 2 * 16 + 3 * 4 + 1, 2, 5] == hr[1, 2, 4 * 2 + 3, 4 * 5 + 1]
    lr = torch.rand(2, 3, 4, 6) * 2 - 1
    up = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    assert torch.equal(space.condition(lr, up), lr)
    assert torch.equal(space.anchor(up), space.condition(lr, up, kind="anchor"))
    with pytest.raises(InputError, match="multiples of 4"):
        space.encode(hr[..., :15, :])
    with pytest.raises(InputError, match="latent"):
        space.condition(lr[..., :3, :], up)
    with pytest.raises(InputError):
        space.decode(z[:, :47])
    assert UnshuffleConfig.from_dict(UnshuffleConfig(factor=2).to_dict()) == UnshuffleConfig(factor=2)
    with pytest.raises(ConfigError):
        UnshuffleConfig.from_dict({"factor": 4, "channels": 3})


def test_shift_process_in_unshuffle_space_oracle():
    proc = ShiftProcess(ShiftConfig.v3(), space=PixelUnshuffle())
    hr = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(13)) * 1.8 - 0.9
    up = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(14)) * 2 - 1
    y0, y = proc.to_signal(hr, up), proc.anchor(up)
    assert y0.shape == y.shape == (1, 48, 2, 2)
    out = proc.sample(lambda x, t: y0, torch.randn(y.shape), y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(proc.from_signal(out, up), hr)


def test_dream_lambda_vp_rule_is_the_variance_preserving_rewrite():
    """The "vp" rule equals sqrt(1 - ᾱ'_t)^p of z_t = (x_t - η_t y) / c_t, measured by Monte Carlo on the kernel."""
    proc = ShiftProcess(ShiftConfig.v1())
    g = torch.Generator().manual_seed(3)
    n = 200_000
    y0 = torch.randn(n, dtype=torch.float64, generator=g)  # a unit-variance signal
    y = torch.randn(n, dtype=torch.float64, generator=g) * 0.3 + y0  # any anchor: z_t removes it
    eps = torch.randn(n, dtype=torch.float64, generator=g)
    k = proc.kappa
    for t in (0, 7, 14):
        eta = float(proc.etas[t])
        x_t = y0 + eta * (y - y0) + k * math.sqrt(eta) * eps
        c = math.sqrt((1 - eta) ** 2 + k * k * eta)
        z = (x_t - eta * y) / c
        assert abs(float(z.var()) - 1) < 0.02  # variance-preserving for a unit-variance y0
        noise_std = float((z - (1 - eta) / c * y0).std())  # the part of z that is not signal
        for p in (1.0, 2.0):
            assert abs(float(proc.lambda_t(t, p, "vp")[0]) - noise_std ** p) < 0.01
    lam_in, lam_vp = proc.lambda_t(torch.arange(15), 1.0, "input"), proc.lambda_t(torch.arange(15), 1.0, "vp")
    assert (lam_vp.diff() > 0).all() and (lam_vp < 1).all()
    rel = lam_vp / lam_in - 1  # vp rectifies more: by 0.04 % at t = 1, 15 % at t = 11, 12 % at t = T
    assert (rel >= 0).all() and 0.15 < float(rel.max()) < 0.16 and 0.11 < float(rel[-1]) < 0.13
    with pytest.raises(ConfigError):
        proc.lambda_t(3, 1.0, "sqrt")


def test_dream_lambda_rule_reaches_the_rectified_input():
    """loss(dream_lambda="vp") equals the hand-written Alg. 3 update with the vp λ_t."""
    proc = ShiftProcess(ShiftConfig.v1())
    y0, y = _pair()
    t = torch.tensor([14.0, 3.0])
    eps = torch.randn(y0.shape, generator=torch.Generator().manual_seed(5))
    net = StandIn().eval()
    with torch.no_grad():
        i = t.long()
        x_t = proc.q_sample(y0, y, i, eps)
        div = (proc.kappa ** 2 * proc.etas[i] + 1).sqrt().float().view(-1, 1, 1, 1)
        est = net(x_t / div, y, t)
        lam = proc.lambda_t(i, 1.0, "vp").float().view(-1, 1, 1, 1)
        x_hat = x_t + (1 - proc.etas[i]).float().view(-1, 1, 1, 1) * lam * (est - y0)
        want = ((net(x_hat / div, y, t) - y0) ** 2).flatten(1).mean(1)
        got = proc.loss(net, y0, y, y, 1.0, level=t, eps=eps, dream_lambda="vp")
        other = proc.loss(net, y0, y, y, 1.0, level=t, eps=eps, dream_lambda="input")
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, other)
