"""The VQ-f4 autoencoder of ResShift (``ldm/models/autoencoder.py: VQModelTorch``), key-compatible (issue 19, space c).

LDM's vq-f4 layout: an encoder (conv_in; per level ``num_res_blocks`` ResnetBlocks and, except at the last level,
a stride-2 conv downsample with (0, 1, 0, 1) zero padding; middle ResnetBlock–AttnBlock–ResnetBlock; GroupNorm,
swish, conv_out to ``z_channels``), ``quant_conv`` (1x1), a vector quantiser with an ``n_embed`` x ``embed_dim``
codebook, ``post_quant_conv`` (1x1) and the mirrored decoder (``num_res_blocks`` + 1 ResnetBlocks per level,
nearest x2 + conv upsampling). GroupNorm has 32 groups and eps 1e-6 throughout; the single-head attention blocks
exist only in the middles (``attn_resolutions`` empty). Names are the release's, so ``autoencoder_vq_f4.pth``
maps by identity (see :mod:`dreamsr.converters.resshift`).

What the release does with it, and so what this module does:

- ``encode(x)``: x [B, 3, H, W] in [-1, 1] -> the **pre-quantisation** ``quant_conv`` output [B, 3, H/4, W/4]
  (``VQModelTorch.encode``; the sampler uses it with scale_factor 1.0 for the LR image's latent y).
- ``decode(z)``: **nearest-codebook quantisation first** (``VQModelTorch.decode`` with the default
  ``force_not_quantize=False``: each latent vector is replaced by its nearest code in Euclidean distance, ties to the
  lowest index), then ``post_quant_conv`` and the decoder -> [B, 3, 4h, 4w] (not clipped; the sampler clamps to
  [-1, 1] afterwards). ``decode(z, quantize=False)`` skips the lookup.

The release runs the autoencoder in fp16; this module computes in whatever dtype it is given, but the codebook
distances are always taken in float32. The middle attention spans the whole map, so encoding or decoding tiles is
not exactly the same as the whole image (blend tiles with feathered weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dreamsr.config import from_dict_strict, to_plain_dict
from dreamsr.errors import ConfigError, InputError

__all__ = ["VQF4Config", "VQF4", "VQF4_PRESETS", "vqf4_preset"]


@dataclass(frozen=True)
class VQF4Config:
    """Shape of the VQ autoencoder (the release's ``ddconfig`` plus the codebook). The default is the release."""

    in_channels: int = 3  # image channels in
    out_channels: int = 3  # image channels out (``out_ch``)
    ch: int = 128  # channels of level 0
    ch_mult: tuple[int, ...] = (1, 2, 4)  # channels of level i = ch * ch_mult[i]; downscale 2^(levels-1)
    num_res_blocks: int = 2  # ResnetBlocks per encoder level (the decoder has one more)
    z_channels: int = 3  # encoder output / decoder input channels
    embed_dim: int = 3  # codebook vector size = latent channels (quant_conv output)
    n_embed: int = 8192  # codebook entries
    norm_groups: int = 32  # GroupNorm groups (eps 1e-6)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        for name in ("in_channels", "out_channels", "ch", "num_res_blocks", "z_channels", "embed_dim", "n_embed",
                     "norm_groups"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"VQF4Config: {name} must be a positive integer, got {value!r}")
        if not self.ch_mult or min(self.ch_mult) < 1:
            raise ConfigError("VQF4Config: ch_mult must list at least one positive multiplier")
        for mult in (1,) + self.ch_mult:
            if (self.ch * mult) % self.norm_groups:
                raise ConfigError(f"VQF4Config: norm_groups={self.norm_groups} does not divide {self.ch * mult} "
                                  f"channels")

    @property
    def factor(self) -> int:
        """Spatial downscale of the latent (4 for the release)."""
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def latent_channels(self) -> int:
        """Channels of the latent that ``encode`` returns and ``decode`` takes."""
        return self.embed_dim

    def to_dict(self) -> dict:
        return to_plain_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VQF4Config":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        return from_dict_strict(cls, d)


VQF4_PRESETS: dict[str, VQF4Config] = {
    # the released autoencoder_vq_f4.pth: 55,322,782 parameters
    "release": VQF4Config(),
    # ~48 k parameters, same x4 layout: for tests only
    "tiny": VQF4Config(ch=8, ch_mult=(1, 1, 2), num_res_blocks=1, n_embed=64, norm_groups=4),
}


def vqf4_preset(name: str) -> VQF4Config:
    """The named preset; ConfigError listing the names otherwise."""
    try:
        return VQF4_PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown VQ-f4 preset {name!r}; choose one of {', '.join(VQF4_PRESETS)}") from None


