"""Released SR3 / DREAM checkpoints <-> dreamsr (dreamsr/converters/sr3.py).

Released-layout state dicts are built from the listing of the real 16->128 file (tests/data, copied from
shared/reference/sr3_16_128_state_dict.txt) with random values. Other configurations (64->512, tiny widths)
come from an SR3 key generator written here from sr3.md's module tree, which must reproduce that listing
exactly first. The converted UNet is compared with a re-implementation of the released forward written here
from sr3.md (condition first in the concat, sin-first embedding of gamma without scaling, attention logits /
sqrt(C), FeatureWiseAffine), reading the released tensors directly.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from dreamsr.checkpoint import CheckpointInfo, load_checkpoint, read_info, save_checkpoint
from dreamsr.cli import app
from dreamsr.diffusion import DiffusionConfig
from dreamsr.errors import CheckpointError
from dreamsr.converters import sr3 as R
from dreamsr.families.sr3.unet import UNet, UNetConfig

DATA = Path(__file__).parent / "data"
BUFFERS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
           "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
           "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2")
D = "denoise_fn."
runner = CliRunner()

# (inner, mults, res_blocks, attn_res, image_size, norm groups) of sr3.md's configurations and a tiny one
FACE_16_128 = dict(inner=64, mults=(1, 2, 4, 8, 8), res_blocks=2, attn_res=(16,), image_size=128)
FACE_64_512 = dict(inner=64, mults=(1, 2, 4, 8, 16), res_blocks=1, attn_res=(), image_size=512)
TINY = dict(inner=16, mults=(1, 2, 2), res_blocks=2, attn_res=(8,), image_size=16)


def read_listing(name: str) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for line in (DATA / name).read_text().splitlines():
        key, shape = re.fullmatch(r"(\S+) \((.*)\)", line.strip()).groups()
        out.append((key, tuple(int(s) for s in shape.split(",") if s.strip())))
    return out


def sr3_listing(inner: int, mults: tuple[int, ...], res_blocks: int, attn_res: tuple[int, ...], image_size: int,
                *, affine: bool = False, steps: int = 2000) -> list[tuple[str, tuple[int, ...]]]:
    """Keys and shapes of SR3's GaussianDiffusion.state_dict() (sr3.md: UNet.__init__ L170-233), in order."""
    keys: list[tuple[str, tuple[int, ...]]] = [(b, (steps,)) for b in BUFFERS]

    def add(name: str, *shape: int) -> None:
        keys.append((D + name, tuple(shape)))

    def resblock(p: str, cin: int, cout: int, attn: bool) -> None:
        add(f"{p}.res_block.noise_func.noise_func.0.weight", cout * (2 if affine else 1), inner)
        add(f"{p}.res_block.noise_func.noise_func.0.bias", cout * (2 if affine else 1))
        for blk, c_in in (("block1", cin), ("block2", cout)):
            add(f"{p}.res_block.{blk}.block.0.weight", c_in)
            add(f"{p}.res_block.{blk}.block.0.bias", c_in)
            add(f"{p}.res_block.{blk}.block.3.weight", cout, c_in, 3, 3)
            add(f"{p}.res_block.{blk}.block.3.bias", cout)
        if cin != cout:
            add(f"{p}.res_block.res_conv.weight", cout, cin, 1, 1)
            add(f"{p}.res_block.res_conv.bias", cout)
        if attn:
            add(f"{p}.attn.norm.weight", cout)
            add(f"{p}.attn.norm.bias", cout)
            add(f"{p}.attn.qkv.weight", 3 * cout, cout, 1, 1)
            add(f"{p}.attn.out.weight", cout, cout, 1, 1)
            add(f"{p}.attn.out.bias", cout)

    add("noise_level_mlp.1.weight", 4 * inner, inner)
    add("noise_level_mlp.1.bias", 4 * inner)
    add("noise_level_mlp.3.weight", inner, 4 * inner)
    add("noise_level_mlp.3.bias", inner)
    add("downs.0.weight", inner, 6, 3, 3)
    add("downs.0.bias", inner)
    feats, pre, res, i = [inner], inner, image_size, 1
    for ind, m in enumerate(mults):
        for _ in range(res_blocks):
            resblock(f"downs.{i}", pre, inner * m, res in attn_res)
            pre = inner * m
            feats.append(pre)
            i += 1
        if ind != len(mults) - 1:
            add(f"downs.{i}.conv.weight", pre, pre, 3, 3)
            add(f"downs.{i}.conv.bias", pre)
            feats.append(pre)
            res //= 2
            i += 1
    resblock("mid.0", pre, pre, True)
    resblock("mid.1", pre, pre, False)
    j = 0
    for ind in reversed(range(len(mults))):
        for _ in range(res_blocks + 1):
            resblock(f"ups.{j}", pre + feats.pop(), inner * mults[ind], res in attn_res)
            pre = inner * mults[ind]
            j += 1
        if ind != 0:
            add(f"ups.{j}.conv.weight", pre, pre, 3, 3)
            add(f"ups.{j}.conv.bias", pre)
            res *= 2
            j += 1
    add("final_conv.block.0.weight", pre)
    add("final_conv.block.0.bias", pre)
    add("final_conv.block.3.weight", 3, pre, 3, 3)
    add("final_conv.block.3.bias", 3)
    return keys


