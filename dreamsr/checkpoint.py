"""Self-describing safetensors checkpoints: the tensors of a UNet plus, in the metadata, everything needed
to rebuild and use it (UNet config, diffusion config, scale, colour space, how it was trained).

Loading needs no flags; a missing, unexpected or reshaped tensor is a :class:`CheckpointError` naming the key,
never a partial load. Tensors may be stored in fp16/bf16 and are loaded into the requested dtype.

Metadata keys (all strings, JSON where structured):
``format`` = "dreamsr.checkpoint", ``format_version`` = "1", ``family`` (a key of
:data:`dreamsr.families.FAMILIES`), ``process`` (a key of :data:`dreamsr.processes.PROCESSES`), ``network`` (the
family's config JSON), ``diffusion`` (the process's config JSON), ``scale`` (int), ``color`` ("rgb"),
``training`` (JSON: p, steps, dataset, ...), ``sampling`` (recommended sampling, JSON), ``dreamsr_version``.
Files written before families existed have no ``family``/``process`` and call the network config ``unet``: they
load as ``sr3``/``gaussian``.

A checkpoint is untrusted input (docs/security.md). Before any network, schedule or buffer is built, the metadata
is checked (:meth:`CheckpointInfo.from_metadata`): every config value against its field's type, every number
against :data:`LIMITS` (sizes no real model reaches, named in the error); then (:func:`check_layout`) the network
is built on PyTorch's ``meta`` device (no memory) and its tensor names and shapes are compared with the file's
header, so a config that describes another network than the tensors stored is refused without allocating it.
Only then are the tensors read; a NaN or inf in any of them is refused naming the tensor.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn.modules.module import register_module_parameter_registration_hook

from dreamsr.config import check_types
from dreamsr.errors import CheckpointError, ConfigError
from dreamsr.families import get_family
from dreamsr.files import atomic_write_to, guarded_output
from dreamsr.options import RECOMMENDABLE, SamplingOptions
from dreamsr.processes import build_process, get_process, process_config

__all__ = ["CheckpointInfo", "save_checkpoint", "load_checkpoint", "load_state_strict", "read_info", "FORMAT",
           "FORMAT_VERSION", "LIMITS", "check_layout", "check_finite", "check_config", "write_output"]

FORMAT = "dreamsr.checkpoint"
FORMAT_VERSION = "1"
TRAIN_STATE_FORMAT = "dreamsr.jobs.train-state"  # dreamsr.jobs.train.STATE_FORMAT (training states, not models)
_STORE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# Sizes a checkpoint's metadata may give: far above every real model (the largest shipped or converted ones:
# ResShift v1, 175 M values, widths up to 640, a VQ-f4 codebook of 8192 entries; SR3/IDM T = 2000, x8), far below
# what would exhaust a machine.
LIMITS: dict[str, int] = {
    "scale": 16,  # the native factor, and an IDM network's min_scale/max_scale
    "steps": 100_000,  # a trained chain T (num_steps) and recommended sampling steps / start
    "codebook": 65_536,  # entries of a vector quantiser's codebook (n_embed)
    "width": 4096,  # any other number in a network or sampling config: channels, multipliers, sizes, windows
    "depth": 64,  # blocks per level or stack (res_blocks, encoder_blocks, swin_depth, ...)
    "levels": 8,  # entries of a per-level list (channel_mults, attention_levels, ...)
    "parameters": 2_000_000_000,  # values of the network the config describes (compared with the file's)
}
_SCALE_KEYS = ("min_scale", "max_scale")
_CODEBOOK_KEYS = ("n_embed",)
_SCALE_TEXT = re.compile(r"[0-9]{1,6}")


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint says about itself."""

    network: Any  # the family's network config (SR3: UNetConfig)
    diffusion: Any  # the process's config (gaussian: DiffusionConfig)
    scale: int  # native upscaling factor (LR -> HR)
    color: str = "rgb"  # colour space of the model's input/output
    training: dict = field(default_factory=dict)  # p, steps, dataset, patch, lr, ... as trained
    dreamsr_version: str = ""
    # recommended sampling defaults measured for this model ({"steps", "start", "back_project", "ensemble"}); `dreamsr
    # upscale` uses them unless the user gives the option (a recommended truncated start only when it is at
    # least the number of steps). Empty: the pipeline's own defaults.
    sampling: dict = field(default_factory=dict)
    family: str = "sr3"  # a key of dreamsr.families.FAMILIES: which network `network` configures
    process: str = "gaussian"  # a key of dreamsr.processes.PROCESSES: what `diffusion` configures
    # named sampling recommendations a user picks with --profile (e.g. {"fidelity": {...}, "detail": {...}}), each
    # measured for this model like `sampling`; `sampling` is what applies when no profile is named. Empty: none.
    profiles: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, rec in [("sampling", self.sampling), *((f"profile {k!r}", v) for k, v in self.profiles.items())]:
            unknown = set(rec) - RECOMMENDABLE
            if unknown:
                raise CheckpointError(f"unknown recommended sampling keys {sorted(unknown)} in {name}; "
                                      f"allowed: {sorted(RECOMMENDABLE)}")
        family = get_family(self.family)
        get_process(self.process)
        try:
            family.check_process(self.process)
        except ConfigError as err:
            raise CheckpointError(str(err)) from None
        if not isinstance(self.network, family.config_type):
            raise CheckpointError(f"a {self.family} checkpoint needs a {family.config_type.__name__} network "
                                  f"config, got {type(self.network).__name__}")

    def build_network(self) -> nn.Module:
        """The family's network for :attr:`network` (random init)."""
        return get_family(self.family).build(self.network)

    def build_process(self, network: nn.Module | None = None) -> Any:
        """The process object for :attr:`diffusion` (see :class:`dreamsr.processes.base.Process`), in the signal
        space of ``network``'s first stage when the family has one."""
        space = None if network is None else get_family(self.family).space_of(network)
        return build_process(self.process, self.diffusion, space)

    def to_metadata(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "family": self.family,
            "process": self.process,
            "network": json.dumps(self.network.to_dict(), sort_keys=True),
            "diffusion": json.dumps(self.diffusion.to_dict(), sort_keys=True),
            "scale": str(int(self.scale)),
            "color": self.color,
            "training": json.dumps(self.training, sort_keys=True),
            "dreamsr_version": self.dreamsr_version,
            "sampling": json.dumps(self.sampling, sort_keys=True),
            **({"profiles": json.dumps(self.profiles, sort_keys=True)} if self.profiles else {}),
        }

    def sampling_for(self, profile: str | None = None) -> dict:
        """The recommended sampling of ``profile`` (None: :attr:`sampling`, the default). ConfigError naming the
        profiles there are when this model has no such profile."""
        if profile is None:
            return self.sampling
        if profile not in self.profiles:
            there = f"its profiles: {', '.join(self.profiles)}" if self.profiles else "it has no named profiles"
            raise ConfigError(f"this model has no sampling profile {profile!r}; {there}")
        return self.profiles[profile]

    @classmethod
    def from_metadata(cls, meta: dict[str, str] | None, source: str) -> "CheckpointInfo":
        if meta and meta.get("format") == TRAIN_STATE_FORMAT:
            raise CheckpointError(f"{source}: this is a training state (weights, EMA and optimizer of a `dreamsr "
                                  "train` run), not a model; use the model.safetensors its run folder gets at the "
                                  f"end of training, or export this step: `dreamsr train --resume {source} "
                                  "--export-only -o OUT_DIR` (writes OUT_DIR/model.safetensors)")
        if not meta or meta.get("format") != FORMAT:
            raise CheckpointError(f"{source}: not a dreamsr checkpoint (no '{FORMAT}' metadata); "
                                  "convert a .pth state dict with `dreamsr weights convert`")
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{source}: checkpoint format version {meta.get('format_version')!r} is not "
                                  f"supported by this dreamsr (expects {FORMAT_VERSION}); upgrade dreamsr")
        try:
            family, process = meta.get("family", "sr3"), meta.get("process", "gaussian")
            spec, fam = get_process(process), get_family(family)
            network = _json(meta["network"] if "network" in meta else meta["unet"], "network")  # "unet": old files
            diffusion = _json(meta["diffusion"], "diffusion")
            training = _json(meta.get("training", "{}"), "training")
            sampling = _json(meta.get("sampling", "{}"), "sampling")
            profiles = _json(meta.get("profiles", "{}"), "profiles")
            scale_text = meta["scale"]
            if not _SCALE_TEXT.fullmatch(scale_text):
                raise ConfigError(f"scale must be a positive integer, got {scale_text[:20]!r}")
            scale = int(scale_text)
            if not 1 <= scale <= LIMITS["scale"]:
                raise ConfigError(f"scale = {scale} is above dreamsr's limit for a checkpoint (scale: "
                                  f"{LIMITS['scale']})" if scale else "scale must be a positive integer, got 0")
            check_types(fam.config_type, network, "network")
            _check_numbers(network, "network")
            check_types(spec.config_type, diffusion, "diffusion")
            _check_numbers(diffusion, "diffusion")
            if not isinstance(training, dict):
                raise ConfigError("training must be a JSON object")
            _check_sampling(sampling)
            if not isinstance(profiles, dict) or len(profiles) > 16 or \
                    not all(isinstance(k, str) and 0 < len(k) <= 32 for k in profiles):
                raise ConfigError("profiles must be a JSON object of at most 16 named sampling objects")
            for rec in profiles.values():
                _check_sampling(rec)
            return cls(
                family=family,
                process=process,
                network=fam.config_from_dict(network),
                diffusion=process_config(process, diffusion),
                scale=scale,
                color=meta.get("color", "rgb"),
                training=training,
                dreamsr_version=meta.get("dreamsr_version", ""),
                sampling=sampling,
                profiles=profiles,
            )
        except (KeyError, ValueError, TypeError, ArithmeticError, RecursionError, ConfigError,
                CheckpointError) as err:
            what = f"no {err.args[0]!r} entry" if isinstance(err, KeyError) else str(err)
            raise CheckpointError(f"{source}: invalid checkpoint metadata ({what})") from None


