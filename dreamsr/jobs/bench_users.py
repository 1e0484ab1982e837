"""`dreamsr bench` with no options (the "users" suite) and `dreamsr bench --model/--weights` (the "model" suite):
what users run, timed the way they run it.

The users suite, in this order (each item is one or more *measurements*; the report is written after each):

1. **Shared CPU** (:func:`run_upscale`): ``python -m dreamsr upscale IMAGE -o TMP --json -q`` as a fresh process
   each time, so :mod:`dreamsr.threads` chooses threads and OpenMP waiting from process start exactly as for a
   user, on the README example and on a synthetic 512x384 photo, on the cores as they are and with one core kept
   busy by a busy-loop process (:class:`BusyLoop`) that the suite starts before and stops after; then torch's own
   threading for reference (``GOMP_SPINCOUNT=300000``, libgomp's default, and ``--threads`` = every core) on the
   README example. The thread-related variables of the caller's environment are removed for these runs
   (:data:`THREAD_ENV`), so they measure dreamsr's defaults.
2. **Sampling** of the default model at its recommendation and at each named profile, in process
   (:meth:`Upscaler.upscale`), and of the other shipped models at their recommendation.
3. **Training step** of the default's family (:class:`~dreamsr.jobs.train.TrainConfig`'s recipe, small batch and
   crops): :func:`dreamsr.jobs.train.train` with p = inf and p = 1 in alternating runs.
4. **FLOPs** per output pixel of every sampling measured, counted on the meta device (:func:`tile_call_flops`).

The model suite does 2-4 for one checkpoint of any family (training needs its network to be one of its family's
presets). A KeyboardInterrupt stops a suite: the report so far is written (``interrupted: true``) and
:class:`BenchInterrupted` (a KeyboardInterrupt) carries it. Library code: never prints.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import torch

from dreamsr.checkpoint import CheckpointInfo
from dreamsr.errors import ConfigError, SamplingError
from dreamsr.files import atomic_write_json
from dreamsr.threads import available_cores, cores_busy_elsewhere, cpu_sample

__all__ = ["SCHEMA", "SECTIONS", "MODEL_SECTIONS", "SuiteConfig", "BenchInterrupted", "BusyLoop", "THREAD_ENV", "LIBGOMP_SPIN_COUNT",
           "README_EXAMPLE", "measure_busy_elsewhere", "run_upscale", "photo_image", "tile_call_flops",
           "time_sampling", "train_fields_for", "run_suite", "ProgressFn"]

SCHEMA = "dreamsr.jobs.bench_users/1"
# the README's example input (80x64)
README_EXAMPLE = Path(__file__).resolve().parent.parent / "assets" / "examples" / "chelsea_lr.png"
# environment variables that choose threads or OpenMP waiting: removed for the shared-CPU runs (dreamsr decides)
THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
# libgomp's own spin count (its default when nothing is set): torch's threading without dreamsr.threads
LIBGOMP_SPIN_COUNT = 300_000

ProgressFn = Callable[[str], None]  # a one-line description of what starts now, with an estimate of the time left
Section = Literal["shared", "sampling", "others", "training", "flops"]
SECTIONS: tuple[str, ...] = ("shared", "sampling", "others", "training", "flops")  # of the users suite
MODEL_SECTIONS: tuple[str, ...] = ("sampling", "training", "flops")  # of the model suite


class BenchInterrupted(KeyboardInterrupt):
    """A suite stopped by Ctrl-C; ``report`` holds what was measured (also written to the JSON path, if any)."""

    def __init__(self, report: dict[str, Any]) -> None:
        super().__init__("benchmark interrupted")
        self.report = report


@dataclass
class SuiteConfig:
    """What a suite measures. Sizes are (height, width) in pixels; a model is a registry name or a file path."""

    suite: Literal["users", "model"] = "users"
    model: str | None = None  # the model benched (users: None = the registry's default; model: required)
    others: tuple[str, ...] | None = None  # users: other models (None: the other shipped models of its scale)
    sections: tuple[str, ...] = ()  # users: any of SECTIONS; model: sampling, training, flops; (): all of them
    device: str = "auto"  # device of the in-process measurements (the shared-CPU runs use upscale's default)
    # --- shared CPU (users) ---
    readme_image: str = str(README_EXAMPLE)  # the README example
    photo_size: tuple[int, int] = (384, 512)  # the synthetic photo (h, w)
    readme_repeats: int = 2  # runs per case on the README example (median)
    photo_repeats: int = 1  # runs per case on the photo
    busy: bool = True  # also with one core kept busy by a busy loop
    torch_reference: bool = True  # also torch's own threading on the README example
    # --- sampling ---
    lr_size: tuple[int, int] = (96, 128)  # synthetic LR image of the benched model (h, w)
    other_lr_size: tuple[int, int] = (48, 48)  # synthetic LR image of the other models
    image: str | None = None  # an image file instead of the synthetic LR image of the benched model
    sampling_repeats: int = 2  # timed upscales per setting (after one warm-up network call)
    # --- training ---
    train_batch: int = 8
    train_patch: int = 64  # HR crop side (the recipe's 128 would take four times as long)
    train_steps: int = 6  # timed steps per run
    train_warmup: int = 2  # steps dropped at the start of each run
    train_rounds: int = 2  # runs per objective, p = inf and p = 1 alternating
    train_precision: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        allowed = SECTIONS if self.suite == "users" else MODEL_SECTIONS
        if not self.sections:
            self.sections = allowed
        bad = [s for s in self.sections if s not in allowed]
        checks = [
            (self.suite in ("users", "model"), f"suite must be users or model, got {self.suite!r}"),
            (not bad and bool(self.sections), f"sections: choose from {', '.join(allowed)}"
                                              + (f" (unknown: {', '.join(bad)})" if bad else "")),
            (self.suite == "users" or self.model is not None, "the model suite needs a model"),
            (min(self.readme_repeats, self.photo_repeats, self.sampling_repeats) >= 1, "repeats must be >= 1"),
            (min(*self.photo_size, *self.lr_size, *self.other_lr_size) >= 4, "image sides must be >= 4 px"),
            (min(self.train_batch, self.train_patch, self.train_steps, self.train_rounds) >= 1
             and self.train_warmup >= 0, "training sizes must be >= 1 (warm-up >= 0)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)


# --- the shared CPU --------------------------------------------------------------------------------------------

class BusyLoop:
    """Context manager: a separate process (``python -c "while True: pass"``) that keeps one core busy while the
    block runs; killed on exit, whatever ends the block (an exception, Ctrl-C)."""

    def __init__(self, settle: float = 0.2) -> None:
        self.settle = settle
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "BusyLoop":
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(self.settle)  # the interpreter starts before the loop spins
        return self

    def stop(self) -> None:
        """Kill the loop (idempotent)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def measure_busy_elsewhere(seconds: float = 0.5) -> float | None:
    """Cores other programs keep busy over ``seconds`` (:func:`dreamsr.threads.cores_busy_elsewhere`); None
    where /proc is not there."""
    before = cpu_sample()
    time.sleep(seconds)
    after = cpu_sample()
    if before is None or after is None:
        return None
    return round(cores_busy_elsewhere(before, after), 2)


