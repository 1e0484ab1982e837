"""CPU threads on a shared machine (dreamsr.threads) and what the upscale CLI says about its work: the load measured
from /proc against a real busy process, the choice rule, what the user set winning, the governor following load,
and the plan line, early refusals and non-terminal progress of ``dreamsr upscale``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from dreamsr import threads as T
from dreamsr.cli import app
from tests._helpers import write_tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

LINUX = T.cpu_sample() is not None


def _sample(busy: int, total: int, own: int, cores: int = 2) -> T.CpuSample:
    return T.CpuSample(busy=busy, total=total, own=own, cores=cores, when=0.0)


def test_cores_busy_elsewhere_arithmetic() -> None:
    # 2 cores, 100 ticks each over the window: 150 busy ticks, 50 of them ours -> others kept 1 core busy
    assert T.cores_busy_elsewhere(_sample(0, 0, 0), _sample(150, 200, 50)) == pytest.approx(1.0)
    assert T.cores_busy_elsewhere(_sample(0, 0, 0), _sample(100, 200, 100)) == 0.0  # all the busy time is ours
    assert T.cores_busy_elsewhere(_sample(5, 9, 1), _sample(5, 9, 1)) == 0.0  # an empty window


@pytest.mark.parametrize("busy, cores, want", [(0.0, 2, 2), (0.2, 2, 2), (0.5, 2, 1), (1.0, 2, 1), (1.9, 2, 1),
                                               (0.0, 8, 8), (2.0, 8, 6), (2.4, 8, 5), (9.0, 8, 1)])
def test_threads_for(busy: float, cores: int, want: int) -> None:
    assert T.threads_for(busy, cores) == want


def test_prepare_respects_the_environment() -> None:
    env: dict[str, str] = {}
    assert T.prepare(env) == f"spin {T.SPIN_COUNT} then sleep" and env == {"GOMP_SPINCOUNT": str(T.SPIN_COUNT)}
    env = {"OMP_WAIT_POLICY": "PASSIVE"}
    assert T.prepare(env) == "OMP_WAIT_POLICY=PASSIVE" and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"GOMP_SPINCOUNT": "0"}
    T.prepare(env)
    assert env == {"GOMP_SPINCOUNT": "0"}


def test_setup_what_the_user_set_wins() -> None:
    got: list[int] = []
    plan = T.setup(3, env={"OMP_NUM_THREADS": "1"}, set_threads=got.append)
    assert (plan.threads, plan.source, got) == (3, "--threads", [3])
    plan = T.setup(None, env={"OMP_NUM_THREADS": "1"}, set_threads=got.append)
    assert (plan.threads, plan.source, got[-1]) == (1, "OMP_NUM_THREADS", 1)
    assert not T.ThreadGovernor(plan, set_threads=got.append).plan.adaptive  # a fixed count is never changed
    with pytest.raises(T.ConfigError, match="OMP_NUM_THREADS"):
        T.setup(None, env={"OMP_NUM_THREADS": "two"}, set_threads=got.append)


@pytest.fixture
def busy_core():
    """A real process keeping one core busy for the test."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.3)
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.skipif(not LINUX, reason="needs /proc")
def test_a_busy_core_is_seen_and_followed(busy_core: subprocess.Popen) -> None:
    cores = T.available_cores()
    got: list[int] = []
    plan = T.setup(None, env={}, set_threads=got.append)
    assert plan.source == "auto" and plan.busy_elsewhere is not None and plan.busy_elsewhere >= 0.6
    assert plan.threads == T.threads_for(plan.busy_elsewhere, cores) <= max(1, cores - 1)
    # the governor re-measures between calls: start it as if the machine were idle, and it drops a thread
    gov = T.ThreadGovernor(T.ThreadPlan(threads=cores, source="auto", cores=cores), interval=0.3,
                           set_threads=got.append)
    time.sleep(0.4)
    now = gov.follow()
    assert now <= max(1, cores - 1) and gov.plan.threads == now
    assert cores == 1 or (got[-1] == now and gov.plan.changes and gov.plan.changes[-1][1] == now)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return write_tiny_checkpoint(tmp_path / "m.safetensors", scale=4, sampling={"steps": 1, "ensemble": 2})


