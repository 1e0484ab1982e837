"""`dreamsr bench`: sampling speed, DREAM training overhead, memory and efficiency of the real code paths.

All measuring is in :mod:`dreamsr.jobs.bench`; this module parses options, shows progress on stderr, prints rich
tables on stdout and writes the JSON report. Exit codes: 0 done, 1 a measurement failed, 2 bad usage.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from dreamsr.cli.common import EXIT_USAGE, console, exit_code_for, fail, is_tty, out
from dreamsr.errors import DreamSRError
from dreamsr.files import atomic_write_text
from dreamsr.options import SamplingOptions as S

_PRECISIONS = ("fp32", "bf16", "fp16")


def _split(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        fail(f"{what}: give at least one value", EXIT_USAGE)
    return items


def _parse_precisions(text: str) -> tuple[str, ...]:
    """'all' -> () (every precision the device supports); 'auto' stays for the library to resolve."""
    items = [t.lower() for t in _split(text, "--precision")]
    if items == ["all"]:
        return ()
    bad = [t for t in items if t not in (*_PRECISIONS, "auto")]
    if bad:
        fail(f"--precision: unknown {', '.join(bad)}; use all, auto, fp32, bf16 or fp16 (comma-separated)", EXIT_USAGE)
    return tuple(dict.fromkeys(items))


def _parse_batches(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(t) for t in _split(text, "--batch"))
    except ValueError:
        fail(f"--batch: expected integers (comma-separated), got {text!r}", EXIT_USAGE)
    if any(v < 1 for v in vals):
        fail(f"--batch: every value must be at least 1, got {text}", EXIT_USAGE)
    return tuple(dict.fromkeys(vals))


def _parse_sections(text: str) -> tuple[str, ...]:
    from dreamsr.jobs.bench import SECTIONS

    items = [t.lower() for t in _split(text, "--sections")]
    if items == ["all"]:
        return SECTIONS
    bad = [t for t in items if t not in SECTIONS]
    if bad:
        fail(f"--sections: unknown {', '.join(bad)}; choose from {', '.join(SECTIONS)} (comma-separated) or all",
             EXIT_USAGE)
    return tuple(dict.fromkeys(items))


def _s(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 0.01:
        return f"{x:.3f}"
    return f"{x:.2e}"


def _spread(t: dict) -> str:
    return f"{_s(t['min_s'])}–{_s(t['max_s'])}" if t["n"] > 1 else "-"


def _mem(m: dict | None) -> str:
    return "-" if not m else f"{m['peak_mib']:.0f}"


def _header(r: dict) -> Text:
    m, mod = r["machine"], r["model"]
    load = "" if m.get("load_avg_1m") is None else f", load {m['load_avg_1m']} → {m.get('load_avg_1m_end')}"
    lines = [
        ("dreamsr bench", "bold"), f"  {r['date']}\n",
        f"CPU: {m['cpu']} ({m['cpu_count']} logical, {m['threads']} torch threads{load}); flags: "
        f"{' '.join(m.get('cpu_flags') or []) or 'none of avx2/avx512f/avx512_bf16/amx_bf16'}; bf16 "
        f"{'native' if m.get('cpu_native_bf16') else 'not native'}\n",
        "GPU: " + (f"{m['gpu']} ({m['gpu_memory_gib']} GiB, CUDA {m['cuda']})" if m.get("gpu") else "none") + "\n",
        f"torch {m['torch']}, Python {m['python']}, device {m['device']}\n",
        f"model: {mod['source']}, {mod['parameters'] / 1e6:.2f} M parameters, x{mod['scale']}, {mod['target']} target",
    ]
    return Text.assemble(*lines)


def _sampling_table(sp: dict) -> Table:
    h, w = sp["lr_size"]
    oh, ow = sp["out_size"]
    title = (f"sampling: {w}x{h} -> {ow}x{oh} (x{sp['scale']}), {sp['steps']} {sp['sampler']} steps, "
             f"tile {sp['tile']}/{sp['overlap']} ({sp['tiles']} tiles of {sp['tile_hr'][1]}x{sp['tile_hr'][0]} HR)")
    t = Table(title=title, title_justify="left", caption="default: step-blend tiling, channels_last; naive: fp32, "
              "1 tile per call, tiles merged at the end, no channels_last", caption_justify="left")
    for col in ("run", "median s", "min–max s", "cpu s", "tiles/s", "s/out MP", "peak MiB", "vs naive",
                "(cpu)"):
        t.add_column(col, justify="left" if col == "run" else "right", no_wrap=col == "run")
    for r in sp["runs"]:
        sp_up, sp_cpu = r.get("speedup_vs_naive"), r.get("speedup_vs_naive_cpu_time")
        t.add_row(_run_label(r), _s(r["time"]["median_s"]), _spread(r["time"]), _s(r["cpu_time"]["median_s"]),
                  _s(r["tiles_per_s"]), _s(r["s_per_out_mp"]), _mem(r["memory"]),
                  "-" if sp_up is None else f"{sp_up:.2f}x", "-" if sp_cpu is None else f"{sp_cpu:.2f}x")
    for s in sp.get("skipped") or []:
        t.add_row(Text(f"default {s['precision']}", "dim"), Text("skipped", "yellow"), *["-"] * 7)
        t.caption += f"\nskipped {s['precision']}: {s['reason']}"
    for p in sp.get("emulated") or []:
        t.caption += f"\n{p}: asked for, not native on this hardware (emulated)"
    return t


def _run_label(r: dict) -> str:
    return f"{r['path']} {r['precision']} b{r['batch']}"


def _training_table(tr: dict) -> Table:
    title = (f"training ({tr['preset']}): batch {tr['batch']}, patch {tr['patch']}, {tr['precision']}; "
             f"{tr['steps_per_run']} timed steps x {tr['rounds']} round(s) after {tr['warmup_steps']} warm-up")
    t = Table(title=title, title_justify="left")
    for col, just in (("objective", "left"), ("p", "right"), ("step s", "right"), ("min–max s", "right"),
                      ("cpu s", "right"), ("images/s", "right"), ("data s", "right"), ("peak MiB", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in tr["runs"]:
        t.add_row(r["objective"], str(r["p"]), _s(r["step"]["median_s"]), _spread(r["step"]),
                  _s(r["cpu_step"]["median_s"]), _s(r["images_per_s"]), _s(r["data"]["median_s"]), _mem(r["memory"]))
    t.caption = (f"DREAM / standard step: {tr['dream_over_standard']:.3f} (wall), "
                 f"{tr['dream_over_standard_cpu_time']:.3f} (CPU time)"
                 + (f"\nprecision {tr['precision_reason']}" if tr.get("precision_reason") else ""))
    t.caption_justify = "left"
    return t


def _efficiency_table(ef: dict) -> Table:
    th, tw = ef["tile_hr"]
    t = Table(title=f"efficiency: {ef['gflops_per_tile_forward']:.2f} GFLOP per {tw}x{th} tile forward",
              title_justify="left")
    for col in ("measurement", "GFLOP/call", "TFLOP/s", "peak TFLOP/s", "of peak"):
        t.add_column(col, justify="left" if col == "measurement" else "right")
    for e in ef["sampling"]:
        t.add_row(f"sampling {_run_label(e)}", _s(e["flops_per_call"] / 1e9),
                  _s(e["achieved_tflops"]), _s(e["peak_tflops"]),
                  "-" if e["fraction_of_peak"] is None else f"{100 * e['fraction_of_peak']:.1f}%")
    tr = ef.get("training")
    if tr:
        flops = {"standard": tr["flops_per_step_standard"], "dream": tr["flops_per_step_dream"]}
        runs = {r["objective"]: r for r in tr["runs"]}
        for key, f in flops.items():
            r = runs.get(key)
            t.add_row(f"train {key} b{tr['batch']} {tr['patch']}px", _s(f / 1e9),
                      _s(r["achieved_tflops"]) if r else "-", _s(r["peak_tflops"]) if r else "-",
                      "-" if not r or r["fraction_of_peak"] is None else f"{100 * r['fraction_of_peak']:.1f}%")
    return t


def _targets_table(targets: list[dict]) -> Table:
    t = Table(title="targets", title_justify="left")
    for col in ("target", "value", "wanted", "met", "detail"):
        t.add_column(col)
    for g in targets:
        met = g["met"]
        mark = Text("-", "dim") if met is None else Text("yes", "green") if met else Text("NO", "red")
        wanted = "-" if g["target"] is None else f"{g['op']} {g['target']:g}"
        value = f"{g['value']:.3f}"
        if g.get("value_cpu_time") is not None:
            value += f" ({g['value_cpu_time']:.3f} CPU time)"
        t.add_row(g["name"], value, wanted, mark, g.get("detail", ""))
    return t


def print_report(r: dict) -> None:
    """The whole report as rich tables on stdout."""
    out.print(_header(r))
    if r.get("sampling"):
        out.print(_sampling_table(r["sampling"]))
    if r.get("training"):
        out.print(_training_table(r["training"]))
    if r.get("loader"):
        ld = r["loader"]
        over = "" if ld["over_dream_step"] is None else f", {ld['over_dream_step']:.1f}x the DREAM step's rate"
        out.print(Text(f"data loader: {ld['images_per_s']:.1f} images/s on {ld['data_dir']} ({ld['images']} images, "
                       f"{ld['workers']} workers, batch {ld['batch']}, patch {ld['patch']}){over}"))
    if r.get("efficiency"):
        out.print(_efficiency_table(r["efficiency"]))
    if r.get("targets"):
        out.print(_targets_table(r["targets"]))
    out.print(Text(f"{r['seconds']:.0f} s in all", "dim"))


def _suite_header(r: dict) -> Text:
    m, sh = r["machine"], r.get("shared_cpu") or {}
    th = r.get("threads") or {}
    before = sh.get("busy_elsewhere_before")
    load = "" if before is None else (f"; other programs used {before:.2f} core(s) before the runs"
                                      + (" (not idle)" if before >= 0.3 else ""))
    return Text.assemble(
        (f"dreamsr bench ({r['suite']} suite)", "bold"), f"  {r['date']}\n",
        f"CPU: {m['cpu']} ({m['cpu_count']} logical); flags: "
        f"{' '.join(m.get('cpu_flags') or []) or 'none of avx2/avx512f/avx512_bf16/amx_bf16'}; "
        f"load average {m.get('load_avg_1m')} -> {m.get('load_avg_1m_end')}{load}\n",
        f"this process: {th.get('threads', m['threads'])} torch thread(s) ({th.get('source', '?')}); torch "
        f"{m['torch']}, device {m['device']}")


def _shared_table(sh: dict) -> Table:
    t = Table(title=f"shared CPU: `{sh['command']}`, a fresh process per run ({sh['cores']} cores); busy = one "
                    "core kept busy by a busy loop", title_justify="left")
    for col in ("image", "threading", "idle: wall s", "sampling s", "threads", "busy: wall s", "sampling s",
                "threads", "busy/idle wall", "sampling"):
        t.add_column(col, justify="left" if col in ("image", "threading") else "right")
    for row in sh["summary"]:
        size = "x".join(str(v) for v in reversed(sh["images"][row["image"]]["size"]))
        cells: list[str] = [f"{row['image']} {size}", "dreamsr" if row["threading"] == "auto" else "torch"]
        for load in ("idle", "busy"):
            x = row[load]
            cells += ["-"] * 3 if x is None else [_s(x["wall_s"]), _s(x["sampling_s"]),
                                                  ",".join(str(n) for n in x["threads"])]
        cells += ["-" if row[k] is None else f"{row[k]:.2f}x" for k in ("busy_over_idle_wall",
                                                                         "busy_over_idle_sampling")]
        t.add_row(*cells)
    t.caption = ("dreamsr: upscale's own choice (dreamsr.threads); torch: GOMP_SPINCOUNT=300000 (libgomp's default) "
                 f"and --threads {sh['cores']}. Medians; sampling s from upscale --json. Other programs' load "
                 f"before: {sh.get('busy_elsewhere_before')} core(s), with the busy loop: "
                 f"{sh.get('busy_elsewhere_with_loop')}")
    t.caption_justify = "left"
    return t


def _suite_sampling_table(rows: list[dict], flops: list[dict]) -> Table:
    t = Table(title="sampling (in process, Upscaler.upscale)", title_justify="left")
    for col in ("model", "setting", "LR -> out", "steps/ens./bp", "median s", "s/out MP", "calls",
                "GFLOP/out MP"):
        t.add_column(col, justify="left" if col in ("model", "setting", "LR -> out") else "right")
    fl = {(f["model"], f["profile"]): f for f in flops}
    for r in rows:
        st = r["settings"]
        f = fl.get((r["model"], r["profile"]))
        setting = r["profile"] + "".join(f", = {a}" for a in r.get("also", []))
        t.add_row(Path(r["model"]).name, setting, f"{r['lr_size'][1]}x{r['lr_size'][0]} -> {r['out_size'][1]}x{r['out_size'][0]}",
                  f"{st['steps']}/{st['ensemble']}/{'yes' if st['back_project'] else 'no'}",
                  _s(r["seconds"]["median_s"]), _s(r["s_per_out_mp"]), str(r["calls"]),
                  "-" if f is None else _s(f["per_out_pixel"] / 1e3))
    return t


def _suite_training_table(tr: dict) -> Table:
    t = Table(title=f"training step: {tr['family']} {tr['preset']} ({tr.get('process', '')}), batch {tr['batch']}, "
                    f"{tr['patch']} px crops; {tr['steps_per_run']} timed steps x {tr['rounds']} round(s) after "
                    f"{tr['warmup_steps']} warm-up", title_justify="left")
    for col in ("objective", "p", "step s", "min–max s", "cpu s", "images/s"):
        t.add_column(col, justify="left" if col == "objective" else "right")
    for key, o in tr["objectives"].items():
        t.add_row(key, str(o["p"]), _s(o["step_median_s"]), f"{_s(o['step_min_s'])}–{_s(o['step_max_s'])}",
                  _s(o["cpu_median_s"]), _s(o["images_per_s"]))
    if tr.get("dream_over_standard") is not None:
        t.caption = (f"DREAM / standard step: {tr['dream_over_standard']:.3f} (wall), "
                     f"{tr['dream_over_standard_cpu_time']:.3f} (CPU time)")
        t.caption_justify = "left"
    return t


def print_suite(r: dict) -> None:
    """A users or model suite's report as rich tables on stdout (what was measured, if it was interrupted)."""
    out.print(_suite_header(r))
    if r.get("shared_cpu") and r["shared_cpu"]["summary"]:
        out.print(_shared_table(r["shared_cpu"]))
    if r.get("sampling"):
        out.print(_suite_sampling_table(r["sampling"], r.get("flops") or []))
    if r.get("training") and r["training"]["objectives"]:
        out.print(_suite_training_table(r["training"]))
    out.print(Text(f"{r['seconds']:.0f} s in all" + (" (interrupted)" if r.get("interrupted") else ""), "dim"))


