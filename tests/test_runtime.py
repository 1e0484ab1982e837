"""runtime: which precision 'auto' picks follows what the CPU computes natively (flags injected, never this machine's)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dreamsr import runtime
from dreamsr.errors import ConfigError

# /proc/cpuinfo flag lines, shortened: a laptop-class AVX2 CPU, AVX-512 without bf16, Zen 4 / Cooper Lake (AVX-512
# BF16), Sapphire Rapids (AMX)
AVX2 = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2"
AVX512 = AVX2 + " avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni"
AVX512_BF16 = AVX512 + " avx512_bf16"
AMX = AVX512 + " amx_bf16 amx_tile amx_int8"


@pytest.mark.parametrize("flags, native", [(AVX2, False), (AVX512, False), (AVX512_BF16, True), (AMX, True),
                                           ("", False)])
def test_native_bf16_needs_avx512_bf16_or_amx(flags: str, native: bool) -> None:
    assert runtime.cpu_native_bf16(flags.split()) is native


def test_cpu_flags_reads_the_flags_line(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {AMX}\nbugs\t\t: spectre_v1\n\n"
                    f"processor\t: 1\nflags\t\t: {AVX2}\n")
    flags = runtime.cpu_flags.__wrapped__(str(info))  # uncached: the cache holds this machine's file
    assert flags == frozenset(AMX.split()) and "spectre_v1" not in flags
    assert runtime.cpu_native_bf16(flags)
    assert runtime.cpu_flags.__wrapped__(str(tmp_path / "missing")) == frozenset()


@pytest.mark.parametrize("native, expected", [(False, "fp32"), (True, "bf16")])
def test_auto_precision_on_cpu_follows_native_bf16(monkeypatch: pytest.MonkeyPatch, native: bool,
                                                   expected: str) -> None:
    monkeypatch.setattr(runtime, "cpu_flags", lambda path="/proc/cpuinfo": frozenset(
        (AVX512_BF16 if native else AVX2).split()))
    cpu = torch.device("cpu")
    assert runtime.resolve_precision("auto", cpu) == expected
    # explicit choices are the user's: bf16 stays allowed (emulated where not native), fp16 never on the CPU
    assert runtime.resolve_precision("bf16", cpu) == "bf16" and runtime.resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(ConfigError, match="fp16"):
        runtime.resolve_precision("fp16", cpu)
