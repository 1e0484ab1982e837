"""dreamsr: diffusion super-resolution trained with DREAM (Zhou et al., CVPR 2024).

Public API::

    from dreamsr import UNet, UNetConfig, Schedule, DiffusionConfig, dream_loss, ddim_sample, ddpm_sample

The names are loaded on first use (PEP 562), so ``import dreamsr`` and the command line start without importing
torch: the CLI chooses torch's threads and their waiting behaviour first (:mod:`dreamsr.threads`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dreamsr.errors import DreamSRError

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "DiffusionConfig": "dreamsr.diffusion", "Schedule": "dreamsr.diffusion",
    "dream_loss": "dreamsr.losses", "lambda_t": "dreamsr.losses",
    "ddim_sample": "dreamsr.samplers", "ddpm_sample": "dreamsr.samplers",
    "PRESETS": "dreamsr.families.sr3.unet", "UNet": "dreamsr.families.sr3.unet",
    "UNetConfig": "dreamsr.families.sr3.unet", "preset": "dreamsr.families.sr3.unet",
}

__all__ = [
    "UNet", "UNetConfig", "PRESETS", "preset", "Schedule", "DiffusionConfig", "dream_loss", "lambda_t",
    "ddim_sample", "ddpm_sample", "DreamSRError", "__version__",
]

if TYPE_CHECKING:
    from dreamsr.diffusion import DiffusionConfig, Schedule
    from dreamsr.families.sr3.unet import PRESETS, UNet, UNetConfig, preset
    from dreamsr.losses import dream_loss, lambda_t
    from dreamsr.samplers import ddim_sample, ddpm_sample


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dreamsr' has no attribute {name!r}")
