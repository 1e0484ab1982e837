"""The IDM network (Gao et al., CVPR 2023, "Implicit Diffusion Models for Continuous Super-Resolution"; code
Ree1s/IDM @d224c0e), the DREAM paper's second backbone: one model for any output size.

``IDMNet(y_t, cond, gamma, scale=None) -> eps`` (ε prediction on the continuous noise level γ = sqrt(ᾱ), as SR3):

- ``cond`` [B, 3, h, w] is the LR image itself in [-1, 1]; the output size is ``y_t``'s (H, W), any H >= 1, W >= 1.
- **LR encoder** (EDSR-baseline, trained from scratch): head conv, ``encoder_blocks`` residual blocks (conv, ReLU,
  conv), a body conv with a global skip, all at LR size; then a **nearest** resize of the features to (H, W) and a
  tail conv to a 3-channel "coarse HR" image ``x_con``. (The release's MeanShift layers are never called: dropped.)
- **Condition pyramid** on ``x_con`` (not on the raw LR): a StyleGAN2-discriminator-style stack, each level
  ``blur [1,3,1]^2/25 -> equalised 3x3 conv, stride 2 -> scaled leaky ReLU``, so level k has size ceil(H / 2^k)
  like the trunk's. At every level k >= 1 a ``shift`` (equalised conv with bias, no activation) and two per-channel
  scales ``s1, s2 = EqualLinear(1 -> C_k)(p)`` of the scale scalar p modulate the trunk (below). The release also
  computes level 0's shift/scales and the last pyramid level, but never uses them: not built here.
- **Trunk**: the SR3 UNet (:mod:`dreamsr.families.sr3.unet` blocks, same tensors as SR3) on ``cat([x_con, y_t])`` (condition
  first, as the release), whose four x2 upsamplers are replaced by **implicit upsamplers**: scale-adaptive mixing
  ``feat = sLReLU(x * s1/|s| + shift * s2/|s|)`` with |s| = sqrt(s1^2 + s2^2 + 1e-8) per channel, then a LIIF
  query at the next level's exact size: the nearest feature cell (``grid_sample`` nearest, as the release), the
  query's offset from that cell's centre in cell units, and a 2-layer MLP Linear(C+2 -> hidden) -> Linear(hidden
  -> C) **without** an activation between them (as released). Local ensemble, feature unfolding and cell decoding
  are off in the release and absent here.

**The scale scalar.** The release draws p ~ U[0, 1) per batch, resizes the HR crop to width round(w + (W_max - w) p)
and feeds p itself; so p = (s - min_scale) / (max_scale - min_scale) with s = W / w the scale factor, and the face
model was trained on s in [1, 8]. ``forward`` takes ``scale`` (a float or a per-sample tensor [B]) or, when it is
None, derives s from the shapes: ``s = W / w`` if ``w >= h`` else ``H / h`` (the ratio along the LR image's longer
side, where the rounding of the output size matters least; for the release's square crops this is its rule).
A scale outside [min_scale, max_scale] is refused (:class:`~dreamsr.errors.InputError` naming the range).

**Sizes.** Output size for an LR image and a scale: :func:`output_size` (round half to even, Python's ``round``:
37x23 at x2.5 -> 92x58). The network accepts any (H, W): the trunk and pyramid downsample with ceil, and each
implicit upsampler queries exactly the next skip's size. ``config.size_multiple`` = 2^(levels-1) matters for
tiling: a tile is computed like the same region of the whole image only if every level's grid is in phase, i.e.
tile offsets and sizes on the output are multiples of ``size_multiple`` and the LR/HR ratio is exactly the scale.
:func:`tile_unit` / :func:`align_tiling` / :func:`aligned_lr_length` pick such LR tiles for a (possibly non-integer)
scale.

**The encoder's nearest resize** has two rules (:data:`RESIZE_RULES`, the config's ``resize_rule``, stored in every
checkpoint): ``"exact"``, the integer index ``floor(i * h / H)`` (shift-equivariant for aligned tiles; dreamsr's own
networks, and a file without the field), and ``"release"``, the index the release's ``F.interpolate(mode="nearest")``
computes, ``min(floor(float32(i) * float32(h / H)), h - 1)`` in float32 arithmetic, which differs from the exact
one at some exact-integer points of non-integer ratios (354 of the 14,421 LR 8-64 px, up-to-x8 size pairs; e.g.
16 -> 82, row 41: 7 instead of 8). Released weights use ``"release"``. That index is a function of the *global*
output row, not shift-equivariant, so a tile under the release rule is told where it lies (``origin``, its LR
offset in the whole image) and reads the slice of the whole image's index vector; it may need the LR row just
above (left of) its own, which the pipeline supplies as a one-pixel ``halo`` (:func:`nearest_indices`).

Pure PyTorch: the release's CUDA ``fused_leaky_relu`` is ``leaky_relu(x + b, 0.2) * sqrt(2)`` (computed in float32,
as the release casts), its ``upfirdn2d`` blur a depthwise 3x3 conv with zero padding 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dreamsr.config import from_dict_strict, to_plain_dict
from dreamsr.errors import ConfigError, InputError
from dreamsr.families.sr3.unet import Block, NoiseLevelEmbedding

__all__ = ["IDMConfig", "IDMNet", "PRESETS", "preset", "LREncoder", "ConditionPyramid", "ImplicitUpsampler",
           "EqualConv2d", "EqualLinear", "Blur", "scaled_leaky_relu", "nearest_indices", "query_indices",
           "output_size", "derived_scale", "scale_fraction", "tile_unit", "align_tiling", "aligned_lr_length",
           "RESIZE_RULES"]

# the LR encoder's nearest-resize index rules (module docstring): exact integers, and the release's float32 one
RESIZE_RULES: tuple[str, ...] = ("exact", "release")

SQRT2 = math.sqrt(2.0)
NEGATIVE_SLOPE = 0.2  # StyleGAN2's leaky ReLU slope


@dataclass(frozen=True)
class IDMConfig:
    """Shape of an IDM network and the scale range it was trained for. Stored in every checkpoint's metadata."""

    channels: int = 3  # image channels (y_t, the LR condition, eps); the trunk sees 2 x channels: [x_con, y_t]
    inner_channels: int = 64  # trunk channels of level 0; level i has inner * mults[i]
    channel_mults: tuple[int, ...] = (1, 2, 4, 8, 8)  # trunk (and condition pyramid) channel multipliers per level
    res_blocks: int = 2  # trunk residual blocks per level (the decoder has one more, as SR3)
    attention_levels: tuple[int, ...] = (3,)  # trunk levels (0 = full resolution) with self-attention
    dropout: float = 0.2  # dropout inside the trunk's residual blocks
    norm_groups: int = 32  # GroupNorm groups of the trunk; must divide every trunk channel count
    encoder_channels: int = 64  # EDSR-baseline feature width (n_feats)
    encoder_blocks: int = 16  # EDSR-baseline residual blocks (n_resblocks)
    mlp_hidden: int = 256  # hidden width of each implicit upsampler's 2-layer MLP
    min_scale: float = 1.0  # the trained scale range: p = (s - min_scale) / (max_scale - min_scale) in [0, 1]
    max_scale: float = 8.0
    resize_rule: str = "exact"  # encoder's nearest resize: "exact" (dreamsr's networks) or "release" (released weights)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mults", tuple(int(m) for m in self.channel_mults))
        object.__setattr__(self, "attention_levels", tuple(int(a) for a in self.attention_levels))
        object.__setattr__(self, "min_scale", float(self.min_scale))
        object.__setattr__(self, "max_scale", float(self.max_scale))
        for name in ("channels", "inner_channels", "encoder_channels", "mlp_hidden", "res_blocks", "norm_groups"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"IDMConfig: {name} must be at least 1, got {getattr(self, name)}")
        if self.encoder_blocks < 0:
            raise ConfigError(f"IDMConfig: encoder_blocks must be >= 0, got {self.encoder_blocks}")
        if len(self.channel_mults) < 2 or min(self.channel_mults) < 1:
            raise ConfigError("IDMConfig: channel_mults needs at least two levels of positive multipliers "
                              "(the implicit upsamplers sit between levels)")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"IDMConfig: dropout must be in [0, 1), got {self.dropout}")
        for level in self.attention_levels:
            if not 0 <= level < len(self.channel_mults):
                raise ConfigError(f"IDMConfig: attention level {level} does not exist "
                                  f"(levels 0..{len(self.channel_mults) - 1})")
        for mult in self.channel_mults:
            if (self.inner_channels * mult) % self.norm_groups:
                raise ConfigError(f"IDMConfig: norm_groups={self.norm_groups} does not divide "
                                  f"{self.inner_channels * mult} channels")
        if self.resize_rule not in RESIZE_RULES:
            raise ConfigError(f"IDMConfig: resize_rule must be one of {', '.join(RESIZE_RULES)}, "
                              f"got {self.resize_rule!r}")
        if not (math.isfinite(self.min_scale) and math.isfinite(self.max_scale)
                and 0.0 < self.min_scale < self.max_scale):
            raise ConfigError(f"IDMConfig: need 0 < min_scale < max_scale, got {self.min_scale}, {self.max_scale}")

    @property
    def levels(self) -> int:
        """Number of trunk resolution levels."""
        return len(self.channel_mults)

    @property
    def size_multiple(self) -> int:
        """2^(levels-1): output tiles must be multiples of this (and offset by multiples) to tile exactly.

        The network itself accepts any size (its downsampling rounds up)."""
        return 2 ** (self.levels - 1)

    def level_channels(self, level: int) -> int:
        """Trunk (and pyramid) channels of ``level``."""
        return self.inner_channels * self.channel_mults[level]

    def scale_p(self, scale: float) -> float:
        """The release's scale scalar p = (s - min_scale) / (max_scale - min_scale) for scale factor s."""
        return (scale - self.min_scale) / (self.max_scale - self.min_scale)

    def check_scale(self, scale: float) -> None:
        """InputError unless ``scale`` lies in the trained range [min_scale, max_scale] (1e-6 slack)."""
        if not (math.isfinite(scale) and scale > 0):
            raise InputError(f"the scale must be a positive number, got {scale}")
        if not self.min_scale - 1e-6 <= scale <= self.max_scale + 1e-6:
            raise InputError(f"scale x{scale:g} is outside the range this IDM model was trained for "
                             f"(x{self.min_scale:g} to x{self.max_scale:g})")

    def to_dict(self) -> dict:
        """JSON-friendly dict (tuples become lists)."""
        return to_plain_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "IDMConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error, not silently dropped."""
        return from_dict_strict(cls, d)


