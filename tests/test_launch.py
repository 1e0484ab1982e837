"""`python -m dreamsr.launch`: torchrun's options before `train`, dreamsr's after it, untouched.

torchrun alone cannot run `-m dreamsr train ... --p 1`: its parser takes `--p` for an abbreviation of its own
`--print-completion`. The README's multi-process command is run here verbatim (2 gloo processes on the CPU).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from torch.distributed.run import config_from_args

from dreamsr.launch import LaunchUsageError, launch_args, main, split_argv
from tests._helpers import copy_photos

REPO = Path(__file__).resolve().parents[1]


def _worker_command(argv: list[str]) -> list[str]:
    """What every worker process runs (torchrun's own translation of the parsed arguments)."""
    _, cmd, args = config_from_args(launch_args(argv))
    return [cmd, *args]


def test_everything_from_train_on_reaches_the_workers_untouched() -> None:
    dreamsr = ["train", "--dataset", "folder", "--p", "1", "--p=0.5", "--nproc_per_node", "3", "--standalone", "-m",
               "x", "--", "train"]
    cmd = _worker_command(["--standalone", "--nproc_per_node", "2", *dreamsr])
    assert cmd == [sys.executable, "-u", "-m", "dreamsr", *dreamsr]
    args = launch_args(["--standalone", "--nproc_per_node", "2", *dreamsr])
    assert args.standalone and args.nproc_per_node == "2" and args.module and args.training_script == "dreamsr"


@pytest.mark.parametrize("launcher, expected", [
    (["--rdzv-id", "train", "--nnodes", "1"], {"rdzv_id": "train", "nnodes": "1"}),  # a value, not the command
    (["--rdzv_id=train"], {"rdzv_id": "train"}),
    (["--nproc", "train"], {"nproc_per_node": "train"}),  # argparse's unique abbreviation takes a value too
    (["--standalone"], {"standalone": True}),
])
def test_train_as_an_option_value_does_not_split(launcher: list[str], expected: dict) -> None:
    tail = ["train", "--p", "2"]
    head, rest = split_argv([*launcher, *tail])
    assert (head, rest) == (launcher, tail)
    if expected.get("nproc_per_node") != "train":
        args = launch_args([*launcher, *tail])
        assert {k: getattr(args, k) for k in expected} == expected and args.training_script_args == tail


@pytest.mark.parametrize("argv, message", [
    (["--nproc_per_node", "2", "eval", "--p", "1"], "no `train` command"),
    (["--nproc_per_node", "2", "-m", "dreamsr", "train"], "drop -m/--module"),
    (["--nproc_per_node", "2", "script.py", "train"], "only torchrun options"),
])
def test_bad_launcher_lines_are_usage_errors(argv: list[str], message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(LaunchUsageError, match=message):
        launch_args(argv)
    assert main(argv) == 2 and message in capsys.readouterr().err


def _readme_command() -> list[str]:
    """The README's one `python -m dreamsr.launch ...` line, split as a shell would."""
    lines = [l.strip() for l in (REPO / "README.md").read_text(encoding="utf-8").splitlines()
             if l.strip().startswith("python -m dreamsr.launch ")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0])


def test_readme_command_trains_in_two_processes(tmp_path: Path) -> None:
    """The README's command verbatim (only its photo and run folders pointed here), made small by options
    appended after it (the last value of an option wins): 2 gloo processes, and --p reaches the workers."""
    cmd = _readme_command()
    assert cmd[:7] == ["python", "-m", "dreamsr.launch", "--standalone", "--nproc_per_node", "2", "train"]
    assert "--p" in cmd and cmd[cmd.index("--p") + 1] == "1"
    photos = copy_photos(tmp_path / "photos", ("astronaut.png", "coffee.png"))
    data, out = cmd.index("--data-dir") + 1, cmd.index("-o") + 1
    cmd[data], cmd[out] = str(photos), str(tmp_path / "run")
    small = ["--preset", "tiny", "--patch", "32", "--batch-size", "4", "--steps", "2", "--save-every", "2",
             "--workers", "0", "--val-every", "0", "--log-every", "1", "--precision", "fp32", "--device", "cpu",
             "--p", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *cmd[1:], *small], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["world_size"] == 2 and config["config"]["p"] == 2.0 and config["config"]["preset"] == "tiny"
    assert (run / "checkpoints/step_00000002.safetensors").is_file() and (run / "model.safetensors").is_file()


def test_a_failing_worker_exits_1_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "dreamsr.launch", "--standalone", "--nproc_per_node", "2", "train",
                           "--dataset", "folder", "--data-dir", str(tmp_path / "none"), "--p", "1", "-o",
                           str(tmp_path / "run"), "--device", "cpu"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 1
    # both ranks fail on the missing data; whichever fails second may be stopped by the launcher first (-15)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: dreamsr train failed in rank")]
    assert len(lines) == 1 and "(exit code 1)" in lines[0], proc.stderr
    assert "not found under" in proc.stderr  # the worker's own error, above
