"""Image files <-> tensors: every colour mode, 16-bit PNG, EXIF orientation, ICC, animation, limits,
bad files, atomic saving; and the resize/colour helpers."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageOps

from dreamsr.errors import InputError
from dreamsr.images import (OutputError, OutputExistsError, atomic_write, downsample, from_model, load_image, load_rgb,
                            resize, rgb_to_grey, rgb_to_y, save_image, to_model, upsample)
from tests._helpers import photo_path

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _arr(h: int = 12, w: int = 17, c: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def _u8(t: torch.Tensor) -> np.ndarray:
    return (t * 255).round().permute(1, 2, 0).numpy().astype(np.uint8)


# ---- modes ----------------------------------------------------------------------------------------------
def test_rgb_png_is_exact(tmp_path: Path) -> None:
    a = _arr(c=3)
    Image.fromarray(a).save(tmp_path / "a.png")
    im = load_image(tmp_path / "a.png")
    assert im.rgb.dtype == torch.float32 and im.rgb.shape == (3, 12, 17) and im.alpha is None
    assert (im.grey, im.bits, im.format, im.frames, im.warnings) == (False, 8, "PNG", 1, [])
    assert np.array_equal(_u8(im.rgb), a)


def test_rgba_keeps_alpha_apart(tmp_path: Path) -> None:
    a = _arr()
    Image.fromarray(a, "RGBA").save(tmp_path / "a.png")
    im = load_image(tmp_path / "a.png")
    assert np.array_equal(_u8(im.rgb), a[:, :, :3]) and np.array_equal(_u8(im.alpha)[:, :, 0], a[:, :, 3])
    save_image(tmp_path / "b.png", im.rgb, alpha=im.alpha)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), a)


@pytest.mark.parametrize("mode", ["L", "LA", "1"])
def test_grey_modes_run_as_rgb_and_save_grey(tmp_path: Path, mode: str) -> None:
    a = _arr(c=2)
    src = Image.fromarray(a, "LA") if mode == "LA" else Image.fromarray(a[:, :, 0]).convert(mode)
    src.save(tmp_path / "g.png")
    im = load_image(tmp_path / "g.png")
    assert im.grey and torch.equal(im.rgb[0], im.rgb[1]) and torch.equal(im.rgb[1], im.rgb[2])
    expect_l = np.asarray(src.convert("L"))
    assert np.array_equal(_u8(im.rgb)[:, :, 0], expect_l)
    assert (im.alpha is not None) == (mode == "LA")
    save_image(tmp_path / "out.png", im.rgb, alpha=im.alpha, grey=im.grey)
    back = Image.open(tmp_path / "out.png")
    assert back.mode == ("LA" if mode == "LA" else "L")
    assert np.array_equal(np.asarray(back.convert("L")), expect_l)


def test_palette_with_transparency_becomes_rgba(tmp_path: Path) -> None:
    p = Image.fromarray(_arr(c=3)).quantize(8)
    p.save(tmp_path / "p.png", transparency=3)
    p.save(tmp_path / "p.gif", transparency=3)
    idx = np.asarray(p)
    expect = np.asarray(p.convert("RGB"))
    for name in ("p.png", "p.gif"):
        im = load_image(tmp_path / name)
        assert im.alpha is not None and not im.grey
        alpha = _u8(im.alpha)[:, :, 0]
        assert np.array_equal(alpha == 0, idx == 3) and np.all(alpha[idx != 3] == 255)
        assert np.array_equal(_u8(im.rgb), expect)
    p.save(tmp_path / "opaque.png")
    assert load_image(tmp_path / "opaque.png").alpha is None


def test_cmyk_is_converted_to_rgb(tmp_path: Path) -> None:
    a = _arr(c=3)
    Image.fromarray(a).convert("CMYK").save(tmp_path / "c.tif")
    im = load_image(tmp_path / "c.tif")
    assert im.mode == "CMYK" and im.rgb.shape == (3, 12, 17)
    assert np.array_equal(_u8(im.rgb), a)  # the naive CMYK round trip is exact
    assert any("CMYK" in w for w in im.warnings)  # no profile: said so
    # with a (here unusable) profile the naive conversion is the fallback, never a crash
    Image.fromarray(a).convert("CMYK").save(tmp_path / "c2.tif", icc_profile=b"not a profile")
    assert np.array_equal(_u8(load_image(tmp_path / "c2.tif").rgb), a)


# ---- 16-bit PNG -----------------------------------------------------------------------------------------
def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _png_with_random_filters(arr16: np.ndarray, seed: int = 0) -> bytes:
    """Reference PNG encoder in plain Python (PNG spec 9.2), a random filter type per row."""
    h, w, c = arr16.shape
    rows = arr16.astype(">u2").reshape(h, w * c).view(np.uint8).reshape(h, -1).astype(int).tolist()
    bpp, rng, raw = 2 * c, np.random.default_rng(seed), bytearray()
    for r, row in enumerate(rows):
        f = int(rng.integers(0, 5))
        raw.append(f)
        for i, v in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b = rows[r - 1][i] if r else 0
            cc = rows[r - 1][i - bpp] if r and i >= bpp else 0
            raw.append((v - [0, a, b, (a + b) // 2, _paeth(a, b, cc)][f]) % 256)

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_png_decodes_losslessly_whatever_the_filters(tmp_path: Path, channels: int) -> None:
    a = np.random.default_rng(channels).integers(0, 65536, (9, 13, channels)).astype(np.uint16)
    (tmp_path / "x.png").write_bytes(_png_with_random_filters(a, seed=channels))
    im = load_image(tmp_path / "x.png")
    assert im.bits == 16 and im.grey == (channels <= 2) and (im.alpha is not None) == (channels in (2, 4))
    planes = [im.rgb[:1] if channels <= 2 else im.rgb] + ([im.alpha] if im.alpha is not None else [])
    back = (torch.cat(planes) * 65535).round().permute(1, 2, 0).numpy().astype(np.uint16)
    assert np.array_equal(back, a)
    # 16 bits out: the written file decodes to the same values, and Pillow agrees with it
    save_image(tmp_path / "y.png", im.rgb, alpha=im.alpha, grey=im.grey, bits=16)
    again = load_image(tmp_path / "y.png")
    assert again.bits == 16 and torch.equal(again.rgb, im.rgb)
    pil = Image.open(tmp_path / "y.png")
    if channels == 1:  # Pillow reads 16-bit grey as I;16, exactly
        assert np.array_equal(np.asarray(pil), a[:, :, 0])
    else:  # and reduces 16-bit colour/alpha to the high byte
        pil8 = np.asarray(pil.convert("LA") if channels == 2 else pil)
        assert np.array_equal(pil8, (a >> 8).astype(np.uint8))


def test_unfilter_matches_a_reference_on_all_filter_types_at_edge_sizes(tmp_path: Path) -> None:
    """One row, one column, a single pixel: every filter's left/up/up-left neighbours at the borders."""
    rng = np.random.default_rng(3)
    for h, w, c in [(1, 1, 1), (5, 1, 3), (1, 9, 4), (17, 23, 3)]:
        a = rng.integers(0, 65536, (h, w, c)).astype(np.uint16)
        (tmp_path / "x.png").write_bytes(_png_with_random_filters(a, seed=h))
        im = load_image(tmp_path / "x.png")
        planes = [im.rgb[:1] if c == 1 else im.rgb] + ([im.alpha] if im.alpha is not None else [])
        assert np.array_equal((torch.cat(planes) * 65535).round().permute(1, 2, 0).numpy().astype(np.uint16), a)


