"""Weights: the weights.toml registry, resolution, Hub download through a real loopback server (tests/hub_server),
sha256 verification, checkpoint round trips, convert, push and the `dreamsr weights` CLI."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from dreamsr.jobs import weights as W
from dreamsr.checkpoint import CheckpointInfo, load_checkpoint, read_info, save_checkpoint
from dreamsr.cli import app
from dreamsr.diffusion import DiffusionConfig
from dreamsr.errors import CheckpointError, ConfigError, DownloadError, ModelNotFoundError
from dreamsr.files import clear_sha256_cache
from dreamsr.families.sr3.unet import PRESETS, UNet, UNetConfig
from tests.hub_server import FakeHub

tomllib = W.tomllib  # the stdlib module on 3.11+, tomli on 3.10

ROOT = Path(__file__).resolve().parents[1]
REPO = "dreamsr-test/tiny-x4"
FILE = "tiny-x4.safetensors"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_user_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's ~/.config/dreamsr/weights.toml and HF settings out of every test here."""
    monkeypatch.delenv("DREAMSR_WEIGHTS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    clear_sha256_cache()


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def hub_entry(name: str, sha: str, revision: str, *, repo: str = REPO, filename: str = FILE, scale: int = 4,
              default: bool = True, **extra: object) -> str:
    lines = [f"[models.{name}]", f'repo_id = "{repo}"', f'filename = "{filename}"', f'revision = "{revision}"',
             f'sha256 = "{sha}"', f"scale = {scale}", 'task = "general"', "params = 10000", 'license = "MIT"',
             'description = "test model"']
    if default:
        lines.append("default = true")
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def path_entry(name: str, path: str, sha: str, *, scale: int = 4, default: bool = True) -> str:
    return (f'[models.{name}]\npath = "{path}"\nsha256 = "{sha}"\nscale = {scale}\ntask = "general"\n'
            f'params = 10000\nlicense = "MIT"\ndescription = "shipped test model"\n'
            + ("default = true\n" if default else ""))


def user_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *tables: str) -> Path:
    """Write a user registry with ``tables`` and point DREAMSR_WEIGHTS at it."""
    path = tmp_path / "user-weights.toml"
    path.write_text("schema = 1\n\n" + "\n".join(tables))
    monkeypatch.setenv("DREAMSR_WEIGHTS", str(path))
    return path