def _json(text: str, name: str) -> Any:
    """A metadata entry's JSON value (ConfigError naming the entry)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        raise ConfigError(f"{name} is not valid JSON ({type(err).__name__})") from None


def _check_numbers(d: Mapping[str, Any], where: str) -> None:
    """Every number of a (type-checked) config dict within :data:`LIMITS`, by its field's name."""
    for key, value in d.items():
        name = f"{where}.{key}"
        if isinstance(value, Mapping):
            _check_numbers(value, name)
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        if isinstance(value, (list, tuple)) and len(value) > LIMITS["levels"]:
            raise ConfigError(f"{name} lists {len(value)} entries; dreamsr's limit for a checkpoint is "
                              f"{LIMITS['levels']} levels")
        kind = ("steps" if "steps" in key or key == "start" else "scale" if key in _SCALE_KEYS
                else "codebook" if key in _CODEBOOK_KEYS
                else "depth" if "block" in key or "depth" in key else "width")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if not math.isfinite(v):
                raise ConfigError(f"{name} must be a finite number, got {v}")
            if abs(v) > LIMITS[kind]:
                raise ConfigError(f"{name} = {v:g} is above dreamsr's limit for a checkpoint ({kind}: "
                                  f"{LIMITS[kind]})")


def check_config(family: str, config: Any, source: str) -> None:
    """CheckpointError unless a network ``config`` of ``family`` (a config object or its dict) has the field types
    and stays within the :data:`LIMITS` a checkpoint's metadata must: for a config inferred from an untrusted file's
    shapes (the converters), before the network is built."""
    d = config.to_dict() if hasattr(config, "to_dict") else config
    try:
        check_types(get_family(family).config_type, d, "network")
        _check_numbers(d, "network")
    except ConfigError as err:
        raise CheckpointError(f"{source}: {err}") from None


