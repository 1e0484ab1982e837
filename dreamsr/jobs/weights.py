"""Model resolution: local files, the ``weights.toml`` registry and Hugging Face Hub downloads.

Resolution order (:func:`resolve_weights`): ``--weights PATH`` (a local file) > ``--model NAME`` (a registry
entry) > ``--model hf://org/repo/file.safetensors[@rev]`` spelled directly.

Registry: ``dreamsr/weights.toml`` (shipped inside the package; the repository root holds an identical copy)
plus a user file, ``$DREAMSR_WEIGHTS`` or ``~/.config/dreamsr/weights.toml``, whose entries add to or replace
the shipped ones. Both are read when asked (never at import). The schema is documented at the top of
``weights.toml`` and enforced by :func:`parse_registry`.

Hub: files are fetched with ``huggingface_hub.hf_hub_download`` into the normal HF cache, honouring
``HF_HUB_OFFLINE``, ``HF_TOKEN``, ``HF_ENDPOINT`` and ``HF_HUB_CACHE`` as they are *when called* (the client reads
some of them only at import). A registry file is checked against its sha256 every time it is resolved (hashes
are remembered per process while the file is unchanged); a mismatch raises and deletes nothing.
Offline, or with the endpoint unreachable, a file that is not cached fails at once with the command to run on
a connected machine, never after the client's ~23 s of retries.

Checkpoint save/load lives in :mod:`dreamsr.checkpoint`; :func:`convert_pth` (the only ``torch.load``, with
``weights_only=True``) and :func:`push_checkpoint` are here because they are registry/Hub chores.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal, Sequence

from dreamsr.errors import CheckpointError, ConfigError, DownloadError, ModelNotFoundError
from dreamsr.files import sha256_file  # public here too (callers and scripts import it from weights)

if TYPE_CHECKING:  # torch-heavy modules are imported where they are used
    from dreamsr.checkpoint import CheckpointInfo
    from dreamsr.diffusion import DiffusionConfig
    from dreamsr.families.sr3.unet import UNetConfig

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "ModelEntry", "HubFile", "VerifyResult", "PushResult", "SHIPPED_REGISTRY", "TASKS",
    "resolve_weights", "registry_entries", "get_entry", "default_model", "default_model_for", "parse_registry",
    "check_defaults",
    "user_registry_path", "parse_hf_url", "hub_cache_dir", "cached_file", "download", "fetch", "local_path",
    "entry_dict", "checkpoint_dict", "checkpoint_params", "network_parameters", "describe",
    "sha256_file", "verify", "push_checkpoint", "entry_to_toml", "convert_pth",
]

SHIPPED_REGISTRY = Path(__file__).parents[1] / "weights.toml"  # dreamsr/weights.toml
SCHEMA = 1
TASKS = ("general", "face")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")  # a bare TOML key, so entries print without quoting
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_PROBE_TIMEOUT_S = 10.0  # one HEAD, no retries, before handing over to hf_hub_download


# --------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelEntry:
    """One ``[models.NAME]`` table of a registry file.

    Exactly one source: a Hub file (``repo_id`` + ``filename`` + pinned 40-hex ``revision``) or ``path``, a file
    shipped beside the registry (stored here as an absolute path).
    """

    name: str
    sha256: str  # 64 lower-case hex digits of the whole .safetensors file
    scale: int  # native upscaling factor
    task: str  # one of TASKS
    params: int | None  # network parameter count; None: not stated (read from the file when it is here)
    license: str
    description: str
    default: bool = False  # the model used for this scale when no --model is given
    repo_id: str | None = None
    filename: str | None = None
    revision: str | None = None
    path: Path | None = None
    bytes: int | None = None  # file size, if the registry says
    source: Path = field(default=SHIPPED_REGISTRY, compare=False)  # registry file the entry came from

    @property
    def hub(self) -> "HubFile | None":
        """The Hub file of this entry, or None for a ``path`` entry."""
        if self.repo_id is None:
            return None
        return HubFile(self.repo_id, self.filename or "", self.revision or "main")


_REQUIRED = {"sha256": str, "scale": int, "task": str, "license": str, "description": str}
_OPTIONAL = {"params": int, "default": bool, "repo_id": str, "filename": str, "revision": str, "path": str,
             "bytes": int}


def _entry_from_table(name: str, table: Any, source: Path) -> ModelEntry:
    """Validate one ``[models.NAME]`` table; every problem is a ConfigError naming the file and entry."""
    where = f"{source}: [models.{name}]"
    if not _NAME.match(name):
        raise ConfigError(f"{where}: model names use lower-case letters, digits, '-' and '_' only")
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(table) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join([*_REQUIRED, *_OPTIONAL])})")
    for key, typ in {**_REQUIRED, **_OPTIONAL}.items():
        if key not in table:
            if key in _REQUIRED:
                raise ConfigError(f"{where}: missing key {key!r}")
            continue
        value = table[key]
        # bool is an int in Python; TOML keeps them apart, so do we
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: {key} must be a {typ.__name__}, got {value!r}")
    if not _HEX64.match(table["sha256"]):
        raise ConfigError(f"{where}: sha256 must be 64 lower-case hex digits, got {table['sha256']!r}")
    if table["scale"] < 1:
        raise ConfigError(f"{where}: scale must be a positive integer, got {table['scale']}")
    if table["task"] not in TASKS:
        raise ConfigError(f"{where}: task must be one of {', '.join(TASKS)}, got {table['task']!r}")
    if table.get("params", 1) < 1 or table.get("bytes", 1) < 1:
        raise ConfigError(f"{where}: params and bytes must be positive")
    hub_keys = [k for k in ("repo_id", "filename", "revision") if k in table]
    path: Path | None = None
    if "path" in table:
        if hub_keys:
            raise ConfigError(f"{where}: give either path or repo_id/filename/revision, not both")
        path = Path(table["path"])
        if not path.is_absolute():
            path = source.parent / path
        if path.suffix != ".safetensors":
            raise ConfigError(f"{where}: path must name a .safetensors file, got {table['path']!r}")
    else:
        if len(hub_keys) != 3:
            missing = [k for k in ("repo_id", "filename", "revision") if k not in table]
            raise ConfigError(f"{where}: missing key {missing[0]!r} (a Hub entry needs repo_id, filename, revision;"
                              " a shipped file needs path)")
        if not _REPO_ID.match(table["repo_id"]):
            raise ConfigError(f"{where}: repo_id must look like 'org/name', got {table['repo_id']!r}")
        if not table["filename"].endswith(".safetensors") or ".." in table["filename"].split("/"):
            raise ConfigError(f"{where}: filename must be a .safetensors path inside the repo, "
                              f"got {table['filename']!r}")
        if not _HEX40.match(table["revision"]):
            raise ConfigError(f"{where}: revision must be a pinned commit hash (40 lower-case hex digits), "
                              f"got {table['revision']!r}")
    return ModelEntry(
        name=name, sha256=table["sha256"], scale=table["scale"], task=table["task"], params=table.get("params"),
        license=table["license"], description=table["description"], default=table.get("default", False),
        repo_id=table.get("repo_id"), filename=table.get("filename"), revision=table.get("revision"),
        path=path, bytes=table.get("bytes"), source=source,
    )


def parse_registry(path: str | os.PathLike) -> dict[str, ModelEntry]:
    """Read and validate one registry file; returns ``{name: entry}`` in file order.

    Raises ConfigError (naming the file and entry) on bad TOML, unknown/missing keys, malformed hashes, names
    that differ only in case, or two defaults for one scale.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"cannot read model registry {path}: {err.strerror or err}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    unknown = sorted(set(data) - {"schema", "models"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key {unknown[0]!r} (models go in [models.NAME] tables)")
    if data.get("schema", SCHEMA) != SCHEMA:
        raise ConfigError(f"{path}: registry schema {data['schema']!r} is not supported (expects {SCHEMA})")
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f"{path}: 'models' must be a table of [models.NAME] tables")
    entries: dict[str, ModelEntry] = {}
    for name, table in models.items():
        entries[name] = _entry_from_table(name, table, path)
    seen: dict[str, str] = {}
    for name in entries:
        if name.lower() in seen:
            raise ConfigError(f"{path}: model names {seen[name.lower()]!r} and {name!r} differ only in case")
        seen[name.lower()] = name
    check_defaults(entries.values(), path, require=False)
    return entries


