"""The SR3 conditional UNet (Saharia et al. 2021), as used by the DREAM paper.

Input is ``concat(y_t, x0)`` along channels: the noisy HR signal ``y_t`` and the bicubic-upsampled LR
condition ``x0`` (6 channels for RGB). Output is the predicted noise ``eps`` (3 channels).
The network is conditioned on the *continuous* noise level ``gamma = sqrt(alpha_bar)`` through a
sinusoidal embedding followed by an MLP, added in every residual block (SR3's FeatureWiseAffine
without affine), so any sampling schedule can be used at test time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dreamsr.config import from_dict_strict, to_plain_dict
from dreamsr.errors import ConfigError

__all__ = ["UNetConfig", "UNet", "PRESETS", "preset"]


@dataclass(frozen=True)
class UNetConfig:
    """Shape of an SR3 UNet. Stored in every checkpoint's metadata."""

    in_channels: int = 6  # y_t (3) + bicubic-upsampled LR condition x0 (3)
    out_channels: int = 3  # predicted noise eps
    inner_channels: int = 64  # channels of the first level
    channel_mults: tuple[int, ...] = (1, 2, 4, 8, 8)  # channels of level i = inner * mults[i]
    res_blocks: int = 2  # residual blocks per level (the decoder has one more, as SR3)
    attention_levels: tuple[int, ...] = (3,)  # levels (0 = full resolution) with self-attention
    dropout: float = 0.2  # dropout inside residual blocks
    norm_groups: int = 32  # GroupNorm groups; must divide every channel count
    embed_scale: float = 1.0  # gamma is multiplied by this before the sinusoids (SR3 reference: 1.0)
    # SR3's FeatureWiseAffine use_affine_level: the noise embedding scales and shifts, h -> (1 + g) h + b (its
    # Linear gives 2 * C outputs, g first), instead of adding, h -> h + e. False in SR3's HEAD and in dreamsr.
    affine_level: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mults", tuple(int(m) for m in self.channel_mults))
        object.__setattr__(self, "attention_levels", tuple(int(a) for a in self.attention_levels))
        if self.in_channels < 1 or self.out_channels < 1 or self.inner_channels < 1:
            raise ConfigError("UNetConfig: channel counts must be positive")
        if self.norm_groups < 1:
            raise ConfigError(f"UNetConfig: norm_groups must be at least 1, got {self.norm_groups}")
        if not self.channel_mults:
            raise ConfigError("UNetConfig: channel_mults must name at least one level")
        if self.res_blocks < 1:
            raise ConfigError("UNetConfig: res_blocks must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"UNetConfig: dropout must be in [0, 1), got {self.dropout}")
        for level in self.attention_levels:
            if not 0 <= level < len(self.channel_mults):
                raise ConfigError(f"UNetConfig: attention level {level} does not exist "
                                  f"(levels 0..{len(self.channel_mults) - 1})")
        for mult in self.channel_mults:
            ch = self.inner_channels * mult
            if ch % self.norm_groups:
                raise ConfigError(f"UNetConfig: norm_groups={self.norm_groups} does not divide {ch} channels")
        if self.embed_scale <= 0:
            raise ConfigError("UNetConfig: embed_scale must be positive")

    @property
    def levels(self) -> int:
        """Number of resolution levels."""
        return len(self.channel_mults)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (2^(levels-1))."""
        return 2 ** (self.levels - 1)

    def to_dict(self) -> dict:
        """JSON-friendly dict (tuples become lists)."""
        return to_plain_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error, not silently dropped."""
        return from_dict_strict(cls, d)


# Named presets. Parameter counts are pinned in tests/test_unet.py.
PRESETS: dict[str, UNetConfig] = {
    # ~10 k parameters: for tests only
    "tiny": UNetConfig(inner_channels=4, channel_mults=(1, 2), res_blocks=1, attention_levels=(),
                       dropout=0.0, norm_groups=2),
    # ~2.6 M parameters: trainable on a 2-core CPU
    "small": UNetConfig(inner_channels=32, channel_mults=(1, 2, 4), res_blocks=1, attention_levels=(2,),
                        dropout=0.0, norm_groups=16),
    # ~5.9 M parameters: the largest that still trains usefully on a CPU in hours
    "base": UNetConfig(inner_channels=48, channel_mults=(1, 2, 4), res_blocks=1, attention_levels=(2,),
                       dropout=0.0, norm_groups=16),
    # the paper's sizes (SR3: inner 64, mults 1,2,4,8,8, 2 res blocks, attention at 16 px of 128, dropout 0.2)
    "sr3-div2k": UNetConfig(inner_channels=64, channel_mults=(1, 2, 4, 8, 8), res_blocks=2,
                            attention_levels=(3,), dropout=0.2, norm_groups=32),
    "sr3-face": UNetConfig(inner_channels=64, channel_mults=(1, 2, 4, 8, 8), res_blocks=2,
                           attention_levels=(3,), dropout=0.2, norm_groups=32),
}


def preset(name: str) -> UNetConfig:
    """Return the named preset; raises ConfigError listing the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown UNet preset {name!r}; choose one of {', '.join(PRESETS)}") from None


class NoiseLevelEmbedding(nn.Module):
    """Sinusoidal embedding of gamma in [0, 1] (SR3's PositionalEncoding), then an MLP.

    ``gamma`` [B] -> [B, dim]. Frequencies are ``exp(-ln(1e4) * k / (dim/2))``, k = 0..dim/2-1, applied to
    ``embed_scale * gamma``.
    """

    def __init__(self, dim: int, embed_scale: float) -> None:
        super().__init__()
        self.dim = dim
        self.embed_scale = embed_scale
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 4), nn.SiLU(), nn.Linear(dim * 4, dim))

    def forward(self, gamma: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        k = torch.arange(half, device=gamma.device, dtype=torch.float32) / half
        freqs = torch.exp(-math.log(1e4) * k)
        arg = (self.embed_scale * gamma.float()).unsqueeze(1) * freqs.unsqueeze(0)
        emb = torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
        return self.mlp(emb)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> (Dropout) -> Conv, twice; noise embedding added after the first conv."""

    def __init__(self, ch_in: int, ch_out: int, emb_dim: int, groups: int, dropout: float,
                 affine: bool = False) -> None:
        super().__init__()
        self.affine = affine
        self.norm1 = nn.GroupNorm(groups, ch_in)
        self.conv1 = nn.Conv2d(ch_in, ch_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, ch_out * (2 if affine else 1))  # SR3 FeatureWiseAffine
        self.norm2 = nn.GroupNorm(groups, ch_out)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(ch_out, ch_out, 3, padding=1)
        self.skip = nn.Conv2d(ch_in, ch_out, 1) if ch_in != ch_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        e = self.emb(emb)[:, :, None, None].to(h.dtype)
        if self.affine:
            g, b = e.chunk(2, dim=1)  # SR3 FeatureWiseAffine: gamma then beta along channels
            h = (1 + g) * h + b
        else:
            h = h + e
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return h + self.skip(x)


class SelfAttention(nn.Module):
    """Single-head self-attention over all pixels (SR3's SelfAttention), residual."""

    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, ch * 3, 1, bias=False)
        self.out = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        # [B, HW, C] tokens; softmax(q k^T / sqrt(C)) v
        o = F.scaled_dot_product_attention(q.transpose(1, 2).unsqueeze(1), k.transpose(1, 2).unsqueeze(1),
                                           v.transpose(1, 2).unsqueeze(1))
        o = o.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.out(o)


class Block(nn.Module):
    """A residual block optionally followed by self-attention (SR3's ResnetBlocWithAttn)."""

    def __init__(self, ch_in: int, ch_out: int, emb_dim: int, groups: int, dropout: float, attn: bool,
                 affine: bool = False) -> None:
        super().__init__()
        self.res = ResBlock(ch_in, ch_out, emb_dim, groups, dropout, affine)
        self.attn = SelfAttention(ch_out, groups) if attn else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.res(x, emb)
        return self.attn(x) if self.attn is not None else x


class UNet(nn.Module):
    """SR3 conditional UNet predicting eps.

    ``forward(y_t, x0, gamma)``: ``y_t`` [B, out_channels, H, W] and ``x0`` [B, in_channels - out_channels,
    H, W] in [-1, 1]-ish scale, ``gamma`` [B] = sqrt(alpha_bar) in [0, 1]. Returns eps [B, out_channels, H, W].
    H and W must be multiples of ``config.size_multiple``.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        emb_dim = c.inner_channels
        self.noise_embed = NoiseLevelEmbedding(emb_dim, c.embed_scale)
        self.head = nn.Conv2d(c.in_channels, c.inner_channels, 3, padding=1)

        self.down = nn.ModuleList()
        skip_channels = [c.inner_channels]
        ch = c.inner_channels
        for level, mult in enumerate(c.channel_mults):
            ch_out = c.inner_channels * mult
            for _ in range(c.res_blocks):
                self.down.append(Block(ch, ch_out, emb_dim, c.norm_groups, c.dropout, level in c.attention_levels,
                                       c.affine_level))
                ch = ch_out
                skip_channels.append(ch)
            if level != c.levels - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))  # Downsample
                skip_channels.append(ch)

        self.mid = nn.ModuleList([
            Block(ch, ch, emb_dim, c.norm_groups, c.dropout, attn=True, affine=c.affine_level),
            Block(ch, ch, emb_dim, c.norm_groups, c.dropout, attn=False, affine=c.affine_level),
        ])

        self.up = nn.ModuleList()
        for level in reversed(range(c.levels)):
            ch_out = c.inner_channels * c.channel_mults[level]
            for _ in range(c.res_blocks + 1):
                self.up.append(Block(ch + skip_channels.pop(), ch_out, emb_dim, c.norm_groups, c.dropout,
                                     level in c.attention_levels, c.affine_level))
                ch = ch_out
            if level != 0:
                self.up.append(Upsample(ch))

        self.tail = nn.Sequential(nn.GroupNorm(c.norm_groups, ch), nn.SiLU(),
                                  nn.Conv2d(ch, c.out_channels, 3, padding=1))

    def forward(self, y_t: torch.Tensor, x0: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        m = self.config.size_multiple
        if y_t.shape[-1] % m or y_t.shape[-2] % m:
            raise ValueError(f"UNet input {tuple(y_t.shape[-2:])} is not a multiple of {m}")
        emb = self.noise_embed(gamma)
        h = self.head(torch.cat([y_t, x0], dim=1))
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, Block) else layer(h)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            if isinstance(layer, Block):
                h = layer(torch.cat([h, skips.pop()], dim=1), emb)
            else:
                h = layer(h)
        return self.tail(h)

    def num_parameters(self) -> int:
        """Total number of parameters."""
        return sum(p.numel() for p in self.parameters())


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv (SR3's Upsample)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