def _check_sampling(sampling: Any) -> None:
    """A recommended sampling dict: known keys, the types and ranges :class:`SamplingOptions` takes."""
    if not isinstance(sampling, dict):
        raise ConfigError("sampling must be a JSON object")
    unknown = set(sampling) - RECOMMENDABLE
    if unknown:
        raise ConfigError(f"unknown recommended sampling keys {sorted(unknown)}; allowed: {sorted(RECOMMENDABLE)}")
    check_types(SamplingOptions, sampling, "sampling")
    _check_numbers(sampling, "sampling")
    try:
        SamplingOptions.resolve(sampling)
    except ConfigError as err:
        raise ConfigError(f"recommended sampling: {err}") from None


def write_output(path: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Write ``path`` atomically through ``write(tmp)`` (:func:`dreamsr.files.atomic_write_to`), with every
    operating-system error as one :class:`~dreamsr.errors.OutputError` naming the path; nothing is left behind.

    Without ``overwrite`` an existing file is never replaced (:class:`~dreamsr.errors.OutputExistsError`, also
    when one appears while writing). Returns ``path`` as a Path.
    """
    with guarded_output(path, overwrite=overwrite, errors=(OSError, SafetensorError)) as target:
        return atomic_write_to(target, write, overwrite=overwrite)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, info: CheckpointInfo, *, dtype: str = "fp32",
                    overwrite: bool = True) -> Path:
    """Write ``model``'s weights and ``info`` to ``path`` atomically (:func:`write_output`).

    ``dtype`` ("fp32" | "fp16" | "bf16") is the storage precision; a tensor with a NaN or inf, or with values
    that overflow the storage precision, is refused (CheckpointError naming it): every file written loads.
    ``overwrite=False`` never replaces an existing file (OutputExistsError). Returns the path written.
    """
    if dtype not in _STORE_DTYPES:
        raise ConfigError(f"storage dtype must be one of {', '.join(_STORE_DTYPES)}, got {dtype!r}")
    if getattr(model, "config", None) != info.network:
        raise ConfigError("save_checkpoint: the model's config differs from info.network")
    path = Path(path)
    state = model.state_dict()
    check_finite(state, "the model")
    tensors = {k: v.detach().to("cpu", _STORE_DTYPES[dtype]).contiguous() for k, v in state.items()}
    for k, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            biggest = state[k].detach().abs().max().item()
            raise CheckpointError(f"tensor {k!r} does not fit in {dtype} (values up to {biggest:.3g}); store the "
                                  "weights as fp32 or bf16")
    metadata = info.to_metadata()
    return write_output(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), overwrite=overwrite)


Header = dict[str, tuple[str, tuple[int, ...]]]  # tensor name -> (safetensors dtype, shape), from the header


def _read_header(path: Path) -> tuple[dict[str, str] | None, Header]:
    """The metadata and the tensors' dtypes and shapes of a safetensors file, reading no tensor."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}" if not path.exists() else f"{path}: not a file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata()
            header = {k: (str(fh.get_slice(k).get_dtype()), tuple(fh.get_slice(k).get_shape())) for k in fh.keys()}
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror or err})") from None
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err}){_pickle_hint(path)}") from None
    return meta, header


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror or err})") from None
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None


