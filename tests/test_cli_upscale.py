"""`dreamsr upscale` end to end on a tiny randomly initialised checkpoint: every colour mode, every sampling
option, output naming, JSON, overwrite rules, and every bad input of issue #3 (one line each, others still
processed, exit codes 0/1/2)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms
from typer.testing import CliRunner

from dreamsr.cli import app
from dreamsr.images import load_image, save_image
from dreamsr.runtime import resolve_device, resolve_precision
from tests._helpers import photo_path, write_tiny_checkpoint

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
FAST = ["--steps", "2"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A x2 tiny checkpoint (residual target)."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "tiny.safetensors", scale=2)


@pytest.fixture(autouse=True)
def _no_user_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DREAMSR_WEIGHTS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def run(*args: object) -> "object":
    result = CliRunner().invoke(app, ["upscale", *[str(a) for a in args]])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def photo(h: int = 14, w: int = 18, y: int = 200, x: int = 200) -> np.ndarray:
    """A small crop of a real photo (uint8 RGB)."""
    a = np.asarray(Image.open(photo_path("astronaut.png")).convert("RGB"))
    return np.ascontiguousarray(a[y:y + h, x:x + w])


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# ---- every mode ----------------------------------------------------------------------------------------
def make_all_modes(folder: Path) -> None:
    a = photo()
    alpha = np.linspace(0, 255, a.shape[0] * a.shape[1]).reshape(a.shape[:2]).astype(np.uint8)
    Image.fromarray(a).save(folder / "rgb.png")
    Image.fromarray(np.dstack([a, alpha]), "RGBA").save(folder / "rgba.png")
    Image.fromarray(a).convert("L").save(folder / "grey.png")
    Image.fromarray(np.dstack([a[:, :, 0], alpha]), "LA").save(folder / "greya.png")
    Image.fromarray(a).quantize(16).save(folder / "pal.png", transparency=0)
    Image.fromarray(a).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    save_image(folder / "deep.png", torch.from_numpy(a).permute(2, 0, 1) / 255, bits=16)  # 16-bit PNG
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(folder / "rotated.jpg", exif=exif.tobytes(), quality=95)
    Image.fromarray(a).save(folder / "icc.png", icc_profile=SRGB)
    frames = [Image.fromarray(a).quantize(16), Image.fromarray(a[::-1].copy()).quantize(16)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=40, loop=0)


def test_every_mode_end_to_end(tmp_path: Path, ckpt: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    make_all_modes(src)
    before = {p.name: sha(p) for p in src.iterdir()}
    r = run(src, "-o", tmp_path / "out", "-w", ckpt, *FAST)
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    expect = {"rgb_x2.png": ("RGB", (28, 36)), "rgba_x2.png": ("RGBA", (28, 36)), "grey_x2.png": ("L", (28, 36)),
              "greya_x2.png": ("LA", (28, 36)), "pal_x2.png": ("RGBA", (28, 36)), "cmyk_x2.jpg": ("RGB", (28, 36)),
              "rotated_x2.jpg": ("RGB", (36, 28)), "icc_x2.png": ("RGB", (28, 36)), "anim_x2.png": ("RGB", (28, 36))}
    assert sorted(p.name for p in out.iterdir()) == sorted([*expect, "deep_x2.png"])
    for name, (mode, (h, w)) in expect.items():
        im = Image.open(out / name)
        assert (im.mode, im.size) == (mode, (w, h)), name
    deep = load_image(out / "deep_x2.png")
    assert deep.bits == 16 and deep.size == (28, 36)  # 16-bit in, 16-bit out
    assert Image.open(out / "icc_x2.png").info.get("icc_profile") == SRGB
    # the alpha channel was upscaled by bicubic: it is a smooth ramp like the input's
    a_out = np.asarray(Image.open(out / "rgba_x2.png"))[:, :, 3].astype(int)
    assert a_out[0, 0] < 10 and a_out[-1, -1] > 245 and np.all(np.diff(a_out.ravel()[::37]) >= -3)
    assert "first of its 2 frames" in r.stderr  # animated GIF: a warning, not a failure
    assert {p.name: sha(p) for p in src.iterdir()} == before  # inputs untouched


# ---- sampling options ----------------------------------------------------------------------------------
def library_upscale(ckpt: Path, src: Path, *, device: str = "auto", precision: str = "auto", **options) -> np.ndarray:
    """What the library makes of ``src`` with ``options`` (Upscaler.upscale, CLI-independent), rounded to 8 bits
    as a PNG stores it: uint8 [H, W, 3]."""
    from dreamsr.jobs.pipeline import Upscaler

    up = Upscaler.from_checkpoint(ckpt, device=device, precision=precision)
    sr = up.upscale(load_image(src).rgb, **options)
    return sr.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


TILED = dict(tile=8, overlap=2)  # the 14x18 photo in 4 tiles (one 40 px tile by default)


SAMPLING_CASES = [  # (CLI options, the same settings for the library, those settings less the option)
    (["--tile", "8", "--overlap", "2", "--merge", "end"], dict(TILED, merge="end"), TILED),
    (["--sampler", "ddpm"], dict(sampler="ddpm"), {}),
    (["--sampler", "ddim", "--eta", "0.5"], dict(sampler="ddim", eta=0.5), {}),
    (["--start", "100", "--back-project"], dict(start=100, back_project=True), dict(start=100)),
    (["--start", "100"], dict(start=100), {}),
    (["--tile", "0"], dict(tile=0), {}),  # no longer padded to a 40 px tile
    (["--tile", "8", "--overlap", "2", "--batch", "3"], dict(TILED, batch=3), {}),
    (["--tile", "8", "--overlap", "3"], dict(tile=8, overlap=3), TILED),
    (["--precision", "bf16"], dict(precision="bf16"), dict(precision="fp32")),  # autocast really runs
    (["--device", "cpu", "--precision", "fp32"], dict(device="cpu", precision="fp32"), None),  # explicit
    (["--ensemble", "8"], dict(ensemble=8), {}),
]


@pytest.mark.parametrize("opts, settings, without", SAMPLING_CASES, ids=[" ".join(c[0]) for c in SAMPLING_CASES])
def test_sampling_options(tmp_path: Path, ckpt: Path, opts: list[str], settings: dict, without: dict | None) -> None:
    """Each option reaches the pipeline: the CLI writes exactly the image that Upscaler.upscale makes with the
    same settings, and the option matters: the library's image ``without`` it (the same settings less that
    option) is another image. Only the explicit CPU fp32 case has nothing to differ from."""
    Image.fromarray(photo()).save(tmp_path / "a.png")
    r = run(tmp_path / "a.png", "-w", ckpt, *FAST, *opts)
    assert r.exit_code == 0, r.output
    got = np.asarray(Image.open(tmp_path / "a_x2.png"))
    assert got.shape == (28, 36, 3)
    want = library_upscale(ckpt, tmp_path / "a.png", steps=2, **settings)
    assert np.array_equal(got, want), np.abs(got.astype(int) - want).max()
    if without is not None:
        assert not np.array_equal(want, library_upscale(ckpt, tmp_path / "a.png", steps=2, **without))


def test_seed_and_batch(tmp_path: Path, ckpt: Path) -> None:
    Image.fromarray(photo(20, 24)).save(tmp_path / "a.png")
    common = ["-w", ckpt, *FAST, "--sampler", "ddpm", "--tile", "8", "--overlap", "2"]
    outs = {}
    for tag, extra in {"b1": ["--batch", "1"], "b7": ["--batch", "7"], "s2": ["--seed", "2"]}.items():
        assert run(tmp_path / "a.png", "--suffix", f"_{tag}", *common, *extra).exit_code == 0
        outs[tag] = np.asarray(Image.open(tmp_path / f"a_{tag}.png")).astype(int)
    assert np.abs(outs["b1"] - outs["b7"]).max() <= 1  # batch size: same image (to float rounding)
    assert np.abs(outs["b1"] - outs["s2"]).mean() > 1  # another seed: another image


def test_non_native_scale_is_a_final_resize_and_is_said(tmp_path: Path, ckpt: Path) -> None:
    Image.fromarray(photo()).save(tmp_path / "a.png")
    r = run(tmp_path / "a.png", "-w", ckpt, *FAST, "--scale", "3")
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "a_x3.png").size == (54, 42)
    assert "x2" in r.stderr and "resized to x3 by bicubic" in r.stderr
    r = run(tmp_path / "a.png", "-w", ckpt, *FAST, "--scale", "1.5", "--json", "--quiet")
    assert r.exit_code == 0
    assert Image.open(tmp_path / "a_x1.5.png").size == (27, 21)
    summary = json.loads(r.stdout)
    assert summary["native_scale"] == 2 and summary["scale"] == 1.5


# ---- naming, folders, JSON -----------------------------------------------------------------------------
def test_output_naming_and_folders(tmp_path: Path, ckpt: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(photo()).save(tree / "top.png")
    Image.fromarray(photo()).save(tree / "sub" / "mid.jpg")
    Image.fromarray(photo()).save(tree / "sub" / "deeper" / "low.png")
    (tree / "notes.txt").write_text("not an image, not scanned")
    r = run(tree, "-r", "-o", tmp_path / "out", "-w", ckpt, *FAST)
    assert r.exit_code == 0, r.output
    got = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert got == ["sub/deeper/low_x2.png", "sub/mid_x2.jpg", "top_x2.png"]
    # not recursive: only the top level
    r = run(tree, "-o", tmp_path / "flat", "-w", ckpt, *FAST, "--suffix", "-big", "--ext", "webp")
    assert r.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["top-big.webp"]
    # a single input with -o naming a file
    r = run(tree / "top.png", "-o", tmp_path / "exact.jpg", "-w", ckpt, *FAST)
    assert r.exit_code == 0 and Image.open(tmp_path / "exact.jpg").format == "JPEG"


def test_json_summary_and_quiet(tmp_path: Path, ckpt: Path) -> None:
    Image.fromarray(photo()).save(tmp_path / "a.png")
    (tmp_path / "bad.png").write_text("nope")
    r = run(tmp_path / "a.png", tmp_path / "bad.png", "-w", ckpt, *FAST, "--json", "--quiet", "--seed", "3")
    assert r.exit_code == 1
    s = json.loads(r.stdout)
    assert (s["succeeded"], s["failed"], s["ok"]) == (1, 1, False)
    auto = resolve_precision("auto", resolve_device("auto"))  # fp32, or bf16 on a CPU with native bf16
    assert s["settings"]["seed"] == 3 and s["settings"]["steps"] == 2 and s["precision"] == auto
    ok, bad = s["images"]
    assert ok["status"] == "ok" and ok["input_size"] == [18, 14] and ok["output_size"] == [36, 28]
    assert bad["status"] == "failed" and "not an image" in bad["error"]
    assert len(error_lines(r.stderr)) == 2  # the bad file + the summary; nothing else with --quiet
    assert r.stderr.count("\n") == 2


# ---- never replace ------------------------------------------------------------------------------------
def test_existing_output_needs_overwrite(tmp_path: Path, ckpt: Path) -> None:
    Image.fromarray(photo()).save(tmp_path / "a.png")
    assert run(tmp_path / "a.png", "-w", ckpt, *FAST).exit_code == 0
    first = sha(tmp_path / "a_x2.png")
    r = run(tmp_path / "a.png", "-w", ckpt, *FAST, "--seed", "5", "--sampler", "ddpm")
    assert r.exit_code == 1 and "exists" in r.stderr and "--overwrite" in r.stderr
    assert sha(tmp_path / "a_x2.png") == first
    r = run(tmp_path / "a.png", "-w", ckpt, *FAST, "--seed", "5", "--sampler", "ddpm", "--overwrite")
    assert r.exit_code == 0 and sha(tmp_path / "a_x2.png") != first


def test_the_input_is_never_replaced(tmp_path: Path, ckpt: Path) -> None:
    Image.fromarray(photo()).save(tmp_path / "a.png")
    before = sha(tmp_path / "a.png")
    for extra in ([], ["--overwrite"]):
        r = run(tmp_path / "a.png", "-o", tmp_path / "a.png", "-w", ckpt, *FAST, *extra)
        assert r.exit_code == 1 and "replace the input" in r.stderr
        r = run(tmp_path / "a.png", "--suffix", "", "-w", ckpt, *FAST, *extra)
        assert r.exit_code == 1
    assert sha(tmp_path / "a.png") == before and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


# ---- Ctrl-C ---------------------------------------------------------------------------------------------
def test_ctrl_c_while_sampling_keeps_the_finished_images_and_writes_no_partial_one(
        tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dreamsr.families.sr3.unet import UNet

    src = tmp_path / "in"
    src.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(photo()).save(src / f"{name}.png")
    real, calls = UNet.forward, {"n": 0}

    def forward(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # 2 steps x 1 tile per image: the first network call for b.png
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(UNet, "forward", forward)
    out = tmp_path / "out"
    r = run(src, "-o", out, "-w", ckpt, *FAST, "--quiet")
    assert r.exit_code == 130, r.output
    assert error_lines(r.stderr) == ["error: interrupted; 1 image(s) written"] and "Traceback" not in r.output
    assert sorted(p.name for p in out.iterdir()) == ["a_x2.png"]  # nothing for b or c, no temporary file
    assert Image.open(out / "a_x2.png").size == (36, 28)


def test_ctrl_c_while_writing_leaves_neither_the_output_nor_a_temporary_file(
        tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(photo()).save(tmp_path / "a.png")
    real = Image.Image.save

    def save(self, fp, *args, **kwargs):
        if isinstance(fp, (str, Path)):
            return real(self, fp, *args, **kwargs)
        fp.write(b"\x89PNG\r\n\x1a\n half an image")  # the encoder got this far
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", save)
    out = tmp_path / "out"
    out.mkdir()
    r = run(tmp_path / "a.png", "-o", out, "-w", ckpt, *FAST, "--quiet")
    assert r.exit_code == 130, r.output
    assert error_lines(r.stderr) == ["error: interrupted; 0 image(s) written"]
    assert list(out.iterdir()) == []


# ---- bad inputs ----------------------------------------------------------------------------------------
def test_bad_inputs_one_line_each_and_the_rest_processed(tmp_path: Path, ckpt: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(photo()).save(d / "good.png")
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("hello, I am text\n")
    Image.fromarray(photo(40, 40)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (d / "trunc.png").write_bytes(data[: len(data) // 2])
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(d / "dot.png")
    Image.fromarray(photo(60, 60)).save(d / "huge.png")  # 3600 px > --max-pixels 3000
    frames = [Image.fromarray(photo()).quantize(8), Image.fromarray(photo(y=100)).quantize(8)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:])
    (tmp_path / "nothing").mkdir()
    out = tmp_path / "out"
    r = run(d, tmp_path / "missing.png", tmp_path / "nothing", "-o", out, "-w", ckpt, *FAST, "--max-pixels", "3000")
    assert r.exit_code == 1
    errs = error_lines(r.stderr)
    for name, words in {"missing.png": "no such file", "nothing": "no images found", "empty.png": "empty file",
                        "text.png": "not an image", "trunc.png": "truncated", "dot.png": "1x1",
                        "huge.png": "limit"}.items():
        mine = [e for e in errs if name in e]
        assert len(mine) == 1 and words in mine[0], (name, errs)
    assert errs[-1] == "error: 7 of 9 input(s) failed; 2 written"
    assert sorted(p.name for p in out.iterdir()) == ["anim_x2.png", "good_x2.png"]  # nothing half-written
    assert "Traceback" not in r.output


def test_unwritable_output_folder(tmp_path: Path, ckpt: Path) -> None:
    Image.fromarray(photo()).save(tmp_path / "a.png")
    Image.fromarray(photo()).save(tmp_path / "b.png")
    (tmp_path / "blocker").write_text("a file where a folder should be")
    r = run(tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "blocker" / "out", "-w", ckpt, *FAST)
    assert r.exit_code == 1
    errs = error_lines(r.stderr)
    assert len(errs) == 3 and all("output folder" in e for e in errs[:2])


@pytest.mark.parametrize("opts,words", [
    (["--scale", "0"], "--scale"), (["--steps", "0"], "--steps"), (["--tile", "8", "--overlap", "5"], "twice"),
    (["--batch", "0"], "--batch"), (["--ext", "gif"], "--ext"), (["--eta", "-1"], "--eta"),
    (["--start", "1", "--steps", "2"], "--start"), (["--start", "5000"], "start"), (["--suffix", "{oops}"], "{scale}"),
    (["--model", "x", "--weights", "y.safetensors"], "either"), (["--device", "tpu"], "device"),
    (["--ensemble", "3"], "--ensemble must be 1, 2, 4 or 8"),
])
def test_usage_errors_exit_2_and_write_nothing(tmp_path: Path, ckpt: Path, opts: list[str], words: str) -> None:
    Image.fromarray(photo()).save(tmp_path / "a.png")
    args = [tmp_path / "a.png", *opts] + ([] if "--weights" in opts else ["-w", ckpt])
    r = run(*args)
    assert r.exit_code == 2, r.output
    assert len(error_lines(r.stderr)) == 1 and words in error_lines(r.stderr)[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "xdg"] or \
        sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_no_model_is_a_helpful_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dreamsr.jobs.weights

    monkeypatch.setattr(dreamsr.jobs.weights, "default_model", lambda scale: None)  # a registry without defaults
    Image.fromarray(photo()).save(tmp_path / "a.png")
    r = run(tmp_path / "a.png")
    assert r.exit_code == 2
    assert error_lines(r.stderr) == [e for e in error_lines(r.stderr) if "--weights" in e] and "Traceback" not in r.output
    monkeypatch.undo()
    r = run(tmp_path / "a.png", "-w", tmp_path / "missing.safetensors")
    assert r.exit_code == 1 and "not found" in r.stderr
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    r = run(tmp_path / "a.png", "-w", tmp_path / "junk.safetensors")
    assert r.exit_code == 1 and len(error_lines(r.stderr)) == 1


def test_registry_default_model_is_used_without_options(tmp_path: Path, ckpt: Path) -> None:
    from dreamsr.families.sr3.unet import PRESETS, UNet

    reg = tmp_path / "xdg" / "dreamsr" / "weights.toml"
    reg.parent.mkdir(parents=True)
    reg.write_text(f"""schema = 1
