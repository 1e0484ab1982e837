"""The DREAM training objective (Algorithm 3 of the paper); p = inf is standard SR3 training (Algorithm 1)."""

from __future__ import annotations

import math
from typing import Literal, Protocol

import torch

from dreamsr.diffusion import Schedule, broadcast
from dreamsr.errors import ConfigError

__all__ = ["dream_loss", "lambda_t", "Denoiser"]


class Denoiser(Protocol):
    """Anything called as ``model(y_t, x0, gamma) -> eps`` with a ``training`` flag and ``train(mode)``."""

    training: bool

    def __call__(self, y_t: torch.Tensor, x0: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor: ...

    def train(self, mode: bool = True): ...


def lambda_t(gamma: torch.Tensor, p: float) -> torch.Tensor:
    """lambda_t = sqrt(1 - alpha_bar_t)^p (Sec. 3.3, "Choice of lambda_t"); p = 0 gives 1 (DRM), p = inf gives 0."""
    if math.isinf(p):
        return torch.zeros_like(gamma)
    return (1 - gamma * gamma).clamp_min(0).sqrt() ** p


def _randn(shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32).to(like.device)


def dream_loss(model: Denoiser, y0: torch.Tensor, x0: torch.Tensor, schedule: Schedule, p: float, *,
               generator: torch.Generator | None = None, gamma: torch.Tensor | None = None,
               eps: torch.Tensor | None = None, independent_noise: bool = False,
               loss: Literal["l1", "l2"] = "l1") -> torch.Tensor:
    """Per-sample DREAM loss, Algorithm 3.

    Args:
        model: the denoiser ``eps_theta(y_t, x0, gamma)``.
        y0: diffused signal [B, C, H, W] (HR image or scaled residual, roughly [-1, 1]).
        x0: the condition [B, C', H, W] (bicubic-upsampled LR in [-1, 1]).
        schedule: gives the training noise levels (SR3's continuous gamma).
        p: exponent of lambda_t = sqrt(1 - alpha_bar)^p; 0 = DRM, inf = standard training (one forward pass).
        generator: source of gamma and eps draws when they are not given.
        gamma, eps: optional fixed noise level [B] and noise [B, C, H, W] (tests, parity checks).
        independent_noise: draw a fresh eps' for the rectified input (Eq. 13) instead of reusing eps (Eq. 15).
        loss: "l1" (the paper) or "l2".

    Returns:
        loss per sample [B] (mean over C, H, W), differentiable through the second pass only.
    """
    if loss not in ("l1", "l2"):
        raise ConfigError(f"loss must be 'l1' or 'l2', got {loss!r}")
    if not (math.isinf(p) or p >= 0):
        raise ConfigError(f"p must be >= 0 or inf, got {p}")
    b = y0.shape[0]
    if gamma is None:
        gamma = schedule.sample_gamma(b, generator)  # Alg. 3 line 2 (continuous gamma, as SR3)
    gamma = gamma.to(device=y0.device, dtype=torch.float32)
    if eps is None:
        eps = _randn(y0.shape, y0, generator)  # Alg. 3 line 2
    y_t = Schedule.q_sample(y0, gamma, eps)  # Alg. 3 line 3, Eq. (3)

    if math.isinf(p):  # standard diffusion training, Alg. 1: one forward pass
        y_hat, target = y_t, eps
    else:
        was_training = model.training
        model.train(False)  # the first pass is the network as it samples: dropout off
        try:
            with torch.no_grad():
                eps_theta = model(y_t, x0, gamma).float()
        finally:
            model.train(was_training)
        delta = eps - eps_theta  # Alg. 3 line 4: Δε = ε − StopGradient(ε_θ(x0, y_t, t))
        lam = broadcast(lambda_t(gamma, p), y0)
        sigma = broadcast((1 - gamma * gamma).clamp_min(0).sqrt(), y0)
        if independent_noise:
            eps2 = _randn(y0.shape, y0, generator)
            target = eps2 + lam * delta
            y_hat = Schedule.q_sample(y0, gamma, target)  # Eq. (13)
        else:
            y_hat = y_t + sigma * lam * delta  # Alg. 3 line 5, Eq. (15)
            target = eps + lam * delta
    pred = model(y_hat, x0, gamma).float()  # Alg. 3 line 6
    err = target - pred
    per_elem = err.abs() if loss == "l1" else err * err
    return per_elem.flatten(1).mean(dim=1)