def _pickle_hint(path: Path) -> str:
    """A pointer to `dreamsr weights convert` when ``path`` starts like a torch.save file (zip or raw pickle)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError:
        return ""
    if head == b"PK" or head[:1] == b"\x80":
        return ("; it looks like a PyTorch .pth file: convert it with "
                "`dreamsr weights convert IN.pth OUT.safetensors --preset NAME --scale N`")
    return ""


def read_info(path: str | os.PathLike) -> CheckpointInfo:
    """The checked metadata of a checkpoint, reading no tensor: the configs' types and :data:`LIMITS`
    (:meth:`CheckpointInfo.from_metadata`), and the tensor names and shapes of the header against the network
    the metadata describes (:func:`check_layout`)."""
    path = Path(path)
    meta, header = _read_header(path)
    info = CheckpointInfo.from_metadata(meta, str(path))
    check_layout(info, header, str(path))
    return info


class _TooLarge(Exception):
    """Raised inside a meta build once the network outgrows the file (see :func:`_expected_layout`)."""


def _expected_layout(info: CheckpointInfo, source: str, header: Mapping[str, tuple[str, tuple[int, ...]]]
                     ) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of ``info``'s network, built on the ``meta`` device (no memory is allocated).

    The build stops at the first parameter that takes it far past the file's own tensors (twice their count or
    their values, from ``header``, plus a margin) or past ``LIMITS["parameters"]``: a config describing a giant
    network is refused after building a few modules, not all of them. (A network only a little off is built
    whole, so that :func:`check_layout` names the first tensor that differs.)"""
    stored = sum(math.prod(shape) for _, shape in header.values())
    budget_values = min(2 * stored + 1_000_000, LIMITS["parameters"])
    budget_tensors = 2 * len(header) + 64
    seen = {"values": 0, "tensors": 0}
    thread = threading.get_ident()

    def count(module: nn.Module, name: str, param: Any) -> None:
        if param is None or threading.get_ident() != thread:
            return
        seen["values"] += param.numel()
        seen["tensors"] += 1
        if seen["values"] > budget_values or seen["tensors"] > budget_tensors:
            raise _TooLarge

    hook = register_module_parameter_registration_hook(count)
    try:
        with torch.device("meta"):
            net = info.build_network()
        return {k: tuple(v.shape) for k, v in net.state_dict().items()}
    except _TooLarge:
        limit = ("" if budget_values < LIMITS["parameters"]
                 else f"; dreamsr's limit for a checkpoint is {LIMITS['parameters']:,} parameters")
        raise CheckpointError(f"{source}: the network config describes a network far larger than the file's "
                              f"{len(header)} tensors of {stored:,} values{limit}") from None
    except Exception as err:  # noqa: BLE001 - a config the dataclass accepted but a module refuses
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{source}: invalid checkpoint metadata (the network config cannot be built: "
                              f"{first})") from None
    finally:
        hook.remove()


