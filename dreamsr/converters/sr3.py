"""The released SR3 and DREAM checkpoints, in both directions: their ``.pth`` layout <-> dreamsr's SR3 UNet.

The released files (Janspiry's SR3: 16->128 and 64->512 faces; the DREAM fork writes the same layout) are
``torch.save(GaussianDiffusion.state_dict())``: a flat dict of the 12 schedule buffers of
:data:`SCHEDULE_BUFFERS` (float32, [T]) and the UNet's tensors under ``denoise_fn.``. Facts used here are in
``shared/reference/sr3.md`` (module tree, key names, formulas) and were checked against the upstream code.

How a released UNet differs from dreamsr's, and what the conversion does about it:

- key names: every tensor is renamed explicitly (:func:`key_map`); SR3's ``downs.0`` is dreamsr's ``head`` so
  SR3's ``downs[i + 1]`` is dreamsr's ``down[i]``; ``ups``/``mid`` keep their indices;
- input order: SR3 concatenates the condition first, ``cat([x0, y_t])``; dreamsr puts ``y_t`` first. The
  first conv's input channels are permuted (exact: a permutation of the weights, no arithmetic);
- FeatureWiseAffine: ``use_affine_level`` is detected from the ``noise_func`` weight shape (2C rows: affine)
  and kept as :attr:`UNetConfig.affine_level`;
- what the tensors cannot say: GroupNorm groups, dropout and the native scale. They come from the released
  configuration the shapes match (:data:`RELEASES`), or from the caller for any other SR3-layout file.

The schedule buffers are checked against the linear schedule their ``betas`` give (recomputed exactly as
SR3's ``set_new_noise_schedule``: float64 numpy, then float32). Everything is read with
``torch.load(weights_only=True)``; nothing is unpickled.
"""

from __future__ import annotations

import os
import re
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from dreamsr import __version__
from dreamsr.checkpoint import (LIMITS, CheckpointInfo, check_config, check_finite, load_checkpoint,
                                load_state_strict, save_checkpoint, write_output)
from dreamsr.diffusion import DiffusionConfig
from dreamsr.errors import CheckpointError, ConfigError
from dreamsr.families.released import check_output
from dreamsr.families.sr3.unet import Block, UNet, UNetConfig

__all__ = ["SCHEDULE_BUFFERS", "DENOISE_PREFIX", "Release", "RELEASES", "key_map", "infer_network",
           "match_release", "schedule_buffers", "identify_schedule", "from_released", "to_released",
           "read_pth", "describe_object", "convert_released", "export_released", "released_model_options",
           "RECOMMENDED_SAMPLING", "SAMPLING_PROVENANCE", "Converted"]

DENOISE_PREFIX = "denoise_fn."
# GaussianDiffusion.set_new_noise_schedule's buffers, in registration order (each float32 [T])
SCHEDULE_BUFFERS: tuple[str, ...] = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2")

# Nothing has been measured on the released weights here (they cannot be downloaded on the build machines): the
# recommendation is the setting the release and the paper report their numbers with.
RECOMMENDED_SAMPLING: dict[str, Any] = {"steps": 2000, "sampler": "ddpm", "tile": 0}
TASKS = ("general", "face")  # as dreamsr.jobs.weights.TASKS
SAMPLING_PROVENANCE = ("the paper's setting, not measured in dreamsr: SR3's release and the DREAM paper (Sec. 4.3, "
                       "Fig. 8) sample the full 2000-step chain ancestrally (--sampler ddpm --steps 2000), the "
                       "whole face in one piece (--tile 0; the paper's 16->128 and 64->512 face protocol)")


@dataclass(frozen=True)
class Release:
    """A configuration Janspiry's SR3 released weights for (``config/sr_sr3_*.json``)."""

    name: str
    lr_size: int  # LR side (px)
    hr_size: int  # HR side (px) = SR3's `image_size` (places attention by resolution)
    network: UNetConfig  # as released (affine_level False; a file may differ from it in that only)
    task: str
    run: str  # the experiment / file the weights come from
    url: str  # where the files are published (README "Pretrained Model", access code qwer)
    reported: str  # the README's numbers

    @property
    def scale(self) -> int:
        return self.hr_size // self.lr_size


