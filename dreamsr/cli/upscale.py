"""`dreamsr upscale INPUT... [-o OUT]`: super-resolve image files and folders.

All the work is in :class:`dreamsr.jobs.pipeline.Upscaler`; this module collects the inputs, plans the output
names, shows progress and picks the exit code: 0 all images written, 1 any image (or the model) failed,
2 bad usage. Each bad input is one red line on stderr and the other files are still processed.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Literal, NoReturn, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn
from rich.text import Text

from dreamsr.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, console, error_line, is_tty, option_message, out
from dreamsr.errors import ConfigError, DreamSRError, ModelNotFoundError
from dreamsr.options import SamplingOptions as S
from dreamsr.threads import ThreadGovernor

__all__ = ["upscale", "plan_output", "collect_inputs"]

_error = error_line


def _usage(message: str) -> NoReturn:
    _error(message)
    raise typer.Exit(EXIT_USAGE)


@dataclass
class Job:
    """One image to process: ``src`` and where it goes; ``error`` set when it failed (or was refused)."""

    src: Path
    dst: Path | None = None
    status: Literal["pending", "ok", "failed"] = "pending"
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    in_size: tuple[int, int] | None = None
    out_size: tuple[int, int] | None = None
    seconds: float | None = None


def collect_inputs(paths: list[Path], recursive: bool, errors: list[str]) -> list[tuple[Path, Path]]:
    """Expand files and folders into (image file, path relative to where it was found) pairs.

    A missing path or a folder without images adds one message to ``errors``. Hidden files are skipped in
    folders; explicitly named files are taken whatever their extension (decoding decides).
    """
    from dreamsr.images import READ_EXTENSIONS

    found: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for p in paths:
        if not p.exists():
            errors.append(f"{p}: no such file or folder")
            continue
        if p.is_dir():
            pattern = p.rglob("*") if recursive else p.glob("*")
            files = sorted(f for f in pattern if f.is_file() and f.suffix.lower() in READ_EXTENSIONS
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not files:
                hint = "" if recursive else " (use --recursive to look in sub-folders)"
                errors.append(f"{p}: no images found (looked for {', '.join(READ_EXTENSIONS)}){hint}")
                continue
            for f in files:
                if f.resolve() not in seen:
                    seen.add(f.resolve())
                    found.append((f, f.relative_to(p)))
        else:
            if p.resolve() not in seen:
                seen.add(p.resolve())
                found.append((p, Path(p.name)))
    return found


def _scale_label(scale: float) -> str:
    return str(int(scale)) if float(scale).is_integer() else f"{scale:g}"


def plan_output(src: Path, rel: Path, output: Path | None, single_file_target: bool, suffix: str,
                ext: str | None) -> Path:
    """Output path of ``src``: ``output`` itself when it names one file, else ``output/rel-parent/`` (or
    beside the input) with ``stem + suffix + ext`` (``ext`` default: the input's, GIF -> PNG)."""
    from dreamsr.images import WRITE_FORMATS

    if output is not None and single_file_target:
        return output
    if ext is None:
        ext = src.suffix.lower() if src.suffix.lower() in WRITE_FORMATS else ".png"
    name = f"{src.stem}{suffix}{ext}"
    folder = src.parent if output is None else output / rel.parent
    return folder / name


def _normalise_ext(ext: str | None) -> str | None:
    from dreamsr.images import WRITE_FORMATS

    if ext is None:
        return None
    e = ext.lower() if ext.startswith(".") else f".{ext.lower()}"
    if e not in WRITE_FORMATS:
        _usage(f"--ext {ext}: cannot write that format; use one of "
               f"{', '.join(sorted(x.lstrip('.') for x in WRITE_FORMATS))}")
    return e


def _resolve_model(model: str | None, weights: Path | None, scale: float | None) -> Path:
    """--weights > --model > the registry's default for the scale; a helpful error when there is none."""
    from dreamsr.jobs import weights as wmod

    if weights is None and model is None:
        try:  # the scale's own default, else the x4 default with a final resize to the asked scale
            model = wmod.default_model_for(scale)
        except ModelNotFoundError as err:
            _usage(str(err))
        except DreamSRError as err:
            _error(str(err))
            raise typer.Exit(EXIT_FAILED) from None
    try:
        return wmod.resolve_weights(weights=None if weights is None else str(weights), model=model)
    except ModelNotFoundError as err:
        _error(str(err))
        raise typer.Exit(EXIT_FAILED if weights is not None or model is not None else EXIT_USAGE) from None
    except DreamSRError as err:
        _error(str(err))
        raise typer.Exit(EXIT_USAGE if isinstance(err, ConfigError) else EXIT_FAILED) from None


def upscale(
    inputs: List[Path] = typer.Argument(..., help="Image files and/or folders.", show_default=False),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output folder (created if missing), or "
                                          "an output file when there is a single input. Default: beside each input."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Also look for images in sub-folders "
                                   "(the tree is mirrored under -o)."),
    scale: Optional[float] = typer.Option(None, "--scale", "-s", help="Output factor. Default: the model's native "
                                          "factor; any other is reached by a final bicubic resize.",
                                          show_default=False),
    profile: Optional[str] = typer.Option(None, "--profile", help="A named sampling profile of the model "
                                          "(`dreamsr weights info MODEL` lists them; the default model has "
                                          "fidelity, its default, and detail); options given override its "
                                          "fields.", show_default=False),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampling steps (respaced over the trained schedule). "
                                        f"Default: the model's recommendation, else {S.steps}.", show_default=False),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="ddim (deterministic at eta 0) or ddpm "
                                          f"(ancestral). Default: {S.sampler}.", show_default=False),
    eta: Optional[float] = typer.Option(None, "--eta", help="Noise of each step: 0 for DDIM and 1 for DDPM unless "
                                        "given.", show_default=False),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of every random draw: same seed, same image. "
                                       f"Default: {S.seed}.", show_default=False),
    tile: Optional[int] = typer.Option(None, "--tile", help="Tile side in LR pixels (paper: 40); 0 = whole image "
                                       f"at once. Default: {S.tile}.", show_default=False),
    overlap: Optional[int] = typer.Option(None, "--overlap", help="Tile overlap in LR pixels (paper: 5); tile >= 2 "
                                          f"x overlap. Default: {S.overlap}.", show_default=False),
    batch: Optional[int] = typer.Option(None, "--batch", help="Tiles per network call (speed only: the image is "
                                        f"the same). Default: {S.batch}.", show_default=False),
    merge: Optional[str] = typer.Option(None, "--merge", help="step: blend tiles at every step (no seams); end: "
                                        "sample tiles independently, blend at the end (the paper's protocol). "
                                        f"Default: {S.merge}.", show_default=False),
    start: Optional[int] = typer.Option(None, "--start", help="Truncated start: begin at this trained step from "
                                        "the noised bicubic image instead of pure noise (e.g. 500); 0: the full "
                                        "chain. Default: the model's recommendation, else the full chain.",
                                        show_default=False),
    back_project: Optional[bool] = typer.Option(None, "--back-project/--no-back-project", help="After every step, "
                                                "correct the estimate so its bicubic downsample matches the input. "
                                                "Default: the model's recommendation, else off.",
                                                show_default=False),
    ensemble: Optional[int] = typer.Option(None, "--ensemble", help="Self-ensemble: average 1, 2, 4 or 8 "
                                           "flipped/rotated upscales (that many times the work). Default: the "
                                           "model's recommendation, else 1.", show_default=False),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    precision: Literal["auto", "fp32", "bf16", "fp16"] = typer.Option("auto", "--precision", help="auto = bf16 (else "
                                                                     "fp16) on CUDA; on a CPU, bf16 where it computes "
                                                                     "bf16 natively (avx512_bf16 or amx_bf16), else "
                                                                     "fp32."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Registry name (`dreamsr weights list`) or "
                                        "hf://org/repo/file.safetensors.", show_default=False),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="A dreamsr .safetensors checkpoint.",
                                           show_default=False),
    suffix: str = typer.Option("_x{scale}", "--suffix", help="Appended to output names; {scale} is the factor."),
    ext: Optional[str] = typer.Option(None, "--ext", help="Output format: png, jpg, webp, bmp, tif. Default: the "
                                      "input's (GIF -> png).", show_default=False),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (never the inputs)."),
    max_pixels: int = typer.Option(50_000_000, "--max-pixels", help="Refuse inputs with more pixels "
                                   "(decompression-bomb guard)."),
    threads: int = typer.Option(0, "--threads", min=0, help="CPU threads for PyTorch. 0: the cores other programs "
                                "leave free, followed during the job (docs/benchmarks.md, \"Shared CPU\"); "
                                "OMP_NUM_THREADS in the environment is respected.", show_default=False),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors on stderr."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Super-resolve images with a DREAM-trained diffusion model (seamless tiled sampling).

    Outputs are written atomically; an existing output is never replaced without --overwrite, an input never.
    Exit code 0 when every image was written, 1 when any failed, 2 for bad usage.

    Examples:

      dreamsr upscale photo.png -w model.safetensors        # -> photo_x4.png

      dreamsr upscale photos/ -r -o out/ --steps 100         # a tree, mirrored

      dreamsr upscale a.jpg b.png -o big/ --scale 2          # x4 model, saved x2

      dreamsr upscale photo.png --merge end                  # paper's protocol

      dreamsr upscale photo.png --start 500 --back-project   # faster, LR-true

      dreamsr upscale photos/ --json --quiet > summary.json
    """
    from dreamsr.threads import setup as setup_threads

    try:  # first: OpenMP reads the waiting behaviour when torch loads (the option checks below may load it)
        thread_plan = setup_threads(threads or None)
    except ConfigError as err:
        _usage(str(err))
    # ---- usage checks: before touching any file or loading the model --------------------------------------
    if scale is not None and not (scale > 0 and math.isfinite(scale)):
        _usage(f"--scale must be a positive number, got {scale:g}")
    given = dict(steps=steps, sampler=sampler, eta=eta, seed=seed, tile=tile, overlap=overlap, batch=batch,
                 merge=merge, start=start, back_project=back_project, ensemble=ensemble)
    if start is not None and start < 0:
        _usage(f"--start must be >= 0 (0: the full chain), got {start}")
    try:  # every option's range, before touching any file (the model's recommendation comes later)
        S.check_given(**given)
    except ConfigError as err:
        _usage(option_message(str(err), {k: "--" + k.replace("_", "-") for k in given}))
    if max_pixels < 1:
        _usage(f"--max-pixels must be positive, got {max_pixels}")
    if model is not None and weights is not None:
        _usage("give either --model or --weights, not both")
    ext_n = _normalise_ext(ext)
    try:
        suffix.format(scale="x")  # validates the template before any work
    except (KeyError, IndexError, ValueError):
        _usage(f"--suffix {suffix!r}: the only placeholder allowed is {{scale}}")

    # ---- inputs ------------------------------------------------------------------------------------------
    errors: list[str] = []
    found = collect_inputs(inputs, recursive, errors)
    for msg in errors:
        _error(msg)
    from dreamsr.images import WRITE_FORMATS

    # -o names the output file itself only for one input file and an image extension; otherwise a folder
    single_target = (output is not None and len(found) == 1 and len(inputs) == 1 and not inputs[0].is_dir()
                     and output.suffix.lower() in WRITE_FORMATS and not output.is_dir())

    jobs: list[Job] = []
    t_start = time.perf_counter()
    up = None
    if found:
        path = _resolve_model(model, weights, scale)
        from dreamsr.checkpoint import read_info

        try:  # the header alone names the outputs, so existing ones are reported before the model is built
            info = read_info(path)
        except DreamSRError as err:
            _error(str(err))
            raise typer.Exit(EXIT_FAILED) from None
        out_scale = float(scale) if scale is not None else float(info.scale)
        label = _scale_label(out_scale)
        suffix_s = suffix.format(scale=label)
        planned: dict[Path, Path] = {}
        for src, rel in found:
            job = Job(src=src, dst=plan_output(src, rel, output, single_target, suffix_s, ext_n))
            key = job.dst.resolve() if job.dst.parent.exists() else job.dst.absolute()
            if key in planned:
                job.status, job.error = "failed", f"{src}: would write the same output as {planned[key]} ({job.dst})"
            elif job.dst.exists() and os.path.samefile(job.dst, path):  # an input too: never written over
                job.status, job.error = "failed", (f"{job.dst}: is the model's weights file; the output never "
                                                   "replaces an input (choose another -o, --suffix or --ext)")
            elif job.dst.exists() and os.path.samefile(job.dst, src):
                job.status, job.error = "failed", (f"{job.dst}: the output would replace the input; choose another "
                                                   "-o, --suffix or --ext")
            elif job.dst.exists() and not overwrite:
                job.status, job.error = "failed", f"{job.dst}: exists (use --overwrite to replace it)"
            else:
                planned[key] = src
            jobs.append(job)
    for j in jobs:  # refused outputs are reported before the model is loaded
        if j.status == "failed" and j.error:
            _error(j.error)
    if any(j.status == "pending" for j in jobs):
        from dreamsr.jobs.pipeline import Upscaler

        try:
            up = Upscaler.from_checkpoint(path, device=device, precision=precision)
            chain = up.process.chain
            if steps is not None and steps > chain and not start:
                # a short-chain process (ResShift: 15 or 4 trained steps) cannot take more steps than it has:
                # sample the whole chain and say so, rather than fail or silently change the meaning
                given["steps"] = chain
                if not quiet:
                    console.print(Text.assemble(("note:", "yellow"), f" this model's {up.info.process} chain has "
                                                f"{chain} trained steps; --steps {steps} samples all {chain}"),
                                  soft_wrap=True)
            opts = up.options(profile=profile, **given)  # under the model's measured recommendation
            lo, hi = up.scales
            if scale is not None and lo < hi:  # a continuous-scale model samples at --scale itself
                up.family.check_scale(up.info.network, up.scale, float(scale))
        except ConfigError as err:
            _usage(str(err))
        except DreamSRError as err:
            _error(str(err))
            raise typer.Exit(EXIT_FAILED) from None
        if not quiet:
            lo, hi = up.scales
            how = ("" if out_scale == up.scale else f", sampled at x{label}" if lo < hi
                   else f", resized to x{label} by bicubic")
            console.print(Text(f"model {path.name}: {up.info.family} x{up.scale} ({up.describe_process()}){how}; "
                               f"{opts.describe()}; {up.device} {up.precision}, {thread_plan.describe()}"),
                          soft_wrap=True)
        model_scale = out_scale if up.scales[0] < up.scales[1] else float(up.scale)
        plan = _plan(up, jobs, opts, model_scale)
        if not quiet and plan["calls"]:
            _print_plan(up, jobs, opts, model_scale, plan, given)
        try:
            _run_jobs(up, jobs, out_scale=out_scale, overwrite=overwrite, max_pixels=max_pixels, quiet=quiet,
                      options=opts, governor=ThreadGovernor(thread_plan))
        except KeyboardInterrupt:  # the image being written leaves no temporary file behind
            done = sum(j.status == "ok" for j in jobs)
            _error(f"interrupted; {done} image(s) written")
            raise typer.Exit(130) from None

    # ---- summary -----------------------------------------------------------------------------------------
    n_ok = sum(j.status == "ok" for j in jobs)
    n_failed = sum(j.status == "failed" for j in jobs) + len(errors)
    if as_json:
        summary: dict[str, Any] = {
            "ok": n_failed == 0,
            "succeeded": n_ok,
            "failed": n_failed,
            "seconds": round(time.perf_counter() - t_start, 3),
            "errors": errors + [j.error for j in jobs if j.error],
            "images": [{"input": str(j.src), "output": None if j.dst is None else str(j.dst), "status": j.status,
                        "error": j.error, "warnings": j.warnings,
                        "input_size": None if j.in_size is None else [j.in_size[1], j.in_size[0]],
                        "output_size": None if j.out_size is None else [j.out_size[1], j.out_size[0]],
                        "seconds": None if j.seconds is None else round(j.seconds, 3)} for j in jobs],
        }
        if up is not None:
            summary.update({
                "plan": plan,
                "native_scale": up.scale, "scale": float(scale) if scale is not None else float(up.scale),
                "device": str(up.device), "precision": up.precision,
                "family": up.info.family, "process": up.info.process, "settings": opts.to_dict(),
                "threads": thread_plan.to_dict(),
            })
        out.print_json(json.dumps(summary))
    if n_failed:
        _error(f"{n_failed} of {n_ok + n_failed} input(s) failed; {n_ok} written")
        raise typer.Exit(EXIT_FAILED)
    if not quiet:
        console.print(Text(f"done: {n_ok} image(s) written in {time.perf_counter() - t_start:.1f} s"))
    raise typer.Exit(EXIT_OK)


# an estimate is timed (one warm-up and one timed network call) only for jobs of at least this many calls
TIMED_ESTIMATE_CALLS = 30
# past this estimate the plan suggests cheaper settings
LONG_JOB_SECONDS = 600


def _image_size(path: Path) -> tuple[int, int] | None:
    """(H, W) from the file header without decoding it; None when unreadable (the job reports that later)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
        return h, w
    except Exception:  # noqa: BLE001 - any unreadable file is reported by its job
        return None