def check_layout(info: CheckpointInfo, header: Mapping[str, tuple[str, tuple[int, ...]]], source: str) -> None:
    """CheckpointError unless the file's tensors (``header``: name -> (dtype, shape)) are exactly the floating-
    point tensors of the network ``info`` describes, within ``LIMITS["parameters"]``: the first
    missing, unexpected or reshaped tensor is named. Nothing but the ``meta`` device is used."""
    expected = _expected_layout(info, source, header)
    _compare(expected, {k: shape for k, (_, shape) in header.items()}, source)
    for k, (dtype, _) in header.items():
        if dtype not in ("F64", "F32", "F16", "BF16"):
            raise CheckpointError(f"{source}: tensor {k!r} is stored as {dtype}, not floating point")


def _compare(expected: Mapping[str, tuple[int, ...]], got: Mapping[str, tuple[int, ...]], source: str) -> None:
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    if missing:
        raise CheckpointError(f"{source}: tensor {missing[0]!r} is missing"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if unexpected:
        raise CheckpointError(f"{source}: unexpected tensor {unexpected[0]!r}"
                              + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
    for k, shape in expected.items():
        if tuple(got[k]) != tuple(shape):
            raise CheckpointError(f"{source}: tensor {k!r} has shape {tuple(got[k])}, the model expects {tuple(shape)}")


def check_finite(tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """CheckpointError naming the first floating-point tensor that holds a NaN or an inf."""
    for k, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"{source}: tensor {k!r} holds {bad} non-finite value{'s' if bad != 1 else ''} "
                                  "(NaN or inf); these weights are broken")


def load_state_strict(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``tensors`` into ``model``; any missing, unexpected or reshaped key, or any tensor with a NaN or inf,
    is an error naming it."""
    expected = model.state_dict()
    _compare({k: tuple(v.shape) for k, v in expected.items()}, {k: tuple(t.shape) for k, t in tensors.items()},
             source)
    check_finite(tensors, source)
    model.load_state_dict({k: t.to(v.dtype) for k, t in tensors.items() for v in [expected[k]]}, strict=True)


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> tuple[nn.Module, CheckpointInfo]:
    """Build the exact network (of the checkpoint's family) its metadata describes and load its weights.

    The metadata and the header's tensor names and shapes are checked first (:func:`read_info`), so nothing is
    built or allocated for a file that cannot load. Returns ``(model, info)`` with the model in eval mode on
    ``device`` in ``dtype``.
    """
    path = Path(path)
    info = read_info(path)
    tensors = _read_tensors(path)
    model = info.build_network()
    load_state_strict(model, tensors, str(path))
    return model.to(device=device, dtype=dtype).eval(), info