RELEASES: tuple[Release, ...] = (
    Release("sr3-face-16-128", 16, 128,
            UNetConfig(in_channels=6, out_channels=3, inner_channels=64, channel_mults=(1, 2, 4, 8, 8),
                       res_blocks=2, attention_levels=(3,), dropout=0.2, norm_groups=32),
            "face", "sr_ffhq_210806_204158, I640000_E37_gen.pth (config/sr_sr3_16_128.json)",
            "https://drive.google.com/drive/folders/12jh0K8XoM1FqpeByXvugHHAF3oAZ8KRu",
            "PSNR 23.26 / SSIM 0.675 on CelebA-HQ (SR3 README)"),
    Release("sr3-face-64-512", 64, 512,
            UNetConfig(in_channels=6, out_channels=3, inner_channels=64, channel_mults=(1, 2, 4, 8, 16),
                       res_blocks=1, attention_levels=(), dropout=0.0, norm_groups=16),
            "face", "distributed_high_sr_ffhq_210901_121212, I830000_E32_gen.pth (config/sr_sr3_64_512.json)",
            "https://drive.google.com/drive/folders/1mCiWhFqHyjt5zE4IdA41fjFwCYdqDzSF",
            "PSNR 19.87 / SSIM 0.445 on CelebA-HQ (SR3 README)"),
)

# (dreamsr sub-module of a Block, SR3 sub-module of a ResnetBlocWithAttn), in SR3's state-dict order
_BLOCK_PARTS: tuple[tuple[str, str], ...] = (
    ("res.emb", "res_block.noise_func.noise_func.0"),  # FeatureWiseAffine's Linear
    ("res.norm1", "res_block.block1.block.0"),  # Block: [0] GroupNorm, [1] Swish, [2] Dropout/Identity, [3] Conv
    ("res.conv1", "res_block.block1.block.3"),
    ("res.norm2", "res_block.block2.block.0"),
    ("res.conv2", "res_block.block2.block.3"),
    ("res.skip", "res_block.res_conv"),
    ("attn.norm", "attn.norm"),
    ("attn.qkv", "attn.qkv"),
    ("attn.out", "attn.out"),
)


def _module_pairs(model: UNet) -> list[tuple[str, str]]:
    """(dreamsr module path, SR3 module path under ``denoise_fn.``) for every module holding tensors, in SR3's
    state-dict order."""
    pairs: list[tuple[str, str]] = [("noise_embed.mlp.0", "noise_level_mlp.1"),  # [0] is PositionalEncoding
                                    ("noise_embed.mlp.2", "noise_level_mlp.3"),  # [2] is Swish
                                    ("head", "downs.0")]

    def block(ours: str, theirs: str) -> None:
        pairs.extend((f"{ours}.{a}", f"{theirs}.{b}") for a, b in _BLOCK_PARTS)

    for i, layer in enumerate(model.down):  # SR3's downs[0] is our head: down[i] is downs[i + 1]
        if isinstance(layer, Block):
            block(f"down.{i}", f"downs.{i + 1}")
        else:
            pairs.append((f"down.{i}", f"downs.{i + 1}.conv"))  # Downsample: a bare Conv2d here, .conv there
    for i in range(len(model.mid)):
        block(f"mid.{i}", f"mid.{i}")
    for i, layer in enumerate(model.up):
        if isinstance(layer, Block):
            block(f"up.{i}", f"ups.{i}")
        else:
            pairs.append((f"up.{i}.conv", f"ups.{i}.conv"))  # Upsample
    pairs += [("tail.0", "final_conv.block.0"), ("tail.2", "final_conv.block.3")]  # GN, Swish, Identity, Conv
    return pairs


def key_map(model: UNet) -> "OrderedDict[str, str]":
    """dreamsr state-dict key -> released key (with ``denoise_fn.``), for every tensor of ``model``, ordered as
    the released state dict orders them."""
    ours = model.state_dict()
    out: OrderedDict[str, str] = OrderedDict()
    for mine, theirs in _module_pairs(model):
        for leaf in ("weight", "bias"):
            if f"{mine}.{leaf}" in ours:
                out[f"{mine}.{leaf}"] = f"{DENOISE_PREFIX}{theirs}.{leaf}"
    unmapped = sorted(set(ours) - set(out))
    if unmapped:  # a UNet change this converter does not know about
        raise CheckpointError(f"internal: no released name for dreamsr tensor {unmapped[0]!r}")
    return out