@pytest.fixture
def served(hub_server: FakeHub, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The tiny checkpoint committed to the loopback Hub and registered (pinned) as ``tiny-x4``."""
    commit = hub_server.add_file(REPO, FILE, tiny_checkpoint.read_bytes())
    user_registry(tmp_path, monkeypatch, hub_entry("tiny-x4", sha256(tiny_checkpoint), commit))
    return hub_server, commit


def gets(hub: FakeHub) -> int:
    return hub.count("GET", "/resolve/")


# ------------------------------------------------------------------------------------------------
# the registry file itself
# ------------------------------------------------------------------------------------------------

def test_repo_root_registry_is_identical_to_the_shipped_one() -> None:
    assert (ROOT / "weights.toml").read_bytes() == W.SHIPPED_REGISTRY.read_bytes()
    assert W.SHIPPED_REGISTRY == ROOT / "dreamsr" / "weights.toml"


def test_shipped_registry_is_valid() -> None:
    entries = W.parse_registry(W.SHIPPED_REGISTRY)  # schema, 64-hex sha256, 40-hex revisions, unique names
    W.check_defaults(entries.values(), W.SHIPPED_REGISTRY, require=True)  # one default per scale with models
    raw = tomllib.loads(W.SHIPPED_REGISTRY.read_text())
    assert raw["schema"] == 1 and set(raw["models"]) == set(entries)
    for e in entries.values():
        assert len(e.sha256) == 64 and all(c in "0123456789abcdef" for c in e.sha256)
        if e.hub is not None:
            assert e.hub.pinned and len(e.revision or "") == 40
        else:  # a file shipped inside the package must be there and match
            assert e.path is not None and e.path.is_file() and sha256(e.path) == e.sha256


GOOD = dict(sha="ab" * 32, rev="cd" * 20)


@pytest.mark.parametrize("text, message", [
    (hub_entry("m", "ab" * 31, GOOD["rev"]), "sha256 must be 64 lower-case hex"),
    (hub_entry("m", "AB" * 32, GOOD["rev"]), "sha256 must be 64 lower-case hex"),
    (hub_entry("m", GOOD["sha"], "main"), "revision must be a pinned commit hash"),
    (hub_entry("m", GOOD["sha"], "cd" * 19), "revision must be a pinned commit hash"),
    (hub_entry("m", GOOD["sha"], GOOD["rev"], repo="noslash"), "repo_id must look like 'org/name'"),
    (hub_entry("m", GOOD["sha"], GOOD["rev"], filename="m.pth"), "filename must be a .safetensors path"),
    (hub_entry("m", GOOD["sha"], GOOD["rev"], colour="rgb"), "unknown key 'colour'"),
    (hub_entry("m", GOOD["sha"], GOOD["rev"], path="a.safetensors"), "either path or repo_id"),
    (hub_entry("m", GOOD["sha"], GOOD["rev"]).replace('task = "general"', 'task = "faces"'), "task must be one of"),
    (hub_entry("m", GOOD["sha"], GOOD["rev"]).replace("scale = 4", "scale = true"), "scale must be a int"),
    (hub_entry("m", GOOD["sha"], GOOD["rev"]).replace("scale = 4", "scale = 0"), "scale must be a positive"),
    (hub_entry("m", GOOD["sha"], GOOD["rev"]).replace('license = "MIT"\n', ""), "missing key 'license'"),
    (hub_entry("m", GOOD["sha"], GOOD["rev"]).replace('revision = "' + GOOD["rev"] + '"\n', ""),
     "missing key 'revision'"),
    (hub_entry("Big", GOOD["sha"], GOOD["rev"]), "model names use lower-case"),
    (hub_entry("a", GOOD["sha"], GOOD["rev"]) + hub_entry("b", GOOD["sha"], GOOD["rev"]), "scale x4 has 2 defaults"),
    (hub_entry("a", GOOD["sha"], GOOD["rev"]) + hub_entry("a", GOOD["sha"], GOOD["rev"], default=False),
     "not valid TOML"),  # a duplicate name is a duplicate TOML table
    ('schema = 2\n', "schema 2 is not supported"),
    ('version = 1\n', "unknown top-level key 'version'"),
])
def test_registry_schema_errors_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "weights.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as err:
        W.parse_registry(path)
    assert str(path) in str(err.value)


def test_defaults_required_per_scale_only_where_models_exist(tmp_path: Path) -> None:
    path = tmp_path / "weights.toml"
    path.write_text(hub_entry("a", GOOD["sha"], GOOD["rev"], default=False)
                    + hub_entry("b", GOOD["sha"], GOOD["rev"], scale=2, default=True))
    entries = W.parse_registry(path)
    W.check_defaults(entries.values(), path, require=False)
    with pytest.raises(ConfigError, match=r"scale x4 has models \(a\) but none is marked default"):
        W.check_defaults(entries.values(), path, require=True)


def test_user_registry_adds_overrides_and_takes_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = tmp_path / "shipped.toml"
    shipped.write_text(hub_entry("a", GOOD["sha"], GOOD["rev"]) + hub_entry("c", GOOD["sha"], GOOD["rev"], scale=2))
    monkeypatch.setattr(W, "SHIPPED_REGISTRY", shipped)
    assert [W.default_model(4), W.default_model(2), W.default_model(8)] == ["a", "c", None]
    user_registry(tmp_path, monkeypatch, hub_entry("b", "ef" * 32, GOOD["rev"]),
                  hub_entry("c", "12" * 32, GOOD["rev"], scale=2, default=False))
    entries = W.registry_entries()
    assert list(entries) == ["a", "c", "b"]
    assert entries["c"].sha256 == "12" * 32  # replaced whole by the user's entry
    assert [W.default_model(4), W.default_model(2)] == ["b", None]  # user default wins; user dropped c's


def test_user_registry_locations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert W.user_registry_path() is None
    xdg = tmp_path / "xdg-config" / "dreamsr" / "weights.toml"
    xdg.parent.mkdir(parents=True)
    xdg.write_text("[models]\n")
    assert W.user_registry_path() == xdg
    env = tmp_path / "elsewhere.toml"
    env.write_text("")
    monkeypatch.setenv("DREAMSR_WEIGHTS", str(env))
    assert W.user_registry_path() == env
    monkeypatch.setenv("DREAMSR_WEIGHTS", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="DREAMSR_WEIGHTS points to .*missing.toml"):
        W.registry_entries()


def test_path_entry_resolves_relative_to_its_registry(tiny_checkpoint: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    user_registry(tmp_path, monkeypatch, path_entry("local", tiny_checkpoint.name, sha256(tiny_checkpoint)))
    assert W.default_model(4) == "local" and W.default_model(2) is None
    assert W.resolve_weights(model="local") == tiny_checkpoint
    assert W.resolve_weights(weights=str(tiny_checkpoint), model="nope") == tiny_checkpoint  # --weights wins


def test_path_entry_with_wrong_sha256_fails_and_keeps_the_file(tiny_checkpoint: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    before = tiny_checkpoint.read_bytes()
    user_registry(tmp_path, monkeypatch, path_entry("local", str(tiny_checkpoint), "0" * 64))
    with pytest.raises(DownloadError, match="local: sha256 mismatch") as err:
        W.resolve_weights(model="local")
    assert str(tiny_checkpoint) in str(err.value) and sha256(tiny_checkpoint) in str(err.value)
    assert tiny_checkpoint.read_bytes() == before


def test_resolution_errors() -> None:
    with pytest.raises(ModelNotFoundError, match="weights file not found"):
        W.resolve_weights(weights="/nonexistent/x.safetensors")
    with pytest.raises(ModelNotFoundError, match=r"unknown model 'nope' \(known models: dreamsr-x4-resshift, dreamsr-x4-small\)"):
        W.resolve_weights(model="nope")
    with pytest.raises(ModelNotFoundError, match="no model given"):
        W.resolve_weights()


@pytest.mark.parametrize("url, expected", [
    ("hf://org/repo/file.safetensors", W.HubFile("org/repo", "file.safetensors", "main")),
    ("hf://org/repo/sub/dir/f.safetensors@" + "a" * 40, W.HubFile("org/repo", "sub/dir/f.safetensors", "a" * 40)),
    ("hf://org/repo/f.safetensors@refs/pr/1", W.HubFile("org/repo", "f.safetensors", "refs/pr/1")),
])
def test_parse_hf_url(url: str, expected: W.HubFile) -> None:
    assert W.parse_hf_url(url) == expected
    assert W.parse_hf_url(expected.url) == expected


@pytest.mark.parametrize("url", ["org/repo/f.safetensors", "hf://org/f.safetensors", "hf://org/repo/",
                                 "hf://org/repo/../f.safetensors", "hf://o rg/repo/f.safetensors"])
def test_parse_hf_url_rejects(url: str) -> None:
    with pytest.raises(ConfigError):
        W.parse_hf_url(url)


# ------------------------------------------------------------------------------------------------
# Hub download through the loopback server
# ------------------------------------------------------------------------------------------------

def test_first_pull_downloads_second_makes_no_request(served, tiny_checkpoint: Path) -> None:
    hub, commit = served
    path = W.fetch(W.get_entry("tiny-x4"), endpoint=hub.url)
    assert path.read_bytes() == tiny_checkpoint.read_bytes()
    assert path.parent.name == commit and path.is_relative_to(os.environ["HF_HUB_CACHE"])
    assert gets(hub) == 1
    n = len(hub.requests)
    assert W.resolve_weights(model="tiny-x4", endpoint=hub.url) == path
    assert len(hub.requests) == n  # pinned and cached: no HEAD, no GET
    model, info = load_checkpoint(path)
    assert info.scale == 4 and model.config == PRESETS["tiny"]


def test_endpoint_and_token_are_read_when_called(served, monkeypatch: pytest.MonkeyPatch) -> None:
    hub, _ = served  # HF_ENDPOINT was set after huggingface_hub was imported; no endpoint= here
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    W.resolve_weights(model="tiny-x4")
    assert gets(hub) == 1
    assert {r.headers.get("authorization") for r in hub.requests} == {"Bearer hf_test_token"}


def test_tampered_download_fails_sha256_and_deletes_nothing(served, tiny_checkpoint: Path) -> None:
    hub, commit = served
    data = bytearray(tiny_checkpoint.read_bytes())
    data[-1] ^= 0xFF
    hub.replace_bytes(REPO, commit, FILE, bytes(data))
    with pytest.raises(DownloadError, match=r"tiny-x4: sha256 mismatch for .*tiny-x4\.safetensors") as err:
        W.fetch(W.get_entry("tiny-x4"), endpoint=hub.url)
    message = str(err.value)
    assert hashlib.sha256(data).hexdigest() in message and sha256(tiny_checkpoint) in message
    assert "dreamsr weights pull tiny-x4 --force" in message and "nothing was deleted" in message
    cached = W.cached_file(W.get_entry("tiny-x4").hub)
    assert cached is not None and cached.read_bytes() == bytes(data)  # left where it was
    # a later resolve hashes again: the bad copy is never used, and costs no request
    n = len(hub.requests)
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        W.resolve_weights(model="tiny-x4", endpoint=hub.url)
    assert len(hub.requests) == n


def test_cache_tampered_after_download_is_caught_by_verify_and_load(served, tiny_checkpoint: Path) -> None:
    hub, _ = served
    path = W.fetch(W.get_entry("tiny-x4"), endpoint=hub.url)
    assert [(r.name, r.status) for r in W.verify()] == [("dreamsr-x4-resshift", "ok"), ("dreamsr-x4-small", "ok"),
                                                        ("tiny-x4", "ok")]
    real = Path(os.path.realpath(path))
    real.chmod(0o644)
    real.write_bytes(real.read_bytes()[:-1] + b"!")
    (result,) = W.verify(["tiny-x4"])
    assert (result.status, result.path, result.actual) == ("mismatch", path, sha256(real))
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        W.resolve_weights(model="tiny-x4", endpoint=hub.url)
    assert real.exists()
    # the fix the message names: --force downloads the blob again
    assert W.fetch(W.get_entry("tiny-x4"), endpoint=hub.url, force=True) == path
    assert sha256(path) == sha256(tiny_checkpoint) and gets(hub) == 2
    assert [r.status for r in W.verify() if r.name not in SHIPPED] == ["ok"]


@pytest.mark.parametrize("repo, filename, revision, message", [
    ("dreamsr-test/absent", FILE, None, "repository 'dreamsr-test/absent' not found on"),
    (REPO, "absent.safetensors", None, "file 'absent.safetensors' not found in dreamsr-test/tiny-x4 at revision"),
    (REPO, FILE, "f" * 40, f"revision '{'f' * 40}' not found in dreamsr-test/tiny-x4"),
])
def test_missing_repo_file_revision_each_have_their_message(served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            repo: str, filename: str, revision: str | None,
                                                            message: str) -> None:
    hub, commit = served
    user_registry(tmp_path, monkeypatch, hub_entry("m", "ab" * 32, revision or commit, repo=repo, filename=filename))
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError) as err:
        W.fetch(W.get_entry("m"), endpoint=hub.url)
    assert time.monotonic() - start < 2.0
    assert message in str(err.value) and str(err.value).startswith("m (hf://")
    others = {"repository '", "file '", "revision '"} - {message.split(" ")[0] + " '"}
    assert not any(o in str(err.value) for o in others)
    assert gets(hub) == 0


def test_offline_with_cached_file_works(served, monkeypatch: pytest.MonkeyPatch) -> None:
    hub, _ = served
    path = W.resolve_weights(model="tiny-x4", endpoint=hub.url)
    branch = W.resolve_weights(model=f"hf://{REPO}/{FILE}", endpoint=hub.url)  # refs/main -> same snapshot
    assert branch == path
    n = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert W.resolve_weights(model="tiny-x4", endpoint=hub.url) == path
    assert W.resolve_weights(model=f"hf://{REPO}/{FILE}", endpoint=hub.url) == path  # a branch, offline
    with pytest.raises(DownloadError, match="tiny-x4: cannot download again while HF_HUB_OFFLINE is set"):
        W.fetch(W.get_entry("tiny-x4"), endpoint=hub.url, force=True)
    assert len(hub.requests) == n


def test_offline_not_cached_fails_fast_with_the_command(served, monkeypatch: pytest.MonkeyPatch) -> None:
    hub, _ = served
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(DownloadError) as err:
        W.resolve_weights(model="tiny-x4", endpoint=hub.url)
    assert time.monotonic() - start < 1.0
    assert "HF_HUB_OFFLINE" in str(err.value)
    assert "on a connected machine run `dreamsr weights pull tiny-x4`" in str(err.value)
    assert "models--dreamsr-test--tiny-x4" in str(err.value) and os.environ["HF_HUB_CACHE"] in str(err.value)
    assert hub.requests == []


def test_unreachable_endpoint_fails_fast_not_after_retries(served) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    start = time.monotonic()
    with pytest.raises(DownloadError, match=f"cannot reach {dead}") as err:
        W.resolve_weights(model="tiny-x4", endpoint=dead)
    assert time.monotonic() - start < 1.0
    assert "dreamsr weights pull tiny-x4" in str(err.value)


def test_hf_url_resolves_and_loads(hub_server: FakeHub, tiny_checkpoint: Path) -> None:
    commit = hub_server.add_file("org/other", "sub/m.safetensors", tiny_checkpoint.read_bytes())
    path = W.resolve_weights(model=f"hf://org/other/sub/m.safetensors@{commit}", endpoint=hub_server.url)
    assert path.read_bytes() == tiny_checkpoint.read_bytes() and path.parts[-3:] == (commit, "sub", "m.safetensors")


def test_push_then_pull_the_printed_entry(hub_server: FakeHub, tiny_checkpoint: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_writer")
    result = W.push_checkpoint(tiny_checkpoint, "me/my-sr", task="face", description="mine",
                               endpoint=hub_server.url)
    commits = [r for r in hub_server.requests if r.method == "POST" and r.path.endswith("/commit/main")]
    assert len(commits) == 1 and commits[0].headers["authorization"] == "Bearer hf_writer"
    assert hub_server.repos["me/my-sr"].branches["main"] == result.commit
    entry = tomllib.loads(result.toml)["models"]["tiny"]
    assert entry == {"repo_id": "me/my-sr", "filename": "tiny.safetensors", "revision": result.commit,
                     "sha256": sha256(tiny_checkpoint), "scale": 4, "task": "face",
                     "params": UNet(PRESETS["tiny"]).num_parameters(), "license": "MIT", "description": "mine",
                     "bytes": tiny_checkpoint.stat().st_size}
    user_registry(tmp_path, monkeypatch, result.toml)
    path = W.resolve_weights(model="tiny", endpoint=hub_server.url)
    assert path.read_bytes() == tiny_checkpoint.read_bytes()


def test_push_refuses_a_broken_checkpoint_before_uploading(hub_server: FakeHub, tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        W.push_checkpoint(bad, "me/x", endpoint=hub_server.url)
    assert hub_server.requests == []


def test_entry_to_toml_escapes_strings() -> None:
    entry = W.ModelEntry(name="n", sha256="ab" * 32, scale=2, task="general", params=5, license="CC-BY 4.0",
                         description='quote " backslash \\ tab \t del \x7f é', repo_id="a/b", filename="f.safetensors",
                         revision="c" * 40)
    parsed = tomllib.loads(W.entry_to_toml(entry))["models"]["n"]
    assert parsed["description"] == entry.description and "default" not in parsed


# ------------------------------------------------------------------------------------------------
# checkpoints: round trip, strict loading, convert
# ------------------------------------------------------------------------------------------------

def _model(name: str) -> UNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return UNet(PRESETS[name]).eval()


def _save(model: UNet, path: Path, dtype: str = "fp32") -> Path:
    info = CheckpointInfo(model.config, DiffusionConfig(target="residual"), scale=2, training={"p": 0.5})
    return save_checkpoint(path, model, info, dtype=dtype)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n.startswith("sr3") else n
                                  for n in PRESETS])
def test_round_trip_is_bit_identical(name: str, tmp_path: Path) -> None:
    model = _model(name)
    loaded, info = load_checkpoint(_save(model, tmp_path / "m.safetensors"))
    assert info.network == PRESETS[name] and info.diffusion.target == "residual" and info.scale == 2
    assert not loaded.training
    ref, new = model.state_dict(), loaded.state_dict()
    assert ref.keys() == new.keys() and all(torch.equal(ref[k], new[k]) for k in ref)
    m = PRESETS[name].size_multiple
    g = torch.Generator().manual_seed(0)
    y, x, gamma = torch.randn(1, 3, m, m, generator=g), torch.randn(1, 3, m, m, generator=g), torch.tensor([0.7])
    with torch.no_grad():
        assert torch.equal(model(y, x, gamma), loaded(y, x, gamma))


@pytest.mark.parametrize("store, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_half_storage_loads_into_the_requested_precision(store: str, dtype: torch.dtype, tmp_path: Path) -> None:
    model = _model("tiny")
    path = _save(model, tmp_path / "m.safetensors", dtype=store)
    with safe_open(str(path), framework="pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {dtype}
    as32, _ = load_checkpoint(path)
    as_half, _ = load_checkpoint(path, dtype=dtype)
    for k, v in model.state_dict().items():
        assert as32.state_dict()[k].dtype == torch.float32
        assert torch.equal(as32.state_dict()[k], v.to(dtype).float())
        assert torch.equal(as_half.state_dict()[k], v.to(dtype))


def _rewrite(src: Path, dst: Path, edit) -> Path:
    with safe_open(str(src), framework="pt") as fh:
        tensors, meta = {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata()
    edit(tensors)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_missing_reshaped_or_extra_tensor_fails_naming_the_key(tiny_checkpoint: Path, tmp_path: Path) -> None:
    key = "tail.2.weight"
    gone = _rewrite(tiny_checkpoint, tmp_path / "gone.safetensors", lambda t: t.pop(key))
    with pytest.raises(CheckpointError, match=f"tensor '{key}' is missing"):
        load_checkpoint(gone)
    reshaped = _rewrite(tiny_checkpoint, tmp_path / "reshaped.safetensors",
                        lambda t: t.__setitem__(key, t[key].flatten()))
    with pytest.raises(CheckpointError, match=rf"tensor '{key}' has shape \(108,\), the model expects \(3, 4, 3, 3\)"):
        load_checkpoint(reshaped)
    extra = _rewrite(tiny_checkpoint, tmp_path / "extra.safetensors", lambda t: t.__setitem__("bogus", t[key].clone()))
    with pytest.raises(CheckpointError, match="unexpected tensor 'bogus'"):
        load_checkpoint(extra)


def test_non_checkpoint_files_fail_clearly(tmp_path: Path) -> None:
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.safetensors: not a readable safetensors file"):
        load_checkpoint(text)
    pth = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(2)}, pth)
    with pytest.raises(CheckpointError, match="looks like a PyTorch .pth file: convert it with `dreamsr weights conv"):
        load_checkpoint(pth)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a dreamsr checkpoint"):
        read_info(foreign)


def test_convert_pth_gives_the_same_model(tmp_path: Path) -> None:
    model = _model("tiny")
    pth = tmp_path / "m.pth"
    torch.save({"step": torch.tensor(3), "ema": model.state_dict()}, pth)
    out = W.convert_pth(pth, tmp_path / "m.safetensors", PRESETS["tiny"], scale=8, key="ema", dtype="fp32")
    loaded, info = load_checkpoint(out)
    assert info.scale == 8 and info.training["converted_from"] == "m.pth"
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match=r"expected a flat state dict of tensors; pick one .* --key \(ema\)"):
        W.convert_pth(pth, tmp_path / "n.safetensors", PRESETS["tiny"], scale=8)
    wider = UNetConfig.from_dict({**PRESETS["tiny"].to_dict(), "inner_channels": 8})
    with pytest.raises(CheckpointError,
                       match=r"tensor 'noise_embed.mlp.0.weight' has shape \(16, 4\), the model expects \(32, 8\)"):
        W.convert_pth(pth, tmp_path / "n.safetensors", wider, scale=8, key="ema")
    assert not (tmp_path / "n.safetensors").exists()


class _Payload:
    """Unpickling this would create a folder: the converter must refuse it without running it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_convert_never_unpickles(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    pth = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "x": _Payload(marker)}, pth)
    with pytest.raises(CheckpointError, match="evil.pth: a pickle of Python objects, not a weights-only file; loading it "
                                              "would run whatever code the file names, so dreamsr unpickles nothing"):
        W.convert_pth(pth, tmp_path / "out.safetensors", PRESETS["tiny"], scale=4)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------
