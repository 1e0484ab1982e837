"""ResShift through the pipeline: the shift process in the pixel, unshuffle and VQ-f4 spaces, T network calls per
tile batch, an oracle that lands exactly, tiled = untiled, and clear refusals."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from dreamsr.checkpoint import CheckpointInfo, load_checkpoint, save_checkpoint
from dreamsr.diffusion import DiffusionConfig
from dreamsr.errors import ConfigError
from dreamsr.families.resshift import PRESETS, ResShiftConfig, ResShiftNet
from dreamsr.first_stages.vqf4 import VQF4_PRESETS
from dreamsr.images import upsample
from dreamsr.jobs.pipeline import Upscaler
from dreamsr.processes.shift import ShiftConfig
from dreamsr.tiling import make_grid


def _info(preset: str = "tiny", process: str = "shift", diffusion: object | None = None,
          network: ResShiftConfig | None = None) -> CheckpointInfo:
    return CheckpointInfo(network=network or PRESETS[preset], diffusion=diffusion or ShiftConfig.v1(), scale=4,
                          family="resshift", process=process)


class Spatial(nn.Module):
    """A per-position stand-in ``(x_t, cond, t) -> x̂0`` for any signal space (no spatial mixing), so any tiling
    of the same signal gives the same predictions; ``first_stage`` is the family's real one."""

    def __init__(self, config: ResShiftConfig) -> None:
        super().__init__()
        self.first_stage = ResShiftNet(config).first_stage

    def forward(self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = cond.mean(dim=1, keepdim=True)
        return torch.tanh(0.8 * x_t + 0.3 * c) * 0.9 + 0.01 * t.view(-1, 1, 1, 1)


class AnchorOracle(nn.Module):
    """Predicts x0 = y (the encoded bicubic image) whatever it is given: the shift chain then ends exactly on y."""

    def __init__(self, config: ResShiftConfig, y: torch.Tensor) -> None:
        super().__init__()
        self.first_stage = ResShiftNet(config).first_stage
        self.y = y

    def forward(self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.y.expand(x_t.shape[0], -1, -1, -1)


@pytest.mark.parametrize("config, T", [(ShiftConfig.v1(), 15), (ShiftConfig.v3(), 4)])
def test_default_sampling_is_the_whole_chain_one_call_per_step_and_tile_batch(config: ShiftConfig, T: int) -> None:
    up = Upscaler(Spatial(PRESETS["tiny"]), _info(diffusion=config), device="cpu", precision="fp32")
    opts = up.options()
    assert (opts.steps, opts.sampler) == (T, "ddpm")  # the process's defaults (the release samples all T)
    seen: list[tuple[int, int]] = []
    up.upscale(torch.rand(3, 30, 30), tile=12, overlap=4, batch=2, callback=lambda d, t: seen.append((d, t)))
    batches = -(-len(make_grid(30, 30, 12, 4)) // 2)  # 4 x 4 LR tiles of 12 with overlap 4 on 30 px, 2 per call
    assert batches == 8 and seen[-1] == (T * batches, T * batches) and len(seen) == T * batches


@pytest.mark.parametrize("preset", ["tiny", "tiny-pixel"])
def test_an_oracle_of_the_bicubic_image_lands_exactly_on_it(preset: str) -> None:
    """x̂0 = y at every step: the posterior mean at t = 1 is y exactly, so the output is bicubic(LR)."""
    lr = torch.rand(3, 16, 20, generator=torch.Generator().manual_seed(0))
    cfg = PRESETS[preset]
    up_img = upsample(lr * 2 - 1, 4).unsqueeze(0)
    net = Spatial(cfg)
    y = up_img if net.first_stage is None else net.first_stage.encode(up_img)
    up = Upscaler(AnchorOracle(cfg, y), _info(preset), device="cpu", precision="fp32")
    out = up.upscale(lr, tile=0)
    assert torch.allclose(out, ((up_img[0] + 1) / 2).clamp(0, 1), atol=1e-5)


@pytest.mark.parametrize("preset", ["tiny", "tiny-pixel"])
def test_tiled_sampling_equals_untiled(preset: str) -> None:
    up = Upscaler(Spatial(PRESETS[preset]), _info(preset, diffusion=ShiftConfig.v3()), device="cpu",
                  precision="fp32")
    lr = torch.rand(3, 22, 26, generator=torch.Generator().manual_seed(2))
    whole = up.upscale(lr, tile=0, seed=5)
    tiled = up.upscale(lr, tile=12, overlap=4, batch=3, seed=5)
    assert torch.allclose(tiled, whole, atol=1e-5), float((tiled - whole).abs().max())


def test_unshuffle_space_runs_at_lr_resolution() -> None:
    """x4 unshuffle: the network sees 48 channels at the LR tile's size, with the LR tile as its condition."""
    seen: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    class Spy(Spatial):
        def forward(self, x_t, cond, t):  # type: ignore[override]
            seen.append((tuple(x_t.shape[1:]), tuple(cond.shape[1:])))
            return super().forward(x_t, cond, t)

    up = Upscaler(Spy(PRESETS["tiny"]), _info(diffusion=ShiftConfig.v3()), device="cpu", precision="fp32")
    up.upscale(torch.rand(3, 24, 24), tile=0)
    m = PRESETS["tiny"].size_multiple
    side = 24 + (-24) % m
    assert set(seen) == {((48, side, side), (3, side, side))}


def test_vqf4_checkpoint_carries_the_frozen_autoencoder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    unet = dataclasses.replace(PRESETS["tiny"].unet, in_channels=3, out_channels=3)
    cfg = ResShiftConfig(unet=unet, first_stage="vqf4", vqf4=VQF4_PRESETS["tiny"])
    net = ResShiftNet(cfg)
    path = save_checkpoint(tmp_path / "rs.safetensors", net, _info(network=cfg))
    model, info = load_checkpoint(path)
    assert info.network == cfg and info.process == "shift"
    for k, v in net.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert any(k.startswith("first_stage.") for k in model.state_dict())
    assert not any(p.requires_grad for p in model.first_stage.parameters())
    model.train()
    assert not model.first_stage.training  # a frozen autoencoder stays in eval mode
    up = Upscaler(model, info, device="cpu", precision="fp32")
    assert tuple(up.upscale(torch.rand(3, 16, 16), steps=2, tile=0).shape) == (3, 64, 64)


def test_autoencoder_latent_channels_must_match_the_unet() -> None:
    with pytest.raises(ConfigError, match="vqf4 space has 4 channels"):
        ResShiftConfig(unet=dataclasses.replace(PRESETS["tiny"].unet, in_channels=3, out_channels=3),
                       first_stage="vqf4", vqf4=dataclasses.replace(VQF4_PRESETS["tiny"], embed_dim=4))


def test_incompatible_options_are_refused_with_one_line() -> None:
    up = Upscaler(Spatial(PRESETS["tiny"]), _info(), device="cpu", precision="fp32")
    with pytest.raises(ConfigError, match="ddim"):
        up.upscale(torch.rand(3, 8, 8), sampler="ddim")
    with pytest.raises(ConfigError, match="chain of 15"):
        up.upscale(torch.rand(3, 8, 8), steps=50)


def test_the_papers_gaussian_variant_runs_in_the_same_space() -> None:
    """DREAM's Table 3 setting: the Gaussian ε process over the same network and first stage."""
    up = Upscaler(Spatial(PRESETS["tiny"]), _info(process="gaussian", diffusion=DiffusionConfig()),
                  device="cpu", precision="fp32")
    assert up.options().steps == 50 and up.options().sampler == "ddim"
    out = up.upscale(torch.rand(3, 12, 12), steps=3, tile=0)
    assert tuple(out.shape) == (3, 48, 48) and bool(torch.isfinite(out).all())
    with pytest.raises(ConfigError, match="image target"):
        Upscaler(Spatial(PRESETS["tiny"]), _info(process="gaussian", diffusion=DiffusionConfig(target="residual")))


def test_cli_steps_beyond_a_short_chain_sample_the_whole_chain_and_say_so(tmp_path: Path) -> None:
    """The headline `--steps 100` on a 15-step shift model: all 15 steps, one note, no error."""
    from PIL import Image
    from typer.testing import CliRunner

    from dreamsr.cli import app

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "rs.safetensors", ResShiftNet(PRESETS["tiny"]), _info())
    src = tmp_path / "in.png"
    Image.fromarray((torch.rand(12, 16, 3) * 255).byte().numpy()).save(src)
    r = CliRunner().invoke(app, ["upscale", str(src), "-w", str(ckpt), "--steps", "100", "--precision", "fp32",
                                 "-o", str(tmp_path / "o.png"), "--json"])
    assert r.exit_code == 0, r.output
    assert "chain has 15 trained steps; --steps 100 samples all 15" in r.stderr
    import json

    assert json.loads(r.stdout)["settings"]["steps"] == 15 and Image.open(tmp_path / "o.png").size == (64, 48)