# Named presets. "face" has exactly the released 16->128 face model's tensors (tests/test_idm_network.py compares
# every used key with ../shared/reference/idm_face_state_dict.txt); parameter counts are pinned there too.
PRESETS: dict[str, IDMConfig] = {
    # for tests only (~10 k parameters)
    "tiny": IDMConfig(inner_channels=4, channel_mults=(1, 2), res_blocks=1, attention_levels=(), dropout=0.0,
                      norm_groups=2, encoder_channels=8, encoder_blocks=1, mlp_hidden=8, max_scale=4.0),
    # trains on a 2-core CPU (~3 M parameters): the "small" SR3 trunk, a 4-block EDSR, x1..x4
    "small": IDMConfig(inner_channels=32, channel_mults=(1, 2, 4), res_blocks=1, attention_levels=(2,),
                       dropout=0.0, norm_groups=16, encoder_channels=32, encoder_blocks=4, mlp_hidden=64,
                       max_scale=4.0),
    # the released 16->128 face model (config/ffhq_liifsr3_scaler_16_128.json): trained on x1..x8
    "face": IDMConfig(),
}


def preset(name: str) -> IDMConfig:
    """Return the named preset; raises ConfigError listing the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown IDM preset {name!r}; choose one of {', '.join(PRESETS)}") from None


# --------------------------------------------------------------------------------------------------
# sizes and tile alignment
# --------------------------------------------------------------------------------------------------

def output_size(lr_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(H, W) of the output for an LR image of (h, w) at ``scale``: round(scale * side), half to even (Python's
    ``round``), at least 1. Example: (37, 23) at 2.5 -> (92, 58)."""
    if not (math.isfinite(scale) and scale > 0):
        raise InputError(f"the scale must be a positive number, got {scale}")
    return tuple(max(1, round(scale * int(n))) for n in lr_size)  # type: ignore[return-value]


