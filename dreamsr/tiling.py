"""Split an image into overlapping tiles and merge them back with feathered weights. Knows no model.

The paper's evaluation protocol (Sec. 6.2) cuts the LR image into 40x40 patches with a 5-pixel overlap,
super-resolves each and merges them. A :class:`TileGrid` describes such a cut (in LR pixels):

* tiles start every ``stride = tile - overlap`` pixels; the last row/column is aligned to the border
  (so no tile leaves the image, and the last overlap may be larger than ``overlap``);
* a side shorter than a tile is padded by reflection up to the tile (:func:`reflect_pad`, bottom/right)
  and cropped back by the caller;
* ``tile = 0`` means no tiling: one tile the size of the image;
* :meth:`TileGrid.scaled` gives the same cut in HR pixels (every length times the scale), so tiles of the
  HR noise / condition / eps line up exactly with the LR tiles.

Merge weights are separable, ``w_ij(y, x) = wy_i(y) * wx_j(x)``, and each 1-D family is normalised to sum
to one along its axis, so the weights of all tiles sum to 1 at every pixel (to float64 rounding, i.e.
exactly 1 once cast to float32). Each raw 1-D weight is a linear ramp over ``overlap`` pixels at both ends
of the tile (strictly positive, 1 in the middle), which feathers every seam.

Tensors are [C, H, W] or [N, C, H, W]; only the last two dimensions are tiled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from dreamsr.errors import ConfigError

__all__ = ["TileGrid", "make_grid", "positions", "axis_weights", "reflect_pad", "split", "accumulate", "merge",
           "validate_tiling", "align_to_unit"]


def validate_tiling(tile: int, overlap: int) -> None:
    """Raise ConfigError unless tile = 0 (no tiling) or tile >= 1, overlap >= 0 and tile >= 2 * overlap."""
    if overlap < 0:
        raise ConfigError(f"overlap must be >= 0, got {overlap}")
    if tile == 0:
        return
    if tile < 1:
        raise ConfigError(f"tile must be a positive number of pixels (or 0 for no tiling), got {tile}")
    if tile < 2 * overlap:
        raise ConfigError(f"tile ({tile}) must be at least twice the overlap ({overlap}): "
                          "each tile needs room for a feathered edge on both sides")


def align_to_unit(tile: int, overlap: int, unit: int) -> tuple[int, int]:
    """An LR (tile, overlap) close to the requested one whose lengths are multiples of ``unit`` (see
    :meth:`dreamsr.families.base.Family.unit`): the tile rounded down (at least one unit), the overlap rounded up,
    or down when that would exceed half the tile. ``unit = 1`` and ``tile = 0`` (no tiling) change nothing."""
    if unit <= 1 or tile == 0:
        return tile, overlap
    tile_a = max(unit, tile // unit * unit)
    over_a = -(-overlap // unit) * unit
    if 2 * over_a > tile_a:
        over_a = tile_a // 2 // unit * unit
    return tile_a, over_a


def positions(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along an axis of length ``size`` >= ``tile`` (i.e. after padding).

    Every ``tile - overlap`` pixels; the last one is ``size - tile`` (aligned to the border).
    """
    if size < tile:
        raise ValueError(f"axis of {size} px is shorter than a tile ({tile} px): pad it first")
    if size == tile:
        return [0]
    stride = tile - overlap
    out = list(range(0, size - tile, stride))
    out.append(size - tile)
    return out


def axis_weights(size: int, starts: Sequence[int], tile: int, ramp: int) -> torch.Tensor:
    """Normalised 1-D merge weights [len(starts), tile] (float64) of tiles at ``starts`` on an axis of ``size``.

    Raw weight at offset u in a tile: min(1, (u + 0.5) / ramp, (tile - u - 0.5) / ramp) (1 when ramp = 0);
    then divided by the sum of the raw weights of all tiles covering that pixel, so they sum to 1.
    """
    u = torch.arange(tile, dtype=torch.float64)
    raw = torch.ones_like(u)
    if ramp > 0:
        raw = torch.minimum(raw, torch.minimum((u + 0.5) / ramp, (tile - u - 0.5) / ramp))
    total = torch.zeros(size, dtype=torch.float64)
    for s in starts:
        total[s:s + tile] += raw
    if bool((total <= 0).any()):
        raise ValueError("the tiles do not cover the axis")
    return torch.stack([raw / total[s:s + tile] for s in starts])