def check_defaults(entries: Iterable[ModelEntry], source: str | os.PathLike, *, require: bool) -> None:
    """At most one ``default = true`` per scale; with ``require``, exactly one for every scale that has models."""
    by_scale: dict[int, list[ModelEntry]] = {}
    for e in entries:
        by_scale.setdefault(e.scale, []).append(e)
    for scale, group in sorted(by_scale.items()):
        defaults = [e.name for e in group if e.default]
        if len(defaults) > 1:
            raise ConfigError(f"{source}: scale x{scale} has {len(defaults)} defaults ({', '.join(defaults)}); "
                              "keep default = true on one")
        if require and not defaults:
            raise ConfigError(f"{source}: scale x{scale} has models ({', '.join(e.name for e in group)}) "
                              "but none is marked default = true")


def user_registry_path() -> Path | None:
    """The user's registry: ``$DREAMSR_WEIGHTS`` (must exist), else ``~/.config/dreamsr/weights.toml`` if present
    (``$XDG_CONFIG_HOME/dreamsr/weights.toml`` when XDG_CONFIG_HOME is set)."""
    env = os.environ.get("DREAMSR_WEIGHTS")
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise ConfigError(f"DREAMSR_WEIGHTS points to {p}, which is not a file")
        return p
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    p = Path(config_home).expanduser() / "dreamsr" / "weights.toml"
    return p if p.is_file() else None


