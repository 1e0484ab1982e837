"""Weight files are untrusted input (issue #27): metadata is checked before anything is built, NaN/inf weights
are refused, sampling that turns non-finite writes nothing, outputs are never replaced by surprise and never an
input, and every failure is one clear line with a non-zero exit: no traceback, no new or changed file.

Every hostile file is built here from the tiny preset (tmp_path); nothing is downloaded."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from dreamsr.checkpoint import LIMITS, load_checkpoint, read_info, save_checkpoint
from dreamsr.cli import app
from dreamsr.cli.common import printable
from dreamsr.config import check_types
from dreamsr.errors import CheckpointError, ConfigError, OutputError, OutputExistsError, SamplingError
from dreamsr.families.sr3.unet import UNetConfig
from dreamsr.options import SamplingOptions
from tests._helpers import tiny_info, write_tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- helpers ------------------------------------------------------------------------------------------------
def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden temporary files included) with its sha256."""
    return {str(p.relative_to(folder)): sha(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(*args: object) -> Any:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def one_error(result: Any) -> str:
    """The single ``error:`` line of a failed command (and no traceback anywhere)."""
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "Traceback" not in text
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) >= 1, text
    return lines[0]


def rewrite(src: Path, dst: Path, *, meta: dict[str, str] | None = None,
            tensors: Callable[[dict[str, torch.Tensor]], None] | None = None) -> Path:
    """``src`` saved again as ``dst`` with metadata entries replaced and/or the tensors edited in place."""
    with safe_open(str(src), framework="pt") as fh:
        t, m = {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata())
    m.update(meta or {})
    if tensors is not None:
        tensors(t)
    save_file(t, str(dst), metadata=m)
    return dst


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "tiny.safetensors", scale=2)


@pytest.fixture(scope="module")
def tiny_meta(tiny: Path) -> dict[str, str]:
    with safe_open(str(tiny), framework="pt") as fh:
        return dict(fh.metadata())


