"""A real loopback stand-in for the Hugging Face Hub (stdlib only), for tests.

Speaks what ``huggingface_hub`` 1.x/2.x uses (see shared/offline.md):

- ``HEAD``/``GET /{org}/{name}/resolve/{rev}/{path}``: 200 with ``X-Repo-Commit`` (40 hex), ``ETag`` (the sha256
  of the bytes, which names the cache blob) and ``Content-Length``; ``Range: bytes=N-`` gives 206. Misses are
  404 with ``X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound``. Never sends ``X-Xet-Hash``.
- ``GET /api/models/{org}/{name}/revision/{rev}`` (``sha`` + ``siblings``) and ``.../tree/{rev}[/{dir}]``.
- Uploads: ``POST /api/repos/create``, ``POST /api/models/{repo}/preupload/{rev}`` (always "regular", so the
  content travels base64 inside the commit) and ``POST /api/models/{repo}/commit/{rev}`` (ndjson).

Every request is recorded (method, path, headers) so tests can count GETs. State is per server instance.
Use as a context manager; ``url`` is the endpoint to pass as ``endpoint=`` / ``HF_ENDPOINT``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Repo:
    """A model repo: commits are full snapshots ``{path: bytes}``; branches point at commits."""

    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> str | None:
        if rev in self.branches:
            return self.branches[rev]
        return rev if rev in self.commits else None


class FakeHub:
    """Loopback Hub. ``add_file`` commits a file and returns the 40-hex commit hash."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- state ----------------------------------------------------------------------------------
    def add_file(self, repo_id: str, path: str, data: bytes, branch: str = "main") -> str:
        """Commit ``data`` at ``path`` on ``branch`` (creating the repo); returns the new commit hash."""
        with self._lock:
            repo = self.repos.setdefault(repo_id, Repo())
            parent = repo.branches.get(branch)
            files = dict(repo.commits[parent]) if parent else {}
            files[path] = bytes(data)
            sha = hashlib.sha1(f"{repo_id}:{len(repo.commits)}:{path}".encode() + data).hexdigest()
            repo.commits[sha] = files
            repo.branches[branch] = sha
            return sha

    def replace_bytes(self, repo_id: str, commit: str, path: str, data: bytes) -> None:
        """Change a file's bytes *in place* at an existing commit (a tampered mirror)."""
        with self._lock:
            self.repos[repo_id].commits[commit][path] = bytes(data)

    def count(self, method: str, contains: str = "") -> int:
        """How many ``method`` requests whose path contains ``contains`` were served."""
        with self._lock:
            return sum(1 for r in self.requests if r.method == method and contains in r.path)

    # --- lifecycle --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        # --- plumbing ----------------------------------------------------------------------------
        def _record(self) -> list[str]:
            path = urlsplit(self.path).path
            with hub._lock:
                hub.requests.append(Request(self.command, path, {k.lower(): v for k, v in self.headers.items()}))
            return [unquote(p) for p in path.strip("/").split("/")]

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, obj: object, status: int = 200) -> None:
            self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

        def _error(self, code: str, message: str, extra: dict[str, str] | None = None) -> None:
            self._send(404, json.dumps({"error": message}).encode(),
                       {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message,
                        **(extra or {})})

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))

        def _lookup(self, repo_id: str, rev: str) -> tuple[Repo, str] | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error("RepoNotFound", f"Repository {repo_id} not found")
                return None
            sha = repo.resolve(rev)
            if sha is None:
                self._error("RevisionNotFound", f"Invalid rev id: {rev}")
                return None
            return repo, sha

        # --- routes ------------------------------------------------------------------------------
        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            parts = self._record()
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
            if len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] in ("revision", "tree"):
                return self._api(f"{parts[2]}/{parts[3]}", parts[4], parts[5], "/".join(parts[6:]))
            self._send(404, b"not found")

        def do_POST(self) -> None:
            parts = self._record()
            body = self._body()
            if parts == ["api", "repos", "create"]:
                req = json.loads(body or b"{}")
                repo_id = f"{req.get('organization')}/{req['name']}"
                with hub._lock:
                    hub.repos.setdefault(repo_id, Repo())
                return self._json({"url": f"{hub.url}/{repo_id}", "name": repo_id})
            if len(parts) == 6 and parts[:2] == ["api", "models"] and parts[4] in ("preupload", "commit"):
                repo_id, rev = f"{parts[2]}/{parts[3]}", parts[5]
                if repo_id not in hub.repos:
                    return self._error("RepoNotFound", f"Repository {repo_id} not found")
                if parts[4] == "preupload":
                    files = json.loads(body)["files"]
                    return self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                 for f in files]})
                return self._commit(repo_id, rev, body)
            self._send(404, b"not found")

        def _resolve(self, repo_id: str, rev: str, path: str) -> None:
            found = self._lookup(repo_id, rev)
            if found is None:
                return
            repo, sha = found
            data = repo.commits[sha].get(path)
            if data is None:
                return self._error("EntryNotFound", f"{path} does not exist on {rev}", {"X-Repo-Commit": sha})
            headers = {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                       "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
            rng = self.headers.get("Range", "")
            if rng.startswith("bytes=") and rng.endswith("-") and self.command == "GET":
                start = int(rng[len("bytes="):-1])
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                return self._send(206, data[start:], headers)
            self._send(200, data, headers)

        def _api(self, repo_id: str, kind: str, rev: str, sub: str) -> None:
            found = self._lookup(repo_id, rev)
            if found is None:
                return
            repo, sha = found
            files = repo.commits[sha]
            if kind == "revision":
                return self._json({"id": repo_id, "sha": sha, "siblings": [{"rfilename": p} for p in sorted(files)]})
            prefix = f"{sub}/" if sub else ""
            self._json([{"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest(),
                         "lfs": {"oid": hashlib.sha256(b).hexdigest(), "size": len(b), "pointerSize": 134}}
                        for p, b in sorted(files.items()) if p.startswith(prefix)])

        def _commit(self, repo_id: str, rev: str, body: bytes) -> None:
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            sha = None
            for item in lines:
                if item["key"] == "file":
                    v = item["value"]
                    sha = hub.add_file(repo_id, v["path"], base64.b64decode(v["content"]), branch=rev)
                elif item["key"] != "header":
                    return self._send(400, f"unsupported commit operation {item['key']}".encode())
            if sha is None:
                return self._send(400, b"empty commit")
            self._json({"commitUrl": f"{hub.url}/{repo_id}/commit/{sha}", "commitOid": sha})

    return Handler
