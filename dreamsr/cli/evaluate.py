"""`dreamsr eval`: paper-comparable metrics of any upscaler (bicubic included) on a named set, and `--compare`.

All the work is in :mod:`dreamsr.jobs.evaluate`; this module parses options, shows progress and prints tables.
Exit codes: 0 all files evaluated, 1 some files failed (the report is still written), 2 bad usage.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.table import Table
from rich.text import Text

from dreamsr.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, console, error_line, exit_code_for, is_tty, out
from dreamsr.errors import ConfigError, DreamSRError, ModelNotFoundError
from dreamsr.options import SamplingOptions as S
from dreamsr.threads import ThreadGovernor, setup as setup_threads

_SETS = "div2k-val, celebahq, set5, set14, bsd100, urban100, cat, lsun-bedroom, lsun-tower, folder, paired"



def _error(message: str, code: int) -> None:
    error_line(message)
    raise typer.Exit(code)


def _parse_metrics(text: str) -> tuple[str, ...]:
    from dreamsr.jobs.evaluate import METRICS

    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return METRICS
    bad = [n for n in names if n not in METRICS]
    if bad or not names:
        raise ConfigError(f"--metrics: unknown {', '.join(bad) or '(empty)'}; choose from {', '.join(METRICS)} "
                          "(comma-separated) or all")
    return tuple(dict.fromkeys(names))


def _fmt(v: Any, metric: str) -> str:
    from dreamsr.jobs.evaluate import format_metric

    return format_metric(v, metric)


def _label(entry: dict[str, Any]) -> str:
    from dreamsr.jobs.evaluate import metric_label

    return metric_label(entry)


def _summary_table(summary: dict[str, Any]) -> Table:

    model = summary["model"]
    title = f"{model.get('name')} on {summary['set']} ×{summary['scale']} — {summary['count']}/{summary['images']} images"
    t = Table(title=title, title_justify="left")
    t.add_column("metric")
    t.add_column("mean", justify="right")
    t.add_column("std", justify="right")
    t.add_column("count", justify="right")
    t.add_column("convention")
    for e in summary["metrics"]:
        if e.get("available") is False:
            t.add_row(_label(e), Text("unavailable", "yellow"), "", "", Text("see warning below", "yellow"))
            continue
        std = _fmt(e.get("std"), e["metric"])
        if std != "-" and e.get("std_over", "").startswith(tuple("0123456789")):
            std += " (seeds)"
        t.add_row(_label(e), _fmt(e["mean"], e["metric"]), std, str(e["count"]),
                  e.get("convention_short", ""))
    return t


def _compare(paths: List[Path]) -> int:
    from dreamsr.jobs.evaluate import compare

    table = compare([str(p) for p in paths])
    t = Table(title="dreamsr eval --compare", title_justify="left")
    t.add_column("metric")
    for r in table["runs"]:
        t.add_column(f"{r['label']}\n{r['set']} ×{r['scale']}, n={r['count']}", justify="right")
    for row in table["rows"]:
        cells = []
        for v in row["values"]:
            if v is None:
                cells.append("-")
                continue
            mean, std = v
            s = _fmt(mean, row["metric"])
            sd = _fmt(std, row["metric"])
            cells.append(s if sd == "-" else f"{s} ± {sd}")
        t.add_row(row["label"], *cells)
    out.print(t)
    for w in table["warnings"]:
        console.print(Text.assemble(("warning:", "yellow"), " ", w), soft_wrap=True)
    return EXIT_OK


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400 else \
        f"{seconds / 3600:.1f} h"


class _Bar:
    """A rich progress bar over (image, seed) runs, with the network calls of the current run."""

    def __init__(self, live: bool, governor: Any = None) -> None:
        self.live = live
        self.governor = governor  # dreamsr.threads.ThreadGovernor: follows other programs' load between calls
        self.progress: Any = None
        self.task: Any = None
        self.started = time.perf_counter()

    def __enter__(self) -> "_Bar":
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=console)
            self.progress.__enter__()
            self.task = self.progress.add_task("eval", total=None, info="listing files")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def __call__(self, ev: Any) -> None:
        if ev.stage == "start":  # the run header, one line however narrow the terminal
            (self.progress.console if self.progress is not None else console).print(ev.item, markup=False,
                                                                                    highlight=False, soft_wrap=True)
            return
        if self.governor is not None:
            self.governor.follow()
        if self.progress is not None:
            info = ev.item if not ev.calls_total else f"{ev.item} ({ev.calls}/{ev.calls_total} calls)"
            if ev.stage == "fid":
                info = "FID"
            self.progress.update(self.task, total=ev.total, completed=ev.done, info=info)
        elif ev.stage in ("done", "error"):
            spent = time.perf_counter() - self.started
            left = f", about {_duration(spent / ev.done * (ev.total - ev.done))} left" if ev.done else ""
            console.print(f"eval {ev.done}/{ev.total} {ev.item}" + (" (error)" if ev.stage == "error" else "")
                          + f"  {_duration(spent)} so far{left}", markup=False, highlight=False)


def evaluate(
    summaries: Optional[List[Path]] = typer.Argument(None, help="With --compare: summary.json files (or run folders).",
                                                     show_default=False),
    set_name: str = typer.Option("folder", "--set", help=f"Evaluation set: {_SETS}."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Root of the sets \\[default: $DREAMSR_DATA]; "
                                            "for folder/paired, the folder itself."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Evaluate only the first N images."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="bicubic | nearest (references) | a registry "
                                        "name | hf:// URL \\[default: the registry's default model for --scale, "
                                        "as `dreamsr upscale` picks it].", show_default=False),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="A dreamsr .safetensors checkpoint "
                                           "(overrides --model)."),
    scale: Optional[float] = typer.Option(None, "--scale", "-s", min=1.0, help="Factor: any scale in a continuous-scale "
                                        "(IDM) model's range, else the model's own \\[default: the model's, or the "
                                        "set's (celebahq 8, others 4) for bicubic/nearest]."),
    metrics: str = typer.Option("psnr,ssim,consistency", "--metrics",
                                help="Comma-separated: psnr, ssim, vif, haarpsi, gmsd, mdsi, hf, consistency, lpips, "
                                "fid (or all). haarpsi (higher is better), gmsd and mdsi (lower is better): piq's "
                                "weight-free perceptual measures on RGB; hf: high-frequency energy of SR over HR on Y "
                                "(1 = HR, < 1 blur, > 1 noise). vif needs torchmetrics, haarpsi/gmsd/mdsi piq "
                                "(pip install \"dreamsr\\[perceptual]\")."),
    convention: str = typer.Option("both", "--convention", help="PSNR/SSIM/VIF on rgb (whole image, SR3/DREAM code), "
                                   "y (BT.601 Y, border cropped, BasicSR) or both."),
    crop_border: Optional[int] = typer.Option(None, "--crop-border", min=0, help="Border cropped for the Y "
                                              "convention \\[default: the scale]."),
    lr_protocol: str = typer.Option("dreamsr", "--lr-protocol", help="How the LR image is made from the HR file, "
                                    "and how consistency downsamples the SR image: dreamsr (torch's antialiased "
                                    "bicubic in float, rounded to 8 bits) | release (the released SR3/DREAM code: "
                                    "PIL bicubic on 8-bit images; celebahq's 128 px HR and 16 px LR each made from "
                                    "the file), to score released face files as the paper did."),
    profile: Optional[str] = typer.Option(None, "--profile", help="A named sampling profile of the model (the "
                                          "default model: fidelity, its default, or detail); options given "
                                          "override its fields \\[default: the model's default sampling]."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Sampler steps (diffusion models) \\[default: "
                                        f"the model's recommendation, else {S.steps}]."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help=f"ddim | ddpm \\[default: {S.sampler}]."),
    eta: Optional[float] = typer.Option(None, "--eta", min=0.0, help="Sampler noise \\[default: 0 DDIM, 1 DDPM]."),
    seed: Optional[int] = typer.Option(None, "--seed", help=f"First seed; sample k uses seed + k \\[default: {S.seed}]."),
    samples: int = typer.Option(1, "--samples", "-k", min=1, help="Super-resolutions per image; the summary gives "
                                "mean and std over the K seeds."),
    tile: Optional[int] = typer.Option(None, "--tile", min=0, help="LR tile side; 0: the whole image in one piece "
                                       f"(the paper's faces protocol) \\[default: the model's recommendation, else "
                                       f"{S.tile}, as `dreamsr upscale`].", show_default=False),
    overlap: Optional[int] = typer.Option(None, "--overlap", min=0, help="LR tile overlap \\[default: the model's "
                                          f"recommendation, else {S.overlap}].", show_default=False),
    merge: Optional[str] = typer.Option(None, "--merge", help="Tile merge: step (blend at every step, as `dreamsr "
                                        "upscale`) | end (tiles sampled independently: the paper's protocol, "
                                        f"Sec. 6.2) \\[default: {S.merge}].", show_default=False),
    batch: Optional[int] = typer.Option(None, "--batch", min=1, help="Tiles per network call (does not change "
                                        f"results) \\[default: {S.batch}]."),
    start: Optional[int] = typer.Option(None, "--start", min=0, help="Truncated start: begin at trained step t0 "
                                        "from the noised condition; 0: the full chain \\[default: the model's "
                                        "recommendation, else the full chain]."),
    back_project: Optional[bool] = typer.Option(None, "--back-project/--no-back-project", help="Correct every "
                                                "estimate to match the LR input \\[default: the model's "
                                                "recommendation, else off]."),
    ensemble: Optional[int] = typer.Option(None, "--ensemble", help="Self-ensemble: average 1, 2, 4 or 8 "
                                           "flipped/rotated upscales per image (that many times the work) "
                                           "\\[default: the model's recommendation, else 1]."),
    metric_weights: Optional[Path] = typer.Option(None, "--metric-weights", help="Folder with the LPIPS/FID backbone "
                                                  "files \\[default: $TORCH_HOME/hub/checkpoints]."),
    lpips_net: str = typer.Option("alex", "--lpips-net", help="LPIPS backbone: alex | vgg | squeeze."),
    out_dir: Optional[Path] = typer.Option(None, "--output", "-o", "--out", help="Report folder "
                                           "(--out: the same) \\[default: eval/<set>-<model>-x<scale>]."),
    grids: int = typer.Option(4, "--grids", min=0, help="Comparison grids for the first N images."),
    save_images: bool = typer.Option(False, "--save-images", help="Also write the SR images to <output>/sr/."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N | mps."),
    precision: str = typer.Option("auto", "--precision", help="auto | fp32 | bf16 | fp16."),
    threads: int = typer.Option(0, "--threads", min=0, help="CPU threads for PyTorch. 0: the cores other programs "
                                "leave free, followed during the run; OMP_NUM_THREADS is respected."),
    compare_runs: bool = typer.Option(False, "--compare", help="Print the given summary.json files side by side."),
) -> None:
    """Measure PSNR/SSIM/VIF (RGB and Y conventions), HaarPSI/GMSD/MDSI, the HF ratio, consistency, LPIPS and FID
    of an upscaler on a set, and write metrics.csv, summary.json, summary.md and comparison grids
    (LR | bicubic | SR | HR).

    \b
    Examples:
      dreamsr eval --set folder --data-dir photos/ --model bicubic --scale 4
      dreamsr eval --set div2k-val --metrics psnr,ssim,fid        (the default model, sampled as upscale does)
      dreamsr eval --set div2k-val --weights my.safetensors --steps 100 --samples 3 --convention y --merge end
      dreamsr eval --set celebahq --weights sr3-face-16-128.safetensors --lr-protocol release --convention rgb
      dreamsr eval --compare runs/bicubic/summary.json runs/faces/summary.json
    """
    try:
        if compare_runs:
            if not summaries:
                raise ConfigError("--compare needs one or more summary.json files")
            raise typer.Exit(_compare(summaries))
        if summaries:
            raise ConfigError(f"unexpected argument {summaries[0]} (summary files go with --compare)")
        thread_plan = setup_threads(threads or None)  # before torch loads
        from dreamsr.jobs.evaluate import EvalConfig
        from dreamsr.jobs.evaluate import evaluate as run_eval

        cfg = EvalConfig(set=set_name, data_dir=str(data_dir) if data_dir else None, limit=limit, model=model,
                         weights=str(weights) if weights else None, scale=scale, metrics=_parse_metrics(metrics),
                         convention=convention, crop_border=crop_border, steps=steps, sampler=sampler,  # type: ignore[arg-type]
                         lr_protocol=lr_protocol,  # type: ignore[arg-type]
                         eta=eta, seed=seed, samples=samples, tile=tile, overlap=overlap, merge=merge, batch=batch,
                         start=start,
                         back_project=back_project, ensemble=ensemble, profile=profile,
                         metric_weights=str(metric_weights) if metric_weights else None, lpips_net=lpips_net,
                         device=device, precision=precision, grids=grids, save_images=save_images,
                         command=shlex.join(["dreamsr", *sys.argv[1:]]))
        cfg.validate()
        try:  # no --model/--weights: the registry's default, as `dreamsr upscale` picks it (a usage error there)
            cfg = cfg.resolved()
        except ModelNotFoundError as err:
            _error(str(err), EXIT_USAGE)
        if out_dir is None:
            who = Path(weights).stem if weights else str(cfg.model).replace("/", "_").replace(":", "_")
            out_dir = Path("eval") / (f"{set_name}-{who}" + (f"-x{scale}" if scale else ""))
        with _Bar(is_tty(), ThreadGovernor(thread_plan)) as bar:
            report = run_eval(cfg, out_dir, progress=bar)
    except DreamSRError as err:
        _error(str(err), exit_code_for(err))
        return
    s = report.summary
    out.print(_summary_table(s))
    out.print(f"RGB: {s['conventions']['rgb']}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"Y:   {s['conventions']['y']}", markup=False, highlight=False, soft_wrap=True)
    for w in s["warnings"]:
        console.print(Text.assemble(("warning:", "yellow"), " ", w), soft_wrap=True)
    for e in s["errors"]:
        error_line(f"{e['image']}: {e['error']}")
    out.print(f"report: {report.out_dir} (metrics.csv, summary.json, summary.md"
              + (", grids/" if "grids" in report.files else "") + ")", markup=False, highlight=False)
    if s["n_errors"]:
        raise typer.Exit(EXIT_FAILED)
