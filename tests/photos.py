"""Real photographs that install offline with the scikit-image and scikit-learn wheels (see shared/offline.md)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

SKIMAGE_PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
                  "hubble_deep_field.jpg")
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")


def photo_path(name: str) -> Path:
    """Path of a bundled photo by file name, from whichever wheel ships it."""
    if name in SKLEARN_PHOTOS:
        import sklearn

        return Path(os.path.dirname(sklearn.__file__)) / "datasets" / "images" / name
    import skimage

    return Path(os.path.dirname(skimage.__file__)) / "data" / name


def load_photo(name: str) -> torch.Tensor:
    """Photo as float RGB [3, H, W] in [0, 1]."""
    from dreamsr.images import load_rgb

    return load_rgb(photo_path(name))