[models.tiny-test]
sha256 = "{sha(ckpt)}"
scale = 2
task = "general"
params = {UNet(PRESETS["tiny"]).num_parameters()}
license = "MIT"
description = "test model"
default = true
path = "{ckpt}"
""")
    Image.fromarray(photo()).save(tmp_path / "a.png")
    r = run(tmp_path / "a.png", "--scale", "2", *FAST)
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "a_x2.png").size == (36, 28)


def test_console_script_exit_codes_without_traceback(tmp_path: Path, ckpt: Path) -> None:
    Image.fromarray(photo()).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "COLUMNS": "200"}
    env.pop("DREAMSR_WEIGHTS", None)
    p = subprocess.run([sys.executable, "-m", "dreamsr", "upscale", str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                        "-w", str(ckpt), "--steps", "1", "-q"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.splitlines() == [f"error: {tmp_path / 'b.png'}: empty file (0 bytes)",
                                     "error: 1 of 2 input(s) failed; 1 written"]
    assert (tmp_path / "a_x2.png").is_file()


def test_cli_pixel_limit_default_is_the_library_default() -> None:
    import inspect

    from dreamsr.cli.upscale import upscale
    from dreamsr.images import DEFAULT_MAX_PIXELS

    assert inspect.signature(upscale).parameters["max_pixels"].default.default == DEFAULT_MAX_PIXELS


def test_model_recommended_sampling_is_the_default_and_options_override_it(tmp_path: Path) -> None:
    """A checkpoint's recommended steps/back-projection/ensemble apply when the user gives none; flags win."""
    rec = write_tiny_checkpoint(tmp_path / "rec.safetensors", scale=2,
                                sampling={"steps": 2, "back_project": True, "ensemble": 2})
    src = tmp_path / "in.png"
    Image.fromarray(photo()).save(src)
    outs = {}
    for name, extra in (("default", []), ("explicit", ["--steps", "2", "--back-project", "--ensemble", "2"]),
                        ("off", ["--steps", "2", "--no-back-project"]), ("single", ["--ensemble", "1"])):
        dst = tmp_path / f"{name}.png"
        r = run(src, "-w", rec, "-o", dst, "--quiet", *extra)
        assert r.exit_code == 0, r.output
        outs[name] = np.asarray(Image.open(dst))
    assert np.array_equal(outs["default"], outs["explicit"])
    assert not np.array_equal(outs["default"], outs["off"])
    assert not np.array_equal(outs["default"], outs["single"])


