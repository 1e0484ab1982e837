"""Image files <-> tensors, bicubic resizing and colour conversions.

Conventions: tensors are float32 CHW (or NCHW) in [0, 1] at the edges of the library; the model path works
in [-1, 1] (``to_model`` / ``from_model``). Bicubic resizing is PyTorch's bicubic with antialiasing, the
one LR synthesis used everywhere (training, eval, consistency).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from dreamsr.errors import InputError

__all__ = ["load_rgb", "resize", "downsample", "upsample", "rgb_to_y", "to_model", "from_model"]


def load_rgb(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file to float32 RGB [3, H, W] in [0, 1] (EXIF orientation applied, alpha dropped).

    Raises InputError with the file name when the file cannot be decoded.
    """
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(f"{path}: cannot read image ({err})") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize with antialiasing (when shrinking) of [C,H,W] or [N,C,H,W] float to ``size`` = (H, W).

    Values are not clamped (bicubic overshoots slightly); callers clamp where a valid image is needed.
    """
    squeeze = x.dim() == 3
    x4 = x.unsqueeze(0) if squeeze else x
    h, w = x4.shape[-2:]
    if (h, w) == tuple(size):
        out = x4.clone()
    else:
        shrink = size[0] < h or size[1] < w
        out = F.interpolate(x4.float(), size=size, mode="bicubic", align_corners=False, antialias=shrink)
    return out.squeeze(0) if squeeze else out


def downsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """HR -> LR by antialiased bicubic; H and W must be multiples of ``scale``."""
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"size {h}x{w} is not a multiple of scale {scale}")
    return resize(x, (h // scale, w // scale))


def upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """LR -> HR size by bicubic (the SR3 condition)."""
    h, w = x.shape[-2:]
    return resize(x, (h * scale, w * scale))


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of RGB in [0, 1]: Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255 (MATLAB rgb2ycbcr).

    Accepts [3,H,W] or [N,3,H,W]; returns [1,H,W] or [N,1,H,W] in [16/255, 235/255].
    """
    c = -3
    r, g, b = x.unbind(c)
    y = (16.0 + 65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    return y.unsqueeze(c)


def to_model(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1]."""
    return x * 2 - 1


def from_model(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((x + 1) / 2).clamp(0, 1)