def derived_scale(hr_size: Sequence[int], lr_size: Sequence[int]) -> float:
    """The scale factor implied by the sizes: W / w if w >= h else H / h (the LR image's longer side)."""
    (big_h, big_w), (h, w) = (int(hr_size[0]), int(hr_size[1])), (int(lr_size[0]), int(lr_size[1]))
    return big_w / w if w >= h else big_h / h


def scale_fraction(scale: float) -> Fraction:
    """``scale`` as an exact ratio of small integers (denominator <= 1000), e.g. 2.5 -> 5/2, 10/3 -> 10/3.

    ConfigError if no such ratio is within 1e-9 (then no tile grid can be aligned exactly)."""
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"the scale must be a positive number, got {scale}")
    frac = Fraction(scale).limit_denominator(1000)
    if abs(float(frac) - scale) > 1e-9 * max(1.0, scale):
        raise ConfigError(f"scale {scale!r} is not a ratio of small integers (such as 5/2); "
                          "tiles cannot be aligned for it")
    return frac


def tile_unit(scale: float, size_multiple: int) -> tuple[int, int]:
    """Smallest (lr_unit, hr_unit) with hr_unit = lr_unit * scale an integer multiple of ``size_multiple``.

    With scale = a/b in lowest terms: lr_unit = b*m / gcd(b*m, a). Examples (m = 16, the face preset): x2.5 ->
    (32, 80), x3 -> (16, 48), x4 -> (4, 16), x8 -> (2, 16). LR tile sizes, tile offsets (so the overlap too) and
    the padded LR image should be multiples of lr_unit: then every tile's output grid is in phase with the whole
    image's at every trunk level, and the encoder's nearest resize maps each tile exactly like the whole image.
    """
    if size_multiple < 1:
        raise ConfigError(f"size_multiple must be >= 1, got {size_multiple}")
    frac = scale_fraction(scale)
    a, b = frac.numerator, frac.denominator
    lr_unit = b * size_multiple // math.gcd(b * size_multiple, a)
    return lr_unit, lr_unit * a // b