def _head_from_released(w: torch.Tensor, out_channels: int) -> torch.Tensor:
    """SR3's first conv sees cat([x0, y_t]); ours sees cat([y_t, x0]): move the last out_channels inputs first."""
    c = w.shape[1] - out_channels
    return torch.cat([w[:, c:], w[:, :c]], dim=1)


def _head_to_released(w: torch.Tensor, out_channels: int) -> torch.Tensor:
    return torch.cat([w[:, out_channels:], w[:, :out_channels]], dim=1)


# ------------------------------------------------------------------------------------------------ structure
def infer_network(sd: Mapping[str, torch.Tensor], source: str) -> UNetConfig:
    """The UNet structure a released state dict's shapes give (``sd`` keyed as released, with ``denoise_fn.``).

    Read from the tensors: input/output channels, inner channels, channel multipliers (the Downsample layers
    separate the levels), residual blocks per level, which levels have attention, and the affine mode. Not in
    the tensors, so left at defaults for :func:`match_release` / the caller: ``norm_groups`` (set to 1 here),
    ``dropout`` (0).
    """
    def shape(key: str) -> tuple[int, ...]:
        full = DENOISE_PREFIX + key
        if full not in sd:
            raise CheckpointError(f"{source}: tensor {full!r} is missing")
        return tuple(sd[full].shape)

    w0 = shape("downs.0.weight")
    if len(w0) != 4:
        raise CheckpointError(f"{source}: tensor '{DENOISE_PREFIX}downs.0.weight' has shape {w0}; SR3's first "
                              "conv is [inner, in, 3, 3]")
    inner, in_ch = w0[0], w0[1]
    out_ch = shape("final_conv.block.3.weight")[0]
    levels: list[list[tuple[int, bool]]] = [[]]
    i = 1
    while True:
        p = f"downs.{i}."
        if DENOISE_PREFIX + p + "conv.weight" in sd:  # Downsample: the next level starts
            levels.append([])
        elif DENOISE_PREFIX + p + "res_block.block1.block.3.weight" in sd:
            levels[-1].append((shape(p + "res_block.block1.block.3.weight")[0],
                               DENOISE_PREFIX + p + "attn.qkv.weight" in sd))
        else:
            break
        i += 1
    counts = sorted({len(lv) for lv in levels})
    if counts[0] == 0 or len(counts) != 1:
        raise CheckpointError(f"{source}: 'denoise_fn.downs.*' do not form an SR3 encoder (levels with "
                              f"{', '.join(map(str, (len(lv) for lv in levels)))} residual blocks)")
    mults, attention = [], []
    for lvl, blocks in enumerate(levels):
        chans, attns = {c for c, _ in blocks}, {a for _, a in blocks}
        if len(chans) != 1 or len(attns) != 1 or next(iter(chans)) % inner:
            raise CheckpointError(f"{source}: the residual blocks of level {lvl} ('denoise_fn.downs.*') differ in "
                                  "width or attention, or their width is not a multiple of the first conv's")
        mults.append(next(iter(chans)) // inner)
        if attns.pop():
            attention.append(lvl)
    mid_ch = inner * mults[-1]
    rows = shape("mid.0.res_block.noise_func.noise_func.0.weight")[0]
    if rows not in (mid_ch, 2 * mid_ch):
        raise CheckpointError(f"{source}: tensor 'denoise_fn.mid.0.res_block.noise_func.noise_func.0.weight' has "
                              f"{rows} rows; SR3's FeatureWiseAffine has {mid_ch} (additive) or {2 * mid_ch} (affine)")
    try:
        return UNetConfig(in_channels=in_ch, out_channels=out_ch, inner_channels=inner, channel_mults=tuple(mults),
                          res_blocks=counts[0], attention_levels=tuple(attention), dropout=0.0, norm_groups=1,
                          embed_scale=1.0, affine_level=rows == 2 * mid_ch)
    except ConfigError as err:
        raise CheckpointError(f"{source}: the tensor shapes describe no valid SR3 UNet ({err})") from None


def _structure(cfg: UNetConfig) -> tuple:
    return (cfg.in_channels, cfg.out_channels, cfg.inner_channels, cfg.channel_mults, cfg.res_blocks,
            cfg.attention_levels)


def match_release(cfg: UNetConfig) -> Release | None:
    """The released configuration with ``cfg``'s structure (channels, levels, blocks, attention), if any."""
    return next((r for r in RELEASES if _structure(r.network) == _structure(cfg)), None)


def _describe_structure(cfg: UNetConfig) -> str:
    att = ",".join(map(str, cfg.attention_levels)) or "none"
    return (f"inner {cfg.inner_channels}, mults {','.join(map(str, cfg.channel_mults))}, {cfg.res_blocks} res "
            f"blocks, attention at levels {att}, {'affine' if cfg.affine_level else 'additive'} noise embedding")


# ------------------------------------------------------------------------------------------------- schedule
def schedule_buffers(config: DiffusionConfig) -> "OrderedDict[str, torch.Tensor]":
    """SR3's 12 schedule buffers for a linear schedule, computed as its ``set_new_noise_schedule`` does:
    numpy float64 from ``betas = linspace(beta_start, beta_end, T)``, then float32 [T] each."""
    betas = np.linspace(config.beta_start, config.beta_end, config.num_steps, dtype=np.float64)
    alphas = 1.0 - betas
    ac = np.cumprod(alphas, axis=0)  # alpha_bar_t
    acp = np.append(1.0, ac[:-1])  # alpha_bar_{t-1}
    post_var = betas * (1.0 - acp) / (1.0 - ac)  # beta-tilde
    values = {
        "betas": betas, "alphas_cumprod": ac, "alphas_cumprod_prev": acp,
        "sqrt_alphas_cumprod": np.sqrt(ac), "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "log_one_minus_alphas_cumprod": np.log(1.0 - ac), "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1), "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(acp) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - acp) * np.sqrt(alphas) / (1.0 - ac),
    }
    return OrderedDict((k, torch.tensor(values[k], dtype=torch.float32)) for k in SCHEDULE_BUFFERS)


