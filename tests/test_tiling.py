"""Tiling: grid geometry, feathered weights that sum to one, split/merge, reflection padding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dreamsr.errors import ConfigError
from dreamsr.tiling import (accumulate, axis_weights, make_grid, merge, positions, reflect_pad, split,
                            validate_tiling)

SIZES = [1, 4, 7, 39, 40, 41, 45, 74, 75, 76, 100, 123]
CONFIGS = [(40, 5), (40, 0), (16, 8), (10, 3), (9, 2), (1, 0)]


@pytest.mark.parametrize("tile,overlap", CONFIGS)
def test_positions_cover_the_axis_and_stay_inside(tile: int, overlap: int) -> None:
    for size in SIZES:
        padded = max(size, tile)
        ps = positions(padded, tile, overlap)
        assert ps[0] == 0 and ps[-1] == padded - tile  # last tile aligned to the border
        assert all(0 <= p <= padded - tile for p in ps)  # no tile leaves the (padded) image
        assert all(b - a == tile - overlap for a, b in zip(ps[:-2], ps[1:-1]))  # regular stride until the last
        assert all(0 < b - a <= tile - overlap for a, b in zip(ps[:-1], ps[1:]))  # overlap >= nominal, no gaps


def test_paper_grid_numbers() -> None:
    # 40x40 tiles, 5 px overlap (Sec. 6.2) on a 128 px side: starts 0, 35, 70 and 88 (aligned to the border)
    assert positions(128, 40, 5) == [0, 35, 70, 88]
    g = make_grid(100, 128, 40, 5)
    assert g.ys == (0, 35, 60) and g.xs == (0, 35, 70, 88) and len(g) == 12 and g.pad == (0, 0)
    hg = g.scaled(4)
    assert hg.ys == (0, 140, 240) and hg.tile_h == 160 and hg.ramp == 20 and hg.padded_w == 512


@pytest.mark.parametrize("tile,overlap", CONFIGS)
def test_weights_sum_to_one_everywhere(tile: int, overlap: int) -> None:
    for h, w in [(s, t) for s in SIZES[::2] for t in SIZES[1::3]]:
        g = make_grid(h, w, tile, overlap)
        total = g.weight_map()
        assert total.shape == (g.padded_h, g.padded_w)
        assert torch.allclose(total, torch.ones_like(total), rtol=0, atol=1e-12), (h, w)
        wy, wx = g.weights(torch.float64)
        assert bool((wy > 0).all()) and bool((wx > 0).all())  # every tile contributes to every pixel it covers
        # float32 weights (what the pipeline uses) sum to 1 within float32 rounding
        wy32, wx32 = g.weights(torch.float32)
        tot32 = torch.zeros(g.padded_h, g.padded_w)
        for k, (y, x) in enumerate(g.boxes()):
            i, j = divmod(k, len(g.xs))
            tot32[y:y + g.tile_h, x:x + g.tile_w] += wy32[i][:, None] * wx32[j][None, :]
        assert float((tot32 - 1).abs().max()) < 1e-6


def test_weights_are_feathered_not_stepped() -> None:
    # two 40 px tiles overlapping by 5: the blend ramps over the overlap; no jump larger than 1/ramp
    w = axis_weights(75, [0, 35], 40, 5)
    left = torch.zeros(75, dtype=torch.float64)
    left[:40] = w[0]
    assert torch.equal(left[:35], torch.ones(35, dtype=torch.float64))  # alone: full weight
    # in the overlap the raw ramps (40 - u - 0.5) / 5 and (u' + 0.5) / 5 already sum to 1: a linear cross-fade
    assert torch.allclose(left[35:40], torch.tensor([0.9, 0.7, 0.5, 0.3, 0.1], dtype=torch.float64), atol=1e-12)
    assert float(left[40:].abs().max()) == 0.0
    assert float(left.diff().abs().max()) <= 1 / 5 + 1e-12


@pytest.mark.parametrize("h,w", [(7, 9), (40, 40), (41, 76), (100, 37)])
def test_split_then_merge_is_identity(h: int, w: int) -> None:
    gen = torch.Generator().manual_seed(0)
    for tile, overlap in [(40, 5), (16, 8), (10, 0)]:
        g = make_grid(h, w, tile, overlap)
        x = reflect_pad(torch.rand(3, h, w, generator=gen), *g.pad)
        tiles = split(x, g)
        assert tiles.shape == (len(g), 3, g.tile_h, g.tile_w)
        assert float((merge(tiles, g) - x).abs().max()) < 1e-6
        # batched accumulation in any chunking gives the same result as merging at once
        out = torch.zeros_like(x)
        for i in range(0, len(g), 3):
            idx = list(range(i, min(i + 3, len(g))))
            accumulate(out, split(x, g, idx), g, idx)
        assert torch.equal(out, merge(tiles, g))


def test_scaled_grid_lines_up_with_the_lr_grid() -> None:
    g = make_grid(23, 51, 10, 2)
    s = 3
    hg = g.scaled(s)
    lr = torch.rand(1, 23, 51)
    hr = lr.repeat_interleave(s, -2).repeat_interleave(s, -1)  # nearest upsample: HR tile k = upsampled LR tile k
    lt, ht = split(reflect_pad(lr, *g.pad), g), split(reflect_pad(hr, *hg.pad), hg)
    assert torch.equal(ht, lt.repeat_interleave(s, -2).repeat_interleave(s, -1))


def test_whole_image_grid_when_tile_is_zero() -> None:
    g = make_grid(13, 29, 0, 5)
    assert len(g) == 1 and (g.tile_h, g.tile_w) == (13, 29) and g.pad == (0, 0)
    assert torch.equal(g.weight_map(), torch.ones(13, 29, dtype=torch.float64))


def test_reflect_pad_matches_torch_and_extends_beyond_the_size() -> None:
    x = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(1, 2, 5, 7)
    assert torch.equal(reflect_pad(x, 3, 4), F.pad(x, (0, 4, 0, 3), mode="reflect"))
    big = reflect_pad(x[0], 12, 20)  # more padding than pixels: mirrored again and again
    assert big.shape == (2, 17, 27)
    assert torch.equal(big[:, :5, :7], x[0])
    assert torch.equal(big[:, 8, :7], x[0, :, 0])  # rows 0,1,2,3,4,3,2,1,0,1,...: row 8 is row 0
    one = reflect_pad(torch.tensor([[[0.5]]]), 3, 2)
    assert torch.equal(one, torch.full((1, 4, 3), 0.5))


def test_small_images_are_padded_to_one_tile() -> None:
    g = make_grid(7, 30, 40, 5)
    assert (g.padded_h, g.padded_w) == (40, 40) and len(g) == 1 and g.pad == (33, 10)


@pytest.mark.parametrize("tile,overlap", [(8, 5), (9, 5), (-1, 0), (40, -1)])
def test_bad_tiling_options_are_config_errors(tile: int, overlap: int) -> None:
    with pytest.raises(ConfigError):
        validate_tiling(tile, overlap)
    with pytest.raises(ConfigError):
        make_grid(50, 50, tile, overlap)


def test_tile_equal_to_twice_the_overlap_is_allowed() -> None:
    g = make_grid(50, 50, 10, 5)
    assert torch.allclose(g.weight_map(), torch.ones(50, 50, dtype=torch.float64), atol=1e-12)
