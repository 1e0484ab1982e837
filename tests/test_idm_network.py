"""IDM network and released-weight converter (dreamsr/families/idm/{network,release}.py).

Oracles: the released key/shape listing (../shared/reference/idm_face_state_dict.txt); a functional
reimplementation of the released forward pass written here from the release's formulas, reading the tensors by
their released names (so the converter's mapping and the network are checked together); explicit computations of
the blur, equalised conv, scaled leaky ReLU and the LIIF query; brute force for the tile alignment.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dreamsr.errors import CheckpointError, ConfigError, InputError
from dreamsr.families.idm.network import (PRESETS, Blur, EqualConv2d, EqualLinear, IDMConfig, IDMNet,
                                          ImplicitUpsampler, align_tiling, aligned_lr_length, derived_scale,
                                          nearest_indices, output_size, query_indices, scale_fraction,
                                          scaled_leaky_relu, tile_unit)
from dreamsr.converters.idm import SCHEDULE_BUFFERS, convert_release, read_release, release_layout

LISTING = Path(__file__).resolve().parents[2] / "shared" / "reference" / "idm_face_state_dict.txt"
RELEASED_USED_PARAMS = 99_801_670  # the listing minus dropped modules and buffers (idm.md: "~99.80M receive grads")

# a 3-level config that exercises everything the face model has (attention, res_conv, several upsamplers)
SMALL3 = IDMConfig(inner_channels=8, channel_mults=(1, 2, 2), res_blocks=1, attention_levels=(1,), dropout=0.0,
                   norm_groups=4, encoder_channels=8, encoder_blocks=2, mlp_hidden=12, max_scale=4.0)


def listing() -> dict[str, tuple[int, ...]]:
    if not LISTING.is_file():
        pytest.skip(f"reference listing not found at {LISTING}")
    out = {}
    for line in LISTING.read_text().splitlines():
        key, shape = line.split(" (", 1)
        out[key] = tuple(int(s) for s in shape.rstrip(")").split(",") if s.strip())
    return out


def linear_schedule(n: int = 2000, start: float = 1e-6, end: float = 1e-2) -> dict[str, torch.Tensor]:
    betas = torch.linspace(start, end, n, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)
    return {"betas": betas.float(), "alphas_cumprod": ab.float()}


def released_shapes(config: IDMConfig) -> dict[str, tuple[int, ...]]:
    """Released-layout key -> shape for ``config``: used keys from the network, dead pyramid keys as the release
    builds them (the reference forward computes them), other dropped keys any shape, buffers [T]."""
    layout = release_layout(config)
    with torch.device("meta"):
        net_shapes = {k: tuple(v.shape) for k, v in IDMNet(config).state_dict().items()}
    shapes = {src: net_shapes[dst] for src, dst in layout.mapping.items()}
    c, d, last = config, "denoise_fn", config.levels - 1
    dead = {
        f"{d}.conv_body_down.{last}.1.weight": (c.level_channels(last), c.level_channels(last - 1), 3, 3),
        f"{d}.conv_body_down.{last}.2.bias": (c.level_channels(last),),
        f"{d}.condition_shift.0.0.weight": (c.level_channels(0), c.inner_channels, 3, 3),
        f"{d}.condition_shift.0.0.bias": (c.level_channels(0),),
        f"{d}.condition_scale1.0.weight": (c.level_channels(0), 1),
        f"{d}.condition_scale1.0.bias": (c.level_channels(0),),
        f"{d}.condition_scale2.0.weight": (c.level_channels(0), 1),
        f"{d}.condition_scale2.0.bias": (c.level_channels(0),),
    }
    for key in layout.dropped_keys():
        shapes[key] = dead.get(key, (2,))
    for key in layout.buffers:
        shapes[key] = (2000,)
    return shapes


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0, std: float = 0.3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(s, generator=g) * std for k, s in shapes.items()}
    state.update(linear_schedule())
    return state


# --------------------------------------------------------------------------------------------------
# an independent functional forward of the released model, by released key names
# --------------------------------------------------------------------------------------------------

def make_coord(shape: tuple[int, int]) -> torch.Tensor:
    seqs = [-1 + 1 / n + (2 / n) * torch.arange(n).float() for n in shape]
    return torch.stack(torch.meshgrid(*seqs, indexing="ij"), dim=-1)  # [h, w, 2] (row, col)


def ref_liif(feat: torch.Tensor, size: tuple[int, int], w0, b0, w1, b1) -> torch.Tensor:
    """The release's idm.query_rgb (no local ensemble) with a proper (H, W) reshape."""
    b, c, h, w = feat.shape
    coord = make_coord(size).view(1, -1, 2).expand(b, -1, -1)
    coord_ = coord.clamp(-1 + 1e-6, 1 - 1e-6)
    q_feat = F.grid_sample(feat, coord_.flip(-1).unsqueeze(1), mode="nearest", align_corners=False)[:, :, 0, :]
    feat_coord = make_coord((h, w)).permute(2, 0, 1).unsqueeze(0).expand(b, 2, h, w)
    q_coord = F.grid_sample(feat_coord, coord_.flip(-1).unsqueeze(1), mode="nearest", align_corners=False)[:, :, 0, :]
    rel = coord - q_coord.permute(0, 2, 1)
    rel = rel * torch.tensor([h, w], dtype=torch.float32)
    inp = torch.cat([q_feat.permute(0, 2, 1), rel], dim=-1)
    pred = F.linear(F.linear(inp, w0, b0), w1, b1)  # no activation between the two layers
    return pred.permute(0, 2, 1).reshape(b, c, *size)


