"""IDM through the pipeline and the CLI: any output scale in the trained range, exact output sizes, aligned tiles
that agree with the untiled run, clear refusals outside the range and for mismatched files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from dreamsr.checkpoint import CheckpointInfo, load_checkpoint, save_checkpoint
from dreamsr.diffusion import DiffusionConfig
from dreamsr.errors import CheckpointError, ConfigError
from dreamsr.families.idm.network import IDMNet, nearest_indices, preset
from dreamsr.jobs.pipeline import Upscaler
from dreamsr.tiling import make_grid


def _idm_info(**over) -> CheckpointInfo:
    return CheckpointInfo(network=preset("tiny"), diffusion=DiffusionConfig(), scale=4, family="idm", **over)


class LocalIDMStandIn(nn.Module):
    """A per-pixel stand-in with IDM's interface: the LR image is looked up at each output pixel by the same
    integer nearest indices as IDM's encoder (floor(i * h / H)), then mixed elementwise with y_t and gamma. Any
    tile whose LR and HR offsets are aligned sees exactly the pixels the whole image sees."""

    def forward(self, y_t: torch.Tensor, cond: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        big_h, big_w = y_t.shape[-2:]
        h, w = cond.shape[-2:]
        iy, ix = nearest_indices(h, big_h), nearest_indices(w, big_w)
        c = cond.index_select(-2, iy.to(cond.device)).index_select(-1, ix.to(cond.device))
        g = gamma.view(-1, 1, 1, 1).to(y_t.dtype)
        return torch.tanh(0.7 * y_t - 0.3 * c) * (1 - g) + 0.5 * y_t * g


@pytest.mark.parametrize("scale, size", [(2.5, (58, 92)), (3.0, (69, 111)), (4.0, (92, 148)), (1.5, (34, 56))])
def test_output_size_is_exact_at_any_scale(scale: float, size: tuple[int, int]) -> None:
    """37x23 -> x2.5 -> 92x58 (round half to even, as docs/families.md states): sampled, not resized."""
    torch.manual_seed(0)
    up = Upscaler(IDMNet(preset("tiny")), _idm_info(), device="cpu", precision="fp32")
    out = up.upscale(torch.rand(3, 23, 37), scale=scale, steps=2, tile=0)
    assert tuple(out.shape) == (3, *size)


@pytest.mark.parametrize("scale", [2.5, 3.0, 4.0])
@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_aligned_tiles_agree_with_the_untiled_run(scale: float, sampler: str) -> None:
    up = Upscaler(LocalIDMStandIn(), _idm_info(), device="cpu", precision="fp32")
    lr = torch.rand(3, 21, 30, generator=torch.Generator().manual_seed(1))
    whole = up.upscale(lr, scale=scale, steps=4, sampler=sampler, tile=0, seed=3)
    tiled = up.upscale(lr, scale=scale, steps=4, sampler=sampler, tile=8, overlap=4, batch=3, seed=3)
    assert torch.allclose(tiled, whole, atol=1e-5), float((tiled - whole).abs().max())
    # the grid really had several tiles, with offsets in phase with the scale
    unit, _ = up.family.unit(up.info.network, scale)
    assert len(make_grid(-(-21 // unit) * unit, -(-30 // unit) * unit, 8 // unit * unit or unit, 4)) > 1


class ReleaseRuleStandIn(nn.Module):
    """The same per-pixel stand-in under the release's nearest rule (issue 26): each output pixel at *global*
    position g reads LR pixel floor(float32(g) * float32(h / H)) (numpy float32, written here), which is not
    shift-equivariant; the pipeline tells it the tile's LR origin and gives it a 1 px halo above/left."""

    halo = 1

    def __init__(self) -> None:
        super().__init__()
        self.read_before = 0  # tile positions that read the LR pixel before the tile's own

    def lookup(self, n_in: int, n_out: int, origin: int, halo: int) -> torch.Tensor:
        import numpy as np

        scale = np.float32(n_in - halo) / np.float32(n_out)
        g = np.arange(n_out, dtype=np.float32) + np.float32(origin * n_out // (n_in - halo))
        idx = torch.from_numpy(np.floor(g * scale).astype(np.int64)) - origin + halo
        self.read_before += int((idx < halo).sum())
        return idx

    def forward(self, y_t: torch.Tensor, cond: torch.Tensor, gamma: torch.Tensor, *,
                origin: list[tuple[int, int]] | None = None, halo: int = 0) -> torch.Tensor:
        assert halo == 1 and origin is not None and len(origin) == y_t.shape[0]
        out = []
        for b, (oy, ox) in enumerate(origin):
            iy = self.lookup(cond.shape[-2], y_t.shape[-2], oy, halo)
            ix = self.lookup(cond.shape[-1], y_t.shape[-1], ox, halo)
            c = cond[b].index_select(-2, iy).index_select(-1, ix)
            g = gamma[b].to(y_t.dtype)
            out.append(torch.tanh(0.7 * y_t[b] - 0.3 * c) * (1 - g) + 0.5 * y_t[b] * g)
        return torch.stack(out)


@pytest.mark.parametrize("scale", [2.5, 5.125, 4.0])
def test_aligned_tiles_agree_with_the_untiled_run_under_the_release_rule(scale: float) -> None:
    info = CheckpointInfo(network=replace(preset("tiny"), max_scale=8.0, resize_rule="release"),
                          diffusion=DiffusionConfig(), scale=4, family="idm")
    net = ReleaseRuleStandIn()
    up = Upscaler(net, info, device="cpu", precision="fp32")
    lr = torch.rand(3, 21, 30, generator=torch.Generator().manual_seed(1))
    whole = up.upscale(lr, scale=scale, steps=3, tile=0, seed=3, merge="step")
    net.read_before = 0
    tiled = up.upscale(lr, scale=scale, steps=3, tile=8, overlap=4, batch=3, seed=3)
    assert torch.allclose(tiled, whole, atol=1e-5), float((tiled - whole).abs().max())
    unit, _ = up.family.unit(up.info.network, scale)
    assert len(make_grid(-(-21 // unit) * unit, -(-30 // unit) * unit, max(unit, 8 // unit * unit), 4)) > 1
    if scale == 5.125:
        assert net.read_before > 0  # some tile start really reads the pixel before it (the halo matters)


def test_network_sees_lr_tiles_at_the_exact_scale() -> None:
    seen: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    class Spy(LocalIDMStandIn):
        def forward(self, y_t, cond, gamma):  # type: ignore[override]
            seen.append((tuple(y_t.shape[-2:]), tuple(cond.shape[-2:])))
            return super().forward(y_t, cond, gamma)

    up = Upscaler(Spy(), _idm_info(), device="cpu", precision="fp32")
    up.upscale(torch.rand(3, 20, 20), scale=2.5, steps=1, tile=8, overlap=4)
    assert seen and all(hy * 2 == ly * 5 and hx * 2 == lx * 5 for (hy, hx), (ly, lx) in seen)


def test_scales_outside_the_trained_range_are_refused() -> None:
    up = Upscaler(LocalIDMStandIn(), _idm_info(), device="cpu", precision="fp32")
    assert up.scales == (1.0, 4.0)
    for bad in (0.5, 4.5, 8.0, float("nan")):
        with pytest.raises(ConfigError, match=r"x1 to x4"):
            up.upscale(torch.rand(3, 8, 8), scale=bad, steps=1)


def test_fixed_scale_family_refuses_other_scales_in_the_pipeline(tiny_checkpoint: Path) -> None:
    up = Upscaler.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp32")
    assert up.scales == (4.0, 4.0)
    with pytest.raises(ConfigError, match="x4 only"):
        up.upscale(torch.rand(3, 8, 8), scale=2.5, steps=1)


def test_checkpoint_round_trip_names_the_family(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = IDMNet(preset("tiny"))
    path = save_checkpoint(tmp_path / "idm.safetensors", net, _idm_info())
    model, info = load_checkpoint(path)
    assert info.family == "idm" and info.process == "gaussian" and isinstance(model, IDMNet)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), net.state_dict().values()))


def test_mismatched_family_and_network_are_checkpoint_errors() -> None:
    from dreamsr.families.sr3.unet import PRESETS

    with pytest.raises(CheckpointError, match="idm checkpoint needs a IDMConfig"):
        CheckpointInfo(network=PRESETS["tiny"], diffusion=DiffusionConfig(), scale=4, family="idm")
    with pytest.raises(CheckpointError, match="sr3 checkpoint needs a UNetConfig"):
        CheckpointInfo(network=preset("tiny"), diffusion=DiffusionConfig(), scale=4, family="sr3")
    with pytest.raises(CheckpointError, match="unknown model family 'edsr'"):
        CheckpointInfo(network=preset("tiny"), diffusion=DiffusionConfig(), scale=4, family="edsr")


def test_cli_upscales_at_a_non_integer_scale_and_refuses_out_of_range(tmp_path: Path) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from dreamsr.cli import app

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "idm.safetensors", IDMNet(preset("tiny")), _idm_info())
    src = tmp_path / "in.png"
    Image.fromarray((torch.rand(23, 37, 3) * 255).byte().numpy()).save(src)
    runner = CliRunner()
    r = runner.invoke(app, ["upscale", str(src), "-w", str(ckpt), "--scale", "2.5", "--steps", "1", "--tile", "0",
                            "--precision", "fp32", "-o", str(tmp_path / "out.png")])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "out.png").size == (92, 58)
    assert "sampled at x2.5" in r.output
    r = runner.invoke(app, ["upscale", str(src), "-w", str(ckpt), "--scale", "6", "-o", str(tmp_path / "o6.png")])
    assert r.exit_code == 2
    assert "x1 to x4" in r.output and not (tmp_path / "o6.png").exists()
