"""Image files <-> tensors, bicubic resizing and colour conversions.

Conventions: tensors are float32 CHW (or NCHW) in [0, 1] at the edges of the library; the model path works
in [-1, 1] (``to_model`` / ``from_model``). Bicubic resizing is PyTorch's bicubic with antialiasing, the
one LR synthesis used everywhere (training, eval, consistency); :func:`resize_pil_bicubic` is the released
SR3/DREAM code's PIL resize on 8-bit images, for ``dreamsr eval --lr-protocol release`` only.

Files: :func:`load_image` decodes any common file into a :class:`LoadedImage` (RGB tensor + optional alpha
+ what is needed to write the result back the same way: grey or colour, 8 or 16 bits, ICC profile), and
:func:`save_image` writes one atomically (temporary file in the target folder, fsync, rename). Modes:

* RGB, RGBA (alpha kept apart, to be resized by plain bicubic), L / LA / 1 (run as RGB, saved grey),
  P / PA with or without transparency (saved as RGB or RGBA: re-quantising to a palette would throw away
  the detail just added), CMYK (to sRGB through its ICC profile when it has one), I;16 grey.
* 16-bit PNG (grey, grey+alpha, RGB, RGBA) is decoded here, losslessly, because Pillow reduces 16-bit colour
  PNGs to 8 bits; a 16-bit PNG is written back with 16 bits.
* EXIF orientation is applied; the ICC profile is carried over; animated files give their first frame and
  a warning (returned, never printed); files over ``max_pixels`` are refused before decoding (decompression
  bombs).
"""

from __future__ import annotations

import io
import os
import struct
import warnings as _warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from dreamsr import files
from dreamsr.errors import InputError, OutputError, OutputExistsError

__all__ = [
    "load_rgb", "resize", "resize_pil_bicubic", "downsample", "upsample", "rgb_to_y", "rgb_to_grey", "to_model",
    "from_model",
    "LoadedImage", "load_image", "save_image", "OutputError", "OutputExistsError", "DEFAULT_MAX_PIXELS",
    "READ_EXTENSIONS", "WRITE_FORMATS", "format_for_path",
]

# Refuse inputs above this many pixels before decoding them (decompression bombs). 50 MP is a 8660x5773
# photo; at x4 that is already an 800 MP output. Pillow's own guard (2 x Image.MAX_IMAGE_PIXELS, about
# 179 MP) still applies above it.
DEFAULT_MAX_PIXELS = 50_000_000

# File extensions scanned as images in folders, and the formats an output can be written in.
READ_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
WRITE_FORMATS: dict[str, str] = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP",
                                 ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GREY_MODES = ("1", "L", "LA", "La", "I;16", "I;16L", "I;16B", "I;16N", "I")


# ---------------------------------------------------------------------------------------------------------
# Tensor helpers (used by training, evaluation and the pipeline; keep their behaviour)
# ---------------------------------------------------------------------------------------------------------

