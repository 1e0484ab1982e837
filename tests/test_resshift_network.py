"""ResShift's Swin-UNet, the VQ-f4 autoencoder and the released-weight converter (issue 19, networks part).

Oracles: the reference listings of the released state dicts (keys, shapes, order, parameter counts), direct
per-token re-implementations of a Swin block and functional re-implementations of both networks written from the
release's description (not from the modules under test), brute-force nearest-code search, and the release's
buffer formulas re-derived here.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dreamsr.errors import CheckpointError, ConfigError, InputError
from dreamsr.families.resshift.network import (PRESETS, ResShiftUNet, ResShiftUNetConfig, SwinBlock, preset,
                                               shifted_window_mask, timestep_embedding)
from dreamsr.converters.resshift import (check_latent_channels, convert_autoencoder_state, convert_release,
                                               convert_unet_state, unet_config_from_state, unwrap_state,
                                               vqf4_config_from_state)
from dreamsr.first_stages.vqf4 import VQF4, VQF4_PRESETS, VQF4Config

REFERENCE = Path("/work/shared/reference")
if not REFERENCE.is_dir():  # the listings also live beside the repository in other checkouts
    REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


def _listing(name: str) -> list[tuple[str, tuple[int, ...]]]:
    path = REFERENCE / name
    if not path.is_file():
        pytest.skip(f"reference listing {path} not available")
    out = []
    for line in path.read_text().splitlines():
        key, shape = line.split(" ", 1)
        out.append((key, tuple(int(s) for s in shape.strip("()").split(",") if s.strip())))
    return out


def _meta(module_type, config):
    with torch.device("meta"):
        return module_type(config)


def _randomize(module: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """Every parameter random (GroupNorm weights around 1), so no zero-initialised layer hides a wiring error."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
            is_norm_weight = name.endswith("weight") and p.dim() == 1 and "norm" in name or (
                name.endswith(("in_layers.0.weight", "out_layers.0.weight", "out.0.weight")))
            p.copy_(1.0 + 0.1 * noise if is_norm_weight else std * noise)
    return module


# ----------------------------------------------------------------------------------------------------------------
# the release's layouts
# ----------------------------------------------------------------------------------------------------------------

def test_v1_preset_state_dict_is_the_release_listing() -> None:
    model = _meta(ResShiftUNet, PRESETS["v1"])
    mine = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert mine == _listing("resshift_v1_unet_state_dict.txt")  # keys, shapes and order, buffers included
    assert model.num_parameters() == 118_593_583


def test_vqf4_state_dict_is_the_release_listing() -> None:
    model = _meta(VQF4, VQF4Config())
    mine = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert mine == _listing("vq_f4_autoencoder_state_dict.txt")
    assert model.num_parameters() == 55_322_782
    assert model.factor == 4 and model.latent_channels == 3


@pytest.mark.parametrize("name, count, multiple, window_multiple",
                         [("v1", 118_593_583, 8, 64), ("small", 2_928_615, 4, 32), ("tiny", 49_183, 2, 8)])
def test_presets_are_pinned(name: str, count: int, multiple: int, window_multiple: int) -> None:
    config = preset(name)
    assert _meta(ResShiftUNet, config).num_parameters() == count
    assert config.size_multiple == multiple and config.window_multiple == window_multiple


def test_config_round_trip_and_validation() -> None:
    for config in PRESETS.values():
        assert ResShiftUNetConfig.from_dict(config.to_dict()) == config
    assert preset("small", in_channels=48, out_channels=48).in_channels == 48
    with pytest.raises(ConfigError, match="unknown keys"):
        ResShiftUNetConfig.from_dict({**PRESETS["tiny"].to_dict(), "lq_size": 64})
    with pytest.raises(ConfigError, match="unknown ResShift UNet preset"):
        preset("huge")
    with pytest.raises(ConfigError, match="norm_groups"):
        replace(PRESETS["tiny"], norm_groups=3)
    with pytest.raises(ConfigError, match="swin level"):
        replace(PRESETS["tiny"], swin_levels=(5,))
    with pytest.raises(ConfigError, match="image_size"):
        replace(PRESETS["v1"], image_size=60)
    assert VQF4Config.from_dict(VQF4Config().to_dict()) == VQF4Config()
    with pytest.raises(ConfigError, match="unknown keys"):
        VQF4Config.from_dict({"ch": 8, "double_z": False})


# ----------------------------------------------------------------------------------------------------------------
# independent re-implementations
# ----------------------------------------------------------------------------------------------------------------

