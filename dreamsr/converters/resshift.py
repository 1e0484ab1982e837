"""Released ResShift weights (zsyOAOA/ResShift) -> dreamsr tensors: the Swin-UNet and the VQ-f4 autoencoder.

Files: ``resshift_{realsrx4,bicsrx4_opencv,bicsrx4_matlab}_s15.pth`` (the UNet) and ``autoencoder_vq_f4.pth``.
They are read only with ``torch.load(weights_only=True)`` (:func:`load_release_file`): nothing is unpickled beyond
tensors and plain containers. The wrapping the release's own loader accepts is undone explicitly
(:func:`unwrap_state`): a top-level ``"state_dict"`` entry (``sampler.py: load_model``), then a ``module.``
(DistributedDataParallel) and/or ``_orig_mod.`` (``torch.compile``) prefix carried by *every* key
(``utils/util_net.py: reload_model``).

Key mapping: :class:`~dreamsr.families.resshift.network.ResShiftUNet` and
:class:`~dreamsr.first_stages.vqf4.VQF4` use the release's module names, so every key maps to itself: the mapping
is the identity on the exact key set of the module built from the recognised config (:func:`unet_key_map`,
:func:`autoencoder_key_map`), and a key outside it, a key missing from the file or a shape that differs is a
:class:`~dreamsr.errors.CheckpointError` naming the key. The configs are recognised from the tensor shapes
(:func:`unet_config_from_state`, :func:`vqf4_config_from_state`); what shapes cannot tell is the release's value
(GroupNorm with 32 groups, dropout 0, and x_t having as many channels as the prediction, the rest of the first
convolution's input being the condition). The deterministic buffers of the Swin layers (``relative_position_index``,
``attn_mask``) must equal the values the recognised geometry gives under the mask rule the checkpoint will use
(else the file is another architecture). A released file's network uses the release's shifted-window mask rule
(``mask_rule="release"``, :mod:`dreamsr.families.resshift.network`): the masks its ``calculate_mask`` computes, which
are not the textbook Swin masks, stored in the file and recomputed by the same rule at every other size.
Float tensors come out as float32, the relative position indices as int64.

:func:`write_release` is ``dreamsr weights convert --from resshift``: the UNet file and the autoencoder file -> one
self-describing checkpoint (family resshift, process shift, first stage vqf4). The state dicts do not hold the
residual-shifting schedule; :func:`release_schedule` states the rule that picks it.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import torch

from dreamsr import __version__
from dreamsr.checkpoint import CheckpointInfo, save_checkpoint
from dreamsr.converters.sr3 import read_pth
from dreamsr.errors import CheckpointError, ConfigError
from dreamsr.families.released import check_output, require_layout
from dreamsr.families.resshift import ResShiftConfig, ResShiftNet
from dreamsr.families.resshift.network import (MASK_RULES, ResShiftUNet, ResShiftUNetConfig, SwinBlock,
                                               relative_position_index, shifted_window_mask)
from dreamsr.first_stages.vqf4 import VQF4, VQF4Config
from dreamsr.processes.shift import ShiftConfig

__all__ = ["ConvertedRelease", "load_release_file", "unwrap_state", "unet_config_from_state", "unet_key_map",
           "convert_unet_state", "vqf4_config_from_state", "autoencoder_key_map", "convert_autoencoder_state",
           "check_latent_channels", "convert_release", "release_schedule", "recommended_sampling", "write_release",
           "WrittenRelease", "RELEASE_SCALE", "SAMPLING_PROVENANCE"]

_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers, in the order they can nest


@dataclass(frozen=True)
class ConvertedRelease:
    """The outcome of :func:`convert_release`: configs and tensors keyed by the dreamsr modules' state-dict names."""

    unet_config: ResShiftUNetConfig
    unet_tensors: dict[str, torch.Tensor]
    autoencoder_config: VQF4Config | None = None
    autoencoder_tensors: dict[str, torch.Tensor] | None = None


# ----------------------------------------------------------------------------------------------------------------
# reading and unwrapping
# ----------------------------------------------------------------------------------------------------------------

