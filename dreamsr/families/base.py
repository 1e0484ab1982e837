"""What the jobs need from a model family (SR3 today; IDM and ResShift next): its network and how it sees the LR.

A family is a plain value (:class:`Family`), listed in the plain dict :data:`dreamsr.families.FAMILIES`; the jobs
never branch on a family's name. The network of every family is called as ``net(y_t, cond, level)``:

- ``y_t`` [B, C, H, W]: the noisy sample in the process's signal space;
- ``cond``: the LR condition as the family wants it, from :meth:`Family.condition` (SR3: the bicubic-upsampled
  LR at the sample's size; a family with an LR encoder: the LR image itself);
- ``level`` [B]: what the process conditions on (Gaussian: γ = sqrt(ᾱ)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

import torch
from torch import nn

from dreamsr.errors import ConfigError

__all__ = ["Family"]


@dataclass(frozen=True)
class Family:
    """A model family: config type, network builder, presets and the layout of its condition."""

    name: str  # the key in FAMILIES and in a checkpoint's metadata
    config_type: Any  # frozen dataclass with to_dict()/from_dict() (strict) and a `size_multiple` property
    build: Callable[[Any], nn.Module]  # network from its config (random init; the caller loads weights)
    presets: Mapping[str, Any]  # named configs
    processes: tuple[str, ...] = ("gaussian",)  # the processes this family's network can serve
    # where the condition lives: "hr" = the bicubic upsample on the HR pixel grid, "lr" = the LR image on the LR
    # grid, "signal" = the LR image resized (bicubic) to the signal's grid (tiled like y_t)
    cond_grid: Literal["hr", "lr", "signal"] = "hr"
    # continuous-scale families: (min, max) output scale of a network config; None: only the checkpoint's scale
    scale_range: Callable[[Any], tuple[float, float]] | None = None
    # (lr_unit, hr_unit) that LR tile sizes/offsets must be multiples of at a scale, so every tile's output grid is
    # in phase with the whole image's; None: (1, scale) (integer scales, the pipeline pads tiles itself)
    tile_unit: Callable[[Any, float], tuple[int, int]] | None = None
    # the first stage (signal space: encode/decode) a built network carries; None: pixels
    space: Callable[[nn.Module], Any] | None = None
    # HR pixels per signal pixel along a side for a network config (pixels: 1)
    signal_factor: Callable[[Any], int] | None = None
    notes: str = field(default="", compare=False)  # one line for `dreamsr weights info`

    def config_from_dict(self, d: Mapping[str, Any]) -> Any:
        return self.config_type.from_dict(dict(d))

    def preset(self, name: str) -> Any:
        """The named config; ConfigError listing the presets otherwise."""
        try:
            return self.presets[name]
        except KeyError:
            raise ConfigError(f"unknown {self.name} preset {name!r}; choose one of "
                              f"{', '.join(self.presets)}") from None

    def condition(self, lr: torch.Tensor, up: torch.Tensor, signal_size: tuple[int, int] | None = None
                  ) -> torch.Tensor:
        """The network's condition from the LR image ``lr`` [B, 3, h, w] and its bicubic upsample ``up``
        [B, 3, H, W] (both [-1, 1]): ``up`` for an "hr" grid family, ``lr`` for an "lr" grid family, ``lr``
        resized to ``signal_size`` (bicubic; itself when the sizes agree) for a "signal" grid family."""
        if self.cond_grid == "hr":
            return up
        if self.cond_grid == "lr" or signal_size is None or tuple(lr.shape[-2:]) == tuple(signal_size):
            return lr
        from dreamsr.images import resize

        return resize(lr, tuple(signal_size))

    def space_of(self, network: nn.Module) -> Any:
        """The first stage ``network`` carries (``encode``/``decode``), or None for pixel space."""
        return None if self.space is None else self.space(network)

    def factor(self, config: Any) -> int:
        """HR pixels per signal pixel along a side (1: the process runs on pixels)."""
        return 1 if self.signal_factor is None else int(self.signal_factor(config))

    def size_multiple(self, config: Any) -> int:
        """The sample's sides must be multiples of this (tiles are padded to it)."""
        return int(config.size_multiple)

    def scales(self, config: Any, native: float) -> tuple[float, float]:
        """The output scales a network of ``config`` serves: its trained range, or just ``native``."""
        return (float(native), float(native)) if self.scale_range is None else self.scale_range(config)

    def check_scale(self, config: Any, native: float, scale: float) -> None:
        """ConfigError naming the range unless ``scale`` is one this network serves."""
        lo, hi = self.scales(config, native)
        if not (math.isfinite(scale) and lo - 1e-9 <= scale <= hi + 1e-9):
            what = f"x{lo:g} to x{hi:g}" if lo != hi else f"x{lo:g} only"
            raise ConfigError(f"scale x{scale:g} is outside what this {self.name} model was trained for ({what})")

    def unit(self, config: Any, scale: float) -> tuple[int, int]:
        """(lr_unit, hr_unit) of the tile alignment at ``scale`` (see ``tile_unit``)."""
        if self.tile_unit is not None:
            return self.tile_unit(config, scale)
        if float(scale) != int(scale):
            raise ConfigError(f"the {self.name} family samples integer scales only, got x{scale:g}")
        return 1, int(scale)

    def check_process(self, process: str) -> None:
        if process not in self.processes:
            raise ConfigError(f"the {self.name} family does not run the {process!r} process "
                              f"(it runs {', '.join(self.processes)})")