def identify_schedule(sd: Mapping[str, torch.Tensor], source: str) -> DiffusionConfig:
    """The linear schedule ``sd['betas']`` is, with every other buffer checked against it.

    The endpoints are read from betas[0] and betas[-1] (float32, so rounded to 7 significant digits: 1e-06 and
    0.01 for both releases); betas must then equal float32(linspace(start, end, T)). Raises CheckpointError
    naming the buffer that is missing, misshaped or inconsistent, or saying the schedule is not linear.
    """
    for name in SCHEDULE_BUFFERS:
        if name not in sd:
            raise CheckpointError(f"{source}: schedule buffer {name!r} is missing")
    t = sd["betas"].numel()
    if t > LIMITS["steps"]:  # before any buffer is converted or a reference schedule computed
        raise CheckpointError(f"{source}: schedule buffer 'betas' claims {t:,} steps; dreamsr's limit for a "
                              f"checkpoint is {LIMITS['steps']:,} (steps)")
    for name in SCHEDULE_BUFFERS:
        if tuple(sd[name].shape) != (t,):
            raise CheckpointError(f"{source}: schedule buffer {name!r} has shape {tuple(sd[name].shape)}, "
                                  f"'betas' has ({t},)")
    betas = sd["betas"].float()
    if t < 2 or not bool(torch.isfinite(betas).all()):
        raise CheckpointError(f"{source}: schedule buffer 'betas' is not a usable schedule")
    start, end = float(f"{betas[0].item():.7g}"), float(f"{betas[-1].item():.7g}")
    linear = torch.tensor(np.linspace(start, end, t, dtype=np.float64), dtype=torch.float32)
    if not torch.allclose(betas, linear, rtol=1e-6, atol=0.0):
        quad = torch.tensor(np.linspace(start ** 0.5, end ** 0.5, t, dtype=np.float64) ** 2, dtype=torch.float32)
        kind = "SR3's 'quad' schedule" if torch.allclose(betas, quad, rtol=1e-6, atol=0.0) else "not linear"
        raise CheckpointError(f"{source}: 'betas' ({betas[0].item():.3g} .. {betas[-1].item():.3g}, T={t}) is "
                              f"{kind}; dreamsr's gaussian process runs linear beta schedules only")
    try:
        cfg = DiffusionConfig(num_steps=t, beta_start=start, beta_end=end, target="image")
    except ConfigError as err:
        raise CheckpointError(f"{source}: 'betas' is no valid schedule ({err})") from None
    expected = schedule_buffers(cfg)
    for name in SCHEDULE_BUFFERS[1:]:
        got = sd[name].float()
        if not torch.allclose(got, expected[name], rtol=1e-5, atol=1e-12):
            diff = (got - expected[name]).abs().max().item()
            raise CheckpointError(f"{source}: schedule buffer {name!r} does not match the linear schedule its "
                                  f"'betas' give (beta {start:g}..{end:g}, T={t}; max difference {diff:.3g})")
    return cfg