def load_release_file(path: str | os.PathLike) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with errors a user can act on, its tensors'
    claimed sizes bounded and NaN/inf refused (:func:`dreamsr.converters.sr3.read_pth`)."""
    return read_pth(path)


def unwrap_state(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The flat ``{name: tensor}`` state dict inside a loaded release file.

    Accepted: a flat dict of tensors, or a dict whose ``"state_dict"`` entry is one (the release's sampler reads
    exactly these). Then a ``module.`` and/or ``_orig_mod.`` prefix is removed when every key carries it; a prefix
    on only some keys is an error naming a key without it.
    """
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source}: expected a state dict of tensors, got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: entry {bad[0]!r} is not a tensor (top level has: "
                              f"{', '.join(map(str, list(obj)[:8]))}); expected a ResShift state dict")
    state = dict(obj)
    for prefix in _PREFIXES:
        carrying = [k.startswith(prefix) for k in state]
        if all(carrying):
            state = {k[len(prefix):]: v for k, v in state.items()}
        elif any(carrying):
            odd = next(k for k, c in zip(state, carrying) if not c)
            raise CheckpointError(f"{source}: some keys carry the {prefix!r} prefix and {odd!r} does not")
    return state


def _get(state: Mapping[str, torch.Tensor], key: str, source: str, what: str) -> torch.Tensor:
    try:
        return state[key]
    except KeyError:
        raise CheckpointError(f"{source}: tensor {key!r} is missing (not a {what} state dict?)") from None


def _check_exact(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str) -> None:
    """Key sets equal and shapes equal; errors name the first offending key."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{source}: tensor {missing[0]!r} is missing{more}")
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(f"{source}: unexpected tensor {unexpected[0]!r}{more}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{source}: tensor {k!r} has shape {tuple(state[k].shape)}, "
                                  f"expected {tuple(v.shape)}")


def _float32(t: torch.Tensor, key: str, source: str) -> torch.Tensor:
    if not t.is_floating_point():
        raise CheckpointError(f"{source}: tensor {key!r} has dtype {t.dtype}, expected a float tensor")
    return t.detach().to(torch.float32).contiguous()


# ----------------------------------------------------------------------------------------------------------------
# the UNet
# ----------------------------------------------------------------------------------------------------------------

def _window_of(state: Mapping[str, torch.Tensor], prefix: str, source: str) -> int:
    """Window side of the Swin layer at ``prefix`` from its bias table's (2w − 1)² rows."""
    rows = _get(state, f"{prefix}.blocks.0.attn.relative_position_bias_table", source, "ResShift UNet").shape[0]
    side = math.isqrt(rows)
    if side * side != rows or side % 2 == 0:
        raise CheckpointError(f"{source}: {prefix}.blocks.0.attn.relative_position_bias_table has {rows} rows, "
                              f"not (2w-1)^2 for a window w")
    return (side + 1) // 2