def ref_blur(x: torch.Tensor) -> torch.Tensor:
    """upfirdn2d(up=down=1, pad=(1, 1)) with [1,3,1]^2/25, as a sum of shifted copies (no conv)."""
    k = torch.tensor([1.0, 3.0, 1.0])
    k = torch.outer(k, k) / 25
    xp = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2:]
    return sum(k[i, j] * xp[..., i:i + h, j:j + w] for i in range(3) for j in range(3))


def ref_equal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int) -> torch.Tensor:
    """Equalised 3x3 conv (padding 1) as unfold + matmul with weight / sqrt(fan_in)."""
    b, _, h, w = x.shape
    cols = F.unfold(x, 3, padding=1, stride=stride)  # [B, Cin*9, L]
    out = (weight.reshape(weight.shape[0], -1) / math.sqrt(weight[0].numel())) @ cols
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    out = out.view(b, -1, oh, ow)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def ref_flrelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.where(x + bias.view(1, -1, 1, 1) >= 0, x + bias.view(1, -1, 1, 1),
                       0.2 * (x + bias.view(1, -1, 1, 1))) * 2 ** 0.5


def ref_release_forward(sd: dict[str, torch.Tensor], cfg: IDMConfig, x_t: torch.Tensor, lr: torch.Tensor,
                        p: float, gamma: torch.Tensor) -> torch.Tensor:
    """GaussianDiffusion.denoise_fn(cat([x_con, x_t]), x_con, p, gamma) with x_con = encoder(lr, x_t's size)."""
    def conv(x, key, stride=1, pad=1):
        return F.conv2d(x, sd[f"{key}.weight"], sd.get(f"{key}.bias"), stride=stride, padding=pad)

    def gn(x, key):
        return F.group_norm(x, cfg.norm_groups, sd[f"{key}.weight"], sd[f"{key}.bias"])

    def swish(x):
        return x * torch.sigmoid(x)

    big = tuple(x_t.shape[-2:])
    # encoder (edsr.py forward)
    x = conv(lr, "encoder.head.0")
    res = x
    for i in range(cfg.encoder_blocks):
        res = res + conv(F.relu(conv(res, f"encoder.body.{i}.body.0")), f"encoder.body.{i}.body.2")
    res = conv(res, f"encoder.body.{cfg.encoder_blocks}") + x
    x_con = conv(F.interpolate(res, big), "encoder.tail.0")

    d = "denoise_fn"
    # noise level embedding (PositionalEncoding -> Linear -> Swish -> Linear)
    count = cfg.inner_channels // 2
    enc = gamma.view(-1, 1) * torch.exp(-math.log(1e4) * torch.arange(count).float() / count).view(1, -1)
    t = torch.cat([torch.sin(enc), torch.cos(enc)], dim=-1)
    t = F.linear(swish(F.linear(t, sd[f"{d}.noise_level_mlp.1.weight"], sd[f"{d}.noise_level_mlp.1.bias"])),
                 sd[f"{d}.noise_level_mlp.3.weight"], sd[f"{d}.noise_level_mlp.3.bias"])

    # condition pyramid (unet.py forward): every level computed, as released
    scaler = torch.tensor([p], dtype=torch.float32)
    feat = ref_flrelu(ref_equal_conv(x_con, sd[f"{d}.conv_body_first.0.weight"], None, 1),
                      sd[f"{d}.conv_body_first.1.bias"])

    def mod(j, f):
        s1 = F.linear(scaler, sd[f"{d}.condition_scale1.{j}.weight"], sd[f"{d}.condition_scale1.{j}.bias"])
        s2 = F.linear(scaler, sd[f"{d}.condition_scale2.{j}.weight"], sd[f"{d}.condition_scale2.{j}.bias"])
        sh = ref_equal_conv(f, sd[f"{d}.condition_shift.{j}.0.weight"], sd[f"{d}.condition_shift.{j}.0.bias"], 1)
        return s1, s2, sh

    mods = [mod(0, feat)]
    for i in range(cfg.levels):
        feat = ref_flrelu(ref_equal_conv(ref_blur(feat), sd[f"{d}.conv_body_down.{i}.1.weight"], None, 2),
                          sd[f"{d}.conv_body_down.{i}.2.bias"])
        if i + 1 < cfg.levels:
            mods.append(mod(i + 1, feat))

    def rb(x, key):
        h = conv(swish(gn(x, f"{key}.res_block.block1.block.0")), f"{key}.res_block.block1.block.3")
        h = h + F.linear(t, sd[f"{key}.res_block.noise_func.noise_func.0.weight"],
                         sd[f"{key}.res_block.noise_func.noise_func.0.bias"]).view(x.shape[0], -1, 1, 1)
        h = conv(swish(gn(h, f"{key}.res_block.block2.block.0")), f"{key}.res_block.block2.block.3")
        h = h + (conv(x, f"{key}.res_block.res_conv", pad=0) if f"{key}.res_block.res_conv.weight" in sd else x)
        if f"{key}.attn.qkv.weight" in sd:
            b, c, hh, ww = h.shape
            qkv = F.conv2d(gn(h, f"{key}.attn.norm"), sd[f"{key}.attn.qkv.weight"]).view(b, 1, 3 * c, hh, ww)
            q, k, v = qkv.chunk(3, dim=2)
            attn = torch.einsum("bnchw,bncyx->bnhwyx", q, k) / math.sqrt(c)
            attn = torch.softmax(attn.reshape(b, 1, hh, ww, -1), -1).view(b, 1, hh, ww, hh, ww)
            o = torch.einsum("bnhwyx,bncyx->bnchw", attn, v).reshape(b, c, hh, ww)
            h = conv(o, f"{key}.attn.out", pad=0) + h
        return h

    x = conv(torch.cat([x_con, x_t], dim=1), f"{d}.downs.0")
    feats = [x]
    i = 1
    while f"{d}.downs.{i}.conv.weight" in sd or f"{d}.downs.{i}.res_block.block1.block.3.weight" in sd:
        x = conv(x, f"{d}.downs.{i}.conv", stride=2) if f"{d}.downs.{i}.conv.weight" in sd else rb(x, f"{d}.downs.{i}")
        feats.append(x)
        i += 1
    x = rb(rb(x, f"{d}.mid.0"), f"{d}.mid.1")
    i = 0
    while f"{d}.ups.{i}.imnet.0.weight" in sd or f"{d}.ups.{i}.res_block.block1.block.3.weight" in sd:
        key = f"{d}.ups.{i}"
        if f"{key}.imnet.0.weight" in sd:
            s1, s2, sh = mods.pop()
            norm = torch.rsqrt(s1 ** 2 + s2 ** 2 + 1e-8)
            c = x.shape[1]
            f = ref_flrelu(x * (s1 * norm).view(-1, c, 1, 1) + sh * (s2 * norm).view(-1, c, 1, 1),
                           sd[f"{key}.style.activate.bias"])
            x = ref_liif(f, tuple(feats[-1].shape[-2:]), sd[f"{key}.imnet.0.weight"], sd[f"{key}.imnet.0.bias"],
                         sd[f"{key}.imnet.1.weight"], sd[f"{key}.imnet.1.bias"])
        else:
            x = rb(torch.cat([x, feats.pop()], dim=1), key)
        i += 1
    return conv(swish(gn(x, f"{d}.final_conv.block.0")), f"{d}.final_conv.block.3")