# ---------------------------------------------------------------------------------------------- conversion
@dataclass(frozen=True)
class Converted:
    """A released state dict turned into dreamsr's: the UNet (eval mode) and what to store about it."""

    model: UNet
    network: UNetConfig
    diffusion: DiffusionConfig
    scale: int
    task: str
    release: Release | None


def from_released(sd: Mapping[str, torch.Tensor], *, source: str, norm_groups: int | None = None,
                  scale: int | None = None, task: str | None = None, dropout: float | None = None) -> Converted:
    """Map a released ``GaussianDiffusion`` state dict onto dreamsr's UNet, checking every key.

    ``sd``: the 12 schedule buffers plus ``denoise_fn.*`` (a uniform ``module.`` prefix is accepted).
    The structure comes from the shapes (:func:`infer_network`); ``norm_groups``/``dropout``/``scale``/``task``
    from the matching :data:`RELEASES` entry unless given (they are required for a structure no release has).
    Unknown, missing or reshaped keys raise CheckpointError naming the key.
    """
    if sd and all(k.startswith("module.") for k in sd):  # DataParallel not unwrapped
        sd = {k[len("module."):]: v for k, v in sd.items()}
    for k, v in sd.items():
        if not (k.startswith(DENOISE_PREFIX) or k in SCHEDULE_BUFFERS):
            raise CheckpointError(f"{source}: unexpected tensor {k!r}: a released SR3/DREAM state dict holds "
                                  f"only the schedule buffers and '{DENOISE_PREFIX}*'")
    inferred = infer_network(sd, source)
    release = match_release(inferred)
    if release is None and (norm_groups is None or scale is None):
        raise CheckpointError(f"{source}: an SR3-layout state dict ({_describe_structure(inferred)}) that matches "
                              f"no released configuration ({', '.join(r.name for r in RELEASES)}); its GroupNorm "
                              "groups and scale are not in the file: give them (--norm-groups N --scale S)")
    base = release.network if release is not None else inferred
    try:
        network = replace(inferred, norm_groups=norm_groups if norm_groups is not None else base.norm_groups,
                          dropout=dropout if dropout is not None else base.dropout)
    except ConfigError as err:
        raise CheckpointError(f"{source}: {err}") from None
    check_config("sr3", network, source)  # the shapes' sizes, before the network is built
    diffusion = identify_schedule(sd, source)
    model = UNet(network)
    kmap = key_map(model)
    expected = model.state_dict()
    wanted = set(kmap.values())
    given = [k for k in sd if k.startswith(DENOISE_PREFIX)]
    for k in given:
        if k not in wanted:
            raise CheckpointError(f"{source}: unexpected tensor {k!r} for an SR3 UNet of "
                                  f"{_describe_structure(network)}")
    tensors: dict[str, torch.Tensor] = {}
    for mine, theirs in kmap.items():
        if theirs not in sd:
            raise CheckpointError(f"{source}: tensor {theirs!r} is missing")
        t = sd[theirs]
        if tuple(t.shape) != tuple(expected[mine].shape):
            raise CheckpointError(f"{source}: tensor {theirs!r} has shape {tuple(t.shape)}, an SR3 UNet of "
                                  f"{_describe_structure(network)} has {tuple(expected[mine].shape)} there")
        if not t.is_floating_point():
            raise CheckpointError(f"{source}: tensor {theirs!r} is {t.dtype}, not floating point")
        tensors[mine] = _head_from_released(t, network.out_channels) if mine == "head.weight" else t
    load_state_strict(model, tensors, source)
    return Converted(model=model.eval(), network=network, diffusion=diffusion,
                     scale=int(scale if scale is not None else release.scale),  # type: ignore[union-attr]
                     task=task if task is not None else (release.task if release is not None else "general"),
                     release=release)