def _model_args(model: str | None) -> list[str]:
    if model is None:
        return []
    return ["--weights", model] if _is_file(model) else ["--model", model]


def _is_file(model: str) -> bool:
    return model.endswith(".safetensors") or Path(model).is_file()


def run_upscale(image: str | os.PathLike, *, model: str | None = None, threads: int | None = None,
                env: dict[str, str] | None = None, timeout: float = 900.0) -> dict[str, Any]:
    """Run ``python -m dreamsr upscale IMAGE -o TMP --json -q`` (plus ``--weights``/``--model`` for ``model``,
    ``--threads`` for ``threads``) as a fresh process in the caller's environment without :data:`THREAD_ENV`,
    plus ``env``. Returns ``wall_s`` (the whole process, seconds), ``sampling_s`` (the image's seconds from its
    --json), ``threads`` (its thread plan) and ``settings``. SamplingError when it fails."""
    child_env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    child_env.update(env or {})
    with tempfile.TemporaryDirectory(prefix="dreamsr-bench-out-") as out:
        cmd = [sys.executable, "-m", "dreamsr", "upscale", str(image), "-o", out, "--json", "-q",
               *_model_args(model), *([] if threads is None else ["--threads", str(threads)])]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise SamplingError(f"the timed `dreamsr upscale` run failed (exit {proc.returncode}): {last}")
    data = json.loads(proc.stdout)
    return {"wall_s": round(wall, 3), "sampling_s": data["images"][0]["seconds"], "threads": data["threads"],
            "settings": data["settings"]}