# --------------------------------------------------------------------------------------------------
# the face preset against the released listing
# --------------------------------------------------------------------------------------------------

def test_face_preset_has_the_released_shapes_for_every_used_key() -> None:
    shapes = listing()
    assert len(shapes) == 537
    layout = release_layout(PRESETS["face"])
    # every released key is accounted for exactly once: used, dropped, or a schedule buffer
    dropped = layout.dropped_keys()
    assert len(set(dropped)) == len(dropped)
    assert not set(layout.mapping) & set(dropped)
    assert layout.all_keys() == set(shapes)
    assert set(SCHEDULE_BUFFERS) == {k for k in shapes if "." not in k}
    with torch.device("meta"):
        net = IDMNet(PRESETS["face"])
    state = net.state_dict()
    assert sorted(layout.mapping.values()) == sorted(state)  # one released key per dreamsr tensor
    for src, dst in layout.mapping.items():
        assert shapes[src] == tuple(state[dst].shape), (src, dst)
    assert net.num_parameters() == RELEASED_USED_PARAMS == sum(math.prod(shapes[k]) for k in layout.mapping)
    # the named dead weight is what idm.md lists
    names = set(layout.dropped)
    assert {"imnet", "denoise_fn.final_down1", "denoise_fn.final_down2", "denoise_fn.final_linear",
            "denoise_fn.final_styleconv", "encoder.sub_mean", "encoder.add_mean", "denoise_fn.conv_body_down.4",
            "denoise_fn.condition_shift.0", "denoise_fn.condition_scale1.0",
            "denoise_fn.condition_scale2.0"} <= names
    for i in (3, 7, 11, 15):
        assert {f"denoise_fn.ups.{i}.style.modulated_conv", f"denoise_fn.ups.{i}.style.weight"} <= names
    assert len(names) == 19 and len(dropped) == 46


