"""One invocation of the reproduction: train (or resume) the six runs, run the evaluations, write one JSON per
experiment, the figures and the report; and the record of every invocation in OUT/run_info.json."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

from . import figures
from dreamsr.files import load_json

from .common import hardware, now, write_json
from .crops import prepare_eval_crops
from .e1_p_sweep import evaluate_table, experiment_e1
from .e2_convergence import experiment_e2
from .e3_sampling_steps import evaluate_steps, experiment_e3
from .e4_discrepancy import evaluate_discrepancy, experiment_e4
from .e5_residual import experiment_e5
from .profiles import EVAL_PARTS, RUNS, Profile, RunSpec
from .report import render
from .training import run_finished, train_run

__all__ = ["record_invocation", "train_only", "reproduce"]


def record_invocation(out: Path, record: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """Append one invocation to OUT/run_info.json (and set the top-level keys of ``extra``: a reporting
    invocation's figure list) under a file lock: two ``--only`` processes may finish at the same time."""
    import fcntl

    with open(out / ".run_info.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = out / "run_info.json"
        info = load_json(path) if path.is_file() else {"invocations": []}
        info.update(extra or {})
        info["invocations"].append(record)
        write_json(path, info)


def train_only(specs: Sequence[RunSpec], profile: Profile, out: Path, data: Path, *, device: str, precision: str,
               workers: int | None, command: str, log: Callable[[str], None]) -> None:
    """Train (or resume) just ``specs``, then record the invocation: one process per run can train them side by
    side; a later plain invocation finds them finished and runs the evaluations."""
    from dreamsr.runtime import resolve_device

    t_start, started = time.perf_counter(), now()
    for spec in specs:
        train_run(spec, profile, out, data, device, precision, workers, log)
    record_invocation(out, {
        "started": started, "command": command, "profile": profile.name, "train_only": [s.name for s in specs],
        "device": str(resolve_device(device)), "precision": precision, "hardware": hardware(),
        "wall_seconds": round(time.perf_counter() - t_start, 3)})


def reproduce(profile: Profile, out: Path, data: Path, *, device: str = "auto", precision: str = "auto",
              workers: int | None = None, metric_weights: str | None = None, doc: Path | None = None,
              command: str = "", log: Callable[[str], None] = print,
              only: Sequence[str] | None = None, resshift: dict | None = None) -> dict[str, Any]:
    """Run (or resume) every experiment of ``profile`` into ``out``; write the JSONs, figures and the report.
    Returns {"doc": path, "json": {experiment: path}, "figures": {...}}.

    ``only``: a subset of EVAL_PARTS ("table": E1/E5 evaluations, "steps": E3, "discrepancy": E4) to run just
    those evaluations of runs that finished training, then return {"only": [...]} without JSONs or report, so
    that two processes can share the evaluations (a later plain invocation finds them done and reports).
    ``resshift``: the ResShift rows' numbers (:func:`.resshift.collect`) to splice into the report."""
    from dreamsr.data import find_images
    from dreamsr.runtime import resolve_device

    t_start = time.perf_counter()
    started = now()
    out.mkdir(parents=True, exist_ok=True)
    if not (data / "train").is_dir() or not (data / "val").is_dir():
        raise SystemExit(f"{data} needs train/ and val/ photo folders; build them with "
                         f"`python scripts/build_corpus.py {data}`")
    stages: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        r = fn()
        stages[name] = round(time.perf_counter() - t, 3)
        return r

    parts = set(EVAL_PARTS if only is None else only)
    if not parts or parts - set(EVAL_PARTS):
        raise SystemExit(f"only: choose from {', '.join(EVAL_PARTS)}, got {', '.join(sorted(parts)) or '(none)'}")
    if only is not None:  # evaluations only: never train here (another process may be training)
        unfinished = [s.name for s in RUNS if not run_finished(out / "runs" / s.name, profile.steps)]
        if unfinished:
            raise SystemExit(f"--only evaluates finished runs; still training: {', '.join(unfinished)}")
    trained = {s.name: timed(f"train/{s.name}", lambda s=s: train_run(s, profile, out, data, device, precision,
                                                                       workers, log)) for s in RUNS}
    crops = prepare_eval_crops(data / "val", out / "data" / "eval_crops", profile.eval_images, profile.eval_crop)
    ctx: dict[str, Any] = dict(device=device, precision=precision, log=log, timed=timed)
    evals: dict[str, dict] = {}
    bicubic: dict = {}
    e3_results: dict = {}
    e4_models: list = []
    if "table" in parts:
        evals, bicubic = evaluate_table(profile, out, trained, crops, metric_weights=metric_weights, **ctx)
    if "steps" in parts:
        e3_results = evaluate_steps(profile, out, trained, crops, **ctx)
    if "discrepancy" in parts:
        e4_models = evaluate_discrepancy(profile, out, data, trained, **ctx)

    if only is not None:
        record_invocation(out, {
            "started": started, "command": command, "profile": profile.name, "only": sorted(parts),
            "device": str(resolve_device(device)), "precision": precision, "hardware": hardware(), "stages": stages,
            "wall_seconds": round(time.perf_counter() - t_start, 3)})
        return {"only": sorted(parts)}

    exps = {"e1_p_sweep": experiment_e1(profile, trained, evals, bicubic),
            "e2_convergence": experiment_e2(profile, trained),
            "e3_sampling_steps": experiment_e3(profile, e3_results),
            "e4_discrepancy": experiment_e4(profile, e4_models),
            "e5_residual": experiment_e5(profile, trained, evals)}
    paths = {}
    for name, data_ in exps.items():
        paths[name] = out / f"{name}.json"
        write_json(paths[name], data_)
    drawn = figures.draw_all(out, *exps.values())
    record_invocation(out, {
        "started": started, "command": command, "profile": profile.name, "device": str(resolve_device(device)),
        "precision": precision, "data": str(data), "train_images": len(find_images(data / "train")),
        "val_images": len(find_images(data / "val")), "hardware": hardware(), "stages": stages,
        "wall_seconds": round(time.perf_counter() - t_start, 3)},
        extra={"figures": drawn, "figures_note": None if all(drawn.values()) else figures.NO_PLOT})
    doc_path = render(out, doc or out / "reproduction.md", resshift=resshift)
    return {"doc": doc_path, "json": paths, "figures": drawn}