def _norm(ch: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, ch, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """norm1, swish, conv1, norm2, swish, conv2, plus a 1x1 ``nin_shortcut`` when the channels change."""

    def __init__(self, ch_in: int, ch_out: int, groups: int) -> None:
        super().__init__()
        self.norm1 = _norm(ch_in, groups)
        self.conv1 = nn.Conv2d(ch_in, ch_out, 3, padding=1)
        self.norm2 = _norm(ch_out, groups)
        self.conv2 = nn.Conv2d(ch_out, ch_out, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(ch_in, ch_out, 1) if ch_in != ch_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions: x + proj_out(softmax(q k^T / sqrt(C)) v), 1x1-conv q/k/v."""

    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.norm = _norm(ch, groups)
        self.q = nn.Conv2d(ch, ch, 1)
        self.k = nn.Conv2d(ch, ch, 1)
        self.v = nn.Conv2d(ch, ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q = self.q(y).reshape(b, c, h * w).transpose(1, 2)  # [B, HW, C]
        k = self.k(y).reshape(b, c, h * w).transpose(1, 2)
        v = self.v(y).reshape(b, c, h * w).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(C), as the release's c ** -0.5
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class _Down(nn.Module):
    """Zero-pad (left 0, right 1, top 0, bottom 1), then a 3x3 stride-2 conv (key ``conv``)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class _Up(nn.Module):
    """Nearest x2, then a 3x3 conv (key ``conv``)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(ch, ch, groups)
        self.attn_1 = AttnBlock(ch, groups)
        self.block_2 = ResnetBlock(ch, ch, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """Image [B, in, H, W] -> [B, z_channels, H/f, W/f] (keys conv_in, down.{i}.block.{j}, down.{i}.downsample,
    mid, norm_out, conv_out)."""

    def __init__(self, c: VQF4Config) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(c.in_channels, c.ch, 3, padding=1)
        self.down = nn.ModuleList()
        ch = c.ch
        for level, mult in enumerate(c.ch_mult):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            for _ in range(c.num_res_blocks):
                stage.block.append(ResnetBlock(ch, c.ch * mult, c.norm_groups))
                ch = c.ch * mult
            if level != len(c.ch_mult) - 1:
                stage.downsample = _Down(ch)
            self.down.append(stage)
        self.mid = _Mid(ch, c.norm_groups)
        self.norm_out = _norm(ch, c.norm_groups)
        self.conv_out = nn.Conv2d(ch, c.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """[B, z_channels, h, w] -> image [B, out, f h, f w] (keys conv_in, mid, up.{i}.block.{j}, up.{i}.upsample,
    norm_out, conv_out; ``up[i]`` is level i, run from the deepest level up)."""

    def __init__(self, c: VQF4Config) -> None:
        super().__init__()
        ch = c.ch * c.ch_mult[-1]
        self.conv_in = nn.Conv2d(c.z_channels, ch, 3, padding=1)
        self.mid = _Mid(ch, c.norm_groups)
        stages: list[nn.Module] = []
        for level in reversed(range(len(c.ch_mult))):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            for _ in range(c.num_res_blocks + 1):
                stage.block.append(ResnetBlock(ch, c.ch * c.ch_mult[level], c.norm_groups))
                ch = c.ch * c.ch_mult[level]
            if level != 0:
                stage.upsample = _Up(ch)
            stages.insert(0, stage)
        self.up = nn.ModuleList(stages)
        self.norm_out = _norm(ch, c.norm_groups)
        self.conv_out = nn.Conv2d(ch, c.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for stage in reversed(self.up):
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest-code lookup in the codebook ``embedding.weight`` [n_embed, embed_dim] (LDM's VectorQuantizer2 at
    inference: no remap, straight-through value = the code)."""

    def __init__(self, n_embed: int, embed_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """[B, D, h, w] -> [B, h, w] int64: argmin_k ||z_ij − e_k||² (float32; ties to the lowest k)."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d).float()
        codes = self.embedding.weight.float()
        dist = flat.square().sum(1, keepdim=True) + codes.square().sum(1)[None] - 2.0 * flat @ codes.t()
        return dist.argmin(dim=1).view(b, h, w)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """[B, D, h, w] -> the nearest codes, same shape and dtype."""
        idx = self.indices(z)
        return self.embedding.weight[idx].permute(0, 3, 1, 2).to(z.dtype)


class VQF4(nn.Module):
    """The VQ-f4 first stage: ``encode`` [B, 3, H, W] in [-1, 1] -> latent [B, 3, H/4, W/4]; ``decode`` back.

    Keys (the release's): encoder.*, decoder.*, quantize.embedding.weight, quant_conv.*, post_quant_conv.*.
    """

    name = "vqf4"
    bounded = False  # latent values are unbounded: never clip x̂0 in this space (the release: clip only in pixels)

    def __init__(self, config: VQF4Config | None = None) -> None:
        super().__init__()
        self.config = c = config or VQF4Config()
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)
        self.quantize = VectorQuantizer(c.n_embed, c.embed_dim)
        self.quant_conv = nn.Conv2d(c.z_channels, c.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(c.embed_dim, c.z_channels, 1)

    @property
    def factor(self) -> int:
        """Spatial downscale f (4)."""
        return self.config.factor

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """Latent (h, w) of an image of ``height`` x ``width``; both must be multiples of f."""
        f = self.factor
        if height % f or width % f:
            raise InputError(f"the VQ-f{f} autoencoder needs an image whose sides are multiples of {f}, "
                             f"got {height}x{width}; pad or crop it first")
        return height // f, width // f

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image [B, in_channels, H, W] in [-1, 1] -> pre-quantisation latent [B, embed_dim, H/f, W/f]."""
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise InputError(f"VQ-f4 encode expects [B, {self.config.in_channels}, H, W], got {tuple(x.shape)}")
        self.latent_size(*x.shape[-2:])
        return self.quant_conv(self.encoder(x))

    def decode(self, z: torch.Tensor, *, quantize: bool = True) -> torch.Tensor:
        """Latent [B, embed_dim, h, w] -> image [B, out_channels, f h, f w] (roughly [-1, 1], not clipped).
        ``quantize`` (the release's default): snap each latent vector to its nearest code first."""
        if z.dim() != 4 or z.shape[1] != self.config.embed_dim:
            raise InputError(f"VQ-f4 decode expects [B, {self.config.embed_dim}, h, w], got {tuple(z.shape)}")
        if quantize:
            z = self.quantize(z)
        return self.decoder(self.post_quant_conv(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """decode(encode(x)) (the release's ``forward`` with quantisation)."""
        return self.decode(self.encode(x))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