def unet_config_from_state(state: Mapping[str, torch.Tensor], source: str = "state dict") -> ResShiftUNetConfig:
    """Recognise the :class:`ResShiftUNetConfig` of a released-layout UNet state dict (unwrapped) from its shapes.

    Read from shapes: model_channels (time_embed.0), the first conv's input channels, out_channels (out.2),
    channel_mult and num_res_blocks (the ResBlocks and ``op`` downsamples of input_blocks), use_scale_shift_norm
    (emb_layers width), swin_levels (where input_blocks carry a Swin layer), swin_embed_dim / depth / heads /
    mlp_ratio (middle_block.1), window sizes (bias tables) and image_size (an ``attn_mask``'s window count, else
    the layer whose window is its whole map). Assumed, as in the release: norm_groups 32, dropout 0, x_t having
    out_channels channels (the rest of the first conv's input is the condition) and the release's shifted-window
    mask rule (``mask_rule="release"``).
    """
    what = "ResShift UNet"
    te = _get(state, "time_embed.0.weight", source, what)
    if te.dim() != 2 or te.shape[0] != 4 * te.shape[1]:
        raise CheckpointError(f"{source}: time_embed.0.weight has shape {tuple(te.shape)}, expected (4C, C)")
    mc = int(te.shape[1])
    first = _get(state, "input_blocks.0.0.weight", source, what)
    out_channels = int(_get(state, "out.2.weight", source, what).shape[0])
    cond_channels = int(first.shape[1]) - out_channels
    if cond_channels < 0:
        raise CheckpointError(f"{source}: input_blocks.0.0.weight takes {first.shape[1]} channels, fewer than the "
                              f"{out_channels} it predicts")

    # walk the encoder: ResBlocks (in_layers) per level, an ``op`` downsample between levels
    mults: list[int] = []
    blocks_per_level: list[int] = []
    swin_levels: list[int] = []
    scale_shift: bool | None = None
    i, count, level_mult = 1, 0, None
    while True:
        if f"input_blocks.{i}.0.op.weight" in state or f"input_blocks.{i}.0.in_layers.2.weight" not in state:
            if count == 0:
                raise CheckpointError(f"{source}: input_blocks.{i} is neither a ResBlock nor a downsample where "
                                      f"a level should start")
            mults.append(level_mult)
            blocks_per_level.append(count)
            if f"input_blocks.{i}.0.op.weight" not in state:
                break
            i, count, level_mult = i + 1, 0, None
            continue
        w = state[f"input_blocks.{i}.0.in_layers.2.weight"]
        if w.shape[0] % mc:
            raise CheckpointError(f"{source}: input_blocks.{i}.0.in_layers.2.weight has {w.shape[0]} output "
                                  f"channels, not a multiple of {mc}")
        level_mult = int(w.shape[0]) // mc
        emb = _get(state, f"input_blocks.{i}.0.emb_layers.1.weight", source, what)
        scale_shift = bool(emb.shape[0] == 2 * w.shape[0]) if scale_shift is None else scale_shift
        if count == 0 and f"input_blocks.{i}.1.patch_embed.proj.weight" in state:
            swin_levels.append(len(mults))
        count += 1
        i += 1
    if len(set(blocks_per_level)) != 1:
        raise CheckpointError(f"{source}: the levels have {blocks_per_level} ResBlocks; only equal counts are "
                              f"supported")
    levels = len(mults)

    mid = "middle_block.1"
    embed = int(_get(state, f"{mid}.patch_embed.proj.weight", source, what).shape[0])
    depth = 0
    while f"{mid}.blocks.{depth}.norm1.weight" in state:
        depth += 1
    if depth == 0:
        raise CheckpointError(f"{source}: tensor '{mid}.blocks.0.norm1.weight' is missing")
    heads = int(_get(state, f"{mid}.blocks.0.attn.relative_position_bias_table", source, what).shape[1])
    hidden = int(_get(state, f"{mid}.blocks.0.mlp.fc1.weight", source, what).shape[0])
    if heads < 1 or embed % heads:
        raise CheckpointError(f"{source}: {heads} attention heads do not divide the Swin width {embed}")

    # windows and the training size: the encoder's Swin layers and the middle one, with their levels
    layers: dict[int, str] = {}
    for j in range(1, i):
        if f"input_blocks.{j}.1.patch_embed.proj.weight" in state:
            layers.setdefault(_level_of_input_block(j, blocks_per_level[0], levels), f"input_blocks.{j}.1")
    layers[levels - 1] = mid
    windows = {lv: _window_of(state, p, source) for lv, p in layers.items()}
    window_size, image_size = max(windows.values()), None
    for lv, p in layers.items():
        key = f"{p}.blocks.1.attn_mask"
        if key in state:
            nw = int(state[key].shape[0])
            side = math.isqrt(nw)
            if side * side != nw:
                raise CheckpointError(f"{source}: {key} has {nw} windows, not a square number")
            window_size, image_size = windows[lv], windows[lv] * side * 2 ** lv
            break
    if image_size is None:  # no shifted block: a layer's window is its whole map r (r <= window_size) or
        # window_size <= r, so window * 2^level <= image_size with equality for the former
        image_size = max(w * 2 ** lv for lv, w in windows.items())
    try:
        return ResShiftUNetConfig(
            image_size=image_size, in_channels=out_channels, cond_channels=cond_channels, out_channels=out_channels,
            model_channels=mc, channel_mult=tuple(mults), num_res_blocks=blocks_per_level[0],
            swin_levels=tuple(swin_levels), swin_depth=depth, swin_embed_dim=embed,
            swin_head_channels=embed // heads, window_size=window_size, mlp_ratio=hidden / embed, norm_groups=32,
            dropout=0.0, use_scale_shift_norm=bool(scale_shift), mask_rule="release")
    except Exception as err:  # ConfigError from validation: the shapes describe no valid network
        raise CheckpointError(f"{source}: the tensor shapes describe no valid ResShift UNet ({err})") from None


