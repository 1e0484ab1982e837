"""The one module of helpers shared by the tests (fixtures live in ``conftest.py``).

- real photographs that install offline with the scikit-image and scikit-learn wheels (shared/offline.md):
  :func:`photo_path`, :func:`load_photo`, :func:`copy_photos`;
- tiny dreamsr checkpoints (:func:`write_tiny_checkpoint`, :func:`tiny_info`) and stand-in models
  (:class:`IdentityOnCondition`, :class:`Pointwise`, :class:`Recorder`);
- a seam metric (:func:`seam_ratio`);
- random LPIPS/FID backbones under their real file names (:func:`save_random_weights`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

SKIMAGE_PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
                  "hubble_deep_field.jpg")
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")


# ---- real photos ------------------------------------------------------------------------------------------
def photo_path(name: str) -> Path:
    """Path of a bundled photo by file name (``camera.png``, ``china.jpg`` ...), from whichever wheel ships it."""
    if name in SKLEARN_PHOTOS:
        import sklearn

        return Path(sklearn.__file__).parent / "datasets" / "images" / name
    import skimage

    return Path(skimage.__file__).parent / "data" / name


def load_photo(name: str) -> torch.Tensor:
    """Photo as float RGB [3, H, W] in [0, 1]."""
    from dreamsr.images import load_rgb

    return load_rgb(photo_path(name))


def copy_photos(folder: Path, names: Iterable[str]) -> Path:
    """Copy the named photos into ``folder`` (created if missing) and return it: a data set in the 'folder'
    layout."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(photo_path(name), folder / name)
    return folder


# ---- tiny checkpoints and stand-in models -------------------------------------------------------------------
def write_tiny_checkpoint(path: Path, *, scale: int = 2, target: str = "residual", seed: int = 0,
                          sampling: dict | None = None, training: dict | None = None,
                          profiles: dict | None = None) -> Path:
    """A randomly initialised ``tiny`` UNet (seed ``seed``) saved as a dreamsr checkpoint at ``path``;
    ``training`` defaults to ``{"steps": 0, "dataset": "none"}``; ``profiles``: named sampling profiles."""
    from dreamsr.checkpoint import CheckpointInfo, save_checkpoint
    from dreamsr.diffusion import DiffusionConfig
    from dreamsr.families.sr3.unet import PRESETS, UNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UNet(PRESETS["tiny"])
    info = CheckpointInfo(network=model.config, diffusion=DiffusionConfig(target=target), scale=scale,
                          training={"steps": 0, "dataset": "none"} if training is None else training,
                          dreamsr_version="test", sampling=sampling or {}, profiles=profiles or {})
    return save_checkpoint(path, model, info)


def tiny_info(*, scale: int = 2, target: str = "image"):
    """CheckpointInfo of the tiny preset (for stand-in models that ignore it)."""
    from dreamsr.checkpoint import CheckpointInfo
    from dreamsr.diffusion import DiffusionConfig
    from dreamsr.families.sr3.unet import PRESETS

    return CheckpointInfo(network=PRESETS["tiny"], diffusion=DiffusionConfig(target=target), scale=scale)


class IdentityOnCondition(nn.Module):
    """An exact 'perfect' model whose clean estimate is the bicubic condition itself:
    eps = (y_t - gamma * y0*) / sqrt(1 - gamma^2) with y0* = to_target(x0, x0) (Eq. 8 inverted)."""

    def __init__(self, target: str = "image") -> None:
        super().__init__()
        self.target = target

    def forward(self, y_t: torch.Tensor, x0: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        g = gamma.view(-1, 1, 1, 1).to(y_t.dtype)
        y0 = x0 if self.target == "image" else torch.zeros_like(x0)
        return (y_t - g * y0) / (1 - g * g).clamp_min(1e-12).sqrt()


class Pointwise(nn.Module):
    """A deterministic per-pixel stand-in whose output depends on the noise (so seeds matter) and which is
    exactly batch-invariant (elementwise ops only)."""

    def forward(self, y_t: torch.Tensor, x0: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        g = gamma.view(-1, 1, 1, 1).to(y_t.dtype)
        return torch.tanh(0.7 * y_t - 0.3 * x0) * (1 - g) + 0.5 * y_t * g


class Recorder(nn.Module):
    """Wraps a model and keeps the inputs of every call."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, y_t: torch.Tensor, x0: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        self.calls.append((y_t.detach().clone(), x0.detach().clone(), gamma.detach().clone()))
        return self.inner(y_t, x0, gamma)


def seam_ratio(img: torch.Tensor, borders_y: list[int], borders_x: list[int]) -> float:
    """Mean absolute gradient across tile borders divided by the mean absolute gradient elsewhere.

    ``img`` [C, H, W]; ``borders_x`` are columns x where a tile starts or ends (the step I[x] - I[x-1] crosses
    the border); same for rows. Gradients within 1 px of a border are excluded from "elsewhere".
    """
    dx = (img[:, :, 1:] - img[:, :, :-1]).abs().mean(dim=(0, 1))  # dx[x-1] = |I[x] - I[x-1]|
    dy = (img[:, 1:, :] - img[:, :-1, :]).abs().mean(dim=(0, 2))
    bx = sorted({x - 1 for x in borders_x if 1 <= x < img.shape[-1]})
    by = sorted({y - 1 for y in borders_y if 1 <= y < img.shape[-2]})
    mask_x = torch.ones_like(dx, dtype=torch.bool)
    mask_y = torch.ones_like(dy, dtype=torch.bool)
    for b in bx:
        mask_x[max(0, b - 1):b + 2] = False
    for b in by:
        mask_y[max(0, b - 1):b + 2] = False
    border = torch.cat([dx[bx], dy[by]]).mean()
    inside = torch.cat([dx[mask_x], dy[mask_y]]).mean()
    return float(border / inside)


# ---- LPIPS / FID backbones (random stand-ins) ---------------------------------------------------------------
def save_random_weights(folder: Path, lpips_net: str = "squeeze", fid: bool = True) -> None:
    """Random-initialised weights under the real file names (shared/offline.md): plumbing, not real values."""
    from types import SimpleNamespace

    import torchvision

    from dreamsr import metrics

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    ctor = {"alex": torchvision.models.alexnet, "squeeze": torchvision.models.squeezenet1_1}[lpips_net]
    if lpips_net:
        torch.save(ctor(weights=None).state_dict(), folder / metrics.LPIPS_FILES[lpips_net][0])
    if fid:
        # pytorch-fid's layout; BatchNorm statistics calibrated on noise so that random features stay O(1)
        net = metrics.build_fid_inception()
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        with torch.no_grad():
            metrics.InceptionFeatures.pool3(SimpleNamespace(net=net.train()), torch.rand(2, 3, 160, 160) * 2 - 1)
        torch.save(net.state_dict(), folder / metrics.FID_FILE)