def _plan(up: Any, jobs: list[Job], opts: S, model_scale: float) -> dict[str, Any]:
    """Network calls of every pending job and, for long jobs, an estimate from one timed call on this machine."""
    calls, tiles, batches, per_call = 0, 0, 0, None
    first = None
    for job in jobs:
        size = _image_size(job.src) if job.status == "pending" else None
        if size is None:
            continue
        try:
            p = up.plan(*size, opts, scale=model_scale)
        except DreamSRError:
            continue  # the job fails with the message when it runs
        first = first or p
        calls += p.calls
        tiles += p.tiles
        batches += math.ceil(p.tiles / p.batch)
    if first is not None and calls >= TIMED_ESTIMATE_CALLS:
        per_call = up.time_call(first)
    return {"images": sum(j.status == "pending" for j in jobs), "tiles": tiles, "batches": batches,
            "batch": opts.batch, "steps": opts.steps,
            "calls": calls, "seconds_per_call": None if per_call is None else round(per_call, 4),
            "estimate_seconds": None if per_call is None else round(per_call * calls, 1)}


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _print_plan(up: Any, jobs: list[Job], opts: S, model_scale: float, plan: dict[str, Any],
                given: dict[str, Any]) -> None:
    """The plan line and, past LONG_JOB_SECONDS, what would make it shorter."""
    est = plan["estimate_seconds"]
    console.print(Text(f"plan: {plan['images']} image(s), {plan['tiles']} tile(s) in {plan['batches']} "
                       f"batch(es) of up to {plan['batch']} x {opts.steps} step(s)"
                       + (f" x {opts.ensemble} ensemble members" if opts.ensemble > 1 else "")
                       + f" = {plan['calls']} network calls"
                       + ("" if est is None else f"; about {_duration(est)} on this machine "
                          f"({plan['seconds_per_call']:.2f} s per call)")), soft_wrap=True)
    if est is None or est <= LONG_JOB_SECONDS:
        return
    tips = []
    rec = up.options(**{k: v for k, v in given.items() if k not in ("steps", "start", "back_project", "ensemble")})
    if up.info.sampling and rec != opts:
        rec_calls = plan["calls"] * rec.steps * rec.ensemble // max(1, opts.steps * opts.ensemble)
        tips.append(f"the model's recommended sampling ({rec.describe()}) takes about "
                    f"{_duration(rec_calls * plan['seconds_per_call'])}")
    tips.append("fewer --steps shorten it in proportion")
    console.print(Text.assemble(("note:", "yellow"), f" this is a long job; {'; '.join(tips)}"), soft_wrap=True)