def photo_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A deterministic photo-like image [3, height, width] in [0, 1] (smooth colour fields plus fine texture;
    sampling cost does not depend on content)."""
    gen = torch.Generator().manual_seed(int(seed))
    coarse = torch.rand(1, 3, max(2, height // 8), max(2, width // 8), generator=gen)
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0]
    fine = torch.rand(3, height, width, generator=gen) - 0.5
    return (smooth + 0.15 * fine).clamp(0, 1)


def _shared_summary(runs: list[dict]) -> list[dict]:
    """Per (image, threading): the medians on idle and busy cores and busy / idle."""
    out = []
    keys = list(dict.fromkeys((r["image"], r["threading"]) for r in runs))
    for image, threading in keys:
        row: dict[str, Any] = {"image": image, "threading": threading}
        for load in ("idle", "busy"):
            rs = [r for r in runs if (r["image"], r["threading"], r["load"]) == (image, threading, load)]
            row[load] = None if not rs else {
                "wall_s": statistics.median(r["wall_s"] for r in rs),
                "sampling_s": statistics.median(r["sampling_s"] for r in rs), "n": len(rs),
                "threads": sorted({r["threads"]["threads"] for r in rs})}
        both = row["idle"] and row["busy"]
        row["busy_over_idle_wall"] = row["busy"]["wall_s"] / row["idle"]["wall_s"] if both else None
        row["busy_over_idle_sampling"] = (row["busy"]["sampling_s"] / row["idle"]["sampling_s"]
                                          if both and row["idle"]["sampling_s"] else None)
        out.append(row)
    return out


# --- sampling and FLOPs ----------------------------------------------------------------------------------------

def _padded(size: int, multiple: int) -> int:
    return size + (-size) % multiple


def tile_call_flops(up: Any, plan: Any) -> int:
    """FLOPs of the network on one tile of ``plan`` (a :class:`~dreamsr.jobs.pipeline.Plan` of ``up``, an
    :class:`~dreamsr.jobs.pipeline.Upscaler`), with the inputs shaped as the pipeline feeds them (the signal tile
    and the condition tile, padded to the network's size multiple as ``Upscaler._predict`` pads them). Counted by
    ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (2 FLOPs per multiply-add of convolutions,
    linear layers and matmuls; nothing is computed). A network call on ``n`` tiles costs ``n`` times this."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = up.process.anchor(torch.zeros(1, 3, 8 * up.family.factor(up.info.network), 8))
    c_sig = int(probe.shape[1])
    (th, tw), (ch, cw) = plan.signal_tile, plan.cond_tile
    m = up.size_multiple
    ph, pw = (-th) % m, (-tw) % m
    with torch.device("meta"):
        net = up.info.build_network().eval()
    y_t = torch.empty(1, c_sig, th + ph, tw + pw, device="meta")
    cond = torch.empty(1, 3, ch + ph * ch // th, cw + pw * cw // tw, device="meta")
    level = torch.full((1,), 0.5, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(y_t, cond, level)
    return int(counter.get_total_flops())


def time_sampling(up: Any, lr: torch.Tensor, options: Any, repeats: int) -> dict[str, Any]:
    """Time ``up.upscale(lr, options)`` ``repeats`` times after one warm-up network call
    (:meth:`Upscaler.time_call`); seconds (median/min/max/all), seconds per output megapixel, network calls
    (counted by the progress callback), the plan and the FLOPs of the network calls per output pixel."""
    h, w = int(lr.shape[-2]), int(lr.shape[-1])
    plan = up.plan(h, w, options)
    up.time_call(plan)
    times: list[float] = []
    calls = 0
    out_hw: tuple[int, int] = (h * up.scale, w * up.scale)
    for _ in range(repeats):
        seen = [0]

        def count(done: int, total: int, seen: list[int] = seen) -> None:
            seen[0] = max(seen[0], done)

        t0 = time.perf_counter()
        sr = up.upscale(lr, options, callback=count)
        times.append(time.perf_counter() - t0)
        calls = seen[0]
        out_hw = (int(sr.shape[-2]), int(sr.shape[-1]))
    per_tile = tile_call_flops(up, plan)
    total = per_tile * plan.tiles * plan.steps * plan.ensemble
    out_mp = out_hw[0] * out_hw[1] / 1e6
    med = statistics.median(times)
    return {"lr_size": [h, w], "out_size": list(out_hw), "settings": options.to_dict(),
            "seconds": {"median_s": med, "min_s": min(times), "max_s": max(times), "n": len(times),
                        "all_s": times},
            "s_per_out_mp": med / out_mp, "calls": calls, "planned_calls": plan.calls, "tiles": plan.tiles,
            "precision": up.precision,
            "flops": {"per_tile_call": per_tile, "per_image": total,
                      "per_out_pixel": total / (out_hw[0] * out_hw[1]),
                      "counted": "network calls only (FlopCounterMode on the meta device); back-projection, "
                                 "blending and the first stage's decoding are not counted"}}


# --- training --------------------------------------------------------------------------------------------------

def train_fields_for(info: CheckpointInfo) -> dict[str, Any]:
    """The :class:`~dreamsr.jobs.train.TrainConfig` fields that train ``info``'s network and process: its family,
    the preset with its architecture (and the rule/dropout overrides it carries), its process and schedule.
    ConfigError when its network is none of its family's presets."""
    from dreamsr.families import get_family
    from dreamsr.jobs.train import TrainConfig

    net = info.network
    overrides = {k: getattr(net, k) for k in ("dropout", "embed_scale", "max_scale", "resize_rule")
                 if hasattr(net, k)}
    if dataclasses.is_dataclass(getattr(net, "unet", None)) and hasattr(net.unet, "mask_rule"):
        overrides["mask_rule"] = net.unet.mask_rule
    base: dict[str, Any] = {"family": info.family, "process": info.process, "scale": info.scale}
    if info.process == "shift":
        from dreamsr.processes.shift import ShiftConfig

        shifts = [k for k, c in (("v1", ShiftConfig.v1()), ("v3", ShiftConfig.v3())) if c == info.diffusion]
        if not shifts:
            raise ConfigError("the training section trains ResShift's v1 or v3 schedule; this checkpoint's shift "
                              "schedule is neither: leave training out (--sections sampling,flops)")
        base["shift"] = shifts[0]
    else:
        d = info.diffusion
        base.update(num_steps=d.num_steps, beta_start=d.beta_start, beta_end=d.beta_end, target=d.target,
                    residual_scale=d.residual_scale)
    for name in get_family(info.family).presets:
        try:
            fields = {**base, "preset": name, **overrides}
            if TrainConfig(**fields).network_config() == net:
                return fields
        except ConfigError:
            continue
    raise ConfigError(f"the training section needs one of the {info.family} family's preset architectures; this "
                      "checkpoint's network is none of them: leave training out (--sections sampling,flops)")


def _write_train_images(folder: Path, count: int, size: int, seed: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        img = photo_image(size, size, seed=seed * 1000 + i)
        arr = img.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        Image.fromarray(arr).save(folder / f"bench_{i:03d}.png")


def _train_run(fields: dict[str, Any], p: float, config: SuiteConfig, data_dir: Path, run_dir: Path) -> dict:
    """One training run of ``train_warmup + train_steps`` steps; the timed steps' step and CPU times."""
    from dreamsr.jobs.train import TrainConfig, train

    cfg = TrainConfig(**{**fields, "dataset": "folder", "data_dir": str(data_dir), "patch": config.train_patch,
                         "batch_size": config.train_batch, "steps": config.train_warmup + config.train_steps,
                         "p": p, "device": config.device, "precision": config.train_precision,
                         "run_dir": str(run_dir), "save_every": 0, "keep": 1, "log_every": 1, "val_every": 0,
                         "val_count": 0, "workers": 0, "cache_mb": 256, "seed": config.seed})
    events: list[dict] = []
    clock = [0.0]

    def on_event(ev: Any) -> None:
        now = time.process_time()
        if ev.kind == "step":
            events.append(dict(ev.data, step=ev.step, cpu_time=now - clock[0]))
        if ev.kind in ("start", "step"):
            clock[0] = now

    train(cfg, on_event)
    timed = [e for e in events if e["step"] > config.train_warmup]
    return {"step_s": [e["step_time"] - e["data_time"] for e in timed], "cpu_s": [e["cpu_time"] for e in timed],
            "loss_finite": all(math.isfinite(e["loss"]) for e in timed), "preset": cfg.preset,
            "family": cfg.family, "process": cfg.process_name(), "precision": cfg.precision}


def _training_summary(fields: dict, config: SuiteConfig, runs: dict[str, list[dict]]) -> dict[str, Any]:
    out: dict[str, Any] = {"family": fields.get("family"), "preset": fields.get("preset"),
                           "batch": config.train_batch, "patch": config.train_patch,
                           "warmup_steps": config.train_warmup, "steps_per_run": config.train_steps,
                           "rounds": config.train_rounds,
                           "timing": "step_time - data_time of dreamsr.jobs.train's step events (forward, backward, "
                                     "optimizer, EMA); warm-up steps dropped", "objectives": {}}
    for key, rs in runs.items():
        if not rs:
            continue
        steps = [s for r in rs for s in r["step_s"]]
        cpus = [s for r in rs for s in r["cpu_s"]]
        out["objectives"][key] = {"p": "inf" if key == "standard" else 1.0, "step_median_s": statistics.median(steps),
                                  "step_min_s": min(steps), "step_max_s": max(steps), "n": len(steps),
                                  "cpu_median_s": statistics.median(cpus),
                                  "images_per_s": config.train_batch / statistics.median(steps),
                                  "loss_finite": all(r["loss_finite"] for r in rs)}
        out["family"], out["preset"], out["process"] = rs[0]["family"], rs[0]["preset"], rs[0]["process"]
    o = out["objectives"]
    both = "standard" in o and "dream" in o
    out["dream_over_standard"] = o["dream"]["step_median_s"] / o["standard"]["step_median_s"] if both else None
    out["dream_over_standard_cpu_time"] = (o["dream"]["cpu_median_s"] / o["standard"]["cpu_median_s"]
                                           if both else None)
    return out


# --- the suite -------------------------------------------------------------------------------------------------

@dataclass
class _Measurement:
    name: str
    estimate_s: float  # a prior for the time-left estimate (two cores), scaled by how the measured ones went
    run: Callable[[], None]


@dataclass
class _Suite:
    config: SuiteConfig
    report: dict[str, Any]
    json_path: Path | None
    progress: ProgressFn | None
    steps: list[_Measurement] = field(default_factory=list)

    def add(self, name: str, estimate_s: float, run: Callable[[], None]) -> None:
        self.steps.append(_Measurement(name, estimate_s, run))

    def write(self) -> None:
        if self.json_path is not None:
            self.json_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.json_path, self.report)

    def execute(self, t_start: float) -> None:
        done_est = done_real = 0.0
        n = len(self.steps)
        try:
            for i, st in enumerate(self.steps):
                if self.progress is not None:
                    left = sum(s.estimate_s for s in self.steps[i:]) * (done_real / done_est if done_est else 1.0)
                    self.progress(f"[{i + 1}/{n}] {st.name} (about {_duration(left)} left)")
                t0 = time.perf_counter()
                st.run()
                done_real += time.perf_counter() - t0
                done_est += st.estimate_s
                self.report["measured"].append(st.name)
                self.report["seconds"] = time.perf_counter() - t_start
                self.write()
        except KeyboardInterrupt:
            self.report["interrupted"] = True
            self.report["seconds"] = time.perf_counter() - t_start
            self.write()
            raise BenchInterrupted(self.report) from None


def _duration(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def _resolve(model: str) -> str:
    from dreamsr.jobs.weights import resolve_weights

    return str(resolve_weights(weights=model) if _is_file(model) else resolve_weights(model=model))


def _other_models(default: str, scale: int) -> tuple[str, ...]:
    from dreamsr.jobs.weights import registry_entries

    return tuple(n for n, e in registry_entries().items()
                 if n != default and e.scale == scale and e.path is not None and e.path.is_file())


def _describe(model: str, path: str, info: CheckpointInfo, net: torch.nn.Module) -> dict[str, Any]:
    return {"name": model, "path": path, "family": info.family, "process": info.process, "scale": info.scale,
            "parameters": sum(p.numel() for p in net.parameters()), "sampling": info.sampling,
            "profiles": sorted(info.profiles)}


def _machine(device: torch.device) -> dict[str, Any]:
    from dreamsr.jobs.bench import machine_info

    return machine_info(device)


def run_suite(config: SuiteConfig, *, json_path: str | os.PathLike | None = None,
              progress: ProgressFn | None = None, thread_plan: dict | None = None,
              command: str | None = None) -> dict[str, Any]:
    """Run the users or model suite of ``config`` and return the report (JSON-safe): ``schema``, ``suite``,
    ``date``, ``command`` (as given), ``machine``, ``threads`` (this process's plan, as given), ``config``, ``models``,
    ``shared_cpu`` / ``sampling`` / ``training`` / ``flops`` (None or empty when not run), ``measured`` (the
    measurements done, in order), ``interrupted``, ``seconds``. The report is written to ``json_path`` after
    every measurement (atomically). Raises :class:`BenchInterrupted` on Ctrl-C, DreamSRError for bad input."""
    from dreamsr.checkpoint import load_checkpoint
    from dreamsr.jobs.pipeline import Upscaler
    from dreamsr.jobs.weights import default_model_for
    from dreamsr.runtime import resolve_device

    t_start = time.perf_counter()
    device = resolve_device(config.device)
    name = config.model if config.model is not None else default_model_for(None)
    path = _resolve(name)
    net, info = load_checkpoint(path)
    report: dict[str, Any] = {
        "schema": SCHEMA, "suite": config.suite,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command, "machine": _machine(device), "threads": thread_plan,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()},
        "models": [_describe(name, path, info, net)], "shared_cpu": None, "sampling": [], "training": None,
        "flops": [], "measured": [], "interrupted": False, "seconds": 0.0}
    suite = _Suite(config, report, None if json_path is None else Path(json_path), progress)
    sections = config.sections
    users = config.suite == "users"
    upscalers: dict[str, Any] = {}

    def upscaler(path_: str) -> Any:
        if path_ not in upscalers:
            n_, i_ = (net, info) if path_ == path else load_checkpoint(path_)
            upscalers[path_] = Upscaler(n_, i_, device=device, precision="auto")
        return upscalers[path_]

    with tempfile.TemporaryDirectory(prefix="dreamsr-bench-") as tmp:
        tmpdir = Path(tmp)
        if users and "shared" in sections:
            _plan_shared(suite, tmpdir, None if config.model is None else config.model)
        if "sampling" in sections:
            _plan_sampling(suite, name, path, info, upscaler, config.image, config.lr_size)
        if users and "others" in sections:
            others = config.others if config.others is not None else _other_models(name, info.scale)
            for other in others:
                o_path = _resolve(other)
                o_net, o_info = load_checkpoint(o_path)
                report["models"].append(_describe(other, o_path, o_info, o_net))
                del o_net
                _plan_sampling(suite, other, o_path, o_info, upscaler, None, config.other_lr_size, profiles=False)
        if "training" in sections:
            fields: dict[str, Any] = {"scale": info.scale} if users else train_fields_for(info)
            if users:  # the default TrainConfig recipe (the default model's), at the default model's scale
                from dreamsr.jobs.train import TrainConfig

                recipe = TrainConfig()
                fields.update(family=recipe.family, preset=recipe.preset)
            _plan_training(suite, fields, tmpdir)
        suite.report["machine"]["load_avg_1m_start"] = suite.report["machine"].get("load_avg_1m")
        suite.execute(t_start)
    if "flops" not in sections:
        report["flops"] = []
    report["machine"]["load_avg_1m_end"] = _load_avg()
    report["seconds"] = time.perf_counter() - t_start
    suite.write()
    return report


def _load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _plan_shared(suite: _Suite, tmp: Path, model: str | None) -> None:
    """The shared-CPU measurements: README example and photo, idle and busy, then torch's own threading."""
    from PIL import Image

    config = suite.config
    photo = tmp / "photo_512x384.png"
    h, w = config.photo_size
    arr = photo_image(h, w, config.seed).mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    Image.fromarray(arr).save(photo)
    readme = Path(config.readme_image)
    with Image.open(readme) as im:
        rw, rh = im.size
    cores = available_cores()
    shared: dict[str, Any] = {
        "command": "python -m dreamsr upscale IMAGE -o TMP --json -q" + (f" {' '.join(_model_args(model))}"
                                                                         if model else ""),
        "env_removed": [k for k in THREAD_ENV if k in os.environ], "cores": cores,
        "images": {"readme": {"path": str(readme), "size": [rh, rw]},
                   "photo": {"path": "synthetic (photo_image, seed %d)" % config.seed, "size": [h, w]}},
        "busy_elsewhere_before": None, "busy_elsewhere_with_loop": None, "runs": [], "summary": []}
    suite.report["shared_cpu"] = shared
    loads = ["idle", "busy"] if config.busy else ["idle"]
    torch_env = {"GOMP_SPINCOUNT": str(LIBGOMP_SPIN_COUNT)}

    def measure(image: str, src: Path, threading: str, load: str, repeat: int) -> Callable[[], None]:
        def run() -> None:
            if shared["busy_elsewhere_before"] is None:
                shared["busy_elsewhere_before"] = measure_busy_elsewhere(0.5)
            kwargs: dict[str, Any] = {"model": model}
            if threading == "torch":
                kwargs.update(threads=cores, env=torch_env)
            if load == "busy":
                with BusyLoop():
                    if shared["busy_elsewhere_with_loop"] is None:
                        shared["busy_elsewhere_with_loop"] = measure_busy_elsewhere(0.5)
                    r = run_upscale(src, **kwargs)
            else:
                r = run_upscale(src, **kwargs)
            shared["runs"].append({"image": image, "threading": threading, "load": load, "repeat": repeat, **r})
            shared["summary"] = _shared_summary(shared["runs"])
        return run

    size = {"readme": f"{rw}x{rh}", "photo": f"{w}x{h}"}
    cases: list[tuple[str, Path, str, int, float]] = [("readme", readme, "auto", config.readme_repeats, 6.0),
                                                      ("photo", photo, "auto", config.photo_repeats, 20.0)]
    if config.torch_reference:
        cases.append(("readme", readme, "torch", config.readme_repeats, 8.0))
    for image, src, threading, repeats, est in cases:
        label = "dreamsr's threads" if threading == "auto" else \
            f"torch's threads ({cores}, GOMP_SPINCOUNT={LIBGOMP_SPIN_COUNT})"
        for rep in range(repeats):
            for load in loads:
                cost = est * (3.0 if load == "busy" and threading == "torch" else 1.3 if load == "busy" else 1.0)
                suite.add(f"shared CPU: {image} {size[image]}, {label}, "
                          f"{'one core busy' if load == 'busy' else 'cores as they are'}"
                          + (f", repeat {rep + 1}/{repeats}" if repeats > 1 else ""),
                          cost, measure(image, src, threading, load, rep + 1))


def _plan_sampling(suite: _Suite, name: str, path: str, info: CheckpointInfo, upscaler: Callable[[str], Any],
                   image: str | None, lr_size: tuple[int, int], *, profiles: bool = True) -> None:
    """Sampling of one model at its recommendation and (``profiles``) each named profile, with its FLOPs."""
    config = suite.config
    if image is not None:
        from dreamsr.images import load_image

        lr = load_image(image).rgb
    else:
        lr = photo_image(*lr_size, seed=config.seed)
    names: list[str | None] = [None] + (list(info.profiles) if profiles else [])
    for prof in names:
        label = "recommended" if prof is None else f"profile {prof}"

        def run(prof: str | None = prof, label: str = label) -> None:
            up = upscaler(path)
            opts = up.options(profile=prof)
            done = [e for e in suite.report["sampling"] if e["model"] == name and e["settings"] == opts.to_dict()]
            if done:  # a profile equal to the recommendation (or another profile): measured once
                done[0]["also"] = [*done[0].get("also", []), label]
                return
            r = time_sampling(up, lr, opts, config.sampling_repeats)
            flops = r.pop("flops")
            suite.report["sampling"].append({"model": name, "family": info.family, "profile": label, **r})
            if "flops" in config.sections:
                suite.report["flops"].append({"model": name, "profile": label, "settings": r["settings"],
                                              "out_size": r["out_size"], **flops})

        est = 6.0 if info.process == "shift" else 25.0
        suite.add(f"sampling: {name} at {label}, {lr.shape[-1]}x{lr.shape[-2]} LR", est, run)


def _plan_training(suite: _Suite, fields: dict[str, Any], tmp: Path) -> None:
    config = suite.config
    data_dir = tmp / "train-images"
    objectives = [("standard", math.inf), ("dream", 1.0)]
    runs: dict[str, list[dict]] = {k: [] for k, _ in objectives}
    for rnd in range(config.train_rounds):
        for key, p in objectives:
            def run(key: str = key, p: float = p, rnd: int = rnd) -> None:
                if not data_dir.exists():
                    _write_train_images(data_dir, count=max(4, min(config.train_batch, 16)),
                                        size=max(2 * config.train_patch, 96), seed=config.seed)
                runs[key].append(_train_run(fields, p, config, data_dir, tmp / f"run_{key}_{rnd}"))
                suite.report["training"] = _training_summary(fields, config, runs)

            suite.add(f"training: {fields.get('family')} {fields.get('preset')}, {key} (p={p:g}), batch "
                      f"{config.train_batch}, {config.train_patch} px, round {rnd + 1}/{config.train_rounds}",
                      8.0, run)


def iter_sections(report: dict[str, Any]) -> Iterator[str]:
    """The sections a report holds, in order (for printing)."""
    for key in ("shared_cpu", "sampling", "training", "flops"):
        if report.get(key):
            yield key
