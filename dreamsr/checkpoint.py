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
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from typing import Any

from torch import nn

from dreamsr.errors import CheckpointError, ConfigError
from dreamsr.families import get_family
from dreamsr.files import atomic_write_to
from dreamsr.options import RECOMMENDABLE
from dreamsr.processes import build_process, get_process, process_config

__all__ = ["CheckpointInfo", "save_checkpoint", "load_checkpoint", "load_state_strict", "read_info", "FORMAT",
           "FORMAT_VERSION"]

FORMAT = "dreamsr.checkpoint"
FORMAT_VERSION = "1"
TRAIN_STATE_FORMAT = "dreamsr.jobs.train-state"  # dreamsr.jobs.train.STATE_FORMAT (training states, not models)
_STORE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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

    def __post_init__(self) -> None:
        unknown = set(self.sampling) - RECOMMENDABLE
        if unknown:
            raise CheckpointError(f"unknown recommended sampling keys {sorted(unknown)}; "
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
        }

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
            network = meta["network"] if "network" in meta else meta["unet"]  # "unet": files before families
            return cls(
                family=family,
                process=process,
                network=get_family(family).config_from_dict(json.loads(network)),
                diffusion=process_config(process, json.loads(meta["diffusion"])),
                scale=int(meta["scale"]),
                color=meta.get("color", "rgb"),
                training=json.loads(meta.get("training", "{}")),
                dreamsr_version=meta.get("dreamsr_version", ""),
                sampling=json.loads(meta.get("sampling", "{}")),
            )
        except (KeyError, ValueError, TypeError, ConfigError, CheckpointError) as err:
            raise CheckpointError(f"{source}: invalid checkpoint metadata ({err})") from None


def save_checkpoint(path: str | os.PathLike, model: nn.Module, info: CheckpointInfo, *, dtype: str = "fp32"
                    ) -> Path:
    """Write ``model``'s weights and ``info`` to ``path`` atomically (:func:`dreamsr.files.atomic_write_to`).

    ``dtype`` ("fp32" | "fp16" | "bf16") is the storage precision. Returns the path written.
    """
    if dtype not in _STORE_DTYPES:
        raise ConfigError(f"storage dtype must be one of {', '.join(_STORE_DTYPES)}, got {dtype!r}")
    if getattr(model, "config", None) != info.network:
        raise ConfigError("save_checkpoint: the model's config differs from info.network")
    path = Path(path)
    tensors = {k: v.detach().to("cpu", _STORE_DTYPES[dtype]).contiguous() for k, v in model.state_dict().items()}
    metadata = info.to_metadata()
    return atomic_write_to(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _open(path: Path, with_tensors: bool) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
    """Read metadata (and tensors if asked) of a safetensors file, with clear errors."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata()
            tensors = {k: fh.get_tensor(k) for k in fh.keys()} if with_tensors else {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err}){_pickle_hint(path)}") from None
    return tensors, meta


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
    """Read only the metadata of a checkpoint."""
    _, meta = _open(Path(path), with_tensors=False)
    return CheckpointInfo.from_metadata(meta, str(path))


def load_state_strict(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``tensors`` into ``model``; any missing, unexpected or reshaped key is an error naming it."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        raise CheckpointError(f"{source}: tensor {missing[0]!r} is missing"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if unexpected:
        raise CheckpointError(f"{source}: unexpected tensor {unexpected[0]!r}"
                              + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
    for k, v in expected.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{source}: tensor {k!r} has shape {tuple(tensors[k].shape)}, "
                                  f"the model expects {tuple(v.shape)}")
    model.load_state_dict({k: t.to(v.dtype) for k, t in tensors.items() for v in [expected[k]]}, strict=True)


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> tuple[nn.Module, CheckpointInfo]:
    """Build the exact network (of the checkpoint's family) its metadata describes and load its weights.

    Returns ``(model, info)`` with the model in eval mode on ``device`` in ``dtype``.
    """
    path = Path(path)
    tensors, meta = _open(path, with_tensors=True)
    info = CheckpointInfo.from_metadata(meta, str(path))
    model = info.build_network()
    load_state_strict(model, tensors, str(path))
    return model.to(device=device, dtype=dtype).eval(), info
