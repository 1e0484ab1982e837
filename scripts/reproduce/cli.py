"""The command line: ``python scripts/reproduce [options]`` (or ``python -m scripts.reproduce`` from the repository
root). Options and profiles are described by ``--help`` and the package docstring."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import os
import sys
from pathlib import Path
from typing import Sequence

import torch

from . import __doc__ as package_doc
from dreamsr.files import load_json

from .common import yn
from .driver import reproduce, train_only
from .partial import partial_curves
from .profiles import EVAL_PARTS, PROFILES, RUNS
from .report import render
from .resshift import RENDER_COMMAND, RESSHIFT_PROFILES, collect, render_into, summary_path, train_and_evaluate

__all__ = ["PROGRAM", "main"]

PROGRAM = "python scripts/reproduce"  # how the command is recorded in run_info.json and shown in the report


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROGRAM, description=(package_doc or "").split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Profiles: " + "; ".join(
                                     f"{p.name}: {p.preset} UNet, {p.steps} steps x 6 runs" for p in PROFILES.values()))
    ap.add_argument("--profile", choices=sorted(PROFILES), default="smoke", help="experiment sizes (default: smoke)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: runs/reproduce-<profile>)")
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DREAMSR_CORPUS", "/work/corpus")),
                    help="corpus with train/ and val/ photo folders (scripts/build_corpus.py; default "
                         "$DREAMSR_CORPUS or /work/corpus)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps (default: auto)")
    ap.add_argument("--precision", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp16")
    ap.add_argument("--workers", type=int, default=None, help="data-loader processes (default: the profile's)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 when sharing the machine)")
    ap.add_argument("--steps", type=int, default=None, help="override the training steps of every run")
    ap.add_argument("--metric-weights", default=None, help="folder with LPIPS/FID backbone files")
    ap.add_argument("--doc", type=Path, default=None, help="where to write the report (default: OUT/reproduction.md; "
                                                           "figures are copied beside it)")
    ap.add_argument("--doc-only", action="store_true", help="only re-render the report from OUT's JSON files")
    ap.add_argument("--partial-curves", action="store_true",
                    help="only report the validation curves of OUT's (possibly unfinished) runs, up to the last "
                         "step all of them validated (E2 at equal steps), into --doc")
    ap.add_argument("--note", default="", help="a line for the --partial-curves report (where the runs ran)")
    ap.add_argument("--train-only", default=None, metavar="RUNS",
                    help="only train (or resume) these runs, comma-separated names (" + ", ".join(s.name for s in RUNS)
                         + "), then exit: one process per run trains them side by side on one GPU; a later plain "
                           "invocation finds them finished and runs the evaluations")
    ap.add_argument("--only", default=None, metavar="PARTS",
                    help="only run these evaluations of finished runs, comma-separated (" + ", ".join(EVAL_PARTS)
                         + "), then exit: two processes can share them; a later plain invocation reports")
    rs = ap.add_argument_group(
        "ResShift rows", "E1-E4 rows for ResShift small (the default model's family) from the paired DREAM\n"
        "experiment (docs/experiments/dream-resshift.md), spliced in beside the SR3 sections; their numbers are\n"
        "kept beside the report as <doc stem>/resshift.json, which --doc-only reuses without --resshift-work.\n"
        "Re-render docs/reproduction.md from the experiment's work folder:\n"
        "  " + RENDER_COMMAND)
    rs.add_argument("--resshift-work", type=Path, default=None, metavar="WORK",
                    help="the experiment's work folder (scripts/dream_experiment/train.sh's layout; its evaluations "
                         "in WORK/eval/<arm>-s<seed>/*.json are read, nothing in it is written unless "
                         "--resshift-train)")
    rs.add_argument("--resshift-profile", choices=sorted(RESSHIFT_PROFILES), default="full",
                    help="the experiment's sizes (default full: " + ", ".join(
                        f"{p.name}: {len(p.arms)} arms x {len(p.seeds)} seeds x {p.steps} steps"
                        for p in RESSHIFT_PROFILES.values()) + ")")
    rs.add_argument("--resshift-train", action="store_true",
                    help="first train and evaluate into --resshift-work with the experiment's own scripts "
                         "(train.sh, evaluate.py; resumed, finished work skipped), from --data-dir (train/, "
                         "val_crops/)")
    rs.add_argument("--resshift-only", action="store_true",
                    help="only the ResShift rows: (train if asked,) then write --doc, its SR3 part re-rendered "
                         "from --out's JSONs when --out is given and has them, else kept as it is in --doc (so "
                         "does --doc-only with ResShift rows)")
    args = ap.parse_args(argv)
    if (args.resshift_train or args.resshift_only) and args.resshift_work is None:
        ap.error("--resshift-train and --resshift-only need --resshift-work")
    if args.resshift_train and args.doc_only:
        ap.error("--doc-only never trains; use --resshift-only --resshift-train")
    prof = PROFILES[args.profile]
    if args.steps is not None:
        if args.steps < 1:
            ap.error("--steps must be >= 1")
        prof = dataclasses.replace(prof, steps=args.steps)
    out = args.out or Path("runs") / f"reproduce-{prof.name}"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.partial_curves:
        print(partial_curves(out, args.doc or out / "partial.md", prof, args.note))
        return 0

    def log(msg: str) -> None:
        print(f"[{_dt.datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)

    def resshift_numbers() -> dict | None:
        """The ResShift rows' numbers: from --resshift-work (trained first with --resshift-train), else, for a
        re-render, the ones kept beside the report, else None."""
        if args.resshift_work is None:
            kept = summary_path(args.doc or out / "reproduction.md")
            return load_json(kept) if args.doc_only and kept.is_file() else None
        rprof = RESSHIFT_PROFILES[args.resshift_profile]
        if args.resshift_train:
            train_and_evaluate(rprof, args.data_dir, args.resshift_work, log)
        return collect(args.resshift_work, rprof, corpus=args.data_dir, writable=args.resshift_train)

    if args.doc_only or args.resshift_only:
        doc = args.doc or out / "reproduction.md"
        res = resshift_numbers()
        if res is not None and (args.out is None or not (out / "run_info.json").is_file()):
            print(f"{'no --out given' if args.out is None else f'{out} holds no SR3 results'}: the SR3 text of {doc} "
                  "is kept as it is, the ResShift rows re-rendered")
            print(render_into(doc, res))
        else:
            print(render(out, doc, redraw=True, resshift=res))
        return 0

    command = f"{PROGRAM} " + " ".join(sys.argv[1:] if argv is None else list(argv))
    if args.train_only:
        by_name = {s.name: s for s in RUNS}
        wanted = [n.strip() for n in args.train_only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in by_name]
        if unknown or not wanted:
            ap.error(f"--train-only: unknown run(s) {', '.join(unknown) or '(none given)'}; "
                     f"choose from {', '.join(by_name)}")
        train_only([by_name[n] for n in wanted], prof, out, args.data_dir, device=args.device,
                   precision=args.precision, workers=args.workers, command=command, log=log)
        return 0

    res = reproduce(prof, out, args.data_dir, device=args.device, precision=args.precision, workers=args.workers,
                    metric_weights=args.metric_weights, doc=args.doc, command=command.strip(), log=log,
                    only=None if args.only is None else [x.strip() for x in args.only.split(",") if x.strip()],
                    resshift=resshift_numbers() if args.only is None else None)
    if "only" in res:
        log(f"evaluated {', '.join(res['only'])}; run again without --only for the report")
        return 0
    for name, path in res["json"].items():
        checks = load_json(path)["checks"]
        log(f"{name}: " + "; ".join(f"{c['claim']}: {yn(c['holds'])}" for c in checks))
    log(f"report: {res['doc']}")
    return 0
