"""dreamsr.files: atomic writes (nothing half-written, on errors and Ctrl-C), sha256, JSON with inf/nan."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import pytest

from dreamsr import files


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_writers_write_exactly_and_leave_no_temporary_file(tmp_path: Path) -> None:
    files.atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01\xff")
    files.atomic_write_text(tmp_path / "t.txt", "héllo\r\nline\n")
    files.atomic_write(tmp_path / "h.bin", lambda fh: fh.write(b"via handle"))
    files.atomic_write_to(tmp_path / "p.bin", lambda tmp: Path(tmp).write_bytes(b"via path"))
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01\xff"
    assert (tmp_path / "t.txt").read_bytes() == "héllo\r\nline\n".encode()  # no newline translation
    assert (tmp_path / "h.bin").read_bytes() == b"via handle"
    assert (tmp_path / "p.bin").read_bytes() == b"via path"
    assert _listing(tmp_path) == ["b.bin", "h.bin", "p.bin", "t.txt"]
    umask = os.umask(0)
    os.umask(umask)
    for name in _listing(tmp_path):  # not mkstemp's 0600
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
@pytest.mark.parametrize("via", ["handle", "path"])
def test_an_interrupted_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path, exc: BaseException,
                                                                           via: str) -> None:
    target = tmp_path / "out.json"
    target.write_bytes(b"old")

    def boom_handle(fh) -> None:
        fh.write(b"half")
        raise exc

    def boom_path(tmp: Path) -> None:
        Path(tmp).write_bytes(b"half")
        raise exc

    with pytest.raises(type(exc)):
        if via == "handle":
            files.atomic_write(target, boom_handle)
        else:
            files.atomic_write_to(target, boom_path)
    assert target.read_bytes() == b"old"
    assert _listing(tmp_path) == ["out.json"]


def test_overwrite_false_never_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    files.atomic_write_text(target, "first", overwrite=False)
    with pytest.raises(FileExistsError):
        files.atomic_write_text(target, "second", overwrite=False)
    assert target.read_text() == "first" and _listing(tmp_path) == ["a.txt"]
    files.atomic_write_text(target, "third")  # overwrite is the default
    assert target.read_text() == "third"


def test_a_missing_folder_is_a_temp_file_error(tmp_path: Path) -> None:
    with pytest.raises(files.TempFileError) as info:
        files.atomic_write_text(tmp_path / "nope" / "a.txt", "x")
    assert isinstance(info.value, OSError) and info.value.strerror


def test_sha256_matches_hashlib_and_follows_rewrites(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    data = os.urandom((1 << 20) + 123)  # more than one read chunk
    f.write_bytes(data)
    assert files.sha256_file(f) == hashlib.sha256(data).hexdigest()
    f.write_bytes(b"other, and of another size")  # (inode, size, mtime) change: not the remembered hash
    assert files.sha256_file(f) == hashlib.sha256(b"other, and of another size").hexdigest()
    files.clear_sha256_cache()
    assert files.sha256_file(f, cached=False) == hashlib.sha256(f.read_bytes()).hexdigest()


def test_json_keeps_non_finite_numbers_as_strings_and_back(tmp_path: Path) -> None:
    obj = {"a": math.inf, "b": [-math.inf, math.nan, 1.5, (2, 3)], "p": tmp_path / "x", "s": "text", "n": None}
    text = files.dumps_json(obj, sort_keys=True)
    assert json.loads(text) == {"a": "inf", "b": ["-inf", "nan", 1.5, [2, 3]], "n": None, "p": str(tmp_path / "x"),
                                "s": "text"}
    assert "Infinity" not in text and "NaN" not in text  # strict JSON
    files.atomic_write_json(tmp_path / "s.json", obj, indent=2)
    back = files.load_json(tmp_path / "s.json")
    assert (tmp_path / "s.json").read_text().endswith("}\n")
    assert files.unfinite(back["a"]) == math.inf and files.unfinite(back["b"][0]) == -math.inf
    assert math.isnan(files.unfinite(back["b"][1])) and files.unfinite("text") == "text"
    with pytest.raises(TypeError):
        files.dumps_json({"x": object()})
