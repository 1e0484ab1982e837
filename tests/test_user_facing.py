"""Papercuts a new user meets: one output option name, and a training state given where a model is expected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
from safetensors.torch import load_file
from typer.testing import CliRunner

from dreamsr.checkpoint import TRAIN_STATE_FORMAT, load_checkpoint, read_info
from dreamsr.cli import app
from dreamsr.errors import CheckpointError, ConfigError
from dreamsr.jobs.train import STATE_FORMAT, TrainConfig, train
from tests._helpers import copy_photos, photo_path

def _option(command: str, short: str):
    """The option of ``dreamsr COMMAND`` spelled ``short`` (typer's click parameter object)."""
    sub = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    found = [p for p in sub.params if short in getattr(p, "opts", [])]
    assert len(found) == 1, (command, short)
    return found[0]


@pytest.mark.parametrize("command, aliases", [("upscale", set()), ("train", {"--run-dir"}), ("eval", {"--out"})])
def test_output_is_minus_o_and_dash_dash_output_everywhere(command: str, aliases: set[str]) -> None:
    opt = _option(command, "-o")
    assert set(opt.opts) == {"-o", "--output"} | aliases  # the old names still work


def test_dash_dash_version_prints_what_the_version_command_prints() -> None:
    import subprocess
    import sys

    from dreamsr import __version__

    runner = CliRunner()
    flag, command = runner.invoke(app, ["--version"]), runner.invoke(app, ["version"])
    assert flag.exit_code == command.exit_code == 0, flag.output
    assert flag.output == command.output == f"{__version__}\n"
    # eager: it wins over a command that would otherwise run or complain
    assert runner.invoke(app, ["--version", "upscale"]).output == f"{__version__}\n"
    proc = subprocess.run([sys.executable, "-m", "dreamsr", "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == f"{__version__}\n", proc.stderr


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_photos(tmp_path_factory.mktemp("photos"), ("astronaut.png", "coffee.png"))


@pytest.fixture(scope="module")
def state(photos: Path, tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    """A training state (checkpoints/step_00000002.safetensors) of a 2-step tiny run."""
    run = tmp_path_factory.mktemp("run")
    with torch.random.fork_rng(devices=[]):
        train(TrainConfig(dataset="folder", data_dir=str(photos), family="sr3", preset="tiny", patch=32,
                          batch_size=2, steps=2,
                          save_every=2, val_every=0, workers=0, log_every=1, run_dir=str(run), target="residual",
                          precision="fp32", device="cpu"))
    return run / "checkpoints" / "step_00000002.safetensors"


def test_train_writes_where_output_says(photos: Path, tmp_path: Path) -> None:
    for flag, name in (("-o", "a"), ("--output", "b"), ("--run-dir", "c")):
        r = CliRunner().invoke(app, ["train", "--dataset", "folder", "--data-dir", str(photos), "--preset", "tiny",
                                     "--patch", "32", "--batch-size", "2", "--steps", "1", "--workers", "0",
                                     "--val-every", "0", "--precision", "fp32", "--threads", "1", flag,
                                     str(tmp_path / name)])
        assert r.exit_code == 0, r.output
        assert (tmp_path / name / "model.safetensors").is_file()


def test_eval_writes_where_output_says(photos: Path, tmp_path: Path) -> None:
    for flag, name in (("-o", "a"), ("--output", "b"), ("--out", "c")):
        r = CliRunner().invoke(app, ["eval", "--set", "folder", "--data-dir", str(photos), "--model", "bicubic",
                                     "--scale", "4", "--metrics", "psnr", "--grids", "0", flag, str(tmp_path / name)])
        assert r.exit_code == 0, r.output
        assert json.loads((tmp_path / name / "summary.json").read_text())["metrics"]


def test_a_training_state_is_named_as_such_with_the_way_to_export_it(state: Path, tmp_path: Path) -> None:
    assert TRAIN_STATE_FORMAT == STATE_FORMAT  # the base layer cannot import train.py; one string, two names
    for load in (load_checkpoint, read_info):
        with pytest.raises(CheckpointError, match="training state") as err:
            load(state)
        assert f"dreamsr train --resume {state} --export-only -o OUT_DIR" in str(err.value)
        assert "convert" not in str(err.value)  # not a .pth to convert
    # following the message gives a model that loads: the state's EMA weights
    out = tmp_path / "exported"
    r = CliRunner().invoke(app, ["train", "--resume", str(state), "--export-only", "-o", str(out)])
    assert r.exit_code == 0, r.output
    model, info = load_checkpoint(out / "model.safetensors")
    ema = {k[len("ema/"):]: v for k, v in load_file(str(state)).items() if k.startswith("ema/")}
    assert ema.keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in ema.items())
    assert info.training["steps"] == 2


def test_upscale_weights_given_a_training_state_says_so(state: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["upscale", str(photo_path("coffee.png")), "--weights", str(state), "-o",
                                 str(tmp_path / "out.png"), "--steps", "1"])
    assert r.exit_code == 1
    text = " ".join(r.output.split())  # rich may wrap the line
    assert "training state" in text and "--export-only" in text and not (tmp_path / "out.png").exists()


# --- weights.toml: params may be left out --------------------------------------------------------------------------

def test_user_registry_entry_without_params(tiny_checkpoint: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`params` may be left out of a user entry: it is counted in the file's header when the file is here."""
    import hashlib

    from dreamsr.jobs import weights as W
    from dreamsr.families.sr3.unet import PRESETS, UNet

    sha = hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    registry = tmp_path / "weights.toml"
    registry.write_text(
        f'[models.mine]\npath = "{tiny_checkpoint}"\nsha256 = "{sha}"\nscale = 4\ntask = "general"\n'
        'license = "MIT"\ndescription = "no params line"\n\n'
        f'[models.remote]\nrepo_id = "org/name"\nfilename = "m.safetensors"\nrevision = "{"a" * 40}"\n'
        f'sha256 = "{"b" * 64}"\nscale = 3\ntask = "general"\nlicense = "MIT"\ndescription = "not here"\n',
        encoding="utf-8")
    monkeypatch.setenv("DREAMSR_WEIGHTS", str(registry))
    entries = W.registry_entries()
    mine, remote = entries["mine"], entries["remote"]
    assert mine.params is None and remote.params is None
    assert W.entry_dict(mine)["params"] == UNet(PRESETS["tiny"]).num_parameters()  # independent count
    assert W.entry_dict(remote)["params"] is None  # not downloaded: unknown, and nothing is fetched
    assert W.resolve_weights(model="mine") == tiny_checkpoint
    # printed back as a registry entry: still no params line, and it parses to the same entry
    toml = W.entry_to_toml(mine)
    assert "params =" not in toml
    (tmp_path / "again.toml").write_text(toml, encoding="utf-8")
    assert W.parse_registry(tmp_path / "again.toml")["mine"] == mine
    r = CliRunner().invoke(app, ["weights", "list"])
    assert r.exit_code == 0, r.output
    rows = {line.split()[0]: line.split() for line in r.output.splitlines() if line.split()}
    assert rows["mine"][3] == f"{UNet(PRESETS['tiny']).num_parameters() / 1e3:.1f}k" and rows["remote"][3] == "?"
    with pytest.raises(ConfigError, match="params and bytes must be positive"):
        registry.write_text(registry.read_text().replace('task = "general"\n', 'task = "general"\nparams = 0\n', 1))
        W.registry_entries()


def test_the_readme_example_writes_outside_what_git_tracks() -> None:
    """The README's upscale command writes into a folder .gitignore names (a new user's `git status` stays clean)."""
    import re

    root = Path(__file__).resolve().parents[1]
    cmd = next(ln for ln in (root / "README.md").read_text(encoding="utf-8").splitlines()
               if ln.startswith("dreamsr upscale "))
    out = re.search(r"-o (\S+)", cmd)
    assert out is not None, cmd
    top = out.group(1).split("/")[0]
    ignored = (root / ".gitignore").read_text(encoding="utf-8").split()
    assert "/" in out.group(1) and (f"/{top}/" in ignored or f"{top}/" in ignored), (cmd, ignored)
