"""Samplers: DDPM ancestral (Algorithm 2) and DDIM (Song et al. 2021), over any respaced step count.

Both share one signature, as k-diffusion's samplers do::

    sampler(eps_fn, noise, schedule, steps, *, generator=None, eta=..., clip=True,
            start=None, init=None, x0_fn=None, callback=None) -> y0

``eps_fn(y_t, gamma) -> eps`` is the only way the network is called (y_t [B, C, H, W] float32, gamma [B]
float32 = sqrt(alpha_bar)); tiling, autocast and the condition live inside it. Nothing here prints.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from dreamsr.diffusion import Respaced, Schedule
from dreamsr.errors import ConfigError

__all__ = ["ddpm_sample", "ddim_sample", "SAMPLERS", "randn_like", "EpsFn", "X0Fn", "Callback"]

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
X0Fn = Callable[[torch.Tensor], torch.Tensor]
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]  # (step index, total, y_t, y0_hat)
Generator = torch.Generator | Sequence[torch.Generator] | None


def randn_like(x: torch.Tensor, generator: Generator) -> torch.Tensor:
    """Standard normal noise shaped like ``x`` (float32, on x's device).

    ``generator`` may be one generator, or one per batch element (so a sample's noise does not depend on
    how many samples share the batch, as EDM's StackedRandomGenerator).
    """
    if generator is None or isinstance(generator, torch.Generator):
        dev = generator.device if generator is not None else x.device
        return torch.randn(x.shape, generator=generator, device=dev, dtype=torch.float32).to(x.device)
    if len(generator) != x.shape[0]:
        raise ConfigError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
    return torch.stack([torch.randn(x.shape[1:], generator=g, device=g.device, dtype=torch.float32)
                        for g in generator]).to(x.device)


def _prepare(noise: torch.Tensor, schedule: Schedule, steps: int, start: int | None,
             init: torch.Tensor | None) -> tuple[Respaced, torch.Tensor]:
    """Respace the schedule and build the first y: pure noise, or ``init`` noised to the start level."""
    sched = schedule.respace(steps, start)
    noise = noise.float()
    if start is None:
        return sched, noise  # Alg. 2 line 1: y_T ~ N(0, I)
    if init is None:
        raise ConfigError("a truncated start needs `init`, the signal to noise to the start level")
    gamma0 = sched.alpha_bar[-1:].sqrt().float().expand(noise.shape[0]).to(noise.device)
    return sched, Schedule.q_sample(init.float(), gamma0, noise)  # Eq. (3) at t0


def _predict(eps_fn: EpsFn, y: torch.Tensor, ab: float, clip: bool, x0_fn: X0Fn | None,
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Network call -> (y0_hat, eps_hat), with y0_hat clipped to [-1, 1] and optionally corrected by x0_fn;
    eps_hat is recomputed from the final y0_hat so the step is self-consistent."""
    gamma = torch.full((y.shape[0],), ab ** 0.5, dtype=torch.float32, device=y.device)
    eps = eps_fn(y, gamma).float()
    y0_hat = Schedule.predict_y0(y, eps, gamma)  # Eq. (8)
    if clip or x0_fn is not None:
        if clip:
            y0_hat = y0_hat.clamp(-1, 1)
        if x0_fn is not None:
            y0_hat = x0_fn(y0_hat)
        eps = Schedule.predict_eps(y, y0_hat, gamma)
    return y0_hat, eps


def ddpm_sample(eps_fn: EpsFn, noise: torch.Tensor, schedule: Schedule, steps: int, *,
                generator: Generator = None, eta: float = 1.0, clip: bool = True, start: int | None = None,
                init: torch.Tensor | None = None, x0_fn: X0Fn | None = None,
                callback: Callback | None = None) -> torch.Tensor:
    """Ancestral DDPM sampling (Algorithm 2) over ``steps`` respaced steps, posterior variance beta-tilde.

    Each step draws y_{t-1} ~ q(y_{t-1} | y_t, y0_hat) (Eq. 4, 7), y0_hat from Eq. (8), clipped to [-1, 1].
    ``eta`` scales the posterior standard deviation (1 = DDPM); ``start``/``init`` begin at trained step
    ``start`` from ``init`` noised to that level (truncated start); ``x0_fn`` corrects each y0_hat
    (e.g. LR back-projection). Returns y0 [B, C, H, W] float32.
    """
    sched, y = _prepare(noise, schedule, steps, start, init)
    n = len(sched)
    for i, k in enumerate(reversed(range(n))):  # Alg. 2 line 2: t = T .. 1
        ab, abp = float(sched.alpha_bar[k]), float(sched.alpha_bar_prev[k])
        y0_hat, _ = _predict(eps_fn, y, ab, clip, x0_fn)
        mean, var = Schedule.posterior(y0_hat, y, torch.tensor([ab], dtype=torch.float64),
                                       torch.tensor([abp], dtype=torch.float64))
        if k > 0:  # Alg. 2 line 3: z ~ N(0, I) if t > 1 else z = 0
            y = mean + eta * var.sqrt() * randn_like(y, generator)
        else:
            y = mean
        if callback is not None:
            callback(i, n, y, y0_hat)
    return y


def ddim_sample(eps_fn: EpsFn, noise: torch.Tensor, schedule: Schedule, steps: int, *,
                generator: Generator = None, eta: float = 0.0, clip: bool = True, start: int | None = None,
                init: torch.Tensor | None = None, x0_fn: X0Fn | None = None,
                callback: Callback | None = None) -> torch.Tensor:
    """DDIM sampling (Song et al. 2021, Eq. 12) over ``steps`` respaced steps; eta = 0 is deterministic.

    y_prev = sqrt(ab_prev) y0_hat + sqrt(1 - ab_prev - sigma^2) eps_hat + sigma z, with
    sigma = eta sqrt((1 - ab_prev) / (1 - ab)) sqrt(1 - ab / ab_prev). Other arguments as :func:`ddpm_sample`.
    """
    if eta < 0:
        raise ConfigError(f"eta must be >= 0, got {eta}")
    sched, y = _prepare(noise, schedule, steps, start, init)
    n = len(sched)
    for i, k in enumerate(reversed(range(n))):
        ab, abp = float(sched.alpha_bar[k]), float(sched.alpha_bar_prev[k])
        y0_hat, eps = _predict(eps_fn, y, ab, clip, x0_fn)
        sigma = eta * ((1 - abp) / (1 - ab) * (1 - ab / abp)) ** 0.5
        y = abp ** 0.5 * y0_hat + max(1 - abp - sigma ** 2, 0.0) ** 0.5 * eps
        if sigma > 0 and k > 0:
            y = y + sigma * randn_like(y, generator)
        if callback is not None:
            callback(i, n, y, y0_hat)
    return y


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"ddpm": ddpm_sample, "ddim": ddim_sample}
