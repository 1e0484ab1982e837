"""Training states: save, find, read back, resume and export (one safetensors file per saved step).

A state file holds the tensors ``model/*``, ``ema/*``, ``optim/<i>/<name>`` (Adam moments and step counts) and
``rng/cpu``, and the metadata (strings, JSON where structured) ``format`` = :data:`STATE_FORMAT`,
``format_version``, ``config`` (the :class:`TrainConfig`), ``step``, ``optim`` (param groups and non-tensor
state), ``scaler``, ``family``, ``process``, ``network``, ``diffusion``, ``world_size``, ``dreamsr_version``
(states written before families existed call the network config ``unet``; only ``config`` is read back).
Written atomically (:mod:`dreamsr.files`); no pickles anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from dreamsr.checkpoint import TRAIN_STATE_FORMAT, load_checkpoint, load_state_strict, save_checkpoint
from dreamsr.errors import CheckpointError, ConfigError, TrainingError
from dreamsr.files import atomic_write_to
from dreamsr.jobs.train.config import RESUMABLE_FIELDS, TrainConfig

__all__ = ["STATE_FORMAT", "STATE_FORMAT_VERSION", "TrainState", "checkpoint_name", "list_checkpoints",
           "latest_checkpoint", "resolve_resume", "read_state", "read_state_config", "save_state",
           "check_resume_config", "load_init_weights", "export_weights", "export_from_state", "stale_temporaries"]

STATE_FORMAT = TRAIN_STATE_FORMAT  # "dreamsr.jobs.train-state": the checkpoint loader names such a file for what it is
STATE_FORMAT_VERSION = "1"


def checkpoint_name(step: int) -> str:
    """File name of the state saved after ``step`` optimizer steps."""
    return f"step_{step:08d}.safetensors"


def list_checkpoints(folder: Path) -> list[Path]:
    """The state files in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step_*.safetensors") if p.name[5:13].isdigit())