def test_face_state_from_the_listing_converts_and_loads_strictly() -> None:
    shapes = listing()
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    state.update(linear_schedule())
    conv = convert_release(state)
    assert conv.schedule == {"num_steps": 2000, "beta_start": 1e-6, "beta_end": 1e-2}
    assert set(conv.dropped_keys) | set(SCHEDULE_BUFFERS) | set(release_layout().mapping) == set(state)
    layout = release_layout()
    for src, dst in layout.mapping.items():  # tensor by tensor: copied, not transformed
        assert torch.equal(conv.state_dict[dst], state[src]), (src, dst)
    with torch.device("meta"):
        net = IDMNet(PRESETS["face"])
    result = net.load_state_dict(conv.state_dict, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert net.tail[2].weight.device.type == "cpu"


# --------------------------------------------------------------------------------------------------
# converter errors and reading files
# --------------------------------------------------------------------------------------------------

def test_converter_names_unexpected_missing_and_misshapen_keys() -> None:
    state = random_state(released_shapes(PRESETS["tiny"]))
    convert_release(state, PRESETS["tiny"])  # the good one converts

    bad = dict(state, **{"denoise_fn.extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'denoise_fn.extra.weight'"):
        convert_release(bad, PRESETS["tiny"])
    bad = {f"module.{k}": v for k, v in state.items()}
    with pytest.raises(CheckpointError, match="module"):
        convert_release(bad, PRESETS["tiny"])
    for key in ("denoise_fn.ups.2.imnet.0.weight", "imnet.layers.4.bias", "ddim_c1",
                "denoise_fn.ups.2.style.modulated_conv.weight"):
        bad = {k: v for k, v in state.items() if k != key}
        with pytest.raises(CheckpointError, match=f"'{key}' is missing"):
            convert_release(bad, PRESETS["tiny"])
    bad = dict(state, **{"denoise_fn.ups.2.imnet.0.weight": torch.zeros(3, 3)})
    with pytest.raises(CheckpointError, match=r"'denoise_fn.ups.2.imnet.0.weight' has shape \(3, 3\)"):
        convert_release(bad, PRESETS["tiny"])
    bad = dict(state, betas=torch.linspace(1e-4, 2e-2, 2000) ** 2)
    with pytest.raises(CheckpointError, match="linear"):
        convert_release(bad, PRESETS["tiny"])
    with pytest.raises(CheckpointError, match="flat state dict"):
        convert_release({"betas": [1, 2]}, PRESETS["tiny"])  # type: ignore[dict-item]
    # a face-sized file is not a tiny model: its first extra key is named
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'denoise_fn.condition_scale1.2.bias'"):
        convert_release(random_state(released_shapes(PRESETS["face"])), PRESETS["tiny"])


def test_read_release_uses_weights_only(tmp_path: Path) -> None:
    state = random_state(released_shapes(PRESETS["tiny"]))
    good = tmp_path / "best_psnr_gen.pth"
    torch.save(state, good)
    conv = read_release(good, PRESETS["tiny"])
    net = IDMNet(PRESETS["tiny"])
    net.load_state_dict(conv.state_dict, strict=True)

    bad = tmp_path / "pickle_gen.pth"
    torch.save({"x": Fraction(1, 2)}, bad)  # an arbitrary Python object: weights_only refuses to unpickle it
    with pytest.raises(CheckpointError, match="weights-only"):
        read_release(bad, PRESETS["tiny"])
    with pytest.raises(CheckpointError, match="not found"):
        read_release(tmp_path / "absent.pth")


# --------------------------------------------------------------------------------------------------
# the whole forward against the released formulas
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lr_hw, hr_hw", [((8, 8), (20, 20)), ((7, 5), (17, 12)), ((4, 6), (16, 24))])
def test_forward_matches_the_released_computation(lr_hw: tuple[int, int], hr_hw: tuple[int, int]) -> None:
    cfg = SMALL3
    for n_in, n_out in zip(lr_hw, hr_hw):  # the release's F.interpolate picks the same rows here
        assert torch.equal(nearest_indices(n_in, n_out),
                           F.interpolate(torch.arange(n_in).float().view(1, 1, 1, -1), (1, n_out)).view(-1).long())
    state = random_state(released_shapes(cfg), seed=1)
    net = IDMNet(cfg).eval()
    net.load_state_dict(convert_release(state, cfg).state_dict, strict=True)
    g = torch.Generator().manual_seed(2)
    y_t = torch.randn(2, 3, *hr_hw, generator=g)
    lr = torch.rand(2, 3, *lr_hw, generator=g) * 2 - 1
    gamma = torch.tensor([0.3, 0.9])
    scale = derived_scale(hr_hw, lr_hw)
    p = (scale - cfg.min_scale) / (cfg.max_scale - cfg.min_scale)
    with torch.no_grad():
        ours = net(y_t, lr, gamma)
        ref = ref_release_forward(state, cfg, y_t, lr, p, gamma)
    assert ours.shape == y_t.shape
    assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max())), float((ours - ref).abs().max())
    # the scale matters: another p gives another output
    with torch.no_grad():
        other = net(y_t, lr, gamma, scale=cfg.min_scale)
    assert not torch.allclose(other, ours, atol=1e-3)


