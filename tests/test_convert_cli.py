"""`dreamsr weights convert --from idm` and `--from resshift` (issues 18 and 19, "Loading the released weights").

Sources: released-layout state dicts with random values, built from the key listings (``tests/data/*.txt``, copies of
the reference listings) for the full-size tests (slow) and, for the default tests, from the converters' layouts of
small configurations (the full layouts are checked against the listings in test_idm_network / test_resshift_network).
They are written with ``torch.save``, converted through the CLI, loaded back with ``load_checkpoint`` (strict) and
compared tensor by tensor with the source through the converters' key maps. Oracles for the metadata: the
release's numbers (x8 faces, T = 15 / 4, sqrt(eta_1) = 0.02 / 0.1, 64 px training crops, 8 px windows), not the
code.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dreamsr.checkpoint import load_checkpoint, read_info
from dreamsr.cli import app
from dreamsr.diffusion import DiffusionConfig
from dreamsr.families.idm.network import PRESETS as IDM_PRESETS
from dreamsr.families.idm.network import IDMConfig, IDMNet
from dreamsr.converters.idm import SCHEDULE_BUFFERS, release_layout
from dreamsr.families.resshift.network import PRESETS as UNET_PRESETS
from dreamsr.families.resshift.network import ResShiftUNet, ResShiftUNetConfig
from dreamsr.converters.resshift import autoencoder_key_map, release_schedule, unet_key_map
from dreamsr.first_stages.vqf4 import VQF4, VQF4Config
from dreamsr.options import SamplingOptions
from dreamsr.processes.shift import ShiftConfig, eta_schedule

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = Path(__file__).parent / "data"
runner = CliRunner()


def read_listing(name: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in (DATA / name).read_text().splitlines():
        key, shape = re.fullmatch(r"(\S+) \((.*)\)", line.strip()).groups()
        out[key] = tuple(int(s) for s in shape.split(",") if s.strip())
    return out


def cli(*args: object):
    return runner.invoke(app, ["weights", "convert", *[str(a) for a in args]])


def one_error_line(result, code: int, text: str) -> None:
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.stderr


def nothing_written(out: Path) -> None:
    assert not out.exists(), out
    assert not list(out.parent.glob(f".{out.name}*")), "a temporary file was left behind"


def random_tensors(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) for k, s in shapes.items()}


def stride0_file(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    """A file with every key of a layout at its shape, as stride-0 views of one zero (a few bytes on disk)."""
    zero = torch.zeros(1)
    torch.save({k: zero.expand(s) for k, s in shapes.items()}, path)
    return path


# ----------------------------------------------------------------------------------------------------------------
# IDM
# ----------------------------------------------------------------------------------------------------------------

def idm_schedule(n: int = 2000, start: float = 1e-6, end: float = 1e-2) -> dict[str, torch.Tensor]:
    """The two buffers the converter reads (SR3/IDM set_new_noise_schedule: linear betas, their cumprod)."""
    betas = torch.linspace(start, end, n, dtype=torch.float64)
    return {"betas": betas.float(), "alphas_cumprod": torch.cumprod(1 - betas, 0).float()}


def idm_released_shapes(config: IDMConfig) -> dict[str, tuple[int, ...]]:
    """Released-layout keys of ``config``: used tensors at the network's shapes, the dropped ones (their shapes are
    not read) and the 13 buffers [2000]."""
    layout = release_layout(config)
    with torch.device("meta"):
        net = {k: tuple(v.shape) for k, v in IDMNet(config).state_dict().items()}
    shapes = {src: net[dst] for src, dst in layout.mapping.items()}
    shapes.update({k: (2,) for k in layout.dropped_keys()})
    shapes.update({k: (2000,) for k in SCHEDULE_BUFFERS})
    return shapes


def idm_released_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    state = random_tensors(shapes, seed)
    state.update(idm_schedule())
    return state


# the modules issue 18 names as unused, by the release's names
ISSUE_DROPPED = ("imnet", "final_down1", "final_down2", "final_linear", "final_styleconv", "style.modulated_conv")


def check_idm_file(out: Path, state: dict[str, torch.Tensor], config: IDMConfig, scale: int, stdout: str) -> None:
    layout = release_layout(config)
    assert set(layout.mapping) | set(layout.dropped_keys()) | set(SCHEDULE_BUFFERS) == set(state)
    model, info = load_checkpoint(out)  # strict: every tensor of the network, nothing else
    sd = model.state_dict()
    assert len(sd) == len(layout.mapping)
    for src, dst in layout.mapping.items():
        assert torch.equal(sd[dst], state[src]), (src, dst)
    assert info.network.resize_rule == "release"  # the release's F.interpolate index, at every size (issue 26)
    assert (info.family, info.process, info.scale, info.network) == ("idm", "gaussian", scale,
                                                                     replace(config, resize_rule="release"))
    assert info.diffusion == DiffusionConfig(num_steps=2000, beta_start=1e-6, beta_end=1e-2, target="image")
    assert info.sampling == {"steps": 2000, "sampler": "ddpm"}
    assert "the release's setting" in info.training["sampling_provenance"]
    assert info.training["converted_from"] == "best_psnr_gen.pth"
    assert set(info.training["dropped"]) == set(layout.dropped)
    assert info.training["dropped_tensors"] == len(layout.dropped_keys())
    assert info.training["dropped_parameters"] == sum(state[k].numel() for k in layout.dropped_keys())
    for name in layout.dropped:  # one output line per dropped module
        assert re.search(rf"^  {re.escape(name)} \(\d+ tensors?\): ", stdout, re.M), name
    for name in ISSUE_DROPPED:
        assert any(name in module for module in layout.dropped), name
    opts = SamplingOptions.resolve(info.sampling)
    opts.check_chain(info.diffusion.num_steps)
    assert (opts.steps, opts.sampler) == (2000, "ddpm")


def test_idm_release_layout_converts_through_the_cli(tmp_path: Path) -> None:
    tiny = IDM_PRESETS["tiny"]
    state = idm_released_state(idm_released_shapes(tiny), seed=1)
    src = tmp_path / "best_psnr_gen.pth"
    torch.save(state, src)
    out = tmp_path / "idm-tiny.safetensors"
    result = cli("--from", "idm", src, out, "--preset", "tiny", "--scale", 3)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: idm, x3 (trained x1 to x4)" in result.stdout
    assert "linear schedule of 2000 steps (beta 1e-06 to 0.01)" in result.stdout
    check_idm_file(out, state, tiny, 3, result.stdout)

    # the default scale is the face release's x8, recorded when the configuration was trained up to x8
    cfg8 = tmp_path / "tiny8.json"
    tiny8 = IDMConfig.from_dict({**tiny.to_dict(), "max_scale": 8.0})
    cfg8.write_text(json.dumps(tiny8.to_dict()))
    out8 = tmp_path / "idm-tiny8.safetensors"
    result = cli("--from", "idm", src, out8, "--config", cfg8)
    assert result.exit_code == 0, result.output
    check_idm_file(out8, state, tiny8, 8, result.stdout)
    assert read_info(out8).network.max_scale == 8.0

    # ... and refused with one line where it is outside the configuration's range
    out4 = tmp_path / "idm-tiny-x8.safetensors"
    one_error_line(cli("--from", "idm", src, out4, "--preset", "tiny"), 2,
                   "the release's output scale x8 (x8) is outside this IDM configuration's trained range x1 to x4")
    one_error_line(cli("--from", "idm", src, out4, "--preset", "tiny", "--scale", 5), 2, "x1 to x4")
    nothing_written(out4)


@pytest.mark.slow
def test_idm_face_listing_converts_with_the_release_defaults(tmp_path: Path) -> None:
    """The full face layout from the listing (116.6 M values), random, converted with no options."""
    shapes = read_listing("idm_face_state_dict.txt")
    assert shapes == idm_released_shapes(IDM_PRESETS["face"]) | {  # dropped tensors at the listing's shapes
        k: shapes[k] for k in release_layout().dropped_keys()}
    state = idm_released_state(shapes, seed=2)
    src = tmp_path / "best_psnr_gen.pth"
    torch.save(state, src)
    del state
    state = torch.load(src, weights_only=True)
    out = tmp_path / "idm-face.safetensors"
    result = cli("--from", "idm", src, out)
    assert result.exit_code == 0, result.output
    check_idm_file(out, state, IDM_PRESETS["face"], 8, result.stdout)
    info = read_info(out)
    assert info.training["release"] == "ffhq_liifsr3_scaler_16_128" and info.training["task"] == "face"
    # idm.md: 116,590,885 parameters stored (537 keys with the 13 buffers of 2000 values each), 99,801,670 used
    assert sum(math.prod(s) for s in shapes.values()) == 116_590_885 + 13 * 2000
    assert info.training["dropped_parameters"] == 116_590_885 - 99_801_670


# ----------------------------------------------------------------------------------------------------------------
# ResShift
# ----------------------------------------------------------------------------------------------------------------

# small layouts with the release's GroupNorm32 (the converter reads every other choice from the shapes)
SMALL_UNET = ResShiftUNetConfig(image_size=16, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                                swin_levels=(0,), swin_embed_dim=32, swin_head_channels=16, window_size=4,
                                mlp_ratio=2.0)
SMALL_AE = VQF4Config(ch=32, ch_mult=(1, 1, 1), num_res_blocks=1, n_embed=64)


def _is_fixed(key: str) -> bool:
    """The Swin buffers the converter checks against their window geometry (not weights)."""
    return key.endswith(("relative_position_index", "attn_mask"))


def released_unet_state(config: ResShiftUNetConfig, seed: int,
                        shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, torch.Tensor]:
    """A released-layout UNet state dict: random floats at ``shapes`` (default the module's), the Swin buffers as
    the release stores them (taken from a module built with ``config``)."""
    with torch.device("meta"):
        meta = ResShiftUNet(config).state_dict()
    shapes = shapes or {k: tuple(v.shape) for k, v in meta.items()}
    fixed = {k for k in shapes if _is_fixed(k)}
    state = random_tensors({k: s for k, s in shapes.items() if k not in fixed}, seed)
    if fixed:
        from dreamsr.families.resshift.network import relative_position_index, shifted_window_mask

        for key in fixed:  # the release's relative_position_index / calculate_mask for the stored r x r map
            shape = shapes[key]
            if key.endswith("relative_position_index"):
                state[key] = relative_position_index(math.isqrt(shape[0]))
            else:
                nw, n, _ = shape
                window = math.isqrt(n)
                side = window * math.isqrt(nw)
                state[key] = shifted_window_mask(side, side, window, window // 2, rule="release")
    return {k: state[k] for k in shapes}  # the listing's order


def released_ae_state(config: VQF4Config, seed: int) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in VQF4(config).state_dict().items()}
    return random_tensors(shapes, seed)


@pytest.fixture
def resshift_files(tmp_path: Path) -> tuple[Path, Path, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The small UNet as the release's training saves it ({'state_dict': ...} with a DDP 'module.' prefix) and the
    autoencoder as a flat state dict."""
    unet, ae = released_unet_state(SMALL_UNET, seed=3), released_ae_state(SMALL_AE, seed=4)
    unet_path, ae_path = tmp_path / "resshift_realsrx4_s15.pth", tmp_path / "autoencoder_vq_f4.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in unet.items()}}, unet_path)
    torch.save(ae, ae_path)
    return unet_path, ae_path, unet, ae


def check_resshift_file(out: Path, unet: dict[str, torch.Tensor], ae: dict[str, torch.Tensor],
                        unet_config: ResShiftUNetConfig, ae_config: VQF4Config, shift: ShiftConfig) -> None:
    model, info = load_checkpoint(out)  # strict
    sd = model.state_dict()
    umap, amap = unet_key_map(unet_config), autoencoder_key_map(ae_config)
    assert set(umap) == set(unet) and set(amap) == set(ae)
    assert set(sd) == {f"unet.{k}" for k in umap.values()} | {f"first_stage.{k}" for k in amap.values()}
    for src, dst in umap.items():
        assert torch.equal(sd[f"unet.{dst}"], unet[src].to(sd[f"unet.{dst}"].dtype)), src
    for src, dst in amap.items():
        assert torch.equal(sd[f"first_stage.{dst}"], ae[src]), src
    assert (info.family, info.process, info.scale, info.diffusion) == ("resshift", "shift", 4, shift)
    net = info.network
    assert net.unet.mask_rule == "release"  # the release's calculate_mask, at every size (issue 26)
    assert (net.first_stage, net.factor, net.unet, net.vqf4) == ("vqf4", 4, replace(unet_config, mask_rule="release"),
                                                             ae_config)
    T = shift.num_steps
    tile = unet_config.image_size  # the training size in latent px = LR px at x4 with the f4 latent
    assert info.sampling == {"steps": T, "sampler": "ddpm", "tile": tile, "overlap": tile // 4}
    assert "all T steps ancestrally as the release samples" in info.training["sampling_provenance"]
    assert info.build_process(model).chain == T
    SamplingOptions.resolve(info.sampling).check_chain(T)


def test_resshift_release_layout_converts_through_the_cli(tmp_path: Path, resshift_files) -> None:
    unet_path, ae_path, unet, ae = resshift_files
    out = tmp_path / "resshift-x4.safetensors"
    result = cli("--from", "resshift", unet_path, out, "--autoencoder", ae_path)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: resshift, x4 in the VQ-f4 latent" in result.stdout
    assert "schedule: T = 15 from the file name's _s15: the v1 kernel" in result.stdout
    check_resshift_file(out, unet, ae, SMALL_UNET, SMALL_AE, ShiftConfig.v1())
    info = read_info(out)
    assert (info.training["converted_from"], info.training["autoencoder_from"]) == (unet_path.name, ae_path.name)

    # a name without the step count: --steps says it (4: the v3 kernel)
    renamed = tmp_path / "my_resshift.pth"
    renamed.write_bytes(unet_path.read_bytes())
    out4 = tmp_path / "resshift-v3.safetensors"
    result = cli("--from", "resshift", renamed, out4, "--autoencoder", ae_path, "--steps", 4)
    assert result.exit_code == 0, result.output
    assert "T = 4 from --steps: the v3 kernel" in result.stdout
    check_resshift_file(out4, unet, ae, SMALL_UNET, SMALL_AE, ShiftConfig.v3())


@pytest.mark.parametrize("name, steps, T, kappa, sqrt_eta1", [
    ("resshift_realsrx4_s15.pth", None, 15, 2.0, 0.02),  # resshift.md: sqrt(eta) = [0.02, ..., 0.99]
    ("resshift_realsrx4_s15_v2.pth", 15, 15, 2.0, 0.02),
    ("resshift_bicsrx4_matlab_s15.pth", None, 15, 2.0, 0.02),
    ("resshift_bicsrx4_opencv_s15.pth", None, 15, 1.0, math.sqrt(0.001)),  # kappa 1: min(0.04, 0.04, cap)
    ("resshift_realsrx4_s4_v3.pth", None, 4, 2.0, 0.1),  # v3: min_noise 0.2 / kappa 2, no cap
    ("resshift_bicsrx4_s4.pth", None, 4, 2.0, 0.1),
    ("weights.pth", 4, 4, 2.0, 0.1),
])
def test_the_schedule_rule(name: str, steps: int | None, T: int, kappa: float, sqrt_eta1: float) -> None:
    shift, rule = release_schedule(name, steps)
    assert (shift.num_steps, shift.kappa, shift.power) == (T, kappa, 0.3)
    etas = eta_schedule(shift)
    assert etas[0].item() == pytest.approx(sqrt_eta1, rel=1e-12) and etas[-1].item() == pytest.approx(0.99)
    assert f"T = {T}" in rule


def test_the_recommended_tiles_are_the_training_size_on_whole_windows() -> None:
    """The release trains on 64 x 64 latents (256 px crops at x4 with the f4 autoencoder: 64 LR px); the v1 UNet's
    coarsest Swin layer (1/8 resolution, 8 px windows) needs sides that are multiples of 8 * 8 = 64 latent px."""
    from dreamsr.converters.resshift import recommended_sampling

    v1 = UNET_PRESETS["v1"]
    assert recommended_sampling(v1, 4, 15) == {"steps": 15, "sampler": "ddpm", "tile": 64, "overlap": 16}
    assert recommended_sampling(v1, 4, 4)["steps"] == 4
    assert v1.window_multiple == 8 * 2 ** 3 == 64


@pytest.mark.slow
def test_resshift_v1_listings_convert(tmp_path: Path) -> None:
    """The released v1 UNet and VQ-f4 layouts from the listings (118.6 M + 55.3 M values), random, converted."""
    unet_shapes = read_listing("resshift_v1_unet_state_dict.txt")
    ae_shapes = read_listing("vq_f4_autoencoder_state_dict.txt")
    unet = released_unet_state(UNET_PRESETS["v1"], seed=5, shapes=unet_shapes)
    ae = random_tensors(ae_shapes, seed=6)
    unet_path, ae_path = tmp_path / "resshift_realsrx4_s15.pth", tmp_path / "autoencoder_vq_f4.pth"
    torch.save(unet, unet_path)
    torch.save({"state_dict": ae}, ae_path)
    out = tmp_path / "resshift-v1.safetensors"
    result = cli("--from", "resshift", unet_path, out, "--autoencoder", ae_path)
    assert result.exit_code == 0, result.output
    assert "UNet 118.6M + autoencoder 55.3M parameters" in result.stdout
    check_resshift_file(out, unet, ae, UNET_PRESETS["v1"], VQF4Config(), ShiftConfig.v1())


# ----------------------------------------------------------------------------------------------------------------
# bad inputs: one line, a non-zero exit, no file
# ----------------------------------------------------------------------------------------------------------------

def test_bad_inputs_get_one_line_and_write_nothing(tmp_path: Path, resshift_files) -> None:
    unet_path, ae_path, unet, ae = resshift_files
    idm_state = idm_released_state(idm_released_shapes(IDM_PRESETS["tiny"]), seed=7)
    idm_path = tmp_path / "best_psnr_gen.pth"
    torch.save(idm_state, idm_path)
    idm_face = stride0_file(tmp_path / "idm_face_gen.pth", read_listing("idm_face_state_dict.txt"))
    sr3 = stride0_file(tmp_path / "I640000_E37_gen.pth", read_listing("sr3_16_128_state_dict.txt"))
    resshift_v1 = stride0_file(tmp_path / "resshift_bicsrx4_s15.pth", read_listing("resshift_v1_unet_state_dict.txt"))
    ae4 = tmp_path / "autoencoder_4ch.pth"
    torch.save(released_ae_state(VQF4Config(ch=32, ch_mult=(1, 1, 1), num_res_blocks=1, n_embed=64, z_channels=4,
                                            embed_dim=4), seed=8), ae4)
    truncated = tmp_path / "resshift_realsrx4_s4_v3.pth"
    truncated.write_bytes(unet_path.read_bytes()[: unet_path.stat().st_size // 2])
    no_steps = tmp_path / "finetuned.pth"
    no_steps.write_bytes(unet_path.read_bytes())
    missing_key = tmp_path / "best_gen.pth"
    torch.save({k: v for k, v in idm_state.items() if k != "denoise_fn.final_conv.block.3.bias"}, missing_key)
    out = tmp_path / "out.safetensors"
    idm, rs = ("--from", "idm"), ("--from", "resshift")
    cases = [
        # files of another family name the command that converts them
        (cli(*idm, unet_path, out, "--preset", "tiny", "--scale", 4), 1,
         "not a released IDM state dict (*_gen.pth); it looks like a ResShift UNet ('input_blocks.*', "
         "'time_embed.*'): convert it with --from resshift"),
        (cli(*idm, sr3, out), 1, "convert it with --from sr3"),
        (cli(*idm, ae_path, out), 1, "give it as --autoencoder with --from resshift"),
        (cli(*rs, idm_face, out, "--autoencoder", ae_path), 1, "not a released ResShift UNet"),
        (cli(*rs, idm_face, out, "--autoencoder", ae_path), 1, "convert it with --from idm"),
        (cli(*rs, ae_path, out, "--autoencoder", ae_path, "--steps", 15), 1, "give it as --autoencoder"),
        (cli(*rs, unet_path, out, "--autoencoder", unet_path), 1,
         "not a VQ autoencoder (autoencoder_vq_f4.pth); it looks like a ResShift UNet"),
        # the autoencoder is required, and its latent must be the UNet's
        (cli(*rs, unet_path, out), 2, "pass --autoencoder autoencoder_vq_f4.pth"),
        (cli(*rs, unet_path, out, "--autoencoder", ae4), 1,
         "autoencoder_4ch.pth: the autoencoder's latent has 4 channels but the UNet takes 3 and predicts 3"),
        # damaged files, missing tensors
        (cli(*rs, truncated, out, "--autoencoder", ae_path), 1, "a truncated or damaged PyTorch file"),
        (cli(*idm, missing_key, out, "--preset", "tiny", "--scale", 4), 1,
         "tensor 'denoise_fn.final_conv.block.3.bias' is missing"),
        (cli(*idm, idm_path, out, "--preset", "small", "--scale", 4), 1,  # another configuration
         "best_psnr_gen.pth: unexpected tensor 'encoder.body.1.bias' (and 1 more); not a released IDM generator of "
         "this configuration"),
        (cli(*rs, tmp_path / "absent_s15.pth", out, "--autoencoder", ae_path), 1, "input file not found"),
        # the schedule rule
        (cli(*rs, no_steps, out, "--autoencoder", ae_path), 2, "pass --steps 15 (v1 kernel) or --steps 4"),
        (cli(*rs, unet_path, out, "--autoencoder", ae_path, "--steps", 4), 2,
         "--steps 4 contradicts the file name resshift_realsrx4_s15.pth"),
        (cli(*rs, no_steps, out, "--autoencoder", ae_path, "--steps", 7), 2, "T = 7 steps (from --steps) is no "
         "released ResShift schedule"),
        # options of another layout
        (cli(*idm, idm_path, out, "--autoencoder", ae_path), 2, "--autoencoder does not apply to --from idm"),
        (cli(*rs, unet_path, out, "--autoencoder", ae_path, "--preset", "v1"), 2,
         "--preset does not apply to --from resshift (the configuration is read from the tensor shapes)"),
        (cli(*rs, unet_path, out, "--autoencoder", ae_path, "--scale", 4), 2, "--scale does not apply"),
        (cli(*idm, idm_path, out, "--steps", 4), 2, "--steps does not apply to --from idm"),
        (cli(*idm, idm_path, out, "--preset", "tiny", "--config", ae_path), 2, "give at most one of --preset"),
        (cli(*idm, idm_path, out, "--preset", "huge"), 2, "unknown IDM preset 'huge'"),
        (cli("--from", "sr4", idm_path, out), 2, "--from must be one of dreamsr, sr3, idm, resshift"),
        (cli(*idm, idm_path, tmp_path / "out.pt", "--preset", "tiny", "--scale", 4), 2,
         "output must be a .safetensors file"),
        # the plain converter points to the right --from
        (cli(idm_path, out, "--preset", "tiny", "--scale", 4), 1, "convert it with --from idm"),
        (cli(resshift_v1, out, "--preset", "tiny", "--scale", 4), 1, "convert it with --from resshift"),
    ]
    for result, code, text in cases:
        one_error_line(result, code, text)
        nothing_written(out)
    nothing_written(tmp_path / "out.pt")