def _direct_swin_block(block: SwinBlock, x: torch.Tensor) -> torch.Tensor:
    """One Swin block computed token by token from its definition, for any H x W (no partition/roll code).

    Query p attends to the real tokens q that share its window in the cyclically shifted, bottom/right-padded map
    (side rounded up to the window) and, for a shifted block, its region (the release's three bands per axis of
    the shifted map); logits q·k / sqrt(d) + table[(dy + w − 1)(2w − 1) + dx + w − 1] with (dy, dx) the offset of
    p from q inside the window.
    """
    b, c, h, w = x.shape
    win, s = block.window, block.shift
    hp, wp = -(-h // win) * win, -(-w // win) * win
    heads = block.attn.heads
    d = c // heads
    y = F.group_norm(x, block.norm1.num_groups, block.norm1.weight, block.norm1.bias, block.norm1.eps)
    tok = y.permute(0, 2, 3, 1).reshape(b, h * w, c)
    qkv = tok @ block.attn.qkv.weight.t() + block.attn.qkv.bias
    q, k, v = qkv.split(c, dim=-1)
    table = block.attn.relative_position_bias_table

    def band(r: int, n: int) -> int:
        return 0 if s == 0 or r < n - win else (1 if r < n - s else 2)

    info = []
    for i in range(h):
        for j in range(w):
            ri, rj = (i - s) % hp, (j - s) % wp  # position in the shifted map
            if block.mask_rule == "swin":  # textbook: the row band and the column band
                region = (band(ri, hp), band(rj, wp))
            else:  # the release (issue 26): the row band of row (window row) * w + (column inside the window)
                region = (band(ri // win * win + rj % win, hp), 0)
            info.append(((ri // win, rj // win), region, (ri % win, rj % win)))
    out = torch.zeros_like(tok)
    for p in range(h * w):
        keys = [k_ for k_ in range(h * w) if info[k_][0] == info[p][0] and info[k_][1] == info[p][1]]
        for head in range(heads):
            sl = slice(head * d, (head + 1) * d)
            logits = []
            for k_ in keys:
                dy = info[p][2][0] - info[k_][2][0] + win - 1
                dx = info[p][2][1] - info[k_][2][1] + win - 1
                bias = table[dy * (2 * win - 1) + dx, head]
                logits.append((q[:, p, sl] * k[:, k_, sl]).sum(-1) * d ** -0.5 + bias)
            a = torch.softmax(torch.stack(logits, dim=-1), dim=-1)  # [B, keys]
            out[:, p, sl] = (a[:, :, None] * v[:, keys, sl]).sum(1)
    out = out @ block.attn.proj.weight.t() + block.attn.proj.bias
    x = x + out.reshape(b, h, w, c).permute(0, 3, 1, 2)
    z = F.group_norm(x, block.norm2.num_groups, block.norm2.weight, block.norm2.bias, block.norm2.eps)
    z = F.gelu(F.conv2d(z, block.mlp.fc1.weight, block.mlp.fc1.bias))
    z = F.conv2d(z, block.mlp.fc2.weight, block.mlp.fc2.bias)
    return x + z


def _swin_block(shift: int, window: int = 4, dim: int = 8, heads: int = 2, resolution: int = 8,
                rule: str = "swin") -> SwinBlock:
    block = SwinBlock(dim, resolution, heads, window, shift, 2.0, 4, 0.0, rule)
    return _randomize(block, seed=shift + 7).double().eval()


@pytest.mark.parametrize("rule", ["swin", "release"])
@pytest.mark.parametrize("shift", [0, 2])
@pytest.mark.parametrize("size", [(8, 8), (8, 16), (6, 10), (3, 5)])
def test_swin_block_matches_a_direct_per_token_computation(shift: int, size: tuple[int, int], rule: str) -> None:
    """Window attention with relative-position bias and the shifted-window masks of both rules, at the native
    size (mask from the stored buffer), other multiples and sizes that need padding (padded keys never influence
    real tokens)."""
    block = _swin_block(shift, rule=rule)
    x = torch.randn(2, 8, *size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        got, want = block(x), _direct_swin_block(block, x)
    assert torch.allclose(got, want, atol=1e-10, rtol=0)


def _release_window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """The release's ``window_partition``: (B, C, H, W) -> (num_windows * B, window, window, C)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // window, window, w // window, window)
    return x.permute(0, 2, 4, 3, 5, 1).contiguous().view(-1, window, window, c)


def _release_calculate_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """The released ``SwinTransformerBlock.calculate_mask`` (zsyOAOA/ResShift models/swin_transformer.py), step
    by step: the slices written into a (1, 1, H, W) tensor as if it were (1, H, W, 1), then each window's tokens
    transposed by ``permute(0, 2, 3, 1)``."""
    img_mask = torch.zeros((1, 1, h, w))
    slices = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    cnt = 0
    for hs in slices:
        for ws in slices:
            img_mask[:, hs, ws, :] = cnt
            cnt += 1
    mask_windows = _release_window_partition(img_mask, window).permute(0, 2, 3, 1).contiguous()
    mask_windows = mask_windows.view(-1, window * window)
    attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
    return attn_mask.masked_fill(attn_mask != 0, -100.0).masked_fill(attn_mask == 0, 0.0)


def _textbook_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """The textbook Swin mask: label = (row band, column band) of the shifted map, windows and tokens row-major."""
    def bands(n: int) -> list[int]:
        return [0 if i < n - window else (1 if i < n - shift else 2) for i in range(n)]

    label = torch.tensor([[3 * a + b for b in bands(w)] for a in bands(h)], dtype=torch.float32)
    windows = [label[y:y + window, x:x + window].flatten() for y in range(0, h, window) for x in range(0, w, window)]
    return torch.stack([torch.where(wl[None, :] == wl[:, None], 0.0, -100.0) for wl in windows])


@pytest.mark.parametrize("h, w, window, differ", [(64, 64, 8, 29_696), (32, 32, 8, 13_312), (16, 16, 8, 5_120),
                                                  (64, 128, 8, None), (24, 40, 4, None), (8, 16, 4, None)])
def test_the_release_mask_rule_is_calculate_mask(h: int, w: int, window: int, differ: int | None) -> None:
    """Both rules against their independent derivations, square and non-square, at the v1 levels 0-2 (64, 32,
    16 latent px, window 8) and others; the counts of differing entries are issue 26's."""
    release = shifted_window_mask(h, w, window, window // 2, rule="release")
    swin = shifted_window_mask(h, w, window, window // 2)
    assert torch.equal(release, _release_calculate_mask(h, w, window, window // 2))
    assert torch.equal(swin, _textbook_mask(h, w, window, window // 2))
    if differ is not None:
        assert int((release != swin).sum()) == differ
    # the release masks only the last row of windows, the last column of windows not at all
    n_cols = w // window
    masked = (release != 0).flatten(1).any(1).view(h // window, n_cols)
    assert masked[-1].all() and not masked[:-1].any()
    assert not (release.view(h // window, n_cols, -1)[:-1] != 0).any()
    with pytest.raises(ConfigError, match="mask rule"):
        shifted_window_mask(h, w, window, window // 2, rule="textbook")


def test_swin_buffers_follow_the_release_formulas() -> None:
    """relative_position_index and attn_mask, re-derived from the release's definitions."""
    block = _swin_block(2)
    win, s, r = 4, 2, 8
    coords = [(a, b) for a in range(win) for b in range(win)]
    index = torch.tensor([[(p[0] - q[0] + win - 1) * (2 * win - 1) + (p[1] - q[1] + win - 1) for q in coords]
                          for p in coords])
    assert torch.equal(block.attn.relative_position_index, index)
    label = torch.zeros(r, r)
    bands = [range(0, r - win), range(r - win, r - s), range(r - s, r)]
    for bi, rows in enumerate(bands):
        for bj, cols in enumerate(bands):
            for i in rows:
                for j in cols:
                    label[i, j] = 3 * bi + bj
    windows = [label[a:a + win, b:b + win].flatten() for a in range(0, r, win) for b in range(0, r, win)]
    mask = torch.stack([torch.where(wl[None, :] == wl[:, None], 0.0, -100.0) for wl in windows])
    assert torch.equal(block.attn_mask, mask)


def _release_swin_block(block: SwinBlock, x: torch.Tensor, stored_mask: torch.Tensor | None) -> torch.Tensor:
    """The released ``SwinTransformerBlock.forward`` step by step on ``block``'s parameters: GroupNorm, roll,
    ``window_partition``, attention with the relative-position bias and the mask (``stored_mask``, the file's
    ``attn_mask``, at the block's training size, else ``calculate_mask`` for this size), ``window_reverse``, roll
    back, MLP. H and W must be multiples of the window (the release refuses other sizes)."""
    b, c, h, w = x.shape
    win, s = block.window, block.shift
    heads = block.attn.heads
    y = F.group_norm(x, block.norm1.num_groups, block.norm1.weight, block.norm1.bias, block.norm1.eps)
    if s > 0:
        y = torch.roll(y, shifts=(-s, -s), dims=(2, 3))
    xw = _release_window_partition(y, win).view(-1, win * win, c)
    n = win * win
    qkv = F.linear(xw, block.attn.qkv.weight, block.attn.qkv.bias).reshape(-1, n, 3, heads, c // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    attn = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1)
    bias = block.attn.relative_position_bias_table[block.attn.relative_position_index.view(-1)].view(n, n, -1)
    attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
    if s > 0:
        mask = stored_mask if (h, w) == (block.resolution, block.resolution) else _release_calculate_mask(h, w, win, s)
        nw = mask.shape[0]
        attn = attn.view(-1, nw, heads, n, n) + mask.to(attn.dtype).unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, n, n)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, n, c)
    out = F.linear(out, block.attn.proj.weight, block.attn.proj.bias).view(-1, win, win, c)
    out = out.view(b, h // win, w // win, win, win, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)  # window_reverse
    if s > 0:
        out = torch.roll(out, shifts=(s, s), dims=(2, 3))
    x = x + out
    z = F.group_norm(x, block.norm2.num_groups, block.norm2.weight, block.norm2.bias, block.norm2.eps)
    return x + F.conv2d(F.gelu(F.conv2d(z, block.mlp.fc1.weight, block.mlp.fc1.bias)),
                        block.mlp.fc2.weight, block.mlp.fc2.bias)


def _functional_unet(model: ResShiftUNet, x_t, cond, t, block_fn=None) -> torch.Tensor:
    """The release's UNetModelSwin forward written out on the state dict (Swin blocks via the direct version, or
    ``block_fn(name, block, h)``)."""
    c = model.config
    sd = dict(model.named_parameters())
    g = c.norm_groups

    def gn(h, key):
        return F.group_norm(h, g, sd[f"{key}.weight"], sd[f"{key}.bias"], 1e-5)

    def conv(h, key, **kw):
        return F.conv2d(h, sd[f"{key}.weight"], sd[f"{key}.bias"], **kw)

    half = c.model_channels // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(start=0, end=half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]  # the release embeds in float32
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1).to(x_t.dtype)
    emb = F.linear(F.silu(F.linear(emb, sd["time_embed.0.weight"], sd["time_embed.0.bias"])),
                   sd["time_embed.2.weight"], sd["time_embed.2.bias"])

    def resblock(h, key):
        out = conv(F.silu(gn(h, f"{key}.in_layers.0")), f"{key}.in_layers.2", padding=1)
        e = F.linear(F.silu(emb), sd[f"{key}.emb_layers.1.weight"], sd[f"{key}.emb_layers.1.bias"])
        scale, shift = e[:, :, None, None].chunk(2, dim=1)
        out = gn(out, f"{key}.out_layers.0") * (1 + scale) + shift
        out = conv(F.silu(out), f"{key}.out_layers.3", padding=1)
        skip = conv(h, f"{key}.skip_connection") if f"{key}.skip_connection.weight" in sd else h
        return skip + out

    def swin(h, key):
        layer = model.get_submodule(key)
        h = conv(h, f"{key}.patch_embed.proj")
        for i, block in enumerate(layer.blocks):
            h = _direct_swin_block(block, h) if block_fn is None else block_fn(f"{key}.blocks.{i}", block, h)
        return conv(h, f"{key}.patch_unembed.proj")

    def step(h, key):
        i = 0
        while True:
            sub = f"{key}.{i}"
            if f"{sub}.in_layers.0.weight" in sd:
                h = resblock(h, sub)
            elif f"{sub}.patch_embed.proj.weight" in sd:
                h = swin(h, sub)
            elif f"{sub}.op.weight" in sd:
                h = conv(h, f"{sub}.op", stride=2, padding=1)
            elif f"{sub}.conv.weight" in sd:
                h = conv(F.interpolate(h, scale_factor=2, mode="nearest"), f"{sub}.conv", padding=1)
            elif f"{sub}.weight" in sd:
                h = conv(h, sub, padding=1)
            else:
                return h
            i += 1

    hs, h = [], torch.cat([x_t, cond], dim=1)
    for i in range(len(model.input_blocks)):
        h = step(h, f"input_blocks.{i}")
        hs.append(h)
    h = step(h, "middle_block")
    for i in range(len(model.output_blocks)):
        h = step(torch.cat([h, hs.pop()], dim=1), f"output_blocks.{i}")
    return conv(F.silu(gn(h, "out.0")), "out.2", padding=1)


@pytest.mark.parametrize("size", [(8, 8), (6, 10)])
def test_tiny_unet_matches_a_functional_reimplementation(size: tuple[int, int]) -> None:
    config = replace(PRESETS["tiny"], image_size=8, swin_levels=(0, 1))  # shifted layer at level 0, padding at 6
    model = _randomize(ResShiftUNet(config), seed=3).double().eval()
    gen = torch.Generator().manual_seed(4)
    x_t = torch.randn(2, 3, *size, generator=gen, dtype=torch.float64)
    cond = torch.randn(2, 3, *size, generator=gen, dtype=torch.float64)
    t = torch.tensor([0.0, 11.0], dtype=torch.float64)
    with torch.no_grad():
        got, want = model(x_t, cond, t), _functional_unet(model, x_t, cond, t)
    assert got.shape == (2, 3, *size)
    assert torch.allclose(got, want, atol=1e-9, rtol=0)


def test_timestep_embedding_is_cos_first() -> None:
    t = torch.tensor([0.0, 2.5, 14.0])
    emb = timestep_embedding(t, 7)
    k = torch.arange(3, dtype=torch.float32)
    f = torch.exp(-math.log(1e4) * k / 3)
    want = torch.cat([torch.cos(t[:, None] * f), torch.sin(t[:, None] * f), torch.zeros(3, 1)], dim=1)
    assert torch.allclose(emb, want, atol=1e-6)


def test_the_timestep_and_the_condition_change_the_prediction() -> None:
    model = _randomize(ResShiftUNet(PRESETS["tiny"]), seed=5).eval()
    gen = torch.Generator().manual_seed(6)
    x, cond = torch.randn(1, 3, 8, 8, generator=gen), torch.randn(1, 3, 8, 8, generator=gen)
    with torch.no_grad():
        base = model(x, cond, torch.tensor([3.0]))
        assert not torch.allclose(base, model(x, cond, torch.tensor([4.0])), atol=1e-4)
        assert not torch.allclose(base, model(x, -cond, torch.tensor([3.0])), atol=1e-4)


def test_bad_inputs_are_input_errors() -> None:
    model = ResShiftUNet(PRESETS["tiny"])
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(InputError, match="multiple of 2"):
        model(torch.zeros(1, 3, 7, 8), torch.zeros(1, 3, 7, 8), torch.zeros(1))
    with pytest.raises(InputError, match="cond"):
        model(x, torch.zeros(1, 3, 4, 4), torch.zeros(1))
    with pytest.raises(InputError, match="x_t"):
        model(torch.zeros(1, 4, 8, 8), x, torch.zeros(1))
    with pytest.raises(InputError, match="shape"):
        model(x, x, torch.zeros(2))


# ----------------------------------------------------------------------------------------------------------------
# what tiling can rely on
# ----------------------------------------------------------------------------------------------------------------

def test_tiles_batched_together_give_the_same_predictions_as_one_by_one() -> None:
    model = _randomize(ResShiftUNet(replace(PRESETS["tiny"], image_size=8)), seed=8).double().eval()
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(3, 3, 12, 8, generator=gen, dtype=torch.float64)  # 12 rows: the level-0 Swin layer pads
    cond = torch.randn(3, 3, 12, 8, generator=gen, dtype=torch.float64)
    t = torch.tensor([1.0, 5.0, 9.0], dtype=torch.float64)
    with torch.no_grad():
        batched = model(x, cond, t)
        single = torch.cat([model(x[i:i + 1], cond[i:i + 1], t[i:i + 1]) for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-12, rtol=0)


@pytest.mark.parametrize("shift", [0, 2])
def test_swin_block_is_window_local_up_to_groupnorm_statistics(shift: int) -> None:
    """What holds exactly for the window attention under tiling.

    P = [X | flip(X)] has X's GroupNorm statistics (same values), so the attention branch x + W-MSA(norm1(x)) can
    differ on P's left half only in windows that reach across the seam: none for the unshifted block, and for the
    shifted block only the last ``window - shift`` columns (their shifted window wraps to X's first columns in X,
    to the flipped copy in P). The MLP branch is silenced here (fc2 = 0) because its norm2 statistics already
    differ (the attention output on the flipped half is not the mirror image). The network as a whole has no such
    property: every GroupNorm makes each output depend on the whole input's statistics and the 3x3 convolutions
    see zero padding at tile borders, which is why the pipeline blends tiles with feathered weights at every step.
    """
    block = _swin_block(shift)
    with torch.no_grad():
        block.mlp.fc2.weight.zero_()
        block.mlp.fc2.bias.zero_()
    x = torch.randn(1, 8, 8, 12, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    p = torch.cat([x, x.flip(-1)], dim=-1)
    with torch.no_grad():
        alone, inside = block(x), block(p)[..., :12]
    keep = 12 - (4 - shift) if shift else 12
    assert torch.allclose(alone[..., :keep], inside[..., :keep], atol=1e-12, rtol=0)
    if shift:
        assert not torch.allclose(alone[..., keep:], inside[..., keep:], atol=1e-6)


def test_window_multiple_sizes_need_no_padding_and_others_still_run() -> None:
    config = PRESETS["tiny"]
    model = _randomize(ResShiftUNet(config), seed=11).eval()
    for side in (config.window_multiple, config.window_multiple * 2, config.size_multiple * 3):
        x = torch.randn(1, 3, side, side + config.size_multiple)
        with torch.no_grad():
            y = model(x, x, torch.tensor([2.0]))
        assert y.shape == x.shape and torch.isfinite(y).all()


def test_half_precision_forward_is_finite() -> None:
    model = _randomize(ResShiftUNet(PRESETS["tiny"]), seed=12).eval().to(torch.bfloat16)
    x = torch.randn(1, 3, 10, 10).to(torch.bfloat16)  # padded Swin windows: -inf keys in bf16
    with torch.no_grad():
        y = model(x, x, torch.tensor([1.0]))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


# ----------------------------------------------------------------------------------------------------------------
# the VQ-f4 autoencoder
# ----------------------------------------------------------------------------------------------------------------

def _functional_vq(model: VQF4, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(encode(x), decode(encode(x))) written out on the state dict from LDM's Encoder/Decoder description."""
    sd = dict(model.named_parameters())
    c = model.config

    def gn(h, key):
        return F.group_norm(h, c.norm_groups, sd[f"{key}.weight"], sd[f"{key}.bias"], 1e-6)

    def conv(h, key, **kw):
        return F.conv2d(h, sd[f"{key}.weight"], sd[f"{key}.bias"], **kw)

    def res(h, key):
        out = conv(F.silu(gn(h, f"{key}.norm1")), f"{key}.conv1", padding=1)
        out = conv(F.silu(gn(out, f"{key}.norm2")), f"{key}.conv2", padding=1)
        return (conv(h, f"{key}.nin_shortcut") if f"{key}.nin_shortcut.weight" in sd else h) + out

    def attn(h, key):
        b, ch, hh, ww = h.shape
        y = gn(h, f"{key}.norm")
        q = conv(y, f"{key}.q").reshape(b, ch, -1)
        k = conv(y, f"{key}.k").reshape(b, ch, -1)
        v = conv(y, f"{key}.v").reshape(b, ch, -1)
        w_ = torch.softmax(torch.einsum("bci,bcj->bij", q, k) * ch ** -0.5, dim=2)
        return h + conv(torch.einsum("bij,bcj->bci", w_, v).reshape(b, ch, hh, ww), f"{key}.proj_out")

    def mid(h, key):
        return res(attn(res(h, f"{key}.block_1"), f"{key}.attn_1"), f"{key}.block_2")

    levels = len(c.ch_mult)
    h = conv(x, "encoder.conv_in", padding=1)
    for i in range(levels):
        for j in range(c.num_res_blocks):
            h = res(h, f"encoder.down.{i}.block.{j}")
        if i != levels - 1:
            h = conv(F.pad(h, (0, 1, 0, 1)), f"encoder.down.{i}.downsample.conv", stride=2)
    h = conv(F.silu(gn(mid(h, "encoder.mid"), "encoder.norm_out")), "encoder.conv_out", padding=1)
    z = conv(h, "quant_conv")
    codes = sd["quantize.embedding.weight"]
    flat = z.permute(0, 2, 3, 1).reshape(-1, c.embed_dim)
    idx = torch.cdist(flat, codes).argmin(dim=1)
    zq = codes[idx].reshape(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
    h = conv(conv(zq, "post_quant_conv"), "decoder.conv_in", padding=1)
    h = mid(h, "decoder.mid")
    for i in reversed(range(levels)):
        for j in range(c.num_res_blocks + 1):
            h = res(h, f"decoder.up.{i}.block.{j}")
        if i != 0:
            h = conv(F.interpolate(h, scale_factor=2.0, mode="nearest"), f"decoder.up.{i}.upsample.conv", padding=1)
    return z, conv(F.silu(gn(h, "decoder.norm_out")), "decoder.conv_out", padding=1)


def test_tiny_vqf4_matches_a_functional_reimplementation() -> None:
    model = _randomize(VQF4(VQF4_PRESETS["tiny"]), seed=13, std=0.2).double().eval()
    x = torch.rand(2, 3, 12, 16, generator=torch.Generator().manual_seed(14), dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        z, rec = model.encode(x), model(x)
        z_ref, rec_ref = _functional_vq(model, x)
    assert z.shape == (2, 3, 3, 4) and rec.shape == x.shape
    assert torch.allclose(z, z_ref, atol=1e-10, rtol=0)
    assert torch.allclose(rec, rec_ref, atol=1e-10, rtol=0)


def test_vq_decode_quantises_to_the_nearest_code() -> None:
    model = _randomize(VQF4(VQF4_PRESETS["tiny"]), seed=15).eval()
    z = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(16))
    codes = model.quantize.embedding.weight
    brute = torch.stack([((codes - z[b, :, i, j]) ** 2).sum(1).argmin()
                         for b in range(2) for i in range(5) for j in range(7)]).view(2, 5, 7)
    with torch.no_grad():
        assert torch.equal(model.quantize.indices(z), brute)
        zq = model.quantize(z)
        assert torch.equal(model.quantize(zq), zq)  # codes are fixed points
        assert torch.equal(model.decode(z), model.decode(zq, quantize=False))
        assert not torch.allclose(model.decode(z), model.decode(z, quantize=False))
    with pytest.raises(InputError, match="multiples of 4"):
        model.encode(torch.zeros(1, 3, 10, 12))


# ----------------------------------------------------------------------------------------------------------------
# converting released files
# ----------------------------------------------------------------------------------------------------------------

def _release_like_state(config: ResShiftUNetConfig | VQF4Config, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in the release's layout with random floats; Swin buffers recomputed by the test's formulas."""
    module_type = ResShiftUNet if isinstance(config, ResShiftUNetConfig) else VQF4
    return _fill({k: tuple(v.shape) for k, v in _meta(module_type, config).state_dict().items()}, seed)


def _fill(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        if key.endswith("relative_position_index"):
            win = math.isqrt(shape[0])
            coords = torch.cartesian_prod(torch.arange(win), torch.arange(win))
            rel = coords[:, None, :] - coords[None, :, :] + win - 1
            out[key] = rel[..., 0] * (2 * win - 1) + rel[..., 1]
        elif key.endswith("attn_mask"):  # the release's calculate_mask for an r x r map, shift = window // 2
            nw, n, _ = shape
            win, side = math.isqrt(n), math.isqrt(nw)
            out[key] = _release_calculate_mask(win * side, win * side, win, win // 2)
        else:
            out[key] = torch.empty(shape).normal_(generator=g)
    return out


def test_a_release_layout_v1_state_dict_converts_and_loads_strictly() -> None:
    """The full-size v1 layout from the listing, random values: recognised as the v1 preset, every tensor kept."""
    shapes = dict(_listing("resshift_v1_unet_state_dict.txt"))
    state = _fill(shapes, seed=17)
    config, tensors = convert_unet_state(state, "v1.pth")
    assert config == replace(PRESETS["v1"], mask_rule="release")
    model = _meta(ResShiftUNet, config).to_empty(device="cpu")
    model.load_state_dict(tensors, strict=True)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], state[k].to(loaded[k].dtype)) for k in state)

    ae_state = _fill(dict(_listing("vq_f4_autoencoder_state_dict.txt")), seed=18)
    ae_config, ae_tensors = convert_autoencoder_state(ae_state, "ae.pth")
    assert ae_config == VQF4Config()
    check_latent_channels(config, ae_config)
    ae = _meta(VQF4, ae_config).to_empty(device="cpu")
    ae.load_state_dict(ae_tensors, strict=True)
    assert torch.equal(ae.quantize.embedding.weight, ae_state["quantize.embedding.weight"])


# small layouts with the release's GroupNorm32 (norm_groups cannot be read from shapes; 32 is assumed)
SMALL_RELEASE = ResShiftUNetConfig(image_size=16, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                                   swin_levels=(0,), swin_embed_dim=32, swin_head_channels=16, window_size=4,
                                   mlp_ratio=2.0, mask_rule="release")
SMALL_AE = VQF4Config(ch=32, ch_mult=(1, 1, 1), num_res_blocks=1, n_embed=64)


@pytest.mark.parametrize("wrap", ["flat", "state_dict", "module", "state_dict+module+compile"])
def test_release_files_are_unwrapped_and_converted(tmp_path: Path, wrap: str) -> None:
    state = _release_like_state(SMALL_RELEASE, seed=19)
    ae_state = _release_like_state(SMALL_AE, seed=20)
    prefix = {"module": "module.", "state_dict+module+compile": "module._orig_mod."}.get(wrap, "")
    obj = {prefix + k: v for k, v in state.items()}
    if wrap.startswith("state_dict"):
        obj = {"state_dict": obj, "iters_start": 500000}
    torch.save(obj, tmp_path / "unet.pth")
    torch.save({"state_dict": ae_state} if wrap != "flat" else ae_state, tmp_path / "ae.pth")
    out = convert_release(tmp_path / "unet.pth", tmp_path / "ae.pth")
    assert out.unet_config == SMALL_RELEASE and out.autoencoder_config == SMALL_AE
    model, ae = ResShiftUNet(out.unet_config), VQF4(out.autoencoder_config)
    model.load_state_dict(out.unet_tensors, strict=True)
    ae.load_state_dict(out.autoencoder_tensors, strict=True)
    assert all(torch.equal(model.state_dict()[k], state[k]) for k in state)
    assert all(torch.equal(ae.state_dict()[k], ae_state[k]) for k in ae_state)

    torch.save(_release_like_state(replace(SMALL_AE, z_channels=4, embed_dim=4), seed=21), tmp_path / "ae4.pth")
    with pytest.raises(CheckpointError, match="ae4.pth: the autoencoder's latent has 4 channels but the UNet takes 3"):
        convert_release(tmp_path / "unet.pth", tmp_path / "ae4.pth")


def test_config_recognition_from_shapes() -> None:
    cases = [
        PRESETS["v1"],
        ResShiftUNetConfig(image_size=32, in_channels=48, cond_channels=3, out_channels=48, model_channels=32,
                           channel_mult=(1, 2), num_res_blocks=1, swin_levels=(1,), swin_embed_dim=64,
                           swin_head_channels=32, window_size=8, mlp_ratio=2.0),
        ResShiftUNetConfig(image_size=16, model_channels=32, channel_mult=(1, 2), num_res_blocks=2,
                           swin_levels=(), swin_embed_dim=32, swin_head_channels=16, window_size=8,
                           use_scale_shift_norm=False),  # only the middle layer, unshifted: r = window
    ]
    for config in cases:
        shapes = _meta(ResShiftUNet, config).state_dict()
        assert unet_config_from_state(shapes, "x") == replace(config, mask_rule="release")
    ae = VQF4Config(ch=64, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=4, embed_dim=4, n_embed=256)
    assert vqf4_config_from_state(_meta(VQF4, ae).state_dict(), "x") == ae


def test_conversion_errors_name_the_key() -> None:
    config = PRESETS["v1"]
    shapes = dict(_listing("resshift_v1_unet_state_dict.txt"))
    meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}  # keys and shapes are checked first

    extra = {**meta, "input_blocks.1.1.blocks.0.attn.extra_bias": torch.empty(3, device="meta")}
    with pytest.raises(CheckpointError, match="unexpected tensor 'input_blocks.1.1.blocks.0.attn.extra_bias'"):
        convert_unet_state(extra, "x.pth", config)
    missing = {k: v for k, v in meta.items() if k != "output_blocks.4.0.skip_connection.bias"}
    with pytest.raises(CheckpointError, match="'output_blocks.4.0.skip_connection.bias' is missing"):
        convert_unet_state(missing, "x.pth", config)
    wrong = {**meta, "out.2.weight": torch.empty(3, 160, 1, 1, device="meta")}
    with pytest.raises(CheckpointError, match=r"'out.2.weight' has shape \(3, 160, 1, 1\)"):
        convert_unet_state(wrong, "x.pth", config)

    tiny = replace(PRESETS["tiny"], mask_rule="release")
    state = _release_like_state(tiny, seed=21)
    key = "input_blocks.1.1.blocks.1.attn_mask"
    textbook = _textbook_mask(16, 16, 4, 2)  # the tiny preset's level 0: 16 x 16, window 4
    assert not torch.equal(state[key], textbook)
    state[key] = textbook  # a file holding the textbook mask is not the release's network
    with pytest.raises(CheckpointError, match=f"buffer '{key}' differs .* under the 'release' mask rule; it is the "
                                              "'swin' rule's mask"):
        convert_unet_state(state, "x.pth", tiny)
    state[key] = torch.zeros_like(state[key])
    with pytest.raises(CheckpointError, match=f"buffer '{key}' differs"):
        convert_unet_state(state, "x.pth", tiny)
    for k, v in state.items():  # textbook masks everywhere: they pass the check of a "swin" checkpoint
        if k.endswith("attn_mask"):
            win, side = math.isqrt(v.shape[1]), math.isqrt(v.shape[0])
            state[k] = _textbook_mask(win * side, win * side, win, win // 2)
    assert convert_unet_state(state, "x.pth", PRESETS["tiny"])[0].mask_rule == "swin"
    with pytest.raises(CheckpointError, match="it is the 'swin' rule's mask"):
        convert_unet_state(state, "x.pth", tiny)

    with pytest.raises(CheckpointError, match="'module.' prefix and 'b' does not"):
        unwrap_state({"module.a": torch.zeros(1), "b": torch.zeros(1)}, "x.pth")
    with pytest.raises(CheckpointError, match="'time_embed.0.weight' is missing"):
        unet_config_from_state({"encoder.conv_in.weight": torch.zeros(1)}, "x.pth")
    with pytest.raises(CheckpointError, match="latent has 4 channels"):
        check_latent_channels(config, VQF4Config(z_channels=4, embed_dim=4))


def test_files_that_are_not_weights_are_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="not a PyTorch file .*neither a zip archive nor a pickle"):
        convert_release(tmp_path / "junk.pth")
    torch.save({"state_dict": {"a": torch.zeros(1)}, "config": ConfigHolder()}, tmp_path / "pickle.pth")
    with pytest.raises(CheckpointError, match="not a weights-only file; .*dreamsr unpickles nothing"):
        convert_release(tmp_path / "pickle.pth")
    with pytest.raises(CheckpointError, match="not found"):
        convert_release(tmp_path / "absent.pth")


class ConfigHolder:
    """An arbitrary object: a weights-only load must refuse to unpickle it."""


@pytest.mark.slow
def test_full_size_release_files_convert(tmp_path: Path) -> None:
    """Both released layouts at full size, written with torch.save in the release's wrapping and converted."""
    state = _fill(dict(_listing("resshift_v1_unet_state_dict.txt")), seed=22)
    ae_state = _fill(dict(_listing("vq_f4_autoencoder_state_dict.txt")), seed=23)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "resshift_realsrx4_s15.pth")
    torch.save({"state_dict": ae_state}, tmp_path / "autoencoder_vq_f4.pth")
    out = convert_release(tmp_path / "resshift_realsrx4_s15.pth", tmp_path / "autoencoder_vq_f4.pth")
    assert out.unet_config == replace(PRESETS["v1"], mask_rule="release") and out.autoencoder_config == VQF4Config()
    assert all(torch.equal(out.unet_tensors[k], state[k].to(out.unet_tensors[k].dtype)) for k in state)
    assert all(torch.equal(out.autoencoder_tensors[k], ae_state[k]) for k in ae_state)


# the released v1 geometry at a small width: image_size 64 (latent px), window 8, Swin at levels 0 and 1 and in the
# middle (level 2: 16 px, window 8, shifted), norm_groups 32 as released
PARITY_UNET = ResShiftUNetConfig(image_size=64, model_channels=32, channel_mult=(1, 1, 2), num_res_blocks=1,
                                 swin_levels=(0, 1), swin_embed_dim=32, swin_head_channels=16, window_size=8,
                                 mlp_ratio=2.0, mask_rule="release")


def test_a_converted_release_pair_gives_the_released_x0_encode_and_decode(tmp_path: Path) -> None:
    """Issue 26: released-format files (random weights, the masks the release's calculate_mask stores) through
    ``dreamsr weights convert``'s writer and load_checkpoint; x0 against the released forward at the training size
    (the file's masks) and at 64 x 128 (masks computed at run time), encode/decode against the VQ reference."""
    from dreamsr.checkpoint import load_checkpoint
    from dreamsr.converters.resshift import write_release

    state = _release_like_state(PARITY_UNET, seed=31)
    ae_state = _release_like_state(SMALL_AE, seed=32)
    for k, v in state.items():  # tame the random weights (a deep net of N(0, 1) weights overflows)
        if v.is_floating_point() and not k.endswith("attn_mask"):
            state[k] = v * (0.05 if v.dim() > 1 else 0.1) + (1.0 if k.endswith(("norm1.weight", "norm2.weight")) else 0.0)
    torch.save({"state_dict": state}, tmp_path / "resshift_realsrx4_s15.pth")
    torch.save(ae_state, tmp_path / "autoencoder_vq_f4.pth")
    write_release(tmp_path / "resshift_realsrx4_s15.pth", tmp_path / "out.safetensors",
                  autoencoder_path=tmp_path / "autoencoder_vq_f4.pth")
    net, info = load_checkpoint(tmp_path / "out.safetensors")
    assert info.network.unet == PARITY_UNET and info.network.unet.mask_rule == "release"
    unet = net.unet.eval()

    def release_block(name: str, block: SwinBlock, h: torch.Tensor) -> torch.Tensor:
        return _release_swin_block(block, h, state.get(f"{name}.attn_mask"))

    gen = torch.Generator().manual_seed(33)
    worst = 0.0
    for size in [(64, 64), (64, 128)]:
        x_t = torch.randn(1, 3, *size, generator=gen)
        cond = torch.randn(1, 3, *size, generator=gen)
        t = torch.tensor([7.0])
        with torch.no_grad():
            ours, ref = unet(x_t, cond, t), _functional_unet(unet, x_t, cond, t, release_block)
            textbook = ResShiftUNet(replace(PARITY_UNET, mask_rule="swin")).eval()
            textbook.load_state_dict({k: v for k, v in unet.state_dict().items() if not k.endswith("attn_mask")}
                                     | {k: v for k, v in textbook.state_dict().items() if k.endswith("attn_mask")})
            other = textbook(x_t, cond, t)
        worst = max(worst, float((ours - ref).abs().max()))
        assert float((other - ref).abs().max()) > 1e-3  # the textbook mask is another network (the test bites)
    assert worst < 1e-4, worst

    img = torch.rand(1, 3, 64, 128, generator=gen) * 2 - 1
    with torch.no_grad():
        z, rec = net.first_stage.encode(img), net.first_stage(img)
        z_ref, rec_ref = _functional_vq(net.first_stage, img)
    assert float((z - z_ref).abs().max()) < 1e-4 and float((rec - rec_ref).abs().max()) < 1e-4


def test_the_shipped_default_keeps_the_textbook_mask() -> None:
    """dreamsr-x4-resshift was trained with the textbook mask: its file says "swin" (or, as first shipped, nothing,
    which reads as "swin"), its stored masks are the textbook ones, and so are the masks computed at other sizes."""
    from dreamsr.checkpoint import load_checkpoint, read_info

    path = Path(__file__).resolve().parents[1] / "dreamsr" / "assets" / "dreamsr-x4-resshift.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        import json
        assert json.loads(f.metadata()["network"])["unet"].get("mask_rule", "swin") == "swin"
    assert read_info(path).network.unet.mask_rule == "swin"
    net, _ = load_checkpoint(path)
    blocks = [(n, m) for n, m in net.unet.named_modules() if isinstance(m, SwinBlock) and m.shift > 0]
    assert blocks
    for _, block in blocks:
        r, win, s = block.resolution, block.window, block.shift
        assert torch.equal(block.attn_mask, _textbook_mask(r, r, win, s))
        got = block._mask(r, 2 * r, (r, 2 * r), torch.device("cpu"))
        assert torch.equal(got, _textbook_mask(r, 2 * r, win, s))


def test_new_training_chooses_the_rules() -> None:
    """TrainConfig.mask_rule / resize_rule reach the network configs (default: dreamsr's rules)."""
    from dreamsr.jobs.train.config import TrainConfig

    assert TrainConfig(family="resshift", preset="tiny").network_config().unet.mask_rule == "swin"
    assert TrainConfig(family="resshift", preset="tiny", mask_rule="release").network_config().unet.mask_rule == \
        "release"
    assert TrainConfig(family="idm", preset="tiny").network_config().resize_rule == "exact"
    assert TrainConfig(family="idm", preset="tiny", resize_rule="release").network_config().resize_rule == "release"
    with pytest.raises(ConfigError, match="no mask_rule to override"):
        TrainConfig(family="sr3", preset="tiny", mask_rule="release").network_config()
