"""Helpers every part of the reproduction shares: writing JSON files, the clock, the hardware record, number
formatting, the paired difference used by E1 and E5, the shape of a paper claim checked on our numbers, and home
folders written as ``~``. JSON is read with :func:`dreamsr.files.load_json`."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from dreamsr.files import atomic_write_json

__all__ = ["Timed", "METRIC_COLUMNS", "DIGITS", "digits", "now", "write_json", "hardware",
           "paired_difference", "check", "yn", "fmt", "table_row", "without_home"]

#: ``timed(stage, fn)``: call ``fn`` and record its wall time under ``stage`` in the invocation's record.
Timed = Callable[[str, Callable[[], Any]], Any]

METRIC_COLUMNS = ("psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y", "consistency", "lpips", "fid")
DIGITS = {"psnr": 2, "ssim": 4, "consistency": 3, "lpips": 4, "fid": 2}


def jsonl_records(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The records of a run's metrics.jsonl, in order (blank lines skipped)."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def digits(column: str) -> int:
    """Decimal places of a metric column ("psnr_rgb" -> 2)."""
    return DIGITS[column.split("_")[0]]


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically (:func:`dreamsr.files.atomic_write_json`: non-finite floats as
    the strings "inf"/"nan"), creating the folder first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, data, indent=2)


def hardware() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu or "unknown", "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
                            "python": platform.python_version(), "torch": torch.__version__,
                            "platform": platform.platform(), "gpu": None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        from dreamsr import __version__

        info["dreamsr"] = __version__
    except ImportError:  # pragma: no cover
        info["dreamsr"] = "?"
    return info


def paired_difference(a: dict[str, float], b: dict[str, float]) -> dict[str, Any]:
    """Per-image paired difference a - b over the images both have: mean, standard error, and whether
    |mean| exceeds two standard errors (``significant``; None with fewer than 2 images)."""
    keys = sorted(set(a) & set(b))
    d = [a[k] - b[k] for k in keys if math.isfinite(a[k]) and math.isfinite(b[k])]
    if not d:
        return {"mean": None, "se": None, "n": 0, "significant": None}
    mean = statistics.fmean(d)
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else None
    return {"mean": mean, "se": se, "n": len(d), "significant": None if se is None else abs(mean) > 2 * se}


def check(claim: str, holds: bool | None, detail: str, paper: str) -> dict[str, Any]:
    """One paper claim tested on our numbers: holds True / False / None (not measurable here)."""
    return {"claim": claim, "holds": holds, "detail": detail, "paper": paper}


def yn(b: bool | None) -> str:
    return "not measured" if b is None else ("yes" if b else "no")


def fmt(v: Any, digits: int) -> str:
    """``v`` with ``digits`` decimals; "-" for None and non-finite values."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}"


def table_row(label: str, run: str, res: dict, extra: dict | None = None) -> dict[str, Any]:
    """One row of the E1/E5 tables from a :func:`~.evaluation.run_eval` result."""
    return {"label": label, "run": run, "metrics": res["metrics"], "per_image": res["per_image"],
            "eval_seconds": res["seconds"], "eval_dir": res["dir"], **(extra or {})}


def without_home(text: str, home: str | os.PathLike | None = None) -> str:
    """``text`` with every home folder written as ``~``: this user's (``home``, default ``Path.home()``), /root,
    /home/<user> and /Users/<user>, so that a published report names no one's home (a metric's cache folder, a
    run folder or a command line recorded on another machine). Only whole leading path components match:
    /work/root stays."""
    homes = [r"/home/[^/\s`'\"]+", r"/Users/[^/\s`'\"]+", "/root"]
    mine = str(Path.home() if home is None else home).rstrip("/")
    if mine:
        homes.insert(0, re.escape(mine))
    return re.sub(r"(?<![\w.~/-])(?:" + "|".join(homes) + r")(?=[/\s`'\".,;:)]|$)", "~", text)