@dataclass(frozen=True)
class TileGrid:
    """A cut of a ``height`` x ``width`` image, padded to ``padded_h`` x ``padded_w``, into tiles.

    Tile k = (i, j) (row-major) covers rows ``ys[i] : ys[i] + tile_h`` and columns ``xs[j] : xs[j] + tile_w``
    of the padded image. ``ramp`` is the feathering length (the nominal overlap).
    """

    height: int
    width: int
    padded_h: int
    padded_w: int
    tile_h: int
    tile_w: int
    ramp: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    @property
    def tile_h_w(self) -> tuple[int, int]:
        """(tile_h, tile_w)."""
        return self.tile_h, self.tile_w

    def boxes(self) -> list[tuple[int, int]]:
        """Tile top-left corners (y, x), row-major."""
        return [(y, x) for y in self.ys for x in self.xs]

    @property
    def pad(self) -> tuple[int, int]:
        """(bottom, right) padding to add by reflection before cutting."""
        return self.padded_h - self.height, self.padded_w - self.width

    def scaled(self, scale: float) -> "TileGrid":
        """The same cut with every length multiplied by ``scale`` (LR grid -> HR grid). A non-integer scale
        needs every length to land on whole pixels (an aligned grid); ValueError otherwise. ``height``/``width``
        are rounded to the nearest pixel (the output size)."""

        def mul(n: int) -> int:
            v = n * scale
            if abs(v - round(v)) > 1e-6:
                raise ValueError(f"length {n} x {scale} is not a whole number of pixels: align the grid first")
            return int(round(v))

        return TileGrid(int(round(self.height * scale)), int(round(self.width * scale)), mul(self.padded_h),
                        mul(self.padded_w), mul(self.tile_h), mul(self.tile_w), mul(self.ramp),
                        tuple(mul(y) for y in self.ys), tuple(mul(x) for x in self.xs))

    def weights(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(wy [len(ys), tile_h], wx [len(xs), tile_w]); tile (i, j) has weight ``wy[i][:, None] * wx[j][None, :]``."""
        wy = axis_weights(self.padded_h, self.ys, self.tile_h, self.ramp)
        wx = axis_weights(self.padded_w, self.xs, self.tile_w, self.ramp)
        return wy.to(dtype), wx.to(dtype)

    def tile_weight(self, k: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Weight of tile ``k`` [tile_h, tile_w] (recomputes the 1-D tables; prefer :meth:`weights` in loops)."""
        wy, wx = self.weights(torch.float64)
        i, j = divmod(k, len(self.xs))
        return (wy[i][:, None] * wx[j][None, :]).to(dtype)

    def weight_map(self) -> torch.Tensor:
        """Sum over all tiles of their weights [padded_h, padded_w], float64 (ones, up to rounding)."""
        wy, wx = self.weights(torch.float64)
        total = torch.zeros(self.padded_h, self.padded_w, dtype=torch.float64)
        for k, (y, x) in enumerate(self.boxes()):
            i, j = divmod(k, len(self.xs))
            total[y:y + self.tile_h, x:x + self.tile_w] += wy[i][:, None] * wx[j][None, :]
        return total


def make_grid(height: int, width: int, tile: int = 40, overlap: int = 5) -> TileGrid:
    """Grid of an ``height`` x ``width`` image; ``tile = 0`` means one tile covering the image, unpadded."""
    if height < 1 or width < 1:
        raise ConfigError(f"cannot tile an empty image ({height}x{width})")
    validate_tiling(tile, overlap)
    if tile == 0:
        return TileGrid(height, width, height, width, height, width, 0, (0,), (0,))
    ph, pw = max(height, tile), max(width, tile)
    return TileGrid(height, width, ph, pw, tile, tile, overlap, tuple(positions(ph, tile, overlap)),
                    tuple(positions(pw, tile, overlap)))


def _reflect_index(n: int, total: int, device: torch.device) -> torch.Tensor:
    """Indices 0..total-1 folded into 0..n-1 by mirror reflection without repeating the edge (numpy 'reflect'),
    any number of times over (so padding may exceed the size); n = 1 repeats the single pixel."""
    i = torch.arange(total, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    j = i % period
    return torch.where(j < n, j, period - j)


def reflect_pad(x: torch.Tensor, bottom: int, right: int) -> torch.Tensor:
    """Pad the last two dims of ``x`` by reflection at the bottom and right (any amount, any size >= 1)."""
    if bottom == 0 and right == 0:
        return x
    h, w = x.shape[-2:]
    iy = _reflect_index(h, h + bottom, x.device)
    ix = _reflect_index(w, w + right, x.device)
    return x.index_select(-2, iy).index_select(-1, ix)


def split(x: torch.Tensor, grid: TileGrid, tiles: Sequence[int] | None = None) -> torch.Tensor:
    """Cut tiles out of ``x`` [C, padded_h, padded_w] or [1, C, padded_h, padded_w].

    Returns [n, C, tile_h, tile_w] for the tile indices ``tiles`` (default: all, row-major).
    """
    x3 = x[0] if x.dim() == 4 else x
    if x3.shape[-2:] != (grid.padded_h, grid.padded_w):
        raise ValueError(f"tensor is {tuple(x3.shape[-2:])}, the grid expects {(grid.padded_h, grid.padded_w)}")
    boxes = grid.boxes()
    idx = range(len(boxes)) if tiles is None else tiles
    return torch.stack([x3[:, y:y + grid.tile_h, x0:x0 + grid.tile_w] for y, x0 in (boxes[k] for k in idx)])


def accumulate(out: torch.Tensor, tiles: torch.Tensor, grid: TileGrid, indices: Sequence[int],
               weights: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Add ``tiles`` [n, C, tile_h, tile_w] (tile indices ``indices``) times their merge weights into ``out``
    [C, padded_h, padded_w] in place, and return ``out``. ``weights`` = :meth:`TileGrid.weights` (cached)."""
    wy, wx = weights if weights is not None else grid.weights(out.dtype)
    wy, wx = wy.to(out.device, out.dtype), wx.to(out.device, out.dtype)
    boxes = grid.boxes()
    for t, k in zip(tiles, indices):
        y, x = boxes[k]
        i, j = divmod(k, len(grid.xs))
        out[:, y:y + grid.tile_h, x:x + grid.tile_w] += t.to(out.dtype) * (wy[i][:, None] * wx[j][None, :])
    return out


def merge(tiles: torch.Tensor, grid: TileGrid) -> torch.Tensor:
    """Blend all tiles [len(grid), C, tile_h, tile_w] into [C, padded_h, padded_w] with the feathered weights."""
    if tiles.shape[0] != len(grid):
        raise ValueError(f"got {tiles.shape[0]} tiles for a grid of {len(grid)}")
    out = torch.zeros(tiles.shape[1], grid.padded_h, grid.padded_w, dtype=tiles.dtype, device=tiles.device)
    return accumulate(out, tiles, grid, range(len(grid)))