# --------------------------------------------------------------------------------------------------
# parts against explicit computations
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("hw, size", [((4, 6), (8, 12)), ((5, 7), (9, 13)), ((3, 3), (7, 5)), ((1, 2), (1, 3))])
def test_implicit_upsampler_matches_the_liif_query(hw: tuple[int, int], size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    c = 6
    up = ImplicitUpsampler(c, 10)
    with torch.no_grad():
        up.act.bias.normal_()
    x, shift = torch.randn(2, c, *hw), torch.randn(2, c, *hw)
    s1, s2 = torch.randn(2, c), torch.randn(2, c)
    out = up(x, shift, s1, s2, size)
    # independent: Norm2Scale, FusedLeakyReLU, then the release's grid_sample query with the two Linear layers
    norm = torch.sqrt(s1 ** 2 + s2 ** 2 + 1e-8)
    feat = ref_flrelu(x * (s1 / norm)[..., None, None] + shift * (s2 / norm)[..., None, None], up.act.bias)
    ref = ref_liif(feat, size, up.mlp[0].weight, up.mlp[0].bias, up.mlp[1].weight, up.mlp[1].bias)
    assert out.shape == (2, c, *size)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)


def test_query_indices_at_x2_are_nearest_children_with_half_cell_offsets() -> None:
    idx, rel = query_indices(5, 10)
    assert idx.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert torch.allclose(rel, torch.tensor([-0.5, 0.5] * 5))


def test_blur_equal_conv_and_activation_match_explicit_computations() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4, 7, 6)
    assert torch.allclose(Blur()(x), ref_blur(x), atol=1e-6)
    conv = EqualConv2d(4, 5, 3, stride=2, padding=1, bias=True)
    with torch.no_grad():
        conv.bias.normal_()
    out = conv(ref_blur(x))
    assert out.shape == (2, 5, 4, 3)  # ceil(7/2), ceil(6/2)
    assert torch.allclose(out, ref_equal_conv(ref_blur(x), conv.weight, conv.bias, 2), atol=1e-5)
    nobias = EqualConv2d(4, 5, 3, padding=1, bias=False)
    assert "bias" not in dict(nobias.named_parameters())
    assert torch.allclose(nobias(x), ref_equal_conv(x, nobias.weight, None, 1), atol=1e-5)
    b = torch.randn(4)
    assert torch.allclose(scaled_leaky_relu(x, b), ref_flrelu(x, b), atol=1e-6)
    lin = EqualLinear(3, 4, bias_init=1.0)
    assert torch.equal(lin.bias, torch.ones(4))
    v = torch.randn(2, 3)
    assert torch.allclose(lin(v), v @ lin.weight.T / math.sqrt(3) + 1.0, atol=1e-6)