def schedule(steps: int = 2000, start: float = 1e-6, end: float = 1e-2) -> dict[str, torch.Tensor]:
    """sr3.md's buffers, computed here in torch float64 (the release: numpy float64), stored float32."""
    b = torch.linspace(start, end, steps, dtype=torch.float64)
    a = 1 - b
    ac = torch.cumprod(a, 0)
    acp = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    pv = b * (1 - acp) / (1 - ac)
    v = [b, ac, acp, ac.sqrt(), (1 - ac).sqrt(), (1 - ac).log(), (1 / ac).sqrt(), (1 / ac - 1).sqrt(), pv,
         pv.clamp_min(1e-20).log(), b * acp.sqrt() / (1 - ac), (1 - acp) * a.sqrt() / (1 - ac)]
    return {k: t.float() for k, t in zip(BUFFERS, v)}


def random_state(listing: list[tuple[str, tuple[int, ...]]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random released tensors of the listed shapes (weights ~ 1/sqrt(fan_in), norms ~ 1, biases small) and
    the release's schedule buffers."""
    g = torch.Generator().manual_seed(seed)
    steps = listing[0][1][0]
    sd: dict[str, torch.Tensor] = {}
    buffers = schedule(steps)
    for key, shape in listing:
        if key in buffers:
            sd[key] = buffers[key]
        elif len(shape) > 1:
            sd[key] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        elif re.search(r"(block\.0|norm)\.weight$", key):
            sd[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            sd[key] = 0.1 * torch.randn(shape, generator=g)
    return sd


# ---- an independent re-implementation of the released forward (sr3.md), on the released tensors ------------
def sr3_forward(sd: dict[str, torch.Tensor], x_in: torch.Tensor, gamma: torch.Tensor, groups: int, *,
                cos_first: bool = False, attn_scale: str = "sqrt", affine_beta_first: bool = False) -> torch.Tensor:
    """UNet.forward(x_in, gamma) of SR3: x_in = cat([condition, x_t]) [B, 6, H, W]; gamma [B, 1] = sqrt(alpha_bar).
    The keyword arguments make deliberately wrong variants (to show the parity test catches each mistake)."""
    w = lambda k: sd[D + k]  # noqa: E731
    has = lambda k: D + k in sd  # noqa: E731
    swish = lambda x: x * torch.sigmoid(x)  # noqa: E731
    inner = w("noise_level_mlp.1.weight").shape[1]
    count = inner // 2  # PositionalEncoding: freq_k = exp(-ln(1e4) k / count), sin first, gamma unscaled
    step = torch.arange(count, dtype=gamma.dtype) / count
    enc = gamma.unsqueeze(1) * torch.exp(-math.log(1e4) * step.unsqueeze(0))  # [B, 1, count]
    enc = torch.cat([enc.cos(), enc.sin()] if cos_first else [enc.sin(), enc.cos()], dim=-1)
    t = F.linear(swish(F.linear(enc, w("noise_level_mlp.1.weight"), w("noise_level_mlp.1.bias"))),
                 w("noise_level_mlp.3.weight"), w("noise_level_mlp.3.bias"))  # [B, 1, inner]
    b = x_in.shape[0]

    def block(p: str, x: torch.Tensor) -> torch.Tensor:  # GroupNorm, Swish, (Dropout), Conv3x3
        h = swish(F.group_norm(x, groups, w(p + ".block.0.weight"), w(p + ".block.0.bias")))
        return F.conv2d(h, w(p + ".block.3.weight"), w(p + ".block.3.bias"), padding=1)

    def resnet(p: str, x: torch.Tensor) -> torch.Tensor:
        h = block(p + ".res_block.block1", x)
        nf = F.linear(t, w(p + ".res_block.noise_func.noise_func.0.weight"),
                      w(p + ".res_block.noise_func.noise_func.0.bias")).view(b, -1, 1, 1)
        if nf.shape[1] == 2 * h.shape[1]:  # FeatureWiseAffine use_affine_level: gamma, beta = chunk(2)
            g_, b_ = nf.chunk(2, dim=1)
            if affine_beta_first:
                g_, b_ = b_, g_
            h = (1 + g_) * h + b_
        else:
            h = h + nf
        h = block(p + ".res_block.block2", h)
        skip = F.conv2d(x, w(p + ".res_block.res_conv.weight"), w(p + ".res_block.res_conv.bias")) \
            if has(p + ".res_block.res_conv.weight") else x
        h = h + skip
        if has(p + ".attn.qkv.weight"):
            _, c, hh, ww = h.shape
            n = F.group_norm(h, groups, w(p + ".attn.norm.weight"), w(p + ".attn.norm.bias"))
            qkv = F.conv2d(n, w(p + ".attn.qkv.weight")).view(b, 1, 3 * c, hh, ww)
            q, k, v = qkv.chunk(3, dim=2)
            scale = math.sqrt(c) if attn_scale == "sqrt" else float(c)
            att = torch.einsum("bnchw,bncyx->bnhwyx", q, k) / scale
            att = torch.softmax(att.reshape(b, 1, hh, ww, -1), -1).view(b, 1, hh, ww, hh, ww)
            o = torch.einsum("bnhwyx,bncyx->bnchw", att, v).reshape(b, c, hh, ww)
            h = F.conv2d(o, w(p + ".attn.out.weight"), w(p + ".attn.out.bias")) + h
        return h

    x = F.conv2d(x_in, w("downs.0.weight"), w("downs.0.bias"), padding=1)
    feats = [x]
    i = 1
    while has(f"downs.{i}.conv.weight") or has(f"downs.{i}.res_block.block1.block.3.weight"):
        if has(f"downs.{i}.conv.weight"):
            x = F.conv2d(x, w(f"downs.{i}.conv.weight"), w(f"downs.{i}.conv.bias"), stride=2, padding=1)
        else:
            x = resnet(f"downs.{i}", x)
        feats.append(x)
        i += 1
    x = resnet("mid.1", resnet("mid.0", x))
    j = 0
    while has(f"ups.{j}.conv.weight") or has(f"ups.{j}.res_block.block1.block.3.weight"):
        if has(f"ups.{j}.conv.weight"):
            x = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w(f"ups.{j}.conv.weight"),
                         w(f"ups.{j}.conv.bias"), padding=1)
        else:
            x = resnet(f"ups.{j}", torch.cat((x, feats.pop()), dim=1))  # x first, skip second
        j += 1
    return block("final_conv", x)


def parity(sd: dict[str, torch.Tensor], model: UNet, groups: int, side: int, seed: int = 1,
           **wrong: object) -> float:
    """max |ours - release| / max |release| on random inputs; ``wrong`` alters the reference (see sr3_forward)."""
    g = torch.Generator().manual_seed(seed)
    y_t = torch.randn(2, 3, side, side, generator=g)
    cond = torch.randn(2, 3, side, side, generator=g).clamp(-1, 1)
    gamma = torch.tensor([0.93, 0.12])
    with torch.no_grad():
        ref = sr3_forward(sd, torch.cat([cond, y_t], dim=1), gamma.view(2, 1), groups, **wrong)  # condition first
        ours = model.eval()(y_t, cond, gamma)
    return ((ours - ref).abs().max() / ref.abs().max()).item()


# ---- the key generator matches the real listing -----------------------------------------------------------
def test_key_generator_reproduces_the_real_16_128_listing() -> None:
    real = read_listing("sr3_16_128_state_dict.txt")
    assert len(real) == 374
    assert sr3_listing(**FACE_16_128) == real


# ---- placement of every tensor ----------------------------------------------------------------------------
_PARTS = {"res_block.block1.block.0": "res.norm1", "res_block.block1.block.3": "res.conv1",
          "res_block.block2.block.0": "res.norm2", "res_block.block2.block.3": "res.conv2",
          "res_block.noise_func.noise_func.0": "res.emb", "res_block.res_conv": "res.skip",
          "attn.norm": "attn.norm", "attn.qkv": "attn.qkv", "attn.out": "attn.out"}


def dreamsr_name(released: str) -> str:
    """Where a released tensor must land in dreamsr's UNet (rules written from the two module trees)."""
    k = released[len(D):]
    module, leaf = k.rsplit(".", 1)
    if module.startswith("noise_level_mlp."):
        return {"noise_level_mlp.1": "noise_embed.mlp.0", "noise_level_mlp.3": "noise_embed.mlp.2"}[module] + "." + leaf
    if module == "downs.0":
        return "head." + leaf
    if module.startswith("final_conv."):
        return {"final_conv.block.0": "tail.0", "final_conv.block.3": "tail.2"}[module] + "." + leaf
    group, idx, rest = re.fullmatch(r"(downs|mid|ups)\.(\d+)\.(.+)", module).groups()
    n = int(idx) - 1 if group == "downs" else int(idx)  # dreamsr's head is SR3's downs.0
    ours = {"downs": "down", "mid": "mid", "ups": "up"}[group]
    if rest == "conv":  # Downsample (a bare conv in dreamsr) / Upsample (.conv in both)
        return f"{ours}.{n}.{leaf}" if group == "downs" else f"{ours}.{n}.conv.{leaf}"
    return f"{ours}.{n}.{_PARTS[rest]}.{leaf}"


def check_placement(sd: dict[str, torch.Tensor], model: UNet) -> None:
    ours = model.state_dict()
    released = [k for k in sd if k.startswith(D)]
    assert len(ours) == len(released)
    for k in released:
        mine = ours[dreamsr_name(k)]
        if k == D + "downs.0.weight":  # SR3 sees cat([cond, x_t]); dreamsr cat([y_t, cond])
            assert torch.equal(mine[:, :3], sd[k][:, 3:]) and torch.equal(mine[:, 3:], sd[k][:, :3])
        else:
            assert torch.equal(mine, sd[k]), k


@pytest.mark.parametrize("affine", [False, True])
def test_real_16_128_listing_converts_with_every_tensor_in_place(affine: bool) -> None:
    listing = read_listing("sr3_16_128_state_dict.txt")
    if affine:  # before SR3's commit 0f39139 FeatureWiseAffine defaulted to affine: noise_func has 2C rows
        listing = [(k, (2 * s[0], *s[1:]) if "noise_func" in k else s) for k, s in listing]
    sd = random_state(listing, seed=3)
    conv = R.from_released(sd, source="I640000_E37_gen.pth")
    assert conv.release is not None and conv.release.name == "sr3-face-16-128"
    assert conv.scale == 8 and conv.task == "face"
    assert conv.network == UNetConfig(inner_channels=64, channel_mults=(1, 2, 4, 8, 8), res_blocks=2,
                                      attention_levels=(3,), dropout=0.2, norm_groups=32, affine_level=affine)
    assert conv.diffusion == DiffusionConfig(num_steps=2000, beta_start=1e-6, beta_end=1e-2, target="image")
    n_params = sum(v.numel() for k, v in sd.items() if k.startswith(D))
    assert conv.model.num_parameters() == n_params and (affine or n_params == 97_807_491)
    check_placement(sd, conv.model)
    # and back: the released layout, in the release's key order, every tensor identical
    back = R.to_released(conv.model, conv.diffusion)
    assert list(back) == [k for k, _ in listing]
    assert all(torch.equal(back[k], sd[k]) for k in sd if k.startswith(D))


def test_real_16_128_forward_matches_the_released_forward() -> None:
    """The full-size released network (random weights) on a 32x32 input: attention runs at 4x4 (level 3)."""
    sd = random_state(read_listing("sr3_16_128_state_dict.txt"), seed=5)
    conv = R.from_released(sd, source="x.pth")
    assert parity(sd, conv.model, groups=32, side=32) < 1e-4


@pytest.mark.parametrize("affine", [False, True])
def test_64_512_configuration_converts_and_matches_the_released_forward(affine: bool) -> None:
    listing = sr3_listing(**FACE_64_512, affine=affine)
    sd = random_state(listing, seed=7)
    conv = R.from_released(sd, source="I830000_E32_gen.pth")
    assert conv.release is not None and conv.release.name == "sr3-face-64-512" and conv.scale == 8
    assert conv.network == UNetConfig(inner_channels=64, channel_mults=(1, 2, 4, 8, 16), res_blocks=1,
                                      attention_levels=(), dropout=0.0, norm_groups=16, affine_level=affine)
    check_placement(sd, conv.model)
    assert parity(sd, conv.model, groups=16, side=16) < 1e-4


@pytest.mark.parametrize("affine", [False, True])
def test_tiny_forward_parity_and_each_wrong_mapping_is_caught(affine: bool) -> None:
    """At tiny widths the attention (level 1, 8x8 of a 16x16 input) and the affine mode are exercised; the same
    comparison with the condition second, cos-first sinusoids, logits / C or beta-first affine fails."""
    sd = random_state(sr3_listing(**TINY, affine=affine), seed=11)
    conv = R.from_released(sd, source="tiny.pth", norm_groups=4, scale=8)
    assert conv.network.attention_levels == (1,) and conv.network.affine_level is affine
    check_placement(sd, conv.model)
    assert parity(sd, conv.model, groups=4, side=16) < 1e-5
    for wrong in ({"cos_first": True}, {"attn_scale": "c"}) + (({"affine_beta_first": True},) if affine else ()):
        assert parity(sd, conv.model, groups=4, side=16, **wrong) > 1e-3, wrong
    conv.model.head.weight.data = conv.model.head.weight.data[:, [3, 4, 5, 0, 1, 2]]  # the other concat order
    assert parity(sd, conv.model, groups=4, side=16) > 1e-3


# ---- errors of the mapping and the schedule ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_sd() -> dict[str, torch.Tensor]:
    return random_state(sr3_listing(**TINY), seed=13)


def convert_error(sd: dict[str, torch.Tensor], **kw: object) -> str:
    with pytest.raises(CheckpointError) as err:
        R.from_released(sd, source="f.pth", **{"norm_groups": 4, "scale": 8, **kw})
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_unknown_missing_and_reshaped_keys_are_named(tiny_sd: dict[str, torch.Tensor]) -> None:
    sd = dict(tiny_sd)
    del sd[D + "ups.2.res_block.res_conv.bias"]
    assert "tensor 'denoise_fn.ups.2.res_block.res_conv.bias' is missing" in convert_error(sd)
    sd = {**tiny_sd, D + "ups.2.attn.qkv.weight": torch.zeros(48, 16, 1, 1)}
    assert "unexpected tensor 'denoise_fn.ups.2.attn.qkv.weight'" in convert_error(sd)
    sd = {**tiny_sd, "ema_decay": torch.zeros(1)}
    assert "unexpected tensor 'ema_decay'" in convert_error(sd)
    sd = {**tiny_sd, D + "ups.0.res_block.noise_func.noise_func.0.weight": torch.zeros(64, 16)}  # affine in one
    assert "'denoise_fn.ups.0.res_block.noise_func.noise_func.0.weight' has shape (64, 16)" in convert_error(sd)
    sd = {**tiny_sd, D + "mid.0.res_block.noise_func.noise_func.0.weight": torch.zeros(48, 16)}
    assert "has 48 rows" in convert_error(sd)


def test_schedule_is_identified_from_betas_and_checked(tiny_sd: dict[str, torch.Tensor]) -> None:
    other = {**tiny_sd, **schedule(1000, 1e-4, 2e-2)}
    conv = R.from_released(other, source="f.pth", norm_groups=4, scale=8)
    assert conv.diffusion == DiffusionConfig(num_steps=1000, beta_start=1e-4, beta_end=2e-2)
    sd = {**tiny_sd, "posterior_variance": tiny_sd["posterior_variance"] * 1.01}
    assert "schedule buffer 'posterior_variance' does not match" in convert_error(sd)
    sd = dict(tiny_sd)
    del sd["sqrt_recipm1_alphas_cumprod"]
    assert "schedule buffer 'sqrt_recipm1_alphas_cumprod' is missing" in convert_error(sd)
    quad = torch.linspace(1e-6 ** 0.5, 1e-2 ** 0.5, 2000, dtype=torch.float64) ** 2
    assert "'quad' schedule" in convert_error({**tiny_sd, "betas": quad.float()})
    cosine_like = torch.cat([torch.full((1000,), 1e-3), torch.full((1000,), 2e-2)])
    assert "is not linear" in convert_error({**tiny_sd, "betas": cosine_like})


def test_the_module_computes_the_schedule_as_the_release_does() -> None:
    """R.schedule_buffers (numpy, as SR3) against this file's torch computation: equal to float32 rounding."""
    ours, theirs = R.schedule_buffers(DiffusionConfig()), schedule()
    for k in BUFFERS:
        assert torch.allclose(ours[k], theirs[k], rtol=2e-7, atol=0), k


def test_a_structure_no_release_has_needs_norm_groups_and_scale(tiny_sd: dict[str, torch.Tensor]) -> None:
    with pytest.raises(CheckpointError, match=r"matches no released configuration .*\(--norm-groups N --scale S\)"):
        R.from_released(tiny_sd, source="f.pth")


# ---- files and the CLI -------------------------------------------------------------------------------------
class NotWeights:  # a pickled Python object: refused by torch.load(weights_only=True)
    def __init__(self) -> None:
        self.x = 1


def cli(*args: object):
    return runner.invoke(app, ["weights", *[str(a) for a in args]])


def one_error_line(result, code: int, text: str) -> None:
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.stderr


@pytest.fixture
def tiny_pth(tmp_path: Path, tiny_sd: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / "I1000_gen.pth"
    torch.save(tiny_sd, path)
    return path


def test_cli_convert_export_round_trips_exactly(tmp_path: Path, tiny_pth: Path,
                                                tiny_sd: dict[str, torch.Tensor]) -> None:
    out = tmp_path / "sr3-face.safetensors"
    ok = cli("convert", "--from", "sr3", tiny_pth, out, "--norm-groups", 4, "--scale", 8,
             "--task", "face")
    assert ok.exit_code == 0 and f"wrote {out}" in ok.stdout, ok.output
    info = read_info(out)
    assert (info.family, info.process, info.scale) == ("sr3", "gaussian", 8)
    assert info.training["task"] == "face" and info.training["converted_from"] == "I1000_gen.pth"
    assert info.sampling == {"steps": 2000, "sampler": "ddpm", "tile": 0} and "the paper's setting" in info.training["sampling_provenance"]
    assert info.network.norm_groups == 4 and info.diffusion == DiffusionConfig()
    back = tmp_path / "I1000_back_gen.pth"
    exp = cli("export", "--to", "sr3", out, back)
    assert exp.exit_code == 0, exp.output
    options = json.loads(exp.stdout)  # SR3's config "model" section: attention by resolution of image_size 128
    assert options["unet"]["attn_res"] == [64] and options["unet"]["norm_groups"] == 4
    again = torch.load(back, weights_only=True)  # released -> dreamsr -> released: identical
    assert list(again) == list(tiny_sd) and all(torch.equal(again[k], tiny_sd[k]) for k in tiny_sd)


def test_dreamsr_to_released_to_dreamsr_is_exact(tmp_path: Path) -> None:
    cfg = UNetConfig(inner_channels=16, channel_mults=(1, 2, 2), res_blocks=2, attention_levels=(1,), dropout=0.0,
                     norm_groups=4, affine_level=True)
    torch.manual_seed(0)
    model = UNet(cfg)
    info = CheckpointInfo(network=cfg, diffusion=DiffusionConfig(num_steps=1000, beta_start=1e-4, beta_end=2e-2),
                          scale=8, training={"task": "face"}, dreamsr_version="test")
    src = save_checkpoint(tmp_path / "mine.safetensors", model, info)
    pth = tmp_path / "mine_gen.pth"
    path, options = R.export_released(src, pth)
    assert options["unet"]["attn_res"] == [64] and options["diffusion"]["image_size"] == 128
    assert options["beta_schedule"]["train"] == {"schedule": "linear", "n_timestep": 1000, "linear_start": 1e-4,
                                                 "linear_end": 2e-2}
    dst = R.convert_released(pth, tmp_path / "back.safetensors", norm_groups=4, scale=8, task="face")
    model2, info2 = load_checkpoint(dst)
    assert info2.network == cfg and info2.diffusion == info.diffusion and info2.scale == 8
    sd1, sd2 = model.state_dict(), model2.state_dict()
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)


def test_released_layout_given_to_the_plain_convert_points_to_from_sr3(tmp_path: Path, tiny_pth: Path) -> None:
    out = tmp_path / "x.safetensors"
    one_error_line(cli("convert", tiny_pth, out, "--preset", "tiny", "--scale", 4), 1, "--from sr3")
    assert not out.exists()


def _write_listing_file(path: Path, listing_name: str) -> Path:
    """A file with every key of a listing at its listed shape (stride-0 views: a few bytes on disk)."""
    zero = torch.zeros(1)
    torch.save({k: zero.expand(s) for k, s in read_listing(listing_name)}, path)
    return path


def test_bad_inputs_get_one_line_a_nonzero_exit_and_no_file(tmp_path: Path, tiny_pth: Path) -> None:
    out = tmp_path / "out.safetensors"
    pickled = tmp_path / "model.pth"
    torch.save({"model": NotWeights()}, pickled)
    param = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.Adam([param], lr=1e-4)
    param.grad = torch.ones(3)
    opt.step()
    opt_file = tmp_path / "I640000_E37_opt.pth"
    torch.save({"epoch": 37, "iter": 640000, "scheduler": None, "optimizer": opt.state_dict()}, opt_file)
    truncated = tmp_path / "I1000_gen_partial.pth"
    truncated.write_bytes(tiny_pth.read_bytes()[: tiny_pth.stat().st_size // 2])
    idm = _write_listing_file(tmp_path / "best_psnr_gen.pth", "idm_face_state_dict.txt")
    resshift = _write_listing_file(tmp_path / "resshift_realsrx4_s15.pth", "resshift_v1_unet_state_dict.txt")
    cases = [(pickled, "a pickle of Python objects (it needs tests.test_sr3_release.NotWeights)"),
             (opt_file, "training state (`*_opt.pth`: epoch 37, iter 640000"),
             (truncated, "a truncated or damaged PyTorch file"),
             (idm, "an IDM GaussianDiffusion state dict"),
             (resshift, "a ResShift / guided-diffusion UNet"),
             (tmp_path / "missing.pth", "input file not found")]
    for src, text in cases:
        one_error_line(cli("convert", "--from", "sr3", src, out), 1, text)
        assert not out.exists() and not list(tmp_path.glob(".out.safetensors.*")), src
    one_error_line(cli("convert", "--from", "sr3", tiny_pth, out, "--preset", "tiny"), 2, "does not apply")
    one_error_line(cli("convert", "--from", "sr4", tiny_pth, out), 2, "--from must be one of dreamsr, sr3, idm, resshift")
    one_error_line(cli("convert", "--from", "sr3", tiny_pth, out, "--task", "faces"), 2, "task must be one of")
    one_error_line(cli("convert", "--from", "sr3", tiny_pth, out), 1, "matches no released configuration")
    one_error_line(cli("convert", "--from", "sr3", tiny_pth, tmp_path / "o.pt", "--norm-groups", 4, "--scale", 8), 2,
                   "output must be a .safetensors file")
    assert not out.exists()


def test_export_refuses_what_the_release_cannot_run(tmp_path: Path, tiny_checkpoint: Path) -> None:
    cfg = UNetConfig(inner_channels=8, channel_mults=(1, 2), res_blocks=1, attention_levels=(), dropout=0.0,
                     norm_groups=4)
    residual = save_checkpoint(tmp_path / "res.safetensors", UNet(cfg),
                               CheckpointInfo(network=cfg, diffusion=DiffusionConfig(target="residual"), scale=4))
    out = tmp_path / "o.pth"
    one_error_line(cli("export", "--to", "sr3", residual, out), 1, "diffuses the 'residual' target")
    one_error_line(cli("export", "--to", "sr3", tiny_checkpoint, tmp_path / "o.safetensors"), 2,
                   "output must be a .pth or .pt file")
    one_error_line(cli("export", "--to", "idm", tiny_checkpoint, out), 2, "--to must be sr3")
    assert not out.exists()


# ---- the face path ----------------------------------------------------------------------------------------
def test_face16_upscales_to_128_in_one_tile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`dreamsr upscale face16.png --weights sr3-face.safetensors`: 16x16 -> 128x128, the whole face in one piece
    as the release feeds it (the converted file recommends tile 0 and the ancestral sampler); with an explicit
    --tile 40 it is still one tile, padded by reflection to 40x40 LR (320x320 at the network)."""
    from dreamsr.families.sr3.unet import UNet
    from dreamsr.tiling import make_grid

    seen: list[tuple[int, ...]] = []
    forward = UNet.forward
    monkeypatch.setattr(UNet, "forward", lambda self, y, x, g: seen.append(tuple(y.shape[-2:])) or forward(self, y, x, g))

    src = tmp_path / "face_gen.pth"  # tiny widths; attention at level 2 keeps the padded tile cheap
    torch.save(random_state(sr3_listing(inner=16, mults=(1, 2, 2), res_blocks=1, attn_res=(4,), image_size=16)), src)
    weights = R.convert_released(src, tmp_path / "sr3-face.safetensors", norm_groups=4, scale=8, task="face")
    face = tmp_path / "face16.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(face)
    assert len(make_grid(16, 16, 40, 5)) == 1
    for tile, name, side in (([], "sr.png", 128), (["--tile", "40"], "sr40.png", 320)):
        seen.clear()
        res = runner.invoke(app, ["upscale", str(face), "--weights", str(weights), "-o", str(tmp_path / name),
                                  "--steps", "3", "--precision", "fp32", *tile])
        assert res.exit_code == 0, res.output
        assert Image.open(tmp_path / name).size == (128, 128)
        assert seen == [(side, side)] * 3 and "ddpm 3 steps" in res.output
    assert read_info(weights).sampling["steps"] == 2000  # what `upscale` uses without --steps


@pytest.mark.slow
def test_full_size_file_converts_through_the_cli(tmp_path: Path) -> None:
    """The 16->128 listing as a 390 MB file, through `dreamsr weights convert --from sr3` and back."""
    sd = random_state(read_listing("sr3_16_128_state_dict.txt"), seed=17)
    src = tmp_path / "I640000_E37_gen.pth"
    torch.save(sd, src)
    out = tmp_path / "sr3-face.safetensors"
    assert cli("convert", "--from", "sr3", src, out).exit_code == 0
    info = read_info(out)
    assert info.scale == 8 and info.training["task"] == "face" and info.training["release"] == "sr3-face-16-128"
    back = tmp_path / "back_gen.pth"
    assert cli("export", "--to", "sr3", out, back).exit_code == 0
    again = torch.load(back, weights_only=True)
    assert list(again) == list(sd) and all(torch.equal(again[k], sd[k]) for k in sd)


def test_checkpoints_written_before_affine_level_load_as_additive() -> None:
    """The shipped model's metadata predates UNetConfig.affine_level: it loads with the additive embedding."""
    from safetensors import safe_open

    import dreamsr

    shipped = Path(dreamsr.__file__).parent / "assets" / "dreamsr-x4-small.safetensors"
    with safe_open(str(shipped), framework="pt") as fh:
        meta = fh.metadata()
    assert "affine_level" not in json.loads(meta.get("network", meta.get("unet")))
    model, info = load_checkpoint(shipped)
    assert info.network.affine_level is False and model.down[0].res.emb.out_features == 32
