"""Model manifests (`models/*.toml`) and `hf:REPO/FILE.gguf[@REVISION]` references.

A manifest names one GGUF build: an id in `name:tag` form, its family (safeguard/base),
quant, the Hugging Face repo + filename + revision it comes from, an approximate size, and
optionally a pinned sha256 (`verified = true`). Unpinned manifests are trusted on first
use: the first download records the hash (see `store.py`).

Manifests are read from `$EDGE_GUARD_MANIFESTS` (folders separated by `os.pathsep`) when
set, else from the checkout's `models/` folder and `<data dir>/manifests/`.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from edge_guard.defaults import env
from edge_guard.registry.errors import ManifestError, ModelNotFound

ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*:[a-z0-9][a-z0-9._-]*$")
REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
FAMILIES = ("safeguard", "base")
_FIELDS = {
    "id",
    "family",
    "quant",
    "repo",
    "filename",
    "revision",
    "size",
    "sha256",
    "verified",
    "license",
    "description",
    "notes",
    "upstream",
    "default",
}


@dataclass(frozen=True)
class Source:
    """Where a GGUF comes from on the hub, and what its bytes must hash to (if pinned)."""

    repo: str
    filename: str
    revision: str = "main"
    sha256: str | None = None  # a pinned hash (verified manifests only)
    size: int | None = None  # approximate unless pinned

    @property
    def key(self) -> str:
        """The trust-on-first-use key: one record per repo/file/revision."""
        return f"{self.repo}/{self.filename}@{self.revision}"

    @property
    def hf_ref(self) -> str:
        rev = "" if self.revision == "main" else f"@{self.revision}"
        return f"hf:{self.repo}/{self.filename}{rev}"

    @property
    def url_hint(self) -> str:
        return f"https://huggingface.co/{self.repo}/blob/{self.revision}/{self.filename}"


@dataclass(frozen=True)
class Manifest:
    id: str
    family: str
    quant: str
    source: Source
    verified: bool = False
    license: str = "apache-2.0"
    description: str = ""
    notes: str = ""
    upstream: str = ""
    default: bool = False  # the tag a bare name (`gpt-oss-20b`) resolves to
    path: Path | None = None  # the .toml it was read from

    @property
    def name(self) -> str:
        return self.id.split(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.id.split(":", 1)[1]


def manifest_dirs() -> list[Path]:
    """Folders searched for `*.toml` manifests, in order (an id found first wins)."""
    given = env("EDGE_GUARD_MANIFESTS")
    if given:
        return [Path(p).expanduser() for p in given.split(os.pathsep) if p]
    from edge_guard.paths import data_dir, repo_root

    return [repo_root() / "models", data_dir() / "manifests"]


def parse_manifest(data: dict, where: str) -> Manifest:
    """Validate one manifest table (`where` names it in error messages)."""
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ManifestError(f"{where}: unknown manifest key(s) {', '.join(unknown)}")
    for key in ("id", "family", "quant", "repo", "filename"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ManifestError(f"{where}: manifest needs a string {key!r}")
    mid, repo, filename = data["id"], data["repo"], data["filename"]
    if not ID_RE.match(mid):
        raise ManifestError(f"{where}: id {mid!r} is not of the form name:tag (lowercase)")
    if data["family"] not in FAMILIES:
        raise ManifestError(f"{where}: family must be one of {', '.join(FAMILIES)}")
    if not REPO_RE.match(repo):
        raise ManifestError(f"{where}: repo {repo!r} is not of the form owner/name")
    if not filename.endswith(".gguf") or filename.startswith("/") or ".." in filename:
        raise ManifestError(f"{where}: filename {filename!r} must be a relative .gguf path")
    sha = data.get("sha256") or None
    if sha is not None and (not isinstance(sha, str) or not SHA256_RE.match(sha.lower())):
        raise ManifestError(f"{where}: sha256 must be 64 hex digits")
    size = data.get("size")
    if size is not None and (not isinstance(size, int) or size <= 0):
        raise ManifestError(f"{where}: size must be a positive number of bytes")
    verified = data.get("verified", False)
    if not isinstance(verified, bool):
        raise ManifestError(f"{where}: verified must be true or false")
    if verified and sha is None:
        raise ManifestError(f"{where}: verified = true needs a sha256")
    revision = data.get("revision", "main")
    if not isinstance(revision, str) or not revision:
        raise ManifestError(f"{where}: revision must be a non-empty string")
    return Manifest(
        id=mid,
        family=data["family"],
        quant=data["quant"],
        source=Source(repo, filename, revision, sha.lower() if sha else None, size),
        verified=verified,
        license=str(data.get("license", "apache-2.0")),
        description=str(data.get("description", "")),
        notes=str(data.get("notes", "")),
        upstream=str(data.get("upstream", "")),
        default=bool(data.get("default", False)),
    )


def load_manifest(path: Path) -> Manifest:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path}: invalid TOML ({exc})") from None
    m = parse_manifest(data, str(path))
    return Manifest(**{**m.__dict__, "path": path})


def load_manifests(dirs: list[Path] | None = None) -> dict[str, Manifest]:
    """Every manifest in `dirs` (default: `manifest_dirs()`), by id; first definition wins."""
    out: dict[str, Manifest] = {}
    for folder in dirs if dirs is not None else manifest_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            m = load_manifest(path)
            out.setdefault(m.id, m)
    return out


def find_manifest(ref: str, manifests: dict[str, Manifest] | None = None) -> Manifest | None:
    """The manifest for `name:tag`, or for a bare `name` its default (or only) tag."""
    manifests = load_manifests() if manifests is None else manifests
    if ref in manifests:
        return manifests[ref]
    if ":" in ref:
        return None
    same = [m for m in manifests.values() if m.name == ref]
    defaults = [m for m in same if m.default]
    if len(defaults) == 1:
        return defaults[0]
    return same[0] if len(same) == 1 else None


def parse_hf_ref(ref: str, manifests: dict[str, Manifest] | None = None) -> Source:
    """`hf:OWNER/REPO/PATH/FILE.gguf[@REVISION]` -> Source (a manifest's pin applies if one
    names the same repo, file and revision)."""
    body = ref[3:] if ref.startswith("hf:") else ref
    revision = "main"
    if "@" in body:
        head, _, rev = body.rpartition("@")
        if head.endswith(".gguf") and rev:
            body, revision = head, rev
    parts = body.split("/")
    if len(parts) < 3 or not body.endswith(".gguf") or any(not p or p == ".." for p in parts):
        raise ModelNotFound(
            f"bad model reference {ref!r}: expected hf:OWNER/REPO/FILE.gguf[@REVISION]"
        )
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    if not REPO_RE.match(repo):
        raise ModelNotFound(f"bad model reference {ref!r}: {repo!r} is not a hub repo id")
    manifests = load_manifests() if manifests is None else manifests
    for m in manifests.values():
        s = m.source
        if (s.repo, s.filename, s.revision) == (repo, filename, revision):
            return s
    return Source(repo, filename, revision)