def test_model_recommended_truncated_start_applies_only_to_chains_that_fit(tmp_path: Path) -> None:
    """A recommended start is used with the recommended (or fewer) steps; --start 0 and longer chains run the
    full chain instead of failing."""
    rec = write_tiny_checkpoint(tmp_path / "rec.safetensors", scale=2,
                                sampling={"steps": 2, "start": 3, "back_project": True})
    src = tmp_path / "in.png"
    Image.fromarray(photo()).save(src)
    plain = write_tiny_checkpoint(tmp_path / "plain.safetensors", scale=2,  # same weights, no start advice
                                  sampling={"steps": 2, "back_project": True})
    outs = {}
    for name, w, extra in (("default", rec, []), ("explicit", rec, ["--steps", "2", "--start", "3", "--back-project"]),
                           ("full", rec, ["--start", "0"]), ("full_explicit", plain, []),
                           ("long", rec, ["--steps", "4"]), ("long_explicit", plain, ["--steps", "4"])):
        dst = tmp_path / f"{name}.png"
        r = run(src, "-w", w, "-o", dst, "--quiet", *extra)
        assert r.exit_code == 0, r.output
        outs[name] = np.asarray(Image.open(dst))
    assert np.array_equal(outs["default"], outs["explicit"])
    assert np.array_equal(outs["full"], outs["full_explicit"])
    assert np.array_equal(outs["long"], outs["long_explicit"])
    assert not np.array_equal(outs["default"], outs["full"])
    r = run(src, "-w", rec, "-o", tmp_path / "neg.png", "--start", "-1")
    assert r.exit_code == 2 and "--start must be >= 0" in r.output + r.stderr