def _image(path: Path, w: int, h: int) -> Path:
    Image.new("RGB", (w, h), (40, 120, 200)).save(path)
    return path


def test_plan_line_shows_the_tile_batches(checkpoint: Path, tmp_path: Path) -> None:
    # 80x64 LR with 40/5 tiles: 3 x 2 = 6 tiles, batches of 4 -> 2 calls a step, x 2 ensemble members = 4 calls
    src = _image(tmp_path / "a.png", 80, 64)
    r = CliRunner().invoke(app, ["upscale", str(src), "-w", str(checkpoint), "-o", str(tmp_path / "o.png"),
                                 "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "6 tile(s) in 2 batch(es) of up to 4 x 1 step(s) x 2 ensemble members = 4 network calls" in r.stderr
    assert "1 CPU thread(s) (--threads" in r.stderr


def test_an_existing_output_is_refused_before_the_model_is_built(checkpoint: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from dreamsr.jobs.pipeline import Upscaler

    def never(*a: object, **k: object) -> None:
        raise AssertionError("the model was built")

    monkeypatch.setattr(Upscaler, "from_checkpoint", classmethod(lambda cls, *a, **k: never()))
    src = _image(tmp_path / "a.png", 16, 16)
    dst = tmp_path / "o.png"
    dst.write_bytes(b"keep me")
    r = CliRunner().invoke(app, ["upscale", str(src), "-w", str(checkpoint), "-o", str(dst)])
    assert r.exit_code == 1 and f"{dst}: exists (use --overwrite to replace it)" in r.stderr
    assert "the model was built" not in r.output and dst.read_bytes() == b"keep me"


def test_progress_lines_without_a_terminal(checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dreamsr.cli import upscale as U

    monkeypatch.setattr(U, "LOG_EVERY_SECONDS", 0.0)
    src = _image(tmp_path / "a.png", 80, 64)
    r = CliRunner().invoke(app, ["upscale", str(src), "-w", str(checkpoint), "-o", str(tmp_path / "o.png"),
                                 "--steps", "3", "--ensemble", "1", "--batch", "1", "--json"])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stderr.splitlines() if "network calls," in ln]
    # 18 calls (6 tiles x 3 steps): a line at each 10 % step before the end, each with an estimate
    assert len(lines) >= 5 and all("so far, about" in ln and "left" in ln for ln in lines)
    assert lines[0].startswith("a.png (1/1): ") and "of 18 network calls" in lines[0]
    threads = json.loads(r.stdout)["threads"]
    assert threads["source"] in ("auto", "OMP_NUM_THREADS", "default") and threads["threads"] >= 1


def test_precision_help_matches_what_auto_does() -> None:
    import typer

    cmd = typer.main.get_command(app).commands["upscale"]  # type: ignore[attr-defined]
    text = next(p.help for p in cmd.params if p.name == "precision")
    assert "fp32 on CPU." not in text and "avx512_bf16 or amx_bf16" in text


_ORDER_PROBE = """
import sys, dreamsr.threads as T
orig, seen = T.setup, []
def spy(*a, **k):
    seen.append("torch" in sys.modules)
    return orig(*a, **k)
T.setup = spy
from typer.testing import CliRunner
from dreamsr.cli import app
r = CliRunner().invoke(app, sys.argv[1:])
print(r.exit_code, seen)
"""


@pytest.mark.parametrize("command", ["upscale", "eval"])
def test_threads_are_chosen_before_torch_loads(command: str, checkpoint: Path, tmp_path: Path) -> None:
    """OpenMP reads its waiting behaviour when torch loads, so each command must call threads.setup first."""
    src = _image(tmp_path / "a.png", 64, 64)
    args = (["upscale", str(src), "-w", str(checkpoint), "-o", str(tmp_path / "o.png")] if command == "upscale"
            else ["eval", "--set", "folder", "--data-dir", str(tmp_path), "--model", "bicubic", "--scale", "4",
                  "--grids", "0", "-o", str(tmp_path / "ev")])
    out = subprocess.run([sys.executable, "-c", _ORDER_PROBE, *args], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip().splitlines()[-1] == "0 [False]", out.stdout + out.stderr