def test_16bit_grey_png_written_by_pillow(tmp_path: Path) -> None:
    a = np.random.default_rng(0).integers(0, 65536, (20, 31)).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")  # Pillow's encoder (its own filter choice)
    im = load_image(tmp_path / "g16.png")
    assert im.bits == 16 and im.grey
    assert np.array_equal((im.rgb[0] * 65535).round().numpy().astype(np.uint16), a)


def test_16bit_to_jpeg_says_it_drops_to_8_bits(tmp_path: Path) -> None:
    rgb = torch.rand(3, 8, 8)
    warns = save_image(tmp_path / "a.jpg", rgb, bits=16, alpha=torch.ones(1, 8, 8))
    assert any("16-bit" in w for w in warns) and any("alpha" in w for w in warns)
    assert Image.open(tmp_path / "a.jpg").mode == "RGB"


# ---- orientation, ICC, animation ------------------------------------------------------------------------
@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int) -> None:
    a = _arr(c=3)
    src = Image.fromarray(a)
    exif = src.getexif()
    exif[0x0112] = orientation
    src.save(tmp_path / "o.png", exif=exif.tobytes())
    expect = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")).convert("RGB"))
    assert expect.shape[:2] == ((17, 12) if orientation >= 5 else (12, 17))
    assert np.array_equal(_u8(load_image(tmp_path / "o.png").rgb), expect)
    # the 16-bit decoder applies it the same way
    save_image(tmp_path / "plain16.png", torch.from_numpy(a).permute(2, 0, 1) / 255, bits=16)  # a * 257
    png = bytearray((tmp_path / "plain16.png").read_bytes())
    exif_bytes = exif.tobytes()
    chunk = struct.pack(">I", len(exif_bytes)) + b"eXIf" + exif_bytes + struct.pack(">I", zlib.crc32(b"eXIf" + exif_bytes))
    png[33:33] = chunk  # after IHDR
    (tmp_path / "o16.png").write_bytes(bytes(png))
    im16 = load_image(tmp_path / "o16.png")
    assert im16.bits == 16 and np.array_equal(_u8(im16.rgb), expect)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tif"])