def _write_json(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")


def bench(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Registry name or hf:// URL of the weights.",
                                        show_default=False),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="A dreamsr .safetensors checkpoint.",
                                           show_default=False),
    preset: Optional[str] = typer.Option(None, "--preset", help="Random-init SR3 UNet preset (tiny, small, base, "
                                         "sr3-div2k, sr3-face): runs the sr3 suite on it.", show_default=False),
    suite: Optional[str] = typer.Option(None, "--suite", help="users (what users run: the default with no "
                                        "--model/--weights/--preset), model (any family's checkpoint: the default "
                                        "with --model/--weights) or sr3 (sampling vs the naive path, precisions, "
                                        "memory and efficiency of an SR3 UNet: the default with --preset or "
                                        "--full; small preset when no model is named).", show_default=False),
    scale: int = typer.Option(4, "--scale", help="Native scale of a --preset model."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option("all", "--precision", help="Sampling precision(s): all (every one the hardware "
                                  "computes natively: on a CPU bf16 only with avx512_bf16/amx_bf16), auto, fp32, "
                                  "bf16, fp16, or a comma-separated list."),
    full: bool = typer.Option(False, "--full", help="The sizes of the published figures: --lr-size 128 --steps 50 "
                              "--repeats 3 --naive-repeats 3 (each can still be given). Without it the defaults "
                              "finish in about 5 minutes on two CPU cores."),
    lr_size: Optional[int] = typer.Option(None, "--lr-size", help="Side of the square synthetic LR input (px). "
                                          "\\[default: 64; --full: 128]", show_default=False),
    image: Optional[Path] = typer.Option(None, "--image", help="Upscale this image file instead of the synthetic "
                                         "one.", show_default=False),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampler steps. \\[default: 20; --full: 50]",
                                        show_default=False),
    sampler: Optional[str] = typer.Option(None, "--sampler", help=f"ddim or ddpm. \\[default: {S.sampler}]",
                                          show_default=False),
    tile: Optional[int] = typer.Option(None, "--tile", help=f"LR tile side (0: no tiling). \\[default: {S.tile}]",
                                       show_default=False),
    overlap: Optional[int] = typer.Option(None, "--overlap", help=f"LR tile overlap. \\[default: {S.overlap}]",
                                          show_default=False),
    batch: str = typer.Option("4", "--batch", help="Tiles per network call on the default path; a comma-separated "
                              "list times each."),
    repeats: Optional[int] = typer.Option(None, "--repeats", help="Timed repeats of each default-path sampling run "
                                          "(after a 1-step warm-up); the paths take turns each round. \\[default: 3]",
                                          show_default=False),
    naive_repeats: Optional[int] = typer.Option(None, "--naive-repeats", help="Timed repeats of the (slow) naive "
                                                "path. \\[default: 1; --full: 3]", show_default=False),
    warmup: bool = typer.Option(True, "--warmup/--no-warmup", help="A one-step upscale on every path before "
                                "timing (--no-warmup: for memory-only runs)."),
    naive: bool = typer.Option(True, "--naive/--no-naive", help="Also time the naive reference path (fp32, one "
                               "tile per call, merged at the end, no channels_last) for the speed-up."),
    sections: str = typer.Option("all", "--sections", help="Comma-separated, or all. users suite: shared, "
                                 "sampling, others, training, flops; model suite: sampling, training, flops; sr3 "
                                 "suite: sampling, training, efficiency (efficiency and flops are one section)."),
    train_batch: int = typer.Option(8, "--train-batch", help="Batch of the timed training steps."),
    train_patch: int = typer.Option(64, "--train-patch", help="HR crop side of the timed training steps."),
    train_steps: int = typer.Option(6, "--train-steps", help="Timed training steps per run."),
    train_warmup: int = typer.Option(2, "--train-warmup", help="Training steps dropped at the start of each run."),
    train_rounds: int = typer.Option(2, "--train-rounds", help="Runs per objective (p=inf and p=1 alternate)."),
    train_precision: str = typer.Option("auto", "--train-precision", help="As `dreamsr train --precision`."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Also measure data-loader throughput on this "
                                            "training folder.", show_default=False),
    dataset: str = typer.Option("folder", "--dataset", help="Layout of --data-dir (as `dreamsr train`)."),
    loader_workers: int = typer.Option(2, "--loader-workers", help="Loader processes for the throughput run."),
    threads: int = typer.Option(0, "--threads", min=0, help="torch CPU threads of the in-process measurements "
                                "(0: the cores other programs leave free, as every command chooses them; the "
                                "shared-CPU runs always use upscale's own choice)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the preset's weights, the image and the noise."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the whole report to this JSON file.",
                                             show_default=False),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No tables and no progress; errors only."),
) -> None:
    """Measure what users run. With no options, the users suite (about 5 minutes on two CPU cores): the default
    `dreamsr upscale` as fresh processes on the README example and a 512x384 photo, on the cores as they are and
    with one core kept busy by a process the bench starts and stops; the default model at its recommended
    sampling (and each named profile), the other shipped models, the training step of the default's family with
    DREAM and standard training, and FLOPs per output pixel. Progress lines carry an estimate of the time left;
    with --json the report is written after every measurement, and Ctrl-C prints what was measured (exit 130).

    Examples:

      dreamsr bench --json bench.json                       # the users suite (docs/benchmarks.md)

      dreamsr bench -w model.safetensors --json bench.json  # any family: sampling, training step, FLOPs

      dreamsr bench --suite sr3 --full --json bench.json    # SR3: 128 -> 512, 50 steps, vs the naive path

      dreamsr bench --preset sr3-div2k --device cuda --precision bf16 --lr-size 512 --steps 20 --batch 64

      dreamsr bench --suite sr3 --sections training --train-batch 8 --train-patch 64 --data-dir photos/
    """
    from dreamsr.threads import setup as setup_threads

    try:  # before torch is imported: its OpenMP threads read the waiting behaviour then
        thread_plan = setup_threads(threads or None)
    except DreamSRError as err:
        fail(str(err), exit_code_for(err))
    if sum(x is not None for x in (model, weights, preset)) > 1:
        fail("give only one of --model, --weights or --preset", EXIT_USAGE)
    precisions, batches = _parse_precisions(precision), _parse_batches(batch)  # usage errors whatever the suite
    if suite is None:
        suite = "sr3" if preset is not None or full else "model" if model or weights else "users"
    if suite not in ("users", "model", "sr3"):
        fail(f"--suite: unknown {suite!r}; use users, model or sr3", EXIT_USAGE)
    if suite != "sr3" and preset is not None:
        fail(f"--preset names a random-init SR3 UNet for the sr3 suite, not the {suite} suite", EXIT_USAGE)
    if suite == "users" and (model or weights):
        fail("the users suite benches the shipped models; bench a checkpoint with --suite model (the default "
             "with --model/--weights)", EXIT_USAGE)
    live = is_tty() and not quiet
    status = console.status("starting", spinner="dots") if live else None

    def progress(msg: str) -> None:
        if quiet:
            return
        if status is not None:
            status.update(msg)
        else:
            console.print(Text(f"... {msg}"), soft_wrap=True)

    command = "dreamsr " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else None
    if suite != "sr3":
        _run_suite(suite, model if model is not None else None if weights is None else str(weights), sections,
                   device, image, seed, train_batch, train_patch, train_steps, train_warmup, train_rounds,
                   train_precision, json_path, quiet, status, progress, command, thread_plan.to_dict())
        return
    from dreamsr.jobs.bench import FULL, BenchConfig, run_bench

    quick = {k: getattr(BenchConfig, k) for k in ("lr_size", "steps", "repeats", "naive_repeats")}
    if model is None and weights is None and preset is None:
        preset = "small"
    sizes = {**quick, **(FULL if full else {})}
    given = {"lr_size": lr_size, "steps": steps, "repeats": repeats, "naive_repeats": naive_repeats}
    sizes.update({k: v for k, v in given.items() if v is not None})
    try:
        config = BenchConfig(
            device=device, precisions=precisions, sections=_parse_sections(sections), seed=seed,
            threads=threads, image=None if image is None else str(image), sampler=sampler, tile=tile,
            overlap=overlap, batches=batches, warmup=warmup, naive=naive, **sizes,
            train_batch=train_batch, train_patch=train_patch, train_steps=train_steps, train_warmup=train_warmup,
            train_rounds=train_rounds, train_precision=train_precision,
            data_dir=None if data_dir is None else str(data_dir), dataset=dataset, loader_workers=loader_workers)
        if status is not None:
            status.start()
        try:
            report = run_bench(config, model=model, weights=None if weights is None else str(weights),
                               preset=preset, scale=scale, progress=progress)
        finally:
            if status is not None:
                status.stop()
    except DreamSRError as err:
        fail(str(err), exit_code_for(err))
    except KeyboardInterrupt:
        console.print(Text("interrupted: the sr3 suite keeps nothing it measured (the users and model suites do)",
                           "yellow"))
        raise typer.Exit(130) from None
    report["command"] = command
    if json_path is not None:
        _write_json(json_path, report)
    if not quiet:
        print_report(report)
        if json_path is not None:
            console.print(Text(f"report written to {json_path}"))
    raise typer.Exit(0)