@pytest.fixture
def image(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "in.png"
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(path)
    return path


def _network(meta: dict[str, str], **changes: Any) -> str:
    return json.dumps({**json.loads(meta["network"]), **changes})


# (name, metadata changes as a function of the tiny file's metadata, the error line's key content)
HOSTILE: list[tuple[str, Callable[[dict[str, str]], dict[str, str]], str]] = [
    ("scale-huge", lambda m: {"scale": "100000"},
     "scale = 100000 is above dreamsr's limit for a checkpoint (scale: 16)"),
    ("scale-negative", lambda m: {"scale": "-4"}, "scale must be a positive integer, got '-4'"),
    ("scale-zero", lambda m: {"scale": "0"}, "scale must be a positive integer, got 0"),
    ("scale-float", lambda m: {"scale": "4.0"}, "scale must be a positive integer, got '4.0'"),
    ("num-steps", lambda m: {"diffusion": json.dumps({**json.loads(m["diffusion"]), "num_steps": 10 ** 10})},
     "diffusion.num_steps = 1e+10 is above dreamsr's limit for a checkpoint (steps: 100000)"),
    ("norm-groups-0", lambda m: {"network": _network(m, norm_groups=0)}, "norm_groups must be at least 1, got 0"),
    ("float-channels", lambda m: {"network": _network(m, inner_channels=4.0)},
     "network.inner_channels must be an integer, got 4.0"),
    ("bool-channels", lambda m: {"network": _network(m, inner_channels=True)},
     "network.inner_channels must be an integer, got True"),
    ("nan-dropout", lambda m: {"network": _network(m, dropout=float("nan"))},
     "network.dropout must be a finite number, got nan"),
    ("wide", lambda m: {"network": _network(m, inner_channels=5000, norm_groups=1)},
     "network.inner_channels = 5000 is above dreamsr's limit for a checkpoint (width: 4096)"),
    ("deep", lambda m: {"network": _network(m, res_blocks=1000)},
     "network.res_blocks = 1000 is above dreamsr's limit for a checkpoint (depth: 64)"),
    ("levels", lambda m: {"network": _network(m, channel_mults=[1] * 9)},
     "network.channel_mults lists 9 entries; dreamsr's limit for a checkpoint is 8 levels"),
    ("giant", lambda m: {"network": _network(m, inner_channels=4096, channel_mults=[8] * 8, res_blocks=64,
                                             norm_groups=1)},
     "the network config describes a network far larger than the file's 109 tensors of 10,111 values"),
    ("sampling-steps-text", lambda m: {"sampling": json.dumps({"steps": "many"})},
     "sampling.steps must be an integer, got 'many'"),
    ("sampling-steps-huge", lambda m: {"sampling": json.dumps({"steps": 10 ** 9})},
     "sampling.steps = 1e+09 is above dreamsr's limit for a checkpoint (steps: 100000)"),
    ("sampling-ensemble", lambda m: {"sampling": json.dumps({"ensemble": 3})},
     "recommended sampling: ensemble must be 1, 2, 4 or 8, got 3"),
    ("network-not-json", lambda m: {"network": "{"}, "network is not valid JSON"),
    ("network-list", lambda m: {"network": "[1, 2]"}, "network must be a JSON object, got [1, 2]"),
    ("training-list", lambda m: {"training": "[]"}, "training must be a JSON object"),
]


# ---- metadata: checked before anything is built ---------------------------------------------------------------
@pytest.mark.parametrize("name,edit,message", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_metadata_is_one_line_from_upscale_and_info(name: str, edit: Callable, message: str, tiny: Path,
                                                           tiny_meta: dict[str, str], tmp_path: Path,
                                                           image: Path) -> None:
    bad = rewrite(tiny, tmp_path / f"{name}.safetensors", meta=edit(tiny_meta))
    before = snapshot(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    assert time.perf_counter() - t0 < 1.0  # refused from the header, before any network is built
    assert message in str(err.value) and str(err.value).startswith(str(bad))

    for args in (["upscale", image, "--weights", bad, "-o", tmp_path / "out.png", "--steps", "2"],
                 ["weights", "info", bad], ["weights", "info", bad, "--json"]):
        result = cli(*args)
        assert result.exit_code == 1, result.output
        line = one_error(result)
        assert message in line and str(bad) in line
        assert result.stdout == ""
    assert snapshot(tmp_path) == before  # no output, no temporary file, the input untouched


def test_memory_bomb_metadata_fails_fast_without_building(tiny: Path, tiny_meta: dict[str, str],
                                                          tmp_path: Path) -> None:
    bombs = [rewrite(tiny, tmp_path / f"bomb{i}.safetensors", meta=m) for i, m in enumerate([
        {"scale": "100000"},
        {"diffusion": json.dumps({**json.loads(tiny_meta["diffusion"]), "num_steps": 10 ** 10})},
        {"network": _network(tiny_meta, inner_channels=4096, channel_mults=[8] * 8, res_blocks=64,
                             attention_levels=[0, 1, 2, 3, 4, 5, 6, 7], norm_groups=1)},
    ])]
    read_info(tiny)  # the first meta build pays one-off set-up costs
    for bomb in bombs:
        t0 = time.perf_counter()
        with pytest.raises(CheckpointError):
            load_checkpoint(bomb)
        assert time.perf_counter() - t0 < 0.25, bomb.name


def test_real_files_still_load_and_describe(tiny: Path) -> None:
    model, info = load_checkpoint(tiny)
    assert info.scale == 2 and read_info(tiny) == info
    assert sum(p.numel() for p in model.parameters()) == 10_111


def test_check_types_names_the_field() -> None:
    check_types(UNetConfig, {"inner_channels": 4, "channel_mults": [1, 2], "dropout": 0}, "network")
    with pytest.raises(ConfigError, match=r"^network\.channel_mults must be a list of integers, got \[1, 2\.5\]$"):
        check_types(UNetConfig, {"channel_mults": [1, 2.5]}, "network")
    with pytest.raises(ConfigError, match=r"^sampling\.sampler must be one of 'ddim', 'ddpm', got 'euler'$"):
        check_types(SamplingOptions, {"sampler": "euler"}, "sampling")
    with pytest.raises(ConfigError, match=r"^sampling\.eta must be a finite number or null, got inf$"):
        check_types(SamplingOptions, {"eta": float("inf")}, "sampling")
    assert set(LIMITS) == {"scale", "steps", "codebook", "width", "depth", "levels", "parameters"}


# ---- non-finite weights and sampling ------------------------------------------------------------------------
def test_nan_weights_never_make_an_image(tiny: Path, tmp_path: Path, image: Path) -> None:
    key = "tail.2.weight"

    def poison(t: dict[str, torch.Tensor]) -> None:
        t[key] = t[key].clone()
        t[key].view(-1)[3] = float("nan")
        t[key].view(-1)[5] = float("inf")

    bad = rewrite(tiny, tmp_path / "nan.safetensors", tensors=poison)
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=f"tensor '{key}' holds 2 non-finite values"):
        load_checkpoint(bad)
    result = cli("upscale", image, "--weights", bad, "-o", tmp_path / "out.png", "--steps", "2")
    assert result.exit_code == 1
    assert f"tensor '{key}' holds 2 non-finite values (NaN or inf); these weights are broken" in one_error(result)
    assert snapshot(tmp_path) == before


def test_sampling_that_overflows_writes_nothing(tiny: Path, tmp_path: Path, image: Path) -> None:
    """Finite weights whose activations overflow to inf: the run stops with one line, no black image."""
    def huge(t: dict[str, torch.Tensor]) -> None:
        t["tail.2.weight"] = torch.full_like(t["tail.2.weight"], 3e38)

    bad = rewrite(tiny, tmp_path / "huge.safetensors", tensors=huge)
    before = snapshot(tmp_path)
    result = cli("upscale", image, "--weights", bad, "-o", tmp_path / "out.png", "--steps", "2",
                 "--precision", "fp32")
    assert result.exit_code == 1
    line = one_error(result)
    assert "the network's prediction holds NaN or inf values (sr3 model, fp32); sampling stopped and no image " \
           "was written" in line
    assert snapshot(tmp_path) == before


def test_upscaler_stops_on_a_non_finite_prediction(tmp_path: Path) -> None:
    from dreamsr.jobs.pipeline import Upscaler

    class NaNNet(torch.nn.Module):
        def forward(self, y_t: torch.Tensor, cond: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
            return torch.full_like(y_t, float("nan"))

    calls = []
    up = Upscaler(NaNNet(), tiny_info(scale=2), precision="fp32", channels_last=False)
    with pytest.raises(SamplingError, match="sampling stopped and no image was written"):
        up.upscale(torch.rand(3, 8, 8), steps=5, tile=0, callback=lambda d, t: calls.append(d))
    assert calls == []  # stopped at the first network call, not after the whole chain


# ---- writing checkpoints: no surprise overwrite, OS errors as one line, nothing left behind ------------------
def test_save_checkpoint_refuses_what_would_not_load(tmp_path: Path) -> None:
    from dreamsr.families.sr3.unet import UNet

    info = tiny_info()
    model = UNet(info.network)
    with torch.no_grad():
        model.tail[2].weight.view(-1)[0] = 1e6  # finite in fp32, inf in fp16
    with pytest.raises(CheckpointError, match=r"tensor 'tail\.2\.weight' does not fit in fp16 \(values up to 1e\+06\)"):
        save_checkpoint(tmp_path / "half.safetensors", model, info, dtype="fp16")
    with torch.no_grad():
        model.tail[2].weight.view(-1)[0] = float("nan")
    with pytest.raises(CheckpointError, match=r"the model: tensor 'tail\.2\.weight' holds 1 non-finite value"):
        save_checkpoint(tmp_path / "nan.safetensors", model, info)
    assert list(tmp_path.iterdir()) == []


def test_save_checkpoint_os_errors_and_overwrite(tmp_path: Path) -> None:
    from dreamsr.families.sr3.unet import UNet

    info = tiny_info()
    model = UNet(info.network)
    with pytest.raises(OutputError, match=r"missing: output folder does not exist$"):
        save_checkpoint(tmp_path / "missing" / "m.safetensors", model, info)
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(OutputError, match=r"dir\.safetensors: is a folder$"):
        save_checkpoint(tmp_path / "dir.safetensors", model, info)
    existing = tmp_path / "existing.safetensors"
    existing.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match=r"existing\.safetensors: exists \(use --overwrite to replace it\)"):
        save_checkpoint(existing, model, info, overwrite=False)
    assert existing.read_bytes() == b"precious"
    if os.geteuid() != 0:  # root writes into read-only folders
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
        try:
            with pytest.raises(OutputError, match=r"ro: cannot write to the output folder \(Permission denied\)"):
                save_checkpoint(ro / "m.safetensors", model, info)
            assert list(ro.iterdir()) == []
        finally:
            ro.chmod(stat.S_IRWXU)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["dir.safetensors", "existing.safetensors"] + (["ro"] if os.geteuid() != 0 else []))


def test_upscale_never_writes_over_its_weights(tiny: Path, tmp_path: Path, image: Path) -> None:
    weights = tmp_path / "w.png"  # a weights file with an image extension, named as the output
    weights.write_bytes(tiny.read_bytes())
    before = snapshot(tmp_path)
    result = cli("upscale", image, "--weights", weights, "-o", weights, "--overwrite", "--steps", "2")
    assert result.exit_code == 1
    assert f"{weights}: is the model's weights file; the output never replaces an input" in one_error(result)
    assert snapshot(tmp_path) == before


# ---- messages -----------------------------------------------------------------------------------------------
def test_error_lines_never_carry_control_characters(tmp_path: Path) -> None:
    assert printable("a\x1b[31mb\nc\té") == "a\\x1b[31mb\\nc\\té"
    odd = tmp_path / "x\x1b[2Jy.safetensors"
    odd.write_bytes(b"not a checkpoint at all")
    result = cli("weights", "info", odd)
    assert result.exit_code == 1
    line = one_error(result)
    assert "\x1b" not in result.stderr and "x\\x1b[2Jy.safetensors" in line


# ---- converters: sizes bounded before allocating, NaN/inf refused, clear messages -----------------------------
@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """A released-layout SR3 state dict of the tiny preset (schedule buffers + ``denoise_fn.*``)."""
    from dreamsr.converters.sr3 import to_released
    from dreamsr.diffusion import DiffusionConfig
    from dreamsr.families.sr3.unet import PRESETS, UNet

    torch.manual_seed(0)
    return dict(to_released(UNet(PRESETS["tiny"]), DiffusionConfig()))


SR3 = ["--from", "sr3", "--norm-groups", "2", "--scale", "2"]


def convert_fails(tmp_path: Path, src: Path, args: list[str], code: int, message: str) -> str:
    """``weights convert SRC OUT ARGS`` fails with ``code`` and one line holding ``message``; nothing changes."""
    before = snapshot(tmp_path)
    result = cli("weights", "convert", src, tmp_path / "out.safetensors", *args)
    assert result.exit_code == code, result.output
    line = one_error(result)
    assert message in line, line
    assert snapshot(tmp_path) == before
    return line


def test_sr3_schedule_memory_bombs_fail_at_once(tmp_path: Path, released: dict[str, torch.Tensor]) -> None:
    """A few-KB .pth whose stride-0 buffers claim 2^33 (or 2^30) values: refused from the shapes alone."""
    for power, message in ((33, "tensor 'betas' claims 8,589,934,592 values; dreamsr's limit for the tensors of one "
                                "file is 2,000,000,000 (parameters)"),
                           (30, "schedule buffer 'betas' claims 1,073,741,824 steps; dreamsr's limit for a "
                                "checkpoint is 100,000 (steps)")):
        bomb = {**released, "betas": torch.zeros(1).expand(2 ** power)}
        src = tmp_path / f"bomb{power}.pth"
        torch.save(bomb, src)
        assert src.stat().st_size < 200_000
        t0 = time.perf_counter()
        convert_fails(tmp_path, src, SR3, 1, message)
        assert time.perf_counter() - t0 < 1.0


def test_idm_schedule_memory_bomb_fails_at_once(tmp_path: Path) -> None:
    from dreamsr.families.idm.network import PRESETS as IDM_PRESETS
    from tests.test_convert_cli import idm_released_shapes, idm_released_state

    state = idm_released_state(idm_released_shapes(IDM_PRESETS["tiny"]), seed=1)
    state["betas"] = torch.zeros(1).expand(2 ** 30)
    src = tmp_path / "best_psnr_gen.pth"
    torch.save(state, src)
    t0 = time.perf_counter()
    convert_fails(tmp_path, src, ["--from", "idm", "--preset", "tiny", "--scale", "4"], 1,
                  "'betas' claims 1,073,741,824 steps; dreamsr's limit for a checkpoint is 100,000 (steps)")
    assert time.perf_counter() - t0 < 1.0


def test_converters_refuse_non_finite_tensors_naming_them(tmp_path: Path, released: dict[str, torch.Tensor],
                                                          tiny: Path) -> None:
    key = "denoise_fn.final_conv.block.3.weight"
    bad = {**released, key: released[key].clone()}
    bad[key].view(-1)[2] = float("inf")
    src = tmp_path / "inf_gen.pth"
    torch.save(bad, src)
    convert_fails(tmp_path, src, SR3, 1, f"inf_gen.pth: tensor '{key}' holds 1 non-finite value (NaN or inf)")

    model, _ = load_checkpoint(tiny)
    own = {k: v.clone() for k, v in model.state_dict().items()}
    own["head.weight"].view(-1)[0] = float("nan")
    src = tmp_path / "nan_own.pth"
    torch.save(own, src)
    convert_fails(tmp_path, src, ["--preset", "tiny", "--scale", "2"], 1,
                  "nan_own.pth: tensor 'head.weight' holds 1 non-finite value (NaN or inf)")


def test_convert_messages_for_what_is_no_state_dict(tmp_path: Path) -> None:
    import pickle

    text = tmp_path / "notes.pth"
    text.write_text("hello, I am text\n")
    line = convert_fails(tmp_path, text, ["--preset", "tiny", "--scale", "2"], 1,
                         "notes.pth: not a PyTorch file (17 bytes starting with b'hello, I': neither a zip archive "
                         "nor a pickle)")
    assert "pickle of Python objects" not in line

    class Payload:
        def __reduce__(self) -> tuple:
            return (os.system, ("echo \x1b[31mPWNED",))

    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps({"a": Payload()}, protocol=2))
    for args in (["--preset", "tiny", "--scale", "2"], SR3):
        line = convert_fails(tmp_path, raw, args, 1, "raw.pth: a pickle of Python objects")
        assert "loading it would run whatever code the file names, so dreamsr unpickles nothing" in line
        assert "weights_only=False" not in line and "\x1b" not in line

    script = tmp_path / "script.pth"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(script))
    for args in (["--preset", "tiny", "--scale", "2"], SR3):
        before = snapshot(tmp_path)
        result = cli("weights", "convert", script, tmp_path / "out.safetensors", *args)
        assert result.exit_code == 1
        assert "a TorchScript archive (torch.jit.save): a program, not a state dict" in one_error(result)
        assert "Warning" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert snapshot(tmp_path) == before


