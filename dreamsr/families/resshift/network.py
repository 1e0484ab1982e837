"""ResShift's UNet with Swin-transformer layers (zsyOAOA/ResShift ``models/unet.py: UNetModelSwin``), key-compatible.

The network predicts x̂0 (ResShift) or ε (the DDPM variant of the DREAM paper) from

- ``x_t`` [B, C, H, W]: the sample in the process's space, already input-scaled by the process (ResShift:
  z_t / sqrt(κ² η_t + 1));
- ``cond`` [B, C', H, W]: the LR condition at the sample's size, concatenated to ``x_t`` along channels exactly as
  the release does with ``cond_lq=True, lq_size == image_size`` (its ``feature_extractor`` is then the identity):
  the first convolution sees ``cat([x_t, cond])``, C + C' channels (v1: 3 latent + 3 LR-pixel channels = 6);
- ``t`` [B] float: the timestep (ResShift: the integer index t ∈ {0..T−1} as a float; the DDPM variant: the
  original step index). It is embedded with the release's sinusoids, **cos first**, max period 1e4.

Layout (the release's): an input conv; per level ``num_res_blocks`` ResBlocks (scale-shift norm), the first one of
each level in ``swin_levels`` followed by a Swin ``BasicLayer`` (1x1 conv C→E, ``swin_depth`` Swin blocks with
GroupNorm norms, windows of ``window_size`` with alternating shifts 0 and window/2, 1x1-conv MLPs, 1x1 conv E→C);
a strided-conv downsample between levels; middle ResBlock–Swin–ResBlock; the mirrored decoder (``num_res_blocks``
+ 1 ResBlocks per level on the concatenated skips, a Swin layer after the first one of each level in
``swin_levels``, nearest×2 + conv upsampling); GroupNorm, SiLU, 3x3 conv out. Module and parameter names are the
release's, so a released state dict loads with the identity key mapping (see :mod:`dreamsr.converters.resshift`).

Window geometry, as the release fixes it at build time from ``image_size`` (the training latent size): a Swin
layer at level l has resolution r = image_size / 2^l; if r <= window_size its window is r and neither block
shifts, otherwise the window is window_size and the odd blocks shift by window_size // 2. The shifted blocks keep
the mask for the r x r map as the buffer ``attn_mask`` (in the release's state dict) and the window's relative
position index as ``relative_position_index``; other sizes compute their mask on the fly (as the release does).

The shifted-window mask has two rules (:data:`MASK_RULES`, the config's ``mask_rule``, stored in every checkpoint):
``"swin"``, the textbook Swin mask (tokens that the cyclic shift brought together from different regions of the map
never attend to each other), and ``"release"``, the mask the released ``calculate_mask`` actually computes (it fills
a ``(1, 1, H, W)`` tensor as if it were ``(1, H, W, 1)`` and transposes each window's tokens): only the last row of
windows is masked, its tokens split into a left and a right column group at ``window - shift``, and the last
column of windows is not masked. Released weights were trained with ``"release"``; dreamsr's own networks, the
shipped ``dreamsr-x4-resshift`` included, with ``"swin"`` (a file without the field is ``"swin"``).

Sizes: H and W must be multiples of :attr:`ResShiftUNetConfig.size_multiple` (2^(levels−1), the strided convs).
Where a Swin layer's map is not a multiple of its window, the layer pads it at the bottom/right after its first
norm and crops back; padded tokens are masked out as keys, so they never change a real token (the release refuses
such sizes; at multiples of :attr:`ResShiftUNetConfig.window_multiple` nothing is padded and the computation is the
release's). Window partitions start at the top-left corner, so tiles whose origins are multiples of
``window_multiple`` see windows aligned with those of the whole image. Like every GroupNorm network, each output
depends on the statistics of the whole input, so a tile's prediction is not exactly the crop of the whole image's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from dreamsr.config import from_dict_strict, to_plain_dict
from dreamsr.errors import ConfigError, InputError

__all__ = ["ResShiftUNetConfig", "ResShiftUNet", "PRESETS", "preset", "timestep_embedding", "window_geometry",
           "shifted_window_mask", "relative_position_index", "MASK_RULES"]

# the shifted-window mask rules (module docstring): the textbook Swin mask, and the released code's
MASK_RULES: tuple[str, ...] = ("swin", "release")

_MASK_VALUE = -100.0  # the release's value for pairs of tokens from different regions of a shifted window


@dataclass(frozen=True)
class ResShiftUNetConfig:
    """Shape of a ResShift Swin-UNet (the release's ``UNetModelSwin`` parameters). Stored in checkpoint metadata.

    Release v1 (``configs/realsr_swinunet_realesrgan256.yaml``): image_size 64, 3 latent + 3 LR channels, 160
    channels, mults (1, 2, 2, 4), 2 ResBlocks per level, Swin at every level (attention_resolutions
    [64, 32, 16, 8]) and in the middle, Swin width 192 with heads of 32 channels, window 8, MLP ratio 4.
    """

    image_size: int = 64  # training size of x_t: fixes each Swin layer's window/shift and the stored masks
    in_channels: int = 3  # channels of x_t (v1: the VQ-f4 latent)
    cond_channels: int = 3  # channels of cond, concatenated after x_t (v1: the LR pixels); 0 = unconditional
    out_channels: int = 3  # channels of the prediction
    model_channels: int = 160  # channels of level 0; the time embedding has 4x this
    channel_mult: tuple[int, ...] = (1, 2, 2, 4)  # channels of level i = model_channels * channel_mult[i]
    num_res_blocks: int = 2  # ResBlocks per encoder level (the decoder has one more per level)
    swin_levels: tuple[int, ...] = (0, 1, 2, 3)  # levels with a Swin layer (the middle always has one)
    swin_depth: int = 2  # Swin blocks per Swin layer (alternating unshifted / shifted)
    swin_embed_dim: int = 192  # channels inside a Swin layer
    swin_head_channels: int = 32  # channels per attention head (heads = swin_embed_dim / this)
    window_size: int = 8  # Swin window side
    mlp_ratio: float = 4.0  # hidden channels of a Swin MLP = int(swin_embed_dim * mlp_ratio)
    norm_groups: int = 32  # GroupNorm groups everywhere (the release's GroupNorm32)
    dropout: float = 0.0  # dropout in ResBlocks and Swin MLP/projection (release: 0)
    use_scale_shift_norm: bool = True  # FiLM-like time conditioning in ResBlocks (release: True)
    mask_rule: str = "swin"  # shifted-window mask: "swin" (textbook; dreamsr's networks) or "release" (released weights)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mult", tuple(int(m) for m in self.channel_mult))
        object.__setattr__(self, "swin_levels", tuple(sorted({int(v) for v in self.swin_levels})))
        object.__setattr__(self, "mlp_ratio", float(self.mlp_ratio))
        ints = {"image_size": self.image_size, "in_channels": self.in_channels, "out_channels": self.out_channels,
                "model_channels": self.model_channels, "num_res_blocks": self.num_res_blocks,
                "swin_depth": self.swin_depth, "swin_embed_dim": self.swin_embed_dim,
                "swin_head_channels": self.swin_head_channels, "window_size": self.window_size,
                "norm_groups": self.norm_groups}
        for name, value in ints.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"ResShiftUNetConfig: {name} must be a positive integer, got {value!r}")
        if not isinstance(self.cond_channels, int) or self.cond_channels < 0:
            raise ConfigError(f"ResShiftUNetConfig: cond_channels must be >= 0, got {self.cond_channels!r}")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ConfigError("ResShiftUNetConfig: channel_mult must list at least one positive multiplier")
        for level in self.swin_levels:
            if not 0 <= level < len(self.channel_mult):
                raise ConfigError(f"ResShiftUNetConfig: swin level {level} does not exist "
                                  f"(levels 0..{len(self.channel_mult) - 1})")
        if self.image_size % self.size_multiple:
            raise ConfigError(f"ResShiftUNetConfig: image_size {self.image_size} is not a multiple of "
                              f"{self.size_multiple} (2^(levels-1))")
        for mult in self.channel_mult:
            if (self.model_channels * mult) % self.norm_groups:
                raise ConfigError(f"ResShiftUNetConfig: norm_groups={self.norm_groups} does not divide "
                                  f"{self.model_channels * mult} channels")
        if self.swin_embed_dim % self.norm_groups:
            raise ConfigError(f"ResShiftUNetConfig: norm_groups={self.norm_groups} does not divide "
                              f"swin_embed_dim={self.swin_embed_dim}")
        if self.swin_embed_dim % self.swin_head_channels:
            raise ConfigError(f"ResShiftUNetConfig: swin_head_channels={self.swin_head_channels} does not divide "
                              f"swin_embed_dim={self.swin_embed_dim}")
        if self.mlp_ratio <= 0 or int(self.swin_embed_dim * self.mlp_ratio) < 1:
            raise ConfigError(f"ResShiftUNetConfig: mlp_ratio {self.mlp_ratio} gives an empty Swin MLP")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"ResShiftUNetConfig: dropout must be in [0, 1), got {self.dropout}")
        if not isinstance(self.use_scale_shift_norm, bool):
            raise ConfigError("ResShiftUNetConfig: use_scale_shift_norm must be true or false")
        if self.mask_rule not in MASK_RULES:
            raise ConfigError(f"ResShiftUNetConfig: mask_rule must be one of {', '.join(MASK_RULES)}, "
                              f"got {self.mask_rule!r}")

    @property
    def levels(self) -> int:
        """Number of resolution levels."""
        return len(self.channel_mult)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (2^(levels-1): the strided convolutions)."""
        return 2 ** (self.levels - 1)

    @property
    def num_heads(self) -> int:
        """Attention heads per Swin block."""
        return self.swin_embed_dim // self.swin_head_channels

    @property
    def window_multiple(self) -> int:
        """Sides that are multiples of this need no padding in any Swin layer (the release's native sizes;
        v1: 64 latent pixels, the 8-pixel window at level 3). A multiple of :attr:`size_multiple`."""
        m = self.size_multiple
        for level in self.swin_levels + (self.levels - 1,):
            window, _ = window_geometry(self, level)
            m = math.lcm(m, window * 2 ** level)
        return m

    def to_dict(self) -> dict:
        """JSON-friendly dict (tuples become lists)."""
        return to_plain_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ResShiftUNetConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error, not silently dropped."""
        return from_dict_strict(cls, d)


def window_geometry(config: ResShiftUNetConfig, level: int) -> tuple[int, int]:
    """(window, shift) of the Swin layer at ``level`` (the middle layer is at level ``levels - 1``).

    The release's rule (``SwinTransformerBlock.__init__``): with r = image_size / 2^level, a layer whose map is no
    larger than the window uses window r and no shift; otherwise window_size and shift window_size // 2.
    """
    r = config.image_size // 2 ** level
    if r <= config.window_size:
        return r, 0
    return config.window_size, config.window_size // 2


# Named presets. Parameter counts are pinned in tests/test_resshift_network.py.
PRESETS: dict[str, ResShiftUNetConfig] = {
    # the released v1/v2 UNet (resshift_{realsrx4,bicsrx4_*}_s15.pth): 118,593,583 parameters
    "v1": ResShiftUNetConfig(),
    # ~2.9 M parameters: trains on two CPU cores (latent 3 ch; set in/out channels for another space)
    "small": ResShiftUNetConfig(image_size=64, model_channels=48, channel_mult=(1, 2, 2), num_res_blocks=1,
                                swin_levels=(1, 2), swin_depth=2, swin_embed_dim=64, swin_head_channels=32,
                                window_size=8, mlp_ratio=2.0, norm_groups=16),
    # ~49 k parameters: for tests only
    "tiny": ResShiftUNetConfig(image_size=16, model_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                               swin_levels=(0,), swin_depth=2, swin_embed_dim=8, swin_head_channels=4,
                               window_size=4, mlp_ratio=2.0, norm_groups=4),
}


def preset(name: str, **overrides: object) -> ResShiftUNetConfig:
    """The named preset, with ``overrides`` (e.g. ``in_channels=48``) applied; ConfigError for an unknown name."""
    try:
        config = PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown ResShift UNet preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    return replace(config, **overrides) if overrides else config


# ----------------------------------------------------------------------------------------------------------------
# building blocks (names follow the release so that its state dict maps by identity)
# ----------------------------------------------------------------------------------------------------------------

class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in at least float32 and cast back (the release's ``GroupNorm32``; eps 1e-5)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(),
                                self.eps).to(x.dtype)
        return super().forward(x)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of ``t`` [B] (float): ``[cos(t f_k), sin(t f_k)]``, **cos first**,
    f_k = max_period^(−k / half), k = 0..half−1, half = dim // 2; a zero column is appended for odd ``dim``
    (the release's ``basic_ops.timestep_embedding``)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, time embedding (scale-shift: h = norm(h)(1 + s) + b), GroupNorm-SiLU-dropout-conv,
    plus a 1x1-conv (or identity) skip. Keys: in_layers.{0,2}, emb_layers.1, out_layers.{0,3}, skip_connection."""

    def __init__(self, ch_in: int, ch_out: int, emb_dim: int, groups: int, dropout: float,
                 scale_shift: bool) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(GroupNorm32(groups, ch_in), nn.SiLU(), nn.Conv2d(ch_in, ch_out, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * ch_out if scale_shift else ch_out))
        self.out_layers = nn.Sequential(GroupNorm32(groups, ch_out), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(ch_out, ch_out, 3, padding=1))
        nn.init.zeros_(self.out_layers[3].weight)  # the release's zero_module: each block starts as its skip
        nn.init.zeros_(self.out_layers[3].bias)
        self.skip_connection = nn.Identity() if ch_in == ch_out else nn.Conv2d(ch_in, ch_out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        e = self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[3](self.out_layers[2](self.out_layers[1](h)))
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class Downsample(nn.Module):
    """3x3 conv with stride 2 (key ``op``)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv (key ``conv``)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def relative_position_index(window: int) -> torch.Tensor:
    """[w², w²] int64: row index into the (2w−1)² bias table for the offset between two tokens of a window,
    (dy + w − 1)(2w − 1) + (dx + w − 1) with (dy, dx) = position of the query minus position of the key."""
    cpu = torch.device("cpu")  # index arithmetic: on the CPU whatever the default device (a meta build included)
    ys, xs = torch.meshgrid(torch.arange(window, device=cpu), torch.arange(window, device=cpu), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + window - 1
    dx = xs[:, None] - xs[None, :] + window - 1
    return dy * (2 * window - 1) + dx


def _partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, C, H, W] -> [B * nW, w², C], windows in row-major order per image (H, W multiples of w)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // window, window, w // window, window)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(-1, window * window, c)


def _unpartition(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_partition`: [B * nW, w², C] -> [B, C, H, W]."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(-1, c, h, w)


def _region_labels(height: int, width: int, window: int, shift: int, rule: str) -> torch.Tensor:
    """[nW, w²] region label of every token of every window (row-major windows, row-major tokens) of the shifted
    ``height`` x ``width`` map; two tokens of a window attend freely iff their labels are equal.

    Each axis has three regions after the cyclic shift: [0, n − w), [n − w, n − s), [n − s, n).
    - ``"swin"``: a token at (y, x) is labelled by (row region of y, column region of x);
    - ``"release"``: the released ``calculate_mask`` labels only by rows, and reads the label of the token at
      (i·w + a, j·w + b) (window (i, j), in-window offset (a, b)) from row i·w + b: the row region of the window's
      row *b*, i.e. the in-window *column* picks it. Only the last window row has more than one label.
    """
    def regions(n: int) -> torch.Tensor:  # [n]: 0, 1, 2 for the three slices of an axis of length n
        r = torch.zeros(n, dtype=torch.long, device="cpu")
        r[max(n - window, 0):] = 1
        r[max(n - shift, 0):] = 2
        return r

    rows, cols = regions(height), regions(width)
    if rule == "swin":
        grid = (rows[:, None] * 3 + cols[None, :]).float()
    elif rule == "release":
        y = torch.arange(height, device="cpu")[:, None]
        x = torch.arange(width, device="cpu")[None, :]
        grid = rows[(y // window) * window + x % window].float()  # [H, W]: row region of row i·w + b
    else:
        raise ConfigError(f"unknown shifted-window mask rule {rule!r}; one of {', '.join(MASK_RULES)}")
    return _partition(grid[None, None], window)[..., 0]


def shifted_window_mask(height: int, width: int, window: int, shift: int,
                        valid: tuple[int, int] | None = None, rule: str = "swin") -> torch.Tensor:
    """Additive attention mask [nW, w², w²] (float32; windows row-major, tokens row-major in a window; entry
    [n, q, k] is added to query q's logit for key k) for the (padded) map ``height`` x ``width`` after the cyclic
    shift; ``height`` and ``width`` are multiples of ``window``.

    Shifted windows (shift > 0): pairs of tokens with different region labels (:func:`_region_labels`, by
    ``rule``: :data:`MASK_RULES`) get −100, as the release, pairs with equal labels 0. ``valid`` = (h, w) of the
    real map inside a bottom/right-padded one: keys on padded positions additionally get −inf (every window keeps
    at least one real key, so no row is all −inf; the release refuses such maps, and the rule is applied to the
    padded map). Computed on the CPU whatever the default device (a meta-device build of the network included).
    """
    if rule not in MASK_RULES:
        raise ConfigError(f"unknown shifted-window mask rule {rule!r}; one of {', '.join(MASK_RULES)}")
    if shift > 0:
        labels = _region_labels(height, width, window, shift, rule)  # [nW, w²]
    else:
        labels = torch.zeros(height // window * (width // window), window * window, device="cpu")
    out = (labels[:, None, :] - labels[:, :, None]).ne(0).float() * _MASK_VALUE
    if valid is not None and tuple(valid) != (height, width):
        real = torch.zeros(1, 1, height, width, device="cpu")
        real[:, :, :valid[0], :valid[1]] = 1.0
        if shift > 0:
            real = torch.roll(real, shifts=(-shift, -shift), dims=(2, 3))
        keys = _partition(real, window)[..., 0]  # [nW, w²]: 1 where the key is a real token
        out = out.masked_fill(keys[:, None, :] == 0, float("-inf"))
    return out


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative-position bias (Swin's W-MSA).

    Keys: relative_position_bias_table [(2w−1)², heads], relative_position_index [w², w²] (buffer), qkv, proj.
    """

    def __init__(self, dim: int, window: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.window, self.heads = window, heads
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x [B * nW, N, C] (N = w²), mask [nW, N, N] additive or None -> [B * nW, N, C]."""
        bn, n, c = x.shape
        qkv = self.qkv(x).reshape(bn, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]  # [B*nW, heads, N, c/heads]
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1).long()]
        attn = attn + bias.reshape(n, n, -1).permute(2, 0, 1).unsqueeze(0).to(attn.dtype)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bn // nw, nw, self.heads, n, n) + mask.to(attn.dtype)[None, :, None]
            attn = attn.view(bn, self.heads, n, n)
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(bn, n, c)
        return self.proj_drop(self.proj(out))


class Mlp(nn.Module):
    """1x1 conv, GELU, 1x1 conv (keys fc1, fc2)."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class SwinBlock(nn.Module):
    """x + W-MSA(norm1(x)) then + MLP(norm2(·)), on [B, C, H, W] maps; GroupNorm norms (the release's).

    ``resolution`` is the map side the release builds the block for; a shifted block stores that map's mask as
    the buffer ``attn_mask`` [nW, w², w²]. Other sizes get their mask computed per call, by the same ``mask_rule``
    (:data:`MASK_RULES`); maps that are not multiples of the window are padded at the bottom/right after ``norm1``
    and cropped back (padded keys masked).
    """

    def __init__(self, dim: int, resolution: int, heads: int, window: int, shift: int, mlp_ratio: float,
                 groups: int, dropout: float, mask_rule: str = "swin") -> None:
        super().__init__()
        if not 0 <= shift < window:
            raise ConfigError(f"Swin shift {shift} must be in [0, window {window})")
        if mask_rule not in MASK_RULES:
            raise ConfigError(f"unknown shifted-window mask rule {mask_rule!r}; one of {', '.join(MASK_RULES)}")
        self.window, self.shift, self.resolution, self.mask_rule = window, shift, resolution, mask_rule
        self.norm1 = GroupNorm32(groups, dim)
        self.attn = WindowAttention(dim, window, heads, dropout)
        self.norm2 = GroupNorm32(groups, dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)
        if shift > 0:
            self.register_buffer("attn_mask", shifted_window_mask(resolution, resolution, window, shift,
                                                                  rule=mask_rule))
        else:
            self.register_buffer("attn_mask", None)
        self._mask_cache: tuple[tuple, torch.Tensor] | None = None  # not state: recomputed on demand

    def _mask(self, hp: int, wp: int, valid: tuple[int, int], device: torch.device) -> torch.Tensor | None:
        if self.shift == 0 and valid == (hp, wp):
            return None
        if self.attn_mask is not None and valid == (hp, wp) == (self.resolution, self.resolution):
            return self.attn_mask
        key = (hp, wp, valid, str(device))
        if self._mask_cache is None or self._mask_cache[0] != key:  # tiles of one size reuse the last mask
            self._mask_cache = (key, shifted_window_mask(hp, wp, self.window, self.shift, valid,
                                                         rule=self.mask_rule).to(device))
        return self._mask_cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        win, s = self.window, self.shift
        hp, wp = -(-h // win) * win, -(-w // win) * win
        y = self.norm1(x)
        if (hp, wp) != (h, w):
            y = F.pad(y, (0, wp - w, 0, hp - h))
        if s > 0:
            y = torch.roll(y, shifts=(-s, -s), dims=(2, 3))
        windows = self.attn(_partition(y, win), self._mask(hp, wp, (h, w), x.device))
        y = _unpartition(windows, win, hp, wp)
        if s > 0:
            y = torch.roll(y, shifts=(s, s), dims=(2, 3))
        x = x + y[:, :, :h, :w]
        return x + self.mlp(self.norm2(x))


class _Conv1x1(nn.Module):
    """A 1x1 conv under the key ``proj`` (the release's PatchEmbed / PatchUnEmbed with patch 1, no norm)."""

    def __init__(self, ch_in: int, ch_out: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(ch_in, ch_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class SwinLayer(nn.Module):
    """1x1 conv C→E (patch_embed), Swin blocks (shifts 0, s, 0, s, ...), 1x1 conv E→C (patch_unembed).
    No residual around the layer (the release's ``BasicLayer``)."""

    def __init__(self, ch: int, config: ResShiftUNetConfig, level: int) -> None:
        super().__init__()
        window, shift = window_geometry(config, level)
        e = config.swin_embed_dim
        self.patch_embed = _Conv1x1(ch, e)
        self.patch_unembed = _Conv1x1(e, ch)
        self.blocks = nn.ModuleList(
            SwinBlock(e, config.image_size // 2 ** level, config.num_heads, window, shift if i % 2 else 0,
                      config.mlp_ratio, config.norm_groups, config.dropout, config.mask_rule)
            for i in range(config.swin_depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for block in self.blocks:
            x = block(x)
        return self.patch_unembed(x)


class _Step(nn.Sequential):
    """The release's TimestepEmbedSequential: ResBlocks get the embedding, other layers only the map."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


# ----------------------------------------------------------------------------------------------------------------
# the network
# ----------------------------------------------------------------------------------------------------------------

class ResShiftUNet(nn.Module):
    """ResShift's Swin-UNet: ``forward(x_t, cond, t)`` -> prediction [B, out_channels, H, W].

    State-dict keys and shapes are the release's (``time_embed``, ``input_blocks``, ``middle_block``,
    ``output_blocks``, ``out``), buffers included (``relative_position_index``, ``attn_mask``).
    """

    def __init__(self, config: ResShiftUNetConfig) -> None:
        super().__init__()
        self.config = c = config
        emb_dim = 4 * c.model_channels
        g, drop, ss = c.norm_groups, c.dropout, c.use_scale_shift_norm
        self.time_embed = nn.Sequential(nn.Linear(c.model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        ch = c.model_channels * c.channel_mult[0]
        self.input_blocks = nn.ModuleList([_Step(nn.Conv2d(c.in_channels + c.cond_channels, ch, 3, padding=1))])
        skip_chs = [ch]
        for level, mult in enumerate(c.channel_mult):
            for j in range(c.num_res_blocks):
                out = c.model_channels * mult
                layers: list[nn.Module] = [ResBlock(ch, out, emb_dim, g, drop, ss)]
                ch = out
                if level in c.swin_levels and j == 0:
                    layers.append(SwinLayer(ch, c, level))
                self.input_blocks.append(_Step(*layers))
                skip_chs.append(ch)
            if level != c.levels - 1:
                self.input_blocks.append(_Step(Downsample(ch)))
                skip_chs.append(ch)

        self.middle_block = _Step(ResBlock(ch, ch, emb_dim, g, drop, ss), SwinLayer(ch, c, c.levels - 1),
                                  ResBlock(ch, ch, emb_dim, g, drop, ss))

        self.output_blocks = nn.ModuleList()
        for level in reversed(range(c.levels)):
            out = c.model_channels * c.channel_mult[level]
            for i in range(c.num_res_blocks + 1):
                layers = [ResBlock(ch + skip_chs.pop(), out, emb_dim, g, drop, ss)]
                ch = out
                if level in c.swin_levels and i == 0:
                    layers.append(SwinLayer(ch, c, level))
                if level and i == c.num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(_Step(*layers))

        self.out = nn.Sequential(GroupNorm32(g, ch), nn.SiLU(), nn.Conv2d(ch, c.out_channels, 3, padding=1))

    def forward(self, x_t: torch.Tensor, cond: torch.Tensor | None, t: torch.Tensor) -> torch.Tensor:
        """``x_t`` [B, in_channels, H, W] (input-scaled), ``cond`` [B, cond_channels, H, W] (None when
        cond_channels = 0), ``t`` [B] float timesteps -> [B, out_channels, H, W]. H, W multiples of
        ``config.size_multiple``."""
        c = self.config
        if x_t.dim() != 4 or x_t.shape[1] != c.in_channels:
            raise InputError(f"ResShift UNet expects x_t [B, {c.in_channels}, H, W], got {tuple(x_t.shape)}")
        b, _, h, w = x_t.shape
        m = c.size_multiple
        if h % m or w % m:
            raise InputError(f"ResShift UNet input {h}x{w} is not a multiple of {m}; pad it to a multiple of {m}")
        if c.cond_channels:
            if cond is None or cond.dim() != 4 or tuple(cond.shape) != (b, c.cond_channels, h, w):
                got = None if cond is None else tuple(cond.shape)
                raise InputError(f"ResShift UNet expects cond [{b}, {c.cond_channels}, {h}, {w}] (the LR at the "
                                 f"sample's size), got {got}")
            x = torch.cat([x_t, cond.to(x_t.dtype)], dim=1)
        else:
            if cond is not None:
                raise InputError("this ResShift UNet is unconditional (cond_channels = 0) but got a cond")
            x = x_t
        t = torch.as_tensor(t, device=x_t.device)
        if t.dim() == 0:
            t = t.expand(b)
        if tuple(t.shape) != (b,):
            raise InputError(f"ResShift UNet expects t of shape [{b}], got {tuple(t.shape)}")
        emb = self.time_embed(timestep_embedding(t, c.model_channels).to(x_t.dtype))

        hs = []
        h_ = x
        for block in self.input_blocks:
            h_ = block(h_, emb)
            hs.append(h_)
        h_ = self.middle_block(h_, emb)
        for block in self.output_blocks:
            h_ = block(torch.cat([h_, hs.pop()], dim=1), emb)
        return self.out(h_)

    def num_parameters(self) -> int:
        """Number of parameters (buffers excluded)."""
        return sum(p.numel() for p in self.parameters())
