"""A loopback HTTP server that answers like the Hugging Face hub for file downloads.

Enough of the hub for `huggingface_hub.get_hf_file_metadata` and edge_guard's ranged
GETs: `HEAD`/`GET /{owner}/{repo}/resolve/{revision}/{filename}` with `X-Repo-Commit`,
`ETag` (the sha256, as the hub sends for LFS files), `Content-Length` and `Range`
support; `X-Error-Code: RepoNotFound` / `EntryNotFound` errors. Optional behaviours for
tests: drop the connection after N body bytes (`drop`), a different ETag (`etag`), and
LFS-style redirects to a second "CDN" server (`cdn=True`; the HEAD answer is a 302 with
`X-Linked-Etag`/`X-Linked-Size`, which huggingface_hub does not follow across origins).
`GET /api/models/{owner}/{repo}/tree/{revision}` lists a repository's files, as
`huggingface_hub.list_repo_files` reads them.

Also: test manifests (`setup_manifests`) describing builds of a synthetic model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_TREE = re.compile(r"^/api/models/([^/]+/[^/]+)/tree/([^/?]+)(?:\?.*)?$")


@dataclass
class FakeFile:
    data: bytes
    etag: str | None = None  # default: the sha256 of data
    commit: str = COMMIT
    drop_after: int | None = None  # close the connection after this many body bytes...
    drops: int = 0  # ...this many times


@dataclass
class FakeHub:
    files: dict[tuple[str, str], FakeFile] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    cdn: bool = False

    def add(self, repo: str, filename: str, data: bytes, **kw: Any) -> FakeFile:
        f = FakeFile(data, **kw)
        self.files[(repo, filename)] = f
        return f

    def gets(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "GET"]

    # -- server lifecycle -------------------------------------------------------------
    def start(self) -> FakeHub:
        self._servers = [_server(self), _server(self)]  # the hub, and its "CDN"
        for s in self._servers:
            threading.Thread(target=s.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def stop(self) -> None:
        for s in self._servers:
            s.shutdown()
            s.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _server(hub: FakeHub) -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"hub": hub})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    return srv


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _error(self, status: int, code: str, commit: str | None = None) -> None:
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(self, body: bool) -> None:
        hub = self.hub
        hub.requests.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers.items())}
        )
        if self.path.startswith("/cdn/"):
            repo, _, filename = self.path[5:].partition("/-/")
            f = hub.files.get((repo, filename))
            if f is None:
                return self._error(404, "EntryNotFound")
            return self._send_file(f, body)
        tree = _TREE.match(self.path)
        if tree and self.command == "GET":
            return self._tree(tree.group(1))
        m = _RESOLVE.match(self.path)
        if not m:
            return self._error(404, "RepoNotFound")
        repo, _revision, filename = m.groups()
        if not any(r == repo for r, _ in hub.files):
            return self._error(401, "RepoNotFound")
        f = hub.files.get((repo, filename))
        if f is None:
            return self._error(404, "EntryNotFound", COMMIT)
        if hub.cdn and self.command == "HEAD":
            port = hub._servers[1].server_address[1]
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{port}/cdn/{repo}/-/{filename}")
            self.send_header("X-Repo-Commit", f.commit)
            self.send_header("X-Linked-Etag", f'"{_etag(f)}"')
            self.send_header("X-Linked-Size", str(len(f.data)))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return self._send_file(f, body)

    def _tree(self, repo: str) -> None:
        """The repository's files, one page, in the hub's JSON shape."""
        entries = [
            {
                "type": "file",
                "path": name,
                "size": len(f.data),
                "oid": hashlib.sha1(f.data).hexdigest(),
                "lfs": {"oid": _etag(f), "size": len(f.data), "pointerSize": 134},
            }
            for (r, name), f in sorted(self.hub.files.items())
            if r == repo
        ]
        if not entries:
            return self._error(404, "RepoNotFound")
        data = json.dumps(entries).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return None

    def _send_file(self, f: FakeFile, body: bool) -> None:
        start = 0
        rng = self.headers.get("Range")
        if rng and body:
            mm = re.fullmatch(r"bytes=(\d+)-", rng.strip())
            start = int(mm.group(1)) if mm else 0
            if start >= len(f.data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(f.data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        payload = f.data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(f.data) - 1}/{len(f.data)}")
        self.send_header("X-Repo-Commit", f.commit)
        self.send_header("ETag", f'"{_etag(f)}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if not body:
            return
        if f.drop_after is not None and f.drops > 0:
            f.drops -= 1
            self.wfile.write(payload[: f.drop_after])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(payload)


def _etag(f: FakeFile) -> str:
    return f.etag if f.etag is not None else hashlib.sha256(f.data).hexdigest()


# -- test manifests -----------------------------------------------------------------------

REPO = "test-org/tiny-GGUF"
FILE = "tiny-f16.gguf"
UNPINNED = "tiny-guard:f16"
PINNED = "tiny-guard:pinned"


def write_manifest(folder: Path, name: str, **fields: object) -> Path:
    lines = []
    for k, v in fields.items():
        if isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, int):
            lines.append(f"{k} = {v}")
        else:
            lines.append(f'{k} = "{v}"')
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def setup_manifests(
    folder: Path, monkeypatch: pytest.MonkeyPatch, data: bytes, pin: str | None = None
) -> Path:
    """Two test builds of one synthetic model: unpinned (TOFU) and pinned to `pin`."""
    folder.mkdir(parents=True, exist_ok=True)
    write_manifest(
        folder,
        "unpinned",
        id=UNPINNED,
        family="safeguard",
        quant="f16",
        repo=REPO,
        filename=FILE,
        size=len(data),
        default=True,
    )
    write_manifest(
        folder,
        "pinned",
        id=PINNED,
        family="safeguard",
        quant="f16",
        repo=REPO,
        filename="tiny-pinned.gguf",
        revision="main",
        size=len(data),
        sha256=pin or hashlib.sha256(data).hexdigest(),
        verified=True,
    )
    monkeypatch.setenv("EDGE_GUARD_MANIFESTS", str(folder))
    return folder