def test_shipped_default_model_is_used_for_other_scales(tmp_path: Path) -> None:
    """No --model/--weights: the shipped x4 default serves --scale 2 by a final resize (registry has no x2)."""
    src = tmp_path / "a.png"
    Image.fromarray(photo(8, 8)).save(src)
    r = run(src, "-o", tmp_path / "out.png", "--scale", "2", "--steps", "1", "--tile", "0")
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "out.png").size == (16, 16)
    assert "dreamsr-x4-resshift" in r.stderr and "resized to x2" in r.stderr


def test_shipped_default_takes_the_readme_steps_100(tmp_path: Path) -> None:
    """The headline `dreamsr upscale photo.png --scale 4 --steps 100` with the shipped default, a ResShift model
    whose shift chain has 15 trained steps: it samples all 15 (with its recommended back-projection), says so in
    one note, and writes what an explicit --steps 15 writes."""
    from dreamsr.checkpoint import read_info
    from dreamsr.jobs.weights import default_model, get_entry, local_path

    info = read_info(local_path(get_entry(default_model(4))))
    assert info.family == "resshift" and info.process == "shift"
    src = tmp_path / "a.png"
    Image.fromarray(photo(12, 16)).save(src)
    r = run(src, "-o", tmp_path / "a100.png", "--scale", "4", "--steps", "100")
    assert r.exit_code == 0, r.output
    assert r.stderr.count("note:") == 1 and "--steps 100 samples all 15" in r.stderr
    r15 = run(src, "-o", tmp_path / "a15.png", "--scale", "4", "--steps", "15")
    assert r15.exit_code == 0 and "note:" not in r15.stderr
    a100, a15 = (np.asarray(Image.open(tmp_path / f)) for f in ("a100.png", "a15.png"))
    assert a100.shape == (48, 64, 3) and np.array_equal(a100, a15)
    rec = run(src, "-o", tmp_path / "rec.png", "--scale", "4")  # its recommendation: fewer steps, another image
    assert rec.exit_code == 0 and not np.array_equal(np.asarray(Image.open(tmp_path / "rec.png")), a15)


