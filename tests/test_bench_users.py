"""`dreamsr bench`'s users and model suites (dreamsr.jobs.bench_users): the busy loop really keeps a core busy and
is gone afterwards, a non-SR3 checkpoint is benched (sampling, training, FLOPs against a direct count), the report
is written after every measurement and survives an interruption, and the shared-CPU section's structure. Timings
are never asserted, only how reported numbers relate.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dreamsr.checkpoint import CheckpointInfo, load_checkpoint, save_checkpoint
from dreamsr.families.resshift import PRESETS, ResShiftNet
from dreamsr.jobs import bench_users
from dreamsr.jobs.bench_users import BenchInterrupted, BusyLoop, SuiteConfig, measure_busy_elsewhere, run_suite
from dreamsr.jobs.pipeline import Upscaler
from dreamsr.processes.shift import ShiftConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(lr_size=(16, 24), sampling_repeats=1, train_batch=2, train_patch=32, train_steps=1, train_warmup=1,
             train_rounds=1, device="cpu")


@pytest.fixture
def resshift_checkpoint(tmp_path: Path) -> Path:
    """A tiny ResShift (unshuffle space, shift v1) checkpoint with a recommendation and a second profile."""
    info = CheckpointInfo(network=PRESETS["tiny"], diffusion=ShiftConfig.v1(), scale=4, family="resshift",
                          process="shift", sampling={"steps": 1, "back_project": True, "ensemble": 2},
                          profiles={"detail": {"steps": 3}, "same": {"steps": 1, "back_project": True,
                                                                    "ensemble": 2}})
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "rs-tiny.safetensors", ResShiftNet(PRESETS["tiny"]), info)


def test_busy_loop_keeps_a_core_busy_and_is_gone_afterwards() -> None:
    with BusyLoop() as loop:
        pid = loop.proc.pid  # type: ignore[union-attr]
        busy = measure_busy_elsewhere(0.5)
        assert loop.proc.poll() is None  # type: ignore[union-attr]
    assert busy is not None and busy >= 0.5
    assert loop.proc.poll() is not None  # type: ignore[union-attr]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped
    with pytest.raises(KeyboardInterrupt):  # also when the block ends by Ctrl-C
        with BusyLoop() as loop2:
            raise KeyboardInterrupt
    assert loop2.proc.poll() is not None  # type: ignore[union-attr]


def _direct_flops(path: Path, lr: torch.Tensor, profile: str | None) -> int:
    """FLOPs of every network call of a real upscale, each counted by its own FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    net, info = load_checkpoint(path)
    total = 0
    real = net.forward

    def counted(*args, **kwargs):
        nonlocal total
        with FlopCounterMode(display=False) as counter:
            out = real(*args, **kwargs)
        total += counter.get_total_flops()
        return out

    net.forward = counted  # type: ignore[method-assign]
    up = Upscaler(net, info, device="cpu", precision="fp32")
    up.upscale(lr, up.options(profile=profile))
    return total