# `dreamsr weights` CLI
# ------------------------------------------------------------------------------------------------

SHIPPED = ("dreamsr-x4-resshift", "dreamsr-x4-small")  # the models shipped inside the package (the default first)


def cli(*args: str):
    return runner.invoke(app, ["weights", *args])


def one_error_line(result, code: int, text: str) -> None:
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.stderr


def test_cli_list(tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = cli("list")  # only the shipped default
    assert shipped.exit_code == 0 and all(n in shipped.stdout for n in SHIPPED) and "shipped" in shipped.stdout
    default_rows = [line.split()[0] for line in shipped.stdout.splitlines()[1:] if line.split()[-1] == "yes"]
    assert default_rows == [SHIPPED[0]]
    user_registry(tmp_path, monkeypatch, path_entry("local", str(tiny_checkpoint), sha256(tiny_checkpoint)),
                  hub_entry("remote", "ab" * 32, "cd" * 20, default=False, scale=2, bytes=2_500_000))
    table = cli("list")
    assert table.exit_code == 0
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[1:]}
    assert rows["local"][1:4] == ["x4", "general", "10.0k"] and rows["local"][-2:] == ["shipped", "yes"]
    assert rows["remote"][1:] == ["x2", "general", "10.0k", "2.5", "MB", "no"]
    data = json.loads(cli("list", "--json").stdout)
    assert [(d["name"], d["local"]) for d in data if d["name"] not in SHIPPED] == [("local", str(tiny_checkpoint)),
                                                                              ("remote", None)]
    bad = tmp_path / "user-weights.toml"
    bad.write_text("[models.x]\nscale = 4\n")
    one_error_line(cli("list"), 2, "[models.x]: missing key 'sha256'")


