"""dreamsr: diffusion super-resolution trained with DREAM (Zhou et al., CVPR 2024).

Public API::

    from dreamsr import UNet, UNetConfig, Schedule, DiffusionConfig, dream_loss, ddim_sample, ddpm_sample
"""

from dreamsr.diffusion import DiffusionConfig, Schedule
from dreamsr.errors import DreamSRError
from dreamsr.losses import dream_loss, lambda_t
from dreamsr.samplers import ddim_sample, ddpm_sample
from dreamsr.families.sr3.unet import PRESETS, UNet, UNetConfig, preset

__version__ = "0.1.0"

__all__ = [
    "UNet", "UNetConfig", "PRESETS", "preset", "Schedule", "DiffusionConfig", "dream_loss", "lambda_t",
    "ddim_sample", "ddpm_sample", "DreamSRError", "__version__",
]
