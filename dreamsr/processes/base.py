"""What the jobs need from a diffusion process (the Gaussian ε process of SR3/IDM, ResShift's shift kernel...).

The pipeline, training and bench reach a process only through this interface, so a new process is a new module
plus one entry in :data:`dreamsr.processes.PROCESSES`. Tensors are NCHW float32 in the process's *signal* space
(for pixel-space processes: images in [-1, 1], or a scaled residual).

- ``model_fn(y_t, level) -> prediction``: the network with its condition (and tiling) bound inside; ``level`` [B]
  is what the process conditions the network on (Gaussian: γ = sqrt(ᾱ_t); shift: the timestep t as a float) and
  the prediction is what the process's network predicts (``prediction``: "eps" or "x0").
- ``net(y_t, cond, level) -> prediction``: the raw network, for training (``loss``).
- ``up``: the bicubic-upsampled LR image at HR size in [-1, 1] (the classical estimate every process starts from).
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Protocol, Sequence

import torch

__all__ = ["Process", "ModelFn", "Net", "X0Fn", "StepCallback", "Generator"]

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Net = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
X0Fn = Callable[[torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]  # (step index, steps, y_t, y0_hat)
Generator = torch.Generator | Sequence[torch.Generator] | None


class Process(Protocol):
    """A diffusion process: forward kernel, training objective (DREAM, Alg. 3) and samplers."""

    name: str  # the key in PROCESSES and in a checkpoint's metadata
    prediction: Literal["eps", "x0"]  # what the network predicts
    default_loss: str  # the per-pixel loss of `loss` when none is given ("l1" | "l2")
    config: Any  # a frozen dataclass with to_dict()/from_dict(); stored in the checkpoint as "diffusion"

    @property
    def chain(self) -> int:
        """Number of trained steps T (what SamplingOptions.steps/start are checked against)."""

    @property
    def sampling_defaults(self) -> dict[str, Any]:
        """SamplingOptions fields this process samples with when neither the user nor the model says (e.g. the
        shift process: all T steps, ancestral); empty: SamplingOptions' own defaults."""

    def to_signal(self, hr: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """HR image [B, 3, H, W] in [-1, 1] (and its bicubic estimate ``up``) -> the diffused signal y0."""

    def from_signal(self, y0: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_signal` (not clamped)."""

    def anchor(self, up: torch.Tensor) -> torch.Tensor:
        """The signal that sampling starts from or shifts toward, from ``up`` alone (same shape as y0)."""

    def training_level(self, batch: int, generator: torch.Generator | None) -> torch.Tensor:
        """Levels [batch] drawn as training draws them (the CPU generator is the only source)."""

    def sample(self, model_fn: ModelFn, noise: torch.Tensor, anchor: torch.Tensor, *, steps: int,
               sampler: str = ..., generator: Generator = None, start: int | None = None,
               x0_fn: X0Fn | None = None, callback: StepCallback | None = None, **sampler_kw: Any) -> torch.Tensor:
        """Run the reverse process from ``noise`` (standard normal, shaped like y0) to y0 [B, C, H, W]."""

    def loss(self, net: Net, y0: torch.Tensor, cond: torch.Tensor, anchor: torch.Tensor, p: float, *,
             level: torch.Tensor | None = None, eps: torch.Tensor | None = None,
             generator: torch.Generator | None = None, **options: Any) -> torch.Tensor:
        """Per-sample DREAM loss [B] (p = inf: standard training with one forward pass)."""