def load_rgb(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file to float32 RGB [3, H, W] in [0, 1] (EXIF orientation applied, alpha dropped).

    Raises InputError with the file name when the file cannot be decoded.
    """
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(f"{path}: cannot read image ({err})") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize with antialiasing (when shrinking) of [C,H,W] or [N,C,H,W] float to ``size`` = (H, W).

    Values are not clamped (bicubic overshoots slightly); callers clamp where a valid image is needed.
    """
    squeeze = x.dim() == 3
    x4 = x.unsqueeze(0) if squeeze else x
    h, w = x4.shape[-2:]
    if (h, w) == tuple(size):
        out = x4.clone()
    else:
        shrink = size[0] < h or size[1] < w
        out = F.interpolate(x4.float(), size=size, mode="bicubic", align_corners=False, antialias=shrink)
    return out.squeeze(0) if squeeze else out


def downsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """HR -> LR by antialiased bicubic; H and W must be multiples of ``scale``."""
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"size {h}x{w} is not a multiple of scale {scale}")
    return resize(x, (h // scale, w // scale))


def upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """LR -> HR size by bicubic (the SR3 condition)."""
    h, w = x.shape[-2:]
    return resize(x, (h * scale, w * scale))


def resize_pil_bicubic(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The released SR3/DREAM code's resize: ``x`` [C,H,W] (C = 1 or 3) in [0, 1] rounded to 8 bits, resized by
    PIL's ``Image.resize((w, h), Image.BICUBIC)`` to ``size`` = (h, w), returned as float32 [C,h,w] in [0, 1]
    holding 8-bit levels (k / 255).

    PIL's bicubic uses a = -0.5 and widens its kernel when shrinking (antialiasing); the result is rounded and
    clipped to 0..255 by PIL. ``data/prepare_data.py`` of the release makes its 16 px LR, its 128 px HR and its
    16 -> 128 condition this way (through torchvision's ``resize`` of a PIL image, which calls it), and DREAM's
    ``calculate_consistency`` downsamples the SR image this way. Not differentiable; runs on the CPU.
    """
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise InputError(f"resize_pil_bicubic takes a [1|3, H, W] image, got {tuple(x.shape)}")
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise InputError(f"resize_pil_bicubic: size must be positive, got {h}x{w}")
    arr = x.detach().to("cpu", torch.float32).clamp(0, 1).mul(255).round().to(torch.uint8)
    arr_np = arr.permute(1, 2, 0).numpy()
    im = Image.fromarray(arr_np[..., 0] if arr.shape[0] == 1 else arr_np, "L" if arr.shape[0] == 1 else "RGB")
    out = np.asarray(im.resize((w, h), Image.BICUBIC), dtype=np.uint8)
    out = out[..., None] if out.ndim == 2 else out
    return torch.from_numpy(out.copy()).permute(2, 0, 1).float().div_(255.0)


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of RGB in [0, 1]: Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255 (MATLAB rgb2ycbcr).

    Accepts [3,H,W] or [N,3,H,W]; returns [1,H,W] or [N,1,H,W] in [16/255, 235/255].
    """
    c = -3
    r, g, b = x.unbind(c)
    y = (16.0 + 65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    return y.unsqueeze(c)


def rgb_to_grey(x: torch.Tensor) -> torch.Tensor:
    """Full-range BT.601 luma, as Pillow's ``convert("L")``: L = 0.299 R + 0.587 G + 0.114 B.

    [3,H,W] or [N,3,H,W] in [0, 1] -> [1,H,W] or [N,1,H,W] in [0, 1]. Used to save grey inputs grey.
    """
    r, g, b = x.unbind(-3)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def to_model(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1]."""
    return x * 2 - 1


def from_model(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((x + 1) / 2).clamp(0, 1)


# ---------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------

@dataclass
class LoadedImage:
    """A decoded image file.

    ``rgb`` [3, H, W] float32 in [0, 1] (grey inputs replicated to three channels); ``alpha`` [1, H, W]
    float32 in [0, 1] or None. ``grey``/``bits``/``icc_profile`` say how to write a result back so it looks
    like the input. ``warnings`` are things the caller should tell the user (the library never prints).
    """

    rgb: torch.Tensor
    alpha: torch.Tensor | None = None
    grey: bool = False  # the source had no colour (L, LA, 1, I;16): save grey
    bits: int = 8  # 8, or 16 for a 16-bit PNG / TIFF source
    icc_profile: bytes | None = None  # the source's ICC profile (None: sRGB assumed)
    format: str | None = None  # Pillow's name of the source format ("PNG", "JPEG", ...)
    mode: str = "RGB"  # the source's Pillow mode ("RGBA", "P", "CMYK", "RGB;16", ...)
    frames: int = 1  # frames in the source (animated GIF/PNG/WebP); only the first is used
    warnings: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return int(self.rgb.shape[-2]), int(self.rgb.shape[-1])


def _to_tensor(arr: np.ndarray, maxval: float) -> torch.Tensor:
    """HxW or HxWxC integer array -> float32 [C, H, W] in [0, 1]."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    t = torch.from_numpy(np.ascontiguousarray(arr).astype(np.float32))
    return t.permute(2, 0, 1).div_(maxval).contiguous()


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split a PNG file into (type, payload) chunks; raises ValueError on a malformed file."""
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    pos, out = len(_PNG_SIGNATURE), []
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        payload = data[pos + 8:pos + 8 + length]
        if len(payload) != length or pos + 12 + length > len(data):
            raise ValueError("image file is truncated")
        out.append((ctype, payload))
        pos += 12 + length
        if ctype == b"IEND":
            return out
    raise ValueError("image file is truncated (no IEND chunk)")


def _png_unfilter(raw: np.ndarray, height: int, row_bytes: int, bpp: int) -> np.ndarray:
    """Undo PNG scanline filters (PNG spec Sec. 9) -> uint8 [height, row_bytes].

    Every filter predicts a byte from a = left, b = up, c = up-left (already reconstructed), so the whole
    image is reconstructed one anti-diagonal of pixels at a time (H + W steps, each vectorised over rows),
    whatever mix of filter types the encoder chose per row.
    """
    if raw.size != height * (row_bytes + 1):
        raise ValueError("image file is truncated (pixel data too short)")
    rows = raw.reshape(height, row_bytes + 1)
    ftype = rows[:, 0].astype(np.int32)
    if ftype.max(initial=0) > 4:
        raise ValueError("corrupt PNG (unknown filter type)")
    width = row_bytes // bpp
    data = rows[:, 1:].reshape(height, width, bpp).astype(np.int32)
    if np.all(ftype == 0):
        return data.astype(np.uint8).reshape(height, row_bytes)
    out = np.zeros((height + 1, width + 1, bpp), dtype=np.int32)  # row 0 / column 0: zero padding
    for d in range(height + width - 1):
        r = np.arange(max(0, d - width + 1), min(d, height - 1) + 1)
        x = d - r
        a = out[r + 1, x]  # left
        b = out[r, x + 1]  # up
        c = out[r, x]  # up-left
        f = ftype[r][:, None]
        p = a + b - c  # Paeth predictor
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        pred = np.select([f == 1, f == 2, f == 3, f == 4], [a, b, (a + b) >> 1, paeth], 0)
        out[r + 1, x + 1] = (data[r, x] + pred) & 0xFF
    return out[1:, 1:].astype(np.uint8).reshape(height, row_bytes)


def _decode_png16(data: bytes) -> tuple[np.ndarray, tuple | int | None] | None:
    """Decode a non-interlaced 16-bit PNG to uint16 [H, W, C] (C = 1, 2, 3 or 4) plus its tRNS key.

    Returns None when the file is not a 16-bit PNG this decoder handles (Pillow then decodes it).
    """
    chunks = _png_chunks(data)
    if not chunks or chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        raise ValueError("corrupt PNG (no IHDR)")
    width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(ctype)
    if depth != 16 or channels is None or interlace != 0:
        return None
    idat = b"".join(p for t, p in chunks if t == b"IDAT")
    try:
        raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8)
    except zlib.error as err:
        raise ValueError(f"image file is truncated or corrupt ({err})") from None
    bpp = 2 * channels
    rows = _png_unfilter(raw, height, width * bpp, bpp)
    arr = rows.view(">u2").reshape(height, width, channels).astype(np.uint16)
    trns = next((p for t, p in chunks if t == b"tRNS"), None)
    key: tuple | int | None = None
    if trns is not None and ctype == 0 and len(trns) >= 2:
        key = struct.unpack(">H", trns[:2])[0]
    elif trns is not None and ctype == 2 and len(trns) >= 6:
        key = struct.unpack(">HHH", trns[:6])
    return arr, key


def _check_size(path: str, size: tuple[int, int], max_pixels: int | None) -> None:
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise InputError(f"{path}: image is {w}x{h} = {w * h / 1e6:.1f} MP, above the limit of "
                         f"{max_pixels / 1e6:.1f} MP (a decompression-bomb guard; raise --max-pixels to allow it)")


def _transpose_channels(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (2..8) to an [H, W, C] uint16 array, as ImageOps.exif_transpose does."""
    method = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
              7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}.get(orientation)
    if method is None:
        return arr
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(arr[:, :, c], dtype=np.uint16)).transpose(method),
                         dtype=np.uint16) for c in range(arr.shape[2])]  # uint16 -> mode I;16, exact
    return np.stack(planes, axis=2)


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None, list[str]]:
    """CMYK -> sRGB, through the embedded ICC profile when there is one (colour-managed), else naively."""
    if icc:
        try:
            from PIL import ImageCms

            srgb = ImageCms.createProfile("sRGB")
            rgb = ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(icc)), srgb, outputMode="RGB")
            return rgb, ImageCms.ImageCmsProfile(srgb).tobytes(), []
        except Exception:  # noqa: BLE001 - an unusable profile: fall back to the naive conversion
            pass
    return im.convert("RGB"), None, ["CMYK image converted to RGB without a colour profile (colours may shift)"]