# ---- the plan before long work ------------------------------------------------------------------------------
@pytest.mark.parametrize("per_call, long", [(0.05, False), (5.0, True)])
def test_plan_states_calls_and_a_timed_estimate(tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch,
                                                per_call: float, long: bool) -> None:
    """The plan counts the network calls the run will make (checked at the network), times one call on this
    machine for long jobs, and past ten minutes says what would be shorter; --json records both."""
    from dreamsr.jobs.pipeline import Upscaler

    timed: list[object] = []
    monkeypatch.setattr(Upscaler, "time_call", lambda self, plan, repeats=1: timed.append(plan) or per_call)
    from dreamsr.families.sr3.unet import UNet

    calls = 0
    forward = UNet.forward

    def counting(self, *a, **k):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return forward(self, *a, **k)

    monkeypatch.setattr(UNet, "forward", counting)
    src = tmp_path / "in.png"
    Image.fromarray(photo(30, 44)).save(src)
    steps = 40 if long else 12
    r = run(src, "-w", ckpt, "--steps", steps, "--tile", "16", "--overlap", "4", "--batch", "2",
            "--precision", "fp32", "-o", tmp_path / "out.png", "--json")
    assert r.exit_code == 0, r.stderr
    plan = json.loads(r.stdout)["plan"]
    tiles = 4 * 3  # 44 px: offsets 0, 12, 24, 28; 30 px: 0, 12, 14
    assert plan["tiles"] == tiles and plan["calls"] == steps * tiles // 2 == calls
    assert plan["estimate_seconds"] == pytest.approx(per_call * calls, rel=1e-3) and len(timed) == 1
    assert f"{calls} network calls" in r.stderr
    assert ("note: this is a long job" in r.stderr) == long


def test_plan_skips_the_timing_for_short_jobs(tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dreamsr.jobs.pipeline import Upscaler

    monkeypatch.setattr(Upscaler, "time_call", lambda *a, **k: pytest.fail("a short job must not be timed"))
    src = tmp_path / "in.png"
    Image.fromarray(photo(14, 18)).save(src)
    r = run(src, "-w", ckpt, "--steps", 3, "--precision", "fp32", "-o", tmp_path / "o.png", "--json")
    assert r.exit_code == 0, r.stderr
    plan = json.loads(r.stdout)["plan"]
    assert plan["calls"] == 3 and plan["estimate_seconds"] is None
