"""The ResShift family (Yue et al., NeurIPS 2023; the DREAM paper's third system): a Swin-UNet that predicts x0 in
a first stage's signal space, conditioned on the LR image at the signal's size.

Three signal spaces, named in the checkpoint (``ResShiftConfig.first_stage``):

- ``pixel``: the HR image itself (condition: the bicubic-upsampled LR at HR size);
- ``unshuffle``: a lossless, weight-free x4 pixel-unshuffle (48 channels at LR resolution for x4);
- ``vqf4``: the release's VQ-f4 autoencoder (3 latent channels at H/4); its weights travel in the checkpoint as
  ``first_stage.*`` and are frozen.

The network is :class:`ResShiftNet`; its ``unet.*`` tensors are the release's UNet
(:mod:`dreamsr.families.resshift.network`), converted by :mod:`dreamsr.converters.resshift`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

import torch
from torch import nn

from dreamsr.config import from_dict_strict
from dreamsr.errors import ConfigError
from dreamsr.families.base import Family
from dreamsr.families.resshift.network import PRESETS as UNET_PRESETS
from dreamsr.families.resshift.network import ResShiftUNet, ResShiftUNetConfig
from dreamsr.first_stages.unshuffle import PixelUnshuffle, UnshuffleConfig
from dreamsr.first_stages.vqf4 import VQF4, VQF4Config

__all__ = ["FAMILY", "ResShiftConfig", "ResShiftNet", "PRESETS", "FIRST_STAGES"]

FirstStage = Literal["pixel", "unshuffle", "vqf4"]
FIRST_STAGES: tuple[str, ...] = ("pixel", "unshuffle", "vqf4")


@dataclass(frozen=True)
class ResShiftConfig:
    """A ResShift network: its UNet and the first stage (signal space) it runs in."""

    unet: ResShiftUNetConfig  # in_channels/out_channels = the signal's channels; cond_channels = 3 (the LR image)
    first_stage: FirstStage = "unshuffle"  # pixel | unshuffle | vqf4
    factor: int = 4  # HR pixels per signal pixel along a side for unshuffle/vqf4 (1 for pixel)
    vqf4: VQF4Config | None = None  # the autoencoder's shape when first_stage == "vqf4"

    def __post_init__(self) -> None:
        if isinstance(self.unet, Mapping):
            object.__setattr__(self, "unet", ResShiftUNetConfig.from_dict(dict(self.unet)))
        if isinstance(self.vqf4, Mapping):
            object.__setattr__(self, "vqf4", VQF4Config.from_dict(dict(self.vqf4)))
        if self.first_stage not in FIRST_STAGES:
            raise ConfigError(f"first_stage must be one of {', '.join(FIRST_STAGES)}, got {self.first_stage!r}")
        if self.first_stage == "pixel" and self.factor != 1:
            raise ConfigError("the pixel first stage has factor 1")
        if (self.first_stage == "vqf4") != (self.vqf4 is not None):
            raise ConfigError("a vqf4 config is needed exactly when first_stage is 'vqf4'")
        want = self.signal_channels
        if self.unet.in_channels != want or self.unet.out_channels != want:
            raise ConfigError(f"the {self.first_stage} space has {want} channels; the UNet has "
                              f"{self.unet.in_channels} in / {self.unet.out_channels} out")
        if self.unet.cond_channels != 3:
            raise ConfigError(f"the UNet's condition is the RGB LR image (3 channels), got {self.unet.cond_channels}")

    @property
    def signal_channels(self) -> int:
        if self.first_stage == "unshuffle":
            return 3 * self.factor ** 2
        if self.first_stage == "vqf4":
            assert self.vqf4 is not None
            return int(self.vqf4.embed_dim)
        return 3

    @property
    def size_multiple(self) -> int:
        """Signal-space sides must be multiples of this (tiles are padded to it)."""
        return int(self.unet.size_multiple)

    def to_dict(self) -> dict:
        return {"unet": self.unet.to_dict(), "first_stage": self.first_stage, "factor": self.factor,
                "vqf4": None if self.vqf4 is None else self.vqf4.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ResShiftConfig":
        return from_dict_strict(cls, d)


class ResShiftNet(nn.Module):
    """``forward(x_t, cond, t) -> x̂0``: the UNet on the (already input-scaled) signal ``x_t`` [B, C, h, w] and the
    LR condition ``cond`` [B, 3, h, w] at the signal's size; ``t`` [B] float. ``first_stage`` is the signal space
    (``encode``/``decode``), frozen; ``None`` for pixels."""

    def __init__(self, config: ResShiftConfig) -> None:
        super().__init__()
        self.config = config
        self.unet = ResShiftUNet(config.unet)
        self.first_stage: Any = None
        if config.first_stage == "vqf4":
            assert config.vqf4 is not None
            self.first_stage = VQF4(config.vqf4).requires_grad_(False).eval()
        elif config.first_stage == "unshuffle":
            self.first_stage = PixelUnshuffle(UnshuffleConfig(factor=config.factor))  # weight-free

    def train(self, mode: bool = True) -> "ResShiftNet":
        super().train(mode)
        if isinstance(self.first_stage, nn.Module):
            self.first_stage.eval()  # a frozen autoencoder stays in eval mode
        return self

    def forward(self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x_t, cond, t)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())


def _small(first_stage: FirstStage, unet: str = "small") -> ResShiftConfig:
    ch = {"pixel": 3, "unshuffle": 48}[first_stage]
    return ResShiftConfig(unet=UNET_PRESETS[unet].__class__(**{**UNET_PRESETS[unet].to_dict(), "in_channels": ch,
                                                                 "out_channels": ch}),
                          first_stage=first_stage, factor=1 if first_stage == "pixel" else 4)


PRESETS: dict[str, ResShiftConfig] = {
    # the released v1 UNet in the VQ-f4 latent (118.6 M + 55.3 M parameters)
    "v1": ResShiftConfig(unet=UNET_PRESETS["v1"], first_stage="vqf4", factor=4, vqf4=VQF4Config()),
    # CPU-sized models in the weight-free spaces
    "small": _small("unshuffle"),
    "small-pixel": _small("pixel"),
    "tiny": _small("unshuffle", "tiny"),
    "tiny-pixel": _small("pixel", "tiny"),
}


def _space(network: nn.Module) -> Any:
    return getattr(network, "first_stage", None)


def _signal_factor(config: ResShiftConfig) -> int:
    return 1 if config.first_stage == "pixel" else config.factor


FAMILY = Family(name="resshift", config_type=ResShiftConfig, build=ResShiftNet, presets=PRESETS,
                processes=("shift", "gaussian"), cond_grid="signal", space=_space, signal_factor=_signal_factor,
                notes="ResShift Swin-UNet predicting x0 in a pixel, unshuffle or VQ-f4 space")