def align_tiling(tile: int, overlap: int, scale: float, size_multiple: int) -> tuple[int, int]:
    """An LR (tile, overlap) close to the requested one whose lengths are multiples of :func:`tile_unit`'s lr_unit.

    ``tile`` is rounded down to a multiple of lr_unit (at least one unit); ``overlap`` up to a multiple of lr_unit,
    or down when that would exceed half the tile (a tile needs room for two feathered edges). ``tile = 0`` (no
    tiling) is returned as is.
    """
    if tile < 0 or overlap < 0:
        raise ConfigError(f"tile and overlap must be >= 0, got {tile}, {overlap}")
    if tile == 0:
        return 0, overlap
    unit, _ = tile_unit(scale, size_multiple)
    tile_a = max(unit, tile // unit * unit)
    over_a = -(-overlap // unit) * unit
    if 2 * over_a > tile_a:
        over_a = tile_a // 2 // unit * unit
    return tile_a, over_a


def aligned_lr_length(length: int, scale: float, size_multiple: int) -> int:
    """``length`` rounded up to a multiple of lr_unit: pad the LR image (bottom/right) to this before tiling, so the
    border-aligned last tile is in phase too; its output is then exactly length * scale (crop it afterwards to
    :func:`output_size` of the unpadded image)."""
    unit, _ = tile_unit(scale, size_multiple)
    return -(-int(length) // unit) * unit


# --------------------------------------------------------------------------------------------------
# building blocks (pure-torch versions of the release's StyleGAN2 ops)
# --------------------------------------------------------------------------------------------------

def scaled_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The release's ``fused_leaky_relu``: leaky_relu(x + bias, 0.2) * sqrt(2), bias per channel (dim 1).

    Computed in float32 (the release casts its input to float32), returned in ``x``'s dtype."""
    dtype = x.dtype
    x = x.float()
    if bias is not None:
        x = x + bias.float().view(1, -1, *([1] * (x.dim() - 2)))
    return (F.leaky_relu(x, NEGATIVE_SLOPE) * SQRT2).to(dtype)


class BiasLeakyReLU(nn.Module):
    """FusedLeakyReLU: a learned per-channel bias (zero-initialised), then :func:`scaled_leaky_relu`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scaled_leaky_relu(x, self.bias)


class EqualConv2d(nn.Module):
    """StyleGAN2 equalised conv: weight ~ N(0, 1) stored raw, used as weight / sqrt(in * k * k)."""

    def __init__(self, ch_in: int, ch_out: int, kernel: int, *, stride: int = 1, padding: int = 0,
                 bias: bool = True) -> None:
        super().__init__()
        self.stride, self.padding = stride, padding
        self.scale = 1.0 / math.sqrt(ch_in * kernel * kernel)
        self.weight = nn.Parameter(torch.randn(ch_out, ch_in, kernel, kernel))
        if bias:
            self.bias = nn.Parameter(torch.zeros(ch_out))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class EqualLinear(nn.Module):
    """StyleGAN2 equalised linear (lr_mul 1): y = x W^T / sqrt(in) + b, bias initialised to ``bias_init``."""

    def __init__(self, ch_in: int, ch_out: int, *, bias_init: float = 0.0) -> None:
        super().__init__()
        self.scale = 1.0 / math.sqrt(ch_in)
        self.weight = nn.Parameter(torch.randn(ch_out, ch_in))
        self.bias = nn.Parameter(torch.full((ch_out,), float(bias_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(self.weight.dtype), self.weight * self.scale, self.bias)


class Blur(nn.Module):
    """The release's UpFirDnSmooth before a stride-2 conv: depthwise [1,3,1] x [1,3,1] / 25, zero padding 1.

    (upfirdn2d with up = down = 1 and pad (1, 1); the kernel is symmetric, so its flip does not matter.)
    Keeps the spatial size. The kernel is a non-persistent buffer: no tensor in the state dict.
    """

    def __init__(self) -> None:
        super().__init__()
        k = torch.tensor([1.0, 3.0, 1.0])
        self.register_buffer("kernel", torch.outer(k, k) / 25.0, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        k = self.kernel.to(x.dtype).expand(c, 1, 3, 3)
        return F.conv2d(x, k, padding=1, groups=c)


class StyleConv(nn.Module):
    """The release's StyleLayer with activation: [blur ->] equalised 3x3 conv (no bias; stride 2 when
    ``downsample``, padding 1) -> FusedLeakyReLU. Size: n -> n, or ceil(n / 2) when downsampling."""

    def __init__(self, ch_in: int, ch_out: int, *, downsample: bool) -> None:
        super().__init__()
        self.blur = Blur() if downsample else None
        self.conv = EqualConv2d(ch_in, ch_out, 3, stride=2 if downsample else 1, padding=1, bias=False)
        self.act = BiasLeakyReLU(ch_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.blur is not None:
            x = self.blur(x)
        return self.act(self.conv(x))


def nearest_indices(n_in: int, n_out: int, device: torch.device | str | None = None, *, rule: str = "exact",
                    origin: int = 0, halo: int = 0) -> torch.Tensor:
    """Source index [n_out] (int64) of each of ``n_out`` nearest-resized positions along an axis of ``n_in``.

    ``rule`` (:data:`RESIZE_RULES`): ``"exact"``, floor(i * n_in / n_out) in integers; ``"release"``, PyTorch's
    ``F.interpolate(mode="nearest")`` index min(floor(float32(i) * float32(n_in / n_out)), n_in - 1), the float32
    division and product of its CPU and CUDA kernels.

    For a tile: ``origin`` is the tile's LR offset in the whole image (its output offset is origin * n_out / n_in,
    which must be whole: an aligned tile), and the input carries ``halo`` extra LR pixels before the tile's own
    (n_in counts them). The result is the whole image's index vector at the tile's output positions, relative to
    the tile's input (halo included): for ``"exact"`` the same as an untiled axis; for ``"release"`` the global
    float32 rule (the ratio n_in / n_out of an aligned tile is the image's), which at the tile's first position
    may pick the LR pixel before the tile (index ``halo - 1``: a tile needs ``halo >= 1`` under this rule).
    """
    if rule not in RESIZE_RULES:
        raise ConfigError(f"unknown nearest-resize rule {rule!r}; one of {', '.join(RESIZE_RULES)}")
    n_own = n_in - halo
    if n_own < 1 or n_out < 1 or halo < 0 or origin < 0:
        raise InputError(f"cannot resize {n_in} px (halo {halo}) to {n_out} px at origin {origin}")
    if rule == "exact" or (origin == 0 and halo == 0 and n_out in (n_own, 2 * n_own)):
        idx = torch.div(torch.arange(n_out, device=device) * n_own, n_out, rounding_mode="floor")
        return idx + halo
    out0, rem = divmod(origin * n_out, n_own)
    if rem:
        raise InputError(f"a tile at LR offset {origin} of {n_own} -> {n_out} px is not aligned to the scale")
    ratio = torch.tensor(n_own, dtype=torch.float32) / torch.tensor(n_out, dtype=torch.float32)  # float32, as torch
    g = torch.arange(out0, out0 + n_out, dtype=torch.float64).to(torch.float32)  # exact below 2^24
    idx = torch.floor(g * ratio).long() - origin
    idx = idx.clamp(max=n_own - 1) + halo
    if int(idx.min()) < 0:
        raise InputError(f"the release's nearest resize reads the LR pixel before this tile (origin {origin}); "
                         f"the tile needs a halo of 1 px")
    return idx.to(device)


class EDSRBlock(nn.Module):
    """EDSR residual block: x + conv(relu(conv(x))) (res_scale 1, no batch norm)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class LREncoder(nn.Module):
    """EDSR-baseline LR encoder of the release (edsr.py, ``no_upsampling=False``).

    ``forward(lr, size)``: lr [B, C, h, w] in [-1, 1] -> x_con [B, C, H, W] with (H, W) = ``size``:
    head conv, blocks, body conv + global skip (at h x w), nearest resize of the features to (H, W), tail conv.
    """

    def __init__(self, channels: int, feats: int, blocks: int, resize_rule: str = "exact") -> None:
        super().__init__()
        if resize_rule not in RESIZE_RULES:
            raise ConfigError(f"unknown nearest-resize rule {resize_rule!r}; one of {', '.join(RESIZE_RULES)}")
        self.resize_rule = resize_rule
        self.head = nn.Conv2d(channels, feats, 3, padding=1)
        self.blocks = nn.ModuleList(EDSRBlock(feats) for _ in range(blocks))
        self.body_conv = nn.Conv2d(feats, feats, 3, padding=1)
        self.tail = nn.Conv2d(feats, channels, 3, padding=1)

    def forward(self, lr: torch.Tensor, size: tuple[int, int],
                origin: Sequence[tuple[int, int]] | None = None, halo: int = 0) -> torch.Tensor:
        """``origin``: per sample, the (y, x) LR offset of the tile in the whole image (None: untiled, all 0);
        ``lr`` carries ``halo`` extra pixels above and left of each tile (:func:`nearest_indices`)."""
        x = self.head(lr)
        res = x
        for block in self.blocks:
            res = block(res)
        res = self.body_conv(res) + x  # global skip
        h, w = res.shape[-2:]
        origins = [(0, 0)] * res.shape[0] if origin is None else [tuple(o) for o in origin]
        if len(origins) != res.shape[0]:
            raise InputError(f"{len(origins)} tile origins for a batch of {res.shape[0]}")
        out = []
        for key in dict.fromkeys(origins):  # one index vector per distinct origin
            rows = nearest_indices(h, int(size[0]), res.device, rule=self.resize_rule, origin=key[0], halo=halo)
            cols = nearest_indices(w, int(size[1]), res.device, rule=self.resize_rule, origin=key[1], halo=halo)
            which = [b for b, o in enumerate(origins) if o == key]
            part = res[which] if len(which) < len(origins) else res
            out.append((which, part.index_select(2, rows).index_select(3, cols)))  # nearest resize
        if len(out) == 1:
            res = out[0][1]
        else:
            res = res.new_empty(res.shape[0], res.shape[1], int(size[0]), int(size[1]))
            for which, part in out:
                res[which] = part
        return self.tail(res)


class ConditionPyramid(nn.Module):
    """The release's LR-conditioning network on x_con (unet.py: conv_body_first / conv_body_down /
    condition_shift / condition_scale1 / condition_scale2), keeping only what the trunk consumes.

    ``forward(x_con, p)``: x_con [B, C, H, W], p [B] -> list over levels k = 1..L-1 of
    (shift [B, C_k, ceil(H/2^k), ceil(W/2^k)], s1 [B, C_k], s2 [B, C_k]), C_k = inner * mults[k].
    Index k-1 of ``down``/``shift``/``scale1``/``scale2`` belongs to level k (the release's index k).
    """

    def __init__(self, config: IDMConfig) -> None:
        super().__init__()
        c = config
        self.first = StyleConv(c.channels, c.inner_channels, downsample=False)
        self.down = nn.ModuleList()
        self.shift = nn.ModuleList()
        self.scale1 = nn.ModuleList()
        self.scale2 = nn.ModuleList()
        ch = c.inner_channels
        for level in range(c.levels - 1):
            out = c.level_channels(level)
            self.down.append(StyleConv(ch, out, downsample=True))  # -> size of level + 1, channels of level
            nxt = c.level_channels(level + 1)
            self.shift.append(EqualConv2d(out, nxt, 3, padding=1, bias=True))
            self.scale1.append(EqualLinear(1, nxt, bias_init=1.0))
            self.scale2.append(EqualLinear(1, nxt, bias_init=1.0))
            ch = out

    def forward(self, x_con: torch.Tensor, p: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        feat = self.first(x_con)
        p = p.reshape(-1, 1).float()
        out = []
        for down, shift, scale1, scale2 in zip(self.down, self.shift, self.scale1, self.scale2):
            feat = down(feat)
            out.append((shift(feat), scale1(p), scale2(p)))
        return out


def _centres(n: int) -> torch.Tensor:
    """The release's make_coord along one axis: pixel centres of n cells in [-1, 1], float32 (same expression)."""
    v0, r = -1, 1.0 / n
    return v0 + r + (2 * r) * torch.arange(n).float()


def query_indices(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For an axis of ``n_out`` query positions over ``n_in`` feature cells (CPU tensors):

    - idx [n_out] (int64): the cell ``grid_sample(mode="nearest", align_corners=False)`` picks for each query
      centre (clamped to +-(1 - 1e-6) as the release);
    - rel [n_out] (float32): (query centre - that cell's centre) * n_in, the release's ``rel_coord``.
    """
    coord = _centres(n_out)
    ramp = torch.arange(n_in, dtype=torch.float32).view(1, 1, 1, n_in)
    x = coord.clamp(-1 + 1e-6, 1 - 1e-6)
    grid = torch.stack([x, torch.zeros_like(x)], dim=-1).view(1, 1, n_out, 2)
    idx = F.grid_sample(ramp, grid, mode="nearest", align_corners=False).view(n_out).round().long()
    rel = (coord - _centres(n_in)[idx]) * n_in
    return idx, rel


class ImplicitUpsampler(nn.Module):
    """The release's ``idm`` module: scale-adaptive mixing, then a LIIF query at an explicit (H, W).

    ``forward(x, shift, s1, s2, size)``: x and shift [B, C, h, w], s1 and s2 [B or 1, C], size = (H, W) ->
    [B, C, H, W]. feat = sLReLU(x * s1/|s| + shift * s2/|s| + b); out(y, x') = MLP([feat(cell), rel_y, rel_x]).

    The MLP has no activation, so MLP(f, r) = W1 (W0_f f + W0_r r + b0) + b1 is applied as
    (W1 W0_f) f on the h x w cells, gathered to H x W, plus (W1 W0_r) r + (W1 b0 + b1): the same function,
    computed at the low resolution (its parameters are still the two Linear layers of the release).
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.act = BiasLeakyReLU(channels)
        self.mlp = nn.Sequential(nn.Linear(channels + 2, hidden), nn.Linear(hidden, channels))

    def mix(self, x: torch.Tensor, shift: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
        """Scale-adaptive mixing (the release's Norm2Scale + FusedLeakyReLU), float32 [B, C, h, w]."""
        inv = torch.rsqrt(s1 * s1 + s2 * s2 + 1e-8)
        c = x.shape[1]
        return self.act(x * (s1 * inv).view(-1, c, 1, 1) + shift * (s2 * inv).view(-1, c, 1, 1))

    def query(self, feat: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """LIIF query without local ensemble at (H, W) = ``size``: [B, C, h, w] -> [B, C, H, W]."""
        c, (h, w) = feat.shape[1], feat.shape[-2:]
        big_h, big_w = int(size[0]), int(size[1])
        iy, ry = query_indices(h, big_h)
        ix, rx = query_indices(w, big_w)
        lin0, lin1 = self.mlp[0], self.mlp[1]
        a = lin1.weight @ lin0.weight[:, :c]  # [C, C]
        r = lin1.weight @ lin0.weight[:, c:]  # [C, 2]: (rel_y, rel_x) columns, the release's order
        b = lin1.weight @ lin0.bias + lin1.bias  # [C]
        low = torch.einsum("oc,bchw->bohw", a.to(feat.dtype), feat)
        out = low.index_select(2, iy.to(feat.device)).index_select(3, ix.to(feat.device))
        ry = ry.to(device=out.device, dtype=out.dtype).view(1, 1, big_h, 1)
        rx = rx.to(device=out.device, dtype=out.dtype).view(1, 1, 1, big_w)
        r = r.to(out.dtype)
        return out + r[:, 0].view(1, c, 1, 1) * ry + r[:, 1].view(1, c, 1, 1) * rx + b.to(out.dtype).view(1, c, 1, 1)

    def forward(self, x: torch.Tensor, shift: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor,
                size: Sequence[int]) -> torch.Tensor:
        return self.query(self.mix(x, shift, s1, s2), size)


# --------------------------------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------------------------------

class IDMNet(nn.Module):
    """IDM: ε_θ(y_t, LR, γ, s) for any output size (module docstring).

    ``forward(y_t, cond, gamma, scale=None)``:
    - y_t [B, C, H, W]: the noisy HR sample at the output size (any H, W >= 1);
    - cond [B, C, h, w]: the LR image in [-1, 1] (h <= H, w <= W);
    - gamma [B]: sqrt(ᾱ) in [0, 1];
    - scale: the scale factor s (float, or tensor [B]); None derives it from the shapes (:func:`derived_scale`).
    - origin, halo (tiles; the pipeline passes them when :attr:`halo` > 0): per sample the tile's (y, x) LR
      offset in the whole image, and the extra LR pixels ``cond`` carries above and left of the tile (cropped from
      everything but the encoder's nearest resize, which may read them under the release rule).
      Must lie in [min_scale, max_scale]; p = (s - min_scale) / (max_scale - min_scale) drives the modulation.
    Returns eps [B, C, H, W].
    """

    def __init__(self, config: IDMConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        emb_dim = c.inner_channels
        self.encoder = LREncoder(c.channels, c.encoder_channels, c.encoder_blocks, c.resize_rule)
        self.pyramid = ConditionPyramid(c)
        self.noise_embed = NoiseLevelEmbedding(emb_dim, 1.0)
        self.head = nn.Conv2d(2 * c.channels, c.inner_channels, 3, padding=1)

        self.down = nn.ModuleList()
        skip_channels = [c.inner_channels]
        ch = c.inner_channels
        for level in range(c.levels):
            ch_out = c.level_channels(level)
            for _ in range(c.res_blocks):
                self.down.append(Block(ch, ch_out, emb_dim, c.norm_groups, c.dropout, level in c.attention_levels))
                ch = ch_out
                skip_channels.append(ch)
            if level != c.levels - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))  # Downsample: n -> ceil(n / 2)
                skip_channels.append(ch)

        self.mid = nn.ModuleList([
            Block(ch, ch, emb_dim, c.norm_groups, c.dropout, attn=True),
            Block(ch, ch, emb_dim, c.norm_groups, c.dropout, attn=False),
        ])

        self.up = nn.ModuleList()
        for level in reversed(range(c.levels)):
            ch_out = c.level_channels(level)
            for _ in range(c.res_blocks + 1):
                self.up.append(Block(ch + skip_channels.pop(), ch_out, emb_dim, c.norm_groups, c.dropout,
                                     level in c.attention_levels))
                ch = ch_out
            if level != 0:
                self.up.append(ImplicitUpsampler(ch, c.mlp_hidden))  # replaces SR3's Upsample

        self.tail = nn.Sequential(nn.GroupNorm(c.norm_groups, ch), nn.SiLU(), nn.Conv2d(ch, c.channels, 3, padding=1))

    @property
    def halo(self) -> int:
        """LR pixels a tile needs above and left of its own (1 under the release's resize rule, else 0)."""
        return 1 if self.config.resize_rule == "release" else 0

    def scale_p(self, y_t: torch.Tensor, cond: torch.Tensor,
                scale: float | torch.Tensor | None) -> torch.Tensor:
        """Validated scale scalar p [B] (float32, on y_t's device) for this call."""
        c = self.config
        b = y_t.shape[0]
        if scale is None:
            scale = derived_scale(y_t.shape[-2:], cond.shape[-2:])
        if isinstance(scale, torch.Tensor):
            s = scale.detach().reshape(-1).to(device=y_t.device, dtype=torch.float32)
            if s.numel() == 1:
                s = s.expand(b)
            if s.numel() != b:
                raise InputError(f"scale has {s.numel()} values for a batch of {b}")
            lo, hi = float(s.min()), float(s.max())
            c.check_scale(lo)
            c.check_scale(hi)
            return (s - c.min_scale) / (c.max_scale - c.min_scale)
        scale = float(scale)
        c.check_scale(scale)
        return torch.full((b,), c.scale_p(scale), device=y_t.device, dtype=torch.float32)

    def forward(self, y_t: torch.Tensor, cond: torch.Tensor, gamma: torch.Tensor,
                scale: float | torch.Tensor | None = None, *,
                origin: Sequence[tuple[int, int]] | None = None, halo: int = 0) -> torch.Tensor:
        c = self.config
        if y_t.dim() != 4 or cond.dim() != 4 or y_t.shape[1] != c.channels or cond.shape[1] != c.channels:
            raise InputError(f"IDM expects y_t [B, {c.channels}, H, W] and the LR image [B, {c.channels}, h, w], "
                             f"got {tuple(y_t.shape)} and {tuple(cond.shape)}")
        if cond.shape[0] != y_t.shape[0]:
            raise InputError(f"batch sizes differ: y_t {y_t.shape[0]}, LR {cond.shape[0]}")
        big_h, big_w = y_t.shape[-2:]
        if halo < 0 or halo >= min(cond.shape[-2:]):
            raise InputError(f"halo {halo} does not fit an LR tile of {tuple(cond.shape[-2:])}")
        p = self.scale_p(y_t, cond[..., halo:, halo:], scale)

        x_con = self.encoder(cond, (big_h, big_w), origin, halo)  # coarse HR image at the output size
        modulation = self.pyramid(x_con, p)  # levels 1..L-1
        emb = self.noise_embed(gamma)
        h = self.head(torch.cat([x_con, y_t], dim=1))  # the release's order: condition first
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
                shift, s1, s2 = modulation.pop()  # this level's (the deepest not yet used)
                h = layer(h, shift, s1, s2, skips[-1].shape[-2:])  # query at the next skip's exact size
        return self.tail(h)

    def num_parameters(self) -> int:
        """Total number of parameters."""
        return sum(p.numel() for p in self.parameters())