# ---- convert / export: never over an existing file without --overwrite, never over an input -------------------
def test_convert_and_export_refuse_existing_outputs(tmp_path: Path, tiny: Path,
                                                    released: dict[str, torch.Tensor]) -> None:
    src = tmp_path / "rel_gen.pth"
    torch.save(released, src)
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"someone else's file")
    convert_fails(tmp_path, src, SR3, 1, f"{out}: exists (use --overwrite to replace it)")
    model, _ = load_checkpoint(tiny)
    own = tmp_path / "own.pth"
    torch.save(model.state_dict(), own)
    convert_fails(tmp_path, own, ["--preset", "tiny", "--scale", "2"], 1, f"{out}: exists (use --overwrite")

    result = cli("weights", "convert", src, out, *SR3, "--overwrite")
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out)[1].family == "sr3"

    release = tmp_path / "I640000_E37_gen.pth"  # a downloaded release of that name
    release.write_bytes(src.read_bytes())
    before = snapshot(tmp_path)
    result = cli("weights", "export", "--to", "sr3", out, release)
    assert result.exit_code == 1
    assert f"{release}: exists (use --overwrite to replace it)" in one_error(result)
    assert snapshot(tmp_path) == before
    result = cli("weights", "export", "--to", "sr3", out, release, "--overwrite")
    assert result.exit_code == 0, result.output
    assert torch.equal(torch.load(release, weights_only=True)["betas"], released["betas"])


