"""Released IDM weights (Ree1s/IDM, ``best_psnr_gen.pth`` of the 8x face model) -> the dreamsr layout.

The released file is ``torch.save(GaussianDiffusion.state_dict())``: a flat dict of 537 tensors with the prefixes
``encoder.`` (EDSR-baseline), ``imnet.`` (an MLP that is never called), ``denoise_fn.`` (the UNet with the condition
pyramid and the implicit upsamplers) and 13 schedule buffers (``betas`` ... ``ddim_c1``); listing in
``../shared/reference/idm_face_state_dict.txt``.

:func:`release_layout` names every released key for an :class:`IDMConfig`: each used tensor maps to one dreamsr key
(:class:`~dreamsr.families.idm.network.IDMNet`'s state dict, no tensor transformed), each unused one belongs to a
named dropped module, the 13 buffers give the schedule. :func:`convert_release` applies it to a state dict, and any
unexpected key, missing key or wrong shape is a :class:`~dreamsr.errors.CheckpointError` naming it.
:func:`read_release` reads a file with ``torch.load(weights_only=True)`` (nothing is unpickled).
:func:`write_release` is ``dreamsr weights convert --from idm``: a released file -> one self-describing checkpoint.
A converted network uses the release's nearest-resize rule in its LR encoder (``IDMConfig.resize_rule = "release"``:
the index ``F.interpolate(mode="nearest")`` computes in float32, at every size).

Dropped (present in the file, never influencing the output):
- ``imnet.*``: the diffusion-level LIIF MLP, passed to GaussianDiffusion but never called;
- ``denoise_fn.final_down1/final_down2/final_linear/final_styleconv``: constructed in the UNet, never called;
- ``denoise_fn.ups.{i}.style.weight`` and ``.style.modulated_conv.*``: the upsamplers' noise weight and
  ModulatedLayer, constructed but never called (only ``style.activate.bias`` is used);
- ``encoder.sub_mean/add_mean``: EDSR's MeanShift, its calls are commented out;
- ``denoise_fn.conv_body_down.{L-1}``, ``condition_shift.0``, ``condition_scale1.0``, ``condition_scale2.0``:
  computed in the release's forward, but their outputs are never consumed (no gradient ever reached them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

import torch

from dreamsr import __version__
from dreamsr.checkpoint import LIMITS, CheckpointInfo, save_checkpoint
from dreamsr.converters.sr3 import read_pth
from dreamsr.diffusion import DiffusionConfig
from dreamsr.errors import CheckpointError, ConfigError
from dreamsr.families import get_family
from dreamsr.families.idm.network import PRESETS, IDMConfig, IDMNet
from dreamsr.families.released import check_output, require_layout

__all__ = ["ReleaseLayout", "ReleaseConversion", "SCHEDULE_BUFFERS", "release_layout", "convert_release",
           "read_release", "write_release", "WrittenRelease", "RELEASE_SCALE", "RELEASE_NAME",
           "RECOMMENDED_SAMPLING", "SAMPLING_PROVENANCE"]

# GaussianDiffusion's registered buffers, all [T] (set_new_noise_schedule); betas define the rest.
SCHEDULE_BUFFERS: tuple[str, ...] = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "ddim_c1",
)

# the release's never-called diffusion-level MLP: mlp.MLP(66 -> 256 x 4 -> 3), Linear layers at 0, 2, 4, 6, 8
_IMNET_LAYERS = (0, 2, 4, 6, 8)

# The released face model (config/ffhq_liifsr3_scaler_16_128.json) maps 16x16 faces to 128x128: x8 is its output
# scale (the top of the x1..x8 range it was trained on, idm.md "Training pipeline"), the scale a converted file
# states as native.
RELEASE_NAME = "ffhq_liifsr3_scaler_16_128"
RELEASE_SCALE = 8
# Nothing was measured on the released weights here (they cannot be downloaded on the build machines): the
# recommendation is the setting the release validates with.
RECOMMENDED_SAMPLING: dict[str, int | str] = {"steps": 2000, "sampler": "ddpm"}
SAMPLING_PROVENANCE = ("the release's setting, not measured in dreamsr: IDM's run.sh validates with the full "
                       "2000-step ancestral chain (--sampler ddpm --steps 2000); its -use_ddim option is DDIM with "
                       "200 steps, eta 0 (--sampler ddim --steps 200)")


@dataclass(frozen=True)
class ReleaseLayout:
    """Every key of a released IDM state dict for one config.

    ``mapping``: released key -> dreamsr key (used tensors, copied unchanged);
    ``dropped``: released module name -> (why it is dropped, its keys);
    ``buffers``: the schedule buffers.
    """

    mapping: dict[str, str]
    dropped: dict[str, tuple[str, tuple[str, ...]]]
    buffers: tuple[str, ...] = SCHEDULE_BUFFERS

    def dropped_keys(self) -> tuple[str, ...]:
        return tuple(k for _, keys in self.dropped.values() for k in keys)

    def all_keys(self) -> set[str]:
        return set(self.mapping) | set(self.dropped_keys()) | set(self.buffers)


@dataclass(frozen=True)
class ReleaseConversion:
    """A converted released state dict.

    ``state_dict``: dreamsr keys -> tensors, loads strictly into ``IDMNet(config)``;
    ``dropped``: released module name -> why it was dropped (``dropped_keys``: every released key not used);
    ``schedule``: the released betas as :class:`~dreamsr.diffusion.DiffusionConfig` fields (num_steps,
    beta_start, beta_end) of a linear schedule.
    """

    state_dict: dict[str, torch.Tensor]
    config: IDMConfig
    dropped: dict[str, str]
    dropped_keys: tuple[str, ...]
    schedule: dict[str, float | int] = field(default_factory=dict)


def _conv(src: str, dst: str, bias: bool = True) -> dict[str, str]:
    return {f"{src}.weight": f"{dst}.weight", **({f"{src}.bias": f"{dst}.bias"} if bias else {})}


def _res_block(src: str, dst: str, ch_in: int, ch_out: int, attn: bool) -> dict[str, str]:
    """SR3's ResnetBlocWithAttn -> dreamsr.families.sr3.unet.Block."""
    m = {
        **_conv(f"{src}.res_block.noise_func.noise_func.0", f"{dst}.res.emb"),
        **_conv(f"{src}.res_block.block1.block.0", f"{dst}.res.norm1"),
        **_conv(f"{src}.res_block.block1.block.3", f"{dst}.res.conv1"),
        **_conv(f"{src}.res_block.block2.block.0", f"{dst}.res.norm2"),
        **_conv(f"{src}.res_block.block2.block.3", f"{dst}.res.conv2"),
    }
    if ch_in != ch_out:
        m.update(_conv(f"{src}.res_block.res_conv", f"{dst}.res.skip"))
    if attn:
        m.update(_conv(f"{src}.attn.norm", f"{dst}.attn.norm"))
        m.update(_conv(f"{src}.attn.qkv", f"{dst}.attn.qkv", bias=False))
        m.update(_conv(f"{src}.attn.out", f"{dst}.attn.out"))
    return m


