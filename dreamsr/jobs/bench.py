"""Benchmarks of what users pay: sampling speed, DREAM training overhead, memory and efficiency.

Every timing runs the real code paths, never private copies:

* sampling: :meth:`dreamsr.jobs.pipeline.Upscaler.upscale` on one image, for each precision asked and each tile
  batch size (our default path: channels_last, step-blend tiling), and the *naive reference path* on the same
  image at the same steps (fp32, one tile per network call, tiles sampled independently and merged at the end,
  channels_last off), so the speed-up is a ratio of two medians measured in one run. Unless asked for by name, a
  precision is timed only where the hardware computes it natively (:func:`supported_precisions`); the others are
  listed as skipped, with the reason (:func:`skipped_precisions`: bf16 on a CPU without AVX-512 BF16 or AMX is
  emulated, several times slower than fp32);
* training: :func:`dreamsr.jobs.train.train` itself, run for a few steps on a temporary folder of images with
  validation off, once with ``p = inf`` (standard SR3 training) and once with ``p = 1`` (DREAM), alternating
  over ``train_rounds`` rounds; the per-step times are the ones the loop reports in its "step" events
  (``step_time - data_time``: forward, backward, optimizer and EMA);
* data loading: :func:`dreamsr.data.loader_throughput` on a folder when one is given;
* CPU time: beside every wall-clock time, the process's CPU time over the same span (``time.process_time``,
  all threads). On a machine shared with other work, one thread's CPU time is close to what the wall time would
  be on an idle core, so ratios of CPU times survive a busy machine better than wall-clock ratios;
* memory: peak CUDA memory allocated, or the process's peak RSS sampled every 5 ms (CPU), per measurement;
* efficiency: FLOPs counted by ``torch.utils.flop_counter`` on the meta device (shapes only, no compute) for one
  network call and one training step, achieved TFLOP/s from the measured medians, and the fraction of the
  device's dense peak where it is known (H100/H200 bf16, measured ~790 TFLOP/s).

Warm-up runs are excluded (sampling warms up with a one-step upscale of the same image; training drops the first
``train_warmup`` steps of each run); every measurement reports the median, min and max over its repeats.

Sizes: the defaults of :class:`BenchConfig` (64x64 -> 256x256, 20 steps, one naive repeat) fit in about five
minutes on two CPU cores and report every ratio; :data:`FULL` holds the larger sizes of the published figures
(128x128 -> 512x512, 50 steps, three naive repeats; ``dreamsr bench --full``).

Library code: returns a plain JSON-safe dict (:func:`run_bench`), reports progress through a callback, never prints.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as _dt
import functools
import math
import os
import platform
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from dreamsr.checkpoint import CheckpointInfo
from dreamsr.diffusion import DiffusionConfig, Schedule
from dreamsr.errors import ConfigError
from dreamsr.options import SamplingOptions
from dreamsr.runtime import CPU_BF16_FLAGS, cpu_flags, cpu_native_bf16, resolve_device, resolve_precision
from dreamsr.families.sr3.unet import PRESETS, UNet, UNetConfig

__all__ = ["BenchConfig", "SECTIONS", "SCHEMA", "machine_info", "summarize", "PeakMemory",
           "forward_flops", "train_step_flops", "device_peak_tflops", "supported_precisions",
           "skipped_precisions", "FULL", "load_model",
           "match_preset", "bench_image", "bench_sampling", "bench_training", "bench_loader", "efficiency",
           "check_targets", "run_bench", "ProgressFn"]

SCHEMA = "dreamsr.jobs.bench/1"
SECTIONS = ("sampling", "training", "efficiency")

# Dense bf16 peaks *measured* with large matmuls on this workplace's machines (not the datasheet), in TFLOP/s,
# by GPU name substring: an 8192^3 bf16 matmul ran at 769-798 TFLOP/s on H100 and H200.
PEAK_BF16_TFLOPS = {"H100": 790.0, "H200": 790.0}

# Targets of issue 7 (ratios measured in one run).
TARGET_SPEEDUP = {"cpu": 1.8, "cuda": 5.0}  # default path over the naive reference path
TARGET_DREAM_RATIO_CPU = 1.35  # DREAM / standard training step (paper on GPUs: 1.21-1.38)
TARGET_PEAK_FRACTION = 0.40  # of bf16 peak in the sampling loop, sr3-div2k on H100/H200

ProgressFn = Callable[[str], None]  # a one-line description of what starts now

# `dreamsr bench --full`: the sampling sizes of the published figures (docs/benchmarks.md), instead of the defaults
# sized to finish in about five minutes on two CPU cores (64 -> 256 px, 20 steps, one naive repeat).
FULL: dict[str, int] = {"lr_size": 128, "steps": 50, "repeats": 3, "naive_repeats": 3}
# CPU flags worth recording beside a CPU figure (vector width, native bf16)
_REPORTED_FLAGS = ("avx2", "avx512f", *CPU_BF16_FLAGS, "amx_tile")


@dataclass
class BenchConfig:
    """What to benchmark. Sizes are in pixels; every count is per measurement."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precisions: tuple[str, ...] = ()  # sampling precisions; empty: every precision the device supports
    sections: tuple[str, ...] = SECTIONS  # any of "sampling", "training", "efficiency"
    seed: int = 0  # model init (presets), image and sampling noise
    threads: int = 0  # torch CPU threads during the benchmark (0: leave torch's setting)
    # --- sampling ---
    lr_size: int = 64  # side of the square LR input (ignored when ``image`` is given); output = lr_size * scale
    image: str | None = None  # an image file to upscale instead of the synthetic LR image
    steps: int = 20  # sampler steps (fewer than SamplingOptions' default, to fit the bench in minutes)
    sampler: str | None = None  # ddim | ddpm; None: SamplingOptions' default
    tile: int | None = None  # LR tile side (0: no tiling); None: SamplingOptions' default
    overlap: int | None = None  # LR tile overlap; None: SamplingOptions' default
    batches: tuple[int, ...] = (4,)  # tiles per network call on our default path (one run per value)
    repeats: int = 3  # timed repeats per sampling measurement on our default path, after a one-step warm-up
    naive_repeats: int = 1  # timed repeats of the naive path (the slowest; the paths take turns while both run)
    warmup: bool = True  # a one-step upscale on every path before timing (off: e.g. a memory-only run)
    naive: bool = True  # also time the naive reference path (fp32, batch 1, merge at the end, no channels_last)
    # --- training ---
    train_batch: int = 8  # global batch of the timed training steps
    train_patch: int = 64  # HR crop side of the timed training steps
    train_steps: int = 6  # timed steps per run (after ``train_warmup``)
    train_warmup: int = 2  # steps dropped at the start of each run
    train_rounds: int = 2  # runs per objective, alternating p=inf / p=1 (evens out a machine's changing load)
    train_precision: str = "auto"  # as ``dreamsr train --precision`` (auto: bf16/fp16 on CUDA; on the CPU bf16
    #                                where native, else fp32)
    data_dir: str | None = None  # a training folder: also measure data-loader throughput on it
    dataset: str = "folder"  # layout name of ``data_dir``
    loader_workers: int = 2  # loader worker processes for the throughput measurement
    loader_batches: int = 20  # batches timed for the throughput measurement

    def __post_init__(self) -> None:
        bad = [s for s in self.sections if s not in SECTIONS]
        checks = [
            (not bad, f"unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}"),
            (bool(self.sections), "choose at least one section"),
            (self.lr_size >= 4, f"lr_size must be >= 4, got {self.lr_size}"),
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (bool(self.batches) and all(b >= 1 for b in self.batches), "every tile batch size must be >= 1"),
            (self.repeats >= 1, f"repeats must be >= 1, got {self.repeats}"),
            (self.naive_repeats >= 1, f"naive_repeats must be >= 1, got {self.naive_repeats}"),
            (self.threads >= 0, f"threads must be >= 0, got {self.threads}"),
            (self.train_batch >= 1, "train_batch must be >= 1"),
            (self.train_patch >= 1, "train_patch must be >= 1"),
            (self.train_steps >= 1, "train_steps must be >= 1"),
            (self.train_warmup >= 0, "train_warmup must be >= 0"),
            (self.train_rounds >= 1, "train_rounds must be >= 1"),
            (self.loader_workers >= 0, "loader_workers must be >= 0"),
            (self.loader_batches >= 1, "loader_batches must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        self.sampling()  # validates the sampling fields

    def sampling(self) -> SamplingOptions:
        """The sampling settings every timed upscale uses (the batch and merge mode vary per run)."""
        return SamplingOptions(**{k: v for k, v in dict(steps=self.steps, sampler=self.sampler, seed=self.seed,
                                                         tile=self.tile, overlap=self.overlap).items()
                                  if v is not None})


# --- machine, timing, memory ---------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load_avg() -> float | None:
    """1-minute load average (other processes competing for the cores), or None where unknown."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model, logical CPUs, torch threads, load average, GPU name and memory, torch/CUDA versions, the CPU's
    vector and bf16 flags (``cpu_flags``: those of avx2, avx512f, avx512_bf16, amx_bf16, amx_tile it has)."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
        "load_avg_1m": _load_avg(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
        "device": str(device), "gpu": None, "gpu_memory_gib": None, "cuda": None,
        "cpu_flags": [f for f in _REPORTED_FLAGS if f in cpu_flags()], "cpu_native_bf16": cpu_native_bf16(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2 ** 30, 1), cuda=torch.version.cuda,
                    sm_count=props.multi_processor_count,
                    cudnn_allow_tf32=bool(torch.backends.cudnn.allow_tf32),
                    matmul_precision=torch.get_float32_matmul_precision())
    return info


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(times: Sequence[float]) -> dict[str, Any]:
    """Median, min and max (seconds) of ``times``, and the list itself."""
    if not times:
        raise ValueError("no times to summarize")
    t = [float(x) for x in times]
    return {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "n": len(t), "all_s": t}


def _rss_bytes() -> int:
    """Resident set size of this process now (bytes)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB (the peak, not now)


class PeakMemory:
    """Context manager: peak memory while the block runs.

    On CUDA: ``torch.cuda.max_memory_allocated`` after resetting the peak (tensors only, not the allocator's
    cache). Elsewhere: the process's RSS, sampled every ``interval`` seconds by a thread (and at entry and exit),
    so it counts everything the process holds (the model, the interpreter, earlier sections' caches), and can
    miss a spike shorter than the interval. ``start_bytes`` is the value at entry.
    """

    def __init__(self, device: torch.device, interval: float = 0.005) -> None:
        self.device = torch.device(device)
        self.interval = float(interval)
        self.peak_bytes = 0
        self.start_bytes = 0
        self.kind = "cuda_max_allocated" if self.device.type == "cuda" else "peak_rss"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, _rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            _sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_bytes = self.peak_bytes = torch.cuda.memory_allocated(self.device)
        else:
            self.start_bytes = self.peak_bytes = _rss_bytes()
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll, name="dreamsr-peak-rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            _sync(self.device)
            self.peak_bytes = max(self.peak_bytes, torch.cuda.max_memory_allocated(self.device))
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self.peak_bytes = max(self.peak_bytes, _rss_bytes())

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "peak_mib": round(self.peak_bytes / 2 ** 20, 1),
                "start_mib": round(self.start_bytes / 2 ** 20, 1)}


# --- FLOPs and peaks ---------------------------------------------------------------------------------------

def _meta_unet(config: UNetConfig) -> UNet:
    with torch.device("meta"):
        return UNet(config)


@functools.lru_cache(maxsize=64)
def forward_flops(config: UNetConfig, batch: int, height: int, width: int | None = None) -> int:
    """FLOPs of one UNet forward on ``batch`` inputs of ``height`` x ``width`` HR pixels.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, linear layers and attention matmuls,
    2 FLOPs per multiply-add; normalisations and activations are not counted) on the meta device: shapes only,
    nothing is computed, so any size can be counted on any machine.
    """
    from torch.utils.flop_counter import FlopCounterMode

    width = height if width is None else width
    model = _meta_unet(config).eval()
    y = torch.empty(batch, config.out_channels, height, width, device="meta")
    x = torch.empty(batch, config.in_channels - config.out_channels, height, width, device="meta")
    g = torch.empty(batch, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(y, x, g)
    return int(counter.get_total_flops())


@functools.lru_cache(maxsize=64)
def train_step_flops(config: UNetConfig, batch: int, patch: int, p: float) -> int:
    """FLOPs of one training step's loss and backward pass (:func:`dreamsr.losses.dream_loss`, the real loss)
    at ``batch`` crops of ``patch``² HR pixels: p = inf is one forward + backward, finite p adds DREAM's
    no-grad forward. Counted on the meta device like :func:`forward_flops` (the optimizer is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    from dreamsr.losses import dream_loss

    model = _meta_unet(config).train()
    c_x = config.in_channels - config.out_channels
    y0 = torch.empty(batch, config.out_channels, patch, patch, device="meta")
    x0 = torch.empty(batch, c_x, patch, patch, device="meta")
    gamma = torch.empty(batch, device="meta")
    eps = torch.empty_like(y0)
    schedule = Schedule(DiffusionConfig())
    with FlopCounterMode(display=False) as counter:
        per = dream_loss(model, y0, x0, schedule, p, gamma=gamma, eps=eps)
        per.mean().backward()
    return int(counter.get_total_flops())


def device_peak_tflops(device: torch.device, precision: str) -> float | None:
    """Known dense peak of ``device`` at ``precision`` in TFLOP/s (measured, see PEAK_BF16_TFLOPS), or None."""
    device = torch.device(device)
    if device.type != "cuda" or precision != "bf16":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16_TFLOPS.items():
        if key in name:
            return peak
    return None


def supported_precisions(device: torch.device) -> list[str]:
    """Precisions the hardware of ``device`` computes natively, the ones timed unless others are asked for:
    fp32, plus bf16 on a CPU with native bf16 (:func:`dreamsr.runtime.cpu_native_bf16`; fp16 autocast is refused
    on the CPU), fp32/bf16/fp16 on CUDA (bf16 only where supported), fp32/fp16 on MPS."""
    device = torch.device(device)
    if device.type == "cuda":
        return ["fp32", "bf16", "fp16"] if torch.cuda.is_bf16_supported() else ["fp32", "fp16"]
    if device.type == "cpu":
        return ["fp32", "bf16"] if cpu_native_bf16() else ["fp32"]
    return ["fp32", "fp16"]


def skipped_precisions(device: torch.device) -> list[dict[str, str]]:
    """Precisions ``--precision all`` leaves out on ``device`` for want of hardware support, each
    ``{"precision", "reason"}`` (fp16 on the CPU is not listed: autocast refuses it there)."""
    device = torch.device(device)
    if device.type == "cpu" and not cpu_native_bf16():
        return [{"precision": "bf16", "reason": "this CPU has no native bf16 (neither avx512_bf16 nor amx_bf16 in "
                 "/proc/cpuinfo): bf16 would be emulated, several times slower than fp32; time it anyway with "
                 "--precision fp32,bf16"}]
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return [{"precision": "bf16", "reason": "this GPU does not support bf16"}]
    return []


def _fast_precision(device: torch.device, available: Sequence[str]) -> str | None:
    """The precision of our fast path: bf16 (CPU, and CUDA where supported), else fp16; None if not measured."""
    for p in ("bf16", "fp16"):
        if p in available:
            return p
    return None


# --- the model ---------------------------------------------------------------------------------------------

def match_preset(unet: UNetConfig) -> str | None:
    """Name of the preset with ``unet``'s architecture (dropout and embedding scale may differ), or None."""
    for name, cfg in PRESETS.items():
        if dataclasses.replace(cfg, dropout=unet.dropout, embed_scale=unet.embed_scale) == unet:
            return name
    return None


def load_model(*, model: str | None = None, weights: str | None = None, preset: str | None = None,
               scale: int = 4, seed: int = 0) -> tuple[UNet, CheckpointInfo, dict[str, Any]]:
    """The network to benchmark: a checkpoint file (``weights``), a registry name (``model``), or a
    randomly initialised ``preset`` (seeded by ``seed``, default diffusion config, native ``scale``).

    Returns ``(model, info, description)``; the description names the source and the parameter count.
    Raises ConfigError when more than one source (or none) is given, and whatever the weights resolver raises.
    """
    given = [n for n, v in (("model", model), ("weights", weights), ("preset", preset)) if v is not None]
    if len(given) != 1:
        raise ConfigError("give exactly one of --model, --weights or --preset"
                          + (f" (got {', '.join('--' + g for g in given)})" if given else ""))
    if preset is not None:
        from dreamsr.families.sr3.unet import preset as get_preset

        cfg = get_preset(preset)
        if scale < 1:
            raise ConfigError(f"scale must be >= 1, got {scale}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = UNet(cfg)
        info = CheckpointInfo(network=cfg, diffusion=DiffusionConfig(), scale=int(scale),
                              training={"steps": 0, "note": "random initialisation (benchmark)"})
        source = f"preset:{preset} (random init, seed {seed})"
    else:
        from dreamsr.checkpoint import load_checkpoint
        from dreamsr.jobs.weights import resolve_weights

        path = resolve_weights(weights=weights, model=model)
        net, info = load_checkpoint(path)
        if info.family != "sr3":
            # its training and FLOP sections build the SR3 UNet from presets; sampling speed, quality and FLOPs of
            # any family at its own sampling: scripts/compare_candidates.py
            raise ConfigError(f"{path}: the sr3 suite measures SR3 models; this is a {info.family} model (bench it "
                              "with the model suite: `dreamsr bench --weights PATH`)")
        source = f"weights:{path}" if weights is not None else f"model:{model} ({path})"
    desc = {"source": source, "preset": match_preset(info.network), "parameters": net.num_parameters(),
            "scale": info.scale, "target": info.diffusion.target, "family": info.family,
            "network": info.network.to_dict()}
    return net, info, desc


def bench_image(size: int, seed: int = 0) -> torch.Tensor:
    """A deterministic synthetic LR image [3, size, size] in [0, 1]: smooth colour fields plus fine texture
    (sampling cost does not depend on content; this keeps the input realistic in range and spectrum)."""
    gen = torch.Generator().manual_seed(int(seed))
    coarse = torch.rand(1, 3, max(2, size // 8), max(2, size // 8), generator=gen)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0]
    fine = torch.rand(3, size, size, generator=gen) - 0.5
    return (smooth + 0.15 * fine).clamp(0, 1)


# --- sampling ----------------------------------------------------------------------------------------------

def _padded_tile(info: CheckpointInfo, grid_tile_h: int, grid_tile_w: int) -> tuple[int, int]:
    """HR tile size the network actually sees (padded to the UNet's size multiple, as Upscaler._eps does)."""
    m = info.network.size_multiple
    return grid_tile_h + (-grid_tile_h) % m, grid_tile_w + (-grid_tile_w) % m


def bench_sampling(model: UNet, info: CheckpointInfo, device: torch.device, config: BenchConfig,
                   lr: torch.Tensor, *, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Time :meth:`Upscaler.upscale` of ``lr`` [3, h, w] in [0, 1] for every precision x batch of ``config``
    and, if ``config.naive``, the naive reference path. Each run gets its own copy of ``model`` (the Upscaler
    converts its model's memory format in place). Returns the "sampling" section."""
    from dreamsr.jobs.pipeline import Upscaler
    from dreamsr.tiling import make_grid

    h, w = int(lr.shape[-2]), int(lr.shape[-1])
    s = info.scale
    base = config.sampling()
    grid = make_grid(h, w, base.tile, base.overlap)
    hgrid = grid.scaled(s)
    tiles = len(grid)
    th, tw = _padded_tile(info, hgrid.tile_h, hgrid.tile_w)
    out_mp = h * s * w * s / 1e6
    available = supported_precisions(device)
    # "auto" as the upscaler resolves it; ConfigError for fp16 on the CPU and unknown names
    precisions = list(dict.fromkeys(resolve_precision(p, device) for p in config.precisions)) or available
    skipped = [] if config.precisions else skipped_precisions(device)
    emulated = [p for p in precisions if p not in available]  # asked for by name, not native here
    master = copy.deepcopy(model).to("cpu", torch.float32)
    specs = [("default", p, b, "step", True) for p in precisions for b in config.batches]
    if config.naive:
        specs.append(("naive", "fp32", 1, "end", False))
    reps = [config.naive_repeats if spec[0] == "naive" else config.repeats for spec in specs]

    def make(spec: tuple) -> tuple[Any, SamplingOptions]:
        _, precision, batch, merge, channels_last = spec
        up = Upscaler(copy.deepcopy(master), info, device=device, precision=precision, channels_last=channels_last)
        return up, up.options(base, batch=batch, merge=merge)  # checked against the chain before any timing

    def release() -> None:
        if device.type == "cuda":
            torch.cuda.empty_cache()

    # Warm-up: a one-step upscale of the same image on every path (kernel selection, allocator, caches).
    for spec in specs if config.warmup else []:
        if progress is not None:
            progress(f"sampling warm-up: {spec[0]} path, {spec[1]}, batch {spec[2]}")
        up, opts = make(spec)
        up.upscale(lr, opts.replace(steps=1))
        del up
        release()
    # Timed: rounds in which every path still due runs once (the naive path in the first ``naive_repeats``), so
    # a machine's changing load hits the paths alike.
    times: list[list[float]] = [[] for _ in specs]
    cpu_times: list[list[float]] = [[] for _ in specs]
    peaks: list[PeakMemory | None] = [None for _ in specs]
    for rnd in range(max(reps)):
        for i, spec in enumerate(specs):
            if rnd >= reps[i]:
                continue
            if progress is not None:
                progress(f"sampling: {spec[0]} path, {spec[1]}, batch {spec[2]}, merge {spec[3]} "
                         f"(repeat {rnd + 1}/{reps[i]})")
            up, opts = make(spec)
            with PeakMemory(device) as mem:
                t0, c0 = time.perf_counter(), time.process_time()
                up.upscale(lr, opts)
                _sync(device)
                times[i].append(time.perf_counter() - t0)
                cpu_times[i].append(time.process_time() - c0)
            if peaks[i] is None or mem.peak_bytes > peaks[i].peak_bytes:  # type: ignore[union-attr]
                peaks[i] = mem
            del up
            release()
    forwards = tiles * base.steps
    runs = []
    for spec, ts, cs, mem in zip(specs, times, cpu_times, peaks):
        path, precision, batch, merge, channels_last = spec
        t = summarize(ts)
        runs.append({"path": path, "precision": precision, "batch": batch, "merge": merge,
                     "channels_last": channels_last, "model_calls": base.steps * math.ceil(tiles / batch),
                     "tile_forwards": forwards, "time": t, "cpu_time": summarize(cs),
                     "tiles_per_s": forwards / t["median_s"],
                     "s_per_out_mp": t["median_s"] / out_mp, "memory": mem.as_dict() if mem else None})
    naive = runs[-1] if config.naive else None
    if naive is not None:
        for r in runs:
            r["speedup_vs_naive"] = naive["time"]["median_s"] / r["time"]["median_s"]
            r["speedup_vs_naive_cpu_time"] = naive["cpu_time"]["median_s"] / r["cpu_time"]["median_s"]
    fast = _fast_precision(device, [r["precision"] for r in runs if r["path"] == "default"])
    headline = None
    if naive is not None:
        cands = [r for r in runs if r["path"] == "default" and r["precision"] == (fast or "fp32")]
        if cands:
            best = min(cands, key=lambda r: r["time"]["median_s"])
            headline = {"precision": best["precision"], "batch": best["batch"],
                        "speedup_vs_naive": best["speedup_vs_naive"],
                        "speedup_vs_naive_cpu_time": best["speedup_vs_naive_cpu_time"]}
    return {"lr_size": [h, w], "out_size": [h * s, w * s], "out_megapixels": out_mp, "scale": s,
            "steps": base.steps, "sampler": base.sampler, "tile": base.tile, "overlap": base.overlap,
            "settings": base.to_dict(),
            "tiles": tiles, "tile_hr": [th, tw], "precisions_supported": available, "runs": runs,
            "headline": headline, "skipped": skipped, "emulated": emulated}


# --- training ----------------------------------------------------------------------------------------------

def _write_train_images(folder: Path, count: int, size: int, seed: int) -> None:
    """``count`` synthetic RGB PNGs of ``size``² pixels (training cost does not depend on content)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        img = bench_image(size, seed=seed * 1000 + i)
        arr = img.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        Image.fromarray(arr).save(folder / f"bench_{i:03d}.png")


def _train_config(info: CheckpointInfo, preset_name: str, device: torch.device, config: BenchConfig, p: float,
                  data_dir: Path, run_dir: Path):
    from dreamsr.jobs.train import TrainConfig

    d = info.diffusion
    return TrainConfig(
        dataset="folder", data_dir=str(data_dir), scale=info.scale, patch=config.train_patch, augment=True,
        cache_mb=256, workers=0, family="sr3", preset=preset_name, dropout=info.network.dropout,
        embed_scale=info.network.embed_scale,
        target=d.target, residual_scale=d.residual_scale, num_steps=d.num_steps, beta_start=d.beta_start,
        beta_end=d.beta_end, p=p, steps=config.train_warmup + config.train_steps, batch_size=config.train_batch,
        lr=1e-4, lr_warmup=0, lr_schedule="constant", ema_decay=0.9999,
        seed=config.seed, device=str(device), precision=config.train_precision, run_dir=str(run_dir),
        save_every=0, keep=1, log_every=1, val_every=0, val_count=0)


def _check_training(info: CheckpointInfo, device: torch.device, config: BenchConfig) -> str:
    """ConfigError unless the training section can run (before any work); returns the preset name."""
    preset_name = match_preset(info.network)
    if preset_name is None:
        raise ConfigError("the training section needs a preset architecture (tiny, small, base, sr3-div2k, "
                          "sr3-face); this checkpoint's UNet is none of them: use --sections sampling,efficiency")
    patch = config.train_patch
    mult = math.lcm(info.scale, info.network.size_multiple)
    if patch % mult:
        raise ConfigError(f"train patch {patch} must be a multiple of the scale {info.scale} and of "
                          f"{info.network.size_multiple} (the UNet's size multiple); e.g. {mult * max(1, patch // mult)}")
    if resolve_precision(config.train_precision, device) == "fp16" and device.type != "cuda":
        raise ConfigError("fp16 training needs a CUDA device; use --train-precision bf16 or fp32")
    return preset_name


def bench_training(info: CheckpointInfo, device: torch.device, config: BenchConfig, *,
                   progress: ProgressFn | None = None) -> dict[str, Any]:
    """Time training steps of :func:`dreamsr.jobs.train.train` with p = inf (standard) and p = 1 (DREAM).

    A temporary folder of synthetic images is the data set; validation is off, the checkpoint and export that
    the loop writes after its last step fall outside the timed steps. Returns the "training" section."""
    from dreamsr.jobs.train import train

    preset_name = _check_training(info, device, config)
    patch = config.train_patch
    objectives = [("standard", math.inf), ("dream", 1.0)]
    steps: dict[str, list[float]] = {k: [] for k, _ in objectives}
    walls: dict[str, list[float]] = {k: [] for k, _ in objectives}
    datas: dict[str, list[float]] = {k: [] for k, _ in objectives}
    losses: dict[str, list[float]] = {k: [] for k, _ in objectives}
    cpus: dict[str, list[float]] = {k: [] for k, _ in objectives}
    mems: dict[str, list[PeakMemory]] = {k: [] for k, _ in objectives}
    resolved_precision = resolve_precision(config.train_precision, device)
    with tempfile.TemporaryDirectory(prefix="dreamsr-bench-") as tmp:
        data_dir = Path(tmp) / "images"
        _write_train_images(data_dir, count=max(4, min(config.train_batch, 16)), size=max(2 * patch, 96),
                            seed=config.seed)
        for rnd in range(config.train_rounds):
            for key, p in objectives:
                if progress is not None:
                    progress(f"training: {key} (p={p:g}), round {rnd + 1}/{config.train_rounds}")
                events: list[dict] = []

                clock = [0.0]

                def on_event(ev: Any, events: list[dict] = events, clock: list[float] = clock) -> None:
                    # CPU time of this process between consecutive events: one step (data included)
                    now = time.process_time()
                    if ev.kind == "step":
                        events.append(dict(ev.data, step=ev.step, cpu_time=now - clock[0]))
                    if ev.kind in ("start", "step"):
                        clock[0] = now

                cfg = _train_config(info, preset_name, device, config, p, data_dir, Path(tmp) / f"run_{key}_{rnd}")
                with PeakMemory(device) as mem:
                    train(cfg, on_event)
                mems[key].append(mem)
                timed = [e for e in events if e["step"] > config.train_warmup]
                steps[key] += [e["step_time"] - e["data_time"] for e in timed]
                walls[key] += [e["step_time"] for e in timed]
                datas[key] += [e["data_time"] for e in timed]
                losses[key] += [e["loss"] for e in timed]
                cpus[key] += [e["cpu_time"] for e in timed]
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    runs = []
    for key, p in objectives:
        st = summarize(steps[key])
        peak = max(mems[key], key=lambda m: m.peak_bytes)
        runs.append({"objective": key, "p": "inf" if math.isinf(p) else p, "step": st,
                     "wall_step": summarize(walls[key]), "data": summarize(datas[key]),
                     "cpu_step": summarize(cpus[key]),
                     "images_per_s": config.train_batch / st["median_s"],
                     "loss_finite": all(math.isfinite(x) for x in losses[key]), "memory": peak.as_dict()})
    ratio = runs[1]["step"]["median_s"] / runs[0]["step"]["median_s"]
    ratio_cpu = runs[1]["cpu_step"]["median_s"] / runs[0]["cpu_step"]["median_s"]
    why = None
    if config.train_precision == "auto" and device.type == "cpu":
        why = ("auto: bf16, this CPU computes it natively" if resolved_precision == "bf16" else
               "auto: fp32, this CPU has no native bf16 (neither avx512_bf16 nor amx_bf16)")
    return {"batch": config.train_batch, "patch": patch, "preset": preset_name, "precision": resolved_precision,
            "precision_reason": why,
            "warmup_steps": config.train_warmup, "steps_per_run": config.train_steps, "rounds": config.train_rounds,
            "timing": "step_time - data_time from dreamsr.jobs.train's step events (forward, backward, optimizer, EMA); "
                      "cpu_step: this process's CPU time between consecutive step events (data included)",
            "runs": runs, "dream_over_standard": ratio, "dream_over_standard_cpu_time": ratio_cpu}


def bench_loader(config: BenchConfig, scale: int, step_images_per_s: float | None) -> dict[str, Any]:
    """Images/s delivered by the training loader (:func:`dreamsr.data.loader_throughput`) on ``config.data_dir``,
    and how many times faster than the DREAM step consumes them (issue 5: at least 5x)."""
    from dreamsr.data import DataConfig, SRTrainDataset, loader_throughput

    dcfg = DataConfig(dataset=config.dataset, data_dir=config.data_dir, scale=scale, patch=config.train_patch,
                      seed=config.seed)
    ds = SRTrainDataset(dcfg, workers=config.loader_workers)
    t0 = time.perf_counter()
    cached = ds.preload()
    preload_s = time.perf_counter() - t0
    ips = loader_throughput(ds, config.train_batch, batches=config.loader_batches, workers=config.loader_workers)
    return {"data_dir": str(config.data_dir), "dataset": config.dataset, "images": len(ds), "cached": cached,
            "preload_s": preload_s, "workers": config.loader_workers, "batch": config.train_batch,
            "patch": config.train_patch, "images_per_s": ips,
            "over_dream_step": (ips / step_images_per_s) if step_images_per_s else None}


# --- efficiency and targets --------------------------------------------------------------------------------

def efficiency(info: CheckpointInfo, device: torch.device, config: BenchConfig, sampling: dict | None,
               training: dict | None) -> dict[str, Any]:
    """FLOPs per forward (one tile and one network call), per training step, achieved TFLOP/s and the fraction
    of the known peak for every measured run. Timed medians include everything the real path does around the
    network (tiling, blending, the sampler's arithmetic; data, optimizer and EMA for training)."""
    from dreamsr.tiling import make_grid

    s = info.scale
    if sampling is not None:
        th, tw = sampling["tile_hr"]
    else:
        g = make_grid(config.lr_size, config.lr_size, config.sampling().tile, config.sampling().overlap).scaled(s)
        th, tw = _padded_tile(info, g.tile_h, g.tile_w)
    per_tile = forward_flops(info.network, 1, th, tw)
    out: dict[str, Any] = {"tile_hr": [th, tw], "flops_per_tile_forward": per_tile,
                           "gflops_per_tile_forward": per_tile / 1e9, "sampling": [], "training": None}
    if sampling is not None:
        for r in sampling["runs"]:
            total = per_tile * r["tile_forwards"]
            tflops = total / r["time"]["median_s"] / 1e12
            peak = device_peak_tflops(device, r["precision"])
            out["sampling"].append({"path": r["path"], "precision": r["precision"], "batch": r["batch"],
                                    "flops_per_call": per_tile * r["batch"], "flops_total": total,
                                    "achieved_tflops": tflops, "peak_tflops": peak,
                                    "fraction_of_peak": None if peak is None else tflops / peak})
    if True:  # counting is free (meta device): always report the training step's FLOPs
        b, patch = config.train_batch, config.train_patch
        f_std = train_step_flops(info.network, b, patch, math.inf)
        f_dream = train_step_flops(info.network, b, patch, 1.0)
        tr: dict[str, Any] = {"batch": b, "patch": patch, "flops_per_step_standard": f_std,
                              "flops_per_step_dream": f_dream, "flops_ratio": f_dream / f_std, "runs": []}
        if training is not None:
            for r, f in zip(training["runs"], (f_std, f_dream)):
                tflops = f / r["step"]["median_s"] / 1e12
                peak = device_peak_tflops(device, training["precision"])
                tr["runs"].append({"objective": r["objective"], "achieved_tflops": tflops, "peak_tflops": peak,
                                   "fraction_of_peak": None if peak is None else tflops / peak})
        out["training"] = tr
    return out


def check_targets(device: torch.device, model_desc: dict, report: dict) -> list[dict[str, Any]]:
    """Issue 7's targets that this report measured: value, target and whether it is met."""
    out: list[dict[str, Any]] = []
    kind = device.type
    samp = report.get("sampling")
    if samp and samp.get("headline") and kind in TARGET_SPEEDUP:
        hl = samp["headline"]
        v = hl["speedup_vs_naive"]
        out.append({"name": "sampling speed-up over the naive path", "value": v, "op": ">=",
                    "target": TARGET_SPEEDUP[kind], "met": v >= TARGET_SPEEDUP[kind],
                    "value_cpu_time": hl.get("speedup_vs_naive_cpu_time"),
                    "detail": f"{hl['precision']} batch {hl['batch']} step-blend vs fp32 batch 1 merge-at-end"})
    tr = report.get("training")
    if tr:
        v = tr["dream_over_standard"]
        if kind == "cpu" and tr["precision"] != "fp32":
            out.append({"name": "DREAM / standard training step", "value": v, "op": "report", "target": None,
                        "met": None, "value_cpu_time": tr.get("dream_over_standard_cpu_time"),
                        "detail": f"{tr['precision']}: the {TARGET_DREAM_RATIO_CPU} target is for fp32 (a cheaper "
                                  "backward makes DREAM's extra forward weigh more)"})
        elif kind == "cpu":
            out.append({"name": "DREAM / standard training step", "value": v, "op": "<=",
                        "target": TARGET_DREAM_RATIO_CPU, "met": v <= TARGET_DREAM_RATIO_CPU,
                        "value_cpu_time": tr.get("dream_over_standard_cpu_time"),
                        "detail": f"batch {tr['batch']}, patch {tr['patch']}, {tr['precision']}"})
        else:
            out.append({"name": "DREAM / standard training step", "value": v, "op": "report", "target": None,
                        "met": None, "detail": "no target off the CPU; the paper reports 1.21-1.38 on GPUs"})
    eff = report.get("efficiency")
    if eff and model_desc.get("preset") == "sr3-div2k":
        fr = [e for e in eff["sampling"] if e["path"] == "default" and e["fraction_of_peak"] is not None]
        if fr:
            best = max(fr, key=lambda e: e["fraction_of_peak"])
            out.append({"name": "fraction of bf16 peak in the sampling loop", "value": best["fraction_of_peak"],
                        "op": ">=", "target": TARGET_PEAK_FRACTION, "met": best["fraction_of_peak"] >= TARGET_PEAK_FRACTION,
                        "detail": f"sr3-div2k, batch {best['batch']}, {best['achieved_tflops']:.0f} TFLOP/s"})
    return out


# --- everything ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _restore_rng() -> Iterator[None]:
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_initialized() else []):
        yield


def _run_sections(report: dict[str, Any], config: BenchConfig, net: UNet, info: CheckpointInfo,
                  device: torch.device, progress: ProgressFn | None) -> None:
    if "sampling" in config.sections:
        if config.image is not None:
            from dreamsr.images import load_image

            lr = load_image(config.image).rgb
        else:
            lr = bench_image(config.lr_size, config.seed)
        report["sampling"] = bench_sampling(net, info, device, config, lr, progress=progress)
    if "training" in config.sections:
        report["training"] = bench_training(info, device, config, progress=progress)
    if config.data_dir is not None:
        if progress is not None:
            progress("data loader throughput")
        dream = report["training"]["runs"][1]["images_per_s"] if report["training"] else None
        report["loader"] = bench_loader(config, info.scale, dream)
    if "efficiency" in config.sections:
        if progress is not None:
            progress("efficiency: counting FLOPs")
        report["efficiency"] = efficiency(info, device, config, report["sampling"], report["training"])


def run_bench(config: BenchConfig, *, model: str | None = None, weights: str | None = None,
              preset: str | None = None, scale: int = 4, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Run the sections of ``config`` on the model named by ``model`` | ``weights`` | ``preset`` (see
    :func:`load_model`) and return the whole report as a JSON-safe dict:

    ``schema``, ``date`` (UTC ISO 8601), ``machine`` (:func:`machine_info`), ``model``, ``config``,
    ``sampling`` / ``training`` / ``efficiency`` (None when not run), ``memory`` (peak per measurement),
    ``targets`` (:func:`check_targets`), ``seconds`` (wall time of the whole benchmark).
    """
    t_start = time.perf_counter()
    device = resolve_device(config.device)
    for p in config.precisions:
        resolve_precision(p, device)
    net, info, desc = load_model(model=model, weights=weights, preset=preset, scale=scale, seed=config.seed)
    if "training" in config.sections:
        _check_training(info, device, config)
    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        report: dict[str, Any] = {
            "schema": SCHEMA, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(device), "model": desc,
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()},
            "sampling": None, "training": None, "loader": None, "efficiency": None, "memory": {}, "targets": [],
        }
        with _restore_rng():
            _run_sections(report, config, net, info, device, progress)
        report["machine"]["load_avg_1m_end"] = _load_avg()
    finally:
        torch.set_num_threads(old_threads)
    mem: dict[str, Any] = {}
    if report["sampling"]:
        for r in report["sampling"]["runs"]:
            mem[f"sampling/{r['path']}/{r['precision']}/b{r['batch']}"] = (r["memory"] or {}).get("peak_mib")
    if report["training"]:
        for r in report["training"]["runs"]:
            mem[f"training/{r['objective']}"] = r["memory"]["peak_mib"]
    report["memory"] = {"kind": PeakMemory(device).kind, "unit": "MiB", "peak": mem}
    report["targets"] = check_targets(device, desc, report)
    report["seconds"] = time.perf_counter() - t_start
    return report