def test_nearest_indices_are_exact_and_agree_with_interpolate_at_integer_scales() -> None:
    for n_in in range(1, 40):
        ramp = torch.arange(n_in).float().view(1, 1, 1, -1)
        for k in range(1, 9):
            ref = F.interpolate(ramp, (1, n_in * k)).view(-1).long()
            assert torch.equal(nearest_indices(n_in, n_in * k), ref)
    # exact integer arithmetic where float32 rounding makes F.interpolate pick the previous row
    assert int(nearest_indices(14, 46)[23]) == 7
    # a tile at an aligned offset sees the whole image's map, shifted
    unit_lr, unit_hr = tile_unit(2.5, 4)
    whole = nearest_indices(6 * unit_lr, 6 * unit_hr)
    tile = nearest_indices(2 * unit_lr, 2 * unit_hr)
    assert torch.equal(whole[2 * unit_hr:4 * unit_hr], tile + 2 * unit_lr)


# --------------------------------------------------------------------------------------------------
# sizes, scales and tile alignment
# --------------------------------------------------------------------------------------------------

def test_output_size_for_non_integer_scales() -> None:
    assert output_size((37, 23), 2.5) == (92, 58)  # round half to even: 92.5 -> 92, 57.5 -> 58
    assert output_size((16, 16), 8) == (128, 128)
    assert output_size((10, 3), 3.3) == (33, 10)
    with pytest.raises(InputError):
        output_size((4, 4), 0)
    net = IDMNet(PRESETS["tiny"]).eval()
    lr = torch.rand(1, 3, 37, 23) * 2 - 1
    for scale in (2.5, 1.5, 3.3, 4.0):
        hw = output_size((37, 23), scale)
        with torch.no_grad():
            out = net(torch.randn(1, 3, *hw), lr, torch.tensor([0.5]), scale=scale)
        assert out.shape == (1, 3, *hw)
    with torch.no_grad():  # derived scale: the longer LR side's ratio
        assert net(torch.randn(1, 3, 92, 58), lr, torch.tensor([0.5])).shape == (1, 3, 92, 58)
    assert derived_scale((92, 58), (37, 23)) == 92 / 37
    assert derived_scale((58, 92), (23, 37)) == 92 / 37


def test_scale_range_and_per_sample_scales() -> None:
    net = IDMNet(PRESETS["tiny"]).eval()  # trained range x1..x4
    lr, g = torch.rand(2, 3, 8, 8), torch.tensor([0.2, 0.7])
    with pytest.raises(InputError, match=r"x1 to x4"):
        net(torch.randn(2, 3, 40, 40), lr, g)  # derived x5
    with pytest.raises(InputError, match=r"x1 to x4"):
        net(torch.randn(2, 3, 16, 16), lr, g, scale=torch.tensor([2.0, 4.5]))
    with pytest.raises(InputError, match="positive"):
        net(torch.randn(2, 3, 16, 16), lr, g, scale=-2.0)
    with pytest.raises(InputError):
        net(torch.randn(2, 3, 16, 16), lr[:1], g)
    y = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        both = net(y, lr, g, scale=torch.tensor([2.0, 3.0]))
        first = net(y[:1], lr[:1], g[:1], scale=2.0)
        second = net(y[1:], lr[1:], g[1:], scale=3.0)
        derived = net(y, lr, g)  # 24 / 8 = 3
        explicit = net(y, lr, g, scale=3.0)
    assert torch.allclose(both, torch.cat([first, second]), atol=1e-5)
    assert torch.equal(derived, explicit)


def test_tile_unit_is_minimal_and_aligned() -> None:
    assert tile_unit(2.5, 16) == (32, 80)
    assert tile_unit(3, 16) == (16, 48)
    assert tile_unit(4, 16) == (4, 16)
    assert tile_unit(8, 16) == (2, 16)
    assert tile_unit(2.5, 4) == (8, 20)
    for scale in (1.0, 1.5, 2.0, 2.5, 3.0, 10 / 3, 3.3, 4.0, 6.0, 7.25, 8.0):
        frac = scale_fraction(scale)
        for m in (1, 2, 4, 8, 16):
            lr_u, hr_u = tile_unit(scale, m)
            assert Fraction(lr_u) * frac == hr_u and hr_u % m == 0
            brute = next(n for n in range(1, 10_000) if (Fraction(n) * frac).denominator == 1
                         and int(Fraction(n) * frac) % m == 0)
            assert lr_u == brute, (scale, m)
    with pytest.raises(ConfigError, match="ratio"):
        tile_unit(math.pi, 4)
    with pytest.raises(ConfigError):
        tile_unit(0.0, 4)