def release_layout(config: IDMConfig | None = None) -> ReleaseLayout:
    """The released key layout of an IDM network with ``config`` (default: the "face" preset), built from the
    config the way the release builds its modules (model/sr3_modules/unet.py, edsr.py; model/networks.py)."""
    c = config or PRESETS["face"]
    d = "denoise_fn"
    m: dict[str, str] = {}
    dropped: dict[str, tuple[str, tuple[str, ...]]] = {}

    # --- LR encoder (EDSR-baseline)
    m.update(_conv("encoder.head.0", "encoder.head"))
    for i in range(c.encoder_blocks):
        m.update(_conv(f"encoder.body.{i}.body.0", f"encoder.blocks.{i}.conv1"))
        m.update(_conv(f"encoder.body.{i}.body.2", f"encoder.blocks.{i}.conv2"))
    m.update(_conv(f"encoder.body.{c.encoder_blocks}", "encoder.body_conv"))
    m.update(_conv("encoder.tail.0", "encoder.tail"))
    for name in ("encoder.sub_mean", "encoder.add_mean"):
        dropped[name] = ("EDSR MeanShift, its call is commented out", (f"{name}.weight", f"{name}.bias"))

    # --- never-called modules
    dropped["imnet"] = ("diffusion-level MLP passed to GaussianDiffusion, never called",
                        tuple(f"imnet.layers.{i}.{p}" for i in _IMNET_LAYERS for p in ("weight", "bias")))
    for name, keys in (("final_down1", ("0.weight", "1.bias")), ("final_down2", ("1.weight", "2.bias")),
                       ("final_linear", ("weight", "bias")), ("final_styleconv", ("0.weight", "1.bias"))):
        dropped[f"{d}.{name}"] = ("constructed, never called", tuple(f"{d}.{name}.{k}" for k in keys))

    # --- condition pyramid: level k >= 1 of the release is index k-1 here
    m.update(_conv(f"{d}.conv_body_first.0", "pyramid.first.conv", bias=False))
    m[f"{d}.conv_body_first.1.bias"] = "pyramid.first.act.bias"
    last = c.levels - 1
    for k in range(c.levels):
        if k < last:
            m.update(_conv(f"{d}.conv_body_down.{k}.1", f"pyramid.down.{k}.conv", bias=False))
            m[f"{d}.conv_body_down.{k}.2.bias"] = f"pyramid.down.{k}.act.bias"
        else:
            dropped[f"{d}.conv_body_down.{k}"] = ("computed, output never used",
                                                 (f"{d}.conv_body_down.{k}.1.weight", f"{d}.conv_body_down.{k}.2.bias"))
        if k >= 1:
            m.update(_conv(f"{d}.condition_shift.{k}.0", f"pyramid.shift.{k - 1}"))
            m.update(_conv(f"{d}.condition_scale1.{k}", f"pyramid.scale1.{k - 1}"))
            m.update(_conv(f"{d}.condition_scale2.{k}", f"pyramid.scale2.{k - 1}"))
    for name in (f"{d}.condition_shift.0", f"{d}.condition_scale1.0", f"{d}.condition_scale2.0"):
        inner = ".0" if "shift" in name else ""
        dropped[name] = ("level 0 modulation, computed, never used",
                         (f"{name}{inner}.weight", f"{name}{inner}.bias"))

    # --- trunk (SR3 UNet), same walk as IDMNet.__init__ / the release's UNet.__init__
    m.update(_conv(f"{d}.noise_level_mlp.1", "noise_embed.mlp.0"))
    m.update(_conv(f"{d}.noise_level_mlp.3", "noise_embed.mlp.2"))
    m.update(_conv(f"{d}.downs.0", "head"))
    skip_channels = [c.inner_channels]
    ch = c.inner_channels
    i = 1
    for level in range(c.levels):
        ch_out = c.level_channels(level)
        for _ in range(c.res_blocks):
            m.update(_res_block(f"{d}.downs.{i}", f"down.{i - 1}", ch, ch_out, level in c.attention_levels))
            ch = ch_out
            skip_channels.append(ch)
            i += 1
        if level != c.levels - 1:
            m.update(_conv(f"{d}.downs.{i}.conv", f"down.{i - 1}"))
            skip_channels.append(ch)
            i += 1
    m.update(_res_block(f"{d}.mid.0", "mid.0", ch, ch, True))
    m.update(_res_block(f"{d}.mid.1", "mid.1", ch, ch, False))
    i = 0
    for level in reversed(range(c.levels)):
        ch_out = c.level_channels(level)
        for _ in range(c.res_blocks + 1):
            ch_in = ch + skip_channels.pop()
            m.update(_res_block(f"{d}.ups.{i}", f"up.{i}", ch_in, ch_out, level in c.attention_levels))
            ch = ch_out
            i += 1
        if level != 0:
            src = f"{d}.ups.{i}"
            m[f"{src}.style.activate.bias"] = f"up.{i}.act.bias"
            m.update(_conv(f"{src}.imnet.0", f"up.{i}.mlp.0"))
            m.update(_conv(f"{src}.imnet.1", f"up.{i}.mlp.1"))
            dropped[f"{src}.style.modulated_conv"] = (
                "ModulatedLayer constructed, never called",
                (f"{src}.style.modulated_conv.weight", f"{src}.style.modulated_conv.modulation.weight",
                 f"{src}.style.modulated_conv.modulation.bias"))
            dropped[f"{src}.style.weight"] = ("noise-injection weight, its use is commented out",
                                              (f"{src}.style.weight",))
            i += 1
    m.update(_conv(f"{d}.final_conv.block.0", "tail.0"))
    m.update(_conv(f"{d}.final_conv.block.3", "tail.2"))
    return ReleaseLayout(mapping=m, dropped=dropped)