def registry_entries() -> dict[str, ModelEntry]:
    """The shipped registry merged with the user's (user entries replace same-named ones, and a user default
    for a scale replaces the shipped default of that scale). Read fresh on every call."""
    entries = parse_registry(SHIPPED_REGISTRY)
    user = user_registry_path()
    if user is None:
        return entries
    extra = parse_registry(user)
    user_default_scales = {e.scale for e in extra.values() if e.default}
    merged = {name: (replace(e, default=False) if e.scale in user_default_scales and e.default else e)
              for name, e in entries.items()}
    merged.update(extra)
    return merged


def get_entry(name: str) -> ModelEntry:
    """The registry entry called ``name``; ModelNotFoundError lists the known names otherwise."""
    entries = registry_entries()
    if name in entries:
        return entries[name]
    known = ", ".join(sorted(entries)) or "none yet"
    raise ModelNotFoundError(f"unknown model {name!r} (known models: {known}); use --weights PATH for a local "
                             "file or hf://org/repo/file.safetensors for a Hub file")


def default_model(scale: int) -> str | None:
    """Name of the default model for upscaling factor ``scale``, or None when the registry has none."""
    for entry in registry_entries().values():
        if entry.scale == scale and entry.default:
            return entry.name
    return None


def default_model_for(scale: float | None = None) -> str:
    """The model a command uses when none is named (``dreamsr upscale``, ``dreamsr eval``, ``EvalConfig`` without
    ``model``): the registry's default for ``scale`` when that is an integer with a default, else the x4 default
    (the caller serves the asked scale from it, or says it cannot). ``scale`` None: the x4 default.

    Raises ModelNotFoundError, naming what to pass instead, when the registry has neither.
    """
    want = int(scale) if scale is not None and float(scale).is_integer() else 4
    name = default_model(want) or (default_model(4) if want != 4 else None)
    if name is None:
        raise ModelNotFoundError(f"no model available: no default x{want} or x4 model is registered; pass --weights "
                                 "PATH to a dreamsr .safetensors checkpoint or --model NAME (`dreamsr weights list`)")
    return name


# --------------------------------------------------------------------------------------------------
# Hugging Face Hub
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HubFile:
    """A file on the Hub: ``repo_id`` ("org/name"), ``filename`` (path inside the repo), ``revision``
    (commit hash, branch or tag)."""

    repo_id: str
    filename: str
    revision: str = "main"

    @property
    def url(self) -> str:
        """The ``hf://org/name/file@rev`` spelling."""
        return f"hf://{self.repo_id}/{self.filename}@{self.revision}"

    @property
    def pinned(self) -> bool:
        """True when ``revision`` is a commit hash (a cached copy can never be stale)."""
        return bool(_HEX40.match(self.revision))