def to_released(model: UNet, diffusion: DiffusionConfig) -> "OrderedDict[str, torch.Tensor]":
    """dreamsr SR3 UNet + its schedule -> a released-layout ``GaussianDiffusion`` state dict (float32, CPU,
    SR3's key order: the 12 buffers, then ``denoise_fn.*``). Exact inverse of :func:`from_released`'s mapping."""
    cfg: UNetConfig = model.config
    if diffusion.target != "image":
        raise CheckpointError(f"this checkpoint diffuses the {diffusion.target!r} target; the released SR3 code "
                              "diffuses the HR image itself (target 'image'), so it cannot run it")
    if cfg.embed_scale != 1.0:
        raise CheckpointError(f"this UNet scales gamma by {cfg.embed_scale} before the sinusoids; SR3's "
                              "PositionalEncoding does not (embed_scale must be 1)")
    out: OrderedDict[str, torch.Tensor] = schedule_buffers(diffusion)
    ours = model.state_dict()
    for mine, theirs in key_map(model).items():
        t = ours[mine].detach().to("cpu", torch.float32)
        if mine == "head.weight":
            t = _head_to_released(t, cfg.out_channels)
        out[theirs] = t.clone().contiguous()
    return out


def released_model_options(network: UNetConfig, diffusion: DiffusionConfig, image_size: int) -> dict[str, Any]:
    """The ``model`` section of SR3's JSON config (``config/sr_sr3_*.json``) that builds this network.

    SR3 places attention by resolution: level l of an ``image_size`` network has side image_size / 2^l.
    """
    sched = {"schedule": "linear", "n_timestep": diffusion.num_steps, "linear_start": diffusion.beta_start,
             "linear_end": diffusion.beta_end}
    return {
        "which_model_G": "sr3", "finetune_norm": False,
        "unet": {"in_channel": network.in_channels, "out_channel": network.out_channels,
                 "inner_channel": network.inner_channels, "norm_groups": network.norm_groups,
                 "channel_multiplier": list(network.channel_mults),
                 "attn_res": [image_size >> lvl for lvl in network.attention_levels],
                 "res_blocks": network.res_blocks, "dropout": network.dropout},
        "beta_schedule": {"train": dict(sched), "val": dict(sched)},
        "diffusion": {"image_size": image_size, "channels": network.out_channels, "conditional": True},
    }


# ------------------------------------------------------------------------------------------------- files
def _is_safetensors(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def _head(path: Path, n: int = 8) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror or err})") from None


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return []


