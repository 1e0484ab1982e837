"""A lossless, weight-free x``f`` pixel-unshuffle space (issue 19, space (b)).

``encode`` folds every f x f pixel block into channels (``F.pixel_unshuffle``): an HR-sized image [B, 3, H, W]
becomes [B, 3 f², H/f, W/f] (f = 4: 48 channels at LR resolution), so a process runs at 1/f² of the pixel positions.
``decode`` is the exact inverse (``F.pixel_shuffle``); both are permutations of the values, so the round trip is
bit-exact and the values keep the pixels' range ([-1, 1] for images in the model path).

Channel layout (that of ``F.pixel_unshuffle``): latent channel ``c * f² + i * f + j`` at (h, w) holds pixel
(f h + i, f w + j) of image channel ``c``.

Where the LR image sits: at scale f the latent grid *is* the LR grid (H/f = h), so

- the kernel's anchor y (ResShift: y = E(bicubic×f(LR))) is ``encode(up)``, ``up`` the bicubic-upsampled LR at HR
  size in [-1, 1] (:meth:`PixelUnshuffle.anchor`);
- the network's condition is the LR image itself, [B, 3, h, w] in [-1, 1], concatenated to the latent as the
  released ResShift UNet does with its LR pixels (``cond_lq=True, lq_size == image_size``)
  (:meth:`PixelUnshuffle.condition`, ``kind="lr"``); ``kind="anchor"`` gives the encoded bicubic instead
  ([B, 3 f², h, w], the "LR latent" reading of the DREAM paper, resshift.md ambiguity 2).

Tiling: ``encode``/``decode`` act on disjoint f x f blocks, so they commute with any tiling whose HR tile origins
are multiples of f (a latent tile at (r, c) of size s is the encoding of the HR tile at (f r, f c) of size f s).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from dreamsr.config import from_dict_strict
from dreamsr.errors import ConfigError, InputError

__all__ = ["UnshuffleConfig", "PixelUnshuffle"]


@dataclass(frozen=True)
class UnshuffleConfig:
    """The unshuffle space: ``factor`` f (the SR scale, 4) and the image channels it folds (3)."""

    factor: int = 4
    image_channels: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.factor, int) or self.factor < 1:
            raise ConfigError(f"unshuffle factor must be a positive integer, got {self.factor!r}")
        if not isinstance(self.image_channels, int) or self.image_channels < 1:
            raise ConfigError(f"image_channels must be a positive integer, got {self.image_channels!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UnshuffleConfig":
        return from_dict_strict(cls, d)


class PixelUnshuffle:
    """The x f pixel-unshuffle first stage. Stateless and weight-free (not an ``nn.Module``: nothing to save)."""

    name = "unshuffle"
    bounded = True  # latent values are pixel values: clipping x̂0 to [-1, 1] is valid, as in pixel space

    def __init__(self, config: UnshuffleConfig | None = None) -> None:
        self.config = config or UnshuffleConfig()

    @property
    def factor(self) -> int:
        """Spatial downscale f of the latent (HR size / latent size)."""
        return self.config.factor

    @property
    def latent_channels(self) -> int:
        """Channels of the latent: image_channels · f² (48 for RGB at f = 4)."""
        return self.config.image_channels * self.config.factor ** 2

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """Latent (h, w) of an HR image of ``height`` x ``width``; both must be multiples of f."""
        f = self.factor
        if height % f or width % f:
            raise InputError(f"the x{f} unshuffle space needs an image whose sides are multiples of {f}, "
                             f"got {height}x{width}; pad or crop it first")
        return height // f, width // f

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """HR-sized image [B, C, H, W] -> latent [B, C f², H/f, W/f] (same dtype and values, permuted)."""
        if x.dim() != 4 or x.shape[1] != self.config.image_channels:
            raise InputError(f"unshuffle encode expects [B, {self.config.image_channels}, H, W], "
                             f"got {tuple(x.shape)}")
        self.latent_size(*x.shape[-2:])
        return F.pixel_unshuffle(x, self.factor)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent [B, C f², h, w] -> image [B, C, f h, f w]; the exact inverse of :meth:`encode`."""
        if z.dim() != 4 or z.shape[1] != self.latent_channels:
            raise InputError(f"unshuffle decode expects [B, {self.latent_channels}, h, w], got {tuple(z.shape)}")
        return F.pixel_shuffle(z, self.factor)

    def anchor(self, up: torch.Tensor) -> torch.Tensor:
        """ResShift's y: the bicubic-upsampled LR ``up`` [B, C, H, W] in [-1, 1], encoded ([B, C f², H/f, W/f])."""
        return self.encode(up)

    def condition(self, lr: torch.Tensor, up: torch.Tensor | None = None,
                  kind: Literal["lr", "anchor"] = "lr") -> torch.Tensor:
        """The network's LR condition at the latent's size.

        ``kind="lr"`` (the release): the LR image ``lr`` [B, C, h, w] in [-1, 1] itself, whose grid is the
        latent grid at scale f; checked against ``up``'s latent size when ``up`` is given. ``kind="anchor"``:
        ``encode(up)`` [B, C f², h, w] (needs ``up``).
        """
        if kind == "anchor":
            if up is None:
                raise ConfigError("the 'anchor' condition is the encoded bicubic image: pass `up`")
            return self.encode(up)
        if kind != "lr":
            raise ConfigError(f"condition kind must be 'lr' or 'anchor', got {kind!r}")
        if lr.dim() != 4 or lr.shape[1] != self.config.image_channels:
            raise InputError(f"the LR condition must be [B, {self.config.image_channels}, h, w], "
                             f"got {tuple(lr.shape)}")
        if up is not None:
            want = self.latent_size(*up.shape[-2:])
            if tuple(lr.shape[-2:]) != want:
                raise InputError(f"the LR image is {lr.shape[-2]}x{lr.shape[-1]} but the x{self.factor} latent "
                                 f"of its {up.shape[-2]}x{up.shape[-1]} upsampling is {want[0]}x{want[1]}")
        return lr