def parse_hf_url(url: str) -> HubFile:
    """``hf://org/repo/path/file.safetensors[@rev]`` -> HubFile (revision defaults to "main")."""
    if not url.startswith("hf://"):
        raise ConfigError(f"not an hf:// URL: {url!r}")
    body = url[len("hf://"):]
    parts = body.split("/", 2)
    if len(parts) < 3 or not parts[2]:
        raise ConfigError(f"{url!r}: expected hf://org/repo/file.safetensors[@revision]")
    repo_id = f"{parts[0]}/{parts[1]}"
    filename, _, revision = parts[2].partition("@")
    if not _REPO_ID.match(repo_id):
        raise ConfigError(f"{url!r}: {repo_id!r} is not a valid 'org/name' repository id")
    if not filename or ".." in filename.split("/"):
        raise ConfigError(f"{url!r}: missing or invalid file name after the repository")
    return HubFile(repo_id, filename, revision or "main")


def hub_cache_dir() -> Path:
    """The Hugging Face cache folder as the environment says *now* (HF_HUB_CACHE > HF_HOME/hub > default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _endpoint(endpoint: str | None) -> str:
    if endpoint:
        return endpoint.rstrip("/")
    if os.environ.get("HF_ENDPOINT"):
        return os.environ["HF_ENDPOINT"].rstrip("/")
    from huggingface_hub import constants

    return constants.ENDPOINT


def _offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def cached_file(ref: HubFile, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The cached copy of ``ref`` in the HF cache, or None. Makes no network call."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(ref.repo_id, ref.filename, cache_dir=str(cache_dir or hub_cache_dir()),
                                   revision=ref.revision)
    return Path(found) if isinstance(found, str) else None


def _pull_hint(ref: HubFile, name: str | None, cache: Path | None = None) -> str:
    """The commands that put ``ref`` into this machine's cache from a connected one."""
    what = name or ref.url
    return (f"on a connected machine run `dreamsr weights pull {what}` (or "
            f"`hf download {ref.repo_id} {ref.filename} --revision {ref.revision}`), then copy its "
            f"models--{ref.repo_id.replace('/', '--')} folder into {cache or hub_cache_dir()}")