def test_model_suite_benches_a_resshift_checkpoint(resshift_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    seen: list[str] = []
    r = run_suite(SuiteConfig(suite="model", model=str(resshift_checkpoint), **SMALL), json_path=out,
                  progress=seen.append)
    assert r["schema"] == bench_users.SCHEMA and r["interrupted"] is False
    assert json.loads(out.read_text()) == json.loads(json.dumps(r))  # the written report is the returned one
    assert [m["family"] for m in r["models"]] == ["resshift"] and r["models"][0]["profiles"] == ["detail", "same"]
    # progress: one line per measurement, numbered, with an estimate
    assert len(seen) == len(r["measured"]) == 3 + 2  # recommended, detail, same; standard, dream
    assert all(line.startswith(f"[{i + 1}/5] ") and "left)" in line for i, line in enumerate(seen))
    # sampling: the recommendation and the profile that differs; "same" is the recommendation, measured once
    rec, detail = r["sampling"]
    assert (rec["profile"], detail["profile"], rec["also"]) == ("recommended", "profile detail", ["profile same"])
    assert (rec["settings"]["steps"], rec["settings"]["ensemble"], detail["settings"]["steps"]) == (1, 2, 3)
    for s in r["sampling"]:
        assert s["out_size"] == [64, 96] and s["seconds"]["n"] == 1 and s["seconds"]["median_s"] > 0
        assert s["calls"] == s["planned_calls"] == s["settings"]["ensemble"] * s["settings"]["steps"]
        assert s["s_per_out_mp"] == pytest.approx(s["seconds"]["median_s"] / (64 * 96 / 1e6))
    # training: the family's preset on its process, both objectives, the ratio of the medians
    tr = r["training"]
    assert (tr["family"], tr["preset"], tr["process"]) == ("resshift", "tiny", "shift")
    std, dream = tr["objectives"]["standard"], tr["objectives"]["dream"]
    assert std["n"] == dream["n"] == 1 and std["loss_finite"] and dream["loss_finite"]
    assert tr["dream_over_standard"] == pytest.approx(dream["step_median_s"] / std["step_median_s"])
    # FLOPs: per image equal to a FlopCounterMode count of every real network call
    lr = bench_users.photo_image(16, 24, seed=0)
    for f, prof in zip(r["flops"], (None, "detail")):
        assert f["per_image"] == _direct_flops(resshift_checkpoint, lr, prof) > 0
        assert f["per_out_pixel"] == pytest.approx(f["per_image"] / (64 * 96))


def test_interrupted_suite_keeps_what_it_measured(resshift_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    calls = [0]

    def progress(msg: str) -> None:  # Ctrl-C as the second measurement starts
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt

    with pytest.raises(BenchInterrupted) as stop:
        run_suite(SuiteConfig(suite="model", model=str(resshift_checkpoint), **SMALL), json_path=out,
                  progress=progress)
    kept = json.loads(out.read_text())
    assert kept["interrupted"] is True and stop.value.report["interrupted"] is True
    assert len(kept["measured"]) == 1 and [s["profile"] for s in kept["sampling"]] == ["recommended"]
    assert kept["training"] is None and len(kept["flops"]) == 1


def test_cli_interrupt_prints_what_was_measured_and_exits_130(resshift_checkpoint: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from dreamsr.cli import app

    real, n = bench_users.time_sampling, [0]

    def stopping(*args, **kwargs):
        n[0] += 1
        if n[0] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(bench_users, "time_sampling", stopping)
    out = tmp_path / "b.json"
    res = CliRunner().invoke(app, ["bench", "--weights", str(resshift_checkpoint), "--sections", "sampling",
                                   "--device", "cpu", "--threads", "1", "--json", str(out)])
    assert res.exit_code == 130, res.output
    assert "interrupted after 1 measurement(s)" in res.stderr and "sampling" in res.stdout
    assert json.loads(out.read_text())["interrupted"] is True


@pytest.mark.parametrize("args, message", [
    (["-p", "tiny"], "No such option"),  # -p is train's DREAM exponent, never bench's preset
    (["--suite", "fast"], "--suite"),
    (["--weights", "x.safetensors", "--sections", "shared"], "--sections"),
    (["--suite", "users", "--weights", "x.safetensors"], "users suite"),
])
def test_cli_usage(args: list[str], message: str) -> None:
    from dreamsr.cli import app

    res = CliRunner().invoke(app, ["bench", *args])
    assert res.exit_code == 2 and message in res.output, res.output


@pytest.mark.parametrize("busy", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_users_suite_shared_cpu_structure(resshift_checkpoint: Path, tiny_checkpoint: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch, busy: bool) -> None:
    """The shared-CPU runs with a tiny model and photo: every case, the children's own thread plans (the caller's
    OMP_NUM_THREADS removed), the summary's medians and ratios; the other model's sampling at its recommendation.
    Each run is a fresh process (seconds each on a busy machine): the busy-core cases run in the slow variant."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)  # (set by an earlier command run in this process)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    cfg = SuiteConfig(model=str(resshift_checkpoint), others=(str(tiny_checkpoint),), sections=("shared", "others", "flops"),
                      photo_size=(24, 32), readme_repeats=1, busy=busy, other_lr_size=(12, 12), device="cpu",
                      sampling_repeats=1)
    r = run_suite(cfg, json_path=tmp_path / "r.json")
    sh = r["shared_cpu"]
    assert sh["env_removed"] == ["OMP_NUM_THREADS"] and sh["cores"] >= 1
    assert sh["images"]["readme"]["size"] == [64, 80] and sh["images"]["photo"]["size"] == [24, 32]
    cases = [(x["image"], x["threading"], x["load"]) for x in sh["runs"]]
    loads = ["idle", "busy"] if busy else ["idle"]
    assert cases == [(image, threading, load) for image, threading in (("readme", "auto"), ("photo", "auto"),
                                                                       ("readme", "torch")) for load in loads]
    for x in sh["runs"]:
        assert x["wall_s"] > x["sampling_s"] > 0  # the process's wall time holds its sampling
        if x["threading"] == "torch":
            assert (x["threads"]["source"], x["threads"]["threads"]) == ("--threads", sh["cores"])
            assert x["threads"]["wait"] == "spin 300000 then sleep"
        else:
            assert x["threads"]["source"] == "auto"  # not the OMP_NUM_THREADS of the caller
            assert x["threads"]["wait"] == "spin 10000 then sleep"
    assert sh["busy_elsewhere_before"] is not None
    assert (sh["busy_elsewhere_with_loop"] >= 0.5) if busy else sh["busy_elsewhere_with_loop"] is None
    assert [(s["image"], s["threading"]) for s in sh["summary"]] == [("readme", "auto"), ("photo", "auto"),
                                                                     ("readme", "torch")]
    for i, s in enumerate(sh["summary"]):
        idle = sh["runs"][len(loads) * i]
        assert s["idle"]["wall_s"] == idle["wall_s"] and s["idle"]["threads"] == [idle["threads"]["threads"]]
        if busy:
            hot = sh["runs"][2 * i + 1]
            assert s["busy"]["sampling_s"] == hot["sampling_s"]
            assert s["busy_over_idle_wall"] == pytest.approx(hot["wall_s"] / idle["wall_s"])
        else:
            assert s["busy"] is None and s["busy_over_idle_wall"] is None
    (other,) = r["sampling"]
    assert other["model"] == str(tiny_checkpoint) and other["family"] == "sr3" and other["out_size"] == [48, 48]
    assert [m["family"] for m in r["models"]] == ["resshift", "sr3"] and r["flops"][0]["model"] == str(tiny_checkpoint)