def test_no_command_writes_over_its_inputs(tmp_path: Path, tiny: Path) -> None:
    model, _ = load_checkpoint(tiny)
    own = tmp_path / "own.pt"
    torch.save(model.state_dict(), own)
    config = tmp_path / "config.safetensors"  # a --config file named like the output
    config.write_text(json.dumps(model.config.to_dict()))
    ckpt = tmp_path / "ck.safetensors"
    ckpt.write_bytes(tiny.read_bytes())
    before = snapshot(tmp_path)
    for args, message in (
            (["weights", "convert", config, config, "--config", config, "--scale", "2", "--overwrite"],
             "output and input are the same file"),
            (["weights", "convert", own, config, "--config", config, "--scale", "2", "--overwrite"],
             f"output and input are the same file: {config} is the --config file"),
            (["weights", "export", "--to", "sr3", own, own, "--overwrite"], "output and input are the same file"),
    ):
        result = cli(*args)
        assert result.exit_code == 2, result.output
        assert message in one_error(result)
    assert snapshot(tmp_path) == before


def test_convert_and_export_os_errors_are_one_line(tmp_path: Path, tiny: Path) -> None:
    model, _ = load_checkpoint(tiny)
    own = tmp_path / "own.pth"
    torch.save(model.state_dict(), own)
    args = ["--preset", "tiny", "--scale", "2"]
    before = snapshot(tmp_path)
    result = cli("weights", "convert", own, tmp_path / "missing" / "o.safetensors", *args)
    assert result.exit_code == 2 and f"output folder does not exist: {tmp_path / 'missing'}" in one_error(result)
    (tmp_path / "d.safetensors").mkdir()
    result = cli("weights", "convert", own, tmp_path / "d.safetensors", *args, "--overwrite")
    assert result.exit_code == 1 and f"{tmp_path / 'd.safetensors'}: is a folder" in one_error(result)
    (tmp_path / "d.pth").mkdir()
    result = cli("weights", "export", "--to", "sr3", tiny, tmp_path / "d.pth")
    assert result.exit_code == 1 and f"{tmp_path / 'd.pth'}: is a folder" in one_error(result)
    if os.geteuid() != 0:  # root writes into read-only folders
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
        try:
            for cmd in (["weights", "convert", own, ro / "o.safetensors", *args],
                        ["weights", "export", "--to", "sr3", tiny, ro / "o.pth"]):
                result = cli(*cmd)
                assert result.exit_code == 1
                assert f"{ro}: cannot write to the output folder (Permission denied)" in one_error(result)
            assert list(ro.iterdir()) == []
        finally:
            ro.chmod(stat.S_IRWXU)
        ro.rmdir()
    assert snapshot(tmp_path) == before