def load_image(path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode an image file into a :class:`LoadedImage` (see the module docstring for the modes).

    Raises :class:`InputError` with the file name and one clear reason: missing, empty, not an image,
    truncated/corrupt, or above ``max_pixels`` (checked from the header, before decoding).
    """
    p = Path(path)
    name = str(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{name}: is a folder, not an image file") from None
    except OSError as err:
        raise InputError(f"{name}: cannot read ({err.strerror or err})") from None
    if not data:
        raise InputError(f"{name}: empty file (0 bytes)")
    warns: list[str] = []
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise InputError(f"{name}: refused as a possible decompression bomb ({err})") from None
    except UnidentifiedImageError:
        raise InputError(f"{name}: not an image file, or a format Pillow cannot read") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise InputError(f"{name}: corrupt image header ({err})") from None
    with im:
        _check_size(name, im.size, max_pixels)
        fmt = im.format
        frames = int(getattr(im, "n_frames", 1) or 1)
        if frames > 1:
            warns.append(f"animated image: only the first of its {frames} frames was upscaled")
        icc = im.info.get("icc_profile") or None
        orientation = 1
        try:
            orientation = int(im.getexif().get(0x0112, 1) or 1)
        except Exception:  # noqa: BLE001 - unreadable EXIF: keep the stored orientation
            orientation = 1
        try:
            png16 = _decode_png16(data) if fmt == "PNG" and frames == 1 else None
            if png16 is not None:
                return _from_png16(png16, orientation, icc, warns)
            im.load()
            src_mode = im.mode
            im = ImageOps.exif_transpose(im)
            return _from_pil(im, src_mode, icc, fmt, frames, warns)
        except InputError:
            raise
        except (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error) as err:
            raise InputError(f"{name}: truncated or corrupt image ({err})") from None


def _from_png16(decoded: tuple[np.ndarray, tuple | int | None], orientation: int, icc: bytes | None,
                warns: list[str]) -> LoadedImage:
    arr, key = decoded
    arr = _transpose_channels(arr, orientation)
    ch = arr.shape[2]
    grey = ch <= 2
    colour = arr[:, :, :1] if grey else arr[:, :, :3]
    alpha = arr[:, :, ch - 1:] if ch in (2, 4) else None
    if alpha is None and key is not None:  # tRNS: one fully transparent colour
        k = np.asarray(key, dtype=np.uint16).reshape(1, 1, -1)
        alpha = np.where(np.all(colour == k, axis=2, keepdims=True), 0, 65535).astype(np.uint16)
    rgb = _to_tensor(colour, 65535.0)
    if grey:
        rgb = rgb.expand(3, -1, -1).contiguous()
    mode = {1: "I;16", 2: "LA;16", 3: "RGB;16", 4: "RGBA;16"}[ch]
    return LoadedImage(rgb=rgb, alpha=None if alpha is None else _to_tensor(alpha, 65535.0), grey=grey,
                       bits=16, icc_profile=icc, format="PNG", mode=mode, frames=1, warnings=warns)


def _from_pil(im: Image.Image, src_mode: str, icc: bytes | None, fmt: str | None, frames: int,
              warns: list[str]) -> LoadedImage:
    mode = im.mode
    has_trns = "transparency" in im.info
    grey = mode in _GREY_MODES
    bits = 8
    alpha_arr: np.ndarray | None = None
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(im).astype(np.int64)
        colour = np.clip(arr, 0, 65535)
        bits, maxval = 16, 65535.0
        if has_trns and isinstance(im.info["transparency"], int):
            alpha_arr = np.where(colour == im.info["transparency"], 0, 255)
        rgb = _to_tensor(colour, maxval).expand(3, -1, -1).contiguous()
        alpha = None if alpha_arr is None else _to_tensor(alpha_arr, 255.0)
        return LoadedImage(rgb=rgb, alpha=alpha, grey=True, bits=bits, icc_profile=icc, format=fmt, mode=src_mode,
                           frames=frames, warnings=warns)
    if mode == "F":
        raise ValueError("32-bit float images are not supported")
    if mode == "CMYK":
        im, icc, more = _cmyk_to_rgb(im, icc)
        warns.extend(more)
    elif mode in ("1", "L"):
        im = im.convert("LA") if has_trns else im.convert("L")
    elif mode == "La":
        im = im.convert("LA")
    elif mode in ("P", "PA"):
        im = im.convert("RGBA") if (mode == "PA" or has_trns) else im.convert("RGB")
    elif mode == "RGB" and has_trns:
        im = im.convert("RGBA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    elif mode not in ("RGB", "RGBA", "LA"):
        im = im.convert("RGBA" if "A" in mode else "RGB")
    arr = np.asarray(im)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    ch = arr.shape[2]
    colour = arr[:, :, :1] if ch <= 2 else arr[:, :, :3]
    rgb = _to_tensor(colour, 255.0)
    if ch <= 2:
        rgb = rgb.expand(3, -1, -1).contiguous()
    if ch in (2, 4):
        alpha_arr = arr[:, :, ch - 1:]
    alpha = None if alpha_arr is None else _to_tensor(alpha_arr, 255.0)
    return LoadedImage(rgb=rgb, alpha=alpha, grey=grey, bits=bits, icc_profile=icc, format=fmt, mode=src_mode,
                       frames=frames, warnings=warns)


# ---------------------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------------------

def format_for_path(path: str | os.PathLike) -> str:
    """Pillow format name for an output path's extension; OutputError for one we cannot write."""
    ext = Path(path).suffix.lower()
    try:
        return WRITE_FORMATS[ext]
    except KeyError:
        raise OutputError(f"{path}: cannot write {ext or 'files without an extension'}; "
                          f"use one of {', '.join(sorted(set(WRITE_FORMATS)))}") from None


def _quantise(x: torch.Tensor, bits: int) -> np.ndarray:
    """[C, H, W] float in [0, 1] -> [H, W, C] uint8/uint16, rounded to nearest."""
    maxval = 65535.0 if bits == 16 else 255.0
    arr = (x.detach().float().cpu().clamp(0, 1) * maxval).round().permute(1, 2, 0).numpy()
    return arr.astype(np.uint16 if bits == 16 else np.uint8)


def _png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def _encode_png16(arr: np.ndarray, icc: bytes | None) -> bytes:
    """uint16 [H, W, C] (C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) -> 16-bit PNG bytes (filter 'Up')."""
    h, w, c = arr.shape
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = arr.astype(">u2").reshape(h, w * c).view(np.uint8).reshape(h, w * c * 2)
    up = rows.copy()
    up[1:] = rows[1:] - rows[:-1]  # filter 2 (Up): byte - byte above, mod 256; compresses photos well
    raw = np.concatenate([np.full((h, 1), 2, dtype=np.uint8), up], axis=1)
    out = [_PNG_SIGNATURE, _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0))]
    if icc:
        out.append(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    out.append(_png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)))
    out.append(_png_chunk(b"IEND", b""))
    return b"".join(out)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], *, overwrite: bool = False) -> Path:
    """Write a file through ``write(fh)`` atomically (:func:`dreamsr.files.atomic_write`: a temporary file in
    the same folder, fsync, rename).

    Without ``overwrite`` an existing file is never replaced (the final link fails if one appeared
    meanwhile). On any error the temporary file is removed and nothing is left half-written.
    """
    with files.guarded_output(path, overwrite=overwrite) as target:
        return files.atomic_write(target, write, overwrite=overwrite, suffix=".part")