def test_align_tiling_and_padding() -> None:
    # face at x2.5: unit 32 LR px
    assert align_tiling(40, 5, 2.5, 16) == (32, 0)
    assert align_tiling(100, 10, 2.5, 16) == (96, 32)
    assert align_tiling(10, 5, 2.5, 16) == (32, 0)  # at least one unit
    assert align_tiling(0, 5, 2.5, 16) == (0, 5)
    for tile, overlap in ((40, 5), (64, 8), (17, 3), (200, 30)):
        for scale, m in ((2.5, 4), (3.0, 4), (1.5, 2), (4.0, 16)):
            t, o = align_tiling(tile, overlap, scale, m)
            unit = tile_unit(scale, m)[0]
            assert t % unit == 0 and o % unit == 0 and t >= 2 * o and t >= unit
            assert (t * scale) % m == 0
    assert aligned_lr_length(37, 2.5, 4) == 40 and aligned_lr_length(40, 2.5, 4) == 40


# --------------------------------------------------------------------------------------------------
# config, presets, gradients
# --------------------------------------------------------------------------------------------------

def test_config_round_trip_and_validation() -> None:
    for cfg in PRESETS.values():
        assert IDMConfig.from_dict(cfg.to_dict()) == cfg
    assert PRESETS["face"].size_multiple == 16 and PRESETS["tiny"].size_multiple == 2
    with pytest.raises(ConfigError, match="unknown keys"):
        IDMConfig.from_dict({**PRESETS["tiny"].to_dict(), "scale": 4})
    with pytest.raises(ConfigError, match="min_scale"):
        IDMConfig(min_scale=4.0, max_scale=2.0)
    with pytest.raises(ConfigError, match="two levels"):
        IDMConfig(channel_mults=(1,))
    with pytest.raises(ConfigError, match="norm_groups"):
        IDMConfig(inner_channels=6, norm_groups=4)


def test_preset_parameter_counts() -> None:
    counts = {}
    for name, cfg in PRESETS.items():
        with torch.device("meta"):
            counts[name] = IDMNet(cfg).num_parameters()
    assert counts == {"tiny": 12_478, "small": 2_681_542, "face": RELEASED_USED_PARAMS}


def test_every_parameter_receives_a_gradient() -> None:
    torch.manual_seed(0)
    net = IDMNet(SMALL3)
    with torch.no_grad():  # zero-initialised biases would hide a missing path; give them values
        for name, p in net.named_parameters():
            if name.endswith("act.bias"):
                p.normal_()
    y_t, lr = torch.randn(2, 3, 13, 10), torch.rand(2, 3, 5, 4) * 2 - 1
    eps = net(y_t, lr, torch.tensor([0.4, 0.8]), scale=torch.tensor([2.5, 2.6]))
    eps.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert float(p.grad.abs().sum()) > 0, f"{name} receives no gradient (dead weight?)"


# --------------------------------------------------------------------------------------------------
# the encoder's nearest-resize rule (issue 26): the release's float32 index, at every size
# --------------------------------------------------------------------------------------------------

def release_nearest(n_in: int, n_out: int) -> torch.Tensor:
    """The index F.interpolate(mode="nearest") computes for an (n_in -> n_out) axis, written with numpy float32:
    src = min(floor(float32(i) * (float32(n_in) / float32(n_out))), n_in - 1)."""
    import numpy as np

    scale = np.float32(n_in) / np.float32(n_out)
    i = np.arange(n_out, dtype=np.float32)
    return torch.from_numpy(np.minimum(np.floor(i * scale).astype(np.int64), n_in - 1))


