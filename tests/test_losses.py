"""dream_loss against an independent computation of Algorithm 3 with a deterministic stand-in network."""

import math

import pytest
import torch
from torch import nn

from dreamsr.diffusion import Schedule
from dreamsr.errors import ConfigError
from dreamsr.losses import dream_loss, lambda_t
from tests._helpers import load_photo


class StandIn(nn.Module):
    """eps_theta = a*y_t + b*x0 + c*gamma (+ d while training, a stand-in for dropout); logs every call."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.7))
        self.b = nn.Parameter(torch.tensor(-0.3))
        self.c = nn.Parameter(torch.tensor(0.2))
        self.d = 0.05
        self.calls: list[tuple[bool, bool]] = []  # (training, grad enabled)

    def forward(self, y_t, x0, gamma):
        self.calls.append((self.training, torch.is_grad_enabled()))
        out = self.a * y_t + self.b * x0 + self.c * gamma[:, None, None, None]
        return out + self.d if self.training else out


def reference(net: StandIn, y0, x0, gamma, eps, p, eps2=None):
    """Algorithm 3 written out by hand, with Δε detached; returns the per-sample L1 loss."""
    g = gamma[:, None, None, None]
    sig = (1 - g * g).sqrt()
    y_t = g * y0 + sig * eps  # line 3
    a, b, c = net.a.detach(), net.b.detach(), net.c.detach()
    eps_eval = a * y_t + b * x0 + c * g  # the network as it samples: no dropout term, no gradient
    delta = eps - eps_eval  # line 4
    lam = torch.zeros_like(g) if math.isinf(p) else sig ** p
    if eps2 is None:
        y_hat = y_t + sig * lam * delta  # line 5 / Eq. (15)
        target = eps + lam * delta
    else:
        target = eps2 + lam * delta  # Eq. (13)
        y_hat = g * y0 + sig * target
    pred = net.a * y_hat + net.b * x0 + net.c * g + net.d  # line 6, training mode
    return (target - pred).abs().flatten(1).mean(1)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    y0 = torch.rand(3, 3, 5, 5, generator=g) * 2 - 1
    x0 = torch.rand(3, 3, 5, 5, generator=g) * 2 - 1
    eps = torch.randn(3, 3, 5, 5, generator=g)
    gamma = torch.tensor([0.05, 0.5, 0.95])
    return y0, x0, gamma, eps


@pytest.mark.parametrize("p", [0.0, 1.0, 2.0, math.inf])
def test_matches_algorithm_3_and_gradients(batch, p):
    y0, x0, gamma, eps = batch
    net = StandIn().train()
    loss = dream_loss(net, y0, x0, Schedule(), p, gamma=gamma, eps=eps)
    ref_net = StandIn().train()
    ref = reference(ref_net, y0, x0, gamma, eps, p)
    torch.testing.assert_close(loss, ref)
    loss.sum().backward()
    ref.sum().backward()
    for name in ("a", "b", "c"):  # the first pass contributes no gradient
        torch.testing.assert_close(getattr(net, name).grad, getattr(ref_net, name).grad)
    if math.isinf(p):
        assert net.calls == [(True, True)]  # standard training: exactly one forward pass
    else:
        # first pass: dropout off (eval) and no grad; second pass: training with grad; mode restored
        assert net.calls == [(False, False), (True, True)]
        assert net.training


def test_p0_is_drm_and_p_inf_is_standard(batch):
    y0, x0, gamma, eps = batch
    assert torch.equal(lambda_t(gamma, 0.0), torch.ones(3))
    assert torch.equal(lambda_t(gamma, math.inf), torch.zeros(3))
    torch.testing.assert_close(lambda_t(gamma, 2.0), 1 - gamma * gamma)
    # p = inf equals the plain SR3 objective |eps - eps_theta(y_t)|
    net = StandIn().train()
    loss = dream_loss(net, y0, x0, Schedule(), math.inf, gamma=gamma, eps=eps)
    y_t = Schedule.q_sample(y0, gamma, eps)
    torch.testing.assert_close(loss, (eps - net(y_t, x0, gamma)).abs().flatten(1).mean(1))


def test_independent_noise_is_eq_13(batch):
    y0, x0, gamma, eps = batch
    net = StandIn().train()
    loss = dream_loss(net, y0, x0, Schedule(), 1.0, gamma=gamma, eps=eps, independent_noise=True,
                      generator=torch.Generator().manual_seed(7))
    eps2 = torch.randn(y0.shape, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(loss, reference(StandIn().train(), y0, x0, gamma, eps, 1.0, eps2=eps2))


def test_l2_and_bad_arguments(batch):
    y0, x0, gamma, eps = batch
    net = StandIn()
    l1 = dream_loss(net, y0, x0, Schedule(), math.inf, gamma=gamma, eps=eps)
    l2 = dream_loss(net, y0, x0, Schedule(), math.inf, gamma=gamma, eps=eps, loss="l2")
    y_t = Schedule.q_sample(y0, gamma, eps)
    err = eps - net(y_t, x0, gamma)
    torch.testing.assert_close(l2, (err * err).flatten(1).mean(1))
    assert not torch.allclose(l1, l2)
    with pytest.raises(ConfigError):
        dream_loss(net, y0, x0, Schedule(), -1.0)
    with pytest.raises(ConfigError):
        dream_loss(net, y0, x0, Schedule(), 1.0, loss="huber")


def test_draws_are_reproducible_from_the_generator(batch):
    y0, x0, _, _ = batch
    net = StandIn()
    a = dream_loss(net, y0, x0, Schedule(), 1.0, generator=torch.Generator().manual_seed(5))
    b = dream_loss(net, y0, x0, Schedule(), 1.0, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)


def test_tiny_unet_overfits_real_photo_crops():
    """A tiny UNet fits one batch of 8 crops of a real photo with p=1: the loss falls by at least 5x."""
    from dreamsr.images import downsample, to_model, upsample
    from dreamsr.families.sr3.unet import UNet, preset

    astronaut = load_photo("astronaut.png")
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    crops = []
    for _ in range(8):
        y, x = (int(v) for v in torch.randint(0, astronaut.shape[1] - 32, (2,), generator=g))
        crops.append(astronaut[:, y:y + 32, x:x + 32])
    hr = to_model(torch.stack(crops))
    x0 = upsample(downsample(hr, 4), 4)
    model, sched = UNet(preset("tiny")), Schedule()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    gamma, eps = sched.sample_gamma(8, gen), torch.randn(hr.shape, generator=gen)
    losses = []
    for _ in range(300):
        loss = dream_loss(model, hr, x0, sched, 1.0, gamma=gamma, eps=eps).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] / min(losses[-10:]) >= 5.0, (losses[0], losses[-10:])
