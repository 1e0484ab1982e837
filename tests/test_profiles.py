"""Named sampling profiles (``--profile``): stored in the checkpoint, resolved under the options given, refused by
name when the model has no such profile, and the same settings through the CLI as through the library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from dreamsr.checkpoint import CheckpointInfo, read_info
from dreamsr.cli import app
from dreamsr.diffusion import DiffusionConfig
from dreamsr.families.sr3.unet import PRESETS
from dreamsr.errors import CheckpointError, ConfigError
from dreamsr.jobs.pipeline import Upscaler
from tests._helpers import write_tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

FIDELITY = {"steps": 3, "back_project": True, "ensemble": 2}
DETAIL = {"steps": 5, "back_project": False, "ensemble": 1}


@pytest.fixture
def profiled(tmp_path: Path) -> Path:
    return write_tiny_checkpoint(tmp_path / "p.safetensors", scale=2, sampling=FIDELITY,
                                 profiles={"fidelity": FIDELITY, "detail": DETAIL})


def test_profiles_round_trip_and_resolve(profiled: Path) -> None:
    info = read_info(profiled)
    assert info.profiles == {"fidelity": FIDELITY, "detail": DETAIL} and info.sampling == FIDELITY
    up = Upscaler.from_checkpoint(profiled)
    detail = up.options(profile="detail")
    assert (detail.steps, detail.back_project, detail.ensemble) == (5, False, 1)
    plain = up.options()
    assert (plain.steps, plain.back_project, plain.ensemble) == (3, True, 2)  # no profile: `sampling`
    given = up.options(profile="detail", steps=2, ensemble=4)  # options given override the profile's fields
    assert (given.steps, given.back_project, given.ensemble) == (2, False, 4)
    with pytest.raises(ConfigError, match="no sampling profile 'sharp'; its profiles: detail, fidelity"):
        up.options(profile="sharp")


def test_a_model_without_profiles_says_so(tmp_path: Path) -> None:
    up = Upscaler.from_checkpoint(write_tiny_checkpoint(tmp_path / "n.safetensors"))
    with pytest.raises(ConfigError, match="has no named profiles"):
        up.options(profile="detail")


def test_bad_profiles_metadata_is_refused() -> None:
    meta = CheckpointInfo(network=PRESETS["tiny"], diffusion=DiffusionConfig(), scale=2).to_metadata()
    for bad in ('{"detail": {"steps": "many"}}', '{"detail": {"tiles": 3}}', '[1, 2]'):
        with pytest.raises(CheckpointError, match="invalid checkpoint metadata"):
            CheckpointInfo.from_metadata({**meta, "profiles": bad}, "x.safetensors")


def test_cli_profile(profiled: Path, tmp_path: Path) -> None:
    Image.new("RGB", (12, 10), (120, 60, 30)).save(tmp_path / "in.png")
    runner = CliRunner()
    r = runner.invoke(app, ["upscale", str(tmp_path / "in.png"), "-w", str(profiled), "-o",
                            str(tmp_path / "out.png"), "--profile", "detail", "--json", "-q"])
    assert r.exit_code == 0, r.output
    settings = json.loads(r.stdout)["settings"]
    assert (settings["steps"], settings["back_project"], settings["ensemble"]) == (5, False, 1)
    r = runner.invoke(app, ["upscale", str(tmp_path / "in.png"), "-w", str(profiled), "-o",
                            str(tmp_path / "out2.png"), "--profile", "sharp"])
    assert r.exit_code == 2 and "its profiles: detail, fidelity" in r.stderr
    assert not (tmp_path / "out2.png").exists()


def test_eval_profile(profiled: Path, tmp_path: Path) -> None:
    """eval --profile samples with the profile's settings, as upscale --profile does, and records it."""
    from dreamsr.jobs.evaluate import EvalConfig, evaluate

    data = tmp_path / "set"
    data.mkdir()
    Image.new("RGB", (24, 20), (90, 140, 30)).save(data / "a.png")
    cfg = EvalConfig(set="folder", data_dir=str(data), weights=str(profiled), metrics=("psnr",), grids=0,
                     profile="detail")
    summary = evaluate(cfg, tmp_path / "out").summary
    model = summary["model"]
    assert model["profile"] == "detail" and model["recommended_sampling"] == DETAIL
    assert (model["sampling"]["steps"], model["sampling"]["back_project"], model["sampling"]["ensemble"]) == (5, False, 1)
    with pytest.raises(ConfigError, match="no sampling profile"):
        evaluate(EvalConfig(set="folder", data_dir=str(data), weights=str(profiled), metrics=("psnr",), grids=0,
                            profile="sharp"), tmp_path / "out2")


def test_the_shipped_default_has_fidelity_and_detail_profiles() -> None:
    """dreamsr-x4-resshift: fidelity is its default sampling (what upscale does with no option), detail samples the
    whole 15-step chain with back-projection; the profiles are measured recommendations, so they are valid options."""
    from dreamsr.jobs.weights import resolve_weights

    info = read_info(resolve_weights(model="dreamsr-x4-resshift"))
    assert set(info.profiles) == {"fidelity", "detail"}
    assert info.profiles["fidelity"] == info.sampling == {"steps": 1, "back_project": True, "ensemble": 2}
    assert info.profiles["detail"] == {"steps": 15, "back_project": True, "ensemble": 1}
    # experiment B's winner (docs/experiments/dream-resshift.md): DREAM fine-tuning of the standard-trained weights
    assert info.training["p"] == 1.0 and info.training["dream_lambda"] == "input"