def stale_temporaries(run_dir: Path) -> list[Path]:
    """Temporary files a run killed while saving left in ``run_dir`` (states and the export)."""
    return [*(run_dir / "checkpoints").glob(".step_*.tmp"), *run_dir.glob(".model.safetensors.*.tmp")]


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest training-state checkpoint of a run folder (``run_dir/checkpoints``), or None."""
    found = list_checkpoints(Path(run_dir) / "checkpoints")
    return found[-1] if found else None


def resolve_resume(resume: str, run_dir: Path) -> Path | None:
    """The state file ``--resume`` names: a file, a run folder (its latest), a checkpoints folder, or "auto"
    (``run_dir``'s latest, None when it has none)."""
    if resume == "auto":
        return latest_checkpoint(run_dir)
    p = Path(resume).expanduser()
    if p.is_dir():
        found = latest_checkpoint(p) if (p / "checkpoints").is_dir() else (
            list_checkpoints(p)[-1] if list_checkpoints(p) else None)
        if found is None:
            raise CheckpointError(f"--resume {p}: no training checkpoint (checkpoints/step_*.safetensors) in it")
        return found
    if not p.is_file():
        raise CheckpointError(f"--resume {p}: no such checkpoint file or run folder")
    return p


def _resolve_existing(path: str | os.PathLike) -> Path:
    """A state file from a file or a run folder (its latest state)."""
    p = Path(path)
    resolved = resolve_resume(str(p), p if p.is_dir() else p.parent)
    if resolved is None:
        raise CheckpointError(f"{path}: no training checkpoint found")
    return resolved


# --- reading ------------------------------------------------------------------------------------------------

@dataclass
class TrainState:
    """A training-state file read back."""

    path: Path
    config: TrainConfig
    step: int  # optimizer steps done
    tensors: dict[str, torch.Tensor]
    meta: dict[str, str]

    def weights(self, which: Literal["model", "ema"]) -> dict[str, torch.Tensor]:
        """The network's (``model``) or its EMA's (``ema``) state dict."""
        prefix = f"{which}/"
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def restore_training(self, opt: torch.optim.Optimizer, scaler: "torch.amp.GradScaler | None") -> None:
        """Put back the optimizer, the loss scaler and the global CPU generator as they were when saved."""
        _optim_from_flat(opt, {k: v for k, v in self.tensors.items() if k.startswith("optim/")},
                         json.loads(self.meta["optim"]))
        if scaler is not None and self.meta.get("scaler") not in (None, "null"):
            scaler.load_state_dict(json.loads(self.meta["scaler"]))
        if "rng/cpu" in self.tensors:
            torch.set_rng_state(self.tensors["rng/cpu"])


def _read(path: Path, with_tensors: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()} if with_tensors else {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a readable training checkpoint ({err})") from None
    if meta.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not a dreamsr training checkpoint (format {meta.get('format')!r}); "
                              "inference checkpoints (model.safetensors) cannot be resumed")
    if meta.get("format_version") != STATE_FORMAT_VERSION:
        raise CheckpointError(f"{path}: training checkpoint version {meta.get('format_version')!r} is not "
                              f"supported (expects {STATE_FORMAT_VERSION})")
    return tensors, meta


def read_state(path: Path) -> TrainState:
    """Read a state file (every tensor)."""
    tensors, meta = _read(path, with_tensors=True)
    return TrainState(path, TrainConfig.from_dict(json.loads(meta["config"])), int(meta["step"]), tensors, meta)


def read_state_config(path: str | os.PathLike) -> TrainConfig:
    """The TrainConfig stored in a training checkpoint (file or run folder: its latest checkpoint)."""
    _, meta = _read(_resolve_existing(path), with_tensors=False)
    return TrainConfig.from_dict(json.loads(meta["config"]))


def check_resume_config(saved: TrainConfig, cfg: TrainConfig, path: Path) -> None:
    """TrainingError naming every setting (outside :data:`RESUMABLE_FIELDS`) that differs from the state's."""
    diffs = [f.name for f in dataclasses.fields(TrainConfig)
             if f.name not in RESUMABLE_FIELDS and getattr(saved, f.name) != getattr(cfg, f.name)]
    if diffs:
        detail = ", ".join(f"{k}: checkpoint {getattr(saved, k)!r} vs now {getattr(cfg, k)!r}" for k in diffs)
        raise TrainingError(f"cannot resume {path}: the run was trained with different settings ({detail}); "
                            "drop those options or start a new --run-dir")


# --- writing ------------------------------------------------------------------------------------------------

def _optim_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state dict -> (tensors named optim/<param>/<key>, JSON-safe rest)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim/{idx}/{k}"] = v.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optim_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        _, idx, key = name.split("/", 2)
        state.setdefault(int(idx), {})[key] = t
    for idx, st in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(st)
    groups = meta["param_groups"]
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_state(path: Path, cfg: TrainConfig, step: int, model: torch.nn.Module, ema: torch.nn.Module,
               opt: torch.optim.Optimizer, scaler: "torch.amp.GradScaler | None", world: int) -> None:
    """Write the state after ``step`` optimizer steps to ``path`` (atomically; fp32 weights)."""
    from dreamsr import __version__

    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model/{k}"] = v.detach().to("cpu", torch.float32).contiguous()
    for k, v in ema.state_dict().items():
        tensors[f"ema/{k}"] = v.detach().to("cpu", torch.float32).contiguous()
    opt_tensors, opt_meta = _optim_to_flat(opt)
    tensors.update(opt_tensors)
    tensors["rng/cpu"] = torch.get_rng_state()
    meta = {
        "format": STATE_FORMAT,
        "format_version": STATE_FORMAT_VERSION,
        "config": json.dumps(cfg.to_dict(), sort_keys=True),
        "step": str(step),
        "optim": json.dumps(opt_meta, sort_keys=True),
        "scaler": json.dumps(scaler.state_dict() if scaler is not None else None),
        "family": cfg.family,
        "process": cfg.process_name(),
        "network": json.dumps(cfg.network_config().to_dict(), sort_keys=True),
        "diffusion": json.dumps(cfg.diffusion_config().to_dict(), sort_keys=True),
        "world_size": str(world),
        "dreamsr_version": __version__,
    }
    atomic_write_to(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


# --- weights in, weights out --------------------------------------------------------------------------------

def load_init_weights(cfg: TrainConfig, model: torch.nn.Module, ema: torch.nn.Module) -> None:
    """Load ``cfg.init_weights`` (an inference checkpoint) into ``model`` and ``ema``, strictly.

    The checkpoint must describe the same family, network, diffusion and scale as ``cfg``: fine-tuning continues
    the same model, so a mismatch is an error naming every differing field rather than a partial load."""
    src, info = load_checkpoint(cfg.init_weights)
    if info.family != cfg.family:
        raise ConfigError(f"--init-weights {cfg.init_weights} is a {info.family} model; this run trains "
                          f"{cfg.family}")
    for what, theirs, ours in (("UNet", info.network, cfg.network_config()),
                               ("diffusion", info.diffusion, cfg.diffusion_config())):
        if theirs != ours:
            diff = [f.name for f in dataclasses.fields(ours) if getattr(theirs, f.name) != getattr(ours, f.name)]
            raise ConfigError(f"--init-weights {cfg.init_weights}: its {what} differs from this run's in "
                              f"{', '.join(diff)} ({', '.join(f'{d}={getattr(theirs, d)!r}' for d in diff)}); "
                              "pass matching --preset/--target/--embed-scale options")
    if info.scale != cfg.scale:
        raise ConfigError(f"--init-weights {cfg.init_weights} is a x{info.scale} model; this run trains x{cfg.scale}")
    state = src.state_dict()
    load_state_strict(model, state, str(cfg.init_weights))
    load_state_strict(ema, state, str(cfg.init_weights))


def export_weights(weights: Mapping[str, torch.Tensor], cfg: TrainConfig, step: int, out: Path, *,
                   dtype: str, source: str) -> Path:
    """Write the inference checkpoint (``dreamsr upscale --weights``) of the network state dict ``weights``
    trained by ``cfg`` for ``step`` steps to ``out`` (atomically; ``dtype``: storage precision)."""
    model = cfg.model_family().build(cfg.network_config())
    load_state_strict(model, {k: v.detach().to("cpu", torch.float32) for k, v in weights.items()}, source)
    return save_checkpoint(out, model, cfg.model_info(step), dtype=dtype)


def export_from_state(state: str | os.PathLike, out: str | os.PathLike, *, dtype: str = "fp32",
                      ema: bool = True) -> Path:
    """Write an inference checkpoint (``dreamsr upscale --weights``) from a training checkpoint.

    ``state``: a training checkpoint file or run folder (its latest checkpoint); ``ema``: export the EMA
    weights (else the raw ones); ``dtype``: storage precision. Returns the path written.
    """
    saved = read_state(_resolve_existing(state))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return export_weights(saved.weights("ema" if ema else "model"), dataclasses.replace(saved.config, export_ema=ema),
                          saved.step, out, dtype=dtype, source=str(saved.path))
