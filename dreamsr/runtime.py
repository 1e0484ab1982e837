"""Device and precision choices shared by sampling, training and benchmarks.

``resolve_device("auto")`` picks cuda > mps > cpu. ``resolve_precision("auto", device)`` gives what the hardware
accelerates: bf16 on CUDA devices that support it (fp16 otherwise), bf16 on a CPU with native bf16 instructions
(:func:`cpu_native_bf16`: AVX-512 BF16 or AMX-BF16), fp32 on other CPUs (there bf16 is emulated, several times
slower than fp32) and on MPS. ``autocast(device, precision)`` is the context manager the model call runs in;
fp32 means no autocast at all.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterable, Iterator, Literal

import torch

from dreamsr.errors import ConfigError

__all__ = ["Precision", "resolve_device", "resolve_precision", "autocast", "DTYPES", "cpu_flags", "cpu_native_bf16",
           "CPU_BF16_FLAGS"]

Precision = Literal["auto", "fp32", "bf16", "fp16"]
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# /proc/cpuinfo flags of x86 CPUs that compute bf16 natively (dot products in hardware): AVX-512 BF16 (Cooper Lake,
# Sapphire Rapids, AMD Zen 4 and later) and AMX-BF16 (Sapphire Rapids and later). Without them oneDNN emulates bf16.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags of the first ``flags`` line of ``path`` (Linux), or an empty set where unknown."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_native_bf16(flags: Iterable[str] | None = None) -> bool:
    """Whether the CPU computes bf16 natively: ``flags`` (default: :func:`cpu_flags` of this machine) contain
    ``avx512_bf16`` or ``amx_bf16``. Unknown flags (not Linux, or not x86) count as no."""
    have = cpu_flags() if flags is None else frozenset(flags)
    return any(f in have for f in CPU_BF16_FLAGS)


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
    """'auto' -> bf16 (or fp16) on CUDA, bf16 on a CPU with native bf16 (:func:`cpu_native_bf16`), fp32
    elsewhere; validates explicit choices (an explicit bf16 on any CPU is allowed: emulated where not native)."""
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device.type == "cpu" and cpu_native_bf16():
            return "bf16"
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