def save_image(path: str | os.PathLike, rgb: torch.Tensor, *, alpha: torch.Tensor | None = None,
               grey: bool = False, bits: int = 8, icc_profile: bytes | None = None, overwrite: bool = False,
               quality: int = 95) -> list[str]:
    """Write ``rgb`` [3, H, W] float in [0, 1] (and ``alpha`` [1, H, W] in [0, 1]) to ``path`` atomically.

    The format follows the extension (:data:`WRITE_FORMATS`). ``grey`` saves the BT.601 luma
    (:func:`rgb_to_grey`); ``bits=16`` writes a 16-bit PNG (other formats get 8 bits, with a warning);
    ``icc_profile`` is embedded where the format allows. Formats without alpha (JPEG) drop it, with a
    warning. Returns the warnings; raises :class:`OutputError` / :class:`OutputExistsError`.
    """
    if rgb.dim() != 3 or rgb.shape[0] != 3:
        raise ValueError(f"save_image expects RGB [3, H, W], got {tuple(rgb.shape)}")
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    fmt = format_for_path(path)
    warns: list[str] = []
    colour = rgb_to_grey(rgb) if grey else rgb
    if alpha is not None and fmt == "JPEG":
        warns.append("JPEG has no alpha channel: transparency dropped (write .png to keep it)")
        alpha = None
    planes = colour if alpha is None else torch.cat([colour, alpha.to(colour.dtype)], dim=0)
    if bits == 16 and fmt != "PNG":
        warns.append(f"16-bit input written with 8 bits ({fmt} output; write .png to keep 16 bits)")
        bits = 8
    if bits == 16:
        payload = _encode_png16(_quantise(planes, 16), icc_profile)

        def write(fh: BinaryIO) -> None:
            fh.write(payload)
    else:
        arr = _quantise(planes, 8)
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
        im = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr, mode=mode)
        if fmt in ("WEBP", "BMP") and mode in ("L", "LA"):
            im = im.convert("RGBA" if mode == "LA" else ("RGB" if fmt == "WEBP" else "L"))
        kwargs: dict = {}
        if icc_profile and fmt in ("PNG", "JPEG", "WEBP", "TIFF"):
            kwargs["icc_profile"] = icc_profile
        if fmt in ("JPEG", "WEBP"):
            kwargs["quality"] = quality
        if fmt == "PNG":
            kwargs["compress_level"] = 6
        if fmt == "TIFF":
            kwargs["compression"] = "tiff_deflate"

        def write(fh: BinaryIO) -> None:
            try:
                im.save(fh, format=fmt, **kwargs)
            except (ValueError, KeyError) as err:
                raise OutputError(f"{path}: cannot encode as {fmt} ({err})") from None
    atomic_write(path, write, overwrite=overwrite)
    return warns