def _schedule(state: Mapping[str, torch.Tensor], source: str) -> dict[str, float | int]:
    """The linear beta schedule the released buffers hold, as DiffusionConfig fields (checked tensor-wise)."""
    n = int(state["betas"].numel())
    if n > LIMITS["steps"]:  # before the buffer is converted or a reference schedule computed
        raise CheckpointError(f"{source}: 'betas' claims {n:,} steps; dreamsr's limit for a checkpoint is "
                              f"{LIMITS['steps']:,} (steps)")
    betas = state["betas"].detach().to(torch.float64).reshape(-1)
    if n < 2:
        raise CheckpointError(f"{source}: 'betas' has {n} values, expected a schedule")
    start, end = float(f"{float(betas[0]):.6g}"), float(f"{float(betas[-1]):.6g}")
    ref = torch.linspace(start, end, n, dtype=torch.float64)
    if not torch.allclose(betas, ref, rtol=1e-5, atol=1e-12):
        raise CheckpointError(f"{source}: 'betas' is not a linear schedule from {start:g} to {end:g}; "
                              "dreamsr runs linear schedules only")
    alpha_bar = torch.cumprod(1.0 - ref, dim=0)
    if state["alphas_cumprod"].numel() != n:  # compared before the buffer is converted
        raise CheckpointError(f"{source}: 'alphas_cumprod' does not match 'betas' ({state['alphas_cumprod'].numel():,} "
                              f"values, not {n})")
    held = state["alphas_cumprod"].detach().to(torch.float64).reshape(-1)
    if held.shape != alpha_bar.shape or not torch.allclose(held, alpha_bar, rtol=1e-4):
        raise CheckpointError(f"{source}: 'alphas_cumprod' does not match 'betas'")
    return {"num_steps": n, "beta_start": start, "beta_end": end}