def test_the_release_rule_is_interpolates_index_and_differs_from_the_exact_one_where_stated() -> None:
    differ = []
    for n_in in range(8, 65):
        for n_out in range(n_in, 8 * n_in + 1):
            ours = nearest_indices(n_in, n_out, rule="release")
            assert torch.equal(ours, release_nearest(n_in, n_out)), (n_in, n_out)
            if not torch.equal(ours, nearest_indices(n_in, n_out)):
                differ.append((n_in, n_out))
    assert len(differ) == 354 and (16, 82) in differ  # issue 26's count for LR 8-64 px, up to x8
    for n_in, n_out in differ[::25] + [(16, 82)]:  # the release's own call picks the same rows
        ramp = torch.arange(n_in).float().view(1, 1, 1, -1)
        assert torch.equal(nearest_indices(n_in, n_out, rule="release"),
                           F.interpolate(ramp, (1, n_out)).view(-1).long())
    assert int(nearest_indices(16, 82, rule="release")[41]) == 7 and int(nearest_indices(16, 82)[41]) == 8


@pytest.mark.parametrize("scale", [2.5, 5.125, 3.0, 8.0])
def test_a_tile_slices_the_whole_images_release_index_vector(scale: float) -> None:
    """An aligned tile at LR offset o with a 1 px halo reads, at each output position, the LR pixel the whole
    image's release index picks (relative to its halo'd input); some tile start picks the pixel before it."""
    unit_lr, unit_hr = tile_unit(scale, 2)
    n_lr = 8 * unit_lr
    whole = release_nearest(n_lr, int(n_lr * scale))
    before = 0
    for k in range(1, 7):
        origin, t_lr = k * unit_lr, unit_lr * 2
        t_hr = int(t_lr * scale)
        tile = nearest_indices(t_lr + 1, t_hr, rule="release", origin=origin, halo=1)
        hr0 = int(origin * scale)
        assert torch.equal(tile - 1 + origin, whole[hr0:hr0 + t_hr])
        before += int(tile[0]) == 0
        assert torch.equal(nearest_indices(t_lr + 1, t_hr, origin=origin, halo=1),  # the exact rule: equivariant
                           torch.arange(t_hr) * t_lr // t_hr + 1)
    if scale == 5.125:
        assert before > 0  # the halo is needed: e.g. 16 -> 82 at row 41 reads LR 7
        with pytest.raises(InputError, match="needs a halo"):
            for k in range(1, 7):
                nearest_indices(unit_lr * 2, int(unit_lr * 2 * scale), rule="release", origin=k * unit_lr)


# the sizes issue 26 names: x8, x2.5, x5.125 (where the rules differ) and a non-square 20x16 -> 50x40
@pytest.mark.parametrize("lr_hw, hr_hw", [((8, 8), (64, 64)), ((8, 8), (20, 20)), ((16, 16), (82, 82)),
                                          ((20, 16), (50, 40))])
def test_a_converted_release_file_gives_the_released_eps(lr_hw: tuple[int, int], hr_hw: tuple[int, int]) -> None:
    cfg = IDMConfig(inner_channels=8, channel_mults=(1, 2, 2), res_blocks=1, attention_levels=(1,), dropout=0.0,
                    norm_groups=4, encoder_channels=8, encoder_blocks=2, mlp_hidden=12, max_scale=8.0)
    state = random_state(released_shapes(cfg), seed=5)
    conv = convert_release(state, cfg)
    assert conv.config.resize_rule == "release" and IDMConfig.from_dict(conv.config.to_dict()) == conv.config
    net = IDMNet(conv.config).eval()
    net.load_state_dict(conv.state_dict, strict=True)
    g = torch.Generator().manual_seed(6)
    y_t = torch.randn(2, 3, *hr_hw, generator=g)
    lr = torch.rand(2, 3, *lr_hw, generator=g) * 2 - 1
    gamma = torch.tensor([0.4, 0.8])
    scale = derived_scale(hr_hw, lr_hw)
    p = (scale - cfg.min_scale) / (cfg.max_scale - cfg.min_scale)
    with torch.no_grad():
        ours = net(y_t, lr, gamma)
        ref = ref_release_forward(state, cfg, y_t, lr, p, gamma)
        exact = IDMNet(cfg).eval()
        exact.load_state_dict(conv.state_dict, strict=True)
        other = exact(y_t, lr, gamma)
    err = float((ours - ref).abs().max())
    assert err < 1e-4, err
    if hr_hw == (82, 82):  # the exact rule is another network here (row/column 41 reads LR 8, not 7)
        assert float((other - ref).abs().max()) > 1e-2
    # the rule travels in the config: a file without the field is the exact rule
    legacy = {k: v for k, v in conv.config.to_dict().items() if k != "resize_rule"}
    assert IDMConfig.from_dict(legacy).resize_rule == "exact"
    with pytest.raises(ConfigError, match="resize_rule must be one of exact, release"):
        IDMConfig(resize_rule="torch")
