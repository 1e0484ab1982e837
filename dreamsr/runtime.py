"""Device and precision choices shared by sampling, training and benchmarks.

``resolve_device("auto")`` picks cuda > mps > cpu. ``resolve_precision("auto", device)`` gives bf16 on CUDA
devices that support it (fp16 otherwise) and fp32 on CPU/MPS unless asked. ``autocast(device, precision)``
is the context manager the model call runs in; fp32 means no autocast at all.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Literal

import torch

from dreamsr.errors import ConfigError

__all__ = ["Precision", "resolve_device", "resolve_precision", "autocast", "DTYPES"]

Precision = Literal["auto", "fp32", "bf16", "fp16"]
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' -> torch.device; asking for an absent device is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for but no CUDA GPU is available; use --device cpu")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' asked for but MPS is not available; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unsupported device {name!r}")
    return dev


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> bf16 (or fp16) on CUDA, fp32 elsewhere; validates explicit choices."""
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if precision not in DTYPES:
        raise ConfigError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("fp16 is not supported on the CPU; use bf16 or fp32")
    return precision


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast to the precision's dtype on ``device``; fp32 is a no-op."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=DTYPES[precision]):
        yield