def read_pth(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one clear line for each way a file fails:
    missing or unreadable, a safetensors file, a TorchScript archive, not a pickle at all (a text file), a pickle of
    Python objects (not weights-only), truncated/damaged. torch's warnings are not passed on.

    What loads is then checked before anything is built from it (:func:`check_loaded`): the values its tensors
    claim are bounded (a stride-0 tensor of a few bytes can claim billions) and no tensor holds NaN or inf.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"input file not found: {path}" if not path.exists() else f"{path}: not a file")
    if _is_safetensors(path):
        raise CheckpointError(f"{path}: is a safetensors file, not a PyTorch .pth (a dreamsr checkpoint needs no "
                              "conversion)")
    head = _head(path)
    if head[:2] == b"PK":
        names = _zip_names(path)
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            raise CheckpointError(f"{path}: a TorchScript archive (torch.jit.save): a program, not a state dict; "
                                  "dreamsr runs no code from a file: re-save the weights with "
                                  "torch.save(model.state_dict(), PATH)")
    elif head[:1] != b"\x80":  # every torch.save file is a zip archive or a pickle (protocol 2+: 0x80)
        size = path.stat().st_size
        raise CheckpointError(f"{path}: not a PyTorch file ({size} bytes starting with {head!r}: neither a zip "
                              "archive nor a pickle)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's TorchScript / legacy-format warnings: the error says it all
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, zip errors...
        text = str(err)
        if "Weights only load failed" in text:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
            what = f" (it needs {found.group(1)})" if found else ""
            raise CheckpointError(f"{path}: a pickle of Python objects{what}, not a weights-only file; loading "
                                  "it would run whatever code the file names, so dreamsr unpickles nothing: "
                                  "re-save the weights with torch.save(model.state_dict(), PATH)") from None
        lowered = text.lower()
        if isinstance(err, EOFError) or any(s in lowered for s in ("central directory", "unexpected eof",
                                                                   "ran out of input", "corrupt", "truncated")):
            raise CheckpointError(f"{path}: a truncated or damaged PyTorch file "
                                  f"({path.stat().st_size} bytes); download it again") from None
        first = text.strip().splitlines()[0][:200] if text.strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a PyTorch file ({first})") from None
    check_loaded(obj, str(path))
    return obj


def check_loaded(obj: Any, source: str) -> None:
    """CheckpointError unless every tensor in ``obj`` (nested dicts, lists and tuples) claims at most
    ``LIMITS["parameters"]`` values in all and holds no NaN or inf; the message names the tensor's key.

    Sizes are read from the tensors' shapes only: nothing of the size a tensor claims is allocated until it passes.
    """
    total = 0
    found: list[tuple[str, torch.Tensor]] = []

    def walk(o: Any, where: str, depth: int) -> None:
        nonlocal total
        if depth > 32:
            raise CheckpointError(f"{source}: nested deeper than 32 levels at {where!r}; not a state dict")
        if isinstance(o, torch.Tensor):
            total += o.numel()
            if total > LIMITS["parameters"]:
                raise CheckpointError(f"{source}: tensor {where!r} claims {o.numel():,} values; dreamsr's limit for "
                                      f"the tensors of one file is {LIMITS['parameters']:,} (parameters)")
            found.append((where, o))
        elif isinstance(o, Mapping):
            for k, v in o.items():
                walk(v, f"{where}.{k}" if where else str(k), depth + 1)
        elif isinstance(o, (list, tuple)):
            for n, v in enumerate(o):
                walk(v, f"{where}[{n}]", depth + 1)

    walk(obj, "", 0)
    check_finite({k: _stored(t) for k, t in found}, source)


def _stored(t: torch.Tensor) -> torch.Tensor:
    """The values a loaded tensor's storage holds, flat: what the file stores (its bytes), whatever the tensor's
    shape and strides claim (a stride-0 tensor of one value can claim billions)."""
    storage = t.untyped_storage()
    flat = torch.empty(0, dtype=t.dtype)
    return flat.set_(storage, 0, (storage.nbytes() // t.element_size(),))


def _unwrap(obj: Any) -> tuple[Any, str]:
    """A nested state dict inside a wrapper dict (``state_dict``, ``model``, ``params``, ``params_ema``)."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "params_ema", "params", "net"):
            if isinstance(obj.get(key), Mapping):
                return obj[key], f" (under '{key}')"
    return obj, ""


def describe_object(obj: Any) -> str:
    """One phrase saying what a loaded ``.pth`` object looks like (for "not a released SR3 state dict")."""
    if not isinstance(obj, Mapping):
        return f"a {type(obj).__name__}, not a state dict"
    keys = [k for k in obj if isinstance(k, str)]
    if "optimizer" in keys and ("iter" in keys or "epoch" in keys):
        return (f"an SR3/DREAM/IDM training state (`*_opt.pth`: epoch {obj.get('epoch')}, iter {obj.get('iter')}, "
                "optimizer state) with no weights; convert the matching `*_gen.pth`")
    inner, where = _unwrap(obj)
    keys = [k[len("module."):] if k.startswith("module.") else k for k in inner if isinstance(k, str)]
    has = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    if has(DENOISE_PREFIX) and (has("encoder.") or has("imnet.") or "ddim_c1" in keys):
        return (f"an IDM GaussianDiffusion state dict{where} (LR encoder 'encoder.*', implicit decoder 'imnet.*', "
                "'ddim_c1'), not SR3")
    if has("input_blocks.") and has("time_embed."):
        return f"a ResShift / guided-diffusion UNet{where} ('input_blocks.*', 'time_embed.*'), not SR3"
    if has("encoder.conv_in.") or "quantize.embedding.weight" in keys:
        return f"a VQ autoencoder{where} (like ResShift's autoencoder_vq_f4.pth), not an SR3 model"
    if has("noise_embed.") and has("head."):
        return (f"dreamsr's own UNet layout{where}: convert it without --from sr3 "
                "(`dreamsr weights convert IN.pth OUT.safetensors --preset NAME --scale N`)")
    if has("downs.0.") and has("final_conv."):
        return (f"a bare SR3 UNet{where} (no '{DENOISE_PREFIX}' prefix, no schedule buffers); the released files "
                "are whole GaussianDiffusion state dicts")
    if not keys:
        return "an empty dict"
    return f"a dict of {len(keys)} entries ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}), not SR3's"


def _released_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """``obj`` as a released flat state dict, or CheckpointError saying what it looks like instead."""
    is_flat = isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    if is_flat:
        keys = [k[len("module."):] if k.startswith("module.") else k for k in obj]
        is_sr3 = (any(k.startswith(DENOISE_PREFIX) for k in keys) and "betas" in keys
                  and not any(k.startswith(("encoder.", "imnet.")) or k == "ddim_c1" for k in keys))
        if is_sr3:
            return dict(obj)
    raise CheckpointError(f"{source}: not a released SR3/DREAM state dict; it looks like {describe_object(obj)}")


def convert_released(src: str | os.PathLike, dst: str | os.PathLike, *, norm_groups: int | None = None,
                     scale: int | None = None, task: str | None = None, dtype: str = "fp32",
                     overwrite: bool = False) -> Path:
    """Released SR3/DREAM ``.pth`` -> a self-describing dreamsr checkpoint at ``dst`` (family sr3, process
    gaussian). Nothing is written unless every check passes. Returns the path written.

    Metadata: the UNet config and schedule read from the file; ``scale`` and ``training['task']`` from the
    matching release (or the arguments); ``training['converted_from']`` the source file name;
    ``sampling`` = :data:`RECOMMENDED_SAMPLING` with ``training['sampling_provenance']`` saying where it is from.
    """
    src, dst = Path(src), Path(dst)
    check_output(dst, src, overwrite=overwrite)
    if scale is not None and scale < 1:
        raise ConfigError(f"scale must be a positive integer, got {scale}")
    if task is not None and task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if dtype not in ("fp32", "fp16", "bf16"):
        raise ConfigError(f"storage dtype must be one of fp32, fp16, bf16, got {dtype!r}")
    source = str(src)
    conv = from_released(_released_state_dict(read_pth(src), source), source=source, norm_groups=norm_groups,
                         scale=scale, task=task)
    training: dict[str, Any] = {
        "task": conv.task,
        "converted_from": src.name,
        "source_layout": "sr3-release (GaussianDiffusion state dict of Janspiry's SR3 / the DREAM fork)",
        "release": conv.release.name if conv.release is not None else None,
        "sampling_provenance": SAMPLING_PROVENANCE,
    }
    info = CheckpointInfo(network=conv.network, diffusion=conv.diffusion, scale=conv.scale, training=training,
                          dreamsr_version=__version__, sampling=dict(RECOMMENDED_SAMPLING), family="sr3",
                          process="gaussian")
    return save_checkpoint(dst, conv.model, info, dtype=dtype, overwrite=overwrite)


def export_released(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False
                    ) -> tuple[Path, dict[str, Any]]:
    """A dreamsr SR3 checkpoint -> a released-layout ``.pth`` (``torch.save`` of a flat dict: the 12 schedule
    buffers and ``denoise_fn.*``, float32) that SR3's and DREAM's code load with strict=True.

    Returns the path written and the ``model`` section of SR3's JSON config to build the network with
    (:func:`released_model_options`; ``image_size`` = the matching release's HR size, else 128). Nothing is
    written unless the checkpoint can be expressed (family sr3, process gaussian, image target, embed_scale 1).
    """
    src, dst = Path(src), Path(dst)
    check_output(dst, src, suffix=(".pth", ".pt"), overwrite=overwrite)
    model, info = load_checkpoint(src)
    if info.family != "sr3" or info.process != "gaussian":
        raise CheckpointError(f"{src}: a {info.family}/{info.process} checkpoint; only sr3/gaussian checkpoints "
                              "have a released SR3 layout")
    if info.network.levels > 8:
        raise CheckpointError(f"{src}: {info.network.levels} levels; SR3's attention placement needs image_size "
                              "/ 2^level to stay distinct")
    state = to_released(model, info.diffusion)  # type: ignore[arg-type]
    release = match_release(info.network)
    image_size = release.hr_size if release is not None else 128
    write_output(dst, lambda tmp: torch.save(state, tmp), overwrite=overwrite)
    return dst, released_model_options(info.network, info.diffusion, image_size)
