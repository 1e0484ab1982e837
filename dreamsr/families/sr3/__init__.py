"""The SR3 family (Saharia et al. 2021; the DREAM paper's first backbone): a conditional UNet on the bicubic
upsample of the LR image, at the output resolution. Network: :mod:`dreamsr.families.sr3.unet`."""

from __future__ import annotations

from dreamsr.families.base import Family
from dreamsr.families.sr3.unet import PRESETS, UNet, UNetConfig

__all__ = ["FAMILY"]

FAMILY = Family(name="sr3", config_type=UNetConfig, build=UNet, presets=PRESETS, processes=("gaussian",),
                cond_grid="hr", notes="SR3 UNet on the bicubic-upsampled LR (concatenated to y_t)")
