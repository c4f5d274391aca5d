"""Local registry state under the data dir: downloaded files, hash records, local models.

- Downloads live in `<data dir>/models/<owner>--<repo>/<revision>/<filename>` (or
  `$EDGE_GUARD_MODELS_DIR`); a file appears there only after its hash was checked.
- `<data dir>/model_registry.json` holds three tables:
  `tofu` (sha256 recorded on first download of an unpinned build, keyed by
  `repo/file@revision`), `pulled` (what each download fetched: commit, etag, hash), and
  `local` (files registered with `edge-guard models add`, by id).
- Files already in the Hugging Face cache (`hf download ...`) are found and used as-is.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from edge_guard.defaults import env
from edge_guard.registry.errors import RegistryError
from edge_guard.registry.manifests import Source

REGISTRY_VERSION = 1
HASH_CHUNK = 8 * 1024 * 1024
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


def models_dir() -> Path:
    given = env("EDGE_GUARD_MODELS_DIR")
    if given:
        return Path(given).expanduser()
    from edge_guard.paths import data_dir

    return data_dir() / "models"


def download_path(source: Source) -> Path:
    """Where `edge-guard models pull` puts this source's file."""
    return (
        models_dir()
        / source.repo.replace("/", "--")
        / quote(source.revision, safe="")
        / Path(*source.filename.split("/"))
    )


def registry_file() -> Path:
    from edge_guard.paths import data_dir

    return data_dir() / "model_registry.json"


def now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def load_registry() -> dict[str, Any]:
    path = registry_file()
    empty = {"version": REGISTRY_VERSION, "tofu": {}, "pulled": {}, "local": {}}
    if not path.exists():
        return empty
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryError(
            f"{path}: cannot read the model registry ({exc}); fix or delete the file"
        ) from None
    if not isinstance(data, dict):
        raise RegistryError(f"{path}: the model registry is not a JSON object")
    for table in ("tofu", "pulled", "local"):
        if not isinstance(data.get(table), dict):
            data[table] = {}
    return data


def save_registry(data: dict[str, Any]) -> None:
    path = registry_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@contextlib.contextmanager
def editing() -> Iterator[dict[str, Any]]:
    """Load the registry, let the caller change it, write it back atomically."""
    data = load_registry()
    yield data
    save_registry(data)


def tofu_record(source: Source) -> dict[str, Any] | None:
    return load_registry()["tofu"].get(source.key)


def expected_sha256(source: Source) -> tuple[str | None, str]:
    """(hash the file must have, where that hash comes from: pinned / tofu / none)."""
    if source.sha256:
        return source.sha256, "pinned"
    rec = tofu_record(source)
    if rec and rec.get("sha256"):
        return str(rec["sha256"]), "tofu"
    return None, "none"


def record_tofu(source: Source, sha256: str, size: int, via: str) -> None:
    with editing() as reg:
        reg["tofu"][source.key] = {"sha256": sha256, "size": size, "recorded": now(), "via": via}


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time."""
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "huggingface" / "hub"


def find_in_hf_cache(source: Source) -> Path | None:
    """The file if `hf download` / `hf_hub_download` already put it in the HF cache."""
    folder = hf_cache_dir() / ("models--" + source.repo.replace("/", "--"))
    commit = source.revision if _COMMIT_RE.match(source.revision) else None
    if commit is None:
        ref = folder / "refs" / source.revision
        try:
            commit = ref.read_text(encoding="utf-8").strip()
        except OSError:
            return None
    path = folder / "snapshots" / commit / Path(*source.filename.split("/"))
    return path if path.is_file() else None


def find_local(source: Source) -> Path | None:
    """The local copy of `source`: edge_guard's download folder first, then the HF cache."""
    path = download_path(source)
    if path.is_file():
        return path
    return find_in_hf_cache(source)


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """Stream the file through sha256 (`progress(n)` is called with each chunk's size)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(HASH_CHUNK):
                h.update(chunk)
                if progress:
                    progress(len(chunk))
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return h.hexdigest()


def local_models() -> dict[str, dict[str, Any]]:
    return dict(load_registry()["local"])


def fmt_size(n: int | None) -> str:
    """Decimal units, as the hub shows them (12.1 GB)."""
    if n is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
