"""The IDM family (Gao et al., CVPR 2023; the DREAM paper's second backbone): an LR encoder predicts a coarse HR
image at the output size, and an SR3 trunk with implicit upsamplers refines it, at any scale in the trained
range. Network: :mod:`dreamsr.families.idm.network`; released weights: :mod:`dreamsr.converters.idm`."""

from __future__ import annotations

from dreamsr.families.base import Family
from dreamsr.families.idm.network import PRESETS, IDMConfig, IDMNet, tile_unit

__all__ = ["FAMILY"]


def _scale_range(config: IDMConfig) -> tuple[float, float]:
    return config.min_scale, config.max_scale


def _tile_unit(config: IDMConfig, scale: float) -> tuple[int, int]:
    return tile_unit(scale, config.size_multiple)


FAMILY = Family(name="idm", config_type=IDMConfig, build=IDMNet, presets=PRESETS, processes=("gaussian",),
                cond_grid="lr", scale_range=_scale_range, tile_unit=_tile_unit,
                notes="IDM: LR encoder + SR3 trunk with implicit upsamplers; any scale in the trained range")