def _level_of_input_block(index: int, blocks: int, levels: int) -> int:
    """Level of ``input_blocks.{index}`` (index >= 1) when every level has ``blocks`` ResBlocks + 1 downsample."""
    return min((index - 1) // (blocks + 1), levels - 1)


def _meta_state(module_type: type, config: Any) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return module_type(config).state_dict()


def unet_key_map(config: ResShiftUNetConfig) -> dict[str, str]:
    """Release key -> dreamsr key for a UNet of ``config``: the identity on the module's exact key set."""
    return {k: k for k in _meta_state(ResShiftUNet, config)}


_INDEX = re.compile(r"\.attn\.relative_position_index$")
_MASK = re.compile(r"\.attn_mask$")


def convert_unet_state(state: Mapping[str, torch.Tensor], source: str = "state dict",
                       config: ResShiftUNetConfig | None = None) -> tuple[ResShiftUNetConfig, dict[str, torch.Tensor]]:
    """A released-layout UNet state dict (unwrapped) -> (config, tensors for ``ResShiftUNet(config)``).

    ``config`` defaults to the one recognised from the shapes (with the release's mask rule). Every key must be in
    :func:`unet_key_map`, every mapped key present with the module's shape; the Swin buffers must equal the values
    ``config`` computes (its window geometry and ``mask_rule``), so a converted network uses, at the training size,
    exactly the masks the file holds.
    """
    config = config or unet_config_from_state(state, source)
    expected = _meta_state(ResShiftUNet, config)
    _check_exact(state, expected, source)
    model = None
    out: dict[str, torch.Tensor] = {}
    for src_key, dst_key in unet_key_map(config).items():
        t = state[src_key]
        if _INDEX.search(src_key) or _MASK.search(src_key):
            if model is None:
                model = _buffer_reference(config)
            want = model[dst_key]
            got = t.detach().to(want.dtype)
            if not torch.equal(got, want):
                raise CheckpointError(f"{source}: buffer {src_key!r} differs from the value the window geometry of "
                                      f"the recognised config gives under the {config.mask_rule!r} mask rule"
                                      f"{_other_rule_hint(src_key, got, config)} (another architecture?)")
            out[dst_key] = want.clone()
        else:
            out[dst_key] = _float32(t, src_key, source)
    return config, out


def _other_rule_hint(key: str, got: torch.Tensor, config: ResShiftUNetConfig) -> str:
    """'; it is the <other> rule's mask' when a mask buffer equals another rule's, else ''."""
    if not _MASK.search(key):
        return ""
    for rule in MASK_RULES:
        if rule != config.mask_rule and torch.equal(got, _buffer_reference(replace(config, mask_rule=rule))[key]):
            return f"; it is the {rule!r} rule's mask"
    return ""


def _buffer_reference(config: ResShiftUNetConfig) -> dict[str, torch.Tensor]:
    """The computed Swin buffers of ``config`` (relative position indices, and masks by ``config.mask_rule``), by
    state-dict key."""
    ref: dict[str, torch.Tensor] = {}
    with torch.device("meta"):
        model = ResShiftUNet(config)
    for name, module in model.named_modules():
        if isinstance(module, SwinBlock):
            ref[f"{name}.attn.relative_position_index"] = relative_position_index(module.window)
            if module.shift > 0:
                ref[f"{name}.attn_mask"] = shifted_window_mask(module.resolution, module.resolution, module.window,
                                                               module.shift, rule=module.mask_rule)
    return ref


# ----------------------------------------------------------------------------------------------------------------
# the autoencoder
# ----------------------------------------------------------------------------------------------------------------

def vqf4_config_from_state(state: Mapping[str, torch.Tensor], source: str = "state dict") -> VQF4Config:
    """Recognise the :class:`VQF4Config` of a ``VQModelTorch`` state dict (unwrapped) from its shapes.

    Read: ch and in_channels (encoder.conv_in), ch_mult and num_res_blocks (encoder.down.*.block.*),
    z_channels (encoder.conv_out), embed_dim (quant_conv), n_embed (quantize.embedding), out_channels
    (decoder.conv_out). Assumed, as in the release: GroupNorm with 32 groups.
    """
    what = "VQ autoencoder"
    conv_in = _get(state, "encoder.conv_in.weight", source, what)
    ch = int(conv_in.shape[0])
    mults, level = [], 0
    while f"encoder.down.{level}.block.0.conv1.weight" in state:
        w = state[f"encoder.down.{level}.block.0.conv1.weight"]
        if w.shape[0] % ch:
            raise CheckpointError(f"{source}: encoder.down.{level}.block.0.conv1.weight has {w.shape[0]} channels, "
                                  f"not a multiple of {ch}")
        mults.append(int(w.shape[0]) // ch)
        level += 1
    if not mults:
        raise CheckpointError(f"{source}: tensor 'encoder.down.0.block.0.conv1.weight' is missing "
                              f"(not a VQ autoencoder state dict?)")
    blocks = 0
    while f"encoder.down.0.block.{blocks}.conv1.weight" in state:
        blocks += 1
    try:
        return VQF4Config(
            in_channels=int(conv_in.shape[1]),
            out_channels=int(_get(state, "decoder.conv_out.weight", source, what).shape[0]),
            ch=ch, ch_mult=tuple(mults), num_res_blocks=blocks,
            z_channels=int(_get(state, "encoder.conv_out.weight", source, what).shape[0]),
            embed_dim=int(_get(state, "quant_conv.weight", source, what).shape[0]),
            n_embed=int(_get(state, "quantize.embedding.weight", source, what).shape[0]),
            norm_groups=32)
    except Exception as err:  # ConfigError from validation
        raise CheckpointError(f"{source}: the tensor shapes describe no valid VQ autoencoder ({err})") from None


def autoencoder_key_map(config: VQF4Config) -> dict[str, str]:
    """Release key -> dreamsr key for a VQ-f4 of ``config``: the identity on the module's exact key set."""
    return {k: k for k in _meta_state(VQF4, config)}


def convert_autoencoder_state(state: Mapping[str, torch.Tensor], source: str = "state dict",
                              config: VQF4Config | None = None) -> tuple[VQF4Config, dict[str, torch.Tensor]]:
    """A ``VQModelTorch`` state dict (unwrapped) -> (config, float32 tensors for ``VQF4(config)``)."""
    config = config or vqf4_config_from_state(state, source)
    _check_exact(state, _meta_state(VQF4, config), source)
    return config, {dst: _float32(state[src], src, source) for src, dst in autoencoder_key_map(config).items()}


def check_latent_channels(unet: ResShiftUNetConfig, autoencoder: VQF4Config, source: str = "autoencoder") -> None:
    """The autoencoder's latent must be what the UNet takes as x_t and predicts."""
    if autoencoder.latent_channels != unet.in_channels or autoencoder.latent_channels != unet.out_channels:
        raise CheckpointError(f"{source}: the autoencoder's latent has {autoencoder.latent_channels} channels but "
                              f"the UNet takes {unet.in_channels} and predicts {unet.out_channels}")


def convert_release(unet_path: str | os.PathLike,
                    autoencoder_path: str | os.PathLike | None = None) -> ConvertedRelease:
    """Read a released UNet file (and optionally ``autoencoder_vq_f4.pth``) and convert both strictly.

    Raises CheckpointError (naming the file and the key) for anything that is not the release's layout, and when
    the autoencoder's latent channels differ from the UNet's input. Writes nothing.
    """
    src = str(unet_path)
    unet_config, unet_tensors = convert_unet_state(unwrap_state(load_release_file(unet_path), src), src)
    if autoencoder_path is None:
        return ConvertedRelease(unet_config, unet_tensors)
    ae_src = str(autoencoder_path)
    ae_config, ae_tensors = convert_autoencoder_state(unwrap_state(load_release_file(autoencoder_path), ae_src),
                                                      ae_src)
    check_latent_channels(unet_config, ae_config, ae_src)
    return ConvertedRelease(unet_config, unet_tensors, ae_config, ae_tensors)


# ----------------------------------------------------------------------------------------------------------------
# one self-describing file
# ----------------------------------------------------------------------------------------------------------------

# Every ResShift release is x4 (``sf: 4``; the VQ-f4 latent is on the LR grid).
RELEASE_SCALE = 4
# The tiles: the release's training size. The UNet was trained on 64 x 64 latents (256 px HR crops, 64 px LR),
# one whole tile of its window multiple (64 latent px for v1: the 8-px window at the 1/8 level), so no Swin layer
# pads; a quarter of it overlaps. inference_resshift.py itself runs an LR image of up to 512 px whole (padded to a
# multiple of 64) and chops larger ones at 512 px, stride 448; dreamsr pads an image smaller than a tile up to the
# tile, so 512 px tiles would run a 128 px image at 16 times its area.
SAMPLING_PROVENANCE = ("not measured in dreamsr: all T steps ancestrally as the release samples (--sampler ddpm "
                       "--steps T); tiles of the UNet's training size with a quarter overlap (the release: 64 LR px "
                       "= 64 latent px at x4, --tile 64 --overlap 16); the release's own inference runs LR images up "
                       "to 512 px whole and chops larger ones at 512 px, stride 448")

_STEPS_IN_NAME = re.compile(r"_s(\d+)(?=_|$)")
# the bicubic v1 config (configs/bicubic_swinunet_bicubic256.yaml) has kappa 1; inference_resshift.py overrides it
# to 2 for the bicsrx4_matlab task only, so the OpenCV-bicubic file runs with kappa 1
_KAPPA_1_NAMES = ("bicsrx4_opencv", "bicsrx4_cv2")


def release_schedule(file_name: str, steps: int | None = None) -> tuple[ShiftConfig, str]:
    """The residual-shifting kernel of a released UNet file, and the rule that chose it (one sentence).

    The rule: T is ``steps`` when given, else the ``_s<T>`` token of the file name (``resshift_realsrx4_s15.pth``,
    ``resshift_realsrx4_s4_v3.pth``); both given must agree. T = 15 is the v1 kernel
    (:meth:`~dreamsr.processes.shift.ShiftConfig.v1`: κ = 2, p = 0.3, min_noise 0.04, the sqrt(0.001) cap on
    sqrt(η_1)), with κ = 1 for the OpenCV-bicubic file (``resshift_bicsrx4_opencv_s15.pth``, the v1 bicubic
    config); T = 4 is the v3 kernel (:meth:`~dreamsr.processes.shift.ShiftConfig.v3`: κ = 2, min_noise 0.2, no
    cap), as the HEAD configs of ``resshift_realsrx4_s4_v3.pth`` and ``resshift_bicsrx4_s4.pth`` set it. Any other
    T is a ConfigError.
    """
    stem = Path(file_name).stem.lower()
    found = _STEPS_IN_NAME.findall(stem)
    named = int(found[-1]) if found else None
    if steps is not None and named is not None and steps != named:
        raise ConfigError(f"--steps {steps} contradicts the file name {Path(file_name).name} (_s{named}: T = {named})")
    T = steps if steps is not None else named
    if T is None:
        raise ConfigError(f"the file name {Path(file_name).name} does not say the number of steps (the released "
                          "names end in _s15 or _s4) and the state dict does not hold the schedule; pass --steps 15 "
                          "(v1 kernel) or --steps 4 (v3 kernel)")
    how = "--steps" if steps is not None else f"the file name's _s{named}"
    if T == 15:
        if any(tag in stem for tag in _KAPPA_1_NAMES):
            return (replace(ShiftConfig.v1(), kappa=1.0),
                    f"T = 15 from {how}: the v1 kernel with kappa 1 (the v1 bicubic config, OpenCV resize)")
        return ShiftConfig.v1(), f"T = 15 from {how}: the v1 kernel (kappa 2, p 0.3, min_noise 0.04)"
    if T == 4:
        return ShiftConfig.v3(), f"T = 4 from {how}: the v3 kernel (kappa 2, p 0.3, min_noise 0.2)"
    raise ConfigError(f"T = {T} steps (from {how}) is no released ResShift schedule; dreamsr knows T = 15 (v1) "
                      "and T = 4 (v3)")


def recommended_sampling(unet: ResShiftUNetConfig, factor: int, num_steps: int) -> dict[str, int | str]:
    """All ``num_steps`` ancestral steps, in LR tiles of the UNet's training size (``image_size`` latent px, i.e.
    ``image_size * factor / RELEASE_SCALE`` LR px for a first stage of ``factor``) with a quarter overlap.

    The training size is a multiple of the UNet's window multiple, so no tile pads a Swin layer (v1: 64 and 64).
    """
    latent = unet.image_size
    if latent % unet.window_multiple or (latent * factor) % RELEASE_SCALE:
        raise CheckpointError(f"the UNet's training size {latent} is not a whole number of windows "
                              f"({unet.window_multiple}) or of LR pixels at x{RELEASE_SCALE}")
    tile = latent * factor // RELEASE_SCALE
    return {"steps": int(num_steps), "sampler": "ddpm", "tile": tile, "overlap": tile // 4}


@dataclass(frozen=True)
class WrittenRelease:
    """What :func:`write_release` wrote: the checkpoint ``path``, the recognised configs, the kernel and the rule
    that chose it, the parameter counts of the UNet and the autoencoder, and the recommended sampling."""

    path: Path
    unet_config: ResShiftUNetConfig
    autoencoder_config: VQF4Config
    shift: ShiftConfig
    schedule_rule: str
    unet_parameters: int
    autoencoder_parameters: int
    sampling: dict[str, int | str]  # the recommended sampling written into the checkpoint


def write_release(unet_path: str | os.PathLike, dst: str | os.PathLike, *,
                  autoencoder_path: str | os.PathLike | None = None, steps: int | None = None,
                  task: str | None = None, dtype: str = "fp32", overwrite: bool = False) -> WrittenRelease:
    """A released ResShift UNet file and ``autoencoder_vq_f4.pth`` -> one self-describing dreamsr checkpoint at
    ``dst``: family resshift (``unet.*`` and ``first_stage.*`` tensors, first stage "vqf4"), process shift with the
    kernel of :func:`release_schedule`, scale x4, ``sampling`` = :func:`recommended_sampling` with
    ``training['sampling_provenance']`` (what is the release's and what is not). Nothing is written unless every check passes.

    Without ``autoencoder_path`` the UNet's 3-channel latent has no space to run in: ConfigError. An autoencoder
    whose latent channels differ from the UNet's: CheckpointError. A file of another family: CheckpointError
    naming the command that converts it.
    """
    unet_path, dst = Path(unet_path), Path(dst)
    if autoencoder_path is None:
        raise ConfigError("a released ResShift UNet runs in the latent space of the VQ-f4 autoencoder; pass "
                          "--autoencoder autoencoder_vq_f4.pth (from the same ResShift release)")
    ae_path = Path(autoencoder_path)
    if task is not None and task not in ("general", "face"):
        raise ConfigError(f"task must be one of general, face, got {task!r}")
    if dtype not in ("fp32", "fp16", "bf16"):
        raise ConfigError(f"storage dtype must be one of fp32, fp16, bf16, got {dtype!r}")
    check_output(dst, unet_path, ae_path, overwrite=overwrite)

    src, ae_src = str(unet_path), str(ae_path)
    obj = read_pth(unet_path)
    require_layout(obj, "resshift", src, "a released ResShift UNet (resshift_*_s15.pth / *_s4*.pth)")
    shift, rule = release_schedule(unet_path.name, steps)
    unet_config, unet_tensors = convert_unet_state(unwrap_state(obj, src), src)
    del obj
    ae_obj = read_pth(ae_path)
    require_layout(ae_obj, "autoencoder", ae_src, "a VQ autoencoder (autoencoder_vq_f4.pth)")
    ae_config, ae_tensors = convert_autoencoder_state(unwrap_state(ae_obj, ae_src), ae_src)
    del ae_obj
    check_latent_channels(unet_config, ae_config, ae_src)

    config = ResShiftConfig(unet=unet_config, first_stage="vqf4", factor=ae_config.factor, vqf4=ae_config)
    with torch.device("meta"):  # the converted tensors become the network's (no second copy in memory)
        net = ResShiftNet(config)
    state = {**{f"unet.{k}": v for k, v in unet_tensors.items()},
             **{f"first_stage.{k}": v for k, v in ae_tensors.items()}}
    net.load_state_dict(state, strict=True, assign=True)
    training = {
        "task": task or "general",
        "converted_from": unet_path.name,
        "autoencoder_from": ae_path.name,
        "source_layout": "resshift-release (UNetModelSwin state dict of zsyOAOA/ResShift + VQModelTorch autoencoder)",
        "schedule_rule": rule,
        "sampling_provenance": SAMPLING_PROVENANCE,
    }
    info = CheckpointInfo(network=config, diffusion=shift, scale=RELEASE_SCALE, training=training,
                          dreamsr_version=__version__, sampling=recommended_sampling(unet_config, ae_config.factor, shift.num_steps),
                          family="resshift", process="shift")
    path = save_checkpoint(dst, net, info, dtype=dtype, overwrite=overwrite)
    return WrittenRelease(path=path, unet_config=unet_config, autoencoder_config=ae_config, shift=shift,
                          schedule_rule=rule, unet_parameters=sum(p.numel() for p in net.unet.parameters()),
                          autoencoder_parameters=sum(p.numel() for p in net.first_stage.parameters()),
                          sampling=dict(info.sampling))