def test_cli_pull(served, tiny_checkpoint: Path) -> None:
    hub, commit = served
    ok = cli("pull", "tiny-x4")
    assert ok.exit_code == 0 and f"{commit}/{FILE} (sha256 ok)" in ok.stdout and gets(hub) == 1
    again = cli("pull", "tiny-x4", f"hf://{REPO}/{FILE}@{commit}")
    assert again.exit_code == 0 and gets(hub) == 1
    one_error_line(cli("pull", "nope"), 1, "unknown model 'nope' (known models: dreamsr-x4-resshift, dreamsr-x4-small, tiny-x4)")
    one_error_line(cli("pull", "hf://org"), 1, "expected hf://org/repo/file.safetensors")
    assert cli("pull").exit_code == 2


def test_cli_pull_offline_prints_the_command_for_a_connected_machine(served,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    result = cli("pull", "tiny-x4")
    assert time.monotonic() - start < 1.0
    one_error_line(result, 1, "on a connected machine run `dreamsr weights pull tiny-x4`")
    assert served[0].requests == []


def test_cli_pull_reports_each_failure_and_goes_on(served, tiny_checkpoint: Path) -> None:
    hub, commit = served
    data = bytearray(tiny_checkpoint.read_bytes())
    data[100] ^= 1
    hub.replace_bytes(REPO, commit, FILE, bytes(data))
    result = cli("pull", "nope", "tiny-x4")
    assert result.exit_code == 1
    errors = result.stderr.splitlines()
    assert len(errors) == 2 and "unknown model 'nope'" in errors[0] and "tiny-x4: sha256 mismatch" in errors[1]


def test_cli_info(served, tiny_checkpoint: Path) -> None:
    data = json.loads(cli("info", str(tiny_checkpoint), "--json").stdout)["checkpoint"]
    assert (data["scale"], data["sha256"], data["dtypes"]) == (4, sha256(tiny_checkpoint), ["F32"])
    assert data["params"] == UNet(PRESETS["tiny"]).num_parameters() and data["network"] == PRESETS["tiny"].to_dict()
    assert data["training"] == {"p": 1.0, "steps": 0, "dataset": "none"}
    text = cli("info", str(tiny_checkpoint))
    assert text.exit_code == 0 and '"inner_channels": 4' in text.stdout and "scale: 4" in text.stdout
    before = cli("info", "tiny-x4")
    assert before.exit_code == 0 and "not downloaded: run `dreamsr weights pull tiny-x4`" in before.stdout
    assert served[0].requests == []  # info never downloads
    cli("pull", "tiny-x4")
    after = json.loads(cli("info", "tiny-x4", "--json").stdout)
    assert after["entry"]["name"] == "tiny-x4" and after["checkpoint"]["sha256"] == after["entry"]["sha256"]
    one_error_line(cli("info", "missing.safetensors"), 1, "no such file: missing.safetensors")
    one_error_line(cli("info", "nope"), 1, "unknown model 'nope'")


def test_cli_verify(served, tiny_checkpoint: Path) -> None:
    nothing = cli("verify")
    assert nothing.exit_code == 0 and "tiny-x4: not downloaded" in nothing.stdout
    assert cli("verify", "tiny-x4").exit_code == 1  # named but not here
    path = W.fetch(W.get_entry("tiny-x4"))
    ok = cli("verify", "tiny-x4")
    assert ok.exit_code == 0 and "tiny-x4: ok" in ok.stdout
    real = Path(os.path.realpath(path))
    real.write_bytes(bytes([real.read_bytes()[0] ^ 0xFF]) + real.read_bytes()[1:])
    one_error_line(cli("verify", "tiny-x4"), 1, f"tiny-x4: sha256 mismatch for {path}")
    assert real.exists()
    one_error_line(cli("verify", "nope"), 1, "unknown model 'nope'")


def test_cli_push(hub_server: FakeHub, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_writer")
    result = cli("push", str(tiny_checkpoint), "--repo", "me/my-sr", "--name", "my-x4", "--license", "Apache-2.0")
    assert result.exit_code == 0, result.output
    entry = tomllib.loads(result.stdout)["models"]["my-x4"]
    assert entry["revision"] == hub_server.repos["me/my-sr"].branches["main"] and entry["license"] == "Apache-2.0"
    assert "add this entry to weights.toml" in result.stderr
    one_error_line(cli("push", str(tiny_checkpoint), "--repo", "noslash"), 2, "--repo must look like 'org/name'")
    one_error_line(cli("push", str(tiny_checkpoint), "--repo", "me/x", "--task", "faces"), 2, "task must be one of")
    assert cli("push", str(tiny_checkpoint)).exit_code == 2  # --repo is required


def test_cli_convert(tmp_path: Path) -> None:
    model = _model("tiny")
    pth = tmp_path / "m.pth"
    torch.save(model.state_dict(), pth)
    out = tmp_path / "m.safetensors"
    ok = cli("convert", str(pth), str(out), "--preset", "tiny", "--scale", "4", "--dtype", "fp16")
    assert ok.exit_code == 0 and f"wrote {out}" in ok.stdout
    loaded, info = load_checkpoint(out)
    assert info.scale == 4 and torch.equal(loaded.state_dict()["head.weight"], model.head.weight.half().float())
    cfg = tmp_path / "unet.json"
    cfg.write_text(json.dumps(PRESETS["tiny"].to_dict()))
    out2 = tmp_path / "m2.safetensors"
    assert cli("convert", str(pth), str(out2), "--config", str(cfg), "--scale", "4").exit_code == 0
    assert read_info(out2).network == PRESETS["tiny"]
    one_error_line(cli("convert", str(pth), str(out), "--preset", "tiny", "--config", str(cfg), "--scale", "4"), 2,
                   "give exactly one of --preset NAME or --config FILE.json")
    one_error_line(cli("convert", str(pth), str(out), "--preset", "huge", "--scale", "4"), 2,
                   "unknown UNet preset 'huge'")
    one_error_line(cli("convert", str(pth), str(out), "--preset", "small", "--scale", "4"), 1,
                   f"{out}: exists (use --overwrite to replace it)")
    one_error_line(cli("convert", str(pth), str(out), "--preset", "small", "--scale", "4", "--overwrite"), 1,
                   "m.pth: tensor 'down.3.bias' is missing (and 54 more)")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a tensor file")
    one_error_line(cli("convert", str(notes), str(tmp_path / "x.safetensors"), "--preset", "tiny", "--scale", "4"), 1,
                   "notes.txt: not a PyTorch file (17 bytes starting with b'not a te': neither a zip archive nor a "
                   "pickle)")
    one_error_line(cli("convert", str(pth), str(tmp_path / "x.pt"), "--preset", "tiny", "--scale", "4"), 2,
                   "output must be a .safetensors file")
    cfg.write_text("{not json")
    one_error_line(cli("convert", str(pth), str(out), "--config", str(cfg), "--scale", "4"), 2, "is not valid JSON")
    assert cli("convert", str(pth), str(out), "--preset", "tiny", "--scale", "0").exit_code == 2


def test_recommended_sampling_round_trips_and_unknown_keys_fail(tmp_path):
    """The model's measured sampling defaults travel in the metadata; a typo is an error, not ignored."""
    from dreamsr.checkpoint import CheckpointInfo, load_checkpoint, save_checkpoint
    from dreamsr.diffusion import DiffusionConfig
    from dreamsr.errors import CheckpointError
    from dreamsr.families.sr3.unet import UNet, preset

    model = UNet(preset("tiny"))
    info = CheckpointInfo(model.config, DiffusionConfig(), 4, sampling={"steps": 20, "start": 500,
                                                                         "back_project": True})
    path = save_checkpoint(tmp_path / "m.safetensors", model, info)
    _, loaded = load_checkpoint(path)
    assert loaded.sampling == {"steps": 20, "start": 500, "back_project": True}
    with pytest.raises(CheckpointError, match="back_projection"):
        CheckpointInfo(model.config, DiffusionConfig(), 4, sampling={"back_projection": True})


@pytest.mark.parametrize("name", sorted(W.parse_registry(W.SHIPPED_REGISTRY)))
def test_shipped_registry_numbers_agree_with_the_files(name: str) -> None:
    """A shipped entry's ``params`` is its network's parameter count (not the stored values: a ResShift file also
    stores its Swin blocks' masks), ``bytes`` the file's size, and its description's step counts end with the
    step count the file's training metadata records (the last stage) and add up to any "N in all"."""
    import re

    entry = W.parse_registry(W.SHIPPED_REGISTRY)[name]
    path = W.local_path(entry)
    assert path is not None and path.is_file()
    model, info = load_checkpoint(path)
    counted = sum(p.numel() for p in model.parameters())
    ck = W.checkpoint_dict(path)
    assert entry.params == ck["params"] == counted
    assert ck["tensor_values"] == counted + sum(b.numel() for b in model.buffers())
    assert entry.bytes == path.stat().st_size
    sums = re.findall(r"(\d+(?: \+ \d+)+) (?:\w+ )*steps", entry.description)
    assert sums, entry.description
    stages = [int(n) for n in sums[-1].split(" + ")]
    assert stages[-1] == info.training["steps"], (stages, info.training)
    total = re.search(r"\((\d+) in all", entry.description)
    assert total is None or int(total.group(1)) == sum(stages)
    assert f"batch {info.training['batch_size']}" in entry.description
    # `weights info` labels both counts: the registry's and the file's params are the same number
    out = CliRunner().invoke(app, ["weights", "info", name]).output
    assert out.count(f"params: {counted} (network parameters)") == 2, out
    assert f"tensor values: {ck['tensor_values']} (every stored value" in out
