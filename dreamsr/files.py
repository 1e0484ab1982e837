"""Files that are never half-written, their sha256, and JSON that keeps inf/nan: the one home of each.

Atomic writes: the content goes to a temporary file in the target's own folder (``.{name}.XXXXXXXX{suffix}``),
which is flushed and fsynced, given the usual ``0o666 & ~umask`` permissions (mkstemp's 0600 is too strict for
outputs), renamed over the target (or hard-linked to it when ``overwrite`` is False: that never replaces a file
that appeared meanwhile), and the folder is fsynced so the rename itself survives a power cut. On any exception,
KeyboardInterrupt included, the temporary file is removed and the target is left as it was. A process killed
outright (SIGKILL) can leave the temporary file behind, never a truncated target: callers that write under a
known name may sweep ``.{name}.*{suffix}`` files.

JSON: :func:`json_safe` writes non-finite floats as the strings ``"inf"``, ``"-inf"`` and ``"nan"`` (strict
JSON has no such numbers) and paths as strings; :func:`unfinite` turns those strings back into floats.

This is a base-layer module: it imports nothing from dreamsr, and raises plain ``OSError`` subclasses (callers
map them to their own :class:`~dreamsr.errors.DreamSRError`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from dreamsr.errors import DreamSRError, OutputError, OutputExistsError

__all__ = [
    "TempFileError", "guarded_output", "atomic_write", "atomic_write_to", "atomic_write_bytes", "atomic_write_text",
    "atomic_write_json", "file_mode", "sha256_file", "clear_sha256_cache", "json_safe", "dumps_json", "unfinite",
    "load_json",
]


class TempFileError(OSError):
    """The temporary file could not be created in the target's folder (missing, read-only, full...)."""


_UMASK: int | None = None


def file_mode() -> int:
    """Permissions of a new output file under the process's umask (read once: reading it means setting it)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0)
        os.umask(_UMASK)
    return 0o666 & ~_UMASK


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: some file systems cannot open or fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _commit(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move the finished temporary file ``tmp`` to ``path`` (FileExistsError when ``path`` exists and
    ``overwrite`` is False; the caller removes ``tmp`` afterwards in every case)."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic and never replaces: fails if the name exists
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: best effort
        if path.exists():
            raise FileExistsError(17, "File exists", str(path)) from None
        os.replace(tmp, path)


@contextlib.contextmanager
def guarded_output(path: str | os.PathLike, *, overwrite: bool,
                   errors: tuple[type[BaseException], ...] = (OSError,)) -> Iterator[Path]:
    """Checks and error mapping around an atomic write of ``path`` (yields it as a Path): the folder must exist,
    ``path`` must not be a folder, and without ``overwrite`` must not exist (OutputExistsError, also when it
    appears while writing); every ``errors`` exception inside becomes one OutputError naming the path or folder."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{folder}: output folder does not exist")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder")
    if not overwrite and (path.exists() or path.is_symlink()):
        raise OutputExistsError(f"{path}: exists (use --overwrite to replace it)")
    try:
        yield path
    except DreamSRError:
        raise
    except TempFileError as err:
        raise OutputError(f"{folder}: cannot write to the output folder ({err.strerror or err})") from None
    except FileExistsError:
        raise OutputExistsError(f"{path}: exists (use --overwrite to replace it)") from None
    except errors as err:
        raise OutputError(f"{path}: cannot write ({getattr(err, 'strerror', None) or err})") from None


def _write_atomically(path: str | os.PathLike, fill: Callable[[int, Path], None], overwrite: bool,
                      suffix: str) -> Path:
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=folder)
    except OSError as err:
        raise TempFileError(err.errno, err.strerror, str(folder)) from err
    tmp = Path(name)
    try:
        fill(fd, tmp)
        os.chmod(tmp, file_mode())
        _commit(tmp, path, overwrite)
    finally:
        tmp.unlink(missing_ok=True)  # gone after a rename; still there after a link or an error
    _fsync_dir(folder)
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], *, overwrite: bool = True,
                 suffix: str = ".tmp") -> Path:
    """Write ``path`` atomically through ``write(fh)`` (``fh``: the temporary file, open for binary writing).

    ``overwrite=False`` never replaces an existing file (FileExistsError). Returns ``path`` as a Path.
    """

    def fill(fd: int, tmp: Path) -> None:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())

    return _write_atomically(path, fill, overwrite, suffix)


def atomic_write_to(path: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool = True,
                    suffix: str = ".tmp") -> Path:
    """Like :func:`atomic_write` for writers that want a file name (``safetensors.torch.save_file``,
    ``torch.save``, ``PIL.Image.save``): ``write(tmp)`` writes the temporary file ``tmp``, which is then fsynced."""

    def fill(fd: int, tmp: Path) -> None:
        os.close(fd)
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())

    return _write_atomically(path, fill, overwrite, suffix)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(data), overwrite=overwrite)


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8",
                      overwrite: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically (no newline translation: what is given is what is written)."""
    return atomic_write_bytes(path, text.encode(encoding), overwrite=overwrite)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, sort_keys: bool = False,
                      overwrite: bool = True) -> Path:
    """Write ``obj`` as JSON (:func:`dumps_json`: inf/nan as strings) plus a final newline, atomically."""
    return atomic_write_text(path, dumps_json(obj, indent=indent, sort_keys=sort_keys) + "\n", overwrite=overwrite)


# --- sha256 -------------------------------------------------------------------------------------------------

_HASHES: dict[tuple[str, int, int, int], str] = {}  # (realpath, inode, size, mtime_ns) -> sha256, per process


def sha256_file(path: str | os.PathLike, *, cached: bool = True) -> str:
    """Hex sha256 of a file's bytes (symlinks followed); remembered while the file is unchanged.

    ``cached=False`` always rereads the file: a rewrite of the same size within the file system's timestamp
    granularity (a few ms) leaves (inode, size, mtime) unchanged.
    """
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _HASHES or not cached:
        h = hashlib.sha256()
        with open(real, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def clear_sha256_cache() -> None:
    """Forget every remembered hash (tests; a process that rewrites files in place within a few ms)."""
    _HASHES.clear()


# --- JSON ---------------------------------------------------------------------------------------------------

_NON_FINITE = ("inf", "-inf", "nan")


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float as ``"inf"``/``"-inf"``/``"nan"``, paths as strings and tuples as
    lists (dicts and lists are copied; anything else is returned as is)."""
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def dumps_json(obj: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """Strict JSON text of :func:`json_safe` (``obj``); TypeError for what JSON cannot hold."""
    return json.dumps(json_safe(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)


def unfinite(v: Any) -> Any:
    """Inverse of :func:`json_safe` for one value: ``"inf"``, ``"-inf"``, ``"nan"`` -> float; else ``v``."""
    if isinstance(v, str) and v in _NON_FINITE:
        return float(v)
    return v


def load_json(path: str | os.PathLike) -> Any:
    """The JSON value in ``path`` (UTF-8); OSError / ValueError as ``json`` raises them."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
