"""ResShift's residual-shifting process (Yue et al., NeurIPS 2023; zsyOAOA/ResShift) with DREAM training.

Symbols (ResShift's, with the DREAM paper's y0 for the HR signal): ``y0`` the HR signal in the process's space
(ResShift's x0), ``y`` the anchor (the bicubic-upsampled LR in the same space; ResShift's y), ``e0 = y - y0`` the
residual, κ (``kappa``) the noise scale, η_1 < ... < η_T the shifting schedule, α_t = η_t - η_{t-1} (η_0 = 0).

- Forward marginal (``q_sample``):     q(x_t | y0, y) = N(x_t; y0 + η_t e0, κ² η_t I).
- Transition:                          q(x_t | x_{t-1}, y0, y) = N(x_t; x_{t-1} + α_t e0, κ² α_t I).
- Prior (``prior_sample``, η_T ≈ 1):   x_T = y + κ sqrt(η_T) ε.
- Posterior (Bayes; ``q_posterior_mean_variance``):
                                       q(x_{t-1} | x_t, y0, y) = N(η_{t-1}/η_t x_t + α_t/η_t y0,
                                                                    κ² η_{t-1} α_t / η_t I).
- Network: f_θ(x_t / sqrt(κ² η_t + 1), cond, t) -> ŷ0 (``predict_type: xstart``), t the 0-based *index*.
- Training: plain MSE ||f_θ(x_t) - y0||² (``weighted_mse: False``); sampling: all T ancestral steps.

Names in ``double backquotes`` are the release's (models/gaussian_diffusion.py); a bare "Eq. N" or "Alg. 3" is
the DREAM paper's.

Index convention: as in the released code, tables and the network's timestep are 0-based: index ``i`` in
{0..T-1} is the paper's step t = i + 1 (so ``etas[i]`` = η_{i+1} and the network sees ``float(i)``). The
``start`` option of :meth:`ShiftProcess.sample` counts 1-based steps t0 in {1..T}, as the Gaussian process does.

DREAM (Algorithm 3) for this x0-predicting process is derived in ``docs/resshift-dream.md``:
ŷ0 = y0 + λ_t (sg(f_θ(x_t)) - y0) (Eq. 12), x̂_t = x_t + (1 - η_t) λ_t (sg(f_θ(x_t)) - y0) (Eq. 13/15 with
ε' = ε), target y0, λ_t = (κ sqrt(η_t) / sqrt(κ² η_t + 1))^p.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import torch

from dreamsr.config import from_dict_strict
from dreamsr.errors import ConfigError, InputError
from dreamsr.processes.base import Generator, ModelFn, Net, StepCallback, X0Fn
from dreamsr.samplers import randn_like

__all__ = ["ShiftConfig", "ShiftProcess", "ShiftChain", "Space", "eta_schedule", "LAMBDA_RULES", "LambdaRule"]

InputScaling = Literal["std", "max", "none"]
# DREAM's λ_t for the shift kernel (ShiftProcess.lambda_t): the std-scaled input's noise, or the exact VP rewrite
LambdaRule = Literal["input", "vp"]
LAMBDA_RULES: tuple[str, ...] = ("input", "vp")


@dataclass(frozen=True)
class ShiftConfig:
    """The residual-shifting kernel. Stored in a checkpoint's metadata. Defaults: the v1 release (realsr x4).

    - ``num_steps`` T; ``kappa`` κ; ``power`` p of the exponential schedule; ``min_noise`` and ``etas_end`` set
      sqrt(η_1) = min(min_noise / κ, min_noise[, sqrt_eta1_cap]) and sqrt(η_T) = etas_end.
    - ``sqrt_eta1_cap``: the v1 code (@92ca23c) also caps sqrt(η_1) at sqrt(0.001); the HEAD code (v3) has the
      cap commented out. None: no cap.
    - ``input_scaling``: the network sees x_t / sqrt(κ² η_t + 1) ("std", the release with ``latent_flag`` True:
      latents of unit variance), x_t / (3 κ sqrt(η_t) + 1) ("max", the release with ``latent_flag`` False) or
      x_t ("none", ``normalize_input`` False).
    """

    num_steps: int = 15
    kappa: float = 2.0
    power: float = 0.3
    min_noise: float = 0.04
    etas_end: float = 0.99
    sqrt_eta1_cap: float | None = math.sqrt(0.001)
    input_scaling: InputScaling = "std"

    def __post_init__(self) -> None:
        if not isinstance(self.num_steps, int) or self.num_steps < 2:
            raise ConfigError(f"the shift process needs num_steps T >= 2, got {self.num_steps!r}")
        if not self.kappa > 0:
            raise ConfigError(f"kappa must be positive, got {self.kappa}")
        if not self.power > 0:
            raise ConfigError(f"the schedule power must be positive, got {self.power}")
        if not self.min_noise > 0:
            raise ConfigError(f"min_noise must be positive, got {self.min_noise}")
        if self.sqrt_eta1_cap is not None and not self.sqrt_eta1_cap > 0:
            raise ConfigError(f"sqrt_eta1_cap must be positive or None, got {self.sqrt_eta1_cap}")
        if not 0 < self.etas_end < 1:
            raise ConfigError(f"etas_end = sqrt(eta_T) must be in (0, 1), got {self.etas_end}")
        if not self.sqrt_eta1 < self.etas_end:
            raise ConfigError(f"sqrt(eta_1) = {self.sqrt_eta1:g} must be below etas_end = {self.etas_end:g}; "
                              "lower min_noise")
        if self.input_scaling not in ("std", "max", "none"):
            raise ConfigError(f"input_scaling must be 'std', 'max' or 'none', got {self.input_scaling!r}")

    @property
    def sqrt_eta1(self) -> float:
        """sqrt(η_1) = min(min_noise / κ, min_noise[, cap]) (gaussian_diffusion.get_named_eta_schedule)."""
        cands = [self.min_noise / self.kappa, self.min_noise]
        if self.sqrt_eta1_cap is not None:
            cands.append(self.sqrt_eta1_cap)
        return min(cands)

    @classmethod
    def v1(cls) -> "ShiftConfig":
        """The v1 release (resshift_realsrx4_s15 / bicsrx4_*_s15): T = 15, κ = 2, p = 0.3, min_noise 0.04."""
        return cls(num_steps=15, kappa=2.0, power=0.3, min_noise=0.04, etas_end=0.99,
                   sqrt_eta1_cap=math.sqrt(0.001))

    @classmethod
    def v3(cls) -> "ShiftConfig":
        """The v3 release (HEAD configs realsr_swinunet_realesrgan256_journal / bicx4_swinunet_lpips):
        T = 4, κ = 2, p = 0.3, min_noise 0.2, no sqrt(0.001) cap, so sqrt(η_1) = 0.1."""
        return cls(num_steps=4, kappa=2.0, power=0.3, min_noise=0.2, etas_end=0.99, sqrt_eta1_cap=None)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ShiftConfig":
        return from_dict_strict(cls, d)


def eta_schedule(config: ShiftConfig) -> torch.Tensor:
    """sqrt(η_t), t = 1..T, float64 [T]: the 'exponential' schedule of the release.

    sqrt(η_t) = sqrt(η_1) b^{(T-1) ((t-1)/(T-1))^p}, b = (sqrt(η_T) / sqrt(η_1))^{1/(T-1)}
    (``get_named_eta_schedule``).
    """
    T, s1 = config.num_steps, config.sqrt_eta1
    b = math.exp(math.log(config.etas_end / s1) / (T - 1))
    expo = torch.linspace(0, 1, T, dtype=torch.float64) ** config.power * (T - 1)
    return torch.full((T,), b, dtype=torch.float64) ** expo * s1


@dataclass(frozen=True)
class ShiftChain:
    """The K steps a sampler walks: ``timesteps`` [K] kept 0-based indices (increasing, the last one the start),
    ``etas`` [K] their trained η, ``etas_prev`` [K] the η of the previous kept step (0 before the first).

    Respacing keeps the trained η of the kept steps (as the release's SpacedDiffusion): the marginals
    q(x_t | y0, y) at kept steps are unchanged and the transition between kept steps has α = η - η_prev.
    """

    timesteps: torch.Tensor
    etas: torch.Tensor
    etas_prev: torch.Tensor

    def __len__(self) -> int:
        return int(self.timesteps.numel())


class Space(Protocol):
    """A first stage: ``encode`` HR-sized images [B, 3, H, W] in [-1, 1] to the signal space, ``decode`` back;
    ``bounded`` True when signal values are pixel values (clipping x̂0 to [-1, 1] is then valid)."""

    bounded: bool

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B] (any dtype/device) -> [B, 1, 1, 1] in ``like``'s dtype and device."""
    return v.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


class ShiftProcess:
    """ResShift's process over the signal space of ``space`` (None: pixels, the image itself).

    Every method takes per-sample 0-based indices ``t`` [B] (int64, or float holding integers) unless it says
    otherwise; tensors are NCHW float32.
    """

    name = "shift"
    prediction: Literal["x0"] = "x0"
    default_loss = "l2"  # the release's plain MSE to y0

    def __init__(self, config: ShiftConfig | None = None, space: Space | None = None) -> None:
        self.config = config or ShiftConfig()
        self.space = space
        self.kappa = float(self.config.kappa)
        self.sqrt_etas = eta_schedule(self.config)  # [T] float64, sqrt(η_1..η_T)
        self.etas = self.sqrt_etas ** 2
        self.etas_prev = torch.cat([torch.zeros(1, dtype=torch.float64), self.etas[:-1]])  # η_0 = 0
        self.alphas = self.etas - self.etas_prev  # α_t = η_t - η_{t-1}
        k2 = self.kappa ** 2
        self.posterior_variance = k2 * self.etas_prev / self.etas * self.alphas  # κ² η_{t-1} α_t / η_t
        # log-variance clipped at index 0 to the value at index 1, as the release (the variance there is 0)
        clipped = torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        self.posterior_log_variance_clipped = clipped.log()

    # --- the Process interface's bookkeeping ------------------------------------------------------------
    @property
    def chain(self) -> int:
        """T, the number of trained steps."""
        return self.config.num_steps

    @property
    def sampling_defaults(self) -> dict[str, Any]:
        """All T ancestral steps, as the release samples."""
        return {"steps": self.config.num_steps, "sampler": "ddpm"}

    def to_signal(self, hr: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """HR image [B, 3, H, W] in [-1, 1] -> y0 (its encoding; the image itself in pixel space)."""
        return hr if self.space is None else self.space.encode(hr)

    def from_signal(self, y0: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """y0 -> HR image (decoded; not clamped)."""
        return y0 if self.space is None else self.space.decode(y0)

    def anchor(self, up: torch.Tensor) -> torch.Tensor:
        """y: the bicubic-upsampled LR ``up`` in the signal space (ResShift: y = E(bicubic×4(LR)))."""
        return up if self.space is None else self.space.encode(up)

    def training_level(self, batch: int, generator: torch.Generator | None) -> torch.Tensor:
        """t ~ U{0..T-1} [batch] as float (ResShift's uniform sampler; the level the network sees), CPU draws."""
        return torch.randint(0, self.chain, (batch,), generator=generator).to(torch.float32)

    # --- the kernel -------------------------------------------------------------------------------------------
    def _index(self, t: torch.Tensor | int, batch: int) -> torch.Tensor:
        """Per-sample 0-based indices [B] int64 on the CPU, checked to be integers in {0..T-1}."""
        t = torch.as_tensor(t)
        if t.dim() == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise InputError(f"expected {batch} timesteps, got shape {tuple(t.shape)}")
        idx = t.detach().cpu().round().long()
        if t.is_floating_point() and not torch.equal(idx.to(t.dtype), t.detach().cpu()):
            raise InputError("shift-process timesteps are integer indices 0..T-1; got non-integer values")
        if idx.min() < 0 or idx.max() >= self.chain:
            raise InputError(f"shift-process timesteps must be in 0..{self.chain - 1}, got "
                             f"{int(idx.min())}..{int(idx.max())}")
        return idx

    def q_mean_variance(self, y0: torch.Tensor, y: torch.Tensor, t: torch.Tensor | int,
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """q(x_t | y0, y) = N(y0 + η_t (y - y0), κ² η_t I): (mean, variance [B,1,1,1])."""
        i = self._index(t, y0.shape[0])
        eta = _col(self.etas[i], y0)
        return y0 + eta * (y - y0), _col(self.kappa ** 2 * self.etas[i], y0)

    def q_sample(self, y0: torch.Tensor, y: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor) -> torch.Tensor:
        """x_t = y0 + η_t (y - y0) + κ sqrt(η_t) ε (the forward marginal, reparameterised)."""
        i = self._index(t, y0.shape[0])
        return y0 + _col(self.etas[i], y0) * (y - y0) + _col(self.kappa * self.sqrt_etas[i], y0) * eps

    def prior(self, y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_T = y + κ sqrt(η_T) ε (the release's ``prior_sample``)."""
        return y + self.kappa * float(self.sqrt_etas[-1]) * noise

    @staticmethod
    def _posterior(y0: torch.Tensor, x_t: torch.Tensor, eta: torch.Tensor, eta_prev: torch.Tensor,
                   kappa: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior between two levels η_prev < η ([B] float64): (mean, variance [B,1,1,1])."""
        alpha = eta - eta_prev
        mean = _col(eta_prev / eta, x_t) * x_t + _col(alpha / eta, x_t) * y0  # posterior mean
        return mean, _col(kappa ** 2 * eta_prev / eta * alpha, x_t)  # posterior variance

    def posterior(self, y0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q(x_{t-1} | x_t, y0, y) over the trained chain (the Bayes posterior; it does not depend on y).

        Returns (mean [B, C, H, W], variance [B,1,1,1], log-variance [B,1,1,1] clipped at index 0 to index 1's
        value as the release does; the variance itself is 0 there and the sampler adds no noise at index 0).
        """
        i = self._index(t, x_t.shape[0])
        mean, var = self._posterior(y0, x_t, self.etas[i], self.etas_prev[i], self.kappa)
        return mean, var, _col(self.posterior_log_variance_clipped[i], x_t)

    def scale_input(self, x_t: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The network's input: x_t / sqrt(κ² η_t + 1) ("std"; the release's ``_scale_input``)."""
        i = self._index(t, x_t.shape[0])
        return x_t / _col(self._input_divisor(self.etas[i]), x_t)

    def _input_divisor(self, eta: torch.Tensor) -> torch.Tensor:
        k = self.kappa
        if self.config.input_scaling == "std":
            return (k * k * eta + 1).sqrt()
        if self.config.input_scaling == "max":
            return 3 * k * eta.sqrt() + 1
        return torch.ones_like(eta)

    def lambda_t(self, t: torch.Tensor | int, p: float, rule: LambdaRule = "input") -> torch.Tensor:
        """DREAM's λ_t for this kernel, [B] float64 (Sec. 3.3, "Choice of λ_t"; docs/resshift-dream.md, Step 3).

        - ``"input"``: (κ sqrt(η_t) / sqrt(κ² η_t + 1))^p, the noise std of the network's (std-scaled) input for a
          unit-variance signal, as sqrt(1 - ᾱ_t) is for SR3's.
        - ``"vp"``: (κ sqrt(η_t) / c_t)^p with c_t = sqrt((1 - η_t)² + κ² η_t): the kernel rewritten as a
          variance-preserving process in y0, z_t = (x_t - η_t y) / c_t = sqrt(ᾱ'_t) y0 + sqrt(1 - ᾱ'_t) ε, so
          this is exactly sqrt(1 - ᾱ'_t)^p.

        Both increase in t and lie in (0, 1); p = 0 gives 1 (DRM), p = inf gives 0 (standard training).
        """
        if rule not in LAMBDA_RULES:
            raise ConfigError(f"the DREAM lambda rule must be one of {', '.join(LAMBDA_RULES)}, got {rule!r}")
        t_ = torch.as_tensor(t).reshape(-1)
        i = self._index(t_, t_.numel())
        if math.isinf(p):
            return torch.zeros(i.shape, dtype=torch.float64)
        k, eta = self.kappa, self.etas[i]
        noise = k * self.sqrt_etas[i]
        scale = (k * k * eta + 1).sqrt() if rule == "input" else ((1 - eta) ** 2 + k * k * eta).sqrt()
        return (noise / scale) ** p

    # --- sampling ---------------------------------------------------------------------------------------------
    def respace(self, steps: int | None = None, start: int | None = None) -> ShiftChain:
        """The chain a sampler walks: ``steps`` kept indices spread evenly over {0..t0-1}, always keeping the top
        t0 - 1 and 0 (``start`` = t0 in {1..T}, 1-based; default T); steps default: all of them.

        Unlike the release's ``space_timesteps`` (which keeps {0, T/K, ...} and drops T-1), the top is kept so a
        respaced sampler starts from the prior the network was trained at.
        """
        top = self.chain if start is None else int(start)
        if not 1 <= top <= self.chain:
            raise ConfigError(f"the shift process starts at a step in 1..{self.chain}, got {start}")
        k = top if steps is None else int(steps)
        if not 1 <= k <= top:
            raise ConfigError(f"a shift chain of {top} steps can be sampled in 1..{top} steps, got {steps}")
        if k == 1:
            idx = torch.tensor([top - 1], dtype=torch.long)
        else:
            idx = torch.unique(torch.linspace(0, top - 1, k, dtype=torch.float64).round().long())
        etas = self.etas[idx]
        return ShiftChain(timesteps=idx, etas=etas,
                          etas_prev=torch.cat([torch.zeros(1, dtype=torch.float64), etas[:-1]]))

    def sample(self, model_fn: ModelFn, noise: torch.Tensor, anchor: torch.Tensor, *, steps: int | None = None,
               sampler: str = "ddpm", generator: Generator = None, start: int | None = None,
               x0_fn: X0Fn | None = None, callback: StepCallback | None = None, clip: bool | None = None,
               **sampler_kw: Any) -> torch.Tensor:
        """Ancestral sampling of ResShift (its ``p_sample_loop``), returning y0 [B, C, H, W] in the signal space.

        Args:
            model_fn: ``model_fn(x_t_scaled, t) -> ŷ0``; x_t_scaled = x_t / sqrt(κ² η_t + 1) (see
                ``input_scaling``), t [B] float32 the trained 0-based index; tiling and cond bound inside.
            noise: ε ~ N(0, I) shaped like y0; anchor: y, same shape.
            steps: None or T: all trained steps (the release); 1 <= K < T: K kept trained steps (always the top
                and index 0; the network sees the trained indices, as the release's SpacedDiffusion).
            sampler: "ddpm" (ancestral; the only one, alias "ancestral").
            generator: the source of the per-step noise (one generator, or one per sample).
            start: None (x_T from the prior) or t0 in {1..T}: begin at x_{t0} = y + κ sqrt(η_{t0}) ε, the marginal
                q(x_{t0} | y0, y) with the anchor as the y0 estimate, and walk ``steps`` of t0..1.
            x0_fn: corrects each ŷ0 (after clipping) before the posterior step.
            callback: ``callback(i, K, x_{t-1}, ŷ0)`` after each step.
            clip: clip ŷ0 to [-1, 1]; None: when the signal space holds pixel values (pixels, unshuffle), as the
                release (``clip_denoised = autoencoder is None``).

        Each step: ŷ0 = f(x_t), x_{t-1} ~ N(η_{t-1}/η_t x_t + α_t/η_t ŷ0, κ² η_{t-1} α_t / η_t I), no
        noise at the last step (η_0 = 0 makes it return ŷ0 exactly).
        """
        if sampler not in ("ddpm", "ancestral"):
            raise ConfigError(f"the shift process samples with its ancestral sampler ('ddpm'), not {sampler!r}")
        if sampler_kw:
            raise ConfigError(f"the shift sampler takes no option(s) {', '.join(sorted(sampler_kw))}")
        if noise.shape != anchor.shape:
            raise InputError(f"noise {tuple(noise.shape)} and anchor {tuple(anchor.shape)} must have one shape")
        if clip is None:
            clip = self.space is None or bool(getattr(self.space, "bounded", False))
        chain = self.respace(steps, start)
        n = len(chain)
        y = anchor.float()
        top = int(chain.timesteps[-1])
        x = y + self.kappa * float(self.sqrt_etas[top]) * noise.float()  # the prior (t0 = T) / the marginal at t0
        b = x.shape[0]
        for i, k in enumerate(reversed(range(n))):
            eta, eta_prev = chain.etas[k].expand(b), chain.etas_prev[k].expand(b)
            level = torch.full((b,), float(chain.timesteps[k]), dtype=torch.float32, device=x.device)
            y0_hat = model_fn(x / _col(self._input_divisor(eta), x), level).float()
            if clip:
                y0_hat = y0_hat.clamp(-1, 1)
            if x0_fn is not None:
                y0_hat = x0_fn(y0_hat)
            mean, var = self._posterior(y0_hat, x, eta, eta_prev, self.kappa)
            if k > 0:  # no noise at the last step (the release's nonzero_mask)
                x = mean + var.sqrt() * randn_like(x, generator)
            else:
                x = mean
            if callback is not None:
                callback(i, n, x, y0_hat)
        return x

    # --- training ---------------------------------------------------------------------------------------------
    def loss(self, net: Net, y0: torch.Tensor, cond: torch.Tensor, anchor: torch.Tensor, p: float, *,
             level: torch.Tensor | None = None, eps: torch.Tensor | None = None,
             generator: torch.Generator | None = None, independent_noise: bool = False,
             loss: Literal["l2", "l1"] | None = None, dream_lambda: LambdaRule = "input") -> torch.Tensor:
        """Per-sample DREAM loss [B] for the x0-predicting shift process (Alg. 3, derived in
        docs/resshift-dream.md); p = inf is the release's training (one forward pass, MSE to y0).

        Args:
            net: ``net(x_t_scaled, cond, t) -> ŷ0`` (t [B] float32 0-based indices); if an ``nn.Module``, its
                first (rectification) pass runs in eval mode, the mode is restored after.
            y0: HR signal [B, C, H, W]; cond: the network's condition; anchor: y [B, C, H, W].
            p: λ_t exponent, >= 0 or inf (:meth:`lambda_t`).
            level: t [B] (0-based indices, e.g. from :meth:`training_level`); drawn U{0..T-1} when None.
            eps: ε [B, C, H, W]; drawn when None. generator: source of those draws.
            independent_noise: rectified input from a fresh ε' (Eq. 13) instead of ε' = ε (Eq. 15).
            loss: "l2" (the release's MSE, mean over C, H, W) or "l1".
            dream_lambda: the λ_t rule of :meth:`lambda_t` ("input" or "vp").
        Returns:
            [B] float32, differentiable through the second pass only.
        """
        loss = loss or self.default_loss
        if loss not in ("l1", "l2"):
            raise ConfigError(f"loss must be 'l1' or 'l2', got {loss!r}")
        if not (math.isinf(p) or p >= 0):
            raise ConfigError(f"p must be >= 0 or inf, got {p}")
        if anchor.shape != y0.shape:
            raise InputError(f"anchor {tuple(anchor.shape)} and y0 {tuple(y0.shape)} must have one shape")
        y0, y = y0.float(), anchor.float()
        b = y0.shape[0]
        if level is None:
            level = self.training_level(b, generator)  # Alg. 3 line 2: t ~ U
        i = self._index(level, b)
        t_net = i.to(device=y0.device, dtype=torch.float32)
        if eps is None:
            eps = randn_like(y0, generator)  # Alg. 3 line 2: ε ~ N(0, I)
        eps = eps.float()
        x_t = self.q_sample(y0, y, i, eps)  # Alg. 3 line 3 for the shift kernel
        div = _col(self._input_divisor(self.etas[i]), y0)

        if math.isinf(p):  # standard ResShift training: one forward pass
            x_hat = x_t
        else:
            module = net if isinstance(net, torch.nn.Module) else None
            was_training = module.training if module is not None else False
            if module is not None:
                module.train(False)  # the first pass is the network as it samples
            try:
                with torch.no_grad():
                    y0_est = net(x_t / div, cond, t_net).float()  # Alg. 3 line 4: sg(f_θ(x_t, t))
            finally:
                if module is not None:
                    module.train(was_training)
            lam = _col(self.lambda_t(i, p, dream_lambda), y0)
            if independent_noise:  # Eq. 12-13: x̂_t ~ q(x_t | ŷ0, y) with a fresh ε'
                y0_mix = y0 + lam * (y0_est - y0)  # Eq. 12
                x_hat = self.q_sample(y0_mix, y, i, randn_like(y0, generator))
            else:  # Eq. 15 analogue: x̂_t = x_t + (1 - η_t) λ_t (ŷ0_est - y0)
                x_hat = x_t + _col(1 - self.etas[i], y0) * lam * (y0_est - y0)
        pred = net(x_hat / div, cond, t_net).float()  # Alg. 3 line 6: the target stays y0
        err = pred - y0
        per = err * err if loss == "l2" else err.abs()
        return per.flatten(1).mean(dim=1)
