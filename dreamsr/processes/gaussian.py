"""The Gaussian ε-prediction process of SR3 and the DREAM paper (Sec. 3.1), on the continuous γ = sqrt(ᾱ).

A thin adapter of :class:`dreamsr.diffusion.Schedule` (Eq. 1-9, respacing), :mod:`dreamsr.samplers` (Alg. 2,
DDIM) and :func:`dreamsr.losses.dream_loss` (Alg. 3) to the :class:`~dreamsr.processes.base.Process` interface.
What is diffused is :attr:`DiffusionConfig.target`: the HR image (SR3) or the scaled residual HR - bicubic.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from dreamsr.diffusion import DiffusionConfig, Schedule
from dreamsr.errors import ConfigError
from dreamsr.losses import dream_loss
from dreamsr.processes.base import Generator, ModelFn, Net, StepCallback, X0Fn
from dreamsr.samplers import SAMPLERS

__all__ = ["GaussianProcess"]


class GaussianProcess:
    """SR3's process: y_t = γ y0 + sqrt(1-γ²) ε (Eq. 3), the network predicts ε, DDIM/DDPM sampling."""

    name = "gaussian"
    prediction: Literal["eps"] = "eps"
    default_loss = "l1"  # the paper's (SR3's) L1 on ε

    def __init__(self, config: DiffusionConfig | None = None, space: Any = None) -> None:
        """``space``: a first stage (``encode``/``decode``, ``bounded``) to diffuse in, as the DREAM paper's
        ResShift variant (a Gaussian ε process in the VQ-f4 latent); None: pixels. A space needs the image target."""
        self.config = config or DiffusionConfig()
        self.schedule = Schedule(self.config)
        self.space = space
        if space is not None and self.config.target != "image":
            raise ConfigError("a Gaussian process in a first stage's space diffuses the image target only")

    @property
    def chain(self) -> int:
        return self.schedule.T

    @property
    def sampling_defaults(self) -> dict[str, Any]:
        return {}  # SamplingOptions' defaults (respaced over the trained chain)

    def to_signal(self, hr: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        if self.space is not None:
            return self.space.encode(hr)
        return self.config.to_target(hr, up)

    def from_signal(self, y0: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        if self.space is not None:
            return self.space.decode(y0)
        return self.config.from_target(y0, up)

    def anchor(self, up: torch.Tensor) -> torch.Tensor:
        """A truncated start noises the bicubic estimate: image target -> ``up``; residual target -> zeros."""
        return self.to_signal(up, up)

    def training_level(self, batch: int, generator: torch.Generator | None) -> torch.Tensor:
        return self.schedule.sample_gamma(batch, generator)  # Alg. 3 line 2, SR3's continuous γ

    def sample(self, model_fn: ModelFn, noise: torch.Tensor, anchor: torch.Tensor, *, steps: int,
               sampler: str = "ddim", generator: Generator = None, start: int | None = None,
               x0_fn: X0Fn | None = None, callback: StepCallback | None = None, clip: bool = True,
               **sampler_kw: Any) -> torch.Tensor:
        """``steps`` respaced DDIM/DDPM steps (from trained step ``start`` with ``anchor`` noised to it, Eq. 3)."""
        if sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        clip = clip and (self.space is None or bool(self.space.bounded))  # never clip an unbounded latent
        return SAMPLERS[sampler](model_fn, noise, self.schedule, steps, generator=generator, clip=clip, start=start,
                                 init=anchor if start is not None else None, x0_fn=x0_fn, callback=callback,
                                 **sampler_kw)

    def loss(self, net: Net, y0: torch.Tensor, cond: torch.Tensor, anchor: torch.Tensor, p: float, *,
             level: torch.Tensor | None = None, eps: torch.Tensor | None = None,
             generator: torch.Generator | None = None, **options: Any) -> torch.Tensor:
        """Alg. 3 (:func:`dreamsr.losses.dream_loss`); ``options``: ``independent_noise``, ``loss`` ("l1"|"l2"),
        ``dream_lambda`` ("input" or "vp": this process is variance-preserving, so both are sqrt(1 - ᾱ_t)^p)."""
        rule = options.pop("dream_lambda", "input")
        if rule not in ("input", "vp"):
            raise ConfigError(f"the DREAM lambda rule must be input or vp, got {rule!r}")
        options["loss"] = options.get("loss") or self.default_loss
        return dream_loss(net, y0, cond, self.schedule, p, generator=generator, gamma=level, eps=eps, **options)