def _hub_error(err: Exception, ref: HubFile, endpoint: str, name: str | None,
               cache: Path | None = None) -> Exception:
    """Map a huggingface_hub exception to a DreamSRError with one actionable sentence."""
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)

    label = f"{name} ({ref.url})" if name else ref.url
    if isinstance(err, GatedRepoError):
        return DownloadError(f"{label}: access to {ref.repo_id} is restricted; accept its terms on the Hub and "
                             "set HF_TOKEN to a token that may read it")
    if isinstance(err, RepositoryNotFoundError):
        return ModelNotFoundError(f"{label}: repository {ref.repo_id!r} not found on {endpoint} "
                                  "(if it is private, set HF_TOKEN)")
    if isinstance(err, RevisionNotFoundError):
        return ModelNotFoundError(f"{label}: revision {ref.revision!r} not found in {ref.repo_id}")
    if isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        return DownloadError(f"{label} is not in the Hugging Face cache and downloads are off (HF_HUB_OFFLINE); "
                             + _pull_hint(ref, name, cache))
    if isinstance(err, EntryNotFoundError):
        return ModelNotFoundError(f"{label}: file {ref.filename!r} not found in {ref.repo_id} "
                                  f"at revision {ref.revision}")
    if isinstance(err, HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", "?")
        return DownloadError(f"{label}: download from {endpoint} failed (HTTP {status}): {str(err).splitlines()[0]}")
    return DownloadError(f"{label}: cannot reach {endpoint} ({type(err).__name__}: {err}); "
                         + _pull_hint(ref, name, cache))


def download(ref: HubFile, *, name: str | None = None, endpoint: str | None = None,
             cache_dir: str | os.PathLike | None = None, token: str | None = None, force: bool = False) -> Path:
    """Return a local copy of ``ref`` from the HF cache, downloading it if needed.

    A cached file of a pinned revision is returned with no network call. Offline (``HF_HUB_OFFLINE``) and not
    cached, or with the endpoint unreachable, fails at once with the command to run on a connected machine.
    ``name`` (a registry name) only improves messages. ``force`` downloads again even if cached.
    """
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    url_base = _endpoint(endpoint)
    if not force:
        hit = cached_file(ref, cache)
        if hit is not None and (ref.pinned or _offline()):
            return hit
    if _offline():
        if force:
            raise DownloadError(f"{name or ref.url}: cannot download again while HF_HUB_OFFLINE is set; unset it, "
                                "or " + _pull_hint(ref, name, cache))
        raise DownloadError(f"{name or ref.url} is not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE "
                            "is set; " + _pull_hint(ref, name, cache))
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url

    # HF_HUB_OFFLINE is unset now (checked above), but the client froze the value it saw when it was imported:
    # a process that imported it while offline (e.g. a converter run first) would refuse every download
    constants.HF_HUB_OFFLINE = False
    # One HEAD without retries first: an unreachable endpoint fails here at once instead of inside
    # hf_hub_download's ~23 s retry loop; missing repo/revision/file are reported the same way.
    try:
        get_hf_file_metadata(hf_hub_url(ref.repo_id, ref.filename, revision=ref.revision, endpoint=url_base),
                             token=token, timeout=_PROBE_TIMEOUT_S, endpoint=url_base)
    except Exception as err:  # noqa: BLE001 - network errors differ between huggingface_hub versions
        raise _hub_error(err, ref, url_base, name, cache) from None
    try:
        path = hf_hub_download(ref.repo_id, ref.filename, revision=ref.revision, cache_dir=str(cache),
                               endpoint=url_base, token=token, force_download=force)
    except Exception as err:  # noqa: BLE001 - same mapping as above
        raise _hub_error(err, ref, url_base, name, cache) from None
    return Path(path)


# --------------------------------------------------------------------------------------------------
# sha256
# --------------------------------------------------------------------------------------------------

def _check_sha(entry: ModelEntry, path: Path) -> None:
    actual = sha256_file(path)
    if actual == entry.sha256:
        return
    fix = (f"re-download it with `dreamsr weights pull {entry.name} --force`" if entry.hub
           else "reinstall dreamsr or fix the registry entry")
    raise DownloadError(f"{entry.name}: sha256 mismatch for {path} (file {actual}, registry {entry.sha256} in "
                        f"{entry.source}); the file is corrupt or was replaced; nothing was deleted; {fix}")


# --------------------------------------------------------------------------------------------------
# resolution
# --------------------------------------------------------------------------------------------------

def local_path(entry: ModelEntry, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """Where ``entry``'s file is on this machine now (shipped file or HF cache), or None. No network, no hashing."""
    if entry.path is not None:
        return entry.path if entry.path.is_file() else None
    ref = entry.hub
    return cached_file(ref, cache_dir) if ref else None


def fetch(entry: ModelEntry, *, endpoint: str | None = None, cache_dir: str | os.PathLike | None = None,
          token: str | None = None, force: bool = False) -> Path:
    """Local, sha256-verified path of a registry entry (downloading a Hub entry if it is not cached)."""
    if entry.path is not None:
        if not entry.path.is_file():
            raise ModelNotFoundError(f"{entry.name}: shipped file {entry.path} is missing (listed in "
                                     f"{entry.source}); reinstall dreamsr")
        path = entry.path
    else:
        ref = entry.hub
        assert ref is not None  # parse_registry guarantees a source
        path = download(ref, name=entry.name, endpoint=endpoint, cache_dir=cache_dir, token=token, force=force)
    _check_sha(entry, path)
    return path


def resolve_weights(weights: str | None = None, model: str | None = None, *, endpoint: str | None = None,
                    cache_dir: str | os.PathLike | None = None) -> Path:
    """Return a local checkpoint path: ``weights`` (a file) > ``model`` (registry name or hf:// URL).

    Registry files are sha256-verified; hf:// files are used as downloaded (no hash is known for them).
    ``endpoint``/``cache_dir`` override HF_ENDPOINT/HF_HUB_CACHE (tests, mirrors).
    """
    if weights is not None:
        p = Path(weights).expanduser()
        if not p.is_file():
            raise ModelNotFoundError(f"weights file not found: {p}")
        return p
    if model is not None:
        if model.startswith("hf://"):
            return download(parse_hf_url(model), endpoint=endpoint, cache_dir=cache_dir)
        return fetch(get_entry(model), endpoint=endpoint, cache_dir=cache_dir)
    raise ModelNotFoundError("no model given: pass --model NAME (`dreamsr weights list` shows them) or "
                             "--weights PATH to a dreamsr .safetensors checkpoint")


# --------------------------------------------------------------------------------------------------
# verify
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VerifyResult:
    """Outcome of checking one registry entry's local file against its sha256."""

    name: str
    status: Literal["ok", "mismatch", "missing"]  # missing: not downloaded / shipped file absent
    path: Path | None
    actual: str | None  # sha256 of the local file, when there is one
    expected: str


def verify(names: Sequence[str] | None = None, *, cache_dir: str | os.PathLike | None = None) -> list[VerifyResult]:
    """Hash the local files of ``names`` (default: every registry entry). Never downloads, never deletes."""
    entries = registry_entries()
    chosen = [get_entry(n) for n in names] if names else list(entries.values())
    results = []
    for entry in chosen:
        path = local_path(entry, cache_dir)
        if path is None:
            results.append(VerifyResult(entry.name, "missing", None, None, entry.sha256))
            continue
        actual = sha256_file(path, cached=False)
        status: Literal["ok", "mismatch"] = "ok" if actual == entry.sha256 else "mismatch"
        results.append(VerifyResult(entry.name, status, path, actual, entry.sha256))
    return results


# --------------------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------------------

def network_parameters(info: "CheckpointInfo") -> int:
    """The number of parameters of the network ``info`` describes, built on PyTorch's ``meta`` device (no memory).
    Buffers a file also stores (a Swin block's attention mask and position index) are not parameters."""
    import torch

    with torch.device("meta"):
        net = info.build_network()
    return sum(p.numel() for p in net.parameters())


def checkpoint_params(path: str | os.PathLike) -> int:
    """The parameter count of a checkpoint's network, from the file's metadata and header alone (its checked
    layout; no tensor is read). Not the number of stored values: buffers are stored too."""
    from dreamsr.checkpoint import read_info

    return network_parameters(read_info(path))


def entry_dict(entry: ModelEntry, cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """JSON-friendly view of a registry entry, with where its file is on this machine (``local``, or None).
    ``params``: the entry's, else counted in the file when it is here, else None."""
    local = local_path(entry, cache_dir)
    params = entry.params if entry.params is not None else (checkpoint_params(local) if local else None)
    d: dict[str, Any] = {"name": entry.name, "scale": entry.scale, "task": entry.task, "params": params,
                         "license": entry.license, "description": entry.description, "default": entry.default,
                         "sha256": entry.sha256, "bytes": entry.bytes, "registry": str(entry.source)}
    if entry.hub is not None:
        d.update(repo_id=entry.repo_id, filename=entry.filename, revision=entry.revision, url=entry.hub.url)
    else:
        d["path"] = str(entry.path)
    d["local"] = str(local) if local else None
    return d


def checkpoint_dict(path: str | os.PathLike) -> dict[str, Any]:
    """JSON-friendly summary of a checkpoint file: sha256, size, tensor count, ``params`` (the network's
    parameters, as the registry's ``params``), ``tensor_values`` (every value stored: parameters and buffers such
    as attention masks), storage dtypes and the metadata (UNet/diffusion configs, scale, colour, training). Reads
    the header only, not the tensors."""
    from safetensors import safe_open

    from dreamsr.checkpoint import read_info

    path = Path(path)
    info = read_info(path)  # raises CheckpointError for anything that is not a dreamsr checkpoint
    numel, dtypes, count = 0, set(), 0
    with safe_open(str(path), framework="pt") as fh:
        for key in fh.keys():
            sl = fh.get_slice(key)
            n = 1
            for dim in sl.get_shape():
                n *= dim
            numel += n
            count += 1
            dtypes.add(str(sl.get_dtype()))
    return {"file": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size, "tensors": count,
            "params": network_parameters(info), "tensor_values": numel, "dtypes": sorted(dtypes),
            "scale": info.scale, "color": info.color,
            "family": info.family, "process": info.process,
            "network": info.network.to_dict(), "diffusion": info.diffusion.to_dict(), "training": info.training,
            "dreamsr_version": info.dreamsr_version, "sampling": info.sampling, "profiles": info.profiles}


def describe(file_or_name: str, *, cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """What ``dreamsr weights info`` shows, without any download.

    A path to a file gives ``{"checkpoint": ...}``; a registry name gives ``{"entry": ..., "checkpoint": ... or
    None}`` (None when not downloaded); an hf:// URL gives ``{"url": ..., "checkpoint": ... or None}``.
    """
    p = Path(file_or_name).expanduser()
    if p.is_file():
        return {"checkpoint": checkpoint_dict(p)}
    if file_or_name.startswith("hf://"):
        ref = parse_hf_url(file_or_name)
        local = cached_file(ref, cache_dir)
        return {"url": ref.url, "checkpoint": checkpoint_dict(local) if local else None}
    entries = registry_entries()
    if file_or_name not in entries:
        if p.suffix or os.sep in file_or_name:
            raise ModelNotFoundError(f"no such file: {p}")
        get_entry(file_or_name)  # raises with the list of known names
    entry = entries[file_or_name]
    ed = entry_dict(entry, cache_dir)
    return {"entry": ed, "checkpoint": checkpoint_dict(ed["local"]) if ed["local"] else None}


# --------------------------------------------------------------------------------------------------
# push
# --------------------------------------------------------------------------------------------------

def _toml_str(value: str) -> str:
    """A TOML basic string (JSON escapes are valid TOML; DEL must be escaped too)."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def entry_to_toml(entry: ModelEntry) -> str:
    """The ``[models.NAME]`` table for ``entry``, ready to paste into weights.toml (a ``path`` entry is written
    with its absolute path)."""
    lines = [f"[models.{entry.name}]"]
    if entry.hub is not None:
        lines += [f"repo_id = {_toml_str(entry.repo_id or '')}", f"filename = {_toml_str(entry.filename or '')}",
                  f"revision = {_toml_str(entry.revision or '')}"]
    else:
        lines.append(f"path = {_toml_str(str(entry.path))}")
    lines += [f"sha256 = {_toml_str(entry.sha256)}", f"scale = {entry.scale}", f"task = {_toml_str(entry.task)}",
              *([f"params = {entry.params}"] if entry.params is not None else []),
              f"license = {_toml_str(entry.license)}",
              f"description = {_toml_str(entry.description)}"]
    if entry.bytes is not None:
        lines.append(f"bytes = {entry.bytes}")
    if entry.default:
        lines.append("default = true")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PushResult:
    """What :func:`push_checkpoint` uploaded: the commit and the registry entry pinning it."""

    entry: ModelEntry
    commit: str  # 40-hex commit hash of the upload
    toml: str  # entry_to_toml(entry)


def push_checkpoint(file: str | os.PathLike, repo_id: str, *, name: str | None = None, filename: str | None = None,
                    task: str = "general", license: str = "MIT", description: str = "", private: bool = False,
                    endpoint: str | None = None, token: str | None = None) -> PushResult:
    """Upload a dreamsr checkpoint to Hub repo ``repo_id`` (created if absent) and return the registry entry
    (revision pinned to the new commit, sha256 of the file). The file is fully loaded first, so a broken
    checkpoint is refused before anything is uploaded."""
    from dreamsr.checkpoint import load_checkpoint

    file = Path(file)
    if not _REPO_ID.match(repo_id):
        raise ConfigError(f"--repo must look like 'org/name', got {repo_id!r}")
    if task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    filename = filename or file.name
    if not filename.endswith(".safetensors"):
        raise ConfigError(f"the file name in the repo must end with .safetensors, got {filename!r}")
    name = name or re.sub(r"[^a-z0-9_-]+", "-", Path(filename).stem.lower()).strip("-") or "model"
    if not _NAME.match(name):
        raise ConfigError(f"model name {name!r}: use lower-case letters, digits, '-' and '_'")
    model, info = load_checkpoint(file)
    sha = sha256_file(file)

    from huggingface_hub import HfApi

    url_base = _endpoint(endpoint)
    api = HfApi(endpoint=url_base, token=token)
    ref = HubFile(repo_id, filename)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_file(path_or_fileobj=str(file), path_in_repo=filename, repo_id=repo_id,
                                 commit_message=f"Add {filename} (dreamsr x{info.scale} {task})")
    except Exception as err:  # noqa: BLE001 - mapped to one sentence; network errors differ between versions
        raise _hub_error(err, ref, url_base, name) from None
    oid = str(getattr(commit, "oid", "") or "")
    if not _HEX40.match(oid):
        raise DownloadError(f"upload to {repo_id} returned no commit hash ({oid!r}); check the repo on {url_base}")
    entry = ModelEntry(name=name, sha256=sha, scale=info.scale, task=task, params=model.num_parameters(),
                       license=license, description=description or f"dreamsr x{info.scale} {task} model",
                       repo_id=repo_id, filename=filename, revision=oid, bytes=file.stat().st_size)
    return PushResult(entry, oid, entry_to_toml(entry))


# --------------------------------------------------------------------------------------------------
# convert
# --------------------------------------------------------------------------------------------------

def convert_pth(src: str | os.PathLike, dst: str | os.PathLike, unet: UNetConfig, *, scale: int,
                diffusion: DiffusionConfig | None = None, key: str | None = None, dtype: str = "fp32",
                training: dict | None = None, overwrite: bool = False) -> Path:
    """Turn a ``.pth`` state dict of our UNet layout into a self-describing checkpoint at ``dst``.

    ``unet`` is the UNetConfig the tensors were trained with; ``diffusion`` a DiffusionConfig (default: the
    standard one); ``key`` picks a nested dict (e.g. "ema") when the file holds more than the state dict.
    The file is read with ``torch.load(weights_only=True)``: anything but tensors and plain containers is
    refused, nothing is unpickled (:func:`dreamsr.converters.sr3.read_pth`: sizes bounded, NaN/inf refused). Every
    tensor must match the config (errors name the key). An existing ``dst`` is replaced only with ``overwrite``;
    an input never.
    """
    import torch
    from dreamsr import __version__
    from dreamsr.checkpoint import CheckpointInfo, load_state_strict, save_checkpoint
    from dreamsr.diffusion import DiffusionConfig
    from dreamsr.families.sr3.unet import UNet

    from dreamsr.checkpoint import check_config
    from dreamsr.converters.sr3 import read_pth
    from dreamsr.families.released import check_output

    src, dst = Path(src), Path(dst)
    check_output(dst, src, overwrite=overwrite)
    if scale < 1:
        raise ConfigError(f"scale must be a positive integer, got {scale}")
    check_config("sr3", unet, "--config")
    obj = read_pth(src)
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            keys = ", ".join(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
            raise CheckpointError(f"{src}: no entry {key!r} (top level has: {keys})")
        obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in obj.items()):
        hint = ""
        if isinstance(obj, dict):
            nested = [k for k, v in obj.items() if isinstance(v, dict)]
            hint = f"; pick one of its nested dicts with --key ({', '.join(map(str, nested))})" if nested else ""
        raise CheckpointError(f"{src}: expected a flat state dict of tensors{hint}")
    from dreamsr.families.released import describe, identify

    if identify(obj) in ("sr3", "idm", "resshift", "autoencoder"):  # a released file: name the command
        raise CheckpointError(f"{src}: {describe(obj)}")
    model = UNet(unet)
    load_state_strict(model, obj, str(src))
    info = CheckpointInfo(network=unet, diffusion=diffusion or DiffusionConfig(), scale=scale,
                          training={"converted_from": src.name, **(training or {})}, dreamsr_version=__version__)
    return save_checkpoint(dst, model, info, dtype=dtype, overwrite=overwrite)