def test_icc_profile_is_carried_over(tmp_path: Path, ext: str) -> None:
    Image.fromarray(_arr(c=3)).save(tmp_path / f"a{ext}", icc_profile=SRGB)
    im = load_image(tmp_path / f"a{ext}")
    assert im.icc_profile == SRGB
    save_image(tmp_path / f"b{ext}", im.rgb, icc_profile=im.icc_profile)
    assert Image.open(tmp_path / f"b{ext}").info.get("icc_profile") == SRGB
    save_image(tmp_path / "b16.png", im.rgb, icc_profile=im.icc_profile, bits=16)
    assert load_image(tmp_path / "b16.png").icc_profile == SRGB


def test_animated_gif_gives_first_frame_and_a_warning(tmp_path: Path) -> None:
    frames = [Image.fromarray(_arr(c=3, seed=s)).quantize(16) for s in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    im = load_image(tmp_path / "anim.gif")
    assert im.frames == 3 and any("first of its 3 frames" in w for w in im.warnings)
    assert np.array_equal(_u8(im.rgb), np.asarray(frames[0].convert("RGB")))


def test_real_photos_from_the_wheel() -> None:
    astro = load_image(photo_path("astronaut.png"))
    assert astro.size == (512, 512) and not astro.grey
    cam = load_image(photo_path("camera.png"))
    assert cam.grey and cam.size == (512, 512)
    rocket = load_image(photo_path("rocket.jpg"))
    assert rocket.size == (427, 640) and rocket.format == "JPEG"
    assert torch.equal(load_rgb(photo_path("astronaut.png")), astro.rgb)  # one decoder, two entry points


# ---- bad files and limits -------------------------------------------------------------------------------
def test_bad_files_are_one_line_input_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("this is not an image\n")
    Image.fromarray(_arr(h=64, w=64, c=3)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    Image.fromarray(_arr(h=64, w=64, c=3)).save(tmp_path / "ok.jpg")
    jdata = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(jdata[: len(jdata) // 2])
    cases = {"missing.png": "no such file", "empty.png": "empty file", "text.png": "not an image",
             "trunc.png": "truncated", "trunc.jpg": "truncated"}
    for name, words in cases.items():
        with pytest.raises(InputError) as err:
            load_image(tmp_path / name)
        msg = str(err.value)
        assert name in msg and words in msg and "\n" not in msg
    with pytest.raises(InputError, match="folder"):
        load_image(tmp_path)


def test_pixel_limit_refuses_before_decoding(tmp_path: Path) -> None:
    Image.fromarray(_arr(h=30, w=40, c=3)).save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png", max_pixels=1200).size == (30, 40)
    with pytest.raises(InputError, match="limit"):
        load_image(tmp_path / "a.png", max_pixels=1199)
    # a header claiming 100000 x 100000 pixels with almost no data: refused from the header alone
    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
    (tmp_path / "bomb.png").write_bytes(bomb)
    with pytest.raises(InputError, match="bomb"):
        load_image(tmp_path / "bomb.png")


# ---- saving ---------------------------------------------------------------------------------------------
def test_save_is_atomic_and_never_replaces_without_overwrite(tmp_path: Path) -> None:
    rgb = torch.rand(3, 10, 10)
    save_image(tmp_path / "a.png", rgb)
    before = (tmp_path / "a.png").read_bytes()
    with pytest.raises(OutputExistsError):
        save_image(tmp_path / "a.png", torch.zeros(3, 10, 10))
    assert (tmp_path / "a.png").read_bytes() == before
    save_image(tmp_path / "a.png", torch.zeros(3, 10, 10), overwrite=True)
    assert (tmp_path / "a.png").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o666 & ~umask


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def boom(fh: io.BufferedWriter) -> None:
        fh.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="No space"):
        atomic_write(tmp_path / "x.png", boom)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_destinations(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        save_image(tmp_path / "nope" / "a.png", torch.rand(3, 4, 4))
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError):
        save_image(tmp_path / "file" / "a.png", torch.rand(3, 4, 4))
    with pytest.raises(OutputError, match="cannot write .gif"):
        save_image(tmp_path / "a.gif", torch.rand(3, 4, 4))
    if os.geteuid() != 0:  # root ignores permissions
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(OutputError, match="cannot write"):
                save_image(ro / "a.png", torch.rand(3, 4, 4))
        finally:
            ro.chmod(0o700)


def test_quantisation_rounds_to_nearest(tmp_path: Path) -> None:
    rgb = torch.tensor([0.0, 0.51 / 255, 0.49 / 255, 1.0, 1.2, -0.1]).view(1, 1, 6).expand(3, 1, 6)
    save_image(tmp_path / "q.png", rgb)
    assert np.asarray(Image.open(tmp_path / "q.png"))[0, :, 0].tolist() == [0, 1, 0, 255, 255, 0]


# ---- tensor helpers (behaviour other modules rely on) ----------------------------------------------------
def test_resize_helpers_keep_their_behaviour() -> None:
    x = torch.rand(3, 16, 24, generator=torch.Generator().manual_seed(0))
    assert downsample(x, 4).shape == (3, 4, 6) and upsample(x, 2).shape == (3, 32, 48)
    assert torch.equal(resize(x, (16, 24)), x)
    c = torch.full((3, 8, 8), 0.3)
    assert torch.allclose(upsample(downsample(c.repeat(1, 2, 2), 2), 2), c.repeat(1, 2, 2), atol=1e-6)
    with pytest.raises(ValueError):
        downsample(torch.rand(3, 10, 10), 4)
    assert torch.equal(from_model(to_model(x)), x.clamp(0, 1)) or float((from_model(to_model(x)) - x).abs().max()) < 1e-6


def test_grey_and_luma_conversions_match_references() -> None:
    a = _arr(c=3)
    t = torch.from_numpy(a).permute(2, 0, 1).float() / 255
    pil_l = np.asarray(Image.fromarray(a).convert("L")).astype(int)
    assert np.abs(_u8(rgb_to_grey(t))[:, :, 0].astype(int) - pil_l).max() <= 1
    white, black = torch.ones(3, 1, 1), torch.zeros(3, 1, 1)
    assert float(rgb_to_y(white)) == pytest.approx(235 / 255) and float(rgb_to_y(black)) == pytest.approx(16 / 255)