# without a terminal, a progress line every this fraction of an image's network calls (and at least this many s)
LOG_EVERY_FRACTION = 0.1
LOG_EVERY_SECONDS = 10.0


def _run_jobs(up: Any, jobs: list[Job], *, out_scale: float, overwrite: bool, max_pixels: int, quiet: bool,
              options: S, governor: ThreadGovernor) -> None:
    """Upscale every pending job, with a live progress bar on a terminal; otherwise (logs, CI) a line every
    10 % of an image's network calls (at most one per 10 s) with an estimate, and a line per image."""
    pending = [j for j in jobs if j.status == "pending"]
    show_bar = not quiet and is_tty()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("ETA"), TimeRemainingColumn(), TimeElapsedColumn(),
                        console=console, transient=True, disable=not show_bar)
    steps = options.steps
    with progress:
        images_task = progress.add_task("images", total=len(pending))
        steps_task = progress.add_task("steps", total=steps)
        for n, job in enumerate(pending, 1):
            progress.reset(steps_task, total=steps, description=f"steps  {job.src.name} ({n}/{len(pending)})")

            started, logged = time.perf_counter(), [0.0, 0.0]  # (fraction, seconds) of the last log line

            def on_progress(done: int, total: int, job: Job = job, n: int = n) -> None:
                governor.follow()  # other programs' load, measured between network calls
                progress.update(steps_task, completed=done * steps / total)
                if show_bar or quiet or done >= total:
                    return
                spent, frac = time.perf_counter() - started, done / total
                if frac - logged[0] >= LOG_EVERY_FRACTION and spent - logged[1] >= LOG_EVERY_SECONDS:
                    logged[:] = [frac, spent]
                    console.print(Text(f"{job.src.name} ({n}/{len(pending)}): {frac:.0%} of {total} network "
                                       f"calls, {_duration(spent)} so far, about {_duration(spent / frac - spent)} "
                                       "left"), soft_wrap=True)

            try:
                assert job.dst is not None
                job.dst.parent.mkdir(parents=True, exist_ok=True)
                res = up.upscale_file(job.src, job.dst, out_scale=out_scale, overwrite=overwrite,
                                      max_pixels=max_pixels, callback=on_progress, options=options)
            except DreamSRError as err:
                job.status, job.error = "failed", str(err)
                error_line(str(err), progress.console)
            except OSError as err:  # mkdir of the output folder
                job.status = "failed"
                job.error = f"{job.dst.parent}: cannot create the output folder ({err.strerror or err})"
                error_line(job.error, progress.console)
            else:
                job.status, job.warnings = "ok", res.warnings
                job.in_size, job.out_size, job.seconds = res.in_size, res.out_size, res.seconds
                if not quiet:
                    (ih, iw), (oh, ow) = res.in_size, res.out_size
                    progress.console.print(Text(f"{job.src} -> {job.dst}  {iw}x{ih} -> {ow}x{oh}  "
                                                f"{res.seconds:.1f} s"), soft_wrap=True)
                for w in [] if quiet else res.warnings:
                    progress.console.print(Text.assemble(("warning:", "yellow"), f" {job.src}: {w}"),
                                           soft_wrap=True)
            progress.advance(images_task)
    sys.stderr.flush()