def test_a_vq_codebook_is_bounded_as_a_codebook_not_as_a_width() -> None:
    """The released ResShift v1 autoencoder has 8192 codebook entries: over the width limit, within the codebook one
    (the slow test converting the release's listing found this); a giant codebook is still refused by name."""
    from dataclasses import replace

    from dreamsr.checkpoint import check_config
    from dreamsr.errors import CheckpointError
    from dreamsr.families.resshift import ResShiftConfig
    from dreamsr.families.resshift.network import preset
    from dreamsr.first_stages.vqf4 import VQF4Config

    released = ResShiftConfig(unet=preset("small", in_channels=3, out_channels=3), first_stage="vqf4",
                              vqf4=VQF4Config())
    assert released.vqf4 is not None and released.vqf4.n_embed == 8192 > LIMITS["width"]
    check_config("resshift", released, "released.safetensors")  # no error
    giant = replace(released, vqf4=replace(released.vqf4, n_embed=100_000))
    with pytest.raises(CheckpointError, match=r"network\.vqf4\.n_embed = 100000 is above dreamsr's limit for a "
                                              r"checkpoint \(codebook: 65536\)"):
        check_config("resshift", giant, "giant.safetensors")
    wide = replace(released, vqf4=replace(released.vqf4, ch=5120))
    with pytest.raises(CheckpointError, match=r"\(width: 4096\)"):
        check_config("resshift", wide, "wide.safetensors")