def _suite_sections(text: str, suite: str) -> tuple[str, ...]:
    from dreamsr.jobs.bench_users import MODEL_SECTIONS, SECTIONS

    allowed = SECTIONS if suite == "users" else MODEL_SECTIONS
    items = ["flops" if t == "efficiency" else t for t in (t.lower() for t in _split(text, "--sections"))]
    if items == ["all"]:
        return allowed
    bad = [t for t in items if t not in allowed]
    if bad:
        fail(f"--sections: unknown {', '.join(bad)} for the {suite} suite; choose from {', '.join(allowed)} "
             "(comma-separated) or all", EXIT_USAGE)
    return tuple(dict.fromkeys(items))


def _run_suite(suite: str, model: Optional[str], sections: str, device: str, image: Optional[Path], seed: int,
               train_batch: int, train_patch: int, train_steps: int, train_warmup: int, train_rounds: int,
               train_precision: str, json_path: Optional[Path], quiet: bool, status, progress, command: Optional[str],
               thread_plan: dict) -> None:
    """The users or model suite: progress, the report after every measurement, the tables, exit 0/1/2/130."""
    from dreamsr.jobs.bench_users import BenchInterrupted, SuiteConfig, run_suite

    interrupted = False
    try:
        config = SuiteConfig(suite=suite, model=model, sections=_suite_sections(sections, suite),  # type: ignore
                             device=device, image=None if image is None else str(image), seed=seed,
                             train_batch=train_batch, train_patch=train_patch, train_steps=train_steps,
                             train_warmup=train_warmup, train_rounds=train_rounds, train_precision=train_precision)
        if status is not None:
            status.start()
        try:
            report = run_suite(config, json_path=json_path, progress=progress, thread_plan=thread_plan,
                               command=command)
        except BenchInterrupted as stop:
            report, interrupted = stop.report, True
        finally:
            if status is not None:
                status.stop()
    except DreamSRError as err:
        fail(str(err), exit_code_for(err))
    if not quiet or interrupted:
        print_suite(report)
    if interrupted:
        kept = f"; the report so far is in {json_path}" if json_path is not None else ""
        console.print(Text(f"interrupted after {len(report['measured'])} measurement(s){kept}", "yellow"))
        raise typer.Exit(130)
    if not quiet and json_path is not None:
        console.print(Text(f"report written to {json_path}"))
    raise typer.Exit(0)