def convert_release(state: Mapping[str, torch.Tensor], config: IDMConfig | None = None, *,
                    source: str = "released IDM state dict") -> ReleaseConversion:
    """Map a released IDM generator state dict onto :class:`IDMNet` (``config``, default the "face" preset).

    Every key must be one the layout names (used, dropped or a schedule buffer) and every one must be present;
    each used tensor must have the shape ``IDMNet(config)`` expects. Errors name the offending key. The returned
    config uses the release's nearest-resize rule (``resize_rule="release"``: the index its ``F.interpolate``
    computes, at every size), whatever ``config`` said.
    """
    c = replace(config or PRESETS["face"], resize_rule="release")
    layout = release_layout(c)
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in state.items()):
        raise CheckpointError(f"{source}: expected a flat state dict of tensors (released IDM *_gen.pth)")
    known = layout.all_keys()
    unexpected = sorted(set(state) - known)
    if unexpected:
        hint = " (a 'module.' prefix: save the unwrapped model)" if unexpected[0].startswith("module.") else ""
        raise CheckpointError(f"{source}: unexpected tensor {unexpected[0]!r}"
                              + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else "") + hint
                              + "; not a released IDM generator of this configuration")
    missing = sorted(known - set(state))
    if missing:
        raise CheckpointError(f"{source}: tensor {missing[0]!r} is missing"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    with torch.device("meta"):
        expected = IDMNet(c).state_dict()
    targets = set(layout.mapping.values())
    if targets != set(expected):  # the layout and the network disagree: a bug in dreamsr, not in the file
        raise AssertionError(f"IDM release layout out of sync with IDMNet: {sorted(targets ^ set(expected))[:3]}")
    out: dict[str, torch.Tensor] = {}
    for src, dst in layout.mapping.items():
        tensor = state[src]
        if tuple(tensor.shape) != tuple(expected[dst].shape):
            raise CheckpointError(f"{source}: tensor {src!r} has shape {tuple(tensor.shape)}, the IDM network "
                                  f"expects {tuple(expected[dst].shape)} (for {dst!r})")
        out[dst] = tensor
    return ReleaseConversion(state_dict=out, config=c,
                             dropped={name: why for name, (why, _) in layout.dropped.items()},
                             dropped_keys=layout.dropped_keys(), schedule=_schedule(state, source))


def read_release(path: str | os.PathLike, config: IDMConfig | None = None) -> ReleaseConversion:
    """Read a released IDM ``*_gen.pth`` with ``torch.load(weights_only=True)`` and :func:`convert_release` it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"input file not found: {path}")
    return convert_release(read_pth(path), config, source=str(path))


@dataclass(frozen=True)
class WrittenRelease:
    """What :func:`write_release` wrote: the checkpoint ``path``, its network ``config``, native ``scale`` and
    ``schedule`` (DiffusionConfig fields), and the released modules it left out: ``dropped`` = module name ->
    (why, number of tensors), ``dropped_parameters`` values in all; ``parameters``: values kept; ``sampling``:
    the recommended sampling it records."""

    path: Path
    config: IDMConfig
    scale: int
    schedule: dict[str, float | int]
    dropped: dict[str, tuple[str, int]]
    dropped_parameters: int
    parameters: int
    sampling: dict = field(default_factory=dict)  # the recommended sampling written into the checkpoint


def write_release(src: str | os.PathLike, dst: str | os.PathLike, *, config: IDMConfig | None = None,
                  scale: int | None = None, task: str | None = None, dtype: str = "fp32",
                  overwrite: bool = False) -> WrittenRelease:
    """A released IDM ``*_gen.pth`` -> one self-describing dreamsr checkpoint at ``dst`` (family idm, process
    gaussian). Nothing is written unless every check passes.

    ``config``: the network the file holds (default the "face" preset, the released model; the file's shapes must
    match it exactly). ``scale``: the native output scale to record (default :data:`RELEASE_SCALE`, x8); it must
    lie in the config's trained range [min_scale, max_scale], which the checkpoint carries in its network config.
    Metadata: the schedule read from the file's buffers (a linear beta schedule), ``sampling`` =
    :data:`RECOMMENDED_SAMPLING` with ``training['sampling_provenance']``, and ``training['dropped']`` naming
    every released module left out and why.
    """
    src, dst = Path(src), Path(dst)
    c = replace(config or PRESETS["face"], resize_rule="release")  # the release's F.interpolate index, every size
    family = get_family("idm")
    native = RELEASE_SCALE if scale is None else int(scale)
    lo, hi = family.scales(c, native)
    if not lo <= native <= hi:
        given = "--scale" if scale is not None else f"the release's output scale x{RELEASE_SCALE}"
        raise ConfigError(f"{given} (x{native}) is outside this IDM configuration's trained range x{lo:g} to "
                          f"x{hi:g}" + ("; give --scale N within it" if scale is None else ""))
    if task is not None and task not in ("general", "face"):
        raise ConfigError(f"task must be one of general, face, got {task!r}")
    if dtype not in ("fp32", "fp16", "bf16"):
        raise ConfigError(f"storage dtype must be one of fp32, fp16, bf16, got {dtype!r}")
    check_output(dst, src, overwrite=overwrite)

    source = str(src)
    obj = read_pth(src)
    require_layout(obj, "idm", source, "a released IDM state dict (*_gen.pth)")
    conv = convert_release(obj, c, source=source)
    layout = release_layout(c)
    dropped = {name: (why, len(keys)) for name, (why, keys) in layout.dropped.items()}
    dropped_parameters = sum(int(obj[k].numel()) for k in layout.dropped_keys())

    with torch.device("meta"):  # the released tensors become the network's (no second copy in memory)
        net = IDMNet(c)
    net.load_state_dict(conv.state_dict, strict=True, assign=True)
    is_release = c == replace(PRESETS["face"], resize_rule="release")
    training = {
        "task": task or ("face" if is_release else "general"),
        "converted_from": src.name,
        "source_layout": "idm-release (GaussianDiffusion state dict of Ree1s/IDM, *_gen.pth)",
        "release": RELEASE_NAME if is_release else None,
        "dropped": {name: why for name, (why, _) in dropped.items()},
        "dropped_tensors": len(layout.dropped_keys()),
        "dropped_parameters": dropped_parameters,
        "sampling_provenance": SAMPLING_PROVENANCE,
    }
    info = CheckpointInfo(network=c, diffusion=DiffusionConfig(**conv.schedule), scale=native, training=training,
                          dreamsr_version=__version__, sampling=dict(RECOMMENDED_SAMPLING), family="idm",
                          process="gaussian")
    path = save_checkpoint(dst, net, info, dtype=dtype, overwrite=overwrite)
    return WrittenRelease(path=path, config=c, scale=native, schedule=dict(conv.schedule), dropped=dropped,
                          dropped_parameters=dropped_parameters, parameters=sum(p.numel() for p in net.parameters()),
                          sampling=dict(info.sampling))
